"""Commitment planning: how much reserved capacity, or which savings-plan commitment, to buy for
a demand curve, and what it saves against paying for everything on demand (docs/design.md section 4).

Demand D_h is the number of devices needed in hour h = 1..H: from a run (`demand_curve`), often
tiled to a week (`tile_to_week`), or brought along as a plain array. o is the on-demand price and
r the effective reserved price, both per device-hour (`pricing.reserved_effective_usd_per_hour`:
upfront / (8760 x years) + recurring).

Reserved: R devices are paid every hour of the term whether used or not; demand above R runs on
demand:
    cost(R) = R r H + o sum_h max(0, D_h - R).
cost is convex and piecewise linear in R with slope r H - o #{h : D_h > R}: one more reserved
device pays off while it would be busy in more than a share b = r / o of the hours, the
break-even utilisation. So the continuous optimum is R* = D_(k+1), the (k+1)-th largest hourly
demand with k = floor(b H) (the (1 - b) quantile of the curve; R* = 0 when b >= 1), and, by
convexity, the best whole number of devices is floor(R*) or ceil(R*).

Savings plan: a commitment of C $/h with discount d; usage at on-demand prices U_h = o D_h; each
hour bills C + max(0, U_h - C / (1 - d)) (`pricing.savings_plan_hours`). Writing x = C / (1 - d),
the on-demand usage the commitment covers, the total is (1 - d) x H + sum_h max(0, U_h - x): the
reserved problem with b = 1 - d. So C* = (1 - d) U_(k+1) with k = floor((1 - d) H), and the cost
is linear between the breakpoints C = (1 - d) U_h, where its minimum lies.

Both optima are computed two ways: exactly (the quantile above) and with
`scipy.optimize.minimize_scalar` (bounded) on the continuous cost, finished by checking the
neighbouring integers (reserved) or breakpoints (savings plan); the tests check they agree.
Left out: reserving whole instances (8 GPUs for a p5) rather than devices, layering a savings
plan over reservations, and demand uncertainty (the curve is taken as the expected week).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from simcost.cost.energy import hour_covered_s, split_steps_by_hour
from simcost.cost.hours import HourWindows
from simcost.cost.pricing import reserved_effective_usd_per_hour, savings_plan_hours
from simcost.errors import InputError
from simcost.scenario.pricing import PricingConfig
from simcost.units import S_PER_HOUR

HOURS_PER_WEEK = 168
# Assumptions (prefer passing your own quote). Source: docs/references/pricing_reference.md, AWS
# us-east-1 price snapshot of 2025-06: "1-year GPU reservations are commonly quoted at 35-40 % off
# (secondary sources, not authoritative)"; we take the low end because no-upfront is the least
# discounted payment option.
DEFAULT_RESERVED_DISCOUNT = 0.35  # 1-year, no upfront, vs on-demand
# A compute savings plan trades discount for flexibility, so it is put below the reservation:
# AWS advertises Compute Savings Plans at "up to 66 %" off (the best case, 3-year terms); the
# vantage.sh blog "What is an AWS Savings Plan" (undated, not re-checked) puts most savings
# "closer to 30 %". Assumption.
DEFAULT_SAVINGS_PLAN_DISCOUNT = 0.30  # 1-year, no upfront
BASES = ("provisioned", "busy")
METHODS = ("exact", "scipy")


# --- demand -----------------------------------------------------------------------------------

def demand_curve(result, basis: str = "provisioned", period_s: float = S_PER_HOUR) -> np.ndarray:
    """Devices needed in each period of a run (`sim.RunResult`): device-seconds in the period /
    the seconds of the period the run covers (the mean number of devices; a partial last period
    counts at its mean rate, not diluted, since the run stands for a longer term).

    basis="provisioned" (default): the devices billed in each period, what the fleet runs and pays
    for on demand whether busy or not (a static fleet's curve is flat, so the plan commits to all
    of it; an autoscaled fleet's follows its replicas).
    basis="busy": devices running an engine step, summed over replicas (busy seconds x devices
    per replica): what an ideal autoscaled fleet would run, a lower bound on demand. A replica
    with any request in flight is busy, so under continuous batching this tracks load only
    when the fleet is not saturated.

    period_s other than 3600 makes each period one billing hour: for time-compressed scenarios
    (a day played in 24 minutes: period_s=60)."""
    if basis not in BASES:
        raise InputError("basis", f"'{basis}'; expected one of {', '.join(BASES)}")
    if not period_s > 0:
        raise InputError("period_s", f"{period_s}; expected > 0")
    devices = _replica_devices(result)
    # split_steps_by_hour cuts at clock hours; rescaling time turns each period into an hour
    scale = S_PER_HOUR / period_s
    covered_s = hour_covered_s(result.horizon_s * scale) / scale
    ra, steps = result.bill.roster, result.steps
    # each replica's hours (periods), from its request to gone and its steps: sums over them, in
    # replica order, rather than a (replicas, hours) matrix (10^5 lives x 10^4 hours in a long run)
    windows = HourWindows.of_intervals(ra.requested_s * scale, ra.gone_s * scale, len(covered_s),
                                       steps.step_start_s * scale, steps.step_end_s * scale, steps.step_replica)
    if basis == "provisioned":  # each replica's devices over the time it was billed
        scaled_s = windows.overlap_s(ra.requested_s * scale, ra.gone_s * scale)
    else:
        scaled_s, _ = split_steps_by_hour(steps.step_start_s * scale, steps.step_end_s * scale, steps.step_replica,
                                          np.ones(len(steps.step_start_s)), windows.first_hour, windows.offset,
                                          len(covered_s))
    device_s = windows.column_sums(windows.per_entry(devices) * (scaled_s / scale))
    return np.divide(device_s, covered_s, out=np.zeros_like(device_s), where=covered_s > 0)


def tile_to_week(demand, hours: int = HOURS_PER_WEEK) -> np.ndarray:
    """Repeat a shorter curve cyclically (hours 0, 1, .., n-1, 0, 1, ..) up to `hours` values; a
    curve at least that long is returned whole. This assumes the simulated window is
    representative of the week (a run of one busy hour makes a week of busy hours)."""
    d = as_demand(demand)
    return d if len(d) >= hours else np.resize(d, hours)


def as_demand(demand) -> np.ndarray:
    """A demand curve as a float array (devices per hour), checked."""
    d = np.asarray(demand, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise InputError("demand", f"shape {d.shape}; expected a non-empty list of devices per hour")
    if not np.all(np.isfinite(d)) or (d < 0).any():
        raise InputError("demand", "expected finite values >= 0 (devices per hour)")
    return d


def _replica_devices(result) -> np.ndarray:
    """Devices per replica, for every replica the run had (simcost.lifecycle.Roster)."""
    return np.array([result.pools[k].deployment.num_devices for k in result.bill.roster.pool], dtype=np.float64)


class _Saving:
    """What a plan saves against putting the same demand all on demand."""

    cost_usd: float
    on_demand_cost_usd: float

    @property
    def saving_usd(self) -> float:
        return self.on_demand_cost_usd - self.cost_usd

    @property
    def saving_fraction(self) -> float:
        return self.saving_usd / self.on_demand_cost_usd if self.on_demand_cost_usd else 0.0


# --- reserved ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReservedPlan(_Saving):
    devices: int  # R: reserved devices, paid every hour
    on_demand_usd_per_device_hour: float
    reserved_usd_per_device_hour: float  # effective: upfront amortised + recurring
    hours: int
    cost_usd: float  # reserved + on-demand overflow, over the curve's hours
    on_demand_cost_usd: float  # the same demand, all on demand
    device_utilization: np.ndarray  # each reserved device's share of hours used, device 1 the base load
    method: str

    @property
    def break_even_utilization(self) -> float:
        """The share of hours a reserved device must be used to beat on demand: r / o."""
        return self.reserved_usd_per_device_hour / self.on_demand_usd_per_device_hour

    @property
    def mean_utilization(self) -> float | None:
        return float(self.device_utilization.mean()) if self.devices else None


def reserved_cost_usd(demand, devices, on_demand_usd_per_device_hour: float, reserved_usd_per_device_hour: float):
    """cost(R) = R r H + o sum_h max(0, D_h - R), for one R or an array of them."""
    d = as_demand(demand)
    r = np.asarray(devices, dtype=np.float64)
    overflow = np.maximum(0.0, d[:, None] - r.reshape(1, -1)).sum(axis=0)
    cost = r.reshape(-1) * reserved_usd_per_device_hour * len(d) + on_demand_usd_per_device_hour * overflow
    return float(cost[0]) if r.ndim == 0 else cost.reshape(r.shape)


def plan_reserved(demand, on_demand_usd_per_device_hour: float, reserved_usd_per_device_hour: float,
                  method: str = "exact") -> ReservedPlan:
    """The whole number of reserved devices that minimises cost(R) (module docstring)."""
    d, od, rsv = as_demand(demand), on_demand_usd_per_device_hour, reserved_usd_per_device_hour
    _check_prices(od, rsv)

    def cost(reserved: float | np.ndarray) -> float | np.ndarray:  # one count (scipy) or an array of them
        return reserved_cost_usd(d, reserved, od, rsv)

    top = math.ceil(d.max())
    if method == "exact":
        r_star = quantile_optimum(d, rsv / od)
        candidates = np.array([math.floor(r_star), math.ceil(r_star)])
    elif method == "scipy":
        x = minimize_scalar(cost, bounds=(0.0, float(d.max())), method="bounded").x if top else 0.0
        # the continuous optimum is within xatol of x: its floor and ceil are among these
        candidates = np.arange(max(0, math.floor(x) - 1), min(top, math.ceil(x) + 1) + 1)
    else:
        raise InputError("method", f"'{method}'; expected one of {', '.join(METHODS)}")
    costs = np.asarray(cost(candidates))
    best = int(candidates[np.argmin(costs)])  # ties: the fewer devices (less to lose)
    return ReservedPlan(best, od, rsv, len(d), float(costs.min()), od * float(d.sum()), reserved_utilization(d, best),
                        method)


def quantile_optimum(values: np.ndarray, break_even: float) -> float:
    """argmin_x of break_even x H + sum_h max(0, v_h - x): the (k+1)-th largest value, k =
    floor(break_even H); 0 when break_even >= 1 (committing never pays). When break_even H is a
    whole number the cost is flat between two values; rounding k down there still lands on it."""
    k = math.floor(break_even * len(values))
    return 0.0 if k >= len(values) else float(np.sort(values)[::-1][k])


def reserved_utilization(demand, devices: int) -> np.ndarray:
    """Each reserved device's share of the hours it is used, stacking demand on devices 1, 2, ..:
    device i carries clip(D_h - (i - 1), 0, 1) of hour h."""
    d = as_demand(demand)
    return np.clip(d[None, :] - np.arange(devices)[:, None], 0.0, 1.0).mean(axis=1)


# --- savings plan -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SavingsPlanChoice(_Saving):
    commitment_usd_per_hour: float  # C
    discount: float  # d
    on_demand_usd_per_device_hour: float
    hours: int
    cost_usd: float  # commitment + usage above it, over the curve's hours
    on_demand_cost_usd: float
    unused_commitment_usd: float  # commitment paid for and not used (lost)
    method: str

    @property
    def break_even_utilization(self) -> float:
        """The share of hours a dollar of commitment must be used to beat on demand: 1 - d."""
        return 1.0 - self.discount

    @property
    def covered_devices(self) -> float:
        """Devices' worth of on-demand usage the commitment covers each hour: C / ((1 - d) o)."""
        return self.commitment_usd_per_hour / ((1.0 - self.discount) * self.on_demand_usd_per_device_hour)


def savings_plan_cost_usd(demand, on_demand_usd_per_device_hour: float, discount: float,
                          commitment_usd_per_hour: float) -> tuple[float, float]:
    """(bill, unused commitment) over the curve's hours, from `pricing.savings_plan_hours`."""
    usage_usd = as_demand(demand) * on_demand_usd_per_device_hour
    cfg = PricingConfig(model="savings_plan", commitment_usd_per_hour=float(commitment_usd_per_hour), discount=discount)
    factor, unused_usd = savings_plan_hours(cfg, usage_usd, np.full(len(usage_usd), S_PER_HOUR))
    # savings_plan_hours splits each hour's bill into a share of usage and the lost commitment
    return float((factor * usage_usd + unused_usd).sum()), float(unused_usd.sum())


def plan_savings_plan(demand, on_demand_usd_per_device_hour: float, discount: float,
                      method: str = "exact") -> SavingsPlanChoice:
    """The hourly commitment C that minimises the savings-plan bill (module docstring)."""
    d, od = as_demand(demand), on_demand_usd_per_device_hour
    _check_prices(od, od)
    if not 0.0 <= discount < 1.0:
        raise InputError("discount", f"{discount}; expected 0 <= discount < 1")

    def cost(commit_usd_per_hour: float) -> float:
        return savings_plan_cost_usd(d, od, discount, commit_usd_per_hour)[0]

    usage_usd = d * od
    if method == "exact":
        commit = (1.0 - discount) * quantile_optimum(usage_usd, 1.0 - discount)
    elif method == "scipy":
        commit = _scipy_commitment(cost, np.unique(np.append((1.0 - discount) * usage_usd, 0.0)))
    else:
        raise InputError("method", f"'{method}'; expected one of {', '.join(METHODS)}")
    bill_usd, unused_usd = savings_plan_cost_usd(d, od, discount, commit)
    return SavingsPlanChoice(commit, discount, od, len(d), bill_usd, float(usage_usd.sum()), unused_usd, method)


def _scipy_commitment(cost, breakpoints: np.ndarray) -> float:
    """minimize_scalar finds the linear piece holding the optimum (to xatol); the cost is linear
    on each piece, so the best of the breakpoints around it is exact."""
    if breakpoints[-1] == 0:
        return 0.0
    x = minimize_scalar(cost, bounds=(0.0, float(breakpoints[-1])), method="bounded").x
    i = int(np.searchsorted(breakpoints, x))
    near = breakpoints[max(0, i - 2): i + 2]
    return float(near[np.argmin([cost(c) for c in near])])


def _check_prices(on_demand: float, reserved: float) -> None:
    if not on_demand > 0:
        raise InputError("on_demand_usd_per_device_hour", f"{on_demand}; expected > 0")
    if not reserved >= 0:
        raise InputError("reserved_usd_per_device_hour", f"{reserved}; expected >= 0")


# --- from a run -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CommitmentPlan:
    demand: np.ndarray  # devices per hour, as planned (tiled)
    basis: str
    period_s: float
    simulated_hours: int  # periods the run covered, before tiling
    reserved: ReservedPlan
    savings_plan: SavingsPlanChoice
    assumptions: list[str] = field(default_factory=list)

    @property
    def best(self) -> str:
        """The cheaper commitment: "reserved", "savings_plan", or "on_demand" when neither saves."""
        options = {"on_demand": self.reserved.on_demand_cost_usd, "reserved": self.reserved.cost_usd,
                   "savings_plan": self.savings_plan.cost_usd}
        return min(options, key=lambda k: (options[k], k != "on_demand"))


def plan_from_run(result, reserved_usd_per_device_hour: float | None = None, discount: float | None = None,
                  basis: str = "provisioned", period_s: float = S_PER_HOUR, week: bool = True) -> CommitmentPlan:
    """Both plans for a run's demand curve (tiled to a week unless week=False), at the run's
    on-demand price per device (the scenario's fleet.price_usd_per_device_hour or the catalog's).
    Defaults when not given: a reserved scenario's effective price and a savings-plan scenario's
    discount; otherwise DEFAULT_RESERVED_DISCOUNT and DEFAULT_SAVINGS_PLAN_DISCOUNT off on-demand
    (labelled assumptions, listed in the plan)."""
    od = _on_demand_usd_per_device_hour(result)
    pricing, notes = result.scenario.fleet.pricing, []
    if reserved_usd_per_device_hour is None:
        if pricing.model == "reserved":
            reserved_usd_per_device_hour = reserved_effective_usd_per_hour(pricing)
            notes.append("reserved price: the scenario's reserved pricing (upfront amortised + recurring)")
        else:
            reserved_usd_per_device_hour = od * (1.0 - DEFAULT_RESERVED_DISCOUNT)
            notes.append(f"reserved price: assumed {DEFAULT_RESERVED_DISCOUNT:.0%} off on-demand (1-year, no upfront; "
                         "pricing_reference.md, 2025-06); pass your quote")
    if discount is None:
        if pricing.model == "savings_plan":
            discount = pricing.discount
            notes.append("savings-plan discount: the scenario's")
        else:
            discount = DEFAULT_SAVINGS_PLAN_DISCOUNT
            notes.append(f"savings-plan discount: assumed {DEFAULT_SAVINGS_PLAN_DISCOUNT:.0%} (1-year, no upfront); "
                         "pass your quote")
    run_demand = demand_curve(result, basis, period_s)
    if week and len(run_demand) < HOURS_PER_WEEK:
        # a partial last period (the run's drain) would break the cycle being repeated
        whole = int(result.horizon_s // period_s)
        run_demand = run_demand[:whole] if whole else run_demand
        notes.append(f"{len(run_demand)} simulated hour(s) repeated to a week: assumes the run is representative")
    demand = tile_to_week(run_demand) if week else run_demand
    return CommitmentPlan(demand, basis, period_s, len(run_demand),
                          plan_reserved(demand, od, reserved_usd_per_device_hour),
                          plan_savings_plan(demand, od, discount), notes)


def _on_demand_usd_per_device_hour(result) -> float:
    prices = sorted({p.deployment.price_usd_per_hour / p.deployment.num_devices for p in result.pools})
    if len(prices) > 1:
        named = any(getattr(p, "name", "") for p in result.pools)  # fleet.pools, else a disaggregated decode pool
        raise InputError("fleet.pools" if named else "fleet.disaggregation.decode_hardware",
                         f"pools on devices at different prices ({', '.join(f'${p:.4g}' for p in prices)} per "
                         "device-hour); commitment planning takes one device type")
    return prices[0]


# --- report -----------------------------------------------------------------------------------

def format_plan(plan: CommitmentPlan) -> str:
    """A text table of both plans against pure on-demand."""
    rp, sp, d = plan.reserved, plan.savings_plan, plan.demand
    unit = "hour" if plan.period_s == S_PER_HOUR else f"{plan.period_s:g} s period (as an hour)"

    def row(name: str, commit: str, cost: float, saving: float, share: float, even: str) -> str:
        return f"{name:<14}{commit:>22}{cost:>14,.2f}{saving:>12,.2f}{share:>9.1%}{even:>12}"

    lines = [f"demand ({plan.basis}): {len(d)} hours from {plan.simulated_hours} simulated, one per {unit}; "
             f"devices min {d.min():.2f}, mean {d.mean():.2f}, max {d.max():.2f}",
             f"on-demand ${rp.on_demand_usd_per_device_hour:.4g}/device-h: ${rp.on_demand_cost_usd:,.2f} "
             f"over {len(d)} h",
             "",
             f"{'option':<14}{'commitment':>22}{'cost $':>14}{'saving $':>12}{'saving':>9}{'break-even':>12}",
             row("on-demand", "-", rp.on_demand_cost_usd, 0.0, 0.0, "-"),
             row("reserved", f"{rp.devices} device{'s' if rp.devices != 1 else ''}", rp.cost_usd, rp.saving_usd,
                 rp.saving_fraction, f"{rp.break_even_utilization:.1%}"),
             row("savings plan", f"${sp.commitment_usd_per_hour:,.2f}/h", sp.cost_usd, sp.saving_usd,
                 sp.saving_fraction, f"{sp.break_even_utilization:.1%}"),
             ""]
    if rp.devices:
        u = rp.device_utilization
        lines.append(f"reserved at ${rp.reserved_usd_per_device_hour:.4g}/device-h: device utilisation mean "
                     f"{rp.mean_utilization:.1%}, least-used {u[-1]:.1%} (break-even {rp.break_even_utilization:.1%})")
    lines.append(f"savings plan at {sp.discount:.0%} off: covers {sp.covered_devices:.2f} devices of usage, "
                 f"${sp.unused_commitment_usd:,.2f} of commitment unused")
    lines.append(f"cheapest: {plan.best.replace('_', ' ')}")
    lines += [f"assumption: {n}" for n in plan.assumptions]
    return "\n".join(lines)
