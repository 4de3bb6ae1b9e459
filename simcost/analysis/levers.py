"""Optimisation levers and their ROI: `simcost levers` (docs/design.md section 1,
"Which lever saves most?").

From a baseline scenario, each lever is applied alone, as scenario overrides and/or a transform
of the request set, and run with the baseline's seed(s):

* weights in fp8, int8 or int4 (`model.weight_format`); a smaller model (`model.name`, at the
  fewest devices per replica it fits on); prefix caching (`engine.prefix_caching`); another
  batching policy (`engine.policy`);
* a response cache with hit rate h: the scenario's own response cache component
  (`fleet.response_cache`, simcost.cluster.response_cache) in semantic mode: once it holds an
  answer, each arrival is answered from it with probability h, with TTFT = E2EL =
  `cache_latency_s` (the whole answer at once, so no TPOT), never reaching a replica; the cache
  costs `cache_usd_per_hour` (default 0; no embedding cost). Sessions and closed loops work too:
  each turn is looked up as it arrives. Every request is either simulated or cache-served
  (conservation, tested);
* prompts trimmed by a fraction p: input tokens -> max(1, floor(input x (1 - p))), the tail cut
  (a trace's leading prefix blocks stay shareable);
* a spot share s of the replicas on spot capacity at the spot price (the levers file's, else the
  price catalog's typical spot price for the device), reclaimed at the fleet's default interruption
  band with notice, draining and retries (`fleet.spot`, simcost.cluster.control);
* speculative decoding (`engine.speculative`, simcost.analysis.speculative_lever): an EAGLE-style
  head by default, at an assumed acceptance rate;
* edge offload: owned edge boards (`fleet.pools` with `pool_router: edge_first`) take requests
  while they have room and the SLO is predicted to hold; the rest spill to the baseline's cloud
  fleet, the pool that resize shrinks;

A lever that cannot apply (a format the device lacks, a model that does not fit, a workload with
nothing to cache) is reported skipped with the reason, never an error.

**Fleet.** By default (`resize`) every row, the baseline too, runs at the smallest
`fleet.replicas` meeting the SLO (doubling then bisection, `simcost.sizing.replica_search`):
levers that cut work save money only when the fleet shrinks. With `fixed_fleet` every row keeps
the scenario's replicas, so only price levers change $/month and the rest show latency.

**Money.** $/hour = (the run's bill - per-start minimum charges) / horizon (a fleet that runs
for months starts once), $/month = $/hour x 730, $ per 1M output tokens = bill / output tokens
delivered (generated + from the response cache). Saving = baseline $/month - lever $/month.

**ROI** = annual saving x (1 - quality_risk) / (effort_weeks x usd_per_engineer_week): dollars
saved in a year, discounted by the chance the lever's quality loss makes it unusable, per dollar of
engineering. Rows are ranked by ROI among the levers that keep the SLO (or that the baseline
misses too), then the ones that break it, then the skipped ones. Every effort, risk and cost
default below is a simcost assumption, to be replaced by the team's own (a levers YAML).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from simcost.analysis.lever_plans import LeverPlan, plan_levers, with_overrides
from simcost.analysis.levers_config import LeversConfig
from simcost.errors import InputError
from simcost.scenario.deployment import free_device_defaults
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR
from simcost.workload.requests import Requests

MONTHS_PER_YEAR = 12
DEFAULT_MAX_REPLICAS = 16

# --- request transforms (run in the worker) --------------------------------------------------------

def trim_prompts(requests: Requests, fraction: float) -> Requests:
    trimmed = np.maximum(np.floor(requests.input_tokens * (1.0 - fraction)), 1).astype(np.int64)
    return replace(requests, input_tokens=trimmed)


def apply_transform(transform: dict, requests: Requests, seed: int) -> Requests:
    if transform["kind"] == "prompt_trim":
        return trim_prompts(requests, transform["fraction"])
    raise ValueError(f"unknown transform {transform['kind']!r}")


# --- one run ----------------------------------------------------------------------------------

def run_lever(raw: dict, transform: dict | None, seed: int) -> dict:
    """One run of a lever: the scenario (plain data) at `seed`, its requests transformed.
    Top-level, so worker processes can pickle it."""
    from simcost.rng import streams
    from simcost.simulation.simulation import Simulation
    from simcost.workload.requests import generate

    scenario = scenario_from_dict(raw, seed=seed)
    requests = generate(scenario, streams(scenario.seed))  # as Simulation would: same seed, same requests
    if transform is not None:
        requests = apply_transform(transform, requests, scenario.seed)
    result = Simulation(scenario, requests=requests, timeseries=False).run()
    return served_metrics(scenario, result)


def served_metrics(scenario: Scenario, result) -> dict:
    """The row numbers of a run, as its summary has them (vLLM definitions,
    simcost.metrics.summary); requests answered by a response cache are among them."""
    from simcost.metrics.latency import latencies, stats
    from simcost.workload.request_table import COMPLETED

    table, bill, warmup_s = result.table, result.bill, scenario.warmup_s
    lat = latencies(table)
    measured = (table.status == COMPLETED) & (table.arrival_s >= warmup_s)
    ttft_s, tpot_s = lat["ttft_s"][measured], lat["tpot_s"][measured]
    starts, ends = list(table.arrival_s[measured]), list(table.finish_s[measured])
    # attainment as the summary counts it: over every measured arrival, in flight and rejected too
    outcomes = result.summary["slo_outcomes"]
    num_measured, num_good = int(measured.sum()), outcomes["met"]
    num_judged = outcomes["of"]
    output_tokens = int(table.generated.sum())
    usd_per_hour = (bill.total_usd - bill.minimum_usd) / result.horizon_s * S_PER_HOUR
    total_usd = bill.total_usd
    served = int((result.summary.get("response_cache") or {}).get("hits", 0))
    window_s = max(ends) - min(starts) if num_measured else 0.0
    attainment = num_good / num_judged if num_judged else None
    rejected = int(result.summary["requests"]["rejected"])
    prefix = result.summary.get("prefix_cache") or {}
    return {
        "replicas": scenario.fleet.num_replicas,
        "usd_per_hour": usd_per_hour,
        "usd_per_month": usd_per_hour * HOURS_PER_MONTH,
        "usd_per_1m_output_tokens": total_usd / output_tokens * 1e6 if output_tokens else None,
        "p50_ttft_s": stats(ttft_s)["p50"], "p99_ttft_s": stats(ttft_s)["p99"], "p99_tpot_s": stats(tpot_s)["p99"],
        "requests_per_s": num_measured / window_s if window_s > 0 else None,
        "slo_attainment": attainment,
        "meets_slo": bool(attainment is not None and attainment >= scenario.slo.attainment and not rejected),
        "rejected": rejected,
        "simulated_requests": int(table.num_requests) - served,
        "cache_served_requests": served,
        "prefix_token_hit_rate": prefix.get("token_hit_rate"),
    }


def combine_seeds(runs: list[dict]) -> dict:
    """One row from several seeds: means, the lowest SLO attainment, meets_slo on every seed."""
    row: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if key == "meets_slo":
            row[key] = all(r[key] for r in runs)
        elif key == "slo_attainment":
            row[key] = min(values) if values else None
        elif key == "replicas":
            row[key] = runs[0][key]
        else:
            row[key] = sum(values) / len(values) if values else None
    return row


# --- runs over levers ---------------------------------------------------------------------------

class Runner:
    """Runs (scenario, transform) points on every seed, each distinct point once, in a pool when given."""

    def __init__(self, pool, seeds: list[int], bar=None):
        from simcost.analysis.backends import RunCache

        self.seeds, self.runs = seeds, RunCache(pool, run_lever, bar=bar)

    def evaluate(self, points: list[tuple[dict, dict | None]]) -> list[dict]:
        results = self.runs.run([(raw, transform, seed) for raw, transform in points for seed in self.seeds])
        k = len(self.seeds)
        return [combine_seeds(results[i * k:(i + 1) * k]) for i in range(len(points))]

    @property
    def simulations(self) -> int:
        return self.runs.runs


def resized_rows(runner: Runner, points: list[tuple[dict, dict | None]], max_replicas: int) -> list[dict]:
    """Each point at its smallest replica count meeting the SLO (when none within max_replicas
    does: its row at max_replicas, marked infeasible); the searches advance together so each
    round goes to the pool as one batch."""
    from simcost.analysis.forecast import with_replicas
    from simcost.analysis.sizing import replica_search

    results: dict[int, dict] = {}
    searches: dict[int, tuple] = {}  # point index -> (search generator, count to try, rows by count)
    for i, point in enumerate(points):
        search = replica_search(max_replicas)
        searches[i] = (search, next(search), {})
    # the edge-offload row's fleet is [cloud, edge] pools: the cloud pool (0) is the one resized
    pool = [0 if raw["fleet"].get("pools") else None for raw, _ in points]
    while searches:
        batch = [(with_replicas(points[i][0], count, pool[i]), points[i][1]) for i, (_, count, _) in searches.items()]
        for (i, (search, count, tried)), row in zip(list(searches.items()), runner.evaluate(batch)):
            tried[count] = row
            try:
                searches[i] = (search, search.send(row["meets_slo"]), tried)
            except StopIteration as done:
                del searches[i]
                results[i] = {**tried[count], "infeasible": True} if done.value is None else tried[done.value]
    return [results[i] for i in range(len(points))]


# --- ROI and ranking ------------------------------------------------------------------------------

def roi(annual_saving_usd: float, quality_risk: float, effort_weeks: float, usd_per_engineer_week: float) -> float:
    """Dollars saved per year, discounted by the quality risk, per dollar of engineering."""
    if not effort_weeks > 0 or not usd_per_engineer_week > 0:
        raise InputError("effort_weeks", f"{effort_weeks} x ${usd_per_engineer_week}/week; ROI needs a positive cost")
    return annual_saving_usd * (1.0 - quality_risk) / (effort_weeks * usd_per_engineer_week)


def rank_rows(rows: list[dict]) -> list[dict]:
    """Baseline first; then levers that keep the SLO (or that the baseline misses as well) by
    ROI, highest first (ties: lower p99 TTFT first); then those that break it, by ROI; then the
    skipped and infeasible ones."""
    baseline = [r for r in rows if r["lever"] == "baseline"]
    base_ok = bool(baseline and baseline[0]["meets_slo"])
    levers = [r for r in rows if r["lever"] != "baseline"]
    ran = [r for r in levers if r["status"] == "ok"]

    def order(r: dict) -> tuple[float, float]:
        return -r["roi"], r["p99_ttft_s"] if r.get("p99_ttft_s") is not None else math.inf

    keeps = sorted((r for r in ran if r["meets_slo"] or not base_ok), key=order)
    breaks = sorted((r for r in ran if not (r["meets_slo"] or not base_ok)), key=order)
    ranked = keeps + breaks
    for position, r in enumerate(ranked, start=1):
        r["rank"] = position
    return baseline + ranked + [r for r in levers if r["status"] != "ok"]


def why_infeasible(row: dict) -> str:
    att = "n/a" if row["slo_attainment"] is None else f"{row['slo_attainment']:.1%}"
    return f"misses the SLO at {row['replicas']} replicas (attainment {att}, {row['rejected']:g} requests rejected)"


def lever_row(plan: LeverPlan, metrics: dict | None, baseline: dict, cfg: LeversConfig) -> dict:
    effort, risk = cfg.effort_risk(plan.lever)
    row = {"lever": plan.lever, "label": plan.label, "status": "ok", "rank": None, "reason": None,
           "effort_weeks": effort, "quality_risk": risk, "note": plan.note}
    if plan.skip_reason is not None:
        return {**row, "status": "skipped", "reason": plan.skip_reason}
    if metrics is None or metrics.get("infeasible"):
        return {**row, "status": "infeasible", "reason": why_infeasible(metrics) if metrics else "not run"}
    saving = baseline["usd_per_month"] - metrics["usd_per_month"]
    if abs(saving) <= 1e-9 * baseline["usd_per_month"]:
        saving = 0.0  # the same fleet at the same price: float noise in bill / horizon, not a saving
    annual = saving * MONTHS_PER_YEAR
    extra = []
    if metrics.get("prefix_token_hit_rate") is not None:
        extra.append(f"prefix hit {metrics['prefix_token_hit_rate']:.1%}")
    if metrics.get("cache_served_requests"):
        extra.append(f"{metrics['cache_served_requests']:.0f} of "
                     f"{metrics['cache_served_requests'] + metrics['simulated_requests']:.0f} from cache")
    return {**row, **metrics, "note": "; ".join([n for n in (plan.note, *extra) if n]),
            "saving_usd_per_month": saving, "saving_fraction": saving / baseline["usd_per_month"]
            if baseline["usd_per_month"] else None, "annual_saving_usd": annual,
            "roi": roi(annual, risk, effort, cfg.usd_per_engineer_week)}


@dataclass(frozen=True)
class LeverStudy:
    scenario: str
    mode: str  # resize | fixed
    seeds: int
    usd_per_engineer_week: float
    rows: list[dict]  # ranked: baseline first
    simulations: int
    scenario_replicas: int  # the fleet as written (resize may right-size the baseline)


def study(base: Scenario, cfg: LeversConfig, only: tuple[str, ...] | None = None, resize: bool = True,
          max_replicas: int = DEFAULT_MAX_REPLICAS, seeds: int = 1, jobs: int = 1,
          progress: bool = False) -> LeverStudy:
    """The lever table for a baseline scenario (see the module docstring); `progress` shows one
    bar counting simulations."""
    from simcost.analysis.backends import progress_bar, worker_pool

    _check(base, resize, max_replicas, seeds, jobs)
    plans = plan_levers(base, cfg, only)
    raw = to_dict(base)
    free_device_defaults(raw.get("engine"), base.engine)  # as plan_levers: re-derived per lever
    runnable = [p for p in plans if p.skip_reason is None]
    points = [(raw, None)] + [(with_overrides(raw, p.overrides), p.transform) for p in runnable]
    with worker_pool(jobs) as pool, progress_bar(progress, "levers") as bar:
        runner = Runner(pool, [base.seed + k for k in range(seeds)], bar)
        metrics = resized_rows(runner, points, max_replicas) if resize else runner.evaluate(points)
    if metrics[0].get("infeasible"):
        raise InputError("--max-replicas", f"the baseline {why_infeasible(metrics[0])}, the most tried; "
                         "raise --max-replicas, or use --fixed-fleet to compare levers on the scenario's fleet")
    baseline = {"lever": "baseline", "label": "baseline", "status": "ok", "rank": None, "reason": None,
                "effort_weeks": None, "quality_risk": None, "note": "", **metrics[0],
                "saving_usd_per_month": 0.0, "saving_fraction": 0.0, "annual_saving_usd": 0.0, "roi": None}
    by_plan = dict(zip((p.lever for p in runnable), metrics[1:]))
    rows = [baseline] + [lever_row(p, by_plan.get(p.lever), metrics[0], cfg) for p in plans]
    return LeverStudy(base.name, "resize" if resize else "fixed", seeds, cfg.usd_per_engineer_week,
                      rank_rows(rows), runner.simulations, base.fleet.num_replicas)


def _check(base: Scenario, resize: bool, max_replicas: int, seeds: int, jobs: int) -> None:
    for name, value in (("--max-replicas", max_replicas), ("--seeds", seeds), ("--jobs", jobs)):
        if not (isinstance(value, int) and value >= 1):
            raise InputError(name, f"{value}; expected a whole number >= 1")
    if base.fleet.pools is not None:
        raise InputError("fleet.pools", "levers change one fleet's device, model and engine; a fleet of pools is not "
                         "studied yet: study each pool's workload as its own one-pool scenario")
    if resize and base.fleet.disaggregation is not None:
        raise InputError("fleet.disaggregation", "levers resize fleet.replicas; a disaggregated fleet's pools are "
                         "not resized: use --fixed-fleet")
