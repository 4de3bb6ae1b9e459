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
the arrivals, completions and output tokens per second (request table), and $/hour, from the
tariff at t (each replica's time rate x its billed share of the interval) plus, for owned hardware, the power cost of the
interval's busy time (step log). Rates are attributed to pools: arrivals to the entry pool,
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

from simcost.perf.deployment import Pool
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED

if TYPE_CHECKING:
    from simcost.cost.ledger import Bill, StepArrays

TARGET_SAMPLES = 500
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 60.0
# columns of one sample, per pool
REPLICAS, WAITING, RUNNING, KV_USED, KV_TOTAL, READY = range(6)


def default_interval_s(span_s: float) -> float:
    return min(max(span_s / TARGET_SAMPLES, MIN_INTERVAL_S), MAX_INTERVAL_S)


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


def interval_counts(table, pool_of: np.ndarray, pools: list[Pool], edges_s: np.ndarray, routed: bool):
    """(arrivals, completions, output tokens) per pool and interval; the last interval includes
    the horizon itself (np.histogram closes its last bin). Arrivals count at the entry pool, or
    (`routed`: requests chose their pool, simcost.scenario.fleet_plan.pool_routed) at the pool
    that served the request."""
    n_pools, n = len(pools), table.num_requests
    def bins(times: np.ndarray) -> np.ndarray:
        return np.histogram(times, bins=edges_s)[0]

    arrivals = np.zeros((n_pools, len(edges_s) - 1))
    done = table.status[:n] == COMPLETED
    served_by = np.where(table.replica[:n] >= 0, pool_of[np.maximum(table.replica[:n], 0)], 0)
    if not routed:  # one entry pool: every arrival is its
        arrivals[0] = bins(table.arrival_s[:n])
    else:  # the pool that served the request (pool 0 if it was never placed)
        for p in range(n_pools):
            arrivals[p] = bins(table.arrival_s[:n][served_by == p])
    completions = np.stack([bins(table.finish_s[:n][done & (served_by == p)]) for p in range(n_pools)]).astype(float)
    # token j of request i: its time, and the pool that emitted it
    offsets = table.token_offset[:n + 1]
    token_request = np.repeat(np.arange(n), np.diff(offsets))
    token_pool = served_by[token_request]
    if pools[0].role == "prefill":  # disaggregated: the prefill replica emits the first token
        token_pool[offsets[:-1][np.diff(offsets) > 0]] = 0
    token_time_s = table.token_time_s[:offsets[-1]]
    emitted = ~np.isnan(token_time_s)
    tokens = np.stack([bins(token_time_s[emitted & (token_pool == p)]) for p in range(n_pools)]).astype(float)
    return arrivals, completions, tokens


def usd_per_hour(bill: Bill, n_pools: int, t_s: np.ndarray, steps: StepArrays, edges_s: np.ndarray,
                 width_s: np.ndarray) -> np.ndarray:
    """Per pool and interval: each replica's time rate (in the clock hour of t_s) x the share of
    the interval it was billed, plus (owned hardware) the utilisation rate x the pool's busy
    seconds in the interval."""
    tariff, ra = bill.tariff, bill.roster
    rate = tariff.time_usd_per_s  # (replicas, hours); the last hour takes any overrun
    hour = np.minimum((t_s // S_PER_HOUR).astype(np.int64), rate.shape[1] - 1)
    lo, hi = edges_s[:-1], edges_s[1:]

    def share(start_s: np.ndarray, end_s: np.ndarray) -> np.ndarray:  # (intervals, samples) of each width
        inside_s = np.clip(np.minimum(end_s[:, None], hi[None, :]) - np.maximum(start_s[:, None], lo[None, :]), 0, None)
        return np.divide(inside_s, width_s[None, :], out=np.zeros(inside_s.shape), where=width_s[None, :] > 0)

    out = np.zeros((n_pools, len(t_s)))
    np.add.at(out, ra.pool, share(ra.requested_s, ra.gone_s) * rate[:, hour] * S_PER_HOUR)
    warm = ra.warm  # warm-pool nodes: provisioning, then standby, each at its own rate
    if warm is not None and len(warm.pool):
        np.add.at(out, warm.pool, share(warm.requested_s, warm.standby_s) * warm.provisioning_usd_per_hour[:, None]
                  + share(warm.standby_s, warm.gone_s) * warm.standby_usd_per_hour[:, None])
    util = tariff.util_rates(len(ra.pool))  # per replica; one rate within a pool
    if util.any():
        pool_of = ra.pool
        for p in range(n_pools):
            mine = pool_of[steps.step_replica] == p
            rate_p = util[pool_of == p].max(initial=0.0)
            if not rate_p:
                continue
            busy_s = np.diff(cumulative_busy_s(steps.step_start_s[mine], steps.step_end_s[mine], edges_s))
            out[p] += rate_p * S_PER_HOUR * np.divide(busy_s, width_s, out=np.zeros(len(busy_s)), where=width_s > 0)
    return out


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





