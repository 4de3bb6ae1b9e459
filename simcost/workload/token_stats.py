"""Output-token timing without a float per token: a fixed-error streaming histogram of
inter-token latency (ITL), for runs too large to keep every token's time.

vLLM's ITL is every gap between consecutive output tokens of a request, pooled over requests:
one value per token. A run of 1 M requests x 256 tokens would keep 256 M floats (2 GB, and
several times that in temporaries to take percentiles). Above `EXACT_TOKEN_LIMIT` planned output
tokens the request table keeps none: each gap goes into `LogHistogram` as the token is emitted.

LogHistogram is a log-bucketed histogram with relative accuracy ALPHA (as DDSketch, Masson et
al., VLDB 2019): bucket i >= 1 holds values in (MIN_S g^(i-1), MIN_S g^i] with
g = (1 + ALPHA) / (1 - ALPHA), and reports 2 MIN_S g^i / (g + 1), within ALPHA of every value in
it. A percentile is numpy's (linear interpolation between the two order statistics around the
rank) over the bucket values of those order statistics, so it is within ALPHA (0.5 %) of
numpy.percentile of the exact gaps. Gaps at or below MIN_S (1 ns) count as 0, gaps above MAX_S as
MAX_S. The mean is exact up to summation order (a running float sum).

Coverage differs from the exact path in one case: the histogram takes a gap when the token is
emitted, so it covers every request that arrived at or after warmup_s, including those still in
flight when drain_s cut the run (the exact path takes completed ones only).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

import simcost.portable_math as pmath

ALPHA = 0.005  # relative error of every percentile read from the histogram
GAMMA = (1.0 + ALPHA) / (1.0 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
MIN_S, MAX_S = 1e-9, 1e9
NUM_BUCKETS = int(math.ceil(math.log(MAX_S / MIN_S) / LOG_GAMMA)) + 2  # bucket 0: gaps <= MIN_S
# more planned output tokens than this and the table keeps no token times: exact ITL costs ~40 B per
# token at its peak (the times, then percentile temporaries), ~640 MB here
EXACT_TOKEN_LIMIT = 16_000_000


@njit(cache=True)
def bucket_of(gap_s, min_s, log_gamma, num_buckets):
    if not gap_s > min_s:  # also NaN
        return 0
    i = int(math.ceil(math.log(gap_s / min_s) / log_gamma))
    return min(max(i, 1), num_buckets - 1)


def bucket_of_py(gap_s, min_s, log_gamma, num_buckets):
    if not gap_s > min_s:
        return 0
    return min(max(int(math.ceil(math.log(gap_s / min_s) / log_gamma)), 1), num_buckets - 1)


@njit(cache=True)
def add_token_gaps(ids, generated, arrival_s, warmup_s, last_token_s, step_end_s, counts, totals, min_s, log_gamma):
    """ids each emit one token at every time in step_end_s (generated: tokens before these). The
    gap from each request's previous token goes into counts (requests arriving at or after
    warmup_s only), totals[0] += gaps, totals[1] += number of gaps; last_token_s is updated."""
    num_buckets = counts.shape[0]
    m = step_end_s.shape[0]
    measured = 0
    for n in range(ids.shape[0]):
        i = ids[n]
        if arrival_s[i] >= warmup_s:
            measured += 1
            if generated[i] > 0:
                gap = step_end_s[0] - last_token_s[i]
                counts[bucket_of(gap, min_s, log_gamma, num_buckets)] += 1
                totals[0] += gap
                totals[1] += 1.0
        last_token_s[i] = step_end_s[m - 1]
    if measured:  # later steps: the same gap for every member
        for j in range(1, m):
            gap = step_end_s[j] - step_end_s[j - 1]
            counts[bucket_of(gap, min_s, log_gamma, num_buckets)] += measured
            totals[0] += gap * measured
            totals[1] += measured


@njit(cache=True)
def interval_of(t, interval_s):
    """The largest k with k x interval_s <= t (np.histogram's rule for edges k x interval_s)."""
    k = int(math.floor(t / interval_s))
    if k * interval_s > t:
        k -= 1
    elif (k + 1) * interval_s <= t:
        k += 1
    return k


@njit(cache=True)
def stream_tokens(ids, generated, arrival_s, replica, warmup_s, last_token_s, step_end_s, counts, totals,
                  min_s, log_gamma, bins, used, last_entry, interval_s):
    """add_token_gaps, then (interval_s > 0) count_token_bins, in one call (this runs per decode
    span). Returns False, changing nothing, when the bin entries or last_entry are too small for
    what the call may add: the caller grows them first."""
    if interval_s > 0 and ids.shape[0]:
        rows = 0
        for n in range(ids.shape[0]):
            rows = max(rows, replica[ids[n]] + 1)
        spanned = interval_of(step_end_s[step_end_s.shape[0] - 1], interval_s) - interval_of(step_end_s[0], interval_s) + 1
        if rows > last_entry.shape[0] or used[0] + spanned * ids.shape[0] > bins.shape[1]:
            return False
    add_token_gaps(ids, generated, arrival_s, warmup_s, last_token_s, step_end_s, counts, totals, min_s, log_gamma)
    if interval_s > 0:
        count_token_bins(ids, replica, step_end_s, interval_s, bins, used, last_entry)
    return True


def add_token_gaps_py(ids, generated, arrival_s, warmup_s, last_token_s, step_end_s, counts, totals, min_s, log_gamma):
    num_buckets = len(counts)
    for i in ids:
        for j, end_s in enumerate(step_end_s):
            if arrival_s[i] >= warmup_s and (generated[i] > 0 or j > 0):
                gap = end_s - (last_token_s[i] if j == 0 else step_end_s[j - 1])
                counts[bucket_of_py(gap, min_s, log_gamma, num_buckets)] += 1
                totals[0] += gap
                totals[1] += 1.0
        last_token_s[i] = step_end_s[-1]


class LogHistogram:
    """Counts of values per log bucket, their exact count and (float) sum."""

    def __init__(self) -> None:
        self.counts = np.zeros(NUM_BUCKETS, dtype=np.int64)
        self.totals = np.zeros(2)  # sum of values, number of values (a float: numba adds in place)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        for v in values.tolist():
            self.counts[bucket_of_py(v, MIN_S, LOG_GAMMA, NUM_BUCKETS)] += 1
        self.totals += (float(values.sum()), len(values))

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def bucket_values(self) -> np.ndarray:
        """The value each bucket reports: within ALPHA of everything in it (0 for bucket 0)."""
        values = MIN_S * 2.0 * pmath.power(GAMMA, np.arange(NUM_BUCKETS, dtype=np.float64)) / (GAMMA + 1.0)
        values[0] = 0.0
        return values

    def percentiles(self, qs: list[float]) -> list[float]:
        """numpy.percentile's linear rule over the buckets' values of the order statistics."""
        n = self.count
        cum = np.cumsum(self.counts)
        values = self.bucket_values()
        out = []
        for q in qs:
            rank = q / 100.0 * (n - 1)
            lo = int(math.floor(rank))
            hi = min(lo + 1, n - 1)
            v_lo, v_hi = (float(values[np.searchsorted(cum, k, side="right")]) for k in (lo, hi))
            out.append(v_lo + (rank - lo) * (v_hi - v_lo))
        return out


@njit(cache=True)
def count_token_bins(ids, replica, step_end_s, interval_s, bins, used, last_entry):
    """Tokens emitted by ids on replica r in [k interval_s, (k + 1) interval_s), one per id per
    step (interval_of), as entries (r, k, count) in the columns of bins (3, capacity), used[0] of
    them filled: a replica's tokens go to its last entry while they stay in its interval
    (last_entry[r]; -1: none yet), else to a new one. A replica emits in time order, so it has an
    entry per interval it emitted in: memory grows with the intervals each replica life is active
    in, not replicas x intervals of the run (10^4 and more lives x 2 x 10^4 samples)."""
    for j in range(step_end_s.shape[0]):
        k = interval_of(step_end_s[j], interval_s)
        for n in range(ids.shape[0]):
            r = replica[ids[n]]
            e = last_entry[r]
            if e < 0 or bins[1, e] != k:
                e = used[0]
                used[0] += 1
                bins[0, e], bins[1, e], bins[2, e] = r, k, 0
                last_entry[r] = e
            bins[2, e] += 1


def count_token_bins_py(ids, replica, step_end_s, interval_s, bins):
    """The dense twin: bins[r, k] += 1 per id per step."""
    for t in step_end_s:
        k = max(i for i in range(bins.shape[1]) if i * interval_s <= t)
        for i in ids:
            bins[replica[i], k] += 1


def dense_bins(bins: np.ndarray, used: int, rows: int, cols: int) -> np.ndarray:
    """(replicas, intervals) token counts from count_token_bins' entries (tests)."""
    out = np.zeros((rows, cols), dtype=np.int64)
    np.add.at(out, (bins[0, :used], bins[1, :used]), bins[2, :used])
    return out


@njit(cache=True)
def add_request_gaps(token_s, counts, totals, min_s, log_gamma):
    """The gaps between consecutive times of one request's tokens into counts and totals."""
    num_buckets = counts.shape[0]
    for j in range(1, token_s.shape[0]):
        gap = token_s[j] - token_s[j - 1]
        counts[bucket_of(gap, min_s, log_gamma, num_buckets)] += 1
        totals[0] += gap
        totals[1] += 1.0


@njit(cache=True)
def count_request_tokens(token_s, usd_per_token, interval_s, tokens, usd):
    """tokens[k] += 1 and usd[k] += usd_per_token for each time in token_s, k = interval_of(t).
    Returns False, changing nothing, when the arrays are too short: the caller grows them."""
    if token_s.shape[0] and interval_of(token_s[token_s.shape[0] - 1], interval_s) >= tokens.shape[0]:
        return False
    for j in range(token_s.shape[0]):
        k = interval_of(token_s[j], interval_s)
        tokens[k] += 1
        usd[k] += usd_per_token
    return True


def _grown_columns(values: np.ndarray, columns: int) -> np.ndarray:
    grown = np.zeros(values.shape[:-1] + (max(columns, 2 * values.shape[-1]),), dtype=values.dtype)
    grown[..., :values.shape[-1]] = values
    return grown


class TokenTimes:
    """The table's streaming token state (no per-token array): each request's last token time,
    the ITL histogram of requests arriving at or after warmup_s, and (given interval_s) output
    tokens per emitting replica and interval [k interval_s, (k + 1) interval_s) for the time series."""

    def __init__(self, num_requests: int, warmup_s: float, interval_s: float | None = None) -> None:
        self.warmup_s = warmup_s
        self.last_token_s = np.full(num_requests, np.nan)
        self.itl = LogHistogram()
        self.interval_s = interval_s
        # tokens per (replica, interval) as entries (count_token_bins), grown by doubling
        self.bins = np.zeros((3, 64), dtype=np.int64)
        self.used = np.zeros(1, dtype=np.int64)
        self.last_entry = np.full(16, -1, dtype=np.int64)
        # whole requests written at once by a source off the replicas (a hosted-API pool, the
        # response cache): tokens and $ per interval of each, by (source, index); their tokens
        # also count at pool 0 (as their replica -1 puts them there with token times)
        self.sources: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def grow(self, capacity: int) -> None:
        grown = np.full(capacity, np.nan)
        grown[:len(self.last_token_s)] = self.last_token_s
        self.last_token_s = grown

    def emit(self, ids: np.ndarray, generated: np.ndarray, arrival_s: np.ndarray, replica: np.ndarray,
             step_end_s: np.ndarray) -> None:
        interval_s = self.interval_s or 0.0
        while not stream_tokens(ids, generated, arrival_s, replica, self.warmup_s, self.last_token_s, step_end_s,
                                self.itl.counts, self.itl.totals, MIN_S, LOG_GAMMA, self.bins, self.used,
                                self.last_entry, interval_s):
            rows = int(replica[ids].max()) + 1
            if rows > len(self.last_entry):
                self.last_entry = np.append(self.last_entry, np.full(max(rows, 2 * len(self.last_entry))
                                                                     - len(self.last_entry), -1, dtype=np.int64))
            spanned = int(float(step_end_s[-1]) // interval_s) - int(float(step_end_s[0]) // interval_s) + 3
            need = int(self.used[0]) + spanned * len(ids)
            if need > self.bins.shape[1]:
                grown = np.zeros((3, max(need, 2 * self.bins.shape[1])), dtype=np.int64)
                grown[:, :self.bins.shape[1]] = self.bins
                self.bins = grown

    def emit_request(self, rid: int, token_s: np.ndarray, measured: bool, source: tuple[str, int], usd: float) -> None:
        """A whole request's token times at once (a hosted-API pool or the response cache
        answered it): its gaps go into the ITL histogram (measured: it arrived at or after
        warmup_s), its tokens and `usd` (spread evenly over them) into `source`'s intervals."""
        if measured:
            add_request_gaps(token_s, self.itl.counts, self.itl.totals, MIN_S, LOG_GAMMA)
        if len(token_s):
            self.last_token_s[rid] = token_s[-1]
        if not self.interval_s or not len(token_s):
            return
        tokens, usd_row = self.sources.setdefault(source, (np.zeros(16), np.zeros(16)))
        while not count_request_tokens(token_s, usd / len(token_s), self.interval_s, tokens, usd_row):
            tokens, usd_row = (_grown_columns(v, interval_of(float(token_s[-1]), self.interval_s) + 2)
                               for v in (tokens, usd_row))
            self.sources[source] = (tokens, usd_row)

    def source_intervals(self, source: tuple[str, int], n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, $) per interval of one source; those at or after the last interval's start
        count in it (it runs to the horizon)."""
        tokens, usd = self.sources.get(source, (np.zeros(1), np.zeros(1)))
        return _fold(tokens, n_intervals), _fold(usd, n_intervals)

    def interval_tokens(self, pool_of: np.ndarray, n_pools: int, n_intervals: int) -> np.ndarray:
        """(pools, intervals): tokens per pool of the emitting replica (a source off the replicas:
        pool 0); tokens at or after the last interval's start count in it (it runs to the horizon)."""
        out = np.zeros((n_pools, n_intervals))
        replica, k, count = self.bins[:, :int(self.used[0])]
        mine = replica < len(pool_of)
        np.add.at(out, (pool_of[replica[mine]], np.minimum(k[mine], n_intervals - 1)), count[mine])
        for tokens, _ in self.sources.values():
            out[0] += _fold(tokens, n_intervals)
        return out


def _fold(per_interval: np.ndarray, n_intervals: int) -> np.ndarray:
    """The first n_intervals values (of the last axis, as floats; zeros past its end), the last
    one with everything after it added."""
    out = np.zeros(per_interval.shape[:-1] + (n_intervals,))
    head = per_interval[..., :n_intervals]
    out[..., :head.shape[-1]] = head
    out[..., n_intervals - 1] += per_interval[..., n_intervals:].sum(axis=-1)
    return out
