"""The prefix-cache block pool the replicas use: `PrefixBlockPool`'s model and interface
(simcost.engine.kv.prefix_cache, which documents the semantics and is the plain-Python twin the
tests compare against, operation by operation), its state in arrays and each verb one numba
call over a request's keys (simcost.engine.kv.pool_kernels).

Keys are int64 arrays (lists are converted); `register` returns the keys it named as an array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simcost.engine.kv import pool_index as ix
from simcost.engine.kv import pool_kernels as k
from simcost.engine.kv.prefix_cache import Acquired, PrefixCacheStats, PrefixHit, check_pool_sizes

_ERRORS = {k.ERR_NO_ROOM: "cannot allocate that many blocks", k.ERR_HOST_ROOM: "loading the host blocks needs as "
           "many free GPU blocks", k.ERR_PRIVATE: "more private blocks than held",
           k.ERR_UNKNOWN: "releasing a key that is not referenced",
           k.ERR_OVER_RELEASED: "a key released more often than referenced"}


class ArrayPrefixBlockPool:
    def __init__(self, num_blocks: int, watermark_blocks: int = 0, host_blocks: int = 0, *,
                 index_dtype: type[np.signedinteger] | None = None):
        """index_dtype: the state's integers (default pool_index.index_dtype: int32 unless the
        pool is too big for it; tests force int64 to run that path on small pools)."""
        check_pool_sizes(num_blocks, host_blocks)
        self.num_blocks = num_blocks
        self.watermark_blocks = watermark_blocks
        self.host_blocks = host_blocks
        self._nodes, self._slots, self._groups, self._ext, self._s = k.new_state(num_blocks, host_blocks, index_dtype)
        self._out = np.zeros(4, dtype=np.int64)  # acquire's result

    def retire(self) -> None:
        """The replica is gone: free the block tables and keep the counts and stats (the run's
        summary reads them). An autoscaled month starts 10^4 replicas. A verb called after this
        fails loudly (AttributeError), never on stale tables."""
        del self._nodes, self._slots, self._groups, self._ext

    # --- counts ---------------------------------------------------------------------------------

    @property
    def num_empty(self) -> int:
        return self._s.item(k.EMPTY)

    @property
    def num_private(self) -> int:
        return self._s.item(k.PRIVATE)

    @property
    def num_free(self) -> int:
        s = self._s
        return s.item(k.EMPTY) + s.item(k.LRU_LEN)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_evictable(self) -> int:
        return self._s.item(k.LRU_LEN)

    @property
    def num_cached(self) -> int:
        return self._s.item(k.NUM_REFS)

    @property
    def num_host_cached(self) -> int:
        return self._s.item(k.HOST_LEN)

    @property
    def stats(self) -> PrefixCacheStats:
        s = self._s
        return PrefixCacheStats(*(s.item(i) for i in (k.LOOKUPS, k.HITS, k.HITS_IN_USE, k.HITS_CACHED_FREE,
                                                     k.HITS_HOST, k.EVICTIONS, k.HOST_STORES, k.HOST_DROPS)))

    def find_node(self, key: int) -> int:
        """The node holding key (-1: none): what acquire_nodes and register_nodes return."""
        return int(k.find(self._nodes, self._slots, self._groups, self._s, key))

    def refcount(self, key: int) -> int | None:
        node = self.find_node(key)
        ref = self._nodes.item(k.REF, node) if node >= 0 else k.ON_HOST
        return None if ref == k.ON_HOST else ref - k.CACHED_FREE

    def is_on_host(self, key: int) -> bool:
        node = self.find_node(key)
        return node >= 0 and self._nodes.item(k.REF, node) == k.ON_HOST

    def lru_keys(self) -> list[int]:
        return self._node_keys(k.list_nodes(self._ext, self._s, k.LRU_HEAD)).tolist()

    def host_keys(self) -> list[int]:
        return self._node_keys(k.list_nodes(self._ext, self._s, k.HOST_HEAD)).tolist()

    # --- private blocks -------------------------------------------------------------------------

    def can_admit(self, num_blocks: int, reserve_blocks: int = 0) -> bool:
        return self.num_free - num_blocks >= self.watermark_blocks + reserve_blocks

    def allocate(self, num_blocks: int) -> None:
        s = self._s
        if 0 <= num_blocks <= s.item(k.EMPTY):  # most calls: no eviction, no kernel call
            s[k.EMPTY] -= num_blocks
        else:
            if (code := k.take_free(self._nodes, self._slots, self._groups, self._ext, s, num_blocks)) < 0:
                _fail(code, f"allocating {num_blocks} blocks")
        s[k.PRIVATE] += num_blocks

    def free(self, num_blocks: int) -> None:
        s = self._s
        if num_blocks < 0 or num_blocks > s.item(k.PRIVATE):
            raise RuntimeError(f"prefix pool: freeing {num_blocks} private blocks, {self.num_private} held")
        s[k.PRIVATE] -= num_blocks
        s[k.EMPTY] += num_blocks

    # --- named blocks ---------------------------------------------------------------------------

    def match(self, keys: Sequence[int] | np.ndarray) -> int:
        return int(k.match(self._nodes, self._slots, self._groups, self._s, _as_array(keys)))

    def match_on_host(self, keys: Sequence[int] | np.ndarray) -> int:
        return self.lookup(keys).num_host_blocks

    def lookup(self, keys: Sequence[int] | np.ndarray) -> PrefixHit:
        run, host, cached_free = k.lookup(self._nodes, self._slots, self._groups, self._s, _as_array(keys))
        return PrefixHit(run, host, cached_free + host)

    def acquire(self, keys: Sequence[int] | np.ndarray) -> Acquired:
        return self.acquire_nodes(keys)[0]

    def acquire_nodes(self, keys: Sequence[int] | np.ndarray) -> tuple[Acquired, np.ndarray]:
        """`acquire`, and the nodes of the run it referenced, for `release_nodes`."""
        keys, out = _as_array(keys), self._out
        run_nodes = np.empty(len(keys), dtype=np.int64)
        if (code := k.acquire(self._nodes, self._slots, self._groups, self._ext, self._s, keys, out, run_nodes)) < 0:
            _fail(code, "acquiring")
        got = Acquired(*out.tolist())
        return got, run_nodes[:got.num_blocks]

    def register(self, keys: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.register_nodes(keys)[0]

    def register_nodes(self, keys: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`register`'s named keys, and their nodes, for `release_nodes`."""
        keys = _as_array(keys)
        out, out_nodes = np.empty(len(keys), dtype=np.int64), np.empty(len(keys), dtype=np.int64)
        named = k.register(self._nodes, self._slots, self._groups, self._ext, self._s, keys, out, out_nodes)
        if named < 0:
            _fail(named, f"naming {len(keys)} blocks, {self.num_private} private held")
        return out[:named], out_nodes[:named]

    def release(self, named_keys: Sequence[int] | np.ndarray, num_private: int) -> None:
        if (code := k.release(self._nodes, self._slots, self._groups, self._ext, self._s, _as_array(named_keys),
                              num_private)) < 0:
            _fail(code, f"releasing {num_private} private blocks, {self.num_private} held")

    def release_nodes(self, held: np.ndarray, num_private: int) -> None:
        """`release` of keys given as the nodes `acquire_nodes` and `register_nodes` returned
        (a referenced key keeps its node): the same changes without a hash probe per key."""
        if (code := k.release_nodes(self._nodes, self._ext, self._s, held, num_private)) < 0:
            _fail(code, f"releasing {num_private} private blocks, {self.num_private} held")

    # --- invariants -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise AssertionError unless every invariant holds (tests; O(capacity * 32))."""
        nodes, groups, ext, s = self._nodes, self._groups, self._ext, self._s
        capacity = groups.shape[0]
        rows = np.setdiff1d(np.arange(s[k.GFRESH]), groups[:s[k.GFREE_TOP], ix.GSTACK])  # group rows in use
        refs_by_row = nodes[k.REF].reshape(capacity, 1 << ix.G)
        _require(not np.count_nonzero(np.delete(refs_by_row, rows, axis=0)), "a key in an unused group row")
        present = refs_by_row[rows] != k.ABSENT
        _require(np.array_equal(present.sum(axis=1), groups[rows, ix.COUNT]) and bool((groups[rows, ix.COUNT] > 0).all()),
                 "a group's count != its keys, or an empty group kept")
        used = ((rows[:, None] << ix.G) + np.arange(1 << ix.G))[present]  # nodes holding a key
        refs = nodes[k.REF, used]
        lru, host = self.lru_keys(), self.host_keys()
        in_use = self.num_private + self.num_cached - len(lru)
        _require(self.num_empty >= 0 and self.num_private >= 0, "negative block count")
        _require(self.num_empty + len(lru) + in_use == self.num_blocks, "blocks do not add up")
        _require(int((refs >= k.CACHED_FREE).sum()) == self.num_cached and int((refs == k.ON_HOST).sum()) == len(host),
                 "named counts disagree with the nodes")
        keys = self._node_keys(used)
        _require(sorted(lru) == sorted(keys[refs == k.CACHED_FREE].tolist()), "LRU != cached-free blocks")
        _require(sorted(host) == sorted(keys[refs == k.ON_HOST].tolist()), "host list != host nodes")
        _require(len(host) <= self.host_blocks, "host over capacity")
        _require(int(np.count_nonzero(self._slots)) == len(rows), "table entries != groups in use")
        _require(all(k.find(nodes, self._slots, groups, s, key) == node for key, node in zip(keys.tolist(), used.tolist())),
                 "a key not found at its node")
        extents = 0
        for head, tail in ((k.LRU_HEAD, k.LRU_TAIL), (k.HOST_HEAD, k.HOST_TAIL)):  # linked both ways, nodes pointing back
            e, prev = s[head], -1
            while e >= 0:
                extents += 1
                lo, hi = int(ext[k.ELO, e]), int(ext[k.EHI, e])
                _require(0 <= lo < hi <= 1 << ix.G and ext[k.EPREV, e] == prev, "a malformed extent or list link")
                _require(bool((nodes[k.EXT, (int(ext[k.EG, e]) << ix.G) + np.arange(lo, hi)] == e).all()),
                         "a listed node not pointing at its extent")
                e, prev = int(ext[k.ENEXT, e]), e
            _require(s[tail] == prev, "a list's tail is not its last extent")
        _require(extents + int(s[k.EFREE_TOP]) == s[k.EFRESH] <= capacity, "extents lost or doubly kept")

    def _node_keys(self, nodes: np.ndarray) -> np.ndarray:
        """The keys of nodes (int64): their group row's group, shifted, and their sub-slot."""
        nodes = np.asarray(nodes, dtype=np.int64)
        halves = self._groups[nodes >> ix.G].astype(np.int64)
        group = (halves[:, ix.KEY_HI] << 32) | (halves[:, ix.KEY_LO] & 0xFFFFFFFF)
        return (group << ix.G) | (nodes & ix.SUB_MASK)


def _as_array(keys: Sequence[int] | np.ndarray) -> np.ndarray:
    return keys if isinstance(keys, np.ndarray) and keys.dtype == np.int64 else np.asarray(keys, dtype=np.int64)


def _fail(code: int, what: str) -> None:
    """A verb's error code as RuntimeError. Callers test the code first: the message (an
    f-string and a property read) is built only on failure, not on every call of a hot verb."""
    raise RuntimeError(f"prefix pool: {what}: {_ERRORS[code]}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(f"prefix pool invariant: {message}")
