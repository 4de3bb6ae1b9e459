"""Automatic prefix caching: a paged KV pool whose full blocks are named by content, shared
between requests by reference count, and kept after use until their memory is needed.

The model follows vLLM v1 (`vllm/v1/core/block_pool.py`, `kv_cache_manager.py`):

- Every GPU block is in one of three states. *In use*: referenced by >= 1 request, either named
  (a key, shareable) or private (unnamed: a partial last block, decode blocks, duplicates).
  *Cached-free*: named, refcount 0, content kept, in LRU order; a later request with the same
  prefix takes it back for free. *Empty*: no content. `num_free` = empty + cached-free, since a
  cached-free block is evicted on demand.
- A key names one full block *and its whole prefix* (vLLM chains each block's hash with its
  parent's). A request reuses the leading run of its keys that is cached and stops at the first
  miss, as vLLM does: it computes a prompt from its first uncached token on, so cached blocks
  after a miss are computed again (into private blocks, see `register`).
- Blocks are not numbered: nothing in the simulator needs block addresses, only which keys are
  cached where, how many blocks are private and how many are empty. A key maps to one block.
- Optional host tier (CPU DRAM, `host_blocks > 0`): a block evicted from the GPU LRU is copied
  to a host LRU of that capacity (the oldest host block is dropped when full). A match may run
  through host blocks; acquiring one loads it back into a GPU block, which the caller charges
  as a host-to-device transfer (bytes / bandwidth).

Call sequence for one request (keys: its full prompt blocks, in order):
  hit = pool.lookup(keys)                         # no state change; hit.num_free_blocks_needed
  new_blocks = blocks_for(num_tokens, block_size) - hit.num_blocks
  pool.can_admit(hit.num_free_blocks_needed + new_blocks, reserve)
  got = pool.acquire(keys)                        # references the leading cached run; stats
  pool.allocate(new_blocks)                       # private blocks for everything else
  named = pool.register(keys[got.num_blocks:])    # once those blocks are computed
  pool.release(keys[:got.num_blocks] + named, num_private_held)   # finished or preempted
`allocate`/`free`/`can_admit`/`num_free` behave like `simcost.engine.kv.blocks.BlockPool`, so code that
only counts private blocks runs unchanged. Stats are counted in `acquire` (the commit), so an
admission attempt may `lookup` any number of times. Misuse (releasing what was not referenced,
naming blocks not held) raises RuntimeError. Leaving at least one prompt token to compute (vLLM
caps a hit at num_tokens - 1 to get logits) is the caller's business: pass fewer keys.

Differences from vLLM, both deliberate: `allocate` takes empty blocks before evicting cached
ones (vLLM keeps one free queue, so a freed unnamed block waits behind older cached blocks), and
a block computed again while the same key is cached stays private and unnamed (vLLM names the
duplicate too, under the same hash, but never shares it: the first copy serves hits; here the
duplicate's content is dropped when it is released, so it cannot stand in once the first copy
is evicted).

Keys are Python ints (fast dict keys): trace keys in [0, 2**62), session keys in [2**62, 2**63),
so both fit int64 and never collide (see `trace_block_keys`, `session_block_keys`); a preempted
request's own keys are negative (simcost.engine.kv.reuse.request_block_keys).
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse, islice, repeat
from operator import or_
from typing import NamedTuple

import numpy as np

SESSION_KEY_BASE = 1 << 62  # session keys live above every trace key
_SESSION_CODE_BITS = 30
_SESSION_BLOCK_BITS = 32


class PrefixHit(NamedTuple):
    """What `acquire(keys)` would reuse now (`lookup`)."""

    num_blocks: int  # leading keys cached on GPU or host
    num_host_blocks: int  # of those, distinct keys on host (must be loaded)
    num_free_blocks_needed: int  # drop in num_free on acquire: cached-free GPU hits + host loads


class Acquired(NamedTuple):
    """What `acquire` reused, by where the blocks were (distinct blocks; a key repeated inside
    one request counts as in use from its second occurrence on)."""

    num_blocks: int
    in_use: int  # already referenced by another request: free
    cached_free: int  # taken off the GPU LRU: num_free dropped by one each
    host: int  # loaded from host into a GPU block: num_free dropped by one each, plus a transfer


@dataclass
class PrefixCacheStats:
    """Block counts; tokens saved and transfer time are the caller's to derive."""

    lookups: int = 0  # keys passed to acquire
    hits: int = 0  # keys reused (in use + cached-free + host)
    hits_in_use: int = 0
    hits_cached_free: int = 0
    hits_host: int = 0
    evictions: int = 0  # cached-free GPU blocks evicted to make room
    host_stores: int = 0  # evicted blocks copied to host
    host_drops: int = 0  # host blocks dropped for lack of host capacity

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


def check_pool_sizes(num_blocks: int, host_blocks: int) -> None:
    """The sizes both block pools (this one and array_pool's) refuse."""
    if num_blocks < 1:
        raise ValueError("a block pool needs at least one block")
    if host_blocks < 0:
        raise ValueError("host_blocks must be >= 0")


class PrefixBlockPool:
    def __init__(self, num_blocks: int, watermark_blocks: int = 0, host_blocks: int = 0):
        check_pool_sizes(num_blocks, host_blocks)
        self.num_blocks = num_blocks
        self.watermark_blocks = watermark_blocks
        self.host_blocks = host_blocks
        self.num_empty = num_blocks
        self.num_private = 0  # in use, unnamed
        # Named GPU blocks -> refcount (0 = cached-free). A Counter so that acquire increments a
        # whole run in C (Counter.update); every value is set explicitly, so Counter's
        # missing-key-is-zero never applies (lookups use `in` and .get).
        self._refs: Counter[int] = Counter()
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached-free keys, least recent first
        self._host: OrderedDict[int, None] = OrderedDict()  # host keys, least recent first
        self.stats = PrefixCacheStats()

    # --- counts ---------------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        return self.num_empty + len(self._lru)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_evictable(self) -> int:
        return len(self._lru)

    @property
    def num_cached(self) -> int:
        """Named GPU blocks, in use or cached-free."""
        return len(self._refs)

    @property
    def num_host_cached(self) -> int:
        return len(self._host)

    def refcount(self, key: int) -> int | None:
        """None when `key` is not on the GPU."""
        return self._refs.get(key)

    def is_on_host(self, key: int) -> bool:
        return key in self._host

    def lru_keys(self) -> list[int]:
        """Cached-free keys, next to be evicted first."""
        return list(self._lru)

    def host_keys(self) -> list[int]:
        """Host keys, next to be dropped first."""
        return list(self._host)

    # --- private blocks: BlockPool's interface ---------------------------------------------------

    def can_admit(self, num_blocks: int, reserve_blocks: int = 0) -> bool:
        """vLLM's admission rule: a new sequence must leave the watermark free (plus any reserve)."""
        return self.num_free - num_blocks >= self.watermark_blocks + reserve_blocks

    def allocate(self, num_blocks: int) -> None:
        """Private blocks: empty ones first, then evict the least recently used cached-free."""
        self._take_free(num_blocks)
        self.num_private += num_blocks

    def free(self, num_blocks: int) -> None:
        """Return private blocks (their content is unnamed, so they become empty)."""
        if num_blocks < 0 or num_blocks > self.num_private:
            raise RuntimeError(f"prefix pool: freeing {num_blocks} private blocks, {self.num_private} held")
        self.num_private -= num_blocks
        self.num_empty += num_blocks

    # --- named blocks ---------------------------------------------------------------------------

    def match(self, keys: Sequence[int]) -> int:
        """Number of leading keys cached on GPU or host (stop at the first miss). No state change."""
        keys = _as_list(keys)
        present = map(self._refs.__contains__, keys)
        if self._host:
            present = map(or_, present, map(self._host.__contains__, keys))
        flags = list(present)  # all keys, but in C: cheaper than a Python loop that stops early
        try:
            return flags.index(False)
        except ValueError:
            return len(flags)

    def match_on_host(self, keys: Sequence[int]) -> int:
        """Of the leading run `match` reports, how many distinct keys are on host."""
        return self.lookup(keys).num_host_blocks

    def lookup(self, keys: Sequence[int]) -> PrefixHit:
        """The leading run and what acquiring it would take from num_free. No state change."""
        keys = _as_list(keys)
        run = keys[:self.match(keys)]
        cached_free = len(self._lru.keys() & run)  # distinct keys, in C
        host = len(self._host.keys() & run) if self._host else 0
        return PrefixHit(len(run), host, cached_free + host)

    def acquire(self, keys: Sequence[int]) -> Acquired:
        """Reference the leading cached run of `keys` (see `lookup`); count the lookup.

        Cached-free blocks leave the LRU; host blocks are loaded into GPU blocks taken from
        num_free (empty first, then by eviction). Raises RuntimeError, changing nothing, when
        num_free cannot cover that: the caller must check `lookup(...).num_free_blocks_needed`.
        """
        keys = _as_list(keys)
        run = keys[:self.match(keys)]
        lru, num_lru = self._lru, len(self._lru)
        num_host = 0
        if self._host:
            from_host = list(self._host.keys() & run)
            num_host, num_free_after_hits = len(from_host), self.num_free - len(lru.keys() & run)
            if num_host > num_free_after_hits:
                raise RuntimeError(f"prefix pool: loading {num_host} host blocks needs as many free GPU "
                                   f"blocks, {num_free_after_hits} left after the GPU hits")
        deque(map(lru.pop, run, repeat(None)), maxlen=0)  # take cached-free hits off the LRU, in C
        num_cached_free = num_lru - len(lru)
        if num_host:
            deque(map(self._host.pop, from_host), maxlen=0)
            self._take_free(num_host)  # may evict to host: the loaded keys are already off it
            dict.update(self._refs, zip(from_host, repeat(0)))
        self._refs.update(run)  # refcount += 1 per occurrence, in C
        got = Acquired(len(run), len(run) - num_cached_free - num_host, num_cached_free, num_host)
        s = self.stats
        s.lookups += len(keys)
        s.hits += got.num_blocks
        s.hits_in_use += got.in_use
        s.hits_cached_free += got.cached_free
        s.hits_host += got.host
        return got

    def register(self, keys: Sequence[int]) -> list[int]:
        """Name private blocks the caller holds and has just filled with these full blocks; the
        references stay with the caller. Returns the keys named, in order. A key already cached
        on GPU (another request computed the same block meanwhile), or repeated in `keys`, is
        not named: the caller's copy stays private and is freed as such, because one key names
        one block. A host copy of a key is dropped instead: the fresh GPU block supersedes it.
        """
        refs = self._refs
        named = list(filterfalse(refs.__contains__, _as_list(keys)))
        if len(named) > self.num_private:  # unless it is only keys repeated in `keys`
            named = list(dict.fromkeys(named))
        if len(named) > self.num_private:
            raise RuntimeError(f"prefix pool: naming {len(named)} blocks, only {self.num_private} private held")
        num_refs = len(refs)
        dict.update(refs, zip(named, repeat(1)))
        if len(refs) - num_refs != len(named):  # a key repeated in `keys`: name its first block only
            named = list(dict.fromkeys(named))
        self.num_private -= len(named)
        if self._host:
            deque(map(self._host.pop, self._host.keys() & named), maxlen=0)
        return named

    def release(self, named_keys: Sequence[int], num_private: int) -> None:
        """A request ends (finished or preempted): drop its references and private blocks.

        Named blocks are released tail first, so that of a prefix that becomes cached-free, the
        last block is the least recently used and is evicted first. Evicting the head first
        would leave the rest cached but unreachable (a match stops at the first miss), so the
        capacity it holds would serve no hit; tail-first keeps what is cached a usable prefix.
        """
        named_keys = _as_list(named_keys)
        if num_private < 0 or num_private > self.num_private:
            raise RuntimeError(f"prefix pool: releasing {num_private} private blocks, {self.num_private} held")
        refs, lru = self._refs, self._lru
        tail_first = named_keys[::-1]
        counts = list(map(refs.get, tail_first))  # None: unknown key
        if counts.count(1) == len(counts):  # common case, all at C speed: every block becomes free
            num_lru = len(lru)
            dict.update(refs, zip(tail_first, repeat(0)))
            lru.update(zip(tail_first, repeat(None)))
            if len(lru) - num_lru != len(tail_first):  # a key twice, referenced once
                raise RuntimeError("prefix pool: a key released more often than referenced")
        else:
            if not all(counts):  # None or 0: nothing to release (checked before changing anything)
                raise RuntimeError("prefix pool: releasing a key that is not referenced")
            for key in tail_first:
                count = refs[key] - 1
                if count < 0:
                    raise RuntimeError(f"prefix pool: key {key} released more often than referenced")
                refs[key] = count
                if not count:
                    lru[key] = None
        self.free(num_private)

    # --- invariants -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise AssertionError unless every invariant holds (tests; O(cached blocks))."""
        refs, lru, host = self._refs, self._lru, self._host
        in_use = self.num_private + len(refs) - len(lru)
        _require(self.num_empty >= 0 and self.num_private >= 0, "negative block count")
        _require(self.num_empty + len(lru) + in_use == self.num_blocks,
                 f"empty {self.num_empty} + evictable {len(lru)} + in use {in_use} != {self.num_blocks}")
        _require(all(count >= 0 for count in refs.values()), "negative refcount")
        _require(all(refs.get(key) == 0 for key in lru), "a referenced (or unknown) block in the LRU")
        _require(sum(1 for count in refs.values() if count == 0) == len(lru), "a cached-free block not in the LRU")
        _require(len(host) <= self.host_blocks, f"host holds {len(host)} > {self.host_blocks} blocks")
        _require(not (refs.keys() & host.keys()), "a key on both GPU and host")

    # --- internals ------------------------------------------------------------------------------

    def _take_free(self, num_blocks: int) -> None:
        if num_blocks < 0 or num_blocks > self.num_free:
            raise RuntimeError(f"prefix pool: cannot allocate {num_blocks} blocks with {self.num_free} free")
        from_empty = min(num_blocks, self.num_empty)
        self.num_empty -= from_empty
        if num_blocks > from_empty:
            self._evict(num_blocks - from_empty)

    def _evict(self, num_blocks: int) -> None:
        victims = list(islice(self._lru, num_blocks))  # least recently used first
        deque(map(self._lru.pop, victims), maxlen=0)
        deque(map(self._refs.pop, victims), maxlen=0)
        self.stats.evictions += num_blocks
        if self.host_blocks:
            self._host.update(zip(victims, repeat(None)))
            self.stats.host_stores += num_blocks
            excess = len(self._host) - self.host_blocks
            if excess > 0:
                deque(map(self._host.pop, list(islice(self._host, excess))), maxlen=0)
                self.stats.host_drops += excess


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(f"prefix pool invariant: {message}")


def _as_list(keys: Sequence[int]) -> list[int]:
    # numpy scalars hash like ints but make every dict lookup slower; slices must be lists
    return keys.tolist() if isinstance(keys, np.ndarray) else keys if isinstance(keys, list) else list(keys)


# --- block keys ---------------------------------------------------------------------------------

def trace_block_keys(hash_ids: Sequence[int] | np.ndarray, trace_block_tokens: int, block_size: int,
                     num_tokens: int) -> list[int]:
    """Keys of the full `block_size`-token blocks of a prompt whose trace gives one hash id per
    `trace_block_tokens`-token block (Mooncake: 512). Engine block b is sub-block b % r of trace
    block b // r (r = trace_block_tokens // block_size): key hash * r + b % r, in [0, 2**62).

    A partial last block gets no key (its content is still growing; vLLM never shares it), nor
    do tokens past the trace's blocks (e.g. output recomputed after a preemption). Returns a
    list of Python ints, for this pool's dicts; `trace_block_key_array` is the same as int64.
    """
    return trace_block_key_array(hash_ids, trace_block_tokens, block_size, num_tokens).tolist()


def trace_block_key_array(hash_ids: Sequence[int] | np.ndarray, trace_block_tokens: int, block_size: int,
                          num_tokens: int, checked: bool = False) -> np.ndarray:
    """`trace_block_keys` as an int64 array (simcost.engine.kv.array_pool's keys). `checked`:
    the caller has already run `check_trace_hash_ids` on these ids (it runs per lookup)."""
    ratio = _block_ratio(trace_block_tokens, block_size)
    hashes = np.asarray(hash_ids, dtype=np.int64)
    num_keys = min(max(num_tokens, 0) // block_size, len(hashes) * ratio)
    num_trace_blocks = -(-num_keys // ratio)  # ceil: the last one may be used only in part
    hashes = hashes[:num_trace_blocks]
    if not checked:
        check_trace_hash_ids(hashes, trace_block_tokens, block_size)
    if ratio == 1:
        return hashes
    keys = hashes[:, None] * ratio + np.arange(ratio, dtype=np.int64)
    return keys.ravel()[:num_keys]


def check_trace_hash_ids(hash_ids: np.ndarray, trace_block_tokens: int, block_size: int) -> None:
    """Raise ValueError unless every hash id gives keys below the session keys (and >= 0)."""
    ratio = _block_ratio(trace_block_tokens, block_size)
    if len(hash_ids) and (hash_ids.min() < 0 or hash_ids.max() >= SESSION_KEY_BASE // ratio):
        raise ValueError(f"trace hash ids must lie in [0, 2**62 / {ratio}) to keep keys apart")


def session_block_keys(session_code: int, num_tokens: int, block_size: int) -> list[int]:
    """Keys of the full blocks of any turn of a synthetic session: turn k+1 extends turn k's
    prompt + output, so block j of session s is the same block in every turn that has it full.
    Key 2**62 + s * 2**32 + j: above every trace key, below 2**63 (fits int64); s < 2**30."""
    if not 0 <= session_code < 1 << _SESSION_CODE_BITS:
        raise ValueError(f"session code {session_code} outside [0, 2**{_SESSION_CODE_BITS})")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    num_keys = max(num_tokens, 0) // block_size
    if num_keys > 1 << _SESSION_BLOCK_BITS:
        raise ValueError(f"{num_keys} blocks exceed the 2**{_SESSION_BLOCK_BITS} a session key can number")
    base = SESSION_KEY_BASE + (session_code << _SESSION_BLOCK_BITS)
    return list(range(base, base + num_keys))


def _block_ratio(trace_block_tokens: int, block_size: int) -> int:
    if block_size < 1 or trace_block_tokens < 1 or trace_block_tokens % block_size:
        raise ValueError(f"block_size {block_size} must divide the trace's {trace_block_tokens}-token blocks")
    return trace_block_tokens // block_size
