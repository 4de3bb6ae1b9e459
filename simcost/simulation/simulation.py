"""One run: scenario -> workload -> fleet on SimPy -> step log -> bill -> metrics.

`Simulation` is built in full before it runs, so tests can attach their own SimPy processes
(e.g. a sampler of the number in system for Little's law) to `sim.env` and `sim.fleet`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import numpy as np
import simpy

from simcost.cluster.api_pool import ApiPools
from simcost.cluster.cascade import Cascade
from simcost.cluster.control import FleetControl, initial_capacity, spot_price_usd_per_device_hour
from simcost.cluster.fleet import Fleet, FleetRouting, FleetStart, PoolEngine
from simcost.cluster.response_cache import ResponseCache
from simcost.cluster.routers import DECODE_CONTEXT_TOKENS, POOL_ROUTERS, PoolView, affinity_key_fn
from simcost.cost.ledger import Bill, settle
from simcost.cost.pricing import egress_usd_per_gb, usd_per_replica_hour
from simcost.cost.roster import RosterArrays
from simcost.cost.step_log import StepArrays, StepLog
from simcost.engine.kv.reuse import PrefixSpec, prefix_spec
from simcost.engine.options import host_kv_s_per_token, swap_link
from simcost.engine.speculation import speculation
from simcost.engine.waiting import queue_key
from simcost.errors import InputError, required
from simcost.metrics.budget import budget_alerts
from simcost.metrics.latency import slo_limits_by_entry
from simcost.metrics.pool_summary import served_pool
from simcost.metrics.run_summary import RunSummary
from simcost.metrics.summary import summarize
from simcost.metrics.timeseries import TimeSeries, default_interval_s
from simcost.perf.deployment import Deployment, Pool, fleet_pools
from simcost.perf.model_choice import choose_perf_model
from simcost.perf.model_choice import describe as describe_perf_models
from simcost.perf.startup import cold_start
from simcost.perf.step_model import kernel_seconds, step_params, step_time_s
from simcost.rng import streams
from simcost.scenario.fleet_plan import PoolPlan, fleet_plan, pool_routed
from simcost.scenario.scenario import Scenario
from simcost.simulation.per_item import item_work, per_item_fleet, per_item_requests
from simcost.simulation.sampler import Sampler
from simcost.workload.concurrency import ConcurrencyLimit
from simcost.workload.request_table import COMPLETED, RequestTable
from simcost.workload.requests import Requests, generate, workload_streams
from simcost.workload.sessions import SessionDriver


class RunListener(Protocol):
    """What `Simulation.run` tells as soon as it is final, before the bill is summarised (a
    results writer draws figures from it meanwhile: simcost.results.run_figures.EarlyFigures)."""

    def requests_final(self, scenario: Scenario, table: RequestTable) -> None:
        """Every request's times and status."""

    def series_final(self, scenario: Scenario, series: TimeSeries, roster: RosterArrays, per_item: bool) -> None:
        """The fleet over time, its replicas' timelines, and whether the model is served per item."""


@dataclass
class RunResult:
    scenario: Scenario
    deployment: Deployment  # the scenario's hardware (the prefill pool's, when disaggregated)
    table: RequestTable
    steps: StepArrays
    bill: Bill
    horizon_s: float
    summary: RunSummary
    pools: list[Pool]  # the fleet's replicas, by deployment, in replica order
    timeseries: TimeSeries | None = None  # sampled fleet state over time (simcost.metrics.timeseries)
    plan: tuple[PoolPlan, ...] = ()  # what each pool of `pools` runs (simcost.scenario.fleet_plan)
    api: ApiPools | None = None  # the hosted-API pools (fleet.api_pools), their counts and prices
    cache: ResponseCache | None = None  # the response cache (fleet.response_cache)


class Simulation:
    def __init__(self, scenario: Scenario, requests: Requests | None = None, max_span_steps: int = 1 << 30,
                 sample_interval_s: float | None = None, timeseries: bool = True,
                 exact_token_times: bool | None = None):
        self.scenario = scenario
        self.plan = fleet_plan(scenario)
        self.routed = pool_routed(self.plan)  # requests choose their pool (else all enter the first)
        self.pools = fleet_pools(scenario)  # each pool plans its own deployment
        self.deployment = self.pools[0].deployment  # pool 0's stands for the scenario's
        self.phases = [phase for plan, pool in zip(self.plan, self.pools)
                       for phase in [cold_start(plan.fleet.cold_start, pool)] * pool.replicas]
        run_streams = streams(scenario.seed)
        self.per_item = per_item_fleet(scenario, self.pools)
        self.requests = requests if requests is not None else generate(scenario, run_streams)
        if self.per_item:
            self.requests = per_item_requests(self.requests)
        if timeseries and sample_interval_s is None:
            sample_interval_s = default_interval_s(self.arrivals_end_s() + (scenario.drain_s or 0.0))
        # exact_token_times None: per the run's size (simcost.workload.token_stats)
        self.table = RequestTable(self.requests, scenario.warmup_s, exact_token_times,
                                  sample_interval_s if timeseries and sample_interval_s and sample_interval_s > 0 else None)
        self.env = simpy.Environment()
        self.frontend_s = scenario.engine.frontend_s  # fleet-wide (scenario.engine's _check_frontend)
        self.in_frontend = 0  # requests sent, not yet received by the engine
        self.log = StepLog()
        self.sessions = SessionDriver(self.env, self.table, scenario, workload_streams(scenario, run_streams),
                                      self._arrive)
        trace = scenario.workload.trace  # a trace replayed under a concurrency limit (a single workload only)
        self.gate = (None if trace is None or trace.max_concurrency is None
                     else ConcurrencyLimit(self.env, trace.max_concurrency))
        moves = scenario.fleet.moves
        start = FleetStart([p.replicas for p in self.pools], self.phases,
                           self._initial_capacity() if moves else None)
        routing = FleetRouting(scenario.fleet.router, run_streams.routing,
                               affinity_keys(scenario, self.requests, self.table), scenario.fleet.affinity_load_bound,
                               self._pool_serves() if self.routed else None)
        self.pool_engines = self._pool_engines(run_streams)
        self.fleet = Fleet(self.env, self.table, self.pool_engines, start, routing, self.log,
                           max_span_steps, on_done=self._on_done if self.sessions.active or moves
                           or self.gate is not None
                           or scenario.fleet.cascade is not None or scenario.fleet.response_cache is not None
                           else None,
                           prefix=self._prefix_spec())
        if self.routed:  # the pool router reads the fleet's routable lists
            self.fleet.pool_router = self._pool_router()
        # hosted-model APIs (fleet.api_pools): asked at each arrival before the fleet
        self.api = None if not scenario.fleet.api_pools else ApiPools(
            self.env, self.table, scenario.fleet.api_pools,
            [scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))], run_streams.api,
            self.fleet, self._on_done)
        # answers served from a cache before any pool (fleet.response_cache)
        cache = scenario.fleet.response_cache
        if cache is not None and cache.mode == "exact" and self.requests.prefix_block_ids is None:
            raise InputError("fleet.response_cache.mode", "exact needs prompt content hashes (a trace with hash_ids, "
                             "such as Mooncake's); use semantic with a hit_rate")
        self.cache = None if cache is None else ResponseCache(
            self.env, cache, self.table, [scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))],
            self.requests.prefix_block_ids, run_streams.response_cache, self._route, self._on_done)
        # a small model first, some answers escalated (fleet.cascade)
        cascade = scenario.fleet.cascade
        self.cascade = None if cascade is None else Cascade(
            cascade, self.table, [scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))],
            [p.name for p in self.plan], [a.name for a in scenario.fleet.api_pools], run_streams.cascade, self._send)
        self.arrival_process = self.env.process(self._arrivals())
        # a fleet that moves: autoscaler, spot reclaims, failures (simcost.cluster.control); its
        # timers reach far past the last request, so such a run ends when `finished` fires
        self.control = self.finished = None
        self.controls: list[FleetControl] = []  # one per pool that moves
        if moves:
            for k, (plan, pool) in enumerate(zip(self.plan, self.pools)):
                if plan.moves:
                    self.controls.append(FleetControl(self.env, self.fleet, plan.fleet, pool, run_streams.fleet,
                                                      self.table, self.arrivals_done, self.requests.arrival_s,
                                                      pool_index=k))
            self.control = self.controls[0]
            self.finished = self.env.event()
        self.sampler = Sampler(self, sample_interval_s) if timeseries else None  # only reads the fleet
        self._progress = None

    def _initial_capacity(self) -> list[str]:
        return [c for plan in self.plan for c in initial_capacity(plan.fleet, plan.replicas)]

    def _pool_engines(self, run_streams) -> list[PoolEngine]:
        """Each pool's engine inputs (simcost.perf.deployment.Pool order)."""
        priority = np.array([e.priority for e in self.scenario.workload.entries()])
        key_rng = run_streams.predictions
        speculation_seed = int(run_streams.speculation.integers(2**63))
        engines: list[PoolEngine] = []
        for k, (plan, pool) in enumerate(zip(self.plan, self.pools)):
            if plan.role == "decode":  # it takes over requests from the prefill pool before it
                engines[k - 1:] = hand_off(self.plan[k - 1], self.pools[k - 1], engines[k - 1], plan, pool)
            else:
                engines.append(pool_engine(plan.scenario, pool.deployment, self.table, priority, key_rng,
                                           speculation_seed))
        return engines

    def _pool_serves(self) -> list[list[int]]:
        """fleet.pools: per workload entry, the pools that serve it."""
        n_entries = len(self.scenario.workload.entries())
        return [[k for k, p in enumerate(self.pools) if p.serves is None or i in p.serves] for i in range(n_entries)]

    def _pool_router(self):
        fleet, views = self.scenario.fleet, []
        for k, pool in enumerate(self.pools):
            own, dep = pool.scenario, pool.deployment
            p = step_params(own, dep)
            batched, seqs = dep.max_num_batched_tokens, own.engine.max_num_seqs
            prefill_s = lambda n, p=p: float(step_time_s(p, n, 0, n * (n + 1) // 2, 0, 1))  # one prompt  # noqa: E731
            seqs_fit = max(1, min(seqs, dep.kv_capacity_tokens // DECODE_CONTEXT_TOKENS))
            decode_s = float(step_time_s(p, 0, seqs_fit, seqs_fit * (DECODE_CONTEXT_TOKENS + 1),
                                         seqs_fit * DECODE_CONTEXT_TOKENS, 0))
            usd_per_token = usd_per_replica_hour(own.fleet, dep) / 3600.0 * decode_s / seqs_fit
            site = own.fleet.site
            views.append(PoolView(self.fleet.routable[k], prefill_s, prefill_s(batched) / batched, usd_per_token,
                                  site.client_rtt_s, site.edge or dep.device.kind == "edge",
                                  fleet.edge_max_outstanding_per_replica or seqs))
        limits = slo_limits_by_entry(self.scenario)
        return POOL_ROUTERS[fleet.pool_router](views, self.table, limits["ttft_s"], [p.name for p in self.pools],
                                               limits["tpot_s"])

    def _prefix_spec(self) -> PrefixSpec | None:
        eng, dep, req = self.scenario.engine, self.deployment, self.requests
        if not eng.prefix_caching:
            return None
        block_tokens = req.prefix_block_tokens  # set whenever the trace has block ids
        if req.prefix_block_ids is not None and block_tokens is not None and block_tokens % dep.block_size:
            raise InputError("engine.block_size", f"{dep.block_size} does not divide the trace's "
                             f"{req.prefix_block_tokens}-token prefix blocks; prefix caching needs it to")
        host_s_per_token = 0.0
        if eng.host_cache_blocks:
            host_s_per_token = host_kv_s_per_token(eng, dep, "engine.host_cache_blocks")
        session_prefix = np.array([e.session is not None for e in self.scenario.workload.entries()])
        return prefix_spec(self.table, req.prefix_block_ids, req.prefix_block_tokens, session_prefix,
                           dep.block_size, eng.host_cache_blocks, host_s_per_token)

    def prefix_cache_summary(self) -> dict | None:
        """Prefix-cache hits over all replicas (None without prefix caching)."""
        caches = [r.reuse for r in self.fleet.replicas if r.reuse is not None]
        if not caches:
            return None
        # first admissions only; those after a preemption (which find their own blocks) apart, as vLLM counts
        resumed_lookups = sum(c.resumed_blocks_looked_up for c in caches)
        resumed_hits = sum(c.resumed_blocks_hit for c in caches)
        lookups = sum(c.pool.stats.lookups for c in caches) - resumed_lookups
        hits = sum(c.pool.stats.hits for c in caches) - resumed_hits
        looked_up = sum(c.looked_up_tokens for c in caches)
        saved = sum(c.saved_tokens for c in caches)
        summary = {"block_hit_rate": hits / lookups if lookups else None, "blocks_looked_up": lookups,
                   "blocks_hit": hits, "prefill_tokens_saved": saved, "prompt_tokens_admitted": looked_up,
                   "token_hit_rate": saved / looked_up if looked_up else None,
                   "evictions": sum(c.pool.stats.evictions for c in caches),
                   "host_hits": sum(c.pool.stats.hits_host for c in caches)}
        if resumed_lookups:  # (only runs that preempted)
            summary |= {"resumed_blocks_looked_up": resumed_lookups, "resumed_blocks_hit": resumed_hits}
        return summary

    def _arrivals(self):
        arrival_s = self.requests.arrival_s
        step = max(1, len(arrival_s) // 200)
        for rid in range(len(arrival_s)):
            delay = arrival_s[rid] - self.env.now
            if delay > 0:
                yield self.env.timeout(delay)
            if self.gate is not None:  # sent when a slot frees; its latencies count from then
                while (freed := self.gate.wait()) is not None:
                    yield freed
                self.gate.take(rid)
                self.table.arrival_s[rid] = self.env.now
            self._arrive(rid)
            if self._progress is not None and rid % step == step - 1:
                self._progress.update(step)
        self._check_finished()

    def _arrive(self, rid: int) -> None:
        if self.per_item:  # closed-loop requests are created during the run: their items are the prompt too
            t = self.table
            t.items[rid] = t.input_tokens[rid] = max(int(t.items[rid]), 1)
        if self.cache is not None and self.cache.lookup(rid):
            return  # answered from the cache, or passed on after the lookup (_route)
        self._route(rid)

    def _route(self, rid: int) -> None:
        """Request rid to its cascade stage, an api pool that takes it, or the fleet."""
        stage = self.cascade.arrived(rid) if self.cascade is not None else None
        if stage is not None and stage != ("fleet", None):
            self._send(rid, stage)
            return
        # the fleet as routed (a cascade's first stage too): api pools may still take it
        # (route, overflow, failover)
        if self.api is not None and self.api.take(rid):
            return  # a hosted API answers it: the fleet and its autoscalers never see it
        self._send(rid, ("fleet", None))

    def _send(self, rid: int, target: tuple[str, int | None]) -> None:
        """Request rid to ("api", k), ("fleet", pool k only) or ("fleet", None: routed as usual)."""
        kind, k = target
        if kind == "api":
            required(self.api, "fleet.api_pools").start(rid, required(k, "an api pool"))
            return
        if k is not None:
            self.fleet.forced_pool[rid] = k
        if self.frontend_s > 0.0:  # the engine (its router, queue and autoscaler) sees it this much later
            self.in_frontend += 1
            self.env.timeout(self.frontend_s).callbacks.append(partial(self._frontend_done, rid))
        else:
            self._engine_receives(rid)

    def _frontend_done(self, rid: int, _event: simpy.Event) -> None:
        self.in_frontend -= 1
        self._engine_receives(rid)

    def _engine_receives(self, rid: int) -> None:
        for control in self.controls:
            control.arrived(rid)
        self.fleet.arrive(rid)

    def _on_done(self, rid: int) -> None:
        if self.gate is not None:
            self.gate.release(rid)
        if self.sessions.active:
            self.sessions.on_done(rid)
        if self.cache is not None:
            self.cache.store(rid)
        if self.cascade is not None:
            self.cascade.done(rid)
        self._check_finished()

    def arrivals_done(self) -> bool:
        """No request can come any more: the arrivals are all out and no session turn is pending."""
        return not self.arrival_process.is_alive and self.sessions.pending == 0

    def _check_finished(self) -> None:
        if (self.finished is not None and not self.finished.triggered and self.arrivals_done()
                and self.in_frontend == 0 and self.fleet.num_in_system() == 0 and (self.api is None or self.api.in_flight == 0)
                and (self.cache is None or self.cache.pending == 0)):
            self.finished.succeed()

    def request_egress_usd(self) -> np.ndarray:
        """fleet.pools: each request's egress at its serving site's $/GB."""
        fleet = self.scenario.fleet
        price = np.array([egress_usd_per_gb(plan.fleet.site, plan.own_site) for plan in self.plan])
        pool = served_pool(self.table, np.array([life.pool for life in self.fleet.roster.lives], dtype=np.int64))
        per_gb = np.where(pool >= 0, price[np.maximum(pool, 0)], 0.0)
        return request_egress_bytes(self.table, fleet.bytes_per_token) / 1e9 * per_gb

    def _api_usd(self) -> np.ndarray | None:
        """Each request's hosted-API price (0 for the fleet's); None without api pools."""
        if self.api is None:
            return None
        self.api.trim(self.table.num_requests)
        return self.api.request_usd

    def arrivals_end_s(self) -> float:
        if self.scenario.duration_s is not None:
            return self.scenario.duration_s
        return float(self.requests.arrival_s[-1]) if len(self.requests) else 0.0

    def run(self, progress: bool = False, listener: RunListener | None = None) -> RunResult:
        """The whole run, and its result; `listener` hears of each part as soon as it is final."""
        until = self.finished if self.scenario.drain_s is None else self.arrivals_end_s() + self.scenario.drain_s
        if progress:
            # tqdm waits 1 s before drawing, is off where stderr is not a terminal, and is a widget in a notebook
            from simcost.simulation.progress import new_bar

            with new_bar(total=len(self.requests), unit="req", desc="arrivals", delay=1.0, leave=False,
                          disable=None) as bar:
                self._progress = bar
                self.env.run(until=until)
                self._progress = None
                bar.set_description_str("summarizing")  # the bill and the summary take a moment on long runs
                return self.result(listener)
        self.env.run(until=until)
        return self.result(listener)

    def result(self, listener: RunListener | None = None) -> RunResult:
        self.table.trim()
        if listener is not None:
            listener.requests_final(self.scenario, self.table)
        steps = self.log.arrays()
        end_s = self.env.now
        if self.scenario.drain_s is None:
            # the run ended with its last event; a timer that fires later as a no-op (a batch
            # formation timeout cut short, simcost.engine.request_level) must not extend the bill
            end_s = max(float(steps.step_end_s.max(initial=0.0)), float(self.table.arrival_s.max(initial=0.0)),
                        self.api.last_finish_s if self.api is not None else 0.0,
                        self.cache.last_s if self.cache is not None else 0.0)
        horizon_s = max(end_s, self.arrivals_end_s())
        scenario, dep = self.scenario, self.deployment
        bill = settle(steps, self.table.num_requests, scenario.fleet, self.pools, horizon_s, scenario.cost,
                      completed=self.table.status == COMPLETED, roster=self.fleet.roster,
                      spot_usd_per_device_hour=spot_price_usd_per_device_hour(scenario.fleet),
                      request_egress_usd=self.request_egress_usd() if self.routed else None,
                      request_api_usd=self._api_usd(),
                      request_cache_usd=None if self.cache is None else self.cache.trim(self.table.num_requests),
                      cache_store_usd=0.0 if self.cache is None else self.cache.store_usd(horizon_s))
        series = None if self.sampler is None else self.sampler.series(horizon_s, steps, bill)
        if listener is not None and series is not None:
            listener.series_final(scenario, series, bill.roster, bool(self.per_item))
        budget = None
        if scenario.cost.budget is not None and series is not None:
            budget = budget_alerts(scenario.cost.budget, series)
        summary = summarize(scenario, dep, self.table, steps, bill, horizon_s, self.sessions.counts, self.pools,
                            self.fleet.pool_router, self.prefix_cache_summary(), self.per_item,
                            self.measured_fraction(), self.api.summary() if self.api is not None else None,
                            self.cascade.summary(bill.request_usd) if self.cascade is not None else None,
                            self.cache.summary(horizon_s) if self.cache is not None else None, budget)
        summary["perf_model"] = describe_perf_models(
            [(pool.label, *choose_perf_model(plan.scenario, pool.deployment)) for plan, pool in zip(self.plan, self.pools)])
        return RunResult(scenario, dep, self.table, steps, bill, horizon_s, summary, self.pools, series, self.plan,
                         self.api, self.cache)


    def measured_fraction(self) -> tuple[float, float] | None:
        """perf.model kernels: the shares of step seconds that came from this device's measured
        kernels and from another GPU's kernels scaled to it, over the pools timed by kernel tables
        (0 when none is: no tables to use); None otherwise."""
        shares = [kernel_seconds(pe.step_params) for pe in self.pool_engines]
        if self.scenario.perf.model != "kernels" and not any(t > 0 for t, _, _ in shares):
            return None  # auto resolved to another model everywhere (perf_model says why)
        total = sum(t for t, _, _ in shares)
        if total <= 0:
            return 0.0, 0.0
        return sum(m for _, m, _ in shares) / total, sum(s for _, _, s in shares) / total


def request_egress_bytes(table: RequestTable, bytes_per_token: float) -> np.ndarray:
    """Bytes each request sent out of its site: its generated tokens, streamed to its client.
    Prompts come in (ingress, not charged); no request moves between sites after it is placed
    (a retried request restarts on another replica, its prompt resent by the router, which is
    the client's side: not charged either)."""
    return table.generated[:table.num_requests] * bytes_per_token


def affinity_keys(scenario: Scenario, requests: Requests, table: RequestTable):
    """prefix_affinity's request -> prefix key (simcost.routers.affinity_key_fn); None for other routers."""
    if scenario.fleet.router != "prefix_affinity":
        return None
    session_prefix = np.array([e.session is not None for e in scenario.workload.entries()])
    return affinity_key_fn(table, requests.prefix_block_ids, session_prefix)


def pool_engine(scenario: Scenario, dep: Deployment, table: RequestTable, priority_by_workload: np.ndarray,
                rng: np.random.Generator, speculation_seed: int = 0) -> PoolEngine:
    """The engine inputs of a pool running `scenario`'s engine on deployment `dep`."""
    eng = scenario.engine
    return PoolEngine(eng, step_params(scenario, dep), dep.num_kv_blocks, dep.block_size, dep.max_num_batched_tokens,
                      dep.max_model_len, item_work=item_work(scenario, dep), swap=swap_link(eng, dep),
                      queue_key=queue_key(eng, table, priority_by_workload, rng),
                      speculation=speculation(scenario, dep, speculation_seed))


def hand_off(prefill_plan: PoolPlan, prefill_pool: Pool, prefill: PoolEngine, decode_plan: PoolPlan,
             decode_pool: Pool) -> list[PoolEngine]:
    """The prefill and decode pools' engine inputs, from the prefill pool's. The decode pool has
    its own hardware's step-time model, KV blocks and swap link, and the prefill pool's token
    limits, block size and engine: it takes only requests admitted there. The KV crosses
    min(tp) links in parallel (each device sends or receives its shard)."""
    scenario, prefill_dep, decode = prefill_plan.scenario, prefill_pool.deployment, decode_pool.deployment
    links = min(prefill_dep.tensor_parallel, decode.tensor_parallel)
    link_gb_per_s = required(decode_plan.kv_link_gb_per_s, "fleet.disaggregation.kv_link_gb_per_s")
    s_per_token = prefill_dep.kv_bytes_per_token / (link_gb_per_s * 1e9 * links)
    return [replace(prefill, role="prefill", kv_transfer_s_per_token=s_per_token),
            replace(prefill, role="decode", step_params=step_params(scenario, decode),
                    num_kv_blocks=decode.num_kv_blocks, swap=swap_link(scenario.engine, decode))]


def run(scenario: Scenario, progress: bool = False) -> RunResult:
    return Simulation(scenario).run(progress=progress)
