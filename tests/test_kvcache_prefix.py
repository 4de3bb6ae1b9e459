"""The prefix-cache block pool (simcost.engine.kv.prefix_cache): the Mooncake reuse bound with unlimited
capacity, hit rates falling with capacity, a property test against a plain-list reference
model, block keys, and the host tier."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simcost.engine.kv.prefix_cache import SESSION_KEY_BASE, PrefixBlockPool, session_block_keys, trace_block_keys
from simcost.workload.traces import load_trace, prefix_reuse_fraction

MOONCAKE = {"mooncake_conversation": 0.366, "mooncake_synthetic": 0.640}


def serve(pool: PrefixBlockPool, keys: list[int], total_blocks: int):
    """One request alone: reuse its cached prefix, compute the rest, finish."""
    got = pool.acquire(keys)
    new_blocks = total_blocks - got.num_blocks
    pool.allocate(new_blocks)
    named = pool.register(keys[got.num_blocks:])
    pool.release(keys[:got.num_blocks] + named, new_blocks - len(named))
    return got


def replay(trace, block_size: int, num_blocks: int | None = None, num_requests: int | None = None,
           every_trace_block: bool = False) -> PrefixBlockPool:
    """Requests one at a time, each released before the next. every_trace_block: key the
    partial last 512-token block too (the trace's own accounting), else full blocks only."""
    ids, offsets, tokens = trace.block_ids, trace.block_offsets, trace.input_tokens
    num_requests = len(trace) if num_requests is None else num_requests
    ratio = trace.block_tokens // block_size
    pool = PrefixBlockPool(num_blocks or int(offsets[num_requests]) * ratio)
    for i in range(num_requests):
        hashes = ids[offsets[i]:offsets[i + 1]]
        if every_trace_block:
            keys, total = hashes.tolist(), len(hashes)
        else:
            keys = trace_block_keys(hashes, trace.block_tokens, block_size, int(tokens[i]))
            total = -(-int(tokens[i]) // block_size)
        serve(pool, keys, total)
    pool.check()
    assert pool.num_free == pool.num_blocks  # every block came back
    return pool


# --- Mooncake: unlimited capacity reaches the reuse bound -----------------------------------------

@pytest.mark.parametrize("name", MOONCAKE)
def test_unlimited_pool_hits_exactly_the_trace_reuse_bound(name):
    """Exact, because the bundled hash ids are prefix-chained (an id always has the same
    predecessor and position, checked here) and never repeat inside a request: a block seen
    before is always reached by a run of hits from the prompt's start."""
    trace = load_trace(name)
    ids, offsets = trace.block_ids, trace.block_offsets
    starts = np.zeros(len(ids), dtype=bool)
    starts[offsets[:-1]] = True
    predecessor = np.where(starts, -1, np.roll(ids, 1))
    position = np.arange(len(ids)) - np.repeat(offsets[:-1], np.diff(offsets))
    num_ids, pack = len(np.unique(ids)), int(ids.max()) + 2  # pairs packed into one int64
    assert len(np.unique(ids * pack + predecessor + 1)) == num_ids  # one predecessor per id
    assert len(np.unique(ids * pack + position)) == num_ids  # one position per id
    # no id twice in a request: with one position per id, that would need the same position twice
    bound = prefix_reuse_fraction(trace)
    assert bound == pytest.approx(MOONCAKE[name], abs=5e-4)
    pool = replay(trace, 512, every_trace_block=True)
    assert pool.stats.lookups == len(ids)
    assert pool.stats.hits == round(bound * len(ids))
    assert pool.stats.evictions == 0 and pool.stats.hits_in_use == 0  # alone: all hits were cached-free


def test_full_blocks_only_hit_their_own_bound():
    """trace_block_keys keys full blocks only, so a prompt's partial last 512-token block is
    neither looked up nor a hit: the rate is the reuse bound over full blocks, 0.659 here (0.382
    for the conversation trace; above the all-block 0.640 and 0.366 because a prompt's partial
    last block is rarely repeated). Every hash id covers the same number of tokens wherever it
    appears, so a full block's id never stands for a partial block elsewhere."""
    trace = load_trace("mooncake_synthetic")
    ids, offsets, tokens = trace.block_ids, trace.block_offsets, trace.input_tokens
    full = np.concatenate([ids[offsets[i]:offsets[i] + int(tokens[i]) // 512] for i in range(len(trace))])
    pool = replay(trace, 512)
    assert pool.stats.lookups == len(full)
    assert pool.stats.hits == len(full) - len(np.unique(full))
    assert pool.stats.hit_rate > prefix_reuse_fraction(trace)


def test_engine_block_size_hits_equal_the_first_seen_count():
    """At 16-token blocks (a subset: the whole conversation trace is 9M keys, ~6 s; its rate is
    0.374, synthetic 0.652), an unlimited pool hits every key seen before, no more."""
    trace = load_trace("mooncake_conversation")
    n = 200
    pool = replay(trace, 16, num_requests=n)
    keys = np.concatenate([trace_block_keys(trace.block_ids[trace.block_offsets[i]:trace.block_offsets[i + 1]],
                                            512, 16, int(trace.input_tokens[i])) for i in range(n)])
    assert pool.stats.lookups == len(keys)
    assert pool.stats.hits == len(keys) - len(np.unique(keys))


def test_hit_rate_falls_monotonically_as_capacity_shrinks():
    trace = load_trace("mooncake_conversation")
    n = 2000
    largest = int(np.diff(trace.block_offsets[:n + 1]).max())  # one request must always fit
    rates = []
    for num_blocks in (None, 10_000, 3_000, 1_000, largest):
        pool = replay(trace, 512, num_blocks=num_blocks, num_requests=n)
        rates.append(pool.stats.hit_rate)
        assert (pool.stats.evictions == 0) == (num_blocks is None)
    assert all(a >= b for a, b in zip(rates, rates[1:])), rates
    assert rates[0] > rates[-1] + 0.1


# --- property test against a reference model ------------------------------------------------------

class ReferenceLRU:
    """The rules with plain lists and dicts, written independently of the pool's internals."""

    def __init__(self, num_blocks: int, host_blocks: int):
        self.num_blocks, self.host_blocks = num_blocks, host_blocks
        self.refs: dict[int, int] = {}  # named GPU block -> refcount
        self.lru: list[int] = []  # cached-free, oldest first
        self.host: list[int] = []  # oldest first
        self.empty, self.private = num_blocks, 0
        self.hits = self.host_hits = self.evictions = self.host_drops = 0

    def num_free(self) -> int:
        return self.empty + len(self.lru)

    def match(self, keys) -> int:
        n = 0
        while n < len(keys) and (keys[n] in self.refs or keys[n] in self.host):
            n += 1
        return n

    def take(self, n: int) -> None:
        assert n <= self.num_free()
        from_empty = min(n, self.empty)
        self.empty -= from_empty
        for _ in range(n - from_empty):
            key = self.lru.pop(0)
            assert self.refs.pop(key) == 0
            self.evictions += 1
            if self.host_blocks:
                self.host.append(key)
                if len(self.host) > self.host_blocks:
                    self.host.pop(0)
                    self.host_drops += 1

    def acquire(self, keys) -> int:
        run = keys[:self.match(keys)]
        for key in run:
            if key in self.lru:
                self.lru.remove(key)
        loads = [key for key in dict.fromkeys(run) if key in self.host]
        for key in loads:
            self.host.remove(key)
        self.take(len(loads))
        for key in loads:
            self.refs[key] = 0
        for key in run:
            self.refs[key] += 1
        self.hits += len(run)
        self.host_hits += len(loads)
        return len(run)

    def allocate(self, n: int) -> None:
        self.take(n)
        self.private += n

    def register(self, keys) -> list[int]:
        named = []
        for key in keys:
            if key not in self.refs and key not in named:
                named.append(key)
        for key in named:
            self.refs[key] = 1
            if key in self.host:
                self.host.remove(key)
        self.private -= len(named)
        return named

    def release(self, named, num_private: int) -> None:
        for key in reversed(named):
            self.refs[key] -= 1
            if self.refs[key] == 0:
                self.lru.append(key)
        self.private -= num_private
        self.empty += num_private


def assert_same(pool: PrefixBlockPool, ref: ReferenceLRU) -> None:
    pool.check()
    assert pool.num_free == ref.num_free() and pool.num_private == ref.private
    assert 0 <= pool.num_free <= pool.num_blocks
    assert pool.lru_keys() == ref.lru and pool.host_keys() == ref.host
    assert {k: pool.refcount(k) for k in ref.refs} == ref.refs and pool.num_cached == len(ref.refs)
    s = pool.stats
    assert (s.hits, s.hits_host, s.evictions, s.host_drops) == (ref.hits, ref.host_hits, ref.evictions, ref.host_drops)


# Prompts: prefixes of a few shared "documents" (chained keys, as real hashes are) or arbitrary
# short lists (repeats, tails without heads) so the rules are exercised beyond the easy case.
# An operation is one tuple of integers: few hypothesis draws keep 60 long examples fast.
DOCUMENTS = [list(range(0, 8)), [0, 1, 2, 20, 21, 22, 23], [30, 31, 32, 33, 34, 35]]
KINDS = ["admit"] * 5 + ["finish"] * 4 + ["pressure"] * 2 + ["alloc", "free"]  # weighted


def prompt(source: int, length: int, seed: int) -> list[int]:
    if source < len(DOCUMENTS):
        return DOCUMENTS[source][:length]
    return [(seed >> (4 * i)) % 13 for i in range(length % 7)]  # keys 0..12, repeats likely


@st.composite
def operation(draw):
    kind, source, length, seed, extra, split = draw(st.tuples(
        st.integers(0, len(KINDS) - 1), st.integers(0, len(DOCUMENTS)), st.integers(1, 8),
        st.integers(0, 2**28 - 1), st.integers(0, 2), st.integers(0, 8)))
    if KINDS[kind] == "admit":  # prompt, extra private blocks (partial last, decode), register split
        return "admit", prompt(source, length, seed), extra, split
    return KINDS[kind], seed % (21 if KINDS[kind] == "finish" else 7)


operations = st.lists(operation(), min_size=20, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_blocks=st.integers(3, 16), host_blocks=st.sampled_from([0, 2, 6]), ops=operations)
def test_random_operations_match_the_reference_model(num_blocks, host_blocks, ops):
    pool, ref = PrefixBlockPool(num_blocks, host_blocks=host_blocks), ReferenceLRU(num_blocks, host_blocks)
    running: list[tuple[list[int], int]] = []  # (named keys, private blocks) per request
    loose = 0  # private blocks allocated outside requests
    for op, *args in ops:
        if op == "admit":
            keys, extra, split = args
            hit = pool.lookup(keys)
            assert hit.num_blocks == pool.match(keys) == ref.match(keys)
            assert hit.num_host_blocks == pool.match_on_host(keys)
            new_blocks = len(keys) - hit.num_blocks + extra
            if not pool.can_admit(hit.num_free_blocks_needed + new_blocks):
                continue
            free_before = pool.num_free
            got = pool.acquire(keys)
            assert got.num_blocks == ref.acquire(keys) == hit.num_blocks
            assert free_before - pool.num_free == hit.num_free_blocks_needed == got.cached_free + got.host
            pool.allocate(new_blocks)
            ref.allocate(new_blocks)
            rest = keys[got.num_blocks:]
            named = pool.register(rest[:split]) + pool.register(rest[split:])  # e.g. two prefill chunks
            assert named == ref.register(rest[:split]) + ref.register(rest[split:])
            running.append((keys[:got.num_blocks] + named, new_blocks - len(named)))
        elif op == "finish" and running:
            named, num_private = running.pop(args[0] % len(running))
            pool.release(named, num_private)
            ref.release(named, num_private)
        elif op == "alloc" and args[0] <= pool.num_free:
            pool.allocate(args[0])
            ref.allocate(args[0])
            loose += args[0]
        elif op == "pressure":  # a transient private allocation: evicts (to host) without holding
            num_blocks = min(args[0], pool.num_free)
            pool.allocate(num_blocks)
            ref.allocate(num_blocks)
            pool.free(num_blocks)
            ref.release([], num_blocks)
        elif op == "free":
            num_blocks = min(args[0], loose)
            pool.free(num_blocks)
            ref.release([], num_blocks)
            loose -= num_blocks
        assert_same(pool, ref)
        held = {k for named, _ in running for k in named}
        assert not held & set(pool.lru_keys()) and not held & set(pool.host_keys())  # never evicted
    for named, num_private in running:
        pool.release(named, num_private)
    pool.free(loose)
    pool.check()
    assert pool.num_free == pool.num_blocks and pool.num_private == 0


# --- named-block rules ------------------------------------------------------------------------------

def test_match_stops_at_the_first_miss_and_changes_nothing():
    pool = PrefixBlockPool(10)
    serve(pool, [1, 2, 3], 3)
    assert pool.match([1, 2, 3, 4]) == 3 and pool.match([1, 9, 3]) == 1 and pool.match([9, 1]) == 0
    assert pool.lru_keys() == [3, 2, 1] and pool.stats.lookups == 3  # serve's acquire only


def test_release_frees_the_tail_of_a_prefix_before_its_head():
    pool = PrefixBlockPool(4)
    serve(pool, [1, 2, 3, 4], 4)
    assert pool.lru_keys() == [4, 3, 2, 1]  # next evicted first
    pool.allocate(2)
    assert pool.match([1, 2, 3, 4]) == 2  # the head survives and is still a usable prefix
    assert pool.stats.evictions == 2


def test_shared_blocks_are_counted_in_use_and_never_evicted():
    pool = PrefixBlockPool(6)
    got_a = pool.acquire([1, 2])
    pool.allocate(2)
    assert pool.register([1, 2]) == [1, 2] and got_a.num_blocks == 0
    got_b = pool.acquire([1, 2, 3])
    assert (got_b.num_blocks, got_b.in_use, got_b.cached_free) == (2, 2, 0)
    assert pool.refcount(1) == 2 and pool.num_free == 4
    with pytest.raises(RuntimeError):
        pool.allocate(5)  # the shared blocks cannot be evicted
    pool.release([1, 2], 0)
    assert pool.refcount(1) == 1 and pool.lru_keys() == []
    pool.release([1, 2], 0)
    assert pool.lru_keys() == [2, 1] and pool.num_free == 6
    pool.check()


def test_a_block_computed_twice_stays_private_for_the_second_request():
    pool = PrefixBlockPool(6)
    pool.allocate(2)
    pool.allocate(2)  # two requests computed [1, 2] concurrently
    assert pool.register([1, 2]) == [1, 2]
    assert pool.register([1, 2]) == []  # one key names one block
    assert pool.num_private == 2 and pool.num_cached == 2
    pool.release([], 2)
    pool.release([1, 2], 0)
    assert pool.num_free == 6 and pool.num_evictable == 2
    pool.check()


def test_misuse_fails_loudly():
    pool = PrefixBlockPool(4)
    with pytest.raises(RuntimeError):
        pool.register([1])  # no private block to name
    pool.allocate(1)
    pool.register([1])
    with pytest.raises(RuntimeError):
        pool.release([1, 1], 0)  # referenced once
    pool = PrefixBlockPool(4)
    with pytest.raises(RuntimeError):
        pool.release([7], 0)
    with pytest.raises(RuntimeError):
        pool.free(1)
    with pytest.raises(RuntimeError):
        pool.allocate(5)
    with pytest.raises(ValueError):
        PrefixBlockPool(0)


def test_block_pool_interface_is_drop_in():
    pool = PrefixBlockPool(100, watermark_blocks=10)
    assert pool.can_admit(90) and not pool.can_admit(91) and not pool.can_admit(80, reserve_blocks=11)
    pool.allocate(30)
    assert (pool.num_free, pool.num_used) == (70, 30)
    pool.free(30)
    assert pool.num_free == pool.num_blocks


# --- block keys -------------------------------------------------------------------------------------

def test_trace_keys_cover_full_blocks_only():
    assert trace_block_keys([7, 9], 512, 16, 1023) == [7 * 32 + s for s in range(32)] + [9 * 32 + s for s in range(31)]
    assert len(trace_block_keys([7, 9], 512, 16, 1024)) == 64
    assert trace_block_keys([7, 9], 512, 16, 15) == []
    assert trace_block_keys([7, 9], 512, 16, 5000) == trace_block_keys([7, 9], 512, 16, 1024)  # past the trace
    assert trace_block_keys(np.array([7, 9]), 512, 512, 1000) == [7]
    assert all(type(k) is int for k in trace_block_keys(np.array([7, 9]), 512, 64, 1000))


def test_session_keys_cover_full_blocks_only_and_extend_across_turns():
    assert session_block_keys(3, 15, 16) == []
    turn1, turn2 = session_block_keys(3, 100, 16), session_block_keys(3, 260, 16)
    assert len(turn1) == 6 and turn2[:6] == turn1 and len(turn2) == 16
    assert not set(turn2) & set(session_block_keys(4, 260, 16))


def test_trace_and_session_keys_never_collide():
    largest_hash = SESSION_KEY_BASE - 1  # r = 1: any hash below 2**62 is allowed
    trace_keys = trace_block_keys([0, largest_hash], 512, 512, 1024) + trace_block_keys([2**57 - 1], 512, 16, 512)
    session_keys = session_block_keys(0, 32, 16) + session_block_keys(2**30 - 1, 32, 16)
    assert max(trace_keys) < SESSION_KEY_BASE <= min(session_keys) and max(session_keys) < 2**63
    for bad in ([-1], [2**57]):  # 2**57 * 32 would reach the session range
        with pytest.raises(ValueError):
            trace_block_keys(bad, 512, 16, 512)
    with pytest.raises(ValueError):
        session_block_keys(2**30, 16, 16)


@pytest.mark.parametrize("block_size", [0, 3, 24, 100, 1024])
def test_block_size_must_divide_the_trace_block(block_size):
    with pytest.raises(ValueError):
        trace_block_keys([1], 512, block_size, 512)


# --- host tier --------------------------------------------------------------------------------------

def test_evicted_blocks_go_to_host_within_its_capacity():
    pool = PrefixBlockPool(4, host_blocks=3)
    serve(pool, [1, 2, 3, 4], 4)
    pool.allocate(4)  # evicts 4, 3, 2, 1 in that order
    assert pool.host_keys() == [3, 2, 1] and pool.stats.host_drops == 1  # 4 dropped: host full
    assert pool.stats.evictions == 4 and pool.stats.host_stores == 4
    pool.free(4)
    assert pool.match([1, 2, 3, 4]) == 3 and pool.match_on_host([1, 2, 3, 4]) == 3
    pool.check()


def test_a_host_hit_is_loaded_into_a_gpu_block():
    pool = PrefixBlockPool(4, host_blocks=8)
    serve(pool, [1, 2, 3], 3)
    pool.allocate(4)  # evicts all three to host
    pool.free(3)  # one private block stays: 3 free
    serve(pool, [1, 5], 2)  # 1 comes back from host; 5 is new
    assert pool.stats.hits_host == 1 and pool.is_on_host(2) and not pool.is_on_host(1)
    hit = pool.lookup([1, 2, 3, 9])
    assert (hit.num_blocks, hit.num_host_blocks, hit.num_free_blocks_needed) == (3, 2, 3)
    got = pool.acquire([1, 2, 3, 9])  # 1 is cached-free on GPU, 2 and 3 load (evicting 5)
    assert (got.cached_free, got.host, got.in_use) == (1, 2, 0)
    assert pool.num_free == 0 and pool.host_keys() == [5] and pool.stats.evictions == 4
    pool.release([1, 2, 3], 0)
    pool.check()


def test_loading_from_host_without_free_gpu_blocks_raises_and_changes_nothing():
    pool = PrefixBlockPool(2, host_blocks=4)
    serve(pool, [1, 2], 2)
    pool.allocate(2)  # both to host; the GPU is full of private blocks
    assert pool.lookup([1, 2]).num_free_blocks_needed == 2
    with pytest.raises(RuntimeError):
        pool.acquire([1, 2])
    assert pool.host_keys() == [2, 1] and pool.stats.lookups == 2  # serve's lookup only
    pool.check()


def test_registering_a_key_on_host_supersedes_the_host_copy():
    """A request that computed a block again (its prefix missed earlier) names its GPU block;
    the host copy goes, since one key names one block and the GPU copy is the cheaper one."""
    pool = PrefixBlockPool(2, host_blocks=4)
    serve(pool, [1], 1)
    pool.allocate(2)  # 1 to host
    pool.free(1)
    assert pool.host_keys() == [1]
    assert pool.register([1]) == [1] and pool.host_keys() == [] and pool.refcount(1) == 1
    pool.check()
