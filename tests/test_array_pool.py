"""The numba prefix-cache pool (simcost.engine.kv.array_pool) against its plain-Python twin
PrefixBlockPool: the same long random operation sequences on both, every return value and the
whole observable state (LRU and host order, refcounts, counts, stats) compared after each step.
Small pools make the hash table wrap and delete often; wide keys spread its probes."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import pytest

from simcost.engine.kv.array_pool import ArrayPrefixBlockPool
from simcost.engine.kv.pool_kernels import trace_keys
from simcost.engine.kv.prefix_cache import PrefixBlockPool, trace_block_key_array


def same_state(fast: ArrayPrefixBlockPool, ref: PrefixBlockPool, keys_seen: set[int]) -> None:
    fast.check()
    ref.check()
    assert (fast.num_free, fast.num_empty, fast.num_private, fast.num_cached, fast.num_evictable,
            fast.num_host_cached) == (ref.num_free, ref.num_empty, ref.num_private, ref.num_cached,
                                      ref.num_evictable, ref.num_host_cached)
    assert fast.lru_keys() == ref.lru_keys() and fast.host_keys() == ref.host_keys()
    assert asdict(fast.stats) == asdict(ref.stats)
    for key in keys_seen:
        assert fast.refcount(key) == ref.refcount(key) and fast.is_on_host(key) == ref.is_on_host(key)


def random_prompt(rng: random.Random, documents: list[list[int]]) -> list[int]:
    if rng.random() < 0.8:  # a prefix of a shared document, maybe with a private tail
        doc = rng.choice(documents)
        keys = doc[:rng.randint(1, len(doc))]
        return keys + [rng.randrange(1 << 62) for _ in range(rng.randint(0, 3))]
    return [rng.choice(documents[0]) for _ in range(rng.randint(0, 6))]  # repeats, tails without heads


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_blocks,host_blocks", [(4, 0), (12, 0), (12, 5), (40, 0), (40, 17)])
def test_random_operations_match_the_python_pool(seed, num_blocks, host_blocks):
    rng = random.Random(seed * 1000 + num_blocks + host_blocks)
    wide = [rng.randrange(1 << 62) for _ in range(30)]  # hash ids spread over the whole key range
    documents = [wide[:12], wide[:3] + wide[12:20], list(range(10)), wide[20:]]
    fast, ref = ArrayPrefixBlockPool(num_blocks, 1, host_blocks), PrefixBlockPool(num_blocks, 1, host_blocks)
    running: list[tuple[list[int], int, np.ndarray | None]] = []  # named keys, private blocks, their nodes
    seen: set[int] = set()
    for _ in range(400):
        op = rng.random()
        if op < 0.45:
            keys = random_prompt(rng, documents)
            seen.update(keys)
            hit = ref.lookup(keys)
            assert fast.lookup(np.array(keys, dtype=np.int64)) == hit and fast.match(keys) == ref.match(keys)
            new_blocks = len(keys) - hit.num_blocks + rng.randint(0, 2)
            if not ref.can_admit(hit.num_free_blocks_needed + new_blocks):
                assert not fast.can_admit(hit.num_free_blocks_needed + new_blocks)
                continue
            got = ref.acquire(keys)
            by_node = rng.random() < 0.5  # the engine's path: keys held as nodes, released by node
            if by_node:
                fast_got, run_nodes = fast.acquire_nodes(keys)
                assert fast_got == got and len(run_nodes) == got.num_blocks
            else:
                assert fast.acquire(keys) == got
            ref.allocate(new_blocks)
            fast.allocate(new_blocks)
            rest, split = keys[got.num_blocks:], rng.randint(0, len(keys))
            named = ref.register(rest[:split]) + ref.register(rest[split:])
            if by_node:
                (first, first_nodes), (second, second_nodes) = fast.register_nodes(rest[:split]), fast.register_nodes(rest[split:])
                assert list(first) + list(second) == named
                held = np.concatenate([run_nodes, first_nodes, second_nodes])
                assert [fast.find_node(key) for key in keys[:got.num_blocks] + named] == held.tolist()
            else:
                assert list(fast.register(rest[:split])) + list(fast.register(rest[split:])) == named
                held = None
            running.append((keys[:got.num_blocks] + named, new_blocks - len(named), held))
        elif op < 0.8 and running:
            named, num_private, held = running.pop(rng.randrange(len(running)))
            ref.release(named, num_private)
            if held is not None:
                fast.release_nodes(held, num_private)
            else:
                fast.release(np.array(named, dtype=np.int64), num_private)
        else:  # pressure: evicts (to host, dropping the oldest there) without holding
            num = rng.randint(0, ref.num_free)
            ref.allocate(num)
            fast.allocate(num)
            ref.free(num)
            fast.free(num)
        same_state(fast, ref, seen)
    for named, num_private, held in running:
        ref.release(named, num_private)
        if held is not None:
            fast.release_nodes(held, num_private)
        else:
            fast.release(named, num_private)
    same_state(fast, ref, seen)
    assert fast.num_free == num_blocks


def test_misuse_raises_like_the_python_pool():
    for pool in (ArrayPrefixBlockPool(4), PrefixBlockPool(4)):
        with pytest.raises(RuntimeError):
            pool.allocate(5)
        with pytest.raises(RuntimeError):
            pool.release([7], 0)  # never referenced
        pool.allocate(1)
        with pytest.raises(RuntimeError):
            pool.register([1, 2])  # two blocks named, one private held
        assert pool.num_free == 3 and pool.num_cached == 0  # nothing changed by the failed calls
        with pytest.raises(RuntimeError):
            pool.free(2)


def test_releasing_by_node_refuses_what_releasing_by_key_refuses():
    pool = ArrayPrefixBlockPool(4)
    pool.allocate(2)
    _, nodes = pool.register_nodes([8, 9])
    pool.release_nodes(nodes, 0)
    with pytest.raises(RuntimeError):
        pool.release_nodes(nodes, 0)  # no longer referenced: cached-free
    with pytest.raises(RuntimeError):
        pool.release_nodes(nodes[:0], 1)  # no private block held
    assert pool.lru_keys() == [9, 8] and pool.num_free == 4  # tail first, as release([8, 9], 0)


def test_a_key_repeated_past_the_private_count_is_named_once():
    for pool in (ArrayPrefixBlockPool(4), PrefixBlockPool(4)):
        pool.allocate(1)
        assert list(pool.register([5, 5, 5])) == [5]  # three keys, one distinct: one private block is enough
        assert pool.num_private == 0 and pool.refcount(5) == 1
        pool.release([5], 0)
        assert pool.lru_keys() == [5]


@pytest.mark.parametrize("ratio", [1, 2, 32])
def test_trace_keys_are_the_whole_prompts_trace_block_keys(ratio):
    rng = np.random.default_rng(ratio)
    for n in range(0, 12):
        hashes = rng.integers(0, 1 << 40, n)
        want = trace_block_key_array(hashes, 512, 512 // ratio, n * 512)
        np.testing.assert_array_equal(trace_keys(hashes, ratio), want)
