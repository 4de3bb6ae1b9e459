"""Each lever of `simcost levers` (simcost.analysis.levers) as a plan: the scenario overrides
and request transform that apply it to a baseline, or why it cannot apply."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from simcost.analysis.levers_config import SMALLER_MODEL, LeversConfig
from simcost.analysis.speculative_lever import speculative_overrides
from simcost.errors import InputError, closest
from simcost.scenario.deployment import free_device_defaults
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import to_dict

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
        from simcost.catalog.types import BYTES_PER_ELEMENT

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
