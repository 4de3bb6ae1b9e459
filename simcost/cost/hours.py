"""Per-life hour windows: what each replica life did in each clock hour, kept only for the hours
the life spans.

A (lives, hours) matrix of a long autoscaled run is almost all zeros: a month of scale-to-zero has
~10^4 lives of minutes each, over 720 hours. `HourWindows` keeps, per life, its first clock hour
and how many hours it spans (CSR offsets), and a value per entry: entry e of life i is hour
first_hour[i] + e - offset[i]. Memory and time grow with the hours the lives span, not lives x
hours. Hours follow simcost.cost.energy: hour h covers [3600 h, 3600 (h + 1)), the last one takes
any overrun.

Sums give what numpy gives on the dense matrix, to the bit (`total`, `row_sums`, `column_sums`):
the dense matrix's other entries are zeros, which leave a float sum unchanged, and numpy's
pairwise summation (its grouping depends on where each value sits) is replayed on the virtual
flat array. The tests compare each with numpy on the dense matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from simcost.units import S_PER_HOUR

PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE: below it, 8 running sums; above, halves
_HOURS_PER_S = 1.0 / S_PER_HOUR
_EXACT_BELOW_S = 2.0 ** 50  # q x 3600 and (q + 1) x 3600 are exact doubles below this


@njit(cache=True, inline="always")
def clock_hour(t_s):
    """int(t_s // S_PER_HOUR), exactly as float floor division gives it, without its fmod: the
    per-step kernels cut a long run's millions of steps by hour, and the division was most of
    their time. The product with the reciprocal is within one of the quotient's floor; two exact
    comparisons settle it (a search of 2 x 10^8 times within 3 ulps of hour edges up to 2^50 s
    found none where they act: they keep exactness from resting on that search). Outside
    [0, 2^50) s (no simulated time is) it divides."""
    if not 0.0 <= t_s < _EXACT_BELOW_S:
        return int(t_s // S_PER_HOUR)
    q = int(t_s * _HOURS_PER_S)
    if q * S_PER_HOUR > t_s:
        return q - 1
    if (q + 1) * S_PER_HOUR <= t_s:
        return q + 1
    return q


def hour_of(t_s: np.ndarray, n_hours: int) -> np.ndarray:
    """The clock hour holding each time (the last hour takes any overrun; before 0: hour 0)."""
    return np.clip(np.floor_divide(t_s, S_PER_HOUR), 0, n_hours - 1).astype(np.int64)


def last_hour_of(end_s: np.ndarray, n_hours: int) -> np.ndarray:
    """The last clock hour an interval ending at end_s reaches: the last h with 3600 h < end_s (an
    end on a boundary stays in the hour before; the last hour takes any overrun). Floor division,
    as the kernels cut steps (`hour_piece`), not a rounded end_s / 3600."""
    end_s = np.asarray(end_s, dtype=np.float64)
    q = np.floor_divide(end_s, S_PER_HOUR)
    return np.clip(np.where(q * S_PER_HOUR < end_s, q, q - 1), 0, n_hours - 1).astype(np.int64)


@dataclass(frozen=True)
class HourWindows:
    first_hour: np.ndarray  # int64 (lives,)
    offset: np.ndarray  # int64 (lives + 1,): life i's entries are [offset[i], offset[i + 1])
    n_hours: int

    @classmethod
    def spanning(cls, first_hour: np.ndarray, last_hour: np.ndarray, n_hours: int) -> HourWindows:
        """Life i spans hours first_hour[i]..last_hour[i] (none if last < first)."""
        first = np.asarray(first_hour, dtype=np.int64)
        counts = np.maximum(0, np.asarray(last_hour, dtype=np.int64) - first + 1)
        offset = np.zeros(len(first) + 1, dtype=np.int64)
        np.cumsum(counts, out=offset[1:])
        return cls(first, offset, n_hours)

    @classmethod
    def of_intervals(cls, start_s: np.ndarray, end_s: np.ndarray, n_hours: int,
                     step_start_s: np.ndarray | None = None, step_end_s: np.ndarray | None = None,
                     step_life: np.ndarray | None = None) -> HourWindows:
        """Each life from the hour of start_s to the last hour end_s reaches, widened to the hours
        of its steps (given): every hour where the life has time or a step."""
        first = hour_of(start_s, n_hours)  # at least that hour: a life of no time has its start's
        last = np.maximum(first, last_hour_of(end_s, n_hours))
        if step_start_s is not None and step_end_s is not None and step_life is not None and len(step_start_s):
            first, last = _widen(first, last, step_start_s, step_end_s, step_life, n_hours)
        return cls.spanning(first, last, n_hours)

    @property
    def size(self) -> int:
        return int(self.offset[-1])

    @property
    def num_lives(self) -> int:
        return len(self.first_hour)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offset)

    def entry_life(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_lives, dtype=np.int64), self.counts)

    def entry_hour(self) -> np.ndarray:
        return np.repeat(self.first_hour - self.offset[:-1], self.counts) + np.arange(self.size, dtype=np.int64)

    def per_entry(self, per_life: np.ndarray) -> np.ndarray:
        return np.repeat(per_life, self.counts)

    def overlap_s(self, start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:
        """Per entry: seconds of life i's [start_s[i], end_s[i]) inside the entry's hour, as
        simcost.cost.energy.hour_overlap_s computes them on the dense matrix."""
        h = self.entry_hour()
        lo = h * S_PER_HOUR
        hi = lo + S_PER_HOUR
        hi[h == self.n_hours - 1] = math.inf
        return np.clip(np.minimum(self.per_entry(end_s), hi) - np.maximum(self.per_entry(start_s), lo), 0.0, None)

    def dense(self, values: np.ndarray) -> np.ndarray:
        """The (lives, hours) matrix (tests, and small runs only)."""
        out = np.zeros((self.num_lives, self.n_hours), dtype=np.asarray(values).dtype)
        out[self.entry_life(), self.entry_hour()] = values
        return out

    def at(self, values: np.ndarray, life: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """values[life, hour] of the dense matrix (0 outside the windows)."""
        k = hour - self.first_hour[life]
        inside = (k >= 0) & (k < self.counts[life])
        out = np.zeros(len(life), dtype=np.asarray(values).dtype)
        out[inside] = values[self.offset[life[inside]] + k[inside]]
        return out

    def select(self, mask: np.ndarray) -> tuple[HourWindows, np.ndarray]:
        """The windows of the lives where mask is set, and which entries are theirs."""
        counts = self.counts[mask]
        offset = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offset[1:])
        return HourWindows(self.first_hour[mask], offset, self.n_hours), self.per_entry(mask)

    @property
    def full(self) -> bool:
        """Every life spans every hour (a static fleet, a one-hour run): the entries are then the
        dense matrix itself, row by row, and numpy sums them as it sums that matrix, with no kernel
        to compile on a fresh install's first run."""
        return self.size == self.num_lives * self.n_hours

    def total(self, values: np.ndarray) -> float:
        """numpy's sum of the dense (lives, hours) matrix."""
        if self.full:
            return float(np.ascontiguousarray(values, dtype=np.float64).sum())
        pos = self.entry_life() * self.n_hours + self.entry_hour()
        one = np.array([0, len(values)], dtype=np.int64)
        return float(_pairwise_rows(pos, np.asarray(values, dtype=np.float64), one, self.num_lives * self.n_hours)[0])

    def row_sums(self, values: np.ndarray) -> np.ndarray:
        """numpy's dense.sum(axis=1): each life's hours."""
        if self.full:
            return np.ascontiguousarray(values, dtype=np.float64).reshape(self.num_lives, self.n_hours).sum(axis=1)
        return _pairwise_rows(self.entry_hour(), np.asarray(values, dtype=np.float64), self.offset, self.n_hours)

    def column_sums(self, values: np.ndarray) -> np.ndarray:
        """numpy's dense.sum(axis=0): each hour's lives, in life order (with one hour, numpy sums
        the lives pairwise)."""
        values = np.asarray(values, dtype=np.float64)
        if self.n_hours == 1:
            return np.array([self.total(values)])
        out = np.zeros(self.n_hours)
        np.add.at(out, self.entry_hour(), values)  # in entry order: life by life, as numpy adds rows
        return out


@njit(cache=True)
def _widen(first, last, step_start_s, step_end_s, step_life, n_hours):
    """first/last hours widened to every hour a life's steps touch."""
    first, last = first.copy(), last.copy()
    for j in range(step_start_s.shape[0]):
        i = step_life[j]
        h0 = min(max(clock_hour(step_start_s[j]), 0), n_hours - 1)
        q = clock_hour(step_end_s[j])
        h1 = min(max(q if q * S_PER_HOUR < step_end_s[j] else q - 1, h0), n_hours - 1)
        if h0 < first[i]:
            first[i] = h0
        if h1 > last[i]:
            last[i] = h1
    return first, last


@njit(cache=True)
def _pairwise_rows(pos, values, row_offset, n):
    """Per row r (entries [row_offset[r], row_offset[r + 1]), positions sorted in [0, n)): numpy's
    pairwise sum of the length-n array holding those values at those positions, zeros elsewhere."""
    out = np.zeros(row_offset.shape[0] - 1)
    for r in range(out.shape[0]):
        out[r] = 0.0 + _pairwise(pos, values, row_offset[r], row_offset[r + 1], 0, n)
    return out


@njit(cache=True)
def _pairwise(pos, values, e_lo, e_hi, lo, n):
    """numpy's pairwise_sum over positions [lo, lo + n), of which entries e_lo..e_hi hold values:
    halves (cut at a multiple of 8) summed separately down to blocks of PAIRWISE_BLOCK. An explicit
    stack, not recursion (numba's cache does not keep recursive functions)."""
    depth = 200  # frames: far more than log2 of any length
    f_lo, f_n = np.zeros(depth, np.int64), np.zeros(depth, np.int64)
    f_elo, f_ehi, f_join = np.zeros(depth, np.int64), np.zeros(depth, np.int64), np.zeros(depth, np.bool_)
    sums = np.zeros(depth)
    top, k = 0, 0  # frames, sums
    f_lo[0], f_n[0], f_elo[0], f_ehi[0], f_join[0] = lo, n, e_lo, e_hi, False
    top = 1
    while top > 0:
        top -= 1
        if f_join[top]:  # both halves done: their sums are the last two
            sums[k - 2] = sums[k - 2] + sums[k - 1]
            k -= 1
            continue
        b_lo, b_n, a, z = f_lo[top], f_n[top], f_elo[top], f_ehi[top]
        if a >= z or b_n <= PAIRWISE_BLOCK:
            sums[k] = _block_sum(pos, values, a, z, b_lo, b_n)
            k += 1
            continue
        n2 = b_n // 2
        n2 -= n2 % 8
        mid = a + np.searchsorted(pos[a:z], b_lo + n2)
        f_join[top] = True  # then the right half, then the left (popped first)
        f_lo[top + 1], f_n[top + 1], f_elo[top + 1], f_ehi[top + 1], f_join[top + 1] = b_lo + n2, b_n - n2, mid, z, False
        f_lo[top + 2], f_n[top + 2], f_elo[top + 2], f_ehi[top + 2], f_join[top + 2] = b_lo, n2, a, mid, False
        top += 3
    return sums[0]


@njit(cache=True)
def _block_sum(pos, values, e_lo, e_hi, lo, n):
    """numpy's pairwise_sum of a block of n <= PAIRWISE_BLOCK positions: below 8 one running sum;
    else 8 running sums (position mod 8) joined in pairs, then the last n % 8 added one by one."""
    if e_lo >= e_hi:
        return 0.0
    if n < 8:
        res = 0.0
        for e in range(e_lo, e_hi):
            res += values[e]
        return res
    r = np.zeros(8)
    tail = lo + n - n % 8
    e = e_lo
    while e < e_hi and pos[e] < tail:
        r[(pos[e] - lo) % 8] += values[e]
        e += 1
    res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while e < e_hi:
        res += values[e]
        e += 1
    return res
