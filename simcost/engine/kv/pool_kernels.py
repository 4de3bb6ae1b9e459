"""numba kernels of the prefix-cache block pool (simcost.engine.kv.array_pool): the state of
`PrefixBlockPool` (simcost.engine.kv.prefix_cache, the plain-Python twin the tests compare
against) held in five arrays, and its verbs over a whole request's keys in one call.

Why: a Mooncake prompt of 12k tokens is 750 16-token blocks, and every block is looked up,
taken off or put on an LRU, named and evicted once or more per request; as dict and OrderedDict
operations that was most of a Mooncake run. Here a key costs a few array writes, and a run of
keys of one group a probe in an open-addressing table.

State (pure functions over it; nothing global):
- `nodes[3, capacity * 32]`: per node (a key's place in its group row, simcost.engine.kv.pool_index)
  its REF: ABSENT (no key there), ON_HOST (in the host LRU) or, on the GPU, the refcount + 1
  (CACHED_FREE: refcount 0, in the GPU LRU); STAMP (marks a node seen in this call, to count
  distinct keys); EXT, the LRU extent it is in.
- `slots`, `groups`: the key index, key -> group row (pool_index).
- `ext[6, capacity]`: the two LRU lists (GPU: LRU_*, host: HOST_*) as linked lists of extents,
  each a run of one group row's sub-slots [ELO, EHI) in the list in descending order (EHI - 1
  first): a request releases its blocks tail first, so what it leaves cached-free is one extent
  per group it touched, and eviction takes a whole extent at a time. Extents split when a key in
  the middle of one is taken back. ESTACK is the stack of extents given back (top: s[EFREE_TOP]),
  taken first; then extents never used, from s[EFRESH] on. Every extent holds a key in a list,
  so capacity extents always suffice.
- `s[...]`: scalars (counts, list ends, stats), indexed by the constants below.
Verbs return a negative error code instead of raising, with the state unchanged where the
Python pool raises before changing anything; the wrapper raises RuntimeError.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcost.engine.kv import pool_index as ix
from simcost.jit_helper import njit_helper

REF, STAMP, EXT = range(3)  # node rows
NODE_ROWS = 3
ABSENT, ON_HOST, CACHED_FREE = 0, -1, 1  # REF values; a GPU block's REF is its refcount + 1
EG, ELO, EHI, EPREV, ENEXT, ESTACK = range(6)  # extent rows
EXT_ROWS = 6
STAMP_LIMIT = (1 << 31) - 1  # stamps start over here (int32 rows)
(EMPTY, PRIVATE, NUM_BLOCKS, HOST_BLOCKS, NUM_REFS, LRU_LEN, LRU_HEAD, LRU_TAIL, HOST_LEN, HOST_HEAD, HOST_TAIL,
 EFREE_TOP, EPOCH, BITS, LOOKUPS, HITS, HITS_IN_USE, HITS_CACHED_FREE, HITS_HOST, EVICTIONS, HOST_STORES,
 HOST_DROPS, GFREE_TOP, GFRESH, EFRESH) = range(25)
NUM_SCALARS = 25
ERR_NO_ROOM, ERR_HOST_ROOM, ERR_PRIVATE, ERR_UNKNOWN, ERR_OVER_RELEASED = -1, -2, -3, -4, -5
assert (ix.BITS, ix.GFREE_TOP, ix.GFRESH) == (BITS, GFREE_TOP, GFRESH)


def new_state(num_blocks: int, host_blocks: int, dtype: type[np.signedinteger] | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(nodes, slots, groups, ext, s); dtype: the state's integers (tests force int64)."""
    capacity = num_blocks + host_blocks  # named keys, so groups and extents too
    dtype = ix.index_dtype(capacity) if dtype is None else dtype
    slots, groups, bits = ix.new_index(capacity, dtype)
    # np.zeros and nothing written: pages are touched only as group rows and extents come into use
    nodes = np.zeros((NODE_ROWS, capacity << ix.G), dtype=dtype)  # ABSENT everywhere
    ext = np.zeros((EXT_ROWS, capacity), dtype=dtype)
    s = np.zeros(NUM_SCALARS, dtype=np.int64)
    s[EMPTY], s[NUM_BLOCKS], s[HOST_BLOCKS], s[BITS] = num_blocks, num_blocks, host_blocks, bits
    s[LRU_HEAD] = s[LRU_TAIL] = s[HOST_HEAD] = s[HOST_TAIL] = -1
    return nodes, slots, groups, ext, s


@njit_helper
def find_nodes(nodes, slots, groups, s, keys, found, stop_at_miss):
    """found[n] = the node of keys[n] (-1: absent), one probe per run of keys of one group;
    returns how many leading keys are present (stopping there when stop_at_miss)."""
    group = g = 0
    run = -1
    for n in range(keys.shape[0]):
        key = keys[n]
        if n == 0 or key >> ix.G != group:
            group = key >> ix.G
            g = ix.find_group(slots, groups, s, group)
        node = -1
        if g >= 0:
            node = ix.node_of(g, key)
            if nodes[REF, node] == ABSENT:
                node = -1
        found[n] = node
        if node < 0 and run < 0:
            run = n
            if stop_at_miss:
                return run
    return keys.shape[0] if run < 0 else run


@njit(cache=True)
def find(nodes, slots, groups, s, key):
    """The node of key, -1 when it is neither on GPU nor on host."""
    g = ix.find_group(slots, groups, s, key >> ix.G)
    if g < 0:
        return -1
    node = ix.node_of(g, key)
    return node if nodes[REF, node] != ABSENT else -1


# --- LRU lists of extents (GPU: LRU_*, host: HOST_*; head = next to go) ---------------------------

@njit_helper
def _new_extent(ext, s, g, lo, hi, after, head, tail):
    """An extent of row g's sub-slots [lo, hi), linked in after extent `after` (-1: at the head)."""
    if s[EFREE_TOP]:
        s[EFREE_TOP] -= 1
        e = np.int64(ext[ESTACK, s[EFREE_TOP]])
    else:
        e = s[EFRESH]
        s[EFRESH] += 1
    ext[EG, e], ext[ELO, e], ext[EHI, e] = g, lo, hi
    nxt = ext[ENEXT, after] if after >= 0 else s[head]
    _join(ext, s, after, e, head, tail)
    _join(ext, s, e, nxt, head, tail)
    return e


@njit_helper
def _drop_extent(ext, s, e, head, tail):
    _join(ext, s, ext[EPREV, e], ext[ENEXT, e], head, tail)
    ext[ESTACK, s[EFREE_TOP]] = e
    s[EFREE_TOP] += 1


@njit_helper
def _join(ext, s, prev, nxt, head, tail):
    """Make extents prev and nxt neighbours in a list (-1: nxt is its head, or prev its tail)."""
    if prev >= 0:
        ext[ENEXT, prev] = nxt
    else:
        s[head] = nxt
    if nxt >= 0:
        ext[EPREV, nxt] = prev
    else:
        s[tail] = prev


@njit_helper
def _append(nodes, ext, s, node, head, tail, length):
    """node's key joins the list's end: the last extent grows down by one when the key is the
    sub-slot below it in the same row (a request's blocks released tail first), else a new one."""
    g, sub = node >> ix.G, node & ix.SUB_MASK
    e = s[tail]
    if e >= 0 and ext[EG, e] == g and ext[ELO, e] == sub + 1:
        ext[ELO, e] = sub
    else:
        e = _new_extent(ext, s, g, sub, sub + 1, e, head, tail)
    nodes[EXT, node] = e
    s[length] += 1


@njit_helper
def _unlink(nodes, ext, s, node, head, tail, length):
    """node's key leaves its list (wherever it is in it). Kept small, the rare cases apart, so
    that LLVM inlines it into the verbs' loops."""
    e = np.int64(nodes[EXT, node])
    sub = node & ix.SUB_MASK
    lo, hi = ext[ELO, e], ext[EHI, e]
    if sub == lo and hi - lo > 1:  # its extent's last key (a hit on a request's first blocks)
        ext[ELO, e] = sub + 1
    elif sub == hi - 1 and hi - lo > 1:  # its first (the head evicted to the host tier)
        ext[EHI, e] = sub
    else:
        _unlink_rare(nodes, ext, s, node, e, head, tail)
    s[length] -= 1


@njit_helper
def _unlink_rare(nodes, ext, s, node, e, head, tail):
    """_unlink of the only key of extent e (which goes), or of one inside it: e keeps the keys
    before it in the list ([sub + 1, hi)), a new extent takes those after ([lo, sub))."""
    sub = node & ix.SUB_MASK
    lo, hi = ext[ELO, e], ext[EHI, e]
    if hi - lo == 1:
        _drop_extent(ext, s, e, head, tail)
        return
    after = _new_extent(ext, s, ext[EG, e], lo, sub, e, head, tail)
    ext[ELO, e] = sub + 1
    base = node - sub
    for j in range(lo, sub):
        nodes[EXT, base + j] = after


@njit_helper
def _head_node(ext, s, head):
    e = s[head]
    return (np.int64(ext[EG, e]) << ix.G) | (ext[EHI, e] - 1)


@njit_helper
def _evict(nodes, slots, groups, ext, s, victims):
    """The GPU LRU's first `victims` keys leave the pool, an extent at a time (no host tier)."""
    e = s[LRU_HEAD]
    left = victims
    while left > 0:
        g, lo, hi = np.int64(ext[EG, e]), ext[ELO, e], ext[EHI, e]
        take = min(left, hi - lo)
        base = g << ix.G
        for j in range(hi - take, hi):
            nodes[REF, base + j] = ABSENT
        ix.drop_keys(slots, groups, s, g, take)
        left -= take
        if take == hi - lo:
            nxt = ext[ENEXT, e]
            ext[ESTACK, s[EFREE_TOP]] = e
            s[EFREE_TOP] += 1
            e = nxt
        else:
            ext[EHI, e] = hi - take
    s[LRU_HEAD] = e
    if e >= 0:
        ext[EPREV, e] = -1
    else:
        s[LRU_TAIL] = -1
    s[LRU_LEN] -= victims


# --- verbs ----------------------------------------------------------------------------------------

@njit(cache=True)
def match(nodes, slots, groups, s, keys):
    """Leading keys present on GPU or host."""
    return find_nodes(nodes, slots, groups, s, keys, np.empty(keys.shape[0], dtype=np.int64), True)


@njit(cache=True)
def lookup(nodes, slots, groups, s, keys):
    """(leading run, distinct host keys in it, distinct cached-free GPU keys in it)."""
    return _lookup(nodes, slots, groups, s, keys, np.empty(keys.shape[0], dtype=np.int64))


@njit_helper
def _lookup(nodes, slots, groups, s, keys, found):
    """`lookup`, the run's nodes in found[:run]."""
    run = find_nodes(nodes, slots, groups, s, keys, found, True)
    if s[EPOCH] >= STAMP_LIMIT:  # (after 2**31 lookups) every stamp back to 0, epochs from 1 again
        nodes[STAMP, :] = 0
        s[EPOCH] = 0
    s[EPOCH] += 1
    epoch = s[EPOCH]
    host = cached_free = 0
    for n in range(run):
        node = found[n]
        if nodes[STAMP, node] != epoch:
            nodes[STAMP, node] = epoch
            ref = nodes[REF, node]
            if ref == ON_HOST:
                host += 1
            elif ref == CACHED_FREE:
                cached_free += 1
    return run, host, cached_free


@njit(cache=True)
def take_free(nodes, slots, groups, ext, s, num_blocks):
    """num_blocks leave num_free: empty blocks first, then the least recently used cached-free
    (to the host tier, whose oldest are dropped past its capacity)."""
    if num_blocks < 0 or num_blocks > s[EMPTY] + s[LRU_LEN]:
        return ERR_NO_ROOM
    from_empty = min(num_blocks, s[EMPTY])
    s[EMPTY] -= from_empty
    victims = num_blocks - from_empty
    host_tier = s[HOST_BLOCKS] > 0
    if host_tier:
        for _ in range(victims):
            node = _head_node(ext, s, LRU_HEAD)
            _unlink(nodes, ext, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
            nodes[REF, node] = ON_HOST
            _append(nodes, ext, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
    elif victims:
        _evict(nodes, slots, groups, ext, s, victims)
    s[NUM_REFS] -= victims
    s[EVICTIONS] += victims
    if host_tier:
        s[HOST_STORES] += victims
        excess = s[HOST_LEN] - s[HOST_BLOCKS]
        if excess > 0:
            for _ in range(excess):
                node = _head_node(ext, s, HOST_HEAD)
                _unlink(nodes, ext, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
                nodes[REF, node] = ABSENT
                ix.drop_keys(slots, groups, s, node >> ix.G, 1)
            s[HOST_DROPS] += excess
    return 0


@njit(cache=True)
def acquire(nodes, slots, groups, ext, s, keys, out, run_nodes):
    """Reference the leading cached run of keys; out[:4] = (run, in use, cached-free, host),
    run_nodes[:run] their nodes (what `release_nodes` takes back; len(keys) long)."""
    run, num_host, num_cached_free = _lookup(nodes, slots, groups, s, keys, run_nodes)
    if num_host > s[EMPTY] + s[LRU_LEN] - num_cached_free:
        return ERR_HOST_ROOM
    for n in range(run):
        node = run_nodes[n]
        ref = nodes[REF, node]
        if ref == CACHED_FREE:  # off the LRU
            _unlink(nodes, ext, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
        elif ref == ON_HOST:  # loaded back into a GPU block (taken below)
            _unlink(nodes, ext, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
            s[NUM_REFS] += 1
            ref = CACHED_FREE
        nodes[REF, node] = ref + 1
    if num_host:
        take_free(nodes, slots, groups, ext, s, num_host)  # cannot fail: checked above
    out[0], out[1], out[2], out[3] = run, run - num_cached_free - num_host, num_cached_free, num_host
    s[LOOKUPS] += keys.shape[0]
    s[HITS] += run
    s[HITS_IN_USE] += out[1]
    s[HITS_CACHED_FREE] += num_cached_free
    s[HITS_HOST] += num_host
    return 0


@njit(cache=True)
def register(nodes, slots, groups, ext, s, keys, out, out_nodes):
    """Name private blocks holding keys (see PrefixBlockPool.register); out[:m] = the m keys
    named, in order, out_nodes[:m] their nodes. Returns m, or ERR_PRIVATE (nothing changed)."""
    if keys.shape[0] > s[PRIVATE]:  # only then can the candidates outnumber the private blocks
        find_nodes(nodes, slots, groups, s, keys, out_nodes, False)
        m = 0
        for n in range(keys.shape[0]):  # candidates: not on GPU (absent, or on host)
            node = out_nodes[n]
            if node < 0 or nodes[REF, node] == ON_HOST:
                out[m] = keys[n]
                m += 1
        if m > s[PRIVATE] and np.unique(out[:m]).shape[0] > s[PRIVATE]:
            return ERR_PRIVATE
    named = 0
    group = g = 0
    for n in range(keys.shape[0]):  # one probe per run of keys of one group: found, or where it goes
        key = keys[n]
        if n == 0 or key >> ix.G != group:
            group = key >> ix.G
            i = ix.probe_group(slots, groups, s, group)
            g = np.int64(slots[i]) - 1
            if g < 0:  # the group's first key: its row goes where the probe ended
                g = ix.new_group(slots, groups, s, group, i)
        node = ix.node_of(g, key)
        ref = nodes[REF, node]
        if ref > 0:
            continue  # on GPU: cached by another request, or repeated in keys
        if ref == ON_HOST:
            _unlink(nodes, ext, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)  # the fresh GPU block supersedes it
        else:
            groups[g, ix.COUNT] += 1
        nodes[REF, node] = CACHED_FREE + 1
        s[NUM_REFS] += 1
        out[named] = key
        out_nodes[named] = node
        named += 1
    s[PRIVATE] -= named
    return named


@njit(cache=True)
def release(nodes, slots, groups, ext, s, keys, num_private):
    """Drop one reference per key, tail first (a key reaching 0 joins the LRU), then free
    num_private private blocks."""
    if num_private < 0 or num_private > s[PRIVATE]:
        return ERR_PRIVATE
    found = np.empty(keys.shape[0], dtype=np.int64)
    if find_nodes(nodes, slots, groups, s, keys, found, True) < keys.shape[0]:
        return ERR_UNKNOWN
    for n in range(keys.shape[0]):  # checked before changing anything
        if nodes[REF, found[n]] <= CACHED_FREE:
            return ERR_UNKNOWN
    return _drop_refs(nodes, ext, s, found, num_private)


@njit(cache=True)
def release_nodes(nodes, ext, s, held, num_private):
    """`release` of the keys whose nodes `acquire` and `register` gave (a referenced node stays
    its key's until released): no hash probe per key, the same changes."""
    if num_private < 0 or num_private > s[PRIVATE]:
        return ERR_PRIVATE
    for n in range(held.shape[0]):  # checked before changing anything
        if nodes[REF, held[n]] <= CACHED_FREE:
            return ERR_UNKNOWN
    return _drop_refs(nodes, ext, s, held, num_private)


@njit_helper
def _drop_refs(nodes, ext, s, found, num_private):
    for n in range(found.shape[0] - 1, -1, -1):
        node = found[n]
        ref = nodes[REF, node] - 1
        if ref < CACHED_FREE:
            return ERR_OVER_RELEASED
        nodes[REF, node] = ref
        if ref == CACHED_FREE:
            _append(nodes, ext, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
    s[PRIVATE] -= num_private
    s[EMPTY] += num_private
    return 0


@njit(cache=True)
def trace_keys(hash_ids, ratio):
    """Every engine block's key of a trace request: block b is sub-block b % ratio of trace
    block b // ratio, key hash * ratio + b % ratio (prefix_cache.trace_block_key_array's keys
    of the whole prompt, the twin tests/test_array_pool.py compares with)."""
    out = np.empty(hash_ids.shape[0] * ratio, dtype=np.int64)
    for b in range(hash_ids.shape[0]):
        base = hash_ids[b] * ratio
        for r in range(ratio):
            out[b * ratio + r] = base + r
    return out


@njit(cache=True)
def list_nodes(ext, s, head):
    """Nodes of a list (LRU_HEAD or HOST_HEAD), head first."""
    out = np.empty(s[LRU_LEN] if head == LRU_HEAD else s[HOST_LEN], dtype=np.int64)
    e = s[head]
    n = 0
    while e >= 0:
        base = np.int64(ext[EG, e]) << ix.G
        for j in range(ext[EHI, e] - 1, ext[ELO, e] - 1, -1):
            out[n] = base + j
            n += 1
        e = ext[ENEXT, e]
    return out
