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

import copy
import csv
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from simcost.analysis.speculative_lever import EFFORT_RISK, SpeculativeInputs, speculative_overrides
from simcost.errors import InputError, closest
from simcost.scenario.deployment import BatchingPolicy, free_device_defaults
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import bounds, build, to_dict
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR
from simcost.workload.requests import Requests
from simcost.yamlio import read_yaml_file

MONTHS_PER_YEAR = 12
DEFAULT_MAX_REPLICAS = 16

# --- inputs (a levers YAML) -------------------------------------------------------------------

# (effort_weeks, quality_risk) per lever: simcost assumptions, not measurements. Effort is
# engineer-weeks to ship the change with its evaluation; risk is the chance (0-1) that its
# quality loss is unacceptable. Quantisation risk grows as bits shrink (int4 loses most);
# prefix caching and batching policies are exact (no quality change); a smaller model is the
# largest quality bet; a response cache can serve stale or wrong answers; trimmed prompts lose
# context; spot needs interruption handling but does not change answers.
DEFAULT_EFFORT_RISK = {
    "fp8": (1.0, 0.05), "int8": (1.0, 0.10), "int4": (2.0, 0.25), "smaller_model": (4.0, 0.40),
    "prefix_caching": (0.5, 0.0), "response_cache": (3.0, 0.15), "prompt_trim": (2.0, 0.15),
    "spot": (2.0, 0.0), "policy": (0.5, 0.0), "edge_offload": (6.0, 0.20),
    "speculative": EFFORT_RISK,
}
# $4,000 per engineer-week: a simcost assumption (about $200k a year fully loaded over 50 weeks).
DEFAULT_USD_PER_ENGINEER_WEEK = 4000.0

# A smaller sibling per model (same family and tokenizer), for the smaller-model lever; a model
# missing from the catalog makes the lever's check refuse it by name.
SMALLER_MODEL = {"llama-3.1-405b": "llama-3.1-70b", "llama-3.1-70b": "llama-3.1-8b",
                 "llama-2-70b": "llama-2-13b", "llama-2-13b": "llama-2-7b",
                 "qwen2.5-72b": "qwen2.5-7b", "mixtral-8x7b": "mistral-7b"}


@dataclass(frozen=True, kw_only=True)
class LeverInputs:
    enabled: bool = True
    effort_weeks: float | None = field(default=None, metadata=bounds(gt=0))  # None: DEFAULT_EFFORT_RISK
    quality_risk: float | None = field(default=None, metadata=bounds(ge=0, le=1))


@dataclass(frozen=True, kw_only=True)
class SmallerModelInputs(LeverInputs):
    model: str | None = None  # None: SMALLER_MODEL


@dataclass(frozen=True, kw_only=True)
class ResponseCacheInputs(LeverInputs):
    hit_rate: float = field(default=0.2, metadata=bounds(gt=0, le=0.99))  # assumption
    cache_latency_s: float = field(default=0.05, metadata=bounds(ge=0))  # assumption: a key-value lookup + network
    cache_usd_per_hour: float = field(default=0.0, metadata=bounds(ge=0))  # the cache's own servers


@dataclass(frozen=True, kw_only=True)
class PromptTrimInputs(LeverInputs):
    fraction: float = field(default=0.2, metadata=bounds(gt=0, le=0.99))  # assumption


@dataclass(frozen=True, kw_only=True)
class SpotInputs(LeverInputs):
    share: float = field(default=0.5, metadata=bounds(gt=0, le=1))  # of device-hours; assumption
    spot_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))  # None: the price catalog


@dataclass(frozen=True, kw_only=True)
class PolicyInputs(LeverInputs):
    policy: BatchingPolicy | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeOffloadInputs(LeverInputs):
    """Owned edge boards in front of the cloud fleet (edge_first: spill to the cloud when full).
    Defaults are simcost assumptions: a Jetson AGX Orin 64GB developer kit lists at about $2,000
    (NVIDIA store; not in the bundled price catalog), written off over 3 years, power at
    $0.15/kWh, the model in int4 and 8 sequences per board."""

    device: str = "jetson-agx-orin"
    boards: int = field(default=2, metadata=bounds(ge=1))
    weight_format: Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"] = "int4"
    max_num_seqs: int = field(default=8, metadata=bounds(ge=1))
    capex_usd_per_device: float = field(default=2000.0, metadata=bounds(ge=0))
    lifetime_years: float = field(default=3.0, metadata=bounds(gt=0))
    usd_per_kwh: float = field(default=0.15, metadata=bounds(ge=0))
    client_rtt_s: float = field(default=0.0, metadata=bounds(ge=0))  # the edge site's round trip to its users


@dataclass(frozen=True, kw_only=True)
class LeversConfig:
    """A levers YAML: `usd_per_engineer_week` and, per lever, `enabled`, `effort_weeks`,
    `quality_risk` and the lever's own knobs."""

    usd_per_engineer_week: float = field(default=DEFAULT_USD_PER_ENGINEER_WEEK, metadata=bounds(gt=0))
    fp8: LeverInputs = LeverInputs()
    int8: LeverInputs = LeverInputs()
    int4: LeverInputs = LeverInputs()
    smaller_model: SmallerModelInputs = SmallerModelInputs()
    prefix_caching: LeverInputs = LeverInputs()
    response_cache: ResponseCacheInputs = ResponseCacheInputs()
    prompt_trim: PromptTrimInputs = PromptTrimInputs()
    spot: SpotInputs = SpotInputs()
    policy: PolicyInputs = PolicyInputs()
    edge_offload: EdgeOffloadInputs = EdgeOffloadInputs()
    speculative: SpeculativeInputs = SpeculativeInputs()

    def effort_risk(self, lever: str) -> tuple[float, float]:
        inputs = getattr(self, lever)
        effort, risk = DEFAULT_EFFORT_RISK[lever]
        return (effort if inputs.effort_weeks is None else inputs.effort_weeks,
                risk if inputs.quality_risk is None else inputs.quality_risk)


LEVER_NAMES = tuple(f.name for f in fields(LeversConfig) if f.name != "usd_per_engineer_week")


def load_levers(path: str | Path | None, overrides: dict | None = None) -> LeversConfig:
    """A levers YAML (None: every default), then `overrides` ({lever: {key: value}}) on top."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_file(Path(path), "levers file") or {}
        if not isinstance(raw, dict):
            raise InputError(str(path), "expected a mapping: usd_per_engineer_week and one section per lever")
    raw = copy.deepcopy(raw)
    for lever, values in (overrides or {}).items():
        raw.setdefault(lever, {}).update(values)
    try:
        return build(LeversConfig, raw, "")
    except InputError as exc:  # name the file the key is in
        raise InputError(f"{path}: {exc.where}" if path is not None else exc.where, exc.problem) from None


# --- lever plans --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeverPlan:
    """A lever applied to the baseline: overrides (dotted key -> value) and a request transform
    (plain data, applied in the worker), or why it was skipped."""

    lever: str
    label: str
    overrides: dict = field(default_factory=dict)
    transform: dict | None = None
    skip_reason: str | None = None
    note: str = ""


def _skip(lever: str, label: str, reason: str) -> LeverPlan:
    return LeverPlan(lever, label, skip_reason=reason)


def weight_format_plan(fmt: str):
    def plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
        from simcost.catalog.specs import BYTES_PER_ELEMENT

        label = f"{fmt} weights"
        current = base.model.weight_format or base.specs.model(base.model.name).weight_format
        if current == fmt or BYTES_PER_ELEMENT[fmt] > BYTES_PER_ELEMENT[current]:
            return _skip(fmt, label, f"the baseline already runs {current} weights")
        note = "W8A8 at the fp8 peak" if fmt == "fp8" else f"weight-only {fmt}, bf16 compute"
        return LeverPlan(fmt, label, {"model.weight_format": fmt}, note=note)
    return plan


def smaller_model_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    get_model = base.specs.model
    label = "smaller model"
    target = cfg.smaller_model.model or SMALLER_MODEL.get(base.model.name)
    if target is None:
        return _skip("smaller_model", label, f"no smaller model mapped for {base.model.name}; "
                     f"name one with --smaller-model or smaller_model.model")
    params = get_model(target, "smaller_model.model").num_params  # a typo is an error, not a skip
    if params >= get_model(base.model.name).num_params:
        return _skip("smaller_model", label, f"{target} is not smaller than the baseline's {base.model.name}")
    overrides: dict[str, str | None] = {"model.name": target}
    if base.model.weight_format is None:
        overrides["model.weight_format"] = None
    # the fewest devices per replica it fits on (the baseline's degree at most)
    raw = to_dict(base)
    for tp in sorted({t for t in (1, 2, 4, 8, 16, 32, 64) if t < base.hardware.tensor_parallel}
                     | {base.hardware.tensor_parallel}):
        option = {**overrides, "hardware.tensor_parallel": tp}
        if fit_problem(with_overrides(raw, option)) is None:
            return LeverPlan("smaller_model", f"model {target}", option, note=f"tp{tp}")
    return LeverPlan("smaller_model", f"model {target}", overrides)  # validation reports why it does not fit


def prefix_caching_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    label = "prefix caching"
    if base.engine.prefix_caching:
        return _skip("prefix_caching", label, "the baseline already caches prefixes")
    if not has_prefix_information(base):
        return _skip("prefix_caching", label, "the workload has no prefix blocks or sessions; simcost assumes "
                     "requests without them share nothing, so the cache would find no hits")
    return LeverPlan("prefix_caching", label, {"engine.prefix_caching": True})


def has_prefix_information(base: Scenario) -> bool:
    from simcost.workload.traces import load_trace

    for entry in base.workload.entries():
        if entry.session is not None:
            return True
        if entry.trace is not None and load_trace(entry.trace.name, entry.trace.columns).block_ids is not None:
            return True
    return False


def _requests_known_up_front(base: Scenario) -> str | None:
    """Why request transforms cannot apply (sessions and closed loops create requests during
    the run), or None."""
    for entry in base.workload.entries():
        if entry.session is not None or entry.clients is not None:
            return ("the workload creates requests during the run (sessions or closed-loop users); "
                    "transforming only the requests known up front is not modelled")
    return None


def response_cache_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    inputs = cfg.response_cache
    label = f"response cache {inputs.hit_rate:.0%}"
    if base.fleet.response_cache is not None:
        return _skip("response_cache", label, "the baseline already has a response cache")
    cache = {"mode": "semantic", "hit_rate": inputs.hit_rate, "lookup_s": inputs.cache_latency_s, "embedding_s": 0.0,
             "embedding_usd_per_1m_tokens": 0.0, "store_usd_per_hour": inputs.cache_usd_per_hour}
    return LeverPlan("response_cache", label, {"fleet.response_cache": cache},
                     note=f"hits served in {inputs.cache_latency_s * 1e3:g} ms")


def prompt_trim_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    fraction = cfg.prompt_trim.fraction
    label = f"prompts -{fraction:.0%}"
    reason = _requests_known_up_front(base)
    if reason:
        return _skip("prompt_trim", label, reason)
    return LeverPlan("prompt_trim", label, transform={"kind": "prompt_trim", "fraction": fraction})


def spot_price_usd_per_device_hour(base: Scenario, cfg: LeversConfig) -> tuple[float | None, str]:
    """The spot price per device-hour and where it came from: the levers file, else the price
    catalog's typical spot price (the midpoint of the observed range) for the device, at
    fleet.site.provider/region when the scenario names a provider, else its first offer with a
    spot price. (None, reason) when there is none."""
    if cfg.spot.spot_usd_per_device_hour is not None:
        return cfg.spot.spot_usd_per_device_hour, "levers file"
    catalog = base.specs
    device, site = base.hardware.device, base.fleet.site
    provider = getattr(site, "provider", None)
    offers = ([catalog.price_offer(device, provider, site.region)] if provider is not None
              else [o for o in catalog.prices if o.device == device])
    for offer in offers:
        if offer.spot_usd_per_hour is not None:
            dated = offer.sources.get("spot", {}).get("date", "undated")
            return (offer.per_device(offer.spot_usd_per_hour),
                    f"{offer.provider} {offer.region} {offer.instance} spot midpoint, {dated}")
    return None, f"prices.yaml has no spot price for {device}" + (f" at {provider}" if provider else "")


def spot_share_overrides(base: Scenario, share: float, spot_usd_per_device_hour: float) -> dict:
    """The spot lever's fleet change: a share of the replicas on spot capacity at the spot price,
    reclaimed at the fleet's default interruption band (fleet.spot: notice, drain, retry,
    replacement; simcost.cluster.control). Every replica is priced for its devices either way."""
    return {"fleet.spot": {"share": share, "usd_per_device_hour": spot_usd_per_device_hour}}


def spot_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    share = cfg.spot.share
    label = f"spot {share:.0%}"
    if base.fleet.pricing.model != "on_demand":
        return _skip("spot", label, f"the baseline is priced {base.fleet.pricing.model}; the spot-share lever "
                     "blends on-demand and spot prices")
    if base.fleet.disaggregation is not None:
        return _skip("spot", label, "a disaggregated fleet's pools are priced separately; the spot-share lever "
                     "sets one per-device price")
    price, source = spot_price_usd_per_device_hour(base, cfg)
    if price is None:
        return _skip("spot", label, f"no spot price for {base.hardware.device} ({source}); set "
                     "spot.spot_usd_per_device_hour in the levers file")
    return LeverPlan("spot", label, spot_share_overrides(base, share, price),
                     note=f"${price:.3f}/device-h ({source}); reclaims at the 5-10 % monthly band")


def policy_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    target = cfg.policy.policy or ("prefill_first" if base.engine.policy == "chunked" else "chunked")
    label = f"policy {target}"
    if target == base.engine.policy:
        return _skip("policy", label, f"the baseline already runs {target}")
    overrides: dict[str, str | None] = {"engine.policy": target}
    if base.engine.max_num_batched_tokens is None:
        overrides["engine.max_num_batched_tokens"] = None  # each policy's own default budget
    return LeverPlan("policy", label, overrides)


def edge_offload_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    """Edge boards take requests while they have room (fleet.pools with pool_router edge_first);
    the rest spill to the baseline's cloud fleet, which is what resize shrinks (the first pool)."""
    e = cfg.edge_offload
    label = f"edge offload ({e.boards} x {e.device})"
    if base.fleet.pools is not None or base.fleet.disaggregation is not None:
        return _skip("edge_offload", label, "the baseline already has pools or disaggregation; the lever adds an "
                     "edge pool to a one-pool fleet")
    if base.fleet.moves:
        return _skip("edge_offload", label, "the baseline's fleet moves (autoscaler, spot, failures); the lever "
                     "compares fixed fleets")
    from simcost.perf.deployment import plan_deployment

    raw, f = to_dict(base), base.fleet
    cloud = {"name": "cloud", "hardware": raw["hardware"], "replicas": f.replicas, "site": "cloud",
             "price_usd_per_device_hour": f.price_usd_per_device_hour}
    edge = {"name": "edge", "hardware": {"device": e.device}, "site": "edge", "replicas": e.boards,
            "model": {"name": base.model.name, "weight_format": e.weight_format},
            "engine": {"max_num_seqs": e.max_num_seqs, "max_model_len": plan_deployment(base).max_model_len},
            "pricing": {"model": "owned", "capex_usd_per_device": e.capex_usd_per_device,
                        "usd_per_kwh": e.usd_per_kwh, "lifetime_years": e.lifetime_years}}
    site = raw["fleet"]["site"]
    sites = [{**site, "name": "cloud", "egress_usd_per_gb": site.get("egress_usd_per_gb") or 0.0},  # as the baseline
             {"name": "edge", "edge": True, "region": "edge", "client_rtt_s": e.client_rtt_s, "egress_usd_per_gb": 0.0}]
    overrides = {"fleet.pools": [cloud, edge], "fleet.sites": sites, "fleet.pool_router": "edge_first",
                 "fleet.replicas": 1, "fleet.price_usd_per_device_hour": None}
    problem = pools_problem(with_overrides(raw, overrides))
    if problem is not None:
        return _skip("edge_offload", label, problem)
    return LeverPlan("edge_offload", label, overrides,
                     note=f"{e.boards} owned boards at ${e.capex_usd_per_device:,.0f} over {e.lifetime_years:g} y, "
                          f"{e.weight_format}; cloud pool resized")


def pools_problem(raw: dict) -> str | None:
    """Why a fleet of pools cannot be placed (each pool's model on its devices), or None."""
    from simcost.perf.deployment import fleet_pools

    try:
        fleet_pools(scenario_from_dict(raw))
    except InputError as exc:
        return str(exc)
    return None


def speculative_plan(base: Scenario, cfg: LeversConfig) -> LeverPlan:
    label, overrides, why = speculative_overrides(base, cfg.speculative)
    if overrides is None:
        return _skip("speculative", label, why)
    return LeverPlan("speculative", label, overrides, note=why)


PLANNERS = {"fp8": weight_format_plan("fp8"), "int8": weight_format_plan("int8"), "int4": weight_format_plan("int4"),
            "smaller_model": smaller_model_plan, "prefix_caching": prefix_caching_plan,
            "response_cache": response_cache_plan, "prompt_trim": prompt_trim_plan, "spot": spot_plan,
            "policy": policy_plan, "edge_offload": edge_offload_plan, "speculative": speculative_plan}


def with_overrides(raw: dict, overrides: dict) -> dict:
    from simcost.analysis.sizing import with_option

    return with_option(raw, overrides)


def fit_problem(raw: dict) -> str | None:
    """Why a scenario (plain data) is refused: a bad value, a format the device lacks, a model
    that does not fit; None when it plans."""
    from simcost.perf.deployment import plan_deployment

    try:
        plan_deployment(scenario_from_dict(raw))
    except InputError as exc:
        return str(exc)
    return None


def plan_levers(base: Scenario, cfg: LeversConfig, only: tuple[str, ...] | None = None) -> list[LeverPlan]:
    """Every enabled lever (or those in `only`) applied to the baseline, each checked to plan."""
    for name in only or ():
        if name not in PLANNERS:
            raise InputError("--only", f"unknown lever '{name}'{closest(name, PLANNERS)}")
    raw = to_dict(base)
    free_device_defaults(raw.get("engine"), base.engine)  # a lever to a static batcher: the preset's 256
    plans = []
    for name, planner in PLANNERS.items():
        if (only and name not in only) or not getattr(cfg, name).enabled:
            continue
        plan = planner(base, cfg)
        if plan.skip_reason is None and plan.overrides:
            problem = fit_problem(with_overrides(raw, plan.overrides))
            if problem:
                plan = replace(plan, skip_reason=problem)
        plans.append(plan)
    return plans


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
    from simcost.metrics.summary import latencies, stats
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


# --- outputs ------------------------------------------------------------------------------------

CSV_COLUMNS = ("rank", "lever", "label", "status", "replicas", "usd_per_hour", "usd_per_month",
               "saving_usd_per_month", "saving_fraction", "annual_saving_usd", "usd_per_1m_output_tokens",
               "p50_ttft_s", "p99_ttft_s", "p99_tpot_s", "slo_attainment", "meets_slo", "requests_per_s",
               "effort_weeks", "quality_risk", "roi", "prefix_token_hit_rate", "cache_served_requests", "note", "reason")


def format_study(result: LeverStudy) -> str:
    fleet = ("each row at its smallest fleet meeting the SLO" if result.mode == "resize"
             else f"the scenario's {result.scenario_replicas} replicas")
    lines = [f"{result.scenario}: levers one at a time, {fleet}, {result.seeds} seed(s); "
             f"ROI = annual saving x (1 - risk) / (effort x ${result.usd_per_engineer_week:,.0f}/week)"]
    if result.mode == "resize" and result.rows[0]["replicas"] != result.scenario_replicas:
        lines.append(f"(the baseline is right-sized from the scenario's {result.scenario_replicas} replicas "
                     f"to {result.rows[0]['replicas']})")
    lines.append("")
    width = max(len(r["label"]) for r in result.rows)
    lines.append(f"{'rank':>4}  {'lever':<{width}}  {'repl':>4}  {'$/month':>9}  {'saving/mo':>9}  {'saving':>7}  "
                 f"{'$/1M out':>8}  {'p99 TTFT ms':>11}  {'p99 TPOT ms':>11}  {'SLO att.':>8}  {'SLO':>3}  "
                 f"{'effort wk':>9}  {'risk':>4}  {'ROI':>7}  note")
    skipped = []
    for r in result.rows:
        if r["status"] != "ok":
            skipped.append(f"  {r['label']}: {r['status']}: {r['reason']}")
            continue
        f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"{f(r['rank'], 'd'):>4}  {r['label']:<{width}}  {r['replicas']:>4}  {r['usd_per_month']:>9,.0f}  "
                     f"{r['saving_usd_per_month']:>9,.0f}  {f(r['saving_fraction'], '.1%'):>7}  "
                     f"{f(r['usd_per_1m_output_tokens'], '.3f'):>8}  {f(_ms(r['p99_ttft_s']), ',.1f'):>11}  "
                     f"{f(_ms(r['p99_tpot_s']), ',.1f'):>11}  {f(r['slo_attainment'], '.1%'):>8}  "
                     f"{'yes' if r['meets_slo'] else 'no':>3}  {f(r['effort_weeks'], 'g'):>9}  "
                     f"{f(r['quality_risk'], '.2f'):>4}  {f(r['roi'], ',.2f'):>7}  {r['note']}")
    if skipped:
        lines += ["", "not run:"] + skipped
    lines.append(f"\nsimulations: {result.simulations}")
    return "\n".join(lines)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def write_outputs(result: LeverStudy, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = out_dir / "levers.csv", out_dir / "result.json", out_dir / "levers.png"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)
    meta = {"command": "levers", "scenario": result.scenario, "mode": result.mode, "seeds": result.seeds,
            "scenario_replicas": result.scenario_replicas,
            "usd_per_engineer_week": result.usd_per_engineer_week, "hours_per_month": HOURS_PER_MONTH,
            "simulations": result.simulations, "roi": "annual_saving_usd * (1 - quality_risk) / "
            "(effort_weeks * usd_per_engineer_week)", "rows": result.rows}
    json_path.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    plot_levers(result, png_path)
    return [csv_path, json_path, png_path]


def _json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def plot_levers(result: LeverStudy, path: Path) -> Path:
    """Bar panels over the levers that ran, in rank order: $/month saving, ROI and p99 TTFT
    (the baseline's dashed); hatched bars miss the SLO."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r["status"] == "ok" and r["lever"] != "baseline"]
    baseline = result.rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * max(len(rows), 3) + 1.6), sharey=True)
    y = np.arange(len(rows))
    panels = (("saving_usd_per_month", 1.0, r"saving vs baseline (\$/month)"),
              ("roi", 1.0, r"ROI (\$ saved in a year per \$ of engineering)"),
              ("p99_ttft_s", 1e3, "p99 TTFT (ms; dashed: baseline)"))
    for ax, (key, scale, title) in zip(axes, panels):
        values = [(r[key] or 0.0) * scale for r in rows]
        colors = ["tab:blue" if key == "p99_ttft_s" else "tab:green" if v >= 0 else "tab:red" for v in values]
        for bar, r in zip(ax.barh(y, values, color=colors), rows):
            if not r["meets_slo"]:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
        if key == "p99_ttft_s" and baseline.get(key) is not None:
            ax.axvline(baseline[key] * scale, color="black", linestyle="--", linewidth=1)
        else:
            ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [r["label"] for r in rows])
    axes[0].invert_yaxis()
    fleet = "right-sized fleets" if result.mode == "resize" else "the scenario's fleet"
    fig.suptitle(f"{result.scenario}: levers ranked by ROI, {fleet} (hatched: misses the SLO)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
