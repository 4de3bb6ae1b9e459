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


def replica_columns(result, periods: list[tuple[str, str]], common: dict) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                                                  np.ndarray]:
    """The replicas' Usage rows as columns (name -> one value per row; nulls as None, or NaN in a
    float column), each row's clock hour and its provider: a row per replica and hour it was billed
    or ran (its hour windows, simcost.cost.hours), in replica then hour order; a replica-hour under
    a savings plan is split in two, the share the commitment covered (billed through the plan's
    Purchase rows, discounted) first, then the rest at the on-demand price."""
    bill, t, ra = result.bill, result.bill.tariff, result.bill.roster
    w = bill.hours
    life, hour = w.entry_life(), w.entry_hour()
    usd, list_s = bill.hour_usd.copy(), bill.hour_alive_s.copy()
    first_hour = np.minimum((ra.requested_s // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    top = (hour == first_hour[life]) & (t.minimum_usd[life] > 0)  # the minimum charge tops up its first hour
    usd[top] += t.minimum_usd[life[top]]
    list_s[top] += t.minimum_usd[life[top]] / t.rate_usd_per_s(life[top], hour[top])
    kept = np.flatnonzero((usd != 0) | (list_s != 0))  # the others: the replica did not exist in that hour
    life, hour, usd, list_s = life[kept], hour[kept], usd[kept], list_s[kept]
    listed, hours = list_s * t.list_usd_per_s[life], list_s / S_PER_HOUR
    pools = np.unique(ra.pool).tolist()
    model = {k: pool_pricing(result, k).model for k in pools}
    plan = np.array([model[k] for k in ra.pool.tolist()], dtype=object)
    committed = ~ra.spot & ((plan == "reserved") | (plan == "savings_plan"))
    reserved, saving = (committed & (plan == "reserved"))[life], (committed & (plan == "savings_plan"))[life]
    share = np.zeros(len(life))
    discount = np.zeros(len(life))
    for k in pools:
        if model[k] == "savings_plan":
            mine = saving & (ra.pool[life] == k)
            share[mine] = savings_plan_coverage(result, k, len(periods))[0][hour[mine]]
            discount[mine] = pool_pricing(result, k).discount
    covered = usd * share * (1 - discount) / (1 - share * discount)  # usd = listed x (1 - share d): Tariff's factor
    plain = ~reserved & ~saving
    # rows: (entry, 0) for a plain or reserved replica-hour or a plan's covered share, (entry, 1) its rest
    groups = {"plain": np.flatnonzero(plain), "reserved": np.flatnonzero(reserved),
              "covered": np.flatnonzero(saving & (share > 0)), "rest": np.flatnonzero(saving & (share < 1))}
    entry = np.concatenate(list(groups.values()))
    order = np.argsort(entry * 2 + np.repeat([0, 0, 0, 1], [len(g) for g in groups.values()]), kind="stable")
    g_plain, g_reserved, g_covered, g_rest = groups.values()  # (entries)

    def pick(values: dict[str, np.ndarray]) -> np.ndarray:
        """One value per row from each group's values (in group order), then in row order."""
        return np.concatenate([values[name] for name in groups])[order]

    rest_usd = usd[g_rest] - covered[g_rest]
    effective = pick({"plain": usd[g_plain], "reserved": usd[g_reserved], "covered": covered[g_covered], "rest": rest_usd})
    billed = pick({"plain": usd[g_plain], "reserved": np.zeros(len(g_reserved)), "covered": np.zeros(len(g_covered)),
                   "rest": rest_usd})
    list_usd = pick({"plain": listed[g_plain], "reserved": listed[g_reserved],
                     "covered": listed[g_covered] * share[g_covered], "rest": listed[g_rest] * (1 - share[g_rest])})
    contracted = pick({"plain": usd[g_plain], "reserved": listed[g_reserved],
                       "covered": listed[g_covered] * share[g_covered], "rest": rest_usd})
    quantity = pick({"plain": hours[g_plain], "reserved": hours[g_reserved], "covered": hours[g_covered] * share[g_covered],
                     "rest": hours[g_rest] * (1 - share[g_rest])})
    commitment_quantity = pick({"plain": np.full(len(g_plain), np.nan), "reserved": hours[g_reserved],
                                "covered": covered[g_covered], "rest": np.full(len(g_rest), np.nan)})
    row_life, row_hour = life[entry[order]], hour[entry[order]]

    def marks(**values) -> np.ndarray:
        """A value per group (plain, reserved, covered, rest), one per row."""
        return pick({g: np.full(len(groups[g]), values[g], dtype=object) for g in groups})

    def per_life(values: list) -> np.ndarray:
        return _objects(values)[row_life]

    def per_pool(values: dict) -> np.ndarray:
        return _objects([values.get(k) for k in range(max(pools, default=-1) + 1)])[ra.pool[row_life]]

    name, n_rows, lives = result.scenario.name, len(row_life), range(len(ra.pool))
    deps = {k: result.pools[k].deployment for k in pools}
    category = per_life([category_of(result, r) for r in lives])
    category[np.flatnonzero(marks(plain=False, reserved=False, covered=False, rest=True).astype(bool))] = "Standard"
    columns = {**{k: np.full(n_rows, v, dtype=object) for k, v in common.items()},
               "PricingCategory": category,
               "ResourceId": per_life([f"{name}/replica-{r}" for r in lives]),
               "ResourceName": per_life([f"replica-{r}" for r in lives]),
               "ResourceType": per_pool({k: f"{d.tensor_parallel}x {d.device.key}" for k, d in deps.items()}),
               "RegionId": per_pool({k: site_of(result, k).region for k in pools}),
               "ChargeDescription": per_life([f"replica-{r}: {deps[k].model.key} on {deps[k].num_devices} x "
                                              f"{deps[k].device.key}" for r, k in enumerate(ra.pool.tolist())]),
               "ChargeCategory": np.full(n_rows, "Usage", dtype=object),
               "ChargeFrequency": np.full(n_rows, "Usage-Based", dtype=object),
               "BilledCost": billed, "EffectiveCost": effective, "ListCost": list_usd, "ContractedCost": contracted,
               "PricingQuantity": quantity, "PricingUnit": np.full(n_rows, "Hours", dtype=object),
               "CommitmentDiscountQuantity": commitment_quantity,
               "CommitmentDiscountStatus": marks(plain=None, reserved="Used", covered="Used", rest=None),
               "CommitmentDiscountUnit": marks(plain=None, reserved="Hours", covered="USD", rest=None)}
    with np.errstate(invalid="ignore", divide="ignore"):  # null where the quantity is 0 (usage_row)
        columns["ListUnitPrice"] = np.where(quantity > 0, list_usd / quantity, np.nan)
        columns["ContractedUnitPrice"] = np.where(quantity > 0, contracted / quantity, np.nan)
    with_commitment = marks(plain=False, reserved=True, covered=True, rest=False).astype(bool)
    plans = {k: commitment_columns(result, k) for k in pools if model[k] in ("reserved", "savings_plan")}
    for key in ("CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountType", "CommitmentDiscountCategory"):
        values = per_pool({k: c[key] for k, c in plans.items()})
        values[~with_commitment] = None
        columns[key] = values
    return columns, row_hour, per_pool({k: provider_of(result, k) for k in pools})


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


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
