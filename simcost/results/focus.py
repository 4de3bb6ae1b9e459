"""The bill in the FinOps Foundation's FOCUS format: one row per replica per clock hour.

Column names and meanings follow FOCUS (BilledCost, EffectiveCost, ListCost, ChargePeriodStart/End,
ChargeCategory, PricingCategory, ResourceId/Type, ServiceName, RegionId, Tags, BillingCurrency), so
the simulated bill loads next to a real one. Simplifications, documented:
- the run is a window of a longer commitment, so BilledCost equals EffectiveCost (upfront and
  commitment fees appear amortised, never as a purchase in the window);
- unused savings-plan commitment is its own row per hour (ResourceId "savings-plan",
  ChargeCategory "Purchase"), since no replica used it;
- ListCost is the on-demand price of the same time; the simulated clock starts at `start`.
Rows' EffectiveCost sums to the bill.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from simcost.cost.energy import hour_covered_s
from simcost.cost.pricing import CATEGORY, warm_node_hour_usd
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED

DEFAULT_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SERVICE_NAME = "LLM inference (simcost simulation)"
COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "BillingCurrency", "ChargePeriodStart", "ChargePeriodEnd",
           "ChargeCategory", "PricingCategory", "ResourceId", "ResourceType", "ServiceName", "RegionId", "Tags")
COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost")
# written only when a row has them: hosted-API usage (fleet.api_pools), priced per token
API_COLUMNS = ("PricingUnit", "PricingQuantity", "ProviderName", "PublisherName")


def focus_rows(result, start: datetime = DEFAULT_START) -> list[dict]:
    bill, scenario, dep = result.bill, result.scenario, result.deployment
    t = bill.tariff
    covered_s = hour_covered_s(result.horizon_s)
    periods = [_period(start, h, c) for h, c in enumerate(covered_s)]
    tags = json.dumps({"scenario": scenario.name, "model": dep.model.key, "device": dep.device.key,
                       "pricing_model": t.model}, sort_keys=True)
    common = {"BillingCurrency": "USD", "ServiceName": SERVICE_NAME, "RegionId": scenario.fleet.site.region,
              "Tags": tags}
    ra, alive_s = bill.roster, bill.replica_hour_alive_s
    deps = [result.pools[k].deployment for k in ra.pool]
    resource_types = [f"{d.tensor_parallel}x {d.device.key}" for d in deps]
    regions = [_site(result, k).region for k in ra.pool]
    first_hour = np.minimum((ra.requested_s // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    rows = []
    for r in range(bill.replica_hour_usd.shape[0]):
        for h, (begin, end) in enumerate(periods):
            usd, list_s = float(bill.replica_hour_usd[r, h]), float(alive_s[r, h])
            if h == first_hour[r] and t.minimum_usd[r] > 0:  # the minimum charge tops up its first hour
                usd += float(t.minimum_usd[r])
                list_s += float(t.minimum_usd[r] / t.time_usd_per_s[r, h])
            if usd == 0 and list_s == 0:
                continue  # the replica did not exist in that hour
            rows.append({"BilledCost": usd, "EffectiveCost": usd, "ListCost": float(list_s * t.list_usd_per_s[r]),
                         "ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
                         "PricingCategory": _category(t, ra, r), "ResourceId": f"{scenario.name}/replica-{r}",
                         "ResourceType": resource_types[r], **common, "RegionId": regions[r]})
    for h, (begin, end) in enumerate(periods):
        lost = float(t.unused_commitment_usd[h])
        if lost > 0:
            rows.append({"BilledCost": lost, "EffectiveCost": lost, "ListCost": 0.0, "ChargePeriodStart": begin,
                         "ChargePeriodEnd": end, "ChargeCategory": "Purchase", "PricingCategory": "Committed",
                         "ResourceId": "savings-plan", "ResourceType": "Savings Plan", **common})
    rows += _egress_rows(result, periods, common) + _warm_rows(result, periods, common)
    return rows + _api_rows(result, periods, common) + _cache_rows(result, periods, common)


def _cache_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """fleet.response_cache: per hour, its embedding calls (priced per 1M tokens, in the hour of
    each lookup) and its store's hosting (per hour covered)."""
    cache = getattr(result, "cache", None)
    if cache is None:
        return []
    t, n = result.table, result.table.num_requests
    hour = np.minimum((t.arrival_s[:n] // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    covered_s = hour_covered_s(result.horizon_s)
    price = cache.cfg.embedding_usd_per_1m_tokens
    looked = cache.request_usd[:n] > 0
    rows = []
    for h, (begin, end) in enumerate(periods):
        base = {"ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
                "PricingCategory": "Standard", "ResourceId": f"{result.scenario.name}/response-cache", **common}
        usd = float(cache.request_usd[:n][hour == h].sum())
        if usd > 0:
            quantity = float(t.input_tokens[:n][looked & (hour == h)].sum()) / 1e6
            rows.append({**base, "BilledCost": usd, "EffectiveCost": usd, "ListCost": quantity * price,
                         "ResourceType": "Response cache embeddings", "PricingUnit": "1M tokens",
                         "PricingQuantity": quantity, "ProviderName": "embedding API", "PublisherName": ""})
        store = cache.cfg.store_usd_per_hour * float(covered_s[h]) / S_PER_HOUR
        if store > 0:
            rows.append({**base, "BilledCost": store, "EffectiveCost": store, "ListCost": store,
                         "ResourceType": "Response cache store"})
    return rows


def _api_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """Per api pool, hour (of each request's finish) and token kind (input, cached input,
    output): one Usage row priced per 1M tokens; BilledCost is tokens x the pool's price (batch
    discount included), ListCost the same tokens at the standard price. They sum to the bill's api."""
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
        for h in np.unique(hour[done & (api.pool_of[:n] == k)]):
            mine = done & (api.pool_of[:n] == k) & (hour == h)
            begin, end = periods[int(h)]
            for kind, count in tokens.items():
                quantity = float(count[mine].sum()) / 1e6
                if quantity == 0:
                    continue
                usd = quantity * price[kind] * (1.0 - terms.discount)
                rows.append({"BilledCost": usd, "EffectiveCost": usd, "ListCost": quantity * price[kind],
                             "ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
                             "PricingCategory": "Standard", "ResourceId": f"{result.scenario.name}/api-{pool.cfg.name}",
                             "ResourceType": f"Hosted model API, {kind} tokens ({terms.model})", **common,
                             "RegionId": "", "PricingUnit": "1M tokens", "PricingQuantity": quantity,
                             "ProviderName": terms.provider_name, "PublisherName": terms.publisher_name})
    return rows


def _warm_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """One Usage row per warm-pool node and hour it was billed (provisioning, then standby)."""
    warm = result.bill.roster.warm
    if warm is None or not len(warm.pool):
        return []
    usd = warm_node_hour_usd(warm, len(periods))
    rows = []
    for n in range(usd.shape[0]):
        region = _site(result, int(warm.pool[n])).region
        for h in np.flatnonzero(usd[n] > 0):
            begin, end = periods[h]
            rows.append({"BilledCost": float(usd[n, h]), "EffectiveCost": float(usd[n, h]), "ListCost": float(usd[n, h]),
                         "ChargePeriodStart": begin, "ChargePeriodEnd": end, "ChargeCategory": "Usage",
                         "PricingCategory": "Standard", "ResourceId": f"{result.scenario.name}/warm-node-{n}",
                         "ResourceType": "Warm pool node", **common, "RegionId": region})
    return rows


def _category(t, ra, r: int) -> str:
    """A replica's FOCUS PricingCategory: spot is Dynamic; pools priced differently each by its own model."""
    if ra.spot[r]:
        return "Dynamic"
    return CATEGORY[t.replica_model[r]] if t.replica_model else t.category


def _site(result, pool: int):
    """The site a pool runs at (every pool's fleet section has one)."""
    return result.plan[pool].fleet.site


def _egress_rows(result, periods: list[tuple[str, str]], common: dict) -> list[dict]:
    """One Usage row per site and hour for the response bytes that left it (fleet.pools with
    sites), in the hour each request finished; they sum to the bill's egress."""
    egress = result.bill.request_egress_usd
    if egress is None or not egress.any():
        return []
    t, ra = result.table, result.bill.roster
    served = np.flatnonzero(egress > 0)
    sites: dict[str, Any] = {}  # site name -> its config, for the pools that served these requests
    for k in np.unique(ra.pool[t.replica[served]]):
        site = _site(result, int(k))
        sites.setdefault(site.name or site.region, site)
    site_name = np.array([(lambda x: x.name or x.region)(_site(result, int(k))) for k in ra.pool[t.replica[served]]])
    hour = np.minimum((np.nan_to_num(t.finish_s[served], nan=0.0) // S_PER_HOUR).astype(np.int64), len(periods) - 1)
    rows = []
    for name, site in sites.items():
        for h in np.unique(hour[site_name == name]):
            usd = float(egress[served][(site_name == name) & (hour == h)].sum())
            begin, end = periods[h]
            rows.append({"BilledCost": usd, "EffectiveCost": usd, "ListCost": usd, "ChargePeriodStart": begin,
                         "ChargePeriodEnd": end, "ChargeCategory": "Usage", "PricingCategory": "Standard",
                         "ResourceId": f"{result.scenario.name}/egress-{name}",
                         "ResourceType": "Data Transfer Out", **common, "RegionId": site.region})
    return rows


def _period(start: datetime, hour: int, covered_s: float) -> tuple[str, str]:
    begin = start + timedelta(hours=hour)
    return _iso(begin), _iso(begin + timedelta(seconds=float(covered_s)))


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_focus(rows: list[dict], csv_path: Path) -> list[Path]:
    """focus.csv always; focus.parquet next to it when pyarrow is installed (costs as float64,
    periods as UTC timestamps)."""
    columns = COLUMNS + API_COLUMNS if any("PricingUnit" in row for row in rows) else COLUMNS
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    written = [csv_path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    values: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in columns}  # None: no value
    table = {name: pa.array(np.asarray(v, dtype=np.float64)) if name in COST_COLUMNS else pa.array(v)
             for name, v in values.items()}
    for name in ("ChargePeriodStart", "ChargePeriodEnd"):
        table[name] = pa.array([datetime.fromisoformat(v.replace("Z", "+00:00")) for v in values[name]],
                               type=pa.timestamp("ms", tz="UTC"))
    parquet_path = csv_path.with_suffix(".parquet")
    pq.write_table(pa.table(table), parquet_path)
    return written + [parquet_path]
