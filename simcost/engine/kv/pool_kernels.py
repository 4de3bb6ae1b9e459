"""numba kernels of the prefix-cache block pool (simcost.engine.kv.array_pool): the state of
`PrefixBlockPool` (simcost.engine.kv.prefix_cache, the plain-Python twin the tests compare
against) held in four arrays, and its verbs over a whole request's keys in one call.

Why: a Mooncake prompt of 12k tokens is 750 16-token blocks, and every block is looked up,
taken off or put on an LRU, named and evicted once or more per request; as dict and OrderedDict
operations that was most of a Mooncake run. Here a key costs a few array writes, and a run of
keys of one group a probe in an open-addressing table.

State (pure functions over it; nothing global):
- `nodes[7, capacity]`: per named block (GPU, or host tier) its REF (refcount >= 0 on GPU,
  0 = cached-free and in the GPU LRU; HOST = on host, in the host LRU), PREV/NEXT (its LRU
  list), STAMP (marks a node seen in this call, to count distinct keys), and FREE, a stack of
  unused node numbers; the key index's rows GSLOT (where the node's key is) and GFREE.
  capacity = GPU blocks + host blocks bounds the named keys. int32 (pool_index.index_dtype).
- `slots`, `groups`: the key index, key -> node (simcost.engine.kv.pool_index: an open-addressing
  table of key groups, each a row of 32 sub-slots).
- `s[...]`: scalars (counts, list ends, stats), indexed by the constants below.
Verbs return a negative error code instead of raising, with the state unchanged where the
Python pool raises before changing anything; the wrapper raises RuntimeError.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcost.engine.kv import pool_index as ix

REF, PREV, NEXT, STAMP, FREE = range(5)  # node rows; pool_index adds GSLOT, GFREE
NODE_ROWS = 7
STAMP_LIMIT = (1 << 31) - 1  # stamps start over here (int32 rows)
HOST = -1  # REF of a node on the host tier
(EMPTY, PRIVATE, NUM_BLOCKS, HOST_BLOCKS, NUM_REFS, LRU_LEN, LRU_HEAD, LRU_TAIL, HOST_LEN, HOST_HEAD, HOST_TAIL,
 FREE_TOP, EPOCH, BITS, LOOKUPS, HITS, HITS_IN_USE, HITS_CACHED_FREE, HITS_HOST, EVICTIONS, HOST_STORES,
 HOST_DROPS, GFREE_TOP) = range(23)
NUM_SCALARS = 23
ERR_NO_ROOM, ERR_HOST_ROOM, ERR_PRIVATE, ERR_UNKNOWN, ERR_OVER_RELEASED = -1, -2, -3, -4, -5
assert (ix.BITS, ix.GFREE_TOP, ix.GSLOT, ix.GFREE) == (BITS, GFREE_TOP, NODE_ROWS - 2, NODE_ROWS - 1)


def new_state(num_blocks: int, host_blocks: int, dtype: type[np.signedinteger] | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(nodes, slots, groups, s); dtype: the index's integers (tests force int64)."""
    capacity = num_blocks + host_blocks  # named keys, so groups too
    bits = max(4, int(2 * capacity - 1).bit_length())  # load factor <= 1/2
    dtype = ix.index_dtype(capacity) if dtype is None else dtype
    nodes = np.zeros((NODE_ROWS, capacity), dtype=dtype)
    nodes[FREE] = nodes[ix.GFREE] = np.arange(capacity - 1, -1, -1)  # pop from the end: node 0 first
    slots = np.zeros(1 << bits, dtype=dtype)  # calloc: pages of a big pool are touched only when used
    groups = np.zeros((capacity, ix.SUB0 + (1 << ix.G)), dtype=dtype)
    s = np.zeros(NUM_SCALARS, dtype=np.int64)
    s[EMPTY], s[NUM_BLOCKS], s[HOST_BLOCKS], s[FREE_TOP], s[BITS] = num_blocks, num_blocks, host_blocks, capacity, bits
    s[GFREE_TOP] = capacity
    s[LRU_HEAD] = s[LRU_TAIL] = s[HOST_HEAD] = s[HOST_TAIL] = -1
    return nodes, slots, groups, s


@njit(cache=True)
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
        node = np.int64(groups[g, ix.SUB0 + (key & ix.SUB_MASK)]) - 1 if g >= 0 else -1
        found[n] = node
        if node < 0 and run < 0:
            run = n
            if stop_at_miss:
                return run
    return keys.shape[0] if run < 0 else run


@njit(cache=True)
def find(slots, groups, s, key):
    """The node of key, -1 when it is neither on GPU nor on host."""
    return ix.find(slots, groups, s, key)


@njit(cache=True)
def _new_node(nodes, groups, s, key, g):
    """A new node for key (of group row g), refcount 0, in no list."""
    s[FREE_TOP] -= 1
    node = np.int64(nodes[FREE, s[FREE_TOP]])
    nodes[REF, node] = 0
    ix.set_key(nodes, groups, g, key, node)
    return node


@njit(cache=True)
def _delete(nodes, slots, groups, s, node):
    """Drop node's key from the index and return the node to the free stack."""
    ix.drop_key(nodes, slots, groups, s, node)
    nodes[FREE, s[FREE_TOP]] = node
    s[FREE_TOP] += 1


# --- LRU lists (GPU: LRU_*, host: HOST_*; head = next to go) ---------------------------------------

@njit(cache=True)
def _append(nodes, s, node, head, tail, length):
    last = s[tail]
    nodes[PREV, node] = last
    nodes[NEXT, node] = -1
    if last >= 0:
        nodes[NEXT, last] = node
    else:
        s[head] = node
    s[tail] = node
    s[length] += 1


@njit(cache=True)
def _unlink(nodes, s, node, head, tail, length):
    prev, nxt = nodes[PREV, node], nodes[NEXT, node]
    if prev >= 0:
        nodes[NEXT, prev] = nxt
    else:
        s[head] = nxt
    if nxt >= 0:
        nodes[PREV, nxt] = prev
    else:
        s[tail] = prev
    s[length] -= 1


# --- verbs ----------------------------------------------------------------------------------------

@njit(cache=True)
def match(nodes, slots, groups, s, keys):
    """Leading keys present on GPU or host."""
    return find_nodes(nodes, slots, groups, s, keys, np.empty(keys.shape[0], dtype=np.int64), True)


@njit(cache=True)
def lookup(nodes, slots, groups, s, keys):
    """(leading run, distinct host keys in it, distinct cached-free GPU keys in it)."""
    return _lookup(nodes, slots, groups, s, keys, np.empty(keys.shape[0], dtype=np.int64))


@njit(cache=True)
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
            if ref == HOST:
                host += 1
            elif ref == 0:
                cached_free += 1
    return run, host, cached_free


@njit(cache=True)
def take_free(nodes, slots, groups, s, num_blocks):
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
            node = s[LRU_HEAD]
            _unlink(nodes, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
            nodes[REF, node] = HOST
            _append(nodes, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
    elif victims:  # the LRU's first `victims` nodes go at once: only the new head's link is rewritten
        node = s[LRU_HEAD]
        for _ in range(victims):
            after = nodes[NEXT, node]
            _delete(nodes, slots, groups, s, node)
            node = after
        s[LRU_HEAD] = node
        if node >= 0:
            nodes[PREV, node] = -1
        else:
            s[LRU_TAIL] = -1
        s[LRU_LEN] -= victims
    s[NUM_REFS] -= victims
    s[EVICTIONS] += victims
    if host_tier:
        s[HOST_STORES] += victims
        excess = s[HOST_LEN] - s[HOST_BLOCKS]
        if excess > 0:
            for _ in range(excess):
                node = s[HOST_HEAD]
                _unlink(nodes, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
                _delete(nodes, slots, groups, s, node)
            s[HOST_DROPS] += excess
    return 0


@njit(cache=True)
def acquire(nodes, slots, groups, s, keys, out, run_nodes):
    """Reference the leading cached run of keys; out[:4] = (run, in use, cached-free, host),
    run_nodes[:run] their nodes (what `release_nodes` takes back; len(keys) long)."""
    run, num_host, num_cached_free = _lookup(nodes, slots, groups, s, keys, run_nodes)
    if num_host > s[EMPTY] + s[LRU_LEN] - num_cached_free:
        return ERR_HOST_ROOM
    for n in range(run):
        node = run_nodes[n]
        ref = nodes[REF, node]
        if ref == 0:  # cached-free: off the LRU
            _unlink(nodes, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
        elif ref == HOST:  # loaded back into a GPU block (taken below)
            _unlink(nodes, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
            s[NUM_REFS] += 1
            ref = 0
        nodes[REF, node] = ref + 1
    if num_host:
        take_free(nodes, slots, groups, s, num_host)  # cannot fail: checked above
    out[0], out[1], out[2], out[3] = run, run - num_cached_free - num_host, num_cached_free, num_host
    s[LOOKUPS] += keys.shape[0]
    s[HITS] += run
    s[HITS_IN_USE] += out[1]
    s[HITS_CACHED_FREE] += num_cached_free
    s[HITS_HOST] += num_host
    return 0


@njit(cache=True)
def register(nodes, slots, groups, s, keys, out, out_nodes):
    """Name private blocks holding keys (see PrefixBlockPool.register); out[:m] = the m keys
    named, in order, out_nodes[:m] their nodes. Returns m, or ERR_PRIVATE (nothing changed)."""
    if keys.shape[0] > s[PRIVATE]:  # only then can the candidates outnumber the private blocks
        find_nodes(nodes, slots, groups, s, keys, out_nodes, False)
        m = 0
        for n in range(keys.shape[0]):  # candidates: not on GPU (absent, or on host)
            node = out_nodes[n]
            if node < 0 or nodes[REF, node] == HOST:
                out[m] = keys[n]
                m += 1
        if m > s[PRIVATE] and np.unique(out[:m]).shape[0] > s[PRIVATE]:
            return ERR_PRIVATE
    named = 0
    group = g = i = 0
    for n in range(keys.shape[0]):  # one probe per run of keys of one group: found, or where it goes
        key = keys[n]
        if n == 0 or key >> ix.G != group:
            group = key >> ix.G
            i = ix.probe_group(slots, groups, s, group)
            g = np.int64(slots[i]) - 1
        node = np.int64(groups[g, ix.SUB0 + (key & ix.SUB_MASK)]) - 1 if g >= 0 else -1
        if node >= 0:
            if nodes[REF, node] != HOST:
                continue  # on GPU: cached by another request, or repeated in keys
            _unlink(nodes, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)  # the fresh GPU block supersedes it
        else:
            if g < 0:  # the group's first key: its row goes where the probe ended (nothing moved since)
                g = ix.new_group(nodes, slots, groups, s, group, i)
            node = _new_node(nodes, groups, s, key, g)
        nodes[REF, node] = 1
        s[NUM_REFS] += 1
        out[named] = key
        out_nodes[named] = node
        named += 1
    s[PRIVATE] -= named
    return named


@njit(cache=True)
def release(nodes, slots, groups, s, keys, num_private):
    """Drop one reference per key, tail first (a key reaching 0 joins the LRU), then free
    num_private private blocks."""
    if num_private < 0 or num_private > s[PRIVATE]:
        return ERR_PRIVATE
    found = np.empty(keys.shape[0], dtype=np.int64)
    if find_nodes(nodes, slots, groups, s, keys, found, True) < keys.shape[0]:
        return ERR_UNKNOWN
    for n in range(keys.shape[0]):  # checked before changing anything
        if nodes[REF, found[n]] <= 0:
            return ERR_UNKNOWN
    return _drop_refs(nodes, s, found, num_private)


@njit(cache=True)
def release_nodes(nodes, s, held, num_private):
    """`release` of the keys whose nodes `acquire` and `register` gave (a referenced node stays
    its key's until released): no hash probe per key, the same changes."""
    if num_private < 0 or num_private > s[PRIVATE]:
        return ERR_PRIVATE
    for n in range(held.shape[0]):  # checked before changing anything
        if nodes[REF, held[n]] <= 0:
            return ERR_UNKNOWN
    return _drop_refs(nodes, s, held, num_private)


@njit(cache=True)
def _drop_refs(nodes, s, found, num_private):
    for n in range(found.shape[0] - 1, -1, -1):
        node = found[n]
        ref = nodes[REF, node] - 1
        if ref < 0:
            return ERR_OVER_RELEASED
        nodes[REF, node] = ref
        if ref == 0:
            _append(nodes, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
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
def list_keys(nodes, groups, s, head):
    """Keys of a list (LRU_HEAD or HOST_HEAD), head first."""
    out = np.empty(s[LRU_LEN] if head == LRU_HEAD else s[HOST_LEN], dtype=np.int64)
    node = s[head]
    for n in range(out.shape[0]):
        out[n] = ix.key_of(nodes, groups, node)
        node = nodes[NEXT, node]
    return out
