"""The numba prefix-cache pool (simcost.engine.kv.array_pool) against its plain-Python twin
PrefixBlockPool: the same long random operation sequences on both, every return value and the
whole observable state (LRU and host order, refcounts, counts, stats) compared after each step.
Small pools make the hash table wrap and delete often; wide keys spread its probes."""

from __future__ import annotations

import random
from dataclasses import asdict

import numpy as np
import pytest

from simcost.engine.kv import pool_index, pool_kernels
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


def random_prompt(rng: random.Random, documents: list[list[int]], fresh_key=None) -> list[int]:
    fresh_key = fresh_key or (lambda: rng.randrange(1 << 62))
    if rng.random() < 0.8:  # a prefix of a shared document, maybe with a private tail
        doc = rng.choice(documents)
        keys = doc[:rng.randint(1, len(doc))]
        return keys + [fresh_key() for _ in range(rng.randint(0, 3))]
    return [rng.choice(documents[0]) for _ in range(rng.randint(0, 6))]  # repeats, tails without heads


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("num_blocks,host_blocks", [(4, 0), (12, 0), (12, 5), (40, 0), (40, 17)])
def test_random_operations_match_the_python_pool(seed, num_blocks, host_blocks):
    rng = random.Random(seed * 1000 + num_blocks + host_blocks)
    wide = [rng.randrange(1 << 62) for _ in range(30)]  # hash ids spread over the whole key range
    documents = [wide[:12], wide[:3] + wide[12:20], list(range(10)), wide[20:]]
    drive(ArrayPrefixBlockPool(num_blocks, 1, host_blocks), PrefixBlockPool(num_blocks, 1, host_blocks), rng, documents)


def drive(fast: ArrayPrefixBlockPool, ref: PrefixBlockPool, rng: random.Random, documents: list[list[int]],
          fresh_key=None, steps: int = 400) -> None:
    """A random sequence of the engine's operations on both pools, compared after each step."""
    num_blocks = ref.num_blocks
    running: list[tuple[list[int], int, np.ndarray | None]] = []  # named keys, private blocks, their nodes
    seen: set[int] = set()
    for _ in range(steps):
        op = rng.random()
        if op < 0.45:
            keys = random_prompt(rng, documents, fresh_key)
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


# --- the two-level key index (pool_index): key >> 5 -> a row of 32 sub-slots ----------------------

def run_from(rng: random.Random, start: int, length: int) -> list[int]:
    return list(range(start, start + length))


def used_groups(pool: ArrayPrefixBlockPool) -> int:
    return int(pool._s[pool_index.GFRESH] - pool._s[pool_index.GFREE_TOP])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("num_blocks,host_blocks", [(12, 0), (40, 0), (40, 17)])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_keys_across_groups_match_the_python_pool(seed, num_blocks, host_blocks, dtype):
    """Runs that straddle group boundaries, keys 32 apart (one group each), a whole group, keys
    around 0 (groups -1 and 0), a preempted request's own negative keys and session keys near
    2**63: the same answers as the twin, with the index's int32 state and its int64 fallback."""
    rng = random.Random(seed)
    own = [-1 - ((7 << 32) + j) for j in range(40)]  # reuse.request_block_keys(7, 0, 40)
    session = [(1 << 62) + (5 << 32) + j for j in range(40)]
    documents = [run_from(rng, 29, 9), [32 * j + 3 for j in range(12)], run_from(rng, 64, 32),
                 run_from(rng, -20, 40), own, session, run_from(rng, (1 << 63) - 40, 40),
                 run_from(rng, -(1 << 63), 12)]
    fresh = [lambda: rng.randrange(-(1 << 63), 1 << 63), lambda: rng.randrange(-64, 64)][seed % 2]
    drive(ArrayPrefixBlockPool(num_blocks, 1, host_blocks, index_dtype=dtype),
          PrefixBlockPool(num_blocks, 1, host_blocks), rng, documents, fresh)


def test_a_group_that_empties_leaves_the_table_and_its_row_is_reused():
    pool = ArrayPrefixBlockPool(40)
    pool.allocate(40)
    pool.register(np.arange(32, 72))  # groups 1 (32..63) and 2 (64..71)
    pool.release(np.arange(32, 72), 0)
    assert used_groups(pool) == 2
    pool.allocate(8)  # evicts 71..64, released tail first: group 2 empties
    pool.check()
    assert used_groups(pool) == 1 and pool.lru_keys() == list(range(63, 31, -1))
    pool.allocate(32)  # and group 1
    pool.check()
    assert used_groups(pool) == 0 and not np.count_nonzero(pool._slots)
    pool.free(40)
    pool.allocate(2)
    assert list(pool.register([-33, 64])) == [-33, 64]  # groups -2 and 2 in reused rows
    pool.check()
    assert used_groups(pool) == 2 and pool.find_node(-33) >= 0 and pool.find_node(64) >= 0
    assert pool.find_node(-1) == pool.find_node(65) == pool.find_node(32) == -1


@pytest.mark.parametrize("host_blocks", [0, 4])
def test_keys_taken_from_inside_an_lru_run_split_it_and_the_order_stays(host_blocks):
    """The LRU holds runs of a group's keys (extents): a request released tail first leaves one.
    Taking keys back from inside a run splits it; what is left keeps its order through
    evictions (to the host tier and off it) and a second release, as the twin's LRU does."""
    fast, ref = ArrayPrefixBlockPool(12, 0, host_blocks), PrefixBlockPool(12, 0, host_blocks)
    keys = list(range(3, 11))  # group 0, sub-slots 3..10: one run
    for pool in (fast, ref):
        pool.allocate(len(keys))
        pool.release(list(pool.register(keys)), 0)
    same_state(fast, ref, set(keys))
    assert fast.lru_keys() == list(range(10, 2, -1))
    for pool in (fast, ref):  # 5 and 6 from inside the run: [10..7] and [4, 3] remain, in that order
        assert pool.acquire([5, 6]).num_blocks == 2
    same_state(fast, ref, set(keys))
    assert fast.lru_keys() == [10, 9, 8, 7, 4, 3]
    for pool in (fast, ref):  # evict three (to the host tier, when there is one), then free them
        pool.allocate(4 + 3)
        pool.free(4 + 3)
    same_state(fast, ref, set(keys))
    for pool in (fast, ref):
        pool.release([5, 6], 0)
    same_state(fast, ref, set(keys))
    assert fast.lru_keys() == ref.lru_keys() and fast.lru_keys()[-2:] == [6, 5]


@pytest.mark.parametrize("host_blocks", [0, 9])
def test_every_block_in_a_group_of_its_own(host_blocks):
    """The worst case the index is sized for: as many groups as nodes (GPU and host full)."""
    num_blocks = 23
    fast, ref = ArrayPrefixBlockPool(num_blocks, 0, host_blocks), PrefixBlockPool(num_blocks, 0, host_blocks)
    for start in range(0, 3 * (num_blocks + host_blocks), num_blocks):  # fills the GPU three times over
        keys = [32 * (start + j) - 5 for j in range(num_blocks)]
        for pool in (fast, ref):
            pool.allocate(num_blocks)
            assert list(pool.register(keys)) == keys
            pool.release(keys, 0)
        same_state(fast, ref, set(keys))
    assert used_groups(fast) == num_blocks + host_blocks == ref.num_cached + ref.num_host_cached
    hit = ref.lookup(keys)
    assert fast.lookup(keys) == hit and hit.num_blocks == num_blocks


def test_stamps_start_over_before_int32_overflows():
    """lookup counts distinct keys by stamping nodes with an epoch; at 2**31 - 1 every stamp is
    reset, so a key repeated in one lookup is still counted once, and none is missed after."""
    fast, ref = ArrayPrefixBlockPool(8), PrefixBlockPool(8)
    for pool in (fast, ref):
        pool.allocate(3)
        pool.register([1, 2, 40])
        pool.release([1, 2, 40], 0)
    fast._s[pool_kernels.EPOCH] = pool_kernels.STAMP_LIMIT - 2
    for keys in ([1, 2, 40, 1, 2], [1, 1, 2], [1, 2, 40, 40, 1], [2, 2]):  # across the reset
        assert fast.lookup(keys) == ref.lookup(keys)
    assert fast._s[pool_kernels.EPOCH] < 10


def test_the_index_is_int32_unless_a_pool_is_too_big_for_it():
    assert pool_index.index_dtype(28_821) is np.int32
    assert pool_index.index_dtype((1 << 26) - 1) is np.int32  # a node: row * 32 + sub < 2**31
    assert pool_index.index_dtype(1 << 26) is np.int64
    assert ArrayPrefixBlockPool(100, 0, 20)._nodes.dtype == np.int32


@pytest.mark.parametrize("host_blocks", [0, 3, 9])
def test_one_allocation_of_a_total_is_the_allocations_one_by_one(host_blocks):
    """RequestKV.grow takes a step's blocks in one call: the same evictions, in the same order,
    to the host tier and past it, as one call per request (the pool takes empty blocks first,
    then the LRU's oldest)."""
    pools = [ArrayPrefixBlockPool(24, 0, host_blocks) for _ in range(2)]
    for pool in pools:  # the same cached, unreferenced blocks on both: 18 on the LRU, 6 empty
        for doc in range(3):
            keys = np.arange(doc * 100, doc * 100 + 6, dtype=np.int64)
            pool.allocate(6)
            _, nodes = pool.register_nodes(keys)
            pool.release_nodes(nodes, 0)
    sizes = [3, 0, 5, 2, 4, 1]  # a step's members: 15 blocks, 6 empty, so 9 evicted (past a 3- or 9-block host tier)
    for size in sizes:
        pools[0].allocate(size)
    pools[1].allocate(sum(sizes))
    one_by_one, at_once = pools
    assert one_by_one.lru_keys() == at_once.lru_keys() and one_by_one.host_keys() == at_once.host_keys()
    assert asdict(one_by_one.stats) == asdict(at_once.stats) and one_by_one.stats.evictions > 0
    assert (one_by_one.num_empty, one_by_one.num_private) == (at_once.num_empty, at_once.num_private)
    one_by_one.check()
    at_once.check()
