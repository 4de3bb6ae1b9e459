"""Pricing models: what a fleet's replica-hours cost (DESIGN.md section 4).

Each model becomes a *tariff*: a time rate in $/s per (replica, hour), a $/s at full utilisation
on top (only owned hardware, whose power bill follows utilisation), and charges no step can
carry (minimum charges, unused savings-plan commitment), which stay unallocated. The ledger
prices steps and idle gaps with the rates; `bill_usd` computes the same bill straight from the
pricing formulas so the tests can check that allocation neither loses nor invents a dollar.

The fleet is static: every replica starts at t = 0 and runs to the horizon. A run is a window
of a longer commitment, so hour-based charges (reserved hours, savings-plan commitments,
amortised capital) are prorated on a partial last hour rather than charged whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcost.config import PricingConfig, SiteConfig
from simcost.energy import J_PER_KWH, S_PER_HOUR, Energy, hour_covered_s
from simcost.perf import Deployment, Pool

DEFAULT_MIN_CHARGE_S = 60.0  # AWS and GCP per-second billing: 60 s minimum per instance start
DEFAULT_LIFETIME_YEARS = 5.0  # assumption: a common depreciation schedule for servers
HOURS_PER_YEAR = 8760.0

# FOCUS PricingCategory values
CATEGORY = {"on_demand": "On-Demand", "spot": "Dynamic", "reserved": "Committed",
            "savings_plan": "Committed", "owned": "Other"}


@dataclass(frozen=True)
class Tariff:
    model: str
    time_usd_per_s: np.ndarray  # (replicas, hours): charged for every second a replica runs
    util_usd_per_s: float  # extra $/s at utilisation 1 (owned: dynamic power)
    minimum_usd: np.ndarray  # (replicas,): minimum-charge top-up, billed in the first hour
    unused_commitment_usd: np.ndarray  # (hours,): savings-plan commitment nobody used
    list_usd_per_s: np.ndarray  # (replicas,), on-demand: FOCUS ListCost
    on_demand_usd_per_hour: float  # per replica
    effective_usd_per_hour: float | None  # reserved: upfront amortised + recurring, per replica

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
    covered_s = hour_covered_s(horizon_s)
    od_per_s = dep.price_usd_per_hour / S_PER_HOUR
    rate = np.full((num_replicas, len(covered_s)), od_per_s)
    minimum = np.zeros(num_replicas)
    unused = np.zeros(len(covered_s))
    util_per_s, effective = 0.0, None
    if cfg.model in ("on_demand", "spot"):
        if cfg.model == "spot":
            rate[:] = cfg.spot_usd_per_device_hour * dep.num_devices / S_PER_HOUR
        min_s = DEFAULT_MIN_CHARGE_S if cfg.min_charge_s is None else cfg.min_charge_s
        minimum[:] = max(0.0, min_s - horizon_s) * rate[0, 0]
    elif cfg.model == "reserved":
        effective = reserved_effective_usd_per_hour(cfg) * dep.num_devices
        rate[:] = effective / S_PER_HOUR
    elif cfg.model == "savings_plan":
        factor, unused = savings_plan_hours(cfg, num_replicas * od_per_s * covered_s, covered_s)
        rate *= factor[None, :]
    elif cfg.model == "owned":
        rate[:], util_per_s = owned_rates(cfg, site, dep)
    return Tariff(cfg.model, rate, util_per_s, minimum, unused, np.full(num_replicas, od_per_s), dep.price_usd_per_hour,
                  effective)


def fleet_tariff(cfg: PricingConfig, site: SiteConfig, pools: list[Pool], horizon_s: float) -> Tariff:
    """The tariff of a fleet of pools. Pools of one deployment are one pool; pools of different
    devices are priced on demand only (config refuses the rest), each replica at its own rate."""
    if _one_deployment(pools):
        return tariff(cfg, site, pools[0].deployment, sum(p.replicas for p in pools), horizon_s)
    parts = [tariff(cfg, site, p.deployment, p.replicas, horizon_s) for p in pools]
    replicas = sum(p.replicas for p in pools)
    return Tariff(cfg.model, np.vstack([t.time_usd_per_s for t in parts]), 0.0,
                  np.concatenate([t.minimum_usd for t in parts]), np.zeros(len(hour_covered_s(horizon_s))),
                  np.concatenate([t.list_usd_per_s for t in parts]),
                  sum(t.on_demand_usd_per_hour * p.replicas for t, p in zip(parts, pools)) / replicas, None)


def fleet_bill_usd(cfg: PricingConfig, pools: list[Pool], horizon_s: float, energy: Energy) -> float:
    """`bill_usd` for a fleet of pools (one pool when they share a deployment)."""
    if _one_deployment(pools):
        return bill_usd(cfg, pools[0].deployment, sum(p.replicas for p in pools), horizon_s, energy)
    return sum(bill_usd(cfg, p.deployment, p.replicas, horizon_s, energy) for p in pools)


def reserved_effective_usd_per_hour(cfg: PricingConfig) -> float:
    """Per device: upfront / (8760 x years) + recurring hourly."""
    return cfg.upfront_usd_per_device / (HOURS_PER_YEAR * cfg.term_years) + cfg.recurring_usd_per_device_hour


def savings_plan_hours(cfg: PricingConfig, usage_usd: np.ndarray, covered_s: np.ndarray):
    """Per hour: the factor that turns on-demand usage into its share of the bill, and the
    commitment lost. Bill = C + max(0, U - C / (1 - d)); below the commitment usage costs
    U (1 - d) and C - U (1 - d) is lost; above it, the whole bill is usage."""
    d = cfg.discount
    commit = cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR
    bill = commit + np.maximum(0.0, usage_usd - commit / (1 - d))
    unused = np.maximum(0.0, commit - usage_usd * (1 - d))
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(usage_usd > 0, (bill - unused) / usage_usd, 1 - d)
    return factor, unused


def owned_rates(cfg: PricingConfig, site: SiteConfig, dep: Deployment) -> tuple[float, float]:
    """$/s per replica: amortised capital plus idle power, and the extra power cost at u = 1."""
    years = DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
    capex_per_s = cfg.capex_usd_per_device * dep.num_devices / (years * HOURS_PER_YEAR * S_PER_HOUR)
    usd_per_j = cfg.usd_per_kwh * site.pue / J_PER_KWH
    return capex_per_s + dep.idle_w * usd_per_j, (dep.peak_w - dep.idle_w) * usd_per_j


def bill_usd(cfg: PricingConfig, dep: Deployment, num_replicas: int, horizon_s: float, energy: Energy) -> float:
    """The fleet's bill from the pricing formulas alone (no step log): the number the ledger's
    allocated plus unallocated dollars must add up to."""
    n, hours = num_replicas, horizon_s / S_PER_HOUR
    if cfg.model in ("on_demand", "spot"):
        per_hour = dep.price_usd_per_hour if cfg.model == "on_demand" else cfg.spot_usd_per_device_hour * dep.num_devices
        min_s = DEFAULT_MIN_CHARGE_S if cfg.min_charge_s is None else cfg.min_charge_s
        return n * max(horizon_s, min_s) * per_hour / S_PER_HOUR
    if cfg.model == "reserved":
        return n * hours * reserved_effective_usd_per_hour(cfg) * dep.num_devices
    if cfg.model == "savings_plan":
        covered_s = hour_covered_s(horizon_s)
        usage = n * dep.price_usd_per_hour * covered_s / S_PER_HOUR
        commit = cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR
        return float(np.sum(commit + np.maximum(0.0, usage - commit / (1 - cfg.discount))))
    years = DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
    capex = n * hours * cfg.capex_usd_per_device * dep.num_devices / (years * HOURS_PER_YEAR)
    return capex + energy.total_kwh * cfg.usd_per_kwh


def _one_deployment(pools: list[Pool]) -> bool:
    return all(p.deployment == pools[0].deployment for p in pools)
