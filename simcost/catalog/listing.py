"""The catalog as plain-text tables, for `simcost catalog devices|models|prices`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simcost.catalog.specs import load_devices, load_models, load_prices
from simcost.catalog.types import BYTES_PER_ELEMENT, GB, TERA, DeviceSpec, ModelSpec, PriceOffer, compute_format_for


def format_catalog(which: str, config_dir: Path | None = None, catalog: Any = None, wide: bool = False) -> str:
    """`devices`, `models` or `prices` as a plain-text table (prices with a numbered source list), of
    the bundled catalog or of `catalog` (a `simcost.catalog.catalog.Catalog` with a user's entries).
    The devices table shows the columns that tell devices apart (it fits ~120 columns); `wide`
    shows every column."""
    if which == "prices":
        rows, legend = _price_rows(list(catalog.prices) if catalog is not None else load_prices(config_dir))
        return _aligned(rows) + "\n\n" + "\n".join(legend)
    if which == "devices":
        rows = _device_rows(catalog.devices if catalog is not None else load_devices(config_dir))
        return _aligned(rows if wide else _narrow(rows, NARROW_DEVICE_COLUMNS))
    return _aligned(_model_rows(catalog.models if catalog is not None else load_models(config_dir)))


# the devices table's default columns; the rest (fp32/fp16/int8 TFLOPs, host link, idle watts, mfu/mbu,
# dates, the long name) are in --wide
NARROW_DEVICE_COLUMNS = ("key", "kind", "memory_GB", "bw_GB/s", "bf16_TF", "fp8_TF", "link_GB/s", "peak_W",
                         "weight_formats", "$/hour")
_SIXTEEN_BIT = ("fp32", "bf16", "fp16")


def _narrow(table: list[list], columns: tuple[str, ...]) -> list[list]:
    """The named columns; weight formats without the 16-bit ones nearly every device runs (renamed
    to say so), which keeps the table within ~120 columns as formats are added."""
    keep = [table[0].index(name) for name in columns]
    rows = [[row[i] for i in keep] for row in table]
    if "weight_formats" in columns:
        col = columns.index("weight_formats")
        rows[0][col] = "formats_below_16bit"
        for row in rows[1:]:
            low = [f for f in str(row[col]).split(",") if f not in _SIXTEEN_BIT]
            row[col] = ",".join(low) or "-"
    return rows


def _aligned(table: list[list]) -> str:
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def _tflops(device: DeviceSpec, fmt: str) -> str:
    return f"{device.peak_flops[fmt] / TERA:g}" if fmt in device.peak_flops else "-"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _device_rows(devices: Mapping[str, DeviceSpec]) -> list[list]:
    rows = [["key", "kind", "memory_GB", "bw_GB/s"] + [f"{f}_TF" for f in ("fp32", "bf16", "fp16", "fp8", "int8")]
            + ["link_GB/s", "host_GB/s", "idle_W", "peak_W", "mfu", "mbu", "weight_formats", "$/hour", "price_date",
               "spec_date", "name"]]
    for d in devices.values():
        formats = [f for f in BYTES_PER_ELEMENT if compute_format_for(d, f) is not None]
        host = "-" if d.host_link_bytes_per_s is None else f"{d.host_link_bytes_per_s / GB:g}"
        rows.append([d.key, d.kind, f"{d.memory_bytes / GB:.1f}", f"{d.mem_bw_bytes_per_s / GB:g}"]
                    + [_tflops(d, f) for f in ("fp32", "bf16", "fp16", "fp8", "int8")]
                    + [f"{d.link_bytes_per_s / GB:g}", host, f"{d.idle_w:g}", f"{d.peak_w:g}", f"{d.mfu:g}",
                       f"{d.mbu:g}", ",".join(formats), _usd(d.price_usd_per_hour), d.sources["price"]["date"],
                       d.sources["spec"]["date"], d.name])
    return rows


def _model_rows(models: Mapping[str, ModelSpec]) -> list[list]:
    rows: list[list] = [["key", "serving", "params_B", "active_B", "layers", "hidden", "heads", "kv_heads", "experts", "format",
             "context", "GFLOPs/item", "date", "item"]]
    for m in models.values():
        experts = f"{m.experts_per_token}/{m.num_experts}" if m.num_experts else "-"
        per_item = m.serving == "per_item"
        rows.append([m.key, m.serving, f"{m.num_params / 1e9:.3g}", f"{m.active_params / 1e9:.3g}",
                     m.num_layers or "-", m.hidden_size or "-", m.num_heads or "-", m.num_kv_heads or "-", experts,
                     m.weight_format, m.max_model_len or "-", f"{m.flops_per_item / 1e9:.4g}" if per_item else "-",
                     m.sources["spec"]["date"], m.item_input or "-"])
    return rows


def _price_rows(offers: list[PriceOffer]) -> tuple[list[list], list[str]]:
    """Per-device prices (instance prices divided by devices per instance), and the sources they
    cite as a numbered list; `*` marks a value derived by simcost."""
    rows = [["provider", "region", "instance", "device", "devices", "$/hour", "$/device-hour", "spot $/device-hour",
             "1y $/device-hour", "3y $/device-hour", "sources"]]
    legend: dict[tuple[str, str], int] = {}
    for o in offers:
        refs = [legend.setdefault((src["source"], src["date"]), len(legend) + 1) for src in o.sources.values()]
        spot = "-"
        mid_usd_per_hour = o.spot_usd_per_hour  # None exactly when there is no spot range
        if o.spot_range_usd_per_hour is not None and mid_usd_per_hour is not None:
            low, high = (o.per_device(v) for v in o.spot_range_usd_per_hour)
            spot = _usd(o.per_device(mid_usd_per_hour)) + ("" if low == high else f" ({low:.4g}-{high:.4g})")
        terms = []
        for years in (1, 3):
            c = o.commitments.get(years)
            terms.append("-" if c is None else _usd(o.per_device(c.usd_per_hour)) + ("*" if c.derived else ""))
        per_hour = _usd(o.on_demand_usd_per_hour) + ("*" if o.purchase else "")
        rows.append([o.provider, o.region, o.instance, o.device, f"{o.devices_per_instance:.4g}", per_hour,
                     _usd(o.on_demand_usd_per_device_hour), spot, *terms, ",".join(map(str, sorted(set(refs))))])
    notes = ["* derived by simcost. Spot: midpoint (observed range). purchase: price / (lifetime x 8760 h) "
             "+ the device's peak_w x USD/kWh:"]
    notes += [f"  {o.instance}: {o.purchase.price_usd:g} USD / ({o.purchase.lifetime_years:g} y x 8760 h) + "
              f"{o.purchase.power_w:g} W x {o.purchase.usd_per_kwh:g} USD/kWh = {o.on_demand_usd_per_hour:.5f} USD/h"
              for o in offers if o.purchase]
    notes += ["Sources:"] + [f"[{n}] {source} ({date})" for (source, date), n in legend.items()]
    return rows, notes
