"""The prefix pool's key index (simcost.engine.kv.pool_kernels): key -> node in two levels.

Keys come in runs of consecutive values: a Mooncake trace block's 32 engine blocks are hash * 32
+ 0..31, a session's blocks base + j, a preempted request's own -1 - (rid * 2**32 + j). So a key
is split into its group (key >> G, arithmetic: negative keys too) and its sub-slot (key & 31):
the hash table maps a group to a group row holding its 2**G sub-slots. Finding a key is a probe
for its group and one read; a run of keys of one group costs one probe (callers keep the last
group found); a key leaves with a write to its sub-slot, and only the group's last key leaves
the table (backward shift). One probe per block (9M named and 9M evicted a Mooncake run, each a
random cache miss) was most of the pool's time.

State (arrays of one integer type, int32 unless a pool is too big for it, see `index_dtype`;
pool_kernels owns the other node rows and the int64 scalars `s`):
- `slots[2**bits]`: open addressing with linear probing, group row + 1 per used slot (0: empty),
  backward-shift deletion (no tombstones). Sized for the worst case, every named key in a group
  of its own (groups <= nodes): load factor <= 1/2.
- `groups[capacity, SUB0 + 2**G]`: per group row its group (int64, as KEY_LO and KEY_HI
  halves), COUNT (keys present) and sub-slots (node + 1, 0: none). np.zeros: rows never used
  are never touched (pages stay unmapped).
- `nodes[GSLOT, node]`: the node's group row * 2**G + sub-slot (deleting needs no probe, and the
  node's key is its group's and sub-slot's); `nodes[GFREE, :]`: the stack of unused group rows
  (top: s[GFREE_TOP]).
"""

from __future__ import annotations

import numpy as np
from numba import njit

G = 5  # log2 of a group's keys: a Mooncake 512-token trace block is 32 16-token engine blocks
SUB_MASK = (1 << G) - 1
KEY_LO, KEY_HI, COUNT, SUB0 = 0, 1, 2, 4  # columns of a group row (3: padding); sub-slot j is SUB0 + j
GSLOT, GFREE = 5, 6  # node rows (after pool_kernels' REF, PREV, NEXT, STAMP, FREE)
BITS, GFREE_TOP = 13, 22  # scalars (pool_kernels' BITS; GFREE_TOP is its last)
_LOW = 0xFFFFFFFF
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: Fibonacci hashing


def index_dtype(capacity: int) -> type[np.signedinteger]:
    """int32 (half the cache lines of int64) whenever a node's GSLOT fits: capacities below
    2**26 nodes, any real pool; int64 beyond."""
    return np.int32 if capacity < 1 << (31 - G) else np.int64


@njit(cache=True, inline="always")
def _home(group, s):
    bits = s[BITS]
    return ((group * _GOLDEN) >> (64 - bits)) & ((1 << bits) - 1)


@njit(cache=True, inline="always")
def group_of(groups, g):
    """Group row g's group (an int64 from its two halves)."""
    return (np.int64(groups[g, KEY_HI]) << 32) | (np.int64(groups[g, KEY_LO]) & _LOW)


@njit(cache=True)
def probe_group(slots, groups, s, group):
    """The slot holding group's row, or the empty slot that ends its probe (where it would go)."""
    mask = slots.shape[0] - 1
    i = _home(group, s)
    while slots[i]:
        if group_of(groups, slots[i] - 1) == group:
            return i
        i = (i + 1) & mask
    return i


@njit(cache=True)
def find_group(slots, groups, s, group):
    """group's row, -1 when none of its keys is present."""
    return np.int64(slots[probe_group(slots, groups, s, group)]) - 1


@njit(cache=True)
def find(slots, groups, s, key):
    """The node of key, -1 when it is neither on GPU nor on host."""
    g = find_group(slots, groups, s, key >> G)
    return np.int64(groups[g, SUB0 + (key & SUB_MASK)]) - 1 if g >= 0 else -1


@njit(cache=True)
def key_of(nodes, groups, node):
    gslot = np.int64(nodes[GSLOT, node])
    return (group_of(groups, gslot >> G) << G) | (gslot & SUB_MASK)


@njit(cache=True)
def new_group(nodes, slots, groups, s, group, i):
    """A row for group (no keys yet) at the empty slot i that ended its probe."""
    s[GFREE_TOP] -= 1
    g = np.int64(nodes[GFREE, s[GFREE_TOP]])
    groups[g, KEY_LO] = group & _LOW  # (stored truncated to the array's type: the low half's bits)
    groups[g, KEY_HI] = group >> 32
    slots[i] = g + 1
    return g


@njit(cache=True)
def set_key(nodes, groups, g, key, node):
    """key (of group row g) now at node."""
    sub = key & SUB_MASK
    groups[g, SUB0 + sub] = node + 1
    groups[g, COUNT] += 1
    nodes[GSLOT, node] = (g << G) | sub


@njit(cache=True)
def drop_key(nodes, slots, groups, s, node):
    """node's key leaves the index; its group too when it was the last."""
    gslot = np.int64(nodes[GSLOT, node])
    g = gslot >> G
    groups[g, SUB0 + (gslot & SUB_MASK)] = 0
    groups[g, COUNT] -= 1
    if groups[g, COUNT] == 0:
        _drop_group(nodes, slots, groups, s, g)


@njit(cache=True)
def _drop_group(nodes, slots, groups, s, g):
    """Delete group row g from the table (backward shift) and return it to the free stack."""
    mask = slots.shape[0] - 1
    i = _home(group_of(groups, g), s)
    while slots[i] != g + 1:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if not slots[j]:
            break
        home = _home(group_of(groups, slots[j] - 1), s)
        # move slots[j] into the hole at i unless its home lies cyclically in (i, j]
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            slots[i] = slots[j]
            i = j
    slots[i] = 0
    nodes[GFREE, s[GFREE_TOP]] = g
    s[GFREE_TOP] += 1
