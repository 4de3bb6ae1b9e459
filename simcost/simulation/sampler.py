"""Samples the running fleet at fixed intervals during a run (a SimPy process) and turns the samples into the run's time series."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import simpy

from simcost.cost.ledger import Bill
from simcost.cost.step_log import StepArrays
from simcost.metrics.timeseries import (
    KV_TOTAL,
    KV_USED,
    READY,
    REPLICAS,
    RUNNING,
    WAITING,
    TimeSeries,
    default_interval_s,
    interval_counts,
    sample_times_s,
    usd_per_hour,
)
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED, IN_FLIGHT

if TYPE_CHECKING:  # the simulation owns its sampler; the type is only named here
    from simcost.simulation.simulation import Simulation


class Sampler:
    """Reads the fleet every interval_s while the run has anything left to do."""

    def __init__(self, sim: Simulation, interval_s: float | None = None):
        if interval_s is None:
            interval_s = default_interval_s(sim.arrivals_end_s() + (sim.scenario.drain_s or 0.0))
        if not interval_s > 0:
            raise ValueError(f"sampling interval must be > 0 s, got {interval_s}")
        self.sim, self.interval_s = sim, float(interval_s)
        self.rows: list[np.ndarray] = []  # one (pools, 6) array per sample
        sim.env.process(self._run(sim.env))

    def _run(self, env: simpy.Environment):
        k = 0
        while True:
            self.rows.append(self.snapshot())
            if env.peek() == math.inf:  # only this sampler left: the run is over
                return
            k += 1
            # aim at k x interval_s rather than adding intervals, so float error does not drift
            yield env.timeout(max(0.0, k * self.interval_s - env.now))

    def snapshot(self) -> np.ndarray:
        fleet, status, now = self.sim.fleet, self.sim.table.status, self.sim.env.now
        row = np.zeros((len(self.sim.pools), 6), dtype=np.int64)
        for r in fleet.present():  # not gone
            life = fleet.roster.lives[r.index]
            if life.requested_s > now:  # requested during a site outage: billed (and counted) from its end
                continue
            p = life.pool
            row[p, REPLICAS] += 1
            row[p, READY] += fleet.is_ready(r)
            row[p, WAITING] += len(r.waiting)
            row[p, RUNNING] += num_running(r, status)
            row[p, KV_USED] += r.pool.num_used
            row[p, KV_TOTAL] += r.pool.num_blocks if now >= life.ready_s else 0
        row[0, WAITING] += len(fleet.central) + len(fleet.held)  # requests not yet on a replica
        return row

    def series(self, horizon_s: float, steps: StepArrays, bill: Bill) -> TimeSeries:
        """The samples on the grid up to the horizon, with the exact rates and $/hour."""
        t_s = sample_times_s(self.interval_s, horizon_s)
        rows = self.rows[:len(t_s)] or [self.snapshot()]  # (no sample: the run never ran)
        rows += [rows[-1]] * (len(t_s) - len(rows))  # the sampler stopped: the state stayed as it was
        state = np.stack(rows, axis=2)  # (pools, 6, samples)
        width_s = np.minimum(self.interval_s, horizon_s - t_s)
        edges_s = np.append(t_s, horizon_s)
        table, pool_of = self.sim.table, bill.roster.pool
        arrivals, completions, tokens = interval_counts(table, pool_of, self.sim.pools, edges_s,
                                                         self.sim.routed)
        def per_s(counts):
            return np.divide(counts, width_s, out=np.zeros(counts.shape), where=width_s > 0)
        usd = usd_per_hour(bill, len(self.sim.pools), t_s, steps, edges_s, width_s, table)
        names = tuple(p.label for p in self.sim.pools)
        api = self.sim.api
        if api is not None:  # one row per api pool; its requests leave pool 0's counts (where replica -1 put them)
            rows_api = api_interval_rows(table, api.pool_of, api.request_usd, len(api.pools), edges_s, width_s)
            for fleet_rows, mine in zip((arrivals, completions, tokens), rows_api[:3]):
                fleet_rows[0] -= mine.sum(axis=0)
            arrivals, completions, tokens = (np.vstack([f, a]) for f, a in zip((arrivals, completions, tokens), rows_api))
            usd = np.vstack([usd, rows_api[3]])
            names += tuple(f"api:{p.cfg.name}" for p in api.pools)
            state = np.concatenate([state, np.zeros((len(api.pools),) + state.shape[1:], dtype=state.dtype)])
        cache = self.sim.cache
        if cache is not None:  # one row: the hits it answered (out of pool 0's counts), its lookups' and store's $
            hit = np.zeros(len(table.arrival_s), dtype=np.int64) - 1
            hit[list(cache.hit)] = 0
            rows_cache = api_interval_rows(table, hit, np.zeros(table.num_requests), 1, edges_s, width_s, "cache")
            for fleet_rows, mine in zip((arrivals, completions, tokens), rows_cache[:3]):
                fleet_rows[0] -= mine[0]
            arrivals, completions, tokens = (np.vstack([f, c]) for f, c in zip((arrivals, completions, tokens), rows_cache))
            per_hour = np.divide(S_PER_HOUR, width_s, out=np.zeros(len(width_s)), where=width_s > 0)
            n = table.num_requests
            lookups = np.histogram(table.arrival_s[:n], bins=edges_s, weights=cache.request_usd[:n])[0] * per_hour
            usd = np.vstack([usd, lookups + cache.cfg.store_usd_per_hour])
            names += ("cache",)
            state = np.concatenate([state, np.zeros((1,) + state.shape[1:], dtype=state.dtype)])
        return TimeSeries(
            pools=names, interval_s=self.interval_s, horizon_s=horizon_s,
            t_s=t_s, width_s=width_s, replicas=state[:, REPLICAS], ready=state[:, READY], waiting=state[:, WAITING],
            running=state[:, RUNNING],
            kv_used_blocks=state[:, KV_USED], kv_total_blocks=state[:, KV_TOTAL],
            usd_per_hour=usd,
            arrivals_per_s=per_s(arrivals), completions_per_s=per_s(completions), output_tokens_per_s=per_s(tokens),
        )


def num_running(replica, status: np.ndarray) -> int:
    """Requests in flight in the replica's batch (a static batch keeps its finished members until
    it ends; they are out of the system), plus prefill-role KV transfers still leaving it."""
    running = int(np.count_nonzero(status[replica.running.ids()] == IN_FLIGHT)) if replica.running else 0
    return running + getattr(replica, "_outbound", 0)


def api_interval_rows(table, pool_of: np.ndarray, request_usd: np.ndarray, n_api: int, edges_s: np.ndarray,
                      width_s: np.ndarray, source: str = "api") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per api pool and interval: arrivals, completions and output tokens (counts), and its $ as
    $/hour, each request's price spread evenly over its output tokens' times (at its finish when
    it has none), so the rows integrate to the api pools' bill. `source`: the name the pools'
    requests were emitted under (RequestTable.emit_request), for a table without token times."""
    n = table.num_requests
    pool_of = pool_of[:n]
    done = table.status[:n] == COMPLETED
    if table.streamed is not None:
        return _streamed_interval_rows(table, pool_of, done, request_usd, n_api, edges_s, width_s, source)
    offsets = table.token_offset[:n + 1]
    token_request = np.repeat(np.arange(n), np.diff(offsets))
    token_s = table.token_time_s[:offsets[-1]]
    per_token = np.divide(request_usd[:n], table.generated[:n], out=np.zeros(n), where=table.generated[:n] > 0)
    per_hour = np.divide(S_PER_HOUR, width_s, out=np.zeros(len(width_s)), where=width_s > 0)
    out = (np.zeros((n_api, len(edges_s) - 1)), np.zeros((n_api, len(edges_s) - 1)),
           np.zeros((n_api, len(edges_s) - 1)), np.zeros((n_api, len(edges_s) - 1)))
    for k in range(n_api):
        mine = pool_of == k
        out[0][k] = np.histogram(table.arrival_s[:n][mine], bins=edges_s)[0]
        out[1][k] = np.histogram(table.finish_s[:n][mine & done], bins=edges_s)[0]
        tok = mine[token_request] & ~np.isnan(token_s)
        out[2][k] = np.histogram(token_s[tok], bins=edges_s)[0]
        no_tokens = mine & done & (table.generated[:n] == 0)
        out[3][k] = (np.histogram(token_s[tok], bins=edges_s, weights=per_token[token_request[tok]])[0]
                     + np.histogram(table.finish_s[:n][no_tokens], bins=edges_s, weights=request_usd[:n][no_tokens])[0])
        out[3][k] *= per_hour
    return out


def _streamed_interval_rows(table, pool_of, done, request_usd, n_api, edges_s, width_s, source):
    """api_interval_rows from the streaming table's counts per source and interval (its tokens
    and $ were binned as each request finished: the same counts, the same $ up to summation order)."""
    n = table.num_requests
    per_hour = np.divide(S_PER_HOUR, width_s, out=np.zeros(len(width_s)), where=width_s > 0)
    rows = tuple(np.zeros((n_api, len(edges_s) - 1)) for _ in range(4))
    for k in range(n_api):
        mine = pool_of == k
        rows[0][k] = np.histogram(table.arrival_s[:n][mine], bins=edges_s)[0]
        rows[1][k] = np.histogram(table.finish_s[:n][mine & done], bins=edges_s)[0]
        rows[2][k], usd = table.streamed.source_intervals((source, k), len(edges_s) - 1)
        no_tokens = mine & done & (table.generated[:n] == 0)
        rows[3][k] = (usd + np.histogram(table.finish_s[:n][no_tokens], bins=edges_s,
                                         weights=request_usd[:n][no_tokens])[0]) * per_hour
    return rows
