"""A fleet that moves: the autoscaler's control loop, spot reclaims, node failures, site outages.

SimPy processes around the Fleet (simcost.cluster.fleet), which does the mechanics (add a replica,
drain, cancel, kill); the autoscaling decisions are simcost.cluster.autoscalers'. docs/design.md section 4.
- Autoscaler: every sample_s the metric is read and handed to the autoscaler; every tick_s it
  names a replica count, which the fleet is moved to (plus fleet.redundancy): new replicas go
  through a cold start (fleet.cold_start, or its defaults); surplus ones still starting are
  cancelled first (newest first), then ready ones drained (least loaded first). A request that
  finds no replica ready or starting (scaled to zero) requests one at once (Knative's activator).
- Spot: each spot replica gets its notice at an exponential time (the hazard from the monthly
  interruption band) after its request, stops taking work, and is lost notice_s later; its
  replacement is requested at the notice. Capacity for a new replica keeps the spot share.
- Failures: each replica fails at an exponential time (mean MTBF) after it is ready, and is lost
  at once; a replacement is requested that serves mttr_s later. An outage loses every replica at
  at_s, and nothing starts before at_s + duration_s.
A lost replica's requests are retried on the others (simcost.engine.replica.Replica.stop): nothing is
lost, and the work in progress is charged as idle time (it was paid for and thrown away).
The run stops when no request is left and none can come (the loops would otherwise run forever).
- Warm pool (fleet.warm_pool): `size` nodes kept prepared beside the pool (`WarmPool`). An
  on-demand replica added with the default cold start (a scale-up, the activator's, an on-demand
  spot replacement) takes one if the pool has one (a hit: simcost.lifecycle.warm_start) and the
  slot is refilled at once (provisioning_s, then in the pool); else it starts cold (a miss).
  Spot replicas and failure replacements (whose mttr_s is a given figure) never take one. An
  outage loses the warm nodes too; their replacements are requested when the site is back.
A fleet of several pools (fleet.pools) runs one FleetControl per pool that moves, each with its
pool's own section (FleetConfig.pool_fleet) and acting on that pool's replicas only; its metric
counts that pool's replicas plus the requests held for want of a ready replica.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np
import simpy

from simcost.cluster.autoscalers import make_autoscaler
from simcost.cluster.fleet import Fleet
from simcost.cost.roster import ON_DEMAND, SPOT, Roster, WarmNode
from simcost.errors import InputError
from simcost.perf.deployment import Pool
from simcost.perf.startup import RUNNING, StartPhases, cold_start, warm_start
from simcost.scenario.autoscalers import PredictiveAutoscaler
from simcost.scenario.fleet import ColdStartConfig, FleetConfig, SpotConfig, WarmPoolConfig
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR
from simcost.workload.request_table import RequestTable

TTFT_WINDOW_S = 60.0  # the ttft_p95 metric's window
FORECAST_WINDOW_S = 300.0  # predictive: arrivals are smoothed over this window


def spot_config(fleet: FleetConfig) -> SpotConfig | None:
    """fleet.spot, or all replicas on spot with the default band when pricing.model is spot."""
    if fleet.spot is not None:
        return fleet.spot
    return SpotConfig() if fleet.pricing.model == "spot" else None


def spot_price_usd_per_device_hour(fleet: FleetConfig) -> float | None:
    spot = fleet.spot
    return spot.usd_per_device_hour if spot is not None and spot.usd_per_device_hour is not None else None


def initial_capacity(fleet: FleetConfig, n: int) -> list[str]:
    """The first n - num_spot(n) replicas on demand, the rest on spot."""
    spot = spot_config(fleet)
    num_spot = 0 if spot is None else spot.num_spot(n)
    return [ON_DEMAND] * (n - num_spot) + [SPOT] * num_spot


class FleetControl:
    def __init__(self, env: simpy.Environment, fleet: Fleet, cfg: FleetConfig, pool: Pool,
                 rng: np.random.Generator, table: RequestTable, done: Callable[[], bool],
                 planned_arrival_s: np.ndarray, pool_index: int = 0):
        self.env, self.fleet, self.cfg, self.rng, self.table = env, fleet, cfg, rng, table
        self.k = pool_index  # the pool this loop moves
        self.done = done  # no request can come any more (arrivals and sessions exhausted)
        self.phase = cold_start(cfg.cold_start or ColdStartConfig(), pool)  # replicas added during the run
        self.warm = None if cfg.warm_pool is None else WarmPool(env, fleet.roster, pool_index, cfg, cfg.warm_pool, pool)
        self.spot = spot_config(cfg)
        self.failures = cfg.failures
        self.blocked_until_s = 0.0  # a site outage: nothing can start before then
        self._recent: deque[int] = deque()  # requests arrived in the last TTFT window (ttft_p95)
        self.scaler = None
        self.scaling = scaling = cfg.autoscaler  # its policy's section, defaults included (None: no autoscaler)
        if scaling is not None:
            lo, hi = scaling.min_replicas, scaling.max_replicas
            if not lo <= cfg.replicas <= hi:
                raise InputError("fleet.replicas" if not fleet.pooled else f"fleet.pools[{self.k}].replicas", f"{cfg.replicas}: the starting size must lie within the autoscaler's "
                                 f"[{lo}, {hi}]")
            self.scaler = make_autoscaler(scaling, self._forecast_fn(planned_arrival_s),
                                          lead_s=self.phase.ready_s)
            env.process(self._observe_loop())
            env.process(self._decide_loop())
        fleet.starved_hooks[self.k] = self._activate
        for replica in self._mine(fleet.replicas):
            self._watch(replica)
        for outage in (self.failures.outages if self.failures else ()):
            env.process(self._outage(outage.at_s, outage.duration_s))

    @property
    def moves(self) -> bool:
        return self.scaler is not None or self.spot is not None or self.failures is not None

    def arrived(self, rid: int) -> None:
        """Every arrival passes here (the ttft_p95 metric's window)."""
        if self.scaling is not None and self.scaling.metric == "ttft_p95":
            self._recent.append(rid)

    # --- replicas ----------------------------------------------------------------------------

    def _mine(self, replicas: list) -> list:
        lives = self.fleet.roster.lives
        return [r for r in replicas if lives[r.index].pool == self.k]

    def _live(self) -> list:
        """This pool's replicas requested and neither draining nor gone."""
        return self._mine(self.fleet.live())

    def _add(self, capacity: str | None = None, phase: StartPhases | None = None):
        """Request a replica: on a warm node when it is an on-demand one on the default cold start
        and the pool has a node (the site being down, it has none), else cold."""
        capacity = capacity or self._next_capacity()
        warm = phase is None and capacity == ON_DEMAND and self.warm is not None and self.warm.take()
        phase = self.warm.phase if warm and self.warm is not None else (phase or self.phase)
        wait_s = max(0.0, self.blocked_until_s - self.env.now)  # the site is down: start after it
        if wait_s:
            phase = StartPhases(phase.provisioned_s + wait_s, phase.ready_s + wait_s)
        replica = self.fleet.add_replica(self.k, phase, capacity)
        self.fleet.roster.lives[replica.index].warm = warm
        if wait_s:  # a node the site cannot provision yet is not billed until it can be
            self.fleet.roster.lives[replica.index].requested_s = self.blocked_until_s
        self._watch(replica)
        return replica

    def _next_capacity(self) -> str:
        """Keep the spot share of the live replicas."""
        if self.spot is None:
            return ON_DEMAND
        lives = self.fleet.roster.lives
        live = self._live()
        num_spot = sum(lives[r.index].capacity == SPOT for r in live)
        return SPOT if num_spot < self.spot.num_spot(len(live) + 1) else ON_DEMAND

    def _watch(self, replica) -> None:
        life = self.fleet.roster.lives[replica.index]
        spot = self.spot
        if life.capacity == SPOT and spot is not None and spot.monthly_interruption > 0:
            hazard_per_s = -math.log(1 - spot.monthly_interruption) / (HOURS_PER_MONTH * S_PER_HOUR)
            self.env.process(self._reclaim(replica, float(self.rng.exponential(1 / hazard_per_s))))
        failures = self.failures
        if failures is not None and failures.mtbf_h is not None:
            service_s = float(self.rng.exponential(failures.mtbf_h * 3600.0))
            self.env.process(self._fail(replica, service_s, failures.mttr_s))

    def _gone(self, replica) -> bool:
        return self.fleet.roster.lives[replica.index].gone_s != math.inf

    def _reclaim(self, replica, after_s: float):
        yield self.env.timeout(after_s)
        if not self.done():
            yield from self.reclaim(replica)

    def reclaim(self, replica):
        """A SimPy process: the spot notice comes now, the node is lost notice_s later."""
        if self._gone(replica):
            return
        life = self.fleet.roster.lives[replica.index]
        spot = self.spot
        if spot is None:
            raise RuntimeError("a spot reclaim on a fleet without spot capacity")
        if life.drain_s == math.inf:  # not already on its way out: replace it
            self._add(spot.replace_with)
        if not self.fleet.is_ready(replica) and self.env.now < life.ready_s:
            self.fleet.cancel(replica, "reclaim")  # still starting: nothing to drain
            return
        self.fleet.drain(replica, "reclaim")
        yield self.env.timeout(spot.notice_s)
        self.fleet.kill(replica, "reclaim")

    def _fail(self, replica, service_s: float, mttr_s: float):
        life = self.fleet.roster.lives[replica.index]
        yield self.env.timeout(max(0.0, life.ready_s - self.env.now) + service_s)
        if self._gone(replica) or self.done():
            return
        self._lose(replica, "failure", mttr_s)

    def _lose(self, replica, why: str, back_in_s: float) -> None:
        """Lose a replica now; a draining one is not replaced (it was on its way out)."""
        draining = self.fleet.roster.lives[replica.index].drain_s != math.inf
        self.fleet.kill(replica, why)
        if not draining:
            loading_s = self.phase.loading_s
            self._add(None, StartPhases(max(0.0, back_in_s - loading_s), max(back_in_s, 0.0)))

    def _outage(self, at_s: float, duration_s: float):
        yield self.env.timeout(at_s)
        self.blocked_until_s = at_s + duration_s
        for replica in self._mine(list(self.fleet.replicas)):
            if not self._gone(replica):
                self._lose(replica, "outage", self.phase.ready_s)  # started once the site is back
        if self.warm is not None:
            self.warm.lose_all("outage")
            yield self.env.timeout(duration_s)
            self.warm.fill()

    def _activate(self) -> None:
        """A request found no replica ready: if none is starting either, start one now."""
        if not self._live():
            self._add()

    # --- the autoscaler ----------------------------------------------------------------------

    def _observe_loop(self):
        while not (self.done() and self.fleet.num_in_system() == 0):
            self.scaler.observe(self.env.now, self.metric())
            yield self.env.timeout(self.scaler.sample_s)

    def _decide_loop(self):
        while not (self.done() and self.fleet.num_in_system() == 0):
            yield self.env.timeout(self.scaler.tick_s)
            live = self._live()
            ready = sum(self.fleet.is_ready(r) for r in live)
            self.scale_to(self.scaler.decide(self.env.now, ready, len(live) - ready) + self.cfg.redundancy)

    def scale_to(self, desired: int) -> None:
        live = self._live()
        for _ in range(desired - len(live)):
            self._add()
        surplus = len(live) - desired
        if surplus <= 0:
            return
        starting = [r for r in reversed(live) if not self.fleet.is_ready(r)]
        for replica in starting[:surplus]:
            self.fleet.cancel(replica)
        ready = sorted((r for r in live if self.fleet.is_ready(r)), key=lambda r: r.num_outstanding)
        for replica in ready[:max(0, surplus - len(starting))]:
            self.fleet.drain(replica)

    def metric(self) -> float:
        """The autoscaler's metric now: summed over ready replicas, or fleet-wide (ttft_p95)."""
        if self.scaling is None:
            raise RuntimeError("the autoscaler's metric read on a fleet without an autoscaler")
        fleet, name = self.fleet, self.scaling.metric
        ready = fleet.routable[self.k]
        unplaced = len(fleet.held) + len(fleet.central)
        if name == "concurrency":
            return float(fleet.num_in_pool(self.k))
        if name == "queue_depth":
            return float(unplaced + sum(len(r.waiting) for r in self._mine(fleet.replicas) if not self._gone(r)))
        if name == "kv_cache":
            return float(sum(r.pool.num_used / r.pool.num_blocks for r in ready))
        if name == "utilization":  # DCGM's GPU utilisation: was a kernel running (a batch in flight)
            return float(sum(bool(r.running) for r in ready))
        return self._ttft_p95_s()

    def _ttft_p95_s(self) -> float:
        """p95 over requests arrived in the last window of their TTFT, or of their wait so far
        when no token has come yet (a queue that grows must push the metric up)."""
        t, now = self.table, self.env.now
        while self._recent and t.arrival_s[self._recent[0]] < now - TTFT_WINDOW_S:
            self._recent.popleft()
        if not self._recent:
            return 0.0
        ids = np.fromiter(self._recent, dtype=np.int64, count=len(self._recent))
        first = t.first_token_s[ids]
        return float(np.percentile(np.where(np.isnan(first), now, first) - t.arrival_s[ids], 95))

    def _forecast_fn(self, planned_arrival_s: np.ndarray) -> Callable[[float], float] | None:
        """predictive: expected concurrency at t = the planned arrival rate around t (the
        scenario's own arrivals, smoothed over FORECAST_WINDOW_S: an oracle of the load's shape)
        x the time a request has been spending in the system (Little's law, L / lambda, over the
        last FORECAST_WINDOW_S of observations)."""
        a = self.scaling
        if not isinstance(a, PredictiveAutoscaler):
            return None
        if a.metric != "concurrency":
            raise InputError("fleet.autoscaler.metric", f"predictive forecasts concurrency, not {a.metric}")
        arrivals = np.sort(planned_arrival_s)
        half = FORECAST_WINDOW_S / 2
        history: deque[tuple[float, float]] = deque()  # (time, concurrency) observed

        def rate(t_s: float) -> float:
            lo, hi = np.searchsorted(arrivals, [t_s - half, t_s + half])
            return (hi - lo) / FORECAST_WINDOW_S

        def forecast(t_s: float) -> float:
            now = self.env.now
            while history and history[0][0] < now - FORECAST_WINDOW_S:
                history.popleft()
            if not history or history[-1][0] < now:  # one observation per moment
                history.append((now, float(self.fleet.num_in_pool(self.k))))
            past = rate(now - half)
            if past <= 0:
                return 0.0
            sojourn_s = float(np.mean([c for _, c in history])) / past
            return rate(t_s) * sojourn_s

        return forecast


class WarmPool:
    """One pool's warm nodes (fleet.warm_pool): `size` of them, in the pool from t = 0 (after
    cold_start.provisioning_s when the fleet starts cold), each taken one refilled at once. Every
    node is a WarmNode of the roster, where the ledger bills it."""

    def __init__(self, env: simpy.Environment, roster: Roster, pool_index: int, cfg: FleetConfig,
                 warm_pool: WarmPoolConfig, pool: Pool):
        self.env, self.roster, self.k, self.cfg = env, roster, pool_index, warm_pool
        cold = cfg.cold_start or ColdStartConfig()
        self.phase = warm_start(cold, pool, self.cfg.state)  # a replica that takes a node
        self.refill_s = cold.provisioning_s
        od_usd_per_hour = pool.deployment.price_usd_per_hour
        self.usd_per_hour = (od_usd_per_hour, od_usd_per_hour if self.cfg.state == RUNNING
                             else self.cfg.stopped_usd_per_hour)  # (provisioning, in the pool)
        self.ready: list[WarmNode] = []  # in the pool now, oldest first
        self.nodes: list[WarmNode] = []  # this pool's nodes not yet gone (in the pool or provisioning)
        roster.warm_pools[pool_index] = (self.cfg.size, self.cfg.state)
        roster.warm_misses[pool_index] = 0
        self.fill(0.0 if cfg.cold_start is None else cold.provisioning_s)

    def fill(self, provisioning_s: float | None = None) -> None:
        """Request nodes until `size` are in the pool or on their way."""
        for _ in range(self.cfg.size - len(self.nodes)):
            self._request(self.refill_s if provisioning_s is None else provisioning_s)

    def _request(self, provisioning_s: float) -> None:
        now = self.env.now
        node = WarmNode(self.k, self.cfg.state, now, now + provisioning_s, *self.usd_per_hour)
        self.roster.warm.append(node)
        self.nodes.append(node)
        if provisioning_s > 0:
            self.env.process(self._join(node, provisioning_s))
        else:
            self.ready.append(node)

    def _join(self, node: WarmNode, provisioning_s: float):
        yield self.env.timeout(provisioning_s)
        if node.gone_s == math.inf:  # not lost meanwhile
            self.ready.append(node)

    def take(self) -> bool:
        """Hand the oldest node in the pool to a replica and refill its slot (True); or count a miss."""
        if not self.ready:
            self.roster.warm_misses[self.k] += 1
            return False
        self._end(self.ready.pop(0), "taken")
        self.fill()
        return True

    def lose_all(self, why: str) -> None:
        for node in list(self.nodes):
            self._end(node, why)
        self.ready.clear()

    def _end(self, node: WarmNode, why: str) -> None:
        node.gone_s, node.end = self.env.now, why
        self.nodes.remove(node)
