"""The parts of the run summary about a fleet's pools and sites: each pool's steps, replicas and
cost (`pool_rows`), the fleet's hourly rate, warm-pool standby, and with fleet.pools the
by_site, network (the latency users see, round trip included) and pool_routing keys
(`pools_summary`). `simcost.metrics.summary` puts them into the run summary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from simcost.cost.ledger import Bill
from simcost.cost.pricing import usd_per_replica_hour
from simcost.cost.step_log import StepArrays
from simcost.metrics.latency import (
    stats,
)
from simcost.metrics.run_summary import PoolsSummary
from simcost.perf.deployment import Pool
from simcost.scenario.scenario import Scenario
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED, RequestTable


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
                     "allocated_usd": _pool_step_usd(bill.step_usd, steps.step_replica, mine),
                     "utilization": busy_s / alive_s if alive_s > 0 else 0.0})
    return rows


def _pool_step_usd(step_usd: np.ndarray, step_replica: np.ndarray, mine: np.ndarray) -> float:
    """What the steps of the replicas where mine is set cost. A fleet of one pool sums them all
    without the gather (millions of steps a long run): the same values in the same order, so
    numpy's sum gives the same float."""
    if mine.all():
        return float(step_usd.sum())
    return float(step_usd[mine[step_replica]].sum())


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
