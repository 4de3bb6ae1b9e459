"""How a fleet is paid for and where it runs (pricing models, sites), and how the bill is handed
to requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simcost.errors import InputError
from simcost.scenario.budget import BudgetConfig
from simcost.scenario.cascade import WorkloadRate
from simcost.scenario.schema import bounds, check_variant_keys


@dataclass(frozen=True, kw_only=True)
class PricingConfig:
    """How the fleet is paid for (math in `simcost.cost.pricing`, docs/design.md section 4). The on-demand
    rate is fleet.price_usd_per_device_hour (or the catalog's); each model takes only its keys:
    on_demand: min_charge_s. spot: spot_usd_per_device_hour, min_charge_s.
    reserved: upfront_usd_per_device, recurring_usd_per_device_hour, term_years.
    savings_plan: commitment_usd_per_hour (whole fleet), discount.
    owned: capex_usd_per_device, usd_per_kwh, lifetime_years; and for its full cost of ownership
    colo_usd_per_device_month, staff_usd_per_device_month, maintenance_fraction_per_year,
    cost_of_capital, resale_fraction."""

    model: Literal["on_demand", "reserved", "savings_plan", "spot", "owned"] = "on_demand"
    min_charge_s: float | None = field(default=None, metadata=bounds(ge=0))  # None: 60 s (AWS, GCP)
    spot_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))
    upfront_usd_per_device: float | None = field(default=None, metadata=bounds(ge=0))
    recurring_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))
    term_years: float | None = field(default=None, metadata=bounds(gt=0))
    commitment_usd_per_hour: float | None = field(default=None, metadata=bounds(ge=0))
    discount: float | None = field(default=None, metadata=bounds(ge=0, le=0.99))
    capex_usd_per_device: float | None = field(default=None, metadata=bounds(ge=0))
    usd_per_kwh: float | None = field(default=None, metadata=bounds(ge=0))
    lifetime_years: float | None = field(default=None, metadata=bounds(gt=0))  # owned; None: 5
    # owned hardware's cost of ownership beyond capex and power (simcost.cost.pricing.owned_lifetime_usd_per_device);
    # None: 0. Colocation (space, power delivery, cooling) and staff per device-month, maintenance as a
    # share of capex a year, the annual cost of capital, and the share of capex the devices resell for
    # at the end of lifetime_years (set lifetime_years 1 or 3 to own for a 1- or 3-year term)
    colo_usd_per_device_month: float | None = field(default=None, metadata=bounds(ge=0))
    staff_usd_per_device_month: float | None = field(default=None, metadata=bounds(ge=0))
    maintenance_fraction_per_year: float | None = field(default=None, metadata=bounds(ge=0, le=1))
    cost_of_capital: float | None = field(default=None, metadata=bounds(ge=0, le=1))
    resale_fraction: float | None = field(default=None, metadata=bounds(ge=0, le=1))

    _NEEDS = {"on_demand": (), "spot": ("spot_usd_per_device_hour",),
              "reserved": ("upfront_usd_per_device", "recurring_usd_per_device_hour", "term_years"),
              "savings_plan": ("commitment_usd_per_hour", "discount"),
              "owned": ("capex_usd_per_device", "usd_per_kwh")}
    _OPTIONAL = {"on_demand": ("min_charge_s",), "spot": ("min_charge_s",),
                 "owned": ("lifetime_years", "colo_usd_per_device_month", "staff_usd_per_device_month",
                           "maintenance_fraction_per_year", "cost_of_capital", "resale_fraction")}

    def _check(self, path: str) -> None:
        check_variant_keys(self, path, "model", "pricing model", self._NEEDS, self._OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """Where the fleet runs. PUE default 1.2: an assumption for a modern cloud data centre (large
    operators report about 1.1-1.2; the industry-wide average is higher, about 1.5). Grid intensity
    default 400 gCO2/kWh: an assumption near the world-average grid; set your region's figure.
    provider (aws, gcp, coreweave, purchase, ...: a provider of configs/prices.yaml): the on-demand
    price per device is that provider's offer for the device in `region` (a provider-wide "any"
    offer matches every region); None: the device catalog's price.

    Sites of a fleet of pools (fleet.sites) also carry: `name` (what a pool's `site` names),
    `edge` (edge_first sends work here first), `client_rtt_s` (the network round trip between the
    site and its clients, added once to the TTFT and E2EL its clients see: summary `network`) and
    `egress_usd_per_gb` (the price of bytes leaving the site; None: 0.09 $/GB, AWS internet egress
    in its first 10 TB tier, docs/design.md section 4, for a site of fleet.sites, and 0 for the one-site
    shorthand fleet.site, whose bills predate egress)."""

    name: str = "default"
    region: str = "us-east-1"
    provider: str | None = None
    pue: float = field(default=1.2, metadata=bounds(ge=1))
    grid_gco2_per_kwh: float = field(default=400.0, metadata=bounds(ge=0))
    edge: bool = False
    client_rtt_s: float = field(default=0.0, metadata=bounds(ge=0))
    egress_usd_per_gb: float | None = field(default=None, metadata=bounds(ge=0))


DEFAULT_EGRESS_USD_PER_GB = 0.09  # AWS data transfer out to the internet, first 10 TB/month tier (docs/design.md section 4)


@dataclass(frozen=True, kw_only=True)
class CostConfig:
    """How the bill is handed to requests (`simcost.cost.ledger`). Each record's cost (a prefill step or
    a span of decode steps) is split over its members: `tokens` in proportion to tokens x the
    weight of their kind (prompt or output), `equal` in equal shares; a record whose weights are
    all 0 is split equally, so no dollar is lost. Unallocated cost (idle time, minimum charges,
    unused commitment) stays its own line (`showback`) or is spread over requests in proportion
    to their allocated cost (`chargeback`)."""

    allocation: Literal["tokens", "equal"] = "tokens"
    prefill_weight: float = field(default=1.0, metadata=bounds(ge=0))
    decode_weight: float = field(default=1.0, metadata=bounds(ge=0))
    unallocated: Literal["showback", "chargeback"] = "showback"
    # a monthly budget whose alerts are computed on the run's time series (simcost.scenario.budget)
    budget: BudgetConfig | None = None
    # conversion rate per workload (outcomes per completed request): summary unit_economics
    outcomes: tuple[WorkloadRate, ...] | None = None

    def _check(self, path: str) -> None:
        if self.allocation == "equal" and (self.prefill_weight, self.decode_weight) != (1.0, 1.0):
            raise InputError(f"{path}.allocation", "equal does not use prefill_weight/decode_weight; use allocation: tokens")
