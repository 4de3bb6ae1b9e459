"""Per-request records and the run summary, with vLLM's benchmark definitions.

- TTFT = first output token time - arrival; E2EL = last token time - arrival.
- TPOT = (E2EL - TTFT) / (output_tokens - 1), for requests with more than one output token.
- ITL = gaps between consecutive output tokens of a request, pooled over requests.
Latency statistics cover the *measured* requests: those arriving at or after warmup_s that
completed (`latency_covers` gives how many, of how many that arrived). SLO attainment covers every
request that arrived at or after warmup_s: completed, rejected and still in flight when drain_s
cut the run, the last two counting as not met (`slo_outcomes`). Throughput and goodput divide by the measured window: from the first measured
arrival to the last measured completion (as `vllm bench serve` divides by the benchmark's
duration). Costs cover the whole run, [0, horizon]: the fleet is paid for all of it.

Cost per request, workload and tenant follows the scenario's `cost` policy (`simcost.cost.ledger`):
`allocated_usd` is the share of busy steps; `unallocated_share_usd` the share of idle time,
minimum charges and unused commitment under chargeback (0 under showback, where those dollars
are a line of their own); `total_usd` the two together. A fleet of pools (fleet.pools) also
pays egress for the response bytes leaving each site, allocated to the request that sent them
(its own category, `egress`, inside allocated_usd), and its summary adds by_site, network (the
latency users see, round trip included) and pool_routing (`pools_summary`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simcost.cost.ledger import Bill
from simcost.cost.pricing import usd_per_replica_hour
from simcost.cost.step_log import StepArrays
from simcost.metrics.run_summary import Breakdowns, LatencyStats, PerItem, PoolsSummary, RunSummary
from simcost.metrics.token_gaps import inter_token_latencies
from simcost.perf.deployment import Deployment, Pool
from simcost.scenario.fleet_plan import fleet_plan, pool_routed
from simcost.scenario.scenario import Scenario
from simcost.scenario.schema import to_dict
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED, IN_FLIGHT, REJECT_REASONS, REJECTED, STATUS_NAMES, RequestTable
from simcost.workload.token_stats import ALPHA

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def stats(values: np.ndarray) -> LatencyStats:
    values = values[~np.isnan(values)]
    if not len(values):
        return {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "count": 0}
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, list(PERCENTILES.values())))
    return {"mean": float(values.mean()), "p50": p50, "p90": p90, "p95": p95, "p99": p99, "count": int(len(values))}


def latencies(table: RequestTable) -> dict[str, np.ndarray]:
    """TTFT, TPOT and E2EL per request (NaN where not defined)."""
    return latency_columns(table.arrival_s, table.first_token_s, table.finish_s, table.output_tokens)


def latency_columns(arrival_s: np.ndarray, first_token_s: np.ndarray, finish_s: np.ndarray,
                    output_tokens: np.ndarray) -> dict[str, np.ndarray]:
    ttft = first_token_s - arrival_s
    e2el = finish_s - arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output_tokens > 1, (e2el - ttft) / (output_tokens - 1), np.nan)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2el_s": e2el}


def itl_stats(table: RequestTable, measured: np.ndarray) -> LatencyStats:
    """ITL over the measured requests: exact from the token times when the table keeps them,
    else from the streaming histogram (percentiles within ALPHA; it also covers requests still in
    flight at a drain_s cut, simcost.workload.token_stats)."""
    if table.streamed is None:
        return stats(inter_token_latencies(table, measured))
    itl = table.streamed.itl
    if not itl.count:
        return stats(np.zeros(0))
    p50, p90, p95, p99 = itl.percentiles(list(PERCENTILES.values()))
    return {"mean": float(itl.totals[0] / itl.totals[1]), "p50": p50, "p90": p90, "p95": p95, "p99": p99,
            "count": itl.count, "relative_error": ALPHA}


SLO_KEYS = ("ttft_s", "tpot_s", "e2el_s")


def slo_limits_by_entry(scenario: Scenario) -> dict[str, np.ndarray]:
    """Each workload entry's SLO limits (NaN: none): its own slo where set, else the scenario's."""
    entries = scenario.workload.entries()
    limits = {}
    for key in SLO_KEYS:
        per_entry = [getattr(e.slo, key) if e.slo is not None and getattr(e.slo, key) is not None
                     else getattr(scenario.slo, key) for e in entries]
        limits[key] = np.array([np.nan if v is None else v for v in per_entry], dtype=np.float64)
    return limits


def slo_limits(scenario: Scenario, workload: np.ndarray) -> dict[str, np.ndarray]:
    """Each request's SLO limits (NaN: none), given each one's workload entry (the RequestTable
    column): its workload's slo where set, else the scenario's."""
    by_entry = slo_limits_by_entry(scenario)
    if len(scenario.workload.entries()) == 1:  # one entry: its limits, read-only, not a float per request each
        return {key: np.broadcast_to(limits[0], len(workload)) for key, limits in by_entry.items()}
    return {key: limits[workload] for key, limits in by_entry.items()}


def meets_slo(limits: dict[str, np.ndarray], lat: dict[str, np.ndarray]) -> np.ndarray:
    ok = np.ones(len(lat["ttft_s"]), dtype=bool)
    for key in SLO_KEYS:
        within = (lat[key] <= limits[key]) | np.isnan(limits[key])
        if key == "tpot_s":
            within |= np.isnan(lat[key])  # a one-token request has no TPOT to miss
        ok &= within
    return ok


def slo_outcomes(scenario: Scenario, table: RequestTable, lat: dict[str, np.ndarray], horizon_s: float) -> dict:
    """Each request judged against its SLO at the end of the run: `met` (completed within its
    limits), `missed` (completed outside them, rejected, or still in flight past a limit: no first
    token by arrival + ttft_s, or unfinished by arrival + e2el_s) and `open` (in flight, no limit
    passed yet: it may still meet the SLO). A run cut by drain_s leaves requests in flight; leaving
    them out would overstate attainment, so attainment counts them as not met (`open` bounds how
    much higher it could have been)."""
    limits = slo_limits(scenario, table.workload)
    completed, in_flight = table.status == COMPLETED, table.status == IN_FLIGHT
    met = completed & meets_slo(limits, lat)
    age_s = horizon_s - table.arrival_s
    no_first_token = np.isnan(table.first_token_s)
    late_ttft = np.where(no_first_token, age_s > limits["ttft_s"], lat["ttft_s"] > limits["ttft_s"])
    past_limit = late_ttft | (age_s > limits["e2el_s"])  # NaN limits compare False: no limit to pass
    open_ = in_flight & ~past_limit
    return {"met": met, "open": open_, "missed": ~met & ~open_}


def attainment_keys(measured_arrived: np.ndarray, outcomes: dict) -> dict:
    """SLO attainment over every measured request that arrived (completed, rejected, in flight),
    and its upper bound had every open request gone on to meet the SLO."""
    n = int(measured_arrived.sum())
    met = int((outcomes["met"] & measured_arrived).sum())
    open_ = int((outcomes["open"] & measured_arrived).sum())
    return {"slo_attainment": met / n if n else None,
            "slo_outcomes": {"of": n, "met": met, "missed": n - met - open_, "open": open_,
                             "attainment_upper_bound": (met + open_) / n if n else None}}


def summarize(scenario: Scenario, dep: Deployment, table: RequestTable, steps: StepArrays, bill: Bill,
              horizon_s: float, session_counts: dict | None = None, pools: list[Pool] | None = None,
              pool_router=None, prefix_cache: dict[str, Any] | None = None, per_item: bool = False,
              measured_fraction: tuple[float, float] | None = None, api: dict[str, Any] | None = None,
              cascade: dict[str, Any] | None = None, response_cache: dict[str, Any] | None = None,
              budget: dict[str, Any] | None = None) -> RunSummary:
    """The run's summary (summary.json), every section of it; `prefix_cache` is the replicas'
    prefix-cache counts (None without prefix caching), `per_item` whether the model is served per item,
    `measured_fraction` the shares of step time from this device's measured kernels and from
    another GPU's kernels scaled to it (perf.model kernels only),
    `api` the api pools' section (simcost.cluster.api_pool.ApiPools.summary; None without them),
    `cascade` fleet.cascade's (simcost.cluster.cascade.Cascade.summary), `response_cache`
    fleet.response_cache's (simcost.cluster.response_cache.ResponseCache.summary)."""
    pools = pools or [Pool("serve", dep, scenario.fleet.num_replicas)]
    lat = latencies(table)
    completed = table.status == COMPLETED
    measured_arrived = table.arrival_s >= scenario.warmup_s
    measured = completed & measured_arrived
    window_s = _window_s(table, measured)
    outcomes = slo_outcomes(scenario, table, lat, horizon_s)
    good = measured & outcomes["met"]
    out_tokens = int(table.generated.sum())
    in_tokens = int(table.input_tokens[~np.isnan(table.first_token_s)].sum())  # prompts prefilled
    num_completed = int(completed.sum())
    busy_s = float(bill.replica_busy_s.sum())
    replica_s = float(bill.roster.alive_s.sum()) if bill.roster is not None else scenario.fleet.num_replicas * horizon_s
    rejected = table.status == REJECTED
    attained = attainment_keys(measured_arrived, outcomes)
    attainment = attained["slo_attainment"]
    summary: RunSummary = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "model": dep.model.key,
        "device": "+".join(dict.fromkeys(p.deployment.device.key for p in pools)),
        "tensor_parallel": dep.tensor_parallel,
        "replicas": scenario.fleet.num_replicas,
        "fleet": fleet_summary(bill, horizon_s, table),
        "router": scenario.fleet.router,
        "kv_blocks_per_replica": dep.num_kv_blocks,
        "pools": pool_rows(pools, steps, bill, scenario),
        "horizon_s": horizon_s,
        "measured_window_s": window_s,
        # latency percentiles and throughput: the completed requests among those measured
        "latency_covers": {"requests": "completed, arrived at or after warmup_s",
                           "count": int(measured.sum()), "of": int(measured_arrived.sum())},
        "ttft_s": stats(lat["ttft_s"][measured]),
        "tpot_s": stats(lat["tpot_s"][measured]),
        "itl_s": itl_stats(table, measured),
        "e2el_s": stats(lat["e2el_s"][measured]),
        "throughput": {
            "requests_per_s": _rate(measured.sum(), window_s),
            "output_tokens_per_s": _rate(table.output_tokens[measured].sum(), window_s),
            "total_tokens_per_s": _rate((table.input_tokens[measured] + table.output_tokens[measured]).sum(), window_s),
        },
        "goodput_requests_per_s": _rate(good.sum(), window_s),
        "slo_attainment": attainment,
        "slo_outcomes": attained["slo_outcomes"],
        "meets_slo": bool(attainment is not None and attainment >= scenario.slo.attainment and not rejected.any()),
        "slo": to_dict(scenario.slo),
        "utilization": busy_s / replica_s if replica_s > 0 else 0.0,  # busy share of the replica-seconds paid for
        "mean_batch_tokens": float(steps.step_tokens.mean()) if len(steps.step_tokens) else 0.0,
        "num_steps": int(len(steps.step_tokens)),
        "preemptions": int(table.num_preemptions.sum()),
        "cost": {
            "usd_per_hour": fleet_usd_per_hour(bill, horizon_s, pools, scenario),
            "total_usd": bill.total_usd,
            "busy_usd": bill.busy_usd,
            "idle_usd": bill.idle_usd,
            "usd_per_request": bill.total_usd / num_completed if num_completed else None,
            "usd_per_1m_output_tokens": bill.total_usd / out_tokens * 1e6 if out_tokens else None,
            "usd_per_1m_input_tokens": bill.total_usd / in_tokens * 1e6 if in_tokens else None,
            **_run_per_session(table, bill),
            **_pricing_keys(bill),
            "allocation": _allocation_keys(scenario, bill),
            "by_category": _cost_by_category(bill),
        },
        "energy": _energy_keys(bill, num_completed),
        "overload": overload_keys(table),
        "requests": {
            "arrived": int(table.num_requests),
            "completed": num_completed,
            "rejected": int(rejected.sum()),
            "in_flight": int((table.status == IN_FLIGHT).sum()),
            "measured": int(measured.sum()),
            "rejected_by_reason": {REJECT_REASONS[c]: int((table.reject_reason[rejected] == c).sum())
                                   for c in np.unique(table.reject_reason[rejected])},
        },
    }
    summary.update(breakdowns(scenario, table, lat, measured, outcomes["met"], bill, session_counts or {}))
    if pool_routed(fleet_plan(scenario)):
        summary.update(pools_summary(scenario, pools, table, lat, measured, bill, pool_router))
    if getattr(dep, "expert_parallel", 1) > 1:
        summary["expert_parallel"] = {"experts_over_devices": dep.expert_parallel,
                                      "attention_groups": dep.data_parallel}
    if prefix_cache is not None:
        summary["prefix_cache"] = prefix_cache
    if measured_fraction is not None:
        summary["step_time_measured_fraction"] = measured_fraction[0]
        if measured_fraction[1] > 0:  # borrowed tables (simcost.perf.kernel_scaling)
            summary["step_time_scaled_fraction"] = measured_fraction[1]
    if api is not None:
        summary["api"] = api
    if cascade is not None:
        summary["cascade"] = cascade
    if response_cache is not None:
        summary["response_cache"] = response_cache
    if budget is not None:  # cost.budget's alerts, from the time series (simcost.metrics.budget)
        summary["budget"] = budget
    if scenario.cost.outcomes is not None:
        from simcost.metrics.budget import unit_economics

        summary["unit_economics"] = unit_economics(scenario, table, bill)
    if per_item:
        summary["per_item"] = per_item_summary(scenario, dep, table, summary, bill)
    return summary


MIN_OUTPACED_REQUESTS = 10  # fewer extra requests than this is noise, not a growing queue


def overload_keys(table: RequestTable) -> dict:
    """Did arrivals outpace the fleet? Over the second half of the arrivals, requests arriving
    vs leaving (completed, or rejected on arrival). A fleet that keeps up sees about as many
    leave as arrive (Little's law: its backlog stays the same); one that cannot sees its
    backlog grow with the run, so its latency figures measure the run's length, not the fleet.
    Flagged when at least 10 % (and 10) more arrived than left."""
    n = table.num_requests
    if not n:
        return {"arrivals_outpaced_completions": False, "arrivals_per_s": None, "departures_per_s": None,
                "backlog_at_arrivals_end": 0}
    arrival_s, end_s = table.arrival_s[:n], float(table.arrival_s[:n].max())
    half_s = end_s / 2
    completed, rejected = table.status[:n] == COMPLETED, table.status[:n] == REJECTED

    def left_by(t_s: float) -> int:  # completed, or rejected on arrival, by t_s
        return int((completed & (table.finish_s[:n] <= t_s)).sum() + (rejected & (arrival_s <= t_s)).sum())

    arrived_late = int((arrival_s > half_s).sum())
    left_late = left_by(end_s) - left_by(half_s)
    span_s = end_s - half_s
    outpaced = arrived_late - left_late >= max(MIN_OUTPACED_REQUESTS, 0.1 * arrived_late)
    return {"arrivals_outpaced_completions": bool(outpaced),
            "arrivals_per_s": arrived_late / span_s if span_s > 0 else None,
            "departures_per_s": left_late / span_s if span_s > 0 else None,
            "backlog_at_arrivals_end": n - left_by(end_s)}


def pools_summary(scenario: Scenario, pools: list[Pool], table: RequestTable, lat: dict, measured: np.ndarray,
                  bill: Bill, pool_router) -> PoolsSummary:
    """fleet.pools: what each site served and sent out, the latency its users saw (`network`), and
    the pool router's decisions.

    network: vLLM's TTFT and E2EL (the rest of the summary) are server-side, from the request's
    arrival at the site to its first / last token leaving it. A user also waits for the request to
    reach the site and the tokens to come back: one client_rtt_s of the serving site, added once.
    So ttft_end_to_end_s = TTFT + rtt and e2el_end_to_end_s = E2EL + rtt (TPOT and ITL unchanged:
    every token is delayed alike), over the measured requests."""
    served = served_pool(table, bill.roster.pool)
    rtt = np.array([p.own_scenario.fleet.site.client_rtt_s for p in pools])
    rtt_s = np.where(served >= 0, rtt[np.maximum(served, 0)], np.nan)
    egress = bill.request_egress_usd if bill.request_egress_usd is not None else np.zeros(table.num_requests)
    bytes_per_token = scenario.fleet.bytes_per_token
    sites: dict[str, dict[str, Any]] = {}
    for k, p in enumerate(pools):
        site = p.own_scenario.fleet.site
        row = sites.setdefault(site.name, {"region": site.region, "edge": site.edge, "client_rtt_s": site.client_rtt_s,
                                           "pools": [], "requests_served": 0, "egress_gb": 0.0, "egress_usd": 0.0})
        mine = served == k
        row["pools"].append(p.name)
        row["requests_served"] += int((mine & (table.status == COMPLETED)).sum())
        row["egress_gb"] += float(table.generated[mine].sum() * bytes_per_token / 1e9)
        row["egress_usd"] += float(egress[mine].sum())
    network = {"rtt_s": stats(rtt_s[measured]),
               "ttft_end_to_end_s": stats((lat["ttft_s"] + rtt_s)[measured]),
               "e2el_end_to_end_s": stats((lat["e2el_s"] + rtt_s)[measured]),
               "basis": "server-side TTFT/E2EL + the serving site's client_rtt_s (request up, tokens down)"}
    return {"by_site": sites, "network": network,
            "pool_routing": pool_router.counts() if pool_router is not None else None,
            "bytes_per_token": bytes_per_token}


def served_pool(table: RequestTable, pool_of_replica: np.ndarray) -> np.ndarray:
    """The pool of the replica each request was last on (-1: never placed)."""
    replica = table.replica[:table.num_requests]
    return np.where(replica >= 0, pool_of_replica[np.maximum(replica, 0)], -1)


def pool_rows(pools: list[Pool], steps: StepArrays, bill: Bill, scenario: Scenario) -> list[dict]:
    """Each pool's replicas and what they cost: `usd` is its replicas' running charges plus their
    minimum-charge top-ups (pools add up to the bill less any unused fleet-wide commitment);
    `allocated_usd` what its steps cost, handed to requests; `replicas` the pool's size at the
    start, `replica_hours` what it had over the run; `usd_per_hour` its starting size at its
    pricing model's full-utilisation rate (the fleet's bill per hour is cost.usd_per_hour)."""
    ra = bill.roster
    rows = []
    for k, p in enumerate(pools):
        mine = ra.pool == k
        busy_s, alive_s = float(bill.replica_busy_s[mine].sum()), float(ra.alive_s[mine].sum())
        named = {} if p.scenario is None else {  # fleet.pools: its name, model, site and pricing
            "name": p.name, "model": p.deployment.model.key, "weight_format": p.deployment.weight_format,
            "site": p.scenario.fleet.site.name, "pricing_model": p.scenario.fleet.pricing.model}
        rows.append({**named, "role": p.role, "replicas": p.replicas, "device": p.deployment.device.key,
                     "tensor_parallel": p.deployment.tensor_parallel, "kv_blocks_per_replica": p.deployment.num_kv_blocks,
                     "usd_per_hour": p.replicas * replica_usd_per_hour(p, scenario),
                     "replica_hours": alive_s / S_PER_HOUR,
                     "usd": pool_hours_usd(bill, mine) + float(bill.tariff.minimum_usd[mine].sum()),
                     "allocated_usd": float(bill.step_usd[mine[steps.step_replica]].sum()),
                     "utilization": busy_s / alive_s if alive_s > 0 else 0.0})
    return rows


def pool_hours_usd(bill: Bill, mine: np.ndarray) -> float:
    """The running charge of the replicas where mine is set, summed over their hours."""
    hours, entries = bill.hours.select(mine)
    return hours.total(bill.hour_usd[entries])


def fleet_usd_per_hour(bill: Bill, horizon_s: float, pools: list[Pool], scenario: Scenario) -> float:
    """The fleet's rate: what its pricing model charged over the run, per hour (spot, reserved,
    savings-plan and owned fleets pay their own rates, minimum charges and unused commitment
    included, not the on-demand list price); the pools' list rates for a run with no time."""
    if horizon_s > 0:
        return bill.total_usd / horizon_s * S_PER_HOUR
    return sum(p.replicas * replica_usd_per_hour(p, scenario) for p in pools)


def replica_usd_per_hour(pool: Pool, scenario: Scenario) -> float:
    """A replica's hourly rate under its pricing model at full utilisation
    (simcost.pricing.usd_per_replica_hour): its own pool's section (fleet.pools), else the
    scenario's fleet (spot, reserved, ... rather than the on-demand list price)."""
    fleet = scenario.fleet if pool.scenario is None else pool.scenario.fleet
    return usd_per_replica_hour(fleet, pool.deployment)


def fleet_summary(bill: Bill, horizon_s: float, table: RequestTable) -> dict:
    """How the fleet moved: replicas over the run, how they ended, requests retried."""
    ra = bill.roster
    ends = {why: ra.end.count(why) for why in sorted(set(ra.end)) if why}
    return {"replicas_started": int(len(ra.pool)), "replicas_at_end": int(sum(1 for why in ra.end if not why)),
            "replica_hours": float(ra.alive_s.sum() / S_PER_HOUR),
            "mean_replicas": float(ra.alive_s.sum() / horizon_s) if horizon_s > 0 else 0.0,
            "spot_replicas_started": int(ra.spot.sum()), "ended": ends,
            "requests_retried": int((table.num_retries > 0).sum()),
            **({"warm_pool": warm_pool_summary(bill)} if ra.warm_pools else {})}


def warm_pool_summary(bill: Bill) -> dict:
    """fleet.warm_pool: per pool its size and state; over the fleet, on-demand replicas that took
    a warm node (hits) or found the pool empty and started cold (misses), warm nodes requested,
    their node-hours in the pool, and what they cost (`usd`, the warm_pool category; `standby_usd`
    its in-pool part, the rest their provisioning)."""
    ra = bill.roster
    w = ra.warm
    hits, misses = int(ra.warm_hit.sum()), int(sum(ra.warm_misses.values()))
    return {"pools": [{"pool": k, "size": size, "state": state} for k, (size, state) in sorted(ra.warm_pools.items())],
            "hits": hits, "misses": misses, "hit_rate": hits / (hits + misses) if hits + misses else None,
            "nodes_requested": int(len(w.pool)), "standby_node_hours": float(w.in_pool_s.sum() / S_PER_HOUR),
            "usd": bill.warm_pool_usd, "standby_usd": bill.warm_standby_usd}


def breakdowns(scenario: Scenario, table: RequestTable, lat: dict, measured: np.ndarray, good: np.ndarray,
               bill: Bill, session_counts: dict) -> Breakdowns:
    """Per workload (when the scenario mixes several), per tenant (when there are several), and
    session / closed-loop accounting (when the workload has them)."""
    out: Breakdowns = {}
    workload = scenario.workload
    arrived = table.arrival_s >= scenario.warmup_s
    if workload.mix is not None:
        out["by_workload"] = {workload.entry_name(i): {"tenant": entry.tenant, "priority": entry.priority,
                                                       **_group(table.workload == i, table, lat, measured, good, bill, arrived)}
                              for i, entry in enumerate(workload.entries())}
    if len(table.tenant_names) > 1:
        out["by_tenant"] = {name: _group(table.tenant == code, table, lat, measured, good, bill, arrived)
                            for code, name in enumerate(table.tenant_names)}
    tags = sorted({tag for entry in workload.entries() for tag in entry.tags})
    if tags:  # a request carries its workload's tags; groups overlap when a workload has several
        out["by_tag"] = {tag: _group(np.isin(table.workload, [i for i, e in enumerate(workload.entries()) if tag in e.tags]),
                                     table, lat, measured, good, bill, arrived) for tag in tags}
    if any(e.session is not None for e in workload.entries()):
        out["sessions"] = session_summary(scenario, table, session_counts)
    if any(e.clients is not None for e in workload.entries()):
        out["closed_loop"] = {"users": sum(e.clients.users for e in workload.entries() if e.clients),
                              "users_active": int(len(np.unique(table.user[table.user >= 0]))),
                              "requests_sent_after_first": session_counts.get("user_requests_sent", 0),
                              "requests_cut_at_end": session_counts.get("user_requests_cut", 0)}
    return out


def _group(rows: np.ndarray, table: RequestTable, lat: dict, measured: np.ndarray, good: np.ndarray,
           bill: Bill, measured_arrived: np.ndarray) -> dict:
    m = rows & measured
    arrived = rows & measured_arrived  # attainment covers its in-flight and rejected requests too
    completed = int((rows & (table.status == COMPLETED)).sum())
    return {"arrived": int(rows.sum()), "completed": completed, "rejected": int((rows & (table.status == REJECTED)).sum()),
            "ttft_s": stats(lat["ttft_s"][m]), "tpot_s": stats(lat["tpot_s"][m]), "e2el_s": stats(lat["e2el_s"][m]),
            "slo_attainment": float(good[arrived].sum() / arrived.sum()) if arrived.any() else None,
            "output_tokens": int(table.generated[rows].sum()),
            **group_cost(rows, table, bill)}


def group_cost(rows: np.ndarray, table: RequestTable, bill: Bill) -> dict:
    """A group's dollars under the run's cost policy, and its unit economics (per completed
    request, per 1M prompt tokens prefilled and output tokens generated, per session)."""
    allocated_usd = float(bill.request_usd[rows].sum())
    share_usd = float(bill.unallocated_share_usd[rows].sum()) if bill.unallocated_share_usd is not None else 0.0
    total_usd = allocated_usd + share_usd
    completed = int((rows & (table.status == COMPLETED)).sum())
    in_tokens = int(table.input_tokens[rows & ~np.isnan(table.first_token_s)].sum())
    out_tokens = int(table.generated[rows].sum())
    return {"allocated_usd": allocated_usd, "unallocated_share_usd": share_usd, "total_usd": total_usd,
            "usd_per_request": total_usd / completed if completed else None,
            "usd_per_1m_input_tokens": total_usd / in_tokens * 1e6 if in_tokens else None,
            "usd_per_1m_output_tokens": total_usd / out_tokens * 1e6 if out_tokens else None,
            **_per_session(total_usd, _num_sessions(table, rows))}


def _num_sessions(table: RequestTable, rows: np.ndarray) -> int:
    """Distinct sessions with a request among rows (synthetic sessions or a trace's session column)."""
    return int(len(np.unique(table.session[rows & (table.session >= 0)])))


def _run_per_session(table: RequestTable, bill: Bill) -> dict:
    """$ per session, fully loaded like the run's other unit costs: the bill x the session
    requests' share of the allocated cost (other requests may share the fleet), over the sessions."""
    in_session = table.session >= 0
    num_sessions = _num_sessions(table, in_session)
    if not num_sessions:
        return {}
    allocated_usd = bill.request_usd.sum()
    share = bill.request_usd[in_session].sum() / allocated_usd if allocated_usd > 0 else in_session.mean()
    return _per_session(bill.total_usd * float(share), num_sessions)


def _per_session(usd: float, num_sessions: int) -> dict:
    return {"sessions": num_sessions, "usd_per_session": usd / num_sessions} if num_sessions else {}


def _allocation_keys(scenario: Scenario, bill: Bill) -> dict:
    """The policy that split the bill, and where the unallocated dollars went."""
    cost = scenario.cost
    tokens = cost.allocation == "tokens"
    chargeback = cost.unallocated == "chargeback"
    if not chargeback or bill.spread_usd == 0:
        basis = None
    else:
        basis = "allocated_cost" if bill.request_usd.sum() > 0 else "equal_over_completed_requests"
    return {"policy": cost.allocation, "prefill_weight": cost.prefill_weight if tokens else None,
            "decode_weight": cost.decode_weight if tokens else None, "unallocated": cost.unallocated,
            "spread_usd": bill.spread_usd, "spread_basis": basis, "unallocated_left_usd": bill.unallocated_left_usd}


def _cost_by_category(bill: Bill) -> dict:
    """The bill by what it paid for; the categories sum to total_usd."""
    return {"busy": float(bill.request_usd.sum()) - bill.egress_usd - bill.api_usd - bill.cache_usd, "idle": bill.idle_usd, "minimum_charge": bill.minimum_usd,
            "unused_commitment": bill.unused_commitment_usd,
            # replicas starting cold (fleet.cold_start): 0 for a warm fleet
            "provisioning": bill.provisioning_usd, "loading": bill.loading_usd,
            # replicas scaled down or given notice, waiting for their last requests: 0 for a static fleet
            "draining": bill.draining_usd,
            **({"egress": bill.egress_usd} if bill.request_egress_usd is not None else {}),  # fleet.pools only
            **({"api": bill.api_usd} if bill.request_api_usd is not None else {}),  # fleet.api_pools only
            # fleet.response_cache only: embedding calls (allocated) and the store's hosting
            **({"response_cache_lookups": bill.cache_usd, "response_cache_store": bill.cache_store_usd}
               if bill.request_cache_usd is not None else {}),
            # warm nodes provisioning and in the pool (fleet.warm_pool only)
            **({"warm_pool": bill.warm_pool_usd} if bill.roster is not None and bill.roster.warm_pools else {})}


def session_summary(scenario: Scenario, table: RequestTable, counts: dict) -> dict:
    """Synthetic sessions, judged by the last turn each one sent: completed (its final turn
    completed), ended by a rejection, or unfinished (the next turn was cut at duration_s, or the
    run stopped first); started = completed + ended_by_rejection + unfinished."""
    with_spec = np.array([e.session is not None for e in scenario.workload.entries()])[table.workload]
    rows = np.flatnonzero(with_spec & (table.session >= 0))
    if not len(rows):
        return {"started": 0, "completed": 0, "ended_by_rejection": 0, "unfinished": 0, "turns_sent": 0,
                "turns_cut_at_end": counts.get("turns_cut", 0), "mean_turns_sent": None}
    order = np.lexsort((table.turn[rows], table.session[rows]))
    rows = rows[order]
    last = rows[np.r_[table.session[rows][1:] != table.session[rows][:-1], True]]  # each session's last turn
    completed = (table.status[last] == COMPLETED) & (table.turn[last] == table.turns[last] - 1)
    rejected = table.status[last] == REJECTED
    return {"started": int(len(last)), "completed": int(completed.sum()), "ended_by_rejection": int(rejected.sum()),
            "unfinished": int((~completed & ~rejected).sum()), "turns_sent": int(len(rows)),
            "turns_cut_at_end": counts.get("turns_cut", 0), "mean_turns_sent": float(len(rows) / len(last)),
            "mean_shared_prefix_fraction": float(table.shared_prefix_tokens[rows].sum() / table.input_tokens[rows].sum())}


def _pricing_keys(bill: Bill) -> dict:
    t = bill.tariff
    return {
        "pricing_model": t.model,
        "pricing_category": t.category,
        "allocated_usd": float(bill.request_usd.sum()),
        "unallocated_usd": bill.unallocated_usd,
        "minimum_charge_usd": bill.minimum_usd,
        "unused_commitment_usd": bill.unused_commitment_usd,
        "effective_usd_per_replica_hour": t.effective_usd_per_hour,
        "break_even_utilization": t.break_even_utilization,
    }


def _energy_keys(bill: Bill, num_completed: int) -> dict:
    """kWh include the PUE; u = 1 while a step runs (see simcost.cost.energy)."""
    e = bill.energy
    per_1k = 1000.0 / num_completed if num_completed else None
    return {
        "kwh": e.total_kwh,
        "kwh_per_1k_requests": e.total_kwh * per_1k if per_1k else None,
        "gco2": e.total_gco2,
        "gco2_per_1k_requests": e.total_gco2 * per_1k if per_1k else None,
        "pue": e.pue,
        "grid_gco2_per_kwh": e.grid_gco2_per_kwh,
        "basis": "assumption: power idle_w + u (peak_w - idle_w), u = 1 in steps; site PUE and grid intensity",
    }


def _window_s(table: RequestTable, measured: np.ndarray) -> float:
    if not measured.any():
        return 0.0
    return float(table.finish_s[measured].max() - table.arrival_s[measured].min())


def _rate(count, window_s: float) -> float | None:
    return float(count) / window_s if window_s > 0 else None


def records(scenario: Scenario, table: RequestTable, request_usd: np.ndarray,
            unallocated_share_usd: np.ndarray | None = None, rows: slice | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One row per request, as columns (written to requests.csv / .parquet). cost_usd is the
    allocated cost; total_usd adds the request's share of unallocated dollars (chargeback).
    `rows` (a slice or request ids; default all): only those rows, so a long run's table can be
    written a block at a time (the same values as the whole table's rows)."""
    rows = slice(0, table.num_requests) if rows is None else rows
    ids = np.arange(table.num_requests)[rows]
    arrival_s, first_token_s, finish_s, output_tokens = (table.arrival_s[rows], table.first_token_s[rows],
                                                         table.finish_s[rows], table.output_tokens[rows])
    lat = latency_columns(arrival_s, first_token_s, finish_s, output_tokens)
    request_usd = request_usd[rows]
    share_usd = np.zeros(len(ids)) if unallocated_share_usd is None else unallocated_share_usd[rows]
    return {
        "request_id": ids,
        "arrival_s": arrival_s,
        "input_tokens": table.input_tokens[rows],
        "output_tokens": output_tokens,
        "status": np.asarray(STATUS_NAMES, dtype=object)[table.status[rows]],
        "reject_reason": np.asarray(REJECT_REASONS, dtype=object)[table.reject_reason[rows]],
        "replica": table.replica[rows],
        "generated_tokens": table.generated[rows],
        "first_scheduled_s": table.first_scheduled_s[rows],
        "first_token_s": first_token_s,
        "finish_s": finish_s,
        "ttft_s": lat["ttft_s"],
        "tpot_s": lat["tpot_s"],
        "e2el_s": lat["e2el_s"],
        "num_preemptions": table.num_preemptions[rows],
        "num_retries": table.num_retries[rows],  # its replica was lost under it (spot reclaim, failure)
        "cost_usd": request_usd,
        "unallocated_share_usd": share_usd,
        "total_usd": request_usd + share_usd,
        "workload": np.asarray([scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))],
                               dtype=object)[table.workload[rows]],
        "tenant": np.asarray(table.tenant_names, dtype=object)[table.tenant[rows]],
        "session": np.asarray(table.session_names + [""], dtype=object)[table.session[rows]],  # -1 (none) -> ""
        "turn": table.turn[rows],
        "user": table.user[rows],
        "items": table.items[rows],
        "shared_prefix_tokens": table.shared_prefix_tokens[rows],
    }


def per_item_summary(scenario: Scenario, dep: Deployment, table: RequestTable, summary: RunSummary,
                     bill: Bill) -> PerItem:
    """Throughput and unit cost in items (the summary's tokens/s count items in, results out)."""
    completed = table.status == COMPLETED
    measured = completed & (table.arrival_s >= scenario.warmup_s)
    window_s = summary["measured_window_s"]
    items_done = int(table.items[completed].sum())
    entries = scenario.workload.entries()
    kinds = sorted({e.items.kind for e in entries if e.items is not None}) or ["item"]
    return {
        "kind": "+".join(kinds),
        "item_input": dep.model.item_input,
        "items_completed": items_done,
        "items_per_s": float(table.items[measured].sum() / window_s) if window_s and window_s > 0 else None,
        "mean_items_per_batch": summary["mean_batch_tokens"],
        "usd_per_1m_items": bill.total_usd / items_done * 1e6 if items_done else None,
    }
