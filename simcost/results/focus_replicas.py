"""FOCUS rows for the replicas and the commitments they draw on (simcost.results.focus): a Usage
row per replica and clock hour, split where a savings plan covered only part of the hour, and the
Purchase and Unused rows of savings plans and reservations. Which pricing model gives which rows
is in simcost.results.focus's docstring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from simcost.cost.energy import hour_covered_s
from simcost.cost.pricing import CATEGORY, savings_plan_hours
from simcost.units import HOURS_PER_YEAR, S_PER_HOUR

PROVIDER = "simcost simulation"  # provider, publisher and invoice issuer when the site names no provider


def replica_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    bill, t, ra = result.bill, result.bill.tariff, result.bill.roster
    alive_s, windows = bill.hour_alive_s, bill.hours
    first_hour = np.minimum((ra.requested_s // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    coverage = {k: savings_plan_coverage(result, k, len(periods)) for k in np.unique(ra.pool).tolist()
                if pool_pricing(result, k).model == "savings_plan"}
    rows = []
    for r in range(windows.num_lives):
        k = int(ra.pool[r])
        cfg, dep = pool_pricing(result, k), result.pools[k].deployment
        committed = not ra.spot[r] and cfg.model in ("reserved", "savings_plan")
        columns = {**common, "PricingCategory": category_of(result, r), "ResourceId": f"{result.scenario.name}/replica-{r}",
                   "ResourceName": f"replica-{r}", "ResourceType": f"{dep.tensor_parallel}x {dep.device.key}",
                   "RegionId": site_of(result, k).region, "_provider": provider_of(result, k),
                   "ChargeDescription": f"replica-{r}: {dep.model.key} on {dep.num_devices} x {dep.device.key}"}
        for e in range(windows.offset[r], windows.offset[r + 1]):
            h = int(windows.first_hour[r] + e - windows.offset[r])
            period = periods[h]
            usd, list_s = float(bill.hour_usd[e]), float(alive_s[e])
            if h == first_hour[r] and t.minimum_usd[r] > 0:  # the minimum charge tops up its first hour
                usd += float(t.minimum_usd[r])
                list_s += float(t.minimum_usd[r] / t.rate_usd_per_s(r, h))
            if usd == 0 and list_s == 0:
                continue  # the replica did not exist in that hour
            listed, hours = list_s * float(t.list_usd_per_s[r]), list_s / S_PER_HOUR
            if committed and cfg.model == "reserved":  # paid by the Purchase rows, amortised here
                rows.append(usage_row(period, usd, 0.0, listed, listed, hours, **columns,
                                      **commitment_columns(result, k), CommitmentDiscountStatus="Used",
                                      CommitmentDiscountQuantity=hours, CommitmentDiscountUnit="Hours"))
            elif committed:
                rows += _savings_plan_split(result, k, period, usd, listed, hours, float(coverage[k][0][h]), columns)
            else:
                rows.append(usage_row(period, usd, usd, listed, usd, hours, **columns))
    return rows


def _savings_plan_split(result, pool: int, period: tuple[str, str], usd: float, listed: float, hours: float,
                        share: float, columns: dict) -> list[dict]:
    """A replica-hour under a savings plan: the share the commitment covered (billed through the
    plan's Purchase rows, discounted) and the rest at the on-demand price."""
    d = pool_pricing(result, pool).discount
    covered_usd = usd * share * (1 - d) / (1 - share * d)  # usd = listed x (1 - share d): Tariff's factor
    rows = []
    if share > 0:
        rows.append(usage_row(period, covered_usd, 0.0, listed * share, listed * share, hours * share, **columns,
                              **commitment_columns(result, pool), CommitmentDiscountStatus="Used",
                              CommitmentDiscountQuantity=covered_usd, CommitmentDiscountUnit="USD"))
    if share < 1:
        rest = usd - covered_usd
        rows.append(usage_row(period, rest, rest, listed * (1 - share), rest, hours * (1 - share),
                              **{**columns, "PricingCategory": "Standard"}))
    return rows


def commitment_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """Each pool's commitment: a savings plan's hourly fee (Purchase) and its unused part (Usage,
    Status Unused); a reservation's upfront (One-Time Purchase) and recurring fees."""
    ra = result.bill.roster
    covered_h = hour_covered_s(result.horizon_s)[:len(periods)] / S_PER_HOUR
    rows = []
    for k in np.unique(ra.pool).tolist():
        cfg = pool_pricing(result, k)
        if cfg.model not in ("savings_plan", "reserved"):
            continue
        columns = {**common, **commitment_columns(result, k), "PricingCategory": "Committed",
                   "ResourceType": "Savings Plan" if cfg.model == "savings_plan" else "Reservation",
                   "ResourceId": commitment_columns(result, k)["CommitmentDiscountId"], "RegionId": site_of(result, k).region,
                   "_provider": provider_of(result, k)}
        if cfg.model == "savings_plan":
            _, unused_usd = savings_plan_coverage(result, k, len(periods))
            for h, period in enumerate(periods):
                fee = cfg.commitment_usd_per_hour * covered_h[h]
                rows.append(_purchase(period, fee, "Recurring", covered_h[h], "Hours", cfg.commitment_usd_per_hour,
                                      columns, fee, "USD", "savings plan: the hour's commitment"))
                if unused_usd[h] > 0:
                    rows.append(usage_row(period, float(unused_usd[h]), 0.0, 0.0, 0.0, float(covered_h[h]), **columns,
                                          CommitmentDiscountStatus="Unused", CommitmentDiscountQuantity=float(unused_usd[h]),
                                          CommitmentDiscountUnit="USD",
                                          ChargeDescription="savings plan: commitment no usage drew on"))
            continue
        n, devices = int((ra.pool == k).sum()), result.pools[k].deployment.num_devices
        term_h = HOURS_PER_YEAR * cfg.term_years
        rows.append(_purchase(periods[0], cfg.upfront_usd_per_device * devices * n, "One-Time", float(n * devices),
                              "Devices", cfg.upfront_usd_per_device, columns, n * term_h, "Hours",
                              f"reservation: upfront fee for {n} replicas x {devices} devices, {cfg.term_years:g}-year term"))
        for h, period in enumerate(periods):
            fee = cfg.recurring_usd_per_device_hour * devices * n * covered_h[h]
            if fee > 0:
                rows.append(_purchase(period, fee, "Recurring", n * covered_h[h], "Hours",
                                      cfg.recurring_usd_per_device_hour * devices, columns, n * covered_h[h], "Hours",
                                      "reservation: recurring hourly fee"))
    return rows


def _purchase(period: tuple[str, str], usd: float, frequency: str, quantity: float, unit: str, unit_price: float,
              columns: dict, commitment_quantity: float, commitment_unit: str, description: str) -> dict:
    """A commitment's Purchase row: billed now, EffectiveCost 0 (its cost is amortised into usage)."""
    begin, end = period
    return {**columns, "ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Purchase",
            "ChargeFrequency": frequency, "BilledCost": float(usd), "EffectiveCost": 0.0, "ListCost": float(usd),
            "ContractedCost": float(usd), "PricingQuantity": float(quantity), "PricingUnit": unit,
            "ListUnitPrice": float(unit_price), "ContractedUnitPrice": float(unit_price),
            "CommitmentDiscountQuantity": float(commitment_quantity), "CommitmentDiscountUnit": commitment_unit,
            "ChargeDescription": description}


def commitment_columns(result, pool: int) -> dict:
    """The CommitmentDiscount* columns naming a pool's savings plan or reservation."""
    cfg, label = pool_pricing(result, pool), result.pools[pool].label
    plan = cfg.model == "savings_plan"
    return {"CommitmentDiscountId": f"{result.scenario.name}/{label}/{'savings-plan' if plan else 'reservation'}",
            "CommitmentDiscountName": f"{label} {'savings plan' if plan else 'reserved capacity'}",
            "CommitmentDiscountType": "Savings Plan" if plan else "Reserved Instance",
            "CommitmentDiscountCategory": "Spend" if plan else "Usage"}


def usage_row(period: tuple[str, str], effective: float, billed: float, listed: float, contracted: float,
              hours: float, **columns: Any) -> dict:
    """A Usage-Based row priced in hours; unit prices follow from cost / quantity."""
    begin, end = period
    return {**columns, "ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
            "ChargeFrequency": "Usage-Based", "BilledCost": float(billed), "EffectiveCost": float(effective),
            "ListCost": float(listed), "ContractedCost": float(contracted), "PricingQuantity": float(hours),
            "PricingUnit": "Hours", "ListUnitPrice": listed / hours if hours > 0 else None,
            "ContractedUnitPrice": contracted / hours if hours > 0 else None}


def savings_plan_coverage(result, pool: int, n_hours: int) -> tuple[np.ndarray, np.ndarray]:
    """Per hour, for a pool under a savings plan: the share of its on-demand usage the commitment
    covered (C / (1 - d) of it at most) and the commitment nobody used (`savings_plan_hours`)."""
    ra, t = result.bill.roster, result.bill.tariff
    cfg = pool_pricing(result, pool)
    mine = (ra.pool == pool) & ~ra.spot
    hours, entries = result.bill.hours.select(mine)
    usage_usd = hours.column_sums(result.bill.hour_alive_s[entries] * hours.per_entry(t.list_usd_per_s[mine]))[:n_hours]
    covered_s = hour_covered_s(result.horizon_s)[:n_hours]
    _, unused_usd = savings_plan_hours(cfg, usage_usd, covered_s)
    commit_usd = cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(usage_usd > 0, np.minimum(1.0, commit_usd / ((1 - cfg.discount) * usage_usd)), 0.0)
    return share, unused_usd


def category_of(result, r: int) -> str:
    """A replica's FOCUS PricingCategory: spot is Dynamic; pools priced differently each by its own model."""
    t, ra = result.bill.tariff, result.bill.roster
    if ra.spot[r]:
        return "Dynamic"
    return CATEGORY[t.replica_model[r]] if t.replica_model else t.category


def pool_pricing(result, pool: int):
    """The pricing section a pool is billed by (each pool of fleet.pools has its own)."""
    return result.plan[pool].fleet.pricing


def site_of(result, pool: int):
    """The site a pool runs at (every pool's fleet section has one)."""
    return result.plan[pool].fleet.site


def provider_of(result, pool: int) -> str:
    return site_of(result, pool).provider or PROVIDER


def hours_of(period: tuple[str, str]) -> float:
    begin, end = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in period)
    return (end - begin).total_seconds() / S_PER_HOUR
