"""The bill in the FinOps Foundation's FOCUS 1.1 format: one row per replica per clock hour.

Every mandatory column of FOCUS 1.1 is there (`simcost.results.focus_spec`, which the tests check
each export against), so the simulated bill loads next to a real one. How simcost's pricing maps:
- on demand: Usage rows, BilledCost = EffectiveCost = ContractedCost; ListCost the on-demand price;
- spot: PricingCategory Dynamic, ListCost the on-demand price of the same time;
- savings plan: each hour's commitment is a Recurring Purchase row (BilledCost the commitment,
  EffectiveCost 0); usage it covers is a Usage row with CommitmentDiscount* columns, Status Used,
  BilledCost 0 and EffectiveCost its discounted cost; usage above it an on-demand row; commitment
  nobody used a Usage row with Status Unused (BilledCost 0, EffectiveCost the loss);
- reserved: the upfront fee is a One-Time Purchase row in the run's first hour, as though the term
  began with the run, and the recurring fee a Recurring Purchase row per hour (both EffectiveCost 0);
  the replicas' usage rows carry the amortised rate as EffectiveCost and BilledCost 0;
- owned: PricingCategory Other, ListCost what the time would cost on demand.
EffectiveCost sums to the bill (summary.json cost.total_usd); so does BilledCost, except that a
reservation bills its whole upfront fee where the bill amortises the window's share of it.
ContractedCost = ListCost outside spot, owned and the on-demand share: simcost models no negotiated
discounts, and FOCUS applies commitment discounts after contracted prices. Tag keys and custom
columns start with x_. The simulated clock starts at `start`; billing periods are calendar months.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from simcost.cost.energy import hour_covered_s
from simcost.cost.pricing import egress_usd_per_gb, warm_node_hour_usd
from simcost.results.focus_replicas import commitment_rows, hours_of, provider_of, replica_columns, site_of, usage_row
from simcost.results.focus_spec import COST_COLUMNS, DATE_COLUMNS
from simcost.results.focus_table import FocusTable
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED

DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SERVICE_NAME = "LLM inference (simcost simulation)"
COLUMNS = ("BillingAccountId", "BillingAccountName", "BillingPeriodStart", "BillingPeriodEnd", "InvoiceIssuerName",
           "ProviderName", "PublisherName", "ChargePeriodStart", "ChargePeriodEnd", "ChargeCategory", "ChargeClass",
           "ChargeFrequency", "ChargeDescription", "BilledCost", "EffectiveCost", "ListCost", "ContractedCost",
           "BillingCurrency", "PricingCategory", "PricingQuantity", "PricingUnit", "ListUnitPrice",
           "ContractedUnitPrice", "CommitmentDiscountId", "CommitmentDiscountName", "CommitmentDiscountType",
           "CommitmentDiscountCategory", "CommitmentDiscountStatus", "CommitmentDiscountQuantity",
           "CommitmentDiscountUnit", "ServiceCategory", "ServiceName", "ResourceId", "ResourceName", "ResourceType",
           "RegionId", "Tags")
FLOAT_COLUMNS = (*COST_COLUMNS, "PricingQuantity", "ListUnitPrice", "ContractedUnitPrice", "CommitmentDiscountQuantity")


def focus_rows(result, start: datetime = DEFAULT_START) -> list[dict]:
    """Every row of the run's bill, each with every column of COLUMNS (None where FOCUS allows null)."""
    return focus_table(result, start).rows()


def focus_table(result, start: datetime = DEFAULT_START) -> FocusTable:
    """Every row of the run's bill as columns: the replicas' rows (one or two per replica-hour)
    built column-wise, the few others (commitments, egress, warm nodes, APIs, cache) as rows."""
    bill, scenario, dep = result.bill, result.scenario, result.deployment
    periods = [_period(start, h, c) for h, c in enumerate(hour_covered_s(result.horizon_s))]
    tags = json.dumps({"x_scenario": scenario.name, "x_model": dep.model.key, "x_device": dep.device.key,
                       "x_pricing_model": bill.tariff.model}, sort_keys=True)
    common = {"BillingAccountId": f"simcost/{scenario.name}", "BillingAccountName": scenario.name,
              "BillingCurrency": "USD", "ServiceName": SERVICE_NAME, "ServiceCategory": "AI and Machine Learning",
              "Tags": tags}
    replicas = _complete_columns(periods, *replica_columns(result, periods, common))
    rows = commitment_rows(result, periods, common)
    rows += _egress_rows(result, periods, common) + _warm_rows(result, periods, common)
    rows += _api_rows(result, periods, common) + _cache_rows(result, periods, common)
    return replicas.concat(FocusTable.from_rows([_complete(row, result) for row in rows], COLUMNS, FLOAT_COLUMNS))


def _complete_columns(periods: list[tuple[str, str]], columns: dict[str, np.ndarray], hour: np.ndarray,
                      provider: np.ndarray) -> FocusTable:
    """`_complete` for rows given as columns (NaN: null in a float column), with each row's hour
    and provider."""
    n = len(hour)
    month = [_billing_period(begin) for begin, _ in periods]
    table = FocusTable.empty(COLUMNS, FLOAT_COLUMNS)
    values, nulls = {}, {}
    for name in COLUMNS:
        if name in columns:
            values[name] = columns[name]
        elif name in FLOAT_COLUMNS:
            values[name] = np.full(n, np.nan)
        else:
            values[name] = np.full(n, None, dtype=object)
    for name, pick in (("ChargePeriodStart", 0), ("ChargePeriodEnd", 1)):
        values[name] = np.array([p[pick] for p in periods], dtype=object)[hour]
    for name, pick in (("BillingPeriodStart", 0), ("BillingPeriodEnd", 1)):
        values[name] = np.array([m[pick] for m in month], dtype=object)[hour]
    for name in ("InvoiceIssuerName", "ProviderName", "PublisherName"):
        values[name] = provider
    for name in FLOAT_COLUMNS:
        nulls[name] = np.isnan(values[name])
        values[name] = np.where(nulls[name], 0.0, values[name])
    return FocusTable(table.names, values, nulls, table.floats)


def _billing_period(charge_start: str) -> tuple[str, str]:
    """The calendar month holding a charge period's start, as (start, end)."""
    begin = datetime.fromisoformat(charge_start.replace("Z", "+00:00"))
    month = begin.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return _iso(month), _iso((month + timedelta(days=32)).replace(day=1))


def token_row(period: tuple[str, str], billed: float, listed: float, million_tokens: float, **columns: Any) -> dict:
    """A Usage-Based row priced per 1M tokens (hosted APIs, embedding calls)."""
    begin, end = period
    return {**columns, "ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
            "ChargeFrequency": "Usage-Based", "BilledCost": billed, "EffectiveCost": billed, "ListCost": listed,
            "ContractedCost": billed, "PricingQuantity": million_tokens, "PricingUnit": "1M tokens",
            "ListUnitPrice": listed / million_tokens, "ContractedUnitPrice": billed / million_tokens,
            "PricingCategory": "Standard", "ServiceCategory": "AI and Machine Learning"}


def _api_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """Per api pool (fleet.api_pools), hour (of each request's finish) and token kind (input,
    cached input, output): one Usage row priced per 1M tokens, ProviderName the provider and
    PublisherName the model's publisher; BilledCost is tokens x the pool's price (batch discount
    included, as ContractedCost), ListCost the same tokens at the standard price. They sum to the
    bill's api dollars."""
    api = getattr(result, "api", None)
    if api is None:
        return []
    t, n = result.table, result.table.num_requests
    done = t.status[:n] == COMPLETED  # only completed calls are billed
    hour = np.minimum((np.nan_to_num(t.finish_s[:n], nan=0.0) // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    cached = api.cached_tokens[:n]
    tokens = {"input": t.input_tokens[:n] - cached, "cached input": cached, "output": t.generated[:n]}
    rows = []
    for k, pool in enumerate(api.pools):
        terms = pool.terms
        price = {"input": terms.input_usd_per_1m, "cached input": terms.cached_input_usd_per_1m or 0.0,
                 "output": terms.output_usd_per_1m}
        mine = done & (api.pool_of[:n] == k)
        for h in np.unique(hour[mine]):
            for kind, count in tokens.items():
                million = float(count[mine & (hour == h)].sum()) / 1e6
                if million == 0:
                    continue
                listed = million * price[kind]
                rows.append(token_row(periods[int(h)], listed * (1.0 - terms.discount), listed, million, **common,
                                      ResourceId=f"{result.scenario.name}/api-{pool.cfg.name}",
                                      ResourceName=f"api-{pool.cfg.name}", ResourceType="Hosted model API",
                                      RegionId=None, ChargeDescription=f"{kind} tokens of {terms.model}"
                                      + (" (batch API)" if terms.discount else ""),
                                      PublisherName=terms.publisher_name, _provider=terms.provider_name))
    return rows


def _cache_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """fleet.response_cache: per hour, its embedding calls (per 1M tokens, in the hour of each
    lookup) and its store's hosting (per hour covered)."""
    cache = getattr(result, "cache", None)
    if cache is None:
        return []
    t, n = result.table, result.table.num_requests
    hour = np.minimum((t.arrival_s[:n] // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    price = cache.cfg.embedding_usd_per_1m_tokens
    looked = cache.request_usd[:n] > 0
    resource = {"ResourceId": f"{result.scenario.name}/response-cache", "ResourceName": "response-cache",
                "RegionId": None}
    covered_s = hour_covered_s(result.horizon_s)  # exact, where the periods' ends are rounded to the millisecond
    rows = []
    for h, period in enumerate(periods):
        usd = float(cache.request_usd[:n][hour == h].sum())
        if usd > 0:
            million = float(t.input_tokens[:n][looked & (hour == h)].sum()) / 1e6
            rows.append(token_row(period, usd, million * price, million, **common, **resource,
                                  ResourceType="Response cache embeddings",
                                  ChargeDescription="prompts embedded for semantic cache lookups"))
        hours = float(covered_s[h]) / S_PER_HOUR
        store = cache.cfg.store_usd_per_hour * hours
        if store > 0:
            rows.append(usage_row(period, store, store, store, store, hours, **{**common, "ServiceCategory": "Storage"},
                                  **resource, PricingCategory="Standard",
                                  ResourceType="Response cache store", ChargeDescription="the response cache's store"))
    return rows


def _complete(row: dict, result) -> dict:
    """The columns every row shares, filled in: billing period (the calendar month of the charge),
    provider names, nulls for the rest."""
    month, next_month = _billing_period(row["ChargePeriodStart"])
    provider = row.pop("_provider", None) or provider_of(result, 0)
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update(InvoiceIssuerName=provider, ProviderName=provider, PublisherName=provider,
               BillingPeriodStart=month, BillingPeriodEnd=next_month)
    out.update(row)
    if out["ChargeDescription"] is None:
        out["ChargeDescription"] = f"{out['ResourceType']}: {out['ChargeCategory'].lower()}"
    return out


def _warm_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """One Usage row per warm-pool node and hour it was billed (provisioning, then standby)."""
    warm = result.bill.roster.warm
    if warm is None or not len(warm.pool):
        return []
    windows, usd = warm_node_hour_usd(warm, len(periods))
    rows = []
    for n in range(windows.num_lives):
        pool = int(warm.pool[n])
        for e in np.flatnonzero(usd[windows.offset[n]:windows.offset[n + 1]] > 0) + windows.offset[n]:
            h = int(windows.first_hour[n] + e - windows.offset[n])
            cost = float(usd[e])
            hours = hours_of(periods[h])
            rows.append(usage_row(periods[h], cost, cost, cost, cost, hours, **{**common, "ServiceCategory": "Compute"},
                                  PricingCategory="Standard",
                                  ResourceId=f"{result.scenario.name}/warm-node-{n}", ResourceName=f"warm-node-{n}",
                                  ResourceType="Warm pool node", RegionId=site_of(result, pool).region,
                                  ChargeDescription="warm-pool node held for scale-ups (provisioning, then standby)",
                                  _provider=provider_of(result, pool)))
    return rows


def _egress_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """One Usage row per site and hour for the response bytes that left it (fleet.pools with
    sites), in the hour each request finished, priced in GB; they sum to the bill's egress."""
    egress = result.bill.request_egress_usd
    if egress is None or not egress.any():
        return []
    t, ra = result.table, result.bill.roster
    served = np.flatnonzero(egress > 0)
    pool_of = ra.pool[t.replica[served]]
    sites: dict[str, tuple[Any, int]] = {}  # site name -> its config and a pool there
    for k in np.unique(pool_of):
        site = site_of(result, int(k))
        sites.setdefault(site.name or site.region, (site, int(k)))
    site_name = np.array([site_of(result, int(k)).name or site_of(result, int(k)).region for k in pool_of])
    hour = np.minimum((np.nan_to_num(t.finish_s[served], nan=0.0) // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    rows = []
    for name, (site, pool) in sites.items():
        usd_per_gb = egress_usd_per_gb(site, listed=True)
        for h in np.unique(hour[site_name == name]):
            usd = float(egress[served][(site_name == name) & (hour == h)].sum())
            begin, end = periods[h]
            rows.append({"ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
                         "ChargeFrequency": "Usage-Based", "BilledCost": usd, "EffectiveCost": usd, "ListCost": usd,
                         "ContractedCost": usd, "PricingQuantity": usd / usd_per_gb, "PricingUnit": "GB",
                         "ListUnitPrice": usd_per_gb, "ContractedUnitPrice": usd_per_gb, **common,
                         "PricingCategory": "Standard", "ServiceCategory": "Networking",
                         "ResourceId": f"{result.scenario.name}/egress-{name}", "ResourceName": f"egress-{name}",
                         "ResourceType": "Data Transfer Out", "RegionId": site.region,
                         "ChargeDescription": f"response bytes leaving site {name}",
                         "_provider": provider_of(result, pool)})
    return rows


def _period(start: datetime, hour: int, covered_s: float) -> tuple[str, str]:
    begin = start + timedelta(hours=hour)
    return _iso(begin), _iso(begin + timedelta(seconds=float(covered_s)))


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_focus(focus: FocusTable | list[dict], csv_path: Path, parquet: bool = True) -> list[Path]:
    """focus.csv always (nulls as empty cells); focus.parquet next to it when pyarrow is installed
    and `parquet` (`simcost run` writes that one in its background process)."""
    table = focus if isinstance(focus, FocusTable) else FocusTable.from_rows(focus, COLUMNS, FLOAT_COLUMNS)
    table.write_csv(csv_path)
    parquet_path = write_focus_parquet(table, csv_path.with_suffix(".parquet")) if parquet else None
    return [csv_path] + ([parquet_path] if parquet_path else [])


def write_focus_parquet(focus: FocusTable | list[dict], parquet_path: Path) -> Path | None:
    """focus.parquet (costs and quantities as float64, dates as UTC timestamps); None without pyarrow."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    table = focus if isinstance(focus, FocusTable) else FocusTable.from_rows(focus, COLUMNS, FLOAT_COLUMNS)
    pq.write_table(table.arrow_table(DATE_COLUMNS), parquet_path)
    return parquet_path
