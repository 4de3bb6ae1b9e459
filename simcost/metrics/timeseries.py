"""Time series of a run: per pool, replicas, queue, running requests, KV use and $/hour over time.

A SimPy process (`Sampler`) reads the fleet's state every `interval_s`, at t = 0, interval_s,
2 interval_s, ...: per pool (`perf.Pool`: "serve", or "prefill" and "decode") the replicas billed
(requested and not gone: starting, serving or draining) and ready (serving), the requests waiting
(requests not yet on a replica, in the shared queue or held while none is ready, count for the entry pool),
the requests running (in flight in a batch, or sending their KV to a decode replica) and the KV
blocks held. It only reads, so the run is the same with or without it. It never keeps the run
alive either: after each sample it stops if nothing else is scheduled (SimPy's own end test),
since the state can no longer change; the samples up to the horizon repeat that final state.

Everything else is exact, from the run's records after it ends: per interval [t, t + interval_s)
the arrivals, completions and output tokens per second (request table), and $/hour: the bill
as a rate (each replica's time rate x its billed share of the interval, its minimum charge,
unused commitment, warm nodes, egress, and for owned hardware the power cost of the interval's
busy time), so that it integrates to the bill. Rates are attributed to pools: arrivals to the entry pool,
completions and output tokens to the replica that made them (disaggregated: a request's first
token to the prefill pool). Summed over pools they are the fleet's; the KV fraction is per pool.

Default interval: the planned span (arrivals end + drain) / 500, within [0.1 s, 60 s]: about 500
points per curve, whatever the run's length. KV use is as the engine books it: a decode span books
its new blocks when it ends, so within a span the fraction lags by the blocks that span adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from simcost.cost.hours import HourWindows
from simcost.perf.deployment import Pool
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED

if TYPE_CHECKING:
    from simcost.cost.ledger import Bill
    from simcost.cost.step_log import StepArrays

TARGET_SAMPLES = 500
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 60.0
# Above ~2 weeks a minute's resolution would make the series (and the sampler's events) grow with
# simulated time: a year is 525,600 samples. Beyond this many the interval grows instead.
MAX_SAMPLES = 20_000
# columns of one sample, per pool
REPLICAS, WAITING, RUNNING, KV_USED, KV_TOTAL, READY = range(6)


def default_interval_s(span_s: float) -> float:
    """~TARGET_SAMPLES samples, between MIN_INTERVAL_S and MAX_INTERVAL_S apart, but never more
    than MAX_SAMPLES: a run's time series is bounded whatever its simulated length."""
    return max(min(max(span_s / TARGET_SAMPLES, MIN_INTERVAL_S), MAX_INTERVAL_S), span_s / MAX_SAMPLES)


@dataclass(frozen=True)
class TimeSeries:
    """Arrays (pools, samples); sample k is at t_s[k] = k x interval_s, all before horizon_s.
    State columns are read at t_s; rate and $ columns cover [t_s, t_s + width_s)."""

    pools: tuple[str, ...]  # pool roles, in replica order
    interval_s: float
    horizon_s: float
    t_s: np.ndarray  # (samples,)
    width_s: np.ndarray  # (samples,): interval_s, the last one cut at the horizon
    replicas: np.ndarray  # billed: requested and not yet gone (starting, serving or draining)
    ready: np.ndarray  # serving: taking new requests
    waiting: np.ndarray
    running: np.ndarray
    kv_used_blocks: np.ndarray
    kv_total_blocks: np.ndarray
    usd_per_hour: np.ndarray
    arrivals_per_s: np.ndarray
    completions_per_s: np.ndarray
    output_tokens_per_s: np.ndarray

    @property
    def kv_used_fraction(self) -> np.ndarray:
        return self.kv_used_blocks / np.maximum(self.kv_total_blocks, 1)






def sample_times_s(interval_s: float, horizon_s: float) -> np.ndarray:
    """k x interval_s for every k with k x interval_s < horizon_s (at least t = 0)."""
    n = max(1, math.ceil(horizon_s / interval_s))
    while n > 1 and (n - 1) * interval_s >= horizon_s:  # ceil of a float ratio can overshoot by one
        n -= 1
    return np.arange(n) * interval_s


def pool_histogram(times_s: np.ndarray, pool: np.ndarray, n_pools: int, edges_s: np.ndarray) -> np.ndarray:
    """(pools, intervals) counts: np.histogram's bins per pool ([e_i, e_i+1), the last one closed,
    values outside or NaN dropped) in one pass over all the values, instead of a mask and a sort
    per pool (a long run's token times are millions; tests/test_timeseries.py checks it against
    np.histogram per pool)."""
    n_bins = len(edges_s) - 1
    counts = np.zeros(n_pools * n_bins, dtype=np.int64)
    _bin_counts(np.ascontiguousarray(times_s, dtype=np.float64), np.ascontiguousarray(pool, dtype=np.int64),
                np.ascontiguousarray(edges_s, dtype=np.float64), counts)
    return counts.reshape(n_pools, n_bins).astype(float)


def token_histogram(times_s: np.ndarray, offsets: np.ndarray, request_pool: np.ndarray, first_in_pool0: bool,
                    n_pools: int, edges_s: np.ndarray) -> np.ndarray:
    """pool_histogram of every token time, request i's tokens (times_s[offsets[i]:offsets[i + 1]])
    counted at request_pool[i], its first one at pool 0 with `first_in_pool0` (disaggregated: the
    prefill replica emits it), without a pool per token (np.repeat: 32 MB on Mooncake)."""
    n_bins = len(edges_s) - 1
    counts = np.zeros(n_pools * n_bins, dtype=np.int64)
    _token_bin_counts(np.ascontiguousarray(times_s, dtype=np.float64), np.ascontiguousarray(offsets, dtype=np.int64),
                      np.ascontiguousarray(request_pool, dtype=np.int64), first_in_pool0,
                      np.ascontiguousarray(edges_s, dtype=np.float64), counts)
    return counts.reshape(n_pools, n_bins).astype(float)


@njit(cache=True, inline="always")
def _bin(t, edges_s, n_bins):
    """np.histogram's bin of t ([e_i, e_i+1), the last one closed), -1 outside or NaN."""
    if not (edges_s[0] <= t <= edges_s[n_bins]):
        return -1
    if t == edges_s[n_bins]:
        return n_bins - 1  # the closed last bin
    lo, hi = 0, n_bins  # the last edge <= t (searchsorted's side="right", less one)
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if edges_s[mid] <= t:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True)
def _bin_counts(times_s, pool, edges_s, counts):
    n_bins = edges_s.shape[0] - 1
    if n_bins < 1:
        return
    for n in range(times_s.shape[0]):
        b = _bin(times_s[n], edges_s, n_bins)
        if b >= 0:
            counts[pool[n] * n_bins + b] += 1


@njit(cache=True)
def _token_bin_counts(times_s, offsets, request_pool, first_in_pool0, edges_s, counts):
    n_bins = edges_s.shape[0] - 1
    if n_bins < 1:
        return
    b = 0
    for i in range(request_pool.shape[0]):
        for j in range(offsets[i], offsets[i + 1]):
            # a request's tokens come ~10 ms apart: most fall in the previous token's interval,
            # so check it before searching (a time on the last edge is _bin's: its bin is closed)
            t = times_s[j]
            if not (b >= 0 and edges_s[b] <= t < edges_s[b + 1]):
                b = _bin(t, edges_s, n_bins)
            if b >= 0:
                p = 0 if first_in_pool0 and j == offsets[i] else request_pool[i]
                counts[p * n_bins + b] += 1


def interval_counts(table, pool_of: np.ndarray, pools: list[Pool], edges_s: np.ndarray, routed: bool):
    """(arrivals, completions, output tokens) per pool and interval; the last interval includes
    the horizon itself (np.histogram closes its last bin). Arrivals count at the entry pool, or
    (`routed`: requests chose their pool, simcost.scenario.fleet_plan.pool_routed) at the pool
    that served the request."""
    n_pools, n = len(pools), table.num_requests
    done = table.status[:n] == COMPLETED
    served_by = np.where(table.replica[:n] >= 0, pool_of[np.maximum(table.replica[:n], 0)], 0)
    # one entry pool: every arrival is its; routed: the pool that served it (pool 0 if never placed)
    arrivals = pool_histogram(table.arrival_s[:n], served_by if routed else np.zeros(n, dtype=np.int64), n_pools, edges_s)
    completions = pool_histogram(table.finish_s[:n][done], served_by[done], n_pools, edges_s)
    if table.streamed is not None:  # no token times kept: the table counted tokens per emitting replica
        return arrivals, completions, table.streamed.interval_tokens(pool_of, n_pools, len(edges_s) - 1)
    # token j of request i: its time, and the pool that emitted it
    offsets = table.token_offset[:n + 1]
    # (disaggregated: the prefill replica emits the first token)
    tokens = token_histogram(table.token_time_s, offsets, served_by, pools[0].role == "prefill", n_pools, edges_s)
    return arrivals, completions, tokens


def usd_per_hour(bill: Bill, n_pools: int, t_s: np.ndarray, steps: StepArrays, edges_s: np.ndarray,
                 width_s: np.ndarray, table=None) -> np.ndarray:
    """Per pool and interval, the bill as a rate, so that sum(usd_per_hour x width_s) / 3600 is
    the bill: each replica's time rate in each clock hour x the share of the interval it was
    billed in that hour; its minimum-charge top-up spread over its billed time (the charge is for
    having started it); unused savings-plan commitment over its clock hour (on the first pool: the
    commitment is the fleet's); warm nodes; (owned hardware) the utilisation rate x the pool's busy
    seconds; and (given the request table) each request's egress over the times of its tokens."""
    tariff, ra = bill.tariff, bill.roster
    lo, hi = edges_s[:-1], edges_s[1:]
    per_hour = np.divide(S_PER_HOUR, width_s, out=np.zeros(len(width_s)), where=width_s > 0)

    out = np.zeros((n_pools, len(t_s)))
    hours = tariff.num_hours
    # only the samples overlapping hour h get its share (the rest would add exact zeros): the work
    # grows with samples + hours, not samples x hours (a simulated year took minutes)
    hour_start_s = np.arange(hours) * S_PER_HOUR
    first, last = _windows(hour_start_s, np.append(hour_start_s[1:], np.inf), lo, hi)  # the last takes any overrun
    # and only the replicas billed in hour h (the others add exact zeros too: a long autoscaled
    # run has 10^4 or more lives), from their hour windows, in replica order within each hour
    windows = HourWindows.of_intervals(ra.requested_s, ra.gone_s, hours)
    life, hour = windows.entry_life(), windows.entry_hour()
    h_lo = np.maximum(ra.requested_s[life], hour * S_PER_HOUR)
    h_hi = np.where(hour == hours - 1, ra.gone_s[life], np.minimum(ra.gone_s[life], (hour + 1) * S_PER_HOUR))
    billed = h_lo < h_hi
    order = np.argsort(hour[billed], kind="stable")
    life, hour, h_lo, h_hi = life[billed][order], hour[billed][order], h_lo[billed][order], h_hi[billed][order]
    bounds = np.searchsorted(hour, np.arange(hours + 1))
    for h in np.flatnonzero((first < last) & (bounds[1:] > bounds[:-1])):  # an interval may straddle a clock hour
        window, mine = slice(first[h], last[h]), slice(bounds[h], bounds[h + 1])
        rate = tariff.rate_usd_per_s(life[mine], int(h))[:, None]
        np.add.at(out[:, window], ra.pool[life[mine]], _share(h_lo[mine], h_hi[mine], lo[window], hi[window],
                                                                width_s[window]) * rate * S_PER_HOUR)
    add_minimum_usd_per_hour(out, ra.pool, tariff.minimum_usd, ra.requested_s, ra.gone_s, lo, hi, width_s, per_hour)
    out[0] += unused_commitment_usd_per_hour(tariff.unused_commitment_usd, float(edges_s[-1]), lo, hi, width_s)
    warm = ra.warm  # warm-pool nodes: provisioning, then standby, each at its own rate
    if warm is not None and len(warm.pool):
        starts, ends = _windows(warm.requested_s, warm.gone_s, lo, hi)
        for i in np.flatnonzero(starts < ends):  # in node order, as np.add.at adds them
            w, node = slice(starts[i], ends[i]), slice(i, i + 1)
            out[warm.pool[i], w] += (_share(warm.requested_s[node], warm.standby_s[node], lo[w], hi[w], width_s[w])[0]
                                     * warm.provisioning_usd_per_hour[i]
                                     + _share(warm.standby_s[node], warm.gone_s[node], lo[w], hi[w], width_s[w])[0]
                                     * warm.standby_usd_per_hour[i])
    util = tariff.util_rates(len(ra.pool))  # per replica; one rate within a pool
    if util.any():
        pool_of = ra.pool
        for p in range(n_pools):
            mine = pool_of[steps.step_replica] == p
            rate_p = util[pool_of == p].max(initial=0.0)
            if not rate_p:
                continue
            busy_s = np.diff(cumulative_busy_s(steps.step_start_s[mine], steps.step_end_s[mine], edges_s))
            out[p] += rate_p * busy_s * per_hour
    if table is not None and bill.request_egress_usd is not None:
        out += egress_usd_per_hour(table, bill.request_egress_usd, ra.pool, n_pools, edges_s, per_hour)
    return out


def _share(start_s: np.ndarray, end_s: np.ndarray, lo: np.ndarray, hi: np.ndarray, width_s: np.ndarray) -> np.ndarray:
    """(spans, samples): the fraction of each sample's interval [lo, hi) inside each span."""
    inside_s = np.clip(np.minimum(end_s[:, None], hi[None, :]) - np.maximum(start_s[:, None], lo[None, :]), 0, None)
    return np.divide(inside_s, width_s[None, :], out=np.zeros(inside_s.shape), where=width_s[None, :] > 0)


MIN_BILLED_S = 1e-9  # shorter billed spans take their minimum charge in one interval


def _windows(start_s: np.ndarray, end_s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per span, the samples [first, last) its [start, end) can overlap: each span's share is
    computed over those alone, so memory and time grow with spans + samples, not their product
    (10^4 replica lives x 2 x 10^4 samples of an autoscaled month took 10 GB)."""
    return np.searchsorted(hi, start_s, side="right"), np.searchsorted(lo, end_s, side="left")


def add_minimum_usd_per_hour(out: np.ndarray, pool: np.ndarray, minimum_usd: np.ndarray, start_s: np.ndarray,
                             end_s: np.ndarray, lo: np.ndarray, hi: np.ndarray, width_s: np.ndarray,
                             per_hour: np.ndarray) -> None:
    """Into out (pools, samples), in replica order: each replica's minimum-charge top-up over its
    billed time; a replica billed for no time at all pays it in the interval it was requested in."""
    if not minimum_usd.any():
        return
    alive_s = end_s - start_s
    # a replica gone within a nanosecond of its request (a reclaim at that instant) counts as
    # billed for no time: spreading its minimum over ~1e-300 s would overflow to inf x 0 = NaN
    spread_over = alive_s > MIN_BILLED_S
    usd_per_hour = np.divide(minimum_usd * S_PER_HOUR, alive_s, out=np.zeros(len(alive_s)), where=spread_over)
    at = np.clip(np.searchsorted(lo, start_s, side="right") - 1, 0, len(lo) - 1)
    first, last = _windows(start_s, end_s, lo, hi)
    for i in np.flatnonzero(minimum_usd > 0):
        if not spread_over[i]:
            out[pool[i], at[i]] += minimum_usd[i] * per_hour[at[i]]  # $ in one interval, as $/hour
        elif first[i] < last[i]:
            w = slice(first[i], last[i])
            out[pool[i], w] += _share(start_s[i:i + 1], end_s[i:i + 1], lo[w], hi[w], width_s[w])[0] * usd_per_hour[i]


def unused_commitment_usd_per_hour(unused_usd: np.ndarray, horizon_s: float, lo: np.ndarray, hi: np.ndarray,
                                   width_s: np.ndarray) -> np.ndarray:
    """(samples,): each clock hour's unused commitment over the part of the hour in the run."""
    out = np.zeros(len(lo))
    if not unused_usd.any():
        return out
    starts = np.arange(len(unused_usd)) * S_PER_HOUR
    ends = np.minimum(starts + S_PER_HOUR, horizon_s)
    covered_s = ends - starts
    usd_per_s = np.divide(unused_usd, covered_s, out=np.zeros(len(unused_usd)), where=covered_s > 0)
    first, last = _windows(starts, ends, lo, hi)
    for h in np.flatnonzero(first < last):  # hour by hour, as the column sum added them
        w = slice(first[h], last[h])
        out[w] += _share(starts[h:h + 1], ends[h:h + 1], lo[w], hi[w], width_s[w])[0] * usd_per_s[h]
    return out * S_PER_HOUR


def egress_usd_per_hour(table, request_egress_usd: np.ndarray, pool_of: np.ndarray, n_pools: int,
                        edges_s: np.ndarray, per_hour: np.ndarray) -> np.ndarray:
    """(pools, samples): each request's egress, spread evenly over its generated tokens (the bytes
    that left the site), at the pool that served it."""
    n = table.num_requests
    if table.streamed is not None:
        return streamed_egress_usd_per_hour(table, request_egress_usd, pool_of, n_pools, edges_s, per_hour)
    offsets = table.token_offset[:n + 1]
    token_request = np.repeat(np.arange(n), np.diff(offsets))
    token_time_s = table.token_time_s[:offsets[-1]]
    emitted = ~np.isnan(token_time_s)
    emitted_per_request = np.bincount(token_request[emitted], minlength=n)
    per_token = np.divide(request_egress_usd, emitted_per_request, out=np.zeros(n), where=emitted_per_request > 0)
    replica = table.replica[:n]
    served_by = np.where(replica >= 0, pool_of[np.maximum(replica, 0)], 0)[token_request]
    out = np.zeros((n_pools, len(edges_s) - 1))
    for p in range(n_pools):
        mine = emitted & (served_by == p)
        out[p] = np.histogram(token_time_s[mine], bins=edges_s, weights=per_token[token_request[mine]])[0]
    return out * per_hour


def streamed_egress_usd_per_hour(table, request_egress_usd: np.ndarray, pool_of: np.ndarray, n_pools: int,
                                 edges_s: np.ndarray, per_hour: np.ndarray) -> np.ndarray:
    """egress_usd_per_hour for a table without token times: each request's egress spread evenly
    over [first token, last token] (its tokens' span; all of it at the first token when they
    coincide). Same total; its timing within the span is approximate."""
    n = table.num_requests
    emitted = table.generated[:n] > 0
    start_s, end_s = table.first_token_s[:n], table.streamed.last_token_s[:n]
    replica = table.replica[:n]
    served_by = np.where(replica >= 0, pool_of[np.maximum(replica, 0)], 0)
    out = np.zeros((n_pools, len(edges_s) - 1))
    for p in range(n_pools):
        mine = emitted & (served_by == p)
        point = mine & ~(end_s > start_s)
        out[p] = np.histogram(start_s[point], bins=edges_s, weights=request_egress_usd[:n][point])[0]
        span = mine & (end_s > start_s)
        usd_per_s = request_egress_usd[:n][span] / (end_s[span] - start_s[span])
        out[p] += np.diff(_cumulative_weighted_s(start_s[span], end_s[span], usd_per_s, edges_s))
    return out * per_hour


def _cumulative_weighted_s(start_s: np.ndarray, end_s: np.ndarray, weight: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """sum of weight x clip(t - start, 0, end - start) at each t in at_s (cumulative_busy_s, weighted)."""
    def before(times: np.ndarray) -> np.ndarray:
        order = np.argsort(times, kind="stable")  # equal times in one order on every CPU (numpy's quicksort
        # is CPU-specific: with ties, the cumulative sums below would differ in the last bits)
        times, w = times[order], weight[order]
        count = np.searchsorted(times, at_s, side="left")
        sum_w = np.concatenate([[0.0], np.cumsum(w)])
        sum_wt = np.concatenate([[0.0], np.cumsum(w * times)])
        return at_s * sum_w[count] - sum_wt[count]
    return before(start_s) - before(end_s)


def cumulative_busy_s(start_s: np.ndarray, end_s: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """Step-seconds before each time in at_s: sum of clip(t - start, 0, end - start), which is
    sum over starts before t of (t - start) less the same over ends."""
    def before(times: np.ndarray) -> np.ndarray:
        times = np.sort(times)
        count = np.searchsorted(times, at_s, side="left")
        prefix = np.concatenate([[0.0], np.cumsum(times)])
        return at_s * count - prefix[count]
    return before(start_s) - before(end_s)


# --- output ----------------------------------------------------------------------------------





