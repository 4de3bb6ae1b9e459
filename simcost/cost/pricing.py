"""Pricing models: what a fleet's replica-hours cost (docs/design.md section 4).

Each model becomes a *tariff*: a time rate in $/s per (replica, hour), kept as a rate per replica
times a factor per (rate class, hour) (only a savings plan varies by hour, and only for the replicas
it covers: a run's lives x hours would not fit a long autoscaled run), a $/s at full utilisation
on top (only owned hardware, whose power bill follows utilisation), and charges no step can
carry (minimum charges, unused savings-plan commitment), which stay unallocated. The ledger
prices steps and idle gaps with the rates; `bill_usd` computes the same bill straight from the
pricing formulas so the tests can check that allocation neither loses nor invents a dollar.

Each replica is billed from its request to when it is gone (the roster, simcost.lifecycle; a
static fleet: from t = 0 to the horizon). Reserved and owned capacity is a static fleet (config
refuses the rest). A run is a window of a longer commitment, so hour-based charges (reserved
hours, savings-plan commitments, amortised capital) are prorated on a partial last hour rather
than charged whole.

Warm nodes (fleet.warm_pool) are on-demand capacity outside any commitment, billed per second
without a minimum (`warm_pool_usd`): provisioning at the on-demand rate, their time in the pool at
their state's rate. Every pricing model's bill adds them.

A fleet of pools (fleet.pools) prices each pool by its own section (`pools_tariff`,
`pools_bill_usd`): the bill is the sum of the pools' bills, each from its own formulas.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simcost.cost.energy import Energy, hour_covered_s
from simcost.cost.hours import HourWindows
from simcost.cost.roster import Roster, RosterArrays, WarmArrays
from simcost.errors import required
from simcost.perf.deployment import Deployment, Pool
from simcost.scenario.fleet import FleetConfig
from simcost.scenario.pricing import DEFAULT_EGRESS_USD_PER_GB, PricingConfig, SiteConfig
from simcost.units import HOURS_PER_YEAR, J_PER_KWH, S_PER_HOUR

DEFAULT_MIN_CHARGE_S = 60.0  # AWS and GCP per-second billing: 60 s minimum per instance start
DEFAULT_LIFETIME_YEARS = 5.0  # assumption: a common depreciation schedule for servers

# FOCUS PricingCategory values
CATEGORY = {"on_demand": "Standard", "spot": "Dynamic", "reserved": "Committed",
            "savings_plan": "Committed", "owned": "Other", "mixed": "Other"}  # mixed: pools priced differently


@dataclass(frozen=True)
class Tariff:
    model: str
    # charged for every second a replica runs, in hour h: replica_usd_per_s[r] x
    # hour_factor[replica_factor[r], h] (row 0 is all ones: a rate that does not vary by hour)
    replica_usd_per_s: np.ndarray  # (replicas,)
    replica_factor: np.ndarray  # (replicas,) int64: its row of hour_factor
    hour_factor: np.ndarray  # (rate classes, hours)
    util_usd_per_s: float  # extra $/s at utilisation 1 (owned: dynamic power)
    minimum_usd: np.ndarray  # (replicas,): minimum-charge top-up, billed in the first hour
    unused_commitment_usd: np.ndarray  # (hours,): savings-plan commitment nobody used
    list_usd_per_s: np.ndarray  # (replicas,), on-demand: FOCUS ListCost
    on_demand_usd_per_hour: float  # per replica
    effective_usd_per_hour: float | None  # reserved: upfront amortised + recurring, per replica
    # fleet.pools: per replica, its pool's pricing model and utilisation rate (None: `model` and
    # util_usd_per_s for every replica)
    replica_model: list[str] | None = None
    replica_util_usd_per_s: np.ndarray | None = None

    def rate_usd_per_s(self, replica: np.ndarray, hour: np.ndarray | int) -> np.ndarray:
        """The time rate of each replica in each hour (pairs, or one hour for all)."""
        return self.replica_usd_per_s[replica] * self.hour_factor[self.replica_factor[replica], hour]

    @property
    def num_hours(self) -> int:
        return self.hour_factor.shape[1]

    def util_rates(self, n: int) -> np.ndarray:
        """Per replica: the extra $/s at utilisation 1."""
        return np.full(n, self.util_usd_per_s) if self.replica_util_usd_per_s is None else self.replica_util_usd_per_s

    @property
    def category(self) -> str:
        return CATEGORY[self.model]

    @property
    def break_even_utilization(self) -> float | None:
        """Reserved: the share of hours a replica must be needed for it to beat on-demand."""
        if self.effective_usd_per_hour is None or self.on_demand_usd_per_hour == 0:
            return None
        return self.effective_usd_per_hour / self.on_demand_usd_per_hour


def tariff(cfg: PricingConfig, site: SiteConfig, dep: Deployment, num_replicas: int, horizon_s: float) -> Tariff:
    """A static fleet of one deployment."""
    return fleet_tariff(cfg, site, [Pool("serve", dep, num_replicas)], horizon_s)


def fleet_tariff(cfg: PricingConfig, site: SiteConfig, pools: list[Pool], horizon_s: float,
                 roster: RosterArrays | None = None, spot_usd_per_device_hour: float | None = None) -> Tariff:
    """Per replica of the roster (default: the pools' replicas, static), its rates. A replica on
    spot capacity pays spot_usd_per_device_hour (or pricing.spot_usd_per_device_hour); savings
    plans cover on-demand usage only, as AWS's do."""
    ra = roster or static_roster(pools, horizon_s)
    covered_s = hour_covered_s(horizon_s)
    deps = [pools[k].deployment for k in ra.pool]
    od_per_s = np.array([d.price_usd_per_hour for d in deps]) / S_PER_HOUR
    devices = np.array([d.num_devices for d in deps], dtype=np.float64)
    spot_price = cfg.spot_usd_per_device_hour if spot_usd_per_device_hour is None else spot_usd_per_device_hour
    spot = ra.spot | (cfg.model == "spot")
    n, hours = len(deps), len(covered_s)
    rate = od_per_s.copy()
    factor_row = np.zeros(n, dtype=np.int64)
    hour_factor = np.ones((1, hours))
    if spot.any():
        spot_usd_per_device_hour = required(spot_price, "fleet.pricing.spot_usd_per_device_hour")
        rate[spot] = spot_usd_per_device_hour * devices[spot] / S_PER_HOUR
    unused = np.zeros(hours)
    util_per_s, effective = 0.0, None
    if cfg.model == "reserved":
        effective = reserved_effective_usd_per_hour(cfg) * deps[0].num_devices
        rate[:] = effective / S_PER_HOUR
    elif cfg.model == "savings_plan":
        factor, unused = savings_plan_hours(cfg, on_demand_usage_usd(ra, ~spot, od_per_s, hours), covered_s)
        hour_factor = np.vstack([hour_factor, factor[None, :]])
        factor_row[~spot] = 1
    elif cfg.model == "owned":
        rate[:], util_per_s = owned_rates(cfg, site, deps[0])
    minimum = np.zeros(n)
    t = Tariff(cfg.model, rate, factor_row, hour_factor, util_per_s, minimum, unused, od_per_s,
               float(od_per_s.mean() * S_PER_HOUR) if n else 0.0, effective)
    if cfg.model in ("on_demand", "spot", "savings_plan"):  # per-second billing: a minimum per start
        first_hour = np.minimum((ra.requested_s // S_PER_HOUR).astype(np.int64), hours - 1)
        minimum[:] = (charged_s(ra.alive_s, cfg) - ra.alive_s) * t.rate_usd_per_s(np.arange(n), first_hour)
        if cfg.model == "savings_plan":
            minimum[~spot] = 0.0  # the plan's hourly accounting has no per-start minimum
    return t


def on_demand_usage_usd(ra: RosterArrays, mask: np.ndarray, usd_per_s: np.ndarray, n_hours: int) -> np.ndarray:
    """Per clock hour: what the replicas where mask is set were billed on demand (seconds billed
    x usd_per_s, summed in replica order as over the dense (replicas, hours) matrix)."""
    windows, alive_s = alive_hours_s(ra, n_hours)
    part, entries = windows.select(mask)
    return part.column_sums(alive_s[entries] * part.per_entry(usd_per_s[mask]))


def fleet_bill_usd(cfg: PricingConfig, pools: list[Pool], horizon_s: float, energy: Energy,
                   roster: RosterArrays | None = None, spot_usd_per_device_hour: float | None = None) -> float:
    """The fleet's bill from the pricing formulas alone (no step log): the number the ledger's
    allocated plus unallocated dollars must add up to. On-demand and spot: each replica from
    request to gone, at least the minimum charge; savings plan: hour by hour, C + max(0, U -
    C / (1 - d)) for on-demand usage U; reserved and owned fleets are static."""
    ra = roster or static_roster(pools, horizon_s)
    return replicas_bill_usd(cfg, pools, horizon_s, energy, ra, spot_usd_per_device_hour) + sum(warm_pool_usd(ra.warm))


def replicas_bill_usd(cfg: PricingConfig, pools: list[Pool], horizon_s: float, energy: Energy, ra: RosterArrays,
                      spot_usd_per_device_hour: float | None = None) -> float:
    """The replicas' part of `fleet_bill_usd`."""
    deps = [pools[k].deployment for k in ra.pool]
    spot_price = cfg.spot_usd_per_device_hour if spot_usd_per_device_hour is None else spot_usd_per_device_hour
    spot = ra.spot | (cfg.model == "spot")
    per_hour = np.array([spot_price * d.num_devices if sp else d.price_usd_per_hour for d, sp in zip(deps, spot)])
    if cfg.model in ("on_demand", "spot"):
        return float((charged_s(ra.alive_s, cfg) * per_hour).sum() / S_PER_HOUR)
    spot_usd = float((charged_s(ra.alive_s[spot], cfg) * per_hour[spot]).sum() / S_PER_HOUR)
    if cfg.model == "savings_plan":
        covered_s = hour_covered_s(horizon_s)
        usage = on_demand_usage_usd(ra, ~spot, per_hour, len(covered_s)) / S_PER_HOUR
        commit = cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR
        discount = required(cfg.discount, "fleet.pricing.discount")
        return spot_usd + float(np.sum(commit + np.maximum(0.0, usage - commit / (1 - discount))))
    return spot_usd + bill_usd(cfg, deps[0], int((~spot).sum()), horizon_s, energy)


def warm_pool_usd(warm: WarmArrays) -> tuple[float, float]:
    """(what the warm nodes cost provisioning, what they cost in the pool), per second, no minimum."""
    return (float((warm.provisioning_s * warm.provisioning_usd_per_hour).sum() / S_PER_HOUR),
            float((warm.in_pool_s * warm.standby_usd_per_hour).sum() / S_PER_HOUR))


def warm_node_hour_usd(warm: WarmArrays, n_hours: int) -> tuple[HourWindows, np.ndarray]:
    """What each warm node costs in each clock hour it spans (its provisioning and its time in the
    pool), per entry of its hour windows: the rows a FOCUS export needs; sums to `warm_pool_usd`."""
    w = HourWindows.of_intervals(warm.requested_s, warm.gone_s, n_hours)
    return w, (w.overlap_s(warm.requested_s, warm.standby_s) * w.per_entry(warm.provisioning_usd_per_hour)
               + w.overlap_s(warm.standby_s, warm.gone_s) * w.per_entry(warm.standby_usd_per_hour)) / S_PER_HOUR


def static_roster(pools: list[Pool], horizon_s: float) -> RosterArrays:
    return Roster.static(pools).arrays(horizon_s)


def alive_hours_s(ra: RosterArrays, n_hours: int, windows: HourWindows | None = None) -> tuple[HourWindows, np.ndarray]:
    """Seconds each replica is billed in each clock hour it spans (default windows: from its
    request to when it is gone), per entry of the windows."""
    w = windows or HourWindows.of_intervals(ra.requested_s, ra.gone_s, n_hours)
    return w, w.overlap_s(ra.requested_s, ra.gone_s)


def charged_s(alive_s: np.ndarray, cfg: PricingConfig) -> np.ndarray:
    """Seconds each replica is charged under per-second billing: its billed time, at least the
    minimum charge; none for a replica billed no time at all (requested while its site was down
    and cancelled before the site came back: the cloud never provisioned it)."""
    return np.where(alive_s > 0, np.maximum(alive_s, min_charge_s(cfg)), 0.0)


def min_charge_s(cfg: PricingConfig) -> float:
    return DEFAULT_MIN_CHARGE_S if cfg.min_charge_s is None else cfg.min_charge_s


def reserved_effective_usd_per_hour(cfg: PricingConfig) -> float:
    """Per device: upfront / (8760 x years) + recurring hourly."""
    upfront_usd = required(cfg.upfront_usd_per_device, "fleet.pricing.upfront_usd_per_device")
    term_years = required(cfg.term_years, "fleet.pricing.term_years")
    recurring_usd_per_hour = required(cfg.recurring_usd_per_device_hour, "fleet.pricing.recurring_usd_per_device_hour")
    return upfront_usd / (HOURS_PER_YEAR * term_years) + recurring_usd_per_hour


def savings_plan_hours(cfg: PricingConfig, usage_usd: np.ndarray, covered_s: np.ndarray):
    """Per hour: the factor that turns on-demand usage into its share of the bill, and the
    commitment lost. Bill = C + max(0, U - C / (1 - d)); below the commitment usage costs
    U (1 - d) and C - U (1 - d) is lost; above it, the whole bill is usage."""
    d = required(cfg.discount, "fleet.pricing.discount")
    commit = cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR
    bill = commit + np.maximum(0.0, usage_usd - commit / (1 - d))
    unused = np.maximum(0.0, commit - usage_usd * (1 - d))
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(usage_usd > 0, (bill - unused) / usage_usd, 1 - d)
    return factor, unused


def owned_lifetime_usd_per_device(cfg: PricingConfig) -> float:
    """What owning one device costs over lifetime_years besides power: its capex alone, or with
    any of the ownership keys set, lifetime_years x the equivalent annual cost
        (C - S / (1 + r)^n) x r / (1 - (1 + r)^-n)   (C - S) / n when r = 0
        + maintenance x C + 12 x (colo + staff per device-month),
    C the capex, S = resale_fraction x C the resale at the end, r the cost of capital, n the years."""
    capex = required(cfg.capex_usd_per_device, "fleet.pricing.capex_usd_per_device")
    extras = (cfg.colo_usd_per_device_month, cfg.staff_usd_per_device_month, cfg.maintenance_fraction_per_year,
              cfg.cost_of_capital, cfg.resale_fraction)
    if all(x is None for x in extras):
        return capex  # the plain amortisation, exactly as before these keys existed
    years = DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
    r, resale = cfg.cost_of_capital or 0.0, (cfg.resale_fraction or 0.0) * capex
    net = capex - resale / (1 + r) ** years
    annual = net * r / (1 - (1 + r) ** -years) if r > 0 else net / years
    annual += (cfg.maintenance_fraction_per_year or 0.0) * capex
    annual += 12 * ((cfg.colo_usd_per_device_month or 0.0) + (cfg.staff_usd_per_device_month or 0.0))
    return annual * years


def owned_rates(cfg: PricingConfig, site: SiteConfig, dep: Deployment) -> tuple[float, float]:
    """$/s per replica: amortised capital (its whole ownership cost) plus idle power, and the
    extra power cost at u = 1."""
    years = DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
    capex_usd = owned_lifetime_usd_per_device(cfg)
    capex_per_s = capex_usd * dep.num_devices / (years * HOURS_PER_YEAR * S_PER_HOUR)
    usd_per_j = required(cfg.usd_per_kwh, "fleet.pricing.usd_per_kwh") * site.pue / J_PER_KWH
    return capex_per_s + dep.idle_w * usd_per_j, (dep.peak_w - dep.idle_w) * usd_per_j


def bill_usd(cfg: PricingConfig, dep: Deployment, num_replicas: int, horizon_s: float, energy: Energy) -> float:
    """The fleet's bill from the pricing formulas alone (no step log): the number the ledger's
    allocated plus unallocated dollars must add up to."""
    n, hours = num_replicas, horizon_s / S_PER_HOUR
    if cfg.model in ("on_demand", "spot"):
        per_hour = (dep.price_usd_per_hour if cfg.model == "on_demand"
                    else required(cfg.spot_usd_per_device_hour, "fleet.pricing.spot_usd_per_device_hour") * dep.num_devices)
        min_s = DEFAULT_MIN_CHARGE_S if cfg.min_charge_s is None else cfg.min_charge_s
        return n * max(horizon_s, min_s) * per_hour / S_PER_HOUR
    if cfg.model == "reserved":
        return n * hours * reserved_effective_usd_per_hour(cfg) * dep.num_devices
    if cfg.model == "savings_plan":
        covered_s = hour_covered_s(horizon_s)
        usage = n * dep.price_usd_per_hour * covered_s / S_PER_HOUR
        commit = cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR
        discount = required(cfg.discount, "fleet.pricing.discount")
        return float(np.sum(commit + np.maximum(0.0, usage - commit / (1 - discount))))
    years = DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
    capex_usd = owned_lifetime_usd_per_device(cfg)
    capex = n * hours * capex_usd * dep.num_devices / (years * HOURS_PER_YEAR)
    return capex + energy.total_kwh * required(cfg.usd_per_kwh, "fleet.pricing.usd_per_kwh")



# --- fleets of pools (fleet.pools): each pool priced by its own section -----------------------

def roster_part(ra: RosterArrays, mask: np.ndarray, pool: int | None = None) -> RosterArrays:
    """The replicas of the roster where mask is set (pool numbers unchanged), and the warm nodes
    of `pool` (None: all of them)."""
    return replace(ra, pool=ra.pool[mask], spot=ra.spot[mask], requested_s=ra.requested_s[mask],
                   provisioned_s=ra.provisioned_s[mask], ready_s=ra.ready_s[mask], drain_s=ra.drain_s[mask],
                   gone_s=ra.gone_s[mask], end=[e for e, m in zip(ra.end, mask) if m],
                   warm_hit=ra.warm_hit[mask],
                   warm=ra.warm.part(ra.warm.pool == pool) if pool is not None else ra.warm)


def pool_spot_usd_per_device_hour(fleet: FleetConfig) -> float | None:
    spot = fleet.spot
    return spot.usd_per_device_hour if spot is not None and spot.usd_per_device_hour is not None else None


def pools_tariff(pools: list[Pool], horizon_s: float, ra: RosterArrays) -> Tariff:
    """Each pool's replicas at their pool's pricing (Pool.scenario.fleet), in one tariff."""
    n, hours = len(ra.pool), len(hour_covered_s(horizon_s))
    rate, factor_row, minimum, listed = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)
    util, unused, models = np.zeros(n), np.zeros(hours), [""] * n
    factors = [np.ones((1, hours))]  # each pool's rows after the shared row of ones
    for k, pool in enumerate(pools):
        mask = ra.pool == k
        fleet = pool.own_scenario.fleet
        t = fleet_tariff(fleet.pricing, fleet.site, pools, horizon_s, roster_part(ra, mask),
                         pool_spot_usd_per_device_hour(fleet))
        rate[mask], minimum[mask], listed[mask], util[mask] = t.replica_usd_per_s, t.minimum_usd, t.list_usd_per_s, t.util_usd_per_s
        row = sum(len(f) for f in factors) - 1  # t's row r > 0 becomes row + r
        factor_row[mask] = np.where(t.replica_factor > 0, t.replica_factor + row, 0)
        factors.append(t.hour_factor[1:])
        unused += t.unused_commitment_usd
        for i in np.flatnonzero(mask):
            models[i] = fleet.pricing.model
    kinds = {p.own_scenario.fleet.pricing.model for p in pools}
    od = float(listed.mean() * S_PER_HOUR) if n else 0.0
    return Tariff(kinds.pop() if len(kinds) == 1 else "mixed", rate, factor_row, np.vstack(factors), 0.0, minimum,
                  unused, listed, od, None, models, util)


def pools_bill_usd(pools: list[Pool], horizon_s: float, energy: Energy, ra: RosterArrays) -> float:
    """The sum of each pool's bill from its own pricing formulas (`fleet_bill_usd`)."""
    total = 0.0
    for k, pool in enumerate(pools):
        mask = ra.pool == k
        fleet = pool.own_scenario.fleet
        cut = lambda x: None if x is None else x[mask]  # noqa: E731
        windows, entries = energy.windows.select(mask)
        part = replace(energy, windows=windows, hour_kwh=energy.hour_kwh[entries], replica_pue=cut(energy.replica_pue),
                       replica_gco2_per_kwh=cut(energy.replica_gco2_per_kwh))
        total += fleet_bill_usd(fleet.pricing, pools, horizon_s, part, roster_part(ra, mask, k),
                                pool_spot_usd_per_device_hour(fleet))
    return total


def usd_per_replica_hour(fleet: FleetConfig, dep: Deployment) -> float:
    """What a replica of `dep` costs an hour under the section's pricing, at full utilisation
    (a pool router's ranking, not a bill): on demand or spot at their price, reserved at its
    effective rate, a savings plan at the discounted rate, owned at amortised capital plus peak
    power."""
    cfg = fleet.pricing
    if cfg.model == "spot":
        spot = pool_spot_usd_per_device_hour(fleet)
        return required(cfg.spot_usd_per_device_hour if spot is None else spot,
                        "fleet.pricing.spot_usd_per_device_hour") * dep.num_devices
    if cfg.model == "reserved":
        return reserved_effective_usd_per_hour(cfg) * dep.num_devices
    if cfg.model == "savings_plan":
        return dep.price_usd_per_hour * (1 - required(cfg.discount, "fleet.pricing.discount"))
    if cfg.model == "owned":
        idle_usd_per_s, util_usd_per_s = owned_rates(cfg, fleet.site, dep)
        return (idle_usd_per_s + util_usd_per_s) * S_PER_HOUR
    return dep.price_usd_per_hour


def egress_usd_per_gb(site: SiteConfig, listed: bool) -> float:
    """A site's egress price: its own, else DEFAULT_EGRESS_USD_PER_GB for a site of fleet.sites
    (listed) and 0 for the one-site shorthand fleet.site."""
    if site.egress_usd_per_gb is not None:
        return site.egress_usd_per_gb
    return DEFAULT_EGRESS_USD_PER_GB if listed else 0.0
