"""The cost ledger: every engine step, priced, and its cost handed to the requests in it.

The engine appends one *record* per batch it runs to the step log (simcost.cost.step_log): a
prefill step, or a span of decode steps over the same requests. A record lists its steps (end
times) and its members with the tokens each processed. After the run, numba kernels charge every step (device $/hour x step time x
devices, under the fleet's pricing model: `simcost.cost.pricing`), sum steps into records, and split
each record's cost over its members by the scenario's `cost` policy (`CostConfig`): in proportion
to tokens x a weight for prompt or output tokens, or equally. Time a replica spends with no step
is idle cost; minimum charges and unused commitments are their own unallocated categories. So
    sum(request cost) + idle + minimum + unused commitment = the bill from the pricing formulas,
which the tests check (no dollar lost or invented). Under chargeback the unallocated dollars are
then spread over requests too (`spread_unallocated`). Energy is kept per replica-hour alongside,
for the hours each replica life spans (simcost.cost.hours.HourWindows).
Warm nodes (fleet.warm_pool) are no replicas and run no step: what they cost is its own
unallocated category, `warm_pool` (simcost.pricing.warm_pool_usd).
Egress (fleet.pools) is priced per request outside the step log and added to its allocated cost
and to the bill, so the identity above holds with it; so are hosted-API calls (fleet.api_pools),
each billed its tokens x the api pool's prices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from simcost.cost.energy import Energy, hour_covered_s, hour_piece, replica_hour_energy, split_steps_by_hour
from simcost.cost.hours import HourWindows
from simcost.cost.pricing import (
    Tariff,
    alive_hours_s,
    fleet_bill_usd,
    fleet_tariff,
    pools_bill_usd,
    pools_tariff,
    warm_pool_usd,
)
from simcost.cost.roster import Roster, RosterArrays
from simcost.cost.step_log import StepArrays
from simcost.perf.deployment import Deployment, Pool
from simcost.perf.startup import StartPhases
from simcost.scenario.fleet import FleetConfig
from simcost.scenario.pricing import CostConfig
from simcost.units import S_PER_HOUR


@dataclass(frozen=True)
class Bill:
    step_usd: np.ndarray  # cost of every step
    request_usd: np.ndarray  # cost allocated to every request
    replica_busy_s: np.ndarray
    replica_idle_s: np.ndarray
    busy_usd: float  # allocated: the sum of step_usd (and of request_usd)
    idle_usd: float  # unallocated: time replicas ran with no step
    total_usd: float  # from the pricing formulas (`simcost.pricing.bill_usd`)
    hours: HourWindows  # the replicas' clock hours: every hour each was billed or ran a step
    hour_usd: np.ndarray  # per entry of hours: running charge, unallocated extras excluded
    hour_unused_commitment_usd: np.ndarray  # (hours,)
    tariff: Tariff
    energy: Energy
    roster: RosterArrays  # every replica's timeline, cut at the horizon
    hour_alive_s: np.ndarray  # per entry of hours: seconds the replica was billed
    # chargeback: each request's share of the unallocated dollars, and their sum (0 under showback)
    unallocated_share_usd: np.ndarray
    spread_usd: float = 0.0
    minimum_usd: float = 0.0  # unallocated: per-start minimum-charge top-ups
    unused_commitment_usd: float = 0.0  # unallocated: savings-plan commitment nobody used
    # unallocated: replicas provisioning and loading before they serve (cold start, simcost.lifecycle)
    provisioning_usd: float = 0.0
    loading_usd: float = 0.0
    # unallocated: replicas draining (no new work) with nothing left to run, before they are gone
    draining_usd: float = 0.0
    # allocated: bytes leaving a site (responses to clients), charged to the request that sent
    # them; included in request_usd and total_usd (fleet.pools; 0 otherwise)
    egress_usd: float = 0.0
    request_egress_usd: np.ndarray | None = None
    # unallocated: warm nodes (fleet.warm_pool), provisioning and in the pool; warm_standby_usd is
    # the in-pool part of warm_pool_usd
    warm_pool_usd: float = 0.0
    warm_standby_usd: float = 0.0
    # allocated: hosted-API calls (fleet.api_pools), each request's tokens x its api pool's
    # prices; included in request_usd and total_usd (0 and None without api pools)
    api_usd: float = 0.0
    request_api_usd: np.ndarray | None = None
    # fleet.response_cache: its embedding calls, allocated to the requests looked up (in
    # request_usd), and its store's hosting, unallocated; both in total_usd
    cache_usd: float = 0.0
    request_cache_usd: np.ndarray | None = None
    cache_store_usd: float = 0.0

    @property
    def unallocated_usd(self) -> float:
        return (self.idle_usd + self.minimum_usd + self.unused_commitment_usd + self.provisioning_usd + self.loading_usd
                + self.draining_usd + self.warm_pool_usd + self.cache_store_usd)

    @property
    def charged_usd(self) -> np.ndarray:
        """What each request pays: its allocated cost plus its share of the unallocated (chargeback)."""
        return self.request_usd if self.unallocated_share_usd is None else self.request_usd + self.unallocated_share_usd

    @property
    def unallocated_left_usd(self) -> float:
        """Unallocated dollars still on their own line: all under showback, none under chargeback
        (unless no request could take them)."""
        return self.unallocated_usd - self.spread_usd


def settle(steps: StepArrays, num_requests: int, fleet: FleetConfig, dep: Deployment | list[Pool], horizon_s: float,
           cost: CostConfig = CostConfig(), completed: np.ndarray | None = None,
           phases: list[StartPhases] | None = None, roster: Roster | None = None,
           spot_usd_per_device_hour: float | None = None, request_egress_usd: np.ndarray | None = None,
           request_api_usd: np.ndarray | None = None, request_cache_usd: np.ndarray | None = None,
           cache_store_usd: float = 0.0) -> Bill:
    """Price every step, allocate to requests by the `cost` policy, and charge the gaps as idle.
    `completed` (default: every request) marks who may take unallocated dollars under
    chargeback when no request was allocated anything. `roster` (simcost.lifecycle) says when
    each replica was requested, ready, draining and gone; default: the pools' replicas, static,
    with `phases` as their cold starts. Pools of fleet.pools (Pool.scenario set) are each priced by
    their own pricing section and site; `request_egress_usd` (fleet.pools) is each request's
    egress, added to its allocated cost and to the bill.

    Steps run at utilisation 1 (see `simcost.cost.energy`): the log has no finer measure."""
    pools = dep if isinstance(dep, list) else [Pool("serve", dep, fleet.num_replicas)]
    ra = (roster or Roster.static(pools, phases)).arrays(horizon_s)
    n = len(ra.pool)
    own = pools[0].scenario is not None  # fleet.pools: each pool priced its own way
    price = (pools_tariff(pools, horizon_s, ra) if own
             else fleet_tariff(fleet.pricing, fleet.site, pools, horizon_s, ra, spot_usd_per_device_hour))
    step_util = np.broadcast_to(1.0, len(steps.step_start_s))  # every step at 1, without a float each
    if price.replica_util_usd_per_s is None:
        step_usd = charge_steps(steps.step_start_s, steps.step_end_s, steps.step_replica, step_util, price,
                                price.util_usd_per_s)
    else:  # per-replica utilisation rates: fold each into its steps' utilisation
        step_usd = charge_steps(steps.step_start_s, steps.step_end_s, steps.step_replica,
                                step_util * price.replica_util_usd_per_s[steps.step_replica], price, 1.0)
    if (np.diff(steps.record_member_offset) == 0).any():
        raise RuntimeError("ledger: a record has no members, so its cost has no one to go to (engine bug)")
    request_usd = allocate_logged_records(step_usd, steps.record_step_offset, steps.record_member_offset,
                                          steps.member_request, steps.record_span, steps.logged_member_tokens,
                                          steps.logged_member_prefill, cost.prefill_weight, cost.decode_weight,
                                          cost.allocation == "equal", num_requests)
    egress_usd = 0.0
    if request_egress_usd is not None:
        request_usd = request_usd + request_egress_usd
        egress_usd = float(request_egress_usd.sum())
    api_usd = 0.0
    if request_api_usd is not None:
        request_usd = request_usd + request_api_usd
        api_usd = float(request_api_usd.sum())
    cache_usd = 0.0
    if request_cache_usd is not None:
        request_usd = request_usd + request_cache_usd
        cache_usd = float(request_cache_usd.sum())
    busy_s, idle_s, overlaps = busy_idle_seconds(steps.step_start_s, steps.step_end_s, steps.step_replica, n, horizon_s)
    if overlaps:
        raise RuntimeError(f"ledger: {overlaps} steps overlap on one replica (engine bug)")
    idle_s = np.maximum(0.0, ra.alive_s - busy_s)
    n_hours = len(hour_covered_s(horizon_s))
    hours = HourWindows.of_intervals(ra.requested_s, ra.gone_s, n_hours, steps.step_start_s, steps.step_end_s,
                                     steps.step_replica)
    _, alive_s = alive_hours_s(ra, n_hours, hours)
    hour_busy_s, hour_busy_u_s = split_steps_by_hour(steps.step_start_s, steps.step_end_s, steps.step_replica,
                                                     step_util, hours.first_hour, hours.offset, n_hours)
    rate = price.rate_usd_per_s(hours.entry_life(), hours.entry_hour())
    deps = [pools[k].deployment for k in ra.pool]
    pue: float | list[float]  # one site, or each replica's (fleet.pools)
    grid_gco2_per_kwh: float | list[float]
    if own:  # each replica at its own pool's site
        sites = [pools[k].own_scenario.fleet.site for k in ra.pool]
        pue, grid_gco2_per_kwh = [s.pue for s in sites], [s.grid_gco2_per_kwh for s in sites]
    else:
        pue, grid_gco2_per_kwh = fleet.site.pue, fleet.site.grid_gco2_per_kwh
    energy = replica_hour_energy(hours, hour_busy_u_s, alive_s, [d.idle_w for d in deps], [d.peak_w for d in deps],
                                 pue, grid_gco2_per_kwh)
    hour_idle_s = np.maximum(0.0, alive_s - hour_busy_s)
    idle_usd = hours.total(hour_idle_s * rate)
    provisioning_usd, loading_usd, draining_usd = lifecycle_costs_usd(ra, price, steps)
    idle_usd -= provisioning_usd + loading_usd + draining_usd  # no step runs before a replica is ready
    minimum_usd, unused_usd = float(price.minimum_usd.sum()), float(price.unused_commitment_usd.sum())
    warm_provisioning_usd, warm_standby_usd = warm_pool_usd(ra.warm)
    share_usd, spread_usd = np.zeros(num_requests), 0.0
    if cost.unallocated == "chargeback":
        eligible = np.ones(num_requests, dtype=bool) if completed is None else completed
        share_usd, spread_usd = spread_unallocated(request_usd, idle_usd + minimum_usd + unused_usd + provisioning_usd
                                                   + loading_usd + draining_usd + warm_provisioning_usd
                                                   + warm_standby_usd + cache_store_usd, eligible)
    return Bill(step_usd=step_usd, request_usd=request_usd, replica_busy_s=busy_s, replica_idle_s=idle_s,
                busy_usd=float(step_usd.sum()), idle_usd=idle_usd,
                total_usd=egress_usd + api_usd + cache_usd + cache_store_usd + (pools_bill_usd(pools, horizon_s, energy, ra) if own else
                                        fleet_bill_usd(fleet.pricing, pools, horizon_s, energy, ra, spot_usd_per_device_hour)),
                minimum_usd=minimum_usd, unused_commitment_usd=unused_usd,
                hours=hours, hour_usd=rate * np.maximum(alive_s, hour_busy_s)
                + hours.per_entry(price.util_rates(n)) * hour_busy_u_s,
                hour_unused_commitment_usd=price.unused_commitment_usd, tariff=price, energy=energy,
                unallocated_share_usd=share_usd, spread_usd=spread_usd, provisioning_usd=provisioning_usd,
                loading_usd=loading_usd, draining_usd=draining_usd, roster=ra, hour_alive_s=alive_s,
                egress_usd=egress_usd, request_egress_usd=request_egress_usd,
                warm_pool_usd=warm_provisioning_usd + warm_standby_usd, warm_standby_usd=warm_standby_usd,
                api_usd=api_usd, request_api_usd=request_api_usd, cache_usd=cache_usd,
                request_cache_usd=request_cache_usd, cache_store_usd=cache_store_usd)


def lifecycle_costs_usd(ra: RosterArrays, price: Tariff, steps: StepArrays) -> tuple[float, float, float]:
    """What the replicas' provisioning [requested, provisioned), loading [provisioned, ready) and
    draining [drain, gone) cost at their hourly time rates (no step runs in the first two).
    Draining counts only its idle part: the steps a draining replica still runs are busy."""
    replica = np.arange(len(ra.pool), dtype=np.int64)

    def cost(start_s: np.ndarray, end_s: np.ndarray, which: np.ndarray) -> float:
        if not (end_s > start_s).any():
            return 0.0
        return float(charge_steps(start_s, np.maximum(start_s, end_s), which, np.zeros(len(which)), price, 0.0).sum())

    draining = np.empty(len(steps.step_start_s), dtype=bool)
    for lo in range(0, len(draining), 1 << 20):  # in slices: no float per step for the gather
        hi = lo + (1 << 20)
        draining[lo:hi] = steps.step_start_s[lo:hi] >= ra.drain_s[steps.step_replica[lo:hi]]
    draining_usd = cost(ra.drain_s, ra.gone_s, replica) - cost(steps.step_start_s[draining], steps.step_end_s[draining],
                                                               steps.step_replica[draining])
    return (cost(ra.requested_s, ra.provisioned_s, replica), cost(ra.provisioned_s, ra.ready_s, replica),
            max(0.0, draining_usd))


def member_weights(steps: StepArrays, cost: CostConfig) -> np.ndarray:
    """Each member's claim on its record's cost: its tokens x the weight of their kind (prompt or
    output), or 1 each under equal allocation."""
    if cost.allocation == "equal":
        return np.ones(len(steps.member_tokens))
    kind_weight = np.where(steps.member_prefill, cost.prefill_weight, cost.decode_weight)
    return steps.member_tokens * kind_weight.astype(np.float64)


def spread_unallocated(request_usd: np.ndarray, unallocated_usd: float, eligible: np.ndarray) -> tuple[np.ndarray, float]:
    """Chargeback: (each request's share of the unallocated dollars, the dollars spread). Shares
    follow each request's allocated cost, so a tenant's share is its share of the allocated bill;
    if nothing was allocated, the eligible (completed) requests share equally; if there are none,
    nothing is spread and the dollars stay unallocated."""
    allocated_usd = float(request_usd.sum())
    if allocated_usd > 0:
        return unallocated_usd * request_usd / allocated_usd, unallocated_usd
    num_eligible = int(eligible.sum())
    if num_eligible == 0:
        return np.zeros(len(request_usd)), 0.0
    return np.where(eligible, unallocated_usd / num_eligible, 0.0), unallocated_usd


# --- kernels (each with a plain-Python twin) ----------------------------------------------

def charge_steps(step_start_s, step_end_s, step_replica, step_util, price: Tariff, util_usd_per_s) -> np.ndarray:
    """`charge_steps_hourly` at a tariff's rates."""
    return charge_steps_hourly(step_start_s, step_end_s, step_replica, step_util, price.replica_usd_per_s,
                               price.replica_factor, price.hour_factor, util_usd_per_s)


@njit(cache=True)
def charge_steps_hourly(step_start_s, step_end_s, step_replica, step_util, replica_usd_per_s, replica_factor,
                        hour_factor, util_usd_per_s):
    """Step cost under an hourly tariff: each piece of a step in clock hour h costs its seconds x
    (rate of its replica in h + u x util rate), the rate being replica_usd_per_s[r] x
    hour_factor[replica_factor[r], h] (simcost.cost.pricing.Tariff). The last hour takes any overrun."""
    n_hours = hour_factor.shape[1]
    out = np.zeros(step_start_s.shape[0])
    for j in range(out.shape[0]):
        r = step_replica[j]
        t = step_start_s[j]
        while t < step_end_s[j]:
            h, cut = hour_piece(t, step_end_s[j], n_hours)
            rate = replica_usd_per_s[r] * hour_factor[replica_factor[r], h]
            out[j] += (cut - t) * (rate + step_util[j] * util_usd_per_s)
            t = cut
    return out


def charge_steps_hourly_py(step_start_s, step_end_s, step_replica, step_util, replica_usd_per_s, replica_factor,
                           hour_factor, util_usd_per_s):
    n_hours = len(hour_factor[0])
    out = []
    for s, e, r, u in zip(step_start_s, step_end_s, step_replica, step_util):
        usd = 0.0
        for h in range(n_hours):
            hi = (h + 1) * S_PER_HOUR if h < n_hours - 1 else float("inf")
            rate = float(replica_usd_per_s[r]) * float(hour_factor[replica_factor[r]][h])
            usd += max(0.0, min(e, hi) - max(s, h * S_PER_HOUR)) * (rate + u * util_usd_per_s)
        out.append(usd)
    return np.array(out)


def allocate_weighted_records(step_usd, record_step_offset, record_member_offset, member_request, member_tokens,
                              member_prefill, prefill_weight, decode_weight, equal, num_requests):
    """`allocate_logged_records` with every member's tokens and prompt flag given (no record a
    span); `allocate_records_py` is its plain-Python twin."""
    return allocate_logged_records(step_usd, record_step_offset, record_member_offset, member_request,
                                   np.zeros(len(record_step_offset) - 1, dtype=np.bool_), member_tokens, member_prefill,
                                   prefill_weight, decode_weight, equal, num_requests)


@njit(cache=True)
def allocate_logged_records(step_usd, record_step_offset, record_member_offset, member_request, record_span,
                            logged_tokens, logged_prefill, prefill_weight, decode_weight, equal, num_requests):
    """Each record's cost (sum of its steps) split over its members in proportion to their
    weights, computed in place from tokens and kind (`member_weights` says how) rather than held
    as a float per member; equally when the weights sum to 0 (e.g. decode_weight 0 on a decode
    span), so no dollar is lost. A span record's members decode one token per step (tokens = its
    steps); the others' tokens and flags are logged_*, in member order (StepArrays)."""
    request_usd = np.zeros(num_requests)
    logged = 0
    for r in range(record_step_offset.shape[0] - 1):
        cost = 0.0
        for j in range(record_step_offset[r], record_step_offset[r + 1]):
            cost += step_usd[j]
        lo, hi = record_member_offset[r], record_member_offset[r + 1]
        span = record_span[r]
        span_tokens = np.int32(record_step_offset[r + 1] - record_step_offset[r])
        span_prefill = not span  # a span's steps decode only (False when used; a runtime bool, not a
        # literal False, so _weight compiles once)
        total = 0.0
        for m in range(lo, hi):
            if span:
                total += _weight(span_tokens, span_prefill, prefill_weight, decode_weight, equal)
            else:
                total += _weight(logged_tokens[logged + m - lo], logged_prefill[logged + m - lo], prefill_weight,
                                 decode_weight, equal)
        for m in range(lo, hi):
            if total > 0:
                if span:
                    w = _weight(span_tokens, span_prefill, prefill_weight, decode_weight, equal)
                else:
                    w = _weight(logged_tokens[logged + m - lo], logged_prefill[logged + m - lo], prefill_weight,
                                decode_weight, equal)
                request_usd[member_request[m]] += cost * w / total
            else:
                request_usd[member_request[m]] += cost / (hi - lo)
        if not span:
            logged += hi - lo
    return request_usd


@njit(cache=True)
def _weight(tokens, prefill, prefill_weight, decode_weight, equal):
    if equal:
        return 1.0
    return float(tokens) * (prefill_weight if prefill else decode_weight)


def allocate_records_py(step_usd, record_step_offset, record_member_offset, member_request, member_weight, num_requests):
    request_usd = [0.0] * num_requests
    for r in range(len(record_step_offset) - 1):
        cost = sum(step_usd[record_step_offset[r]:record_step_offset[r + 1]])
        members = range(record_member_offset[r], record_member_offset[r + 1])
        weights = [member_weight[m] for m in members]
        if sum(weights) == 0:
            weights = [1.0] * len(weights)
        for m, w in zip(members, weights):
            request_usd[member_request[m]] += cost * w / sum(weights)
    return np.array(request_usd)


@njit(cache=True)
def busy_idle_seconds(step_start_s, step_end_s, step_replica, num_replicas, horizon_s):
    """Busy and idle seconds per replica over [0, horizon_s], from the gaps between its steps.

    Steps of one replica appear in time order in the log; a step starting before the previous
    one ended is counted as an overlap (an engine bug the caller reports)."""
    busy = np.zeros(num_replicas)
    idle = np.zeros(num_replicas)
    last_end = np.zeros(num_replicas)
    overlaps = 0
    for j in range(step_start_s.shape[0]):
        r = step_replica[j]
        gap = step_start_s[j] - last_end[r]
        if gap < -1e-9:
            overlaps += 1
        elif gap > 0:
            idle[r] += gap
        busy[r] += step_end_s[j] - step_start_s[j]
        last_end[r] = step_end_s[j]
    for r in range(num_replicas):
        idle[r] += max(0.0, horizon_s - last_end[r])
    return busy, idle, overlaps


def busy_idle_seconds_py(step_start_s, step_end_s, step_replica, num_replicas, horizon_s):
    busy, idle, overlaps = [0.0] * num_replicas, [0.0] * num_replicas, 0
    for r in range(num_replicas):
        t = 0.0
        for s, e, rr in zip(step_start_s, step_end_s, step_replica):
            if rr != r:
                continue
            if s < t - 1e-9:
                overlaps += 1
            idle[r] += max(0.0, s - t)
            busy[r] += e - s
            t = e
        idle[r] += max(0.0, horizon_s - t)
    return np.array(busy), np.array(idle), overlaps
