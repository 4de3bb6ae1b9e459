"""numba kernels of the prefix-cache block pool (simcost.engine.kv.array_pool): the state of
`PrefixBlockPool` (simcost.engine.kv.prefix_cache, the plain-Python twin the tests compare
against) held in three arrays, and its verbs over a whole request's keys in one call.

Why: a Mooncake prompt of 12k tokens is 750 16-token blocks, and every block is looked up,
taken off or put on an LRU, named and evicted once or more per request; as dict and OrderedDict
operations that was most of a Mooncake run. Here a key costs a probe in an open-addressing
table and a few array writes.

State (pure functions over it; nothing global):
- `nodes[6, capacity]`: per named block (GPU, or host tier) its KEY, REF (refcount >= 0 on GPU,
  0 = cached-free and in the GPU LRU; HOST = on host, in the host LRU), PREV/NEXT (its LRU
  list), STAMP (marks a node seen in this call, to count distinct keys), and FREE, a stack of
  unused node numbers. capacity = GPU blocks + host blocks bounds the named keys.
- `slots[2**bits]`: the hash table, node + 1 per used slot (0: empty), linear probing with
  backward-shift deletion (no tombstones, so probes stay short however many keys come and go).
- `s[...]`: scalars (counts, list ends, stats), indexed by the constants below.
Verbs return a negative error code instead of raising, with the state unchanged where the
Python pool raises before changing anything; the wrapper raises RuntimeError.
"""

from __future__ import annotations

import numpy as np
from numba import njit

KEY, REF, PREV, NEXT, STAMP, FREE = range(6)
HOST = -1  # REF of a node on the host tier
(EMPTY, PRIVATE, NUM_BLOCKS, HOST_BLOCKS, NUM_REFS, LRU_LEN, LRU_HEAD, LRU_TAIL, HOST_LEN, HOST_HEAD, HOST_TAIL,
 FREE_TOP, EPOCH, BITS, LOOKUPS, HITS, HITS_IN_USE, HITS_CACHED_FREE, HITS_HOST, EVICTIONS, HOST_STORES,
 HOST_DROPS) = range(22)
NUM_SCALARS = 22
ERR_NO_ROOM, ERR_HOST_ROOM, ERR_PRIVATE, ERR_UNKNOWN, ERR_OVER_RELEASED = -1, -2, -3, -4, -5
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: Fibonacci hashing


def new_state(num_blocks: int, host_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    capacity = num_blocks + host_blocks
    bits = max(4, int(2 * capacity - 1).bit_length())  # load factor <= 1/2
    nodes = np.zeros((6, capacity), dtype=np.int64)
    nodes[FREE] = np.arange(capacity - 1, -1, -1)  # pop from the end: node 0 first
    slots = np.zeros(1 << bits, dtype=np.int64)  # calloc: pages of a big pool are touched only when used
    s = np.zeros(NUM_SCALARS, dtype=np.int64)
    s[EMPTY], s[NUM_BLOCKS], s[HOST_BLOCKS], s[FREE_TOP], s[BITS] = num_blocks, num_blocks, host_blocks, capacity, bits
    s[LRU_HEAD] = s[LRU_TAIL] = s[HOST_HEAD] = s[HOST_TAIL] = -1
    return nodes, slots, s


# --- hash table -----------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _home(key, s):
    bits = s[BITS]
    return ((key * _GOLDEN) >> (64 - bits)) & ((1 << bits) - 1)


@njit(cache=True)
def _probe(nodes, slots, s, key):
    """The slot holding key's node, or the empty slot that ends its probe (where it would go)."""
    mask = slots.shape[0] - 1
    i = _home(key, s)
    while slots[i]:
        if nodes[KEY, slots[i] - 1] == key:
            return i
        i = (i + 1) & mask
    return i


@njit(cache=True)
def find(nodes, slots, s, key):
    """The node of key, -1 when it is neither on GPU nor on host."""
    return slots[_probe(nodes, slots, s, key)] - 1


@njit(cache=True)
def _insert_at(nodes, slots, s, key, i):
    """A new node for key, refcount 0, in no list, at the empty slot i that ended its probe."""
    s[FREE_TOP] -= 1
    node = nodes[FREE, s[FREE_TOP]]
    nodes[KEY, node] = key
    nodes[REF, node] = 0
    slots[i] = node + 1
    return node


@njit(cache=True)
def _delete(nodes, slots, s, node):
    """Drop node's key from the table (backward shift) and return the node to the free stack."""
    mask = slots.shape[0] - 1
    i = _home(nodes[KEY, node], s)
    while slots[i] != node + 1:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if not slots[j]:
            break
        home = _home(nodes[KEY, slots[j] - 1], s)
        # move slots[j] into the hole at i unless its home lies cyclically in (i, j]
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            slots[i] = slots[j]
            i = j
    slots[i] = 0
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
def match(nodes, slots, s, keys):
    """Leading keys present on GPU or host."""
    for n in range(keys.shape[0]):
        if find(nodes, slots, s, keys[n]) < 0:
            return n
    return keys.shape[0]


@njit(cache=True)
def lookup(nodes, slots, s, keys):
    """(leading run, distinct host keys in it, distinct cached-free GPU keys in it)."""
    run = match(nodes, slots, s, keys)
    s[EPOCH] += 1
    epoch = s[EPOCH]
    host = cached_free = 0
    for n in range(run):
        node = find(nodes, slots, s, keys[n])
        if nodes[STAMP, node] != epoch:
            nodes[STAMP, node] = epoch
            ref = nodes[REF, node]
            if ref == HOST:
                host += 1
            elif ref == 0:
                cached_free += 1
    return run, host, cached_free


@njit(cache=True)
def take_free(nodes, slots, s, num_blocks):
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
            _delete(nodes, slots, s, node)
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
                _delete(nodes, slots, s, node)
            s[HOST_DROPS] += excess
    return 0


@njit(cache=True)
def acquire(nodes, slots, s, keys, out, run_nodes):
    """Reference the leading cached run of keys; out[:4] = (run, in use, cached-free, host),
    run_nodes[:run] their nodes (what `release_nodes` takes back)."""
    run, num_host, num_cached_free = lookup(nodes, slots, s, keys)
    if num_host > s[EMPTY] + s[LRU_LEN] - num_cached_free:
        return ERR_HOST_ROOM
    for n in range(run):
        node = find(nodes, slots, s, keys[n])
        ref = nodes[REF, node]
        if ref == 0:  # cached-free: off the LRU
            _unlink(nodes, s, node, LRU_HEAD, LRU_TAIL, LRU_LEN)
        elif ref == HOST:  # loaded back into a GPU block (taken below)
            _unlink(nodes, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)
            s[NUM_REFS] += 1
            ref = 0
        nodes[REF, node] = ref + 1
        run_nodes[n] = node
    if num_host:
        take_free(nodes, slots, s, num_host)  # cannot fail: checked above
    out[0], out[1], out[2], out[3] = run, run - num_cached_free - num_host, num_cached_free, num_host
    s[LOOKUPS] += keys.shape[0]
    s[HITS] += run
    s[HITS_IN_USE] += out[1]
    s[HITS_CACHED_FREE] += num_cached_free
    s[HITS_HOST] += num_host
    return 0


@njit(cache=True)
def register(nodes, slots, s, keys, out, out_nodes):
    """Name private blocks holding keys (see PrefixBlockPool.register); out[:m] = the m keys
    named, in order, out_nodes[:m] their nodes. Returns m, or ERR_PRIVATE (nothing changed)."""
    if keys.shape[0] > s[PRIVATE]:  # only then can the candidates outnumber the private blocks
        m = 0
        for n in range(keys.shape[0]):  # candidates: not on GPU (absent, or on host)
            node = find(nodes, slots, s, keys[n])
            if node < 0 or nodes[REF, node] == HOST:
                out[m] = keys[n]
                m += 1
        if m > s[PRIVATE] and np.unique(out[:m]).shape[0] > s[PRIVATE]:
            return ERR_PRIVATE
    named = 0
    for n in range(keys.shape[0]):  # one probe per key: found, or where it goes
        key = keys[n]
        i = _probe(nodes, slots, s, key)
        if slots[i]:
            node = slots[i] - 1
            if nodes[REF, node] != HOST:
                continue  # on GPU: cached by another request, or repeated in keys
            _unlink(nodes, s, node, HOST_HEAD, HOST_TAIL, HOST_LEN)  # the fresh GPU block supersedes it
        else:
            node = _insert_at(nodes, slots, s, key, i)
        nodes[REF, node] = 1
        s[NUM_REFS] += 1
        out[named] = key
        out_nodes[named] = node
        named += 1
    s[PRIVATE] -= named
    return named


@njit(cache=True)
def release(nodes, slots, s, keys, num_private):
    """Drop one reference per key, tail first (a key reaching 0 joins the LRU), then free
    num_private private blocks."""
    if num_private < 0 or num_private > s[PRIVATE]:
        return ERR_PRIVATE
    found = np.empty(keys.shape[0], dtype=np.int64)
    for n in range(keys.shape[0]):  # checked before changing anything
        node = find(nodes, slots, s, keys[n])
        if node < 0 or nodes[REF, node] <= 0:
            return ERR_UNKNOWN
        found[n] = node
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
def list_keys(nodes, s, head):
    """Keys of a list (LRU_HEAD or HOST_HEAD), head first."""
    out = np.empty(s[LRU_LEN] if head == LRU_HEAD else s[HOST_LEN], dtype=np.int64)
    node = s[head]
    for n in range(out.shape[0]):
        out[n] = nodes[KEY, node]
        node = nodes[NEXT, node]
    return out
