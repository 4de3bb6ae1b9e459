"""The prefix pool's key index (simcost.engine.kv.pool_kernels): key -> node in two levels.

Keys come in runs of consecutive values: a Mooncake trace block's 32 engine blocks are hash * 32
+ 0..31, a session's blocks base + j, a preempted request's own -1 - (rid * 2**32 + j). So a key
is split into its group (key >> G, arithmetic: negative keys too) and its sub-slot (key & 31):
the hash table maps a group to a group row, and the key's node *is* its place in that row,
row * 2**G + sub-slot. Finding a key is a probe for its group; a run of keys of one group costs
one probe (callers keep the last group found); a key comes and goes with a write to its node
(pool_kernels' REF row says whether it is there), and only the group's last key leaving takes
the row out of the table (backward shift). A group's 32 nodes are neighbours in every node row,
so a request's run of blocks, named, released or evicted, is read and written in sequence.

State (arrays of one integer type, int32 unless a pool is too big for it, see `index_dtype`;
pool_kernels owns the node rows and the int64 scalars `s`):
- `slots[2**bits]`: open addressing with linear probing, group row + 1 per used slot (0: empty),
  backward-shift deletion (no tombstones). Sized for the worst case, every named key in a group
  of its own (groups <= capacity): load factor <= 1/2.
- `groups[capacity, 4]`: per group row its group (int64, as KEY_LO and KEY_HI halves) and COUNT
  (its keys present); column GSTACK holds the stack of rows given back (top: s[GFREE_TOP]),
  taken first; then rows never used, from s[GFRESH] on. np.zeros, nothing written at the start:
  rows never used are never touched (pages stay unmapped).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from simcost.jit_helper import njit_helper

G = 5  # log2 of a group's keys: a Mooncake 512-token trace block is 32 16-token engine blocks
SUB_MASK = (1 << G) - 1
KEY_LO, KEY_HI, COUNT, GSTACK = 0, 1, 2, 3  # columns of a group row
GROUP_COLUMNS = 4
BITS, GFREE_TOP, GFRESH = 13, 22, 23  # scalars (pool_kernels' BITS; GFREE_TOP and GFRESH are its last)
_LOW = 0xFFFFFFFF
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: Fibonacci hashing


def index_dtype(capacity: int) -> type[np.signedinteger]:
    """int32 (half the cache lines of int64) whenever a node number fits: row * 32 + sub-slot,
    capacities below 2**26 rows, any real pool; int64 beyond."""
    return np.int32 if capacity < 1 << (31 - G) else np.int64


def new_index(capacity: int, dtype: type[np.signedinteger]) -> tuple[np.ndarray, np.ndarray, int]:
    """(slots, groups, bits) for up to `capacity` groups, every row unused (s[GFREE_TOP] and
    s[GFRESH] start at 0)."""
    bits = max(4, int(2 * capacity - 1).bit_length())  # load factor <= 1/2
    slots = np.zeros(1 << bits, dtype=dtype)  # calloc: pages of a big pool are touched only when used
    groups = np.zeros((capacity, GROUP_COLUMNS), dtype=dtype)
    return slots, groups, bits


@njit(cache=True, inline="always")
def _home(group, s):
    bits = s[BITS]
    return ((group * _GOLDEN) >> (64 - bits)) & ((1 << bits) - 1)


@njit(cache=True, inline="always")
def group_of(groups, g):
    """Group row g's group (an int64 from its two halves)."""
    return (np.int64(groups[g, KEY_HI]) << 32) | (np.int64(groups[g, KEY_LO]) & _LOW)


@njit_helper
def probe_group(slots, groups, s, group):
    """The slot holding group's row, or the empty slot that ends its probe (where it would go)."""
    mask = slots.shape[0] - 1
    i = _home(group, s)
    while slots[i]:
        if group_of(groups, slots[i] - 1) == group:
            return i
        i = (i + 1) & mask
    return i


@njit_helper
def find_group(slots, groups, s, group):
    """group's row, -1 when none of its keys is present."""
    return np.int64(slots[probe_group(slots, groups, s, group)]) - 1


@njit(cache=True, inline="always")
def node_of(g, key):
    """The node of key in group row g."""
    return (g << G) | (key & SUB_MASK)


@njit_helper
def new_group(slots, groups, s, group, i):
    """A row for group (no keys yet) at the empty slot i that ended its probe."""
    if s[GFREE_TOP]:
        s[GFREE_TOP] -= 1
        g = np.int64(groups[s[GFREE_TOP], GSTACK])
    else:
        g = s[GFRESH]
        s[GFRESH] += 1
    groups[g, KEY_LO] = group & _LOW  # (stored truncated to the array's type: the low half's bits)
    groups[g, KEY_HI] = group >> 32
    slots[i] = g + 1
    return g


@njit_helper
def drop_keys(slots, groups, s, g, count):
    """count keys of group row g have left; the row leaves the table with its last."""
    groups[g, COUNT] -= count
    if groups[g, COUNT] == 0:
        _drop_group(slots, groups, s, g)


@njit_helper
def _drop_group(slots, groups, s, g):
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
    groups[s[GFREE_TOP], GSTACK] = g
    s[GFREE_TOP] += 1
