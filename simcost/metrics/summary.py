"""Per-request records and the run summary, with vLLM's benchmark definitions (the latencies and
SLO attainment in `simcost.metrics.latency`, the pools' and sites' parts in
`simcost.metrics.pool_summary`).

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
from simcost.cost.step_log import StepArrays
from simcost.metrics.latency import (
    attainment_keys,
    itl_stats,
    latencies,
    latency_columns,
    slo_outcomes,
    stats,
)
from simcost.metrics.pool_summary import (
    fleet_summary,
    fleet_usd_per_hour,
    pool_rows,
    pools_summary,
)
from simcost.metrics.run_summary import Breakdowns, PerItem, RunSummary
from simcost.perf.deployment import Deployment, Pool
from simcost.scenario.fleet_plan import fleet_plan, pool_routed
from simcost.scenario.scenario import Scenario
from simcost.scenario.schema import to_dict
from simcost.workload.request_table import COMPLETED, IN_FLIGHT, REJECT_REASONS, REJECTED, STATUS_NAMES, RequestTable


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
    if dep.pipeline_parallel > 1:
        summary["pipeline_parallel"] = dep.pipeline_parallel
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
