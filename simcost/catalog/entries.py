"""Checking one catalog entry (a devices.yaml or models.yaml entry, a prices.yaml offer) against
its schema, and converting its human units (GiB or GB, GB/s, TFLOPs) into SI base units. A bad
entry is an `InputError` naming the file and the key path, e.g.
`devices.yaml: h100-sxm.mem_bw_gb_per_s: missing`.
"""

from __future__ import annotations

import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

from simcost.catalog.types import (
    _DATE,
    COMPUTE_FORMATS,
    DEVICE_KINDS,
    DEVICE_SOURCE_GROUPS,
    GB,
    GIB,
    INTERCONNECT_KINDS,
    MLP_KINDS,
    MODEL_SOURCE_GROUPS,
    SERVING_KINDS,
    TERA,
    WEIGHT_FORMATS,
    Commitment,
    DeviceSpec,
    Interconnect,
    ModelSpec,
    PriceOffer,
    Purchase,
)
from simcost.errors import InputError, closest


class _Where:
    """Builds `file: key.path` locations for error messages."""

    def __init__(self, file: str, key: str):
        self.file, self.key = file, key

    def __call__(self, *parts: str) -> str:
        return f"{self.file}: {'.'.join((self.key,) + parts)}"


def _fields(entry: Any, where: _Where, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(entry, dict):
        raise InputError(where(), f"expected a mapping, got {type(entry).__name__}")
    known = required + optional
    for name in entry:
        if name not in known:
            raise InputError(where(str(name)), f"unknown field{closest(str(name), known)}")
    for name in required:
        if name not in entry:
            raise InputError(where(name), "missing")
    return entry


def _number(entry: dict, name: str, where: _Where, *, gt: float | None = None, ge: float | None = None,
            le: float | None = None, path: tuple[str, ...] = ()) -> float:
    value = entry[name]
    at = where(*path, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InputError(at, f"{value!r}; expected a number")
    if gt is not None and not value > gt:
        raise InputError(at, f"{value}; expected a number > {gt}")
    if ge is not None and not value >= ge:
        raise InputError(at, f"{value}; expected a number >= {ge}")
    if le is not None and not value <= le:
        raise InputError(at, f"{value}; expected a number <= {le}")
    return float(value)


def _integer(entry: dict, name: str, where: _Where) -> int:
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(where(name), f"{value!r}; expected a whole number >= 1")
    return value


def _text(entry: dict, name: str, where: _Where, choices: tuple[str, ...] | None = None) -> str:
    value = entry[name]
    if not isinstance(value, str) or not value.strip():
        raise InputError(where(name), f"{value!r}; expected non-empty text")
    if choices is not None and value not in choices:
        raise InputError(where(name), f"'{value}' is not one of {', '.join(choices)}{closest(value, choices, list_all=False)}")
    return value


def _sources(entry: dict, groups: tuple[str, ...], where: _Where) -> dict:
    raw = _fields(entry["sources"], _Where(where.file, f"{where.key}.sources"), groups)
    out = {}
    for group in groups:
        item = _fields(raw[group], _Where(where.file, f"{where.key}.sources.{group}"), ("source", "date"))
        source = _text(item, "source", _Where(where.file, f"{where.key}.sources.{group}"))
        date = item["date"]
        if isinstance(date, datetime.date):  # YAML reads an unquoted 2025-06-01 as a date
            date = date.isoformat()
        if not isinstance(date, str) or not _DATE.match(date):
            raise InputError(where("sources", group, "date"), f"{date!r}; expected YYYY-MM-DD (or YYYY-MM)")
        out[group] = {"source": source, "date": date}
    return out


_DEVICE_REQUIRED = ("name", "kind", "mem_bw_gb_per_s", "peak_tflops", "link_gb_per_s", "idle_w", "peak_w",
                    "mfu", "mbu", "step_overhead_s", "allreduce_latency_s", "sources")
_DEVICE_OPTIONAL = ("memory_gb", "memory_gib", "host_link_gb_per_s", "price_usd_per_hour", "aliases", "rentable_shapes",
                    "devices_per_node", "interconnect", "kernel_tables")


def _device(key: str, entry: Any, where: _Where) -> DeviceSpec:
    entry = _fields(entry, where, _DEVICE_REQUIRED, _DEVICE_OPTIONAL)
    # Exactly one capacity unit, so a reader never has to guess whether "80" meant GB or GiB.
    units = [u for u in ("memory_gib", "memory_gb") if u in entry]
    if len(units) != 1:
        raise InputError(where("memory_gib"), "missing" if not units else "give memory_gib or memory_gb, not both")
    memory_bytes = _number(entry, units[0], where, gt=0) * (GIB if units[0] == "memory_gib" else GB)
    peaks = entry["peak_tflops"]
    if not isinstance(peaks, dict) or not peaks:
        raise InputError(where("peak_tflops"), f"{peaks!r}; expected a mapping of format -> dense TFLOPs")
    peak_flops = {}
    for fmt in peaks:
        if fmt not in COMPUTE_FORMATS:
            raise InputError(where("peak_tflops", str(fmt)), f"unknown format{closest(str(fmt), COMPUTE_FORMATS)}")
        peak_flops[fmt] = _number(peaks, fmt, where, gt=0, path=("peak_tflops",)) * TERA
    idle_w = _number(entry, "idle_w", where, ge=0)
    peak_w = _number(entry, "peak_w", where, gt=0)
    if idle_w > peak_w:
        raise InputError(where("idle_w"), f"{idle_w} is above peak_w={peak_w}")
    return DeviceSpec(
        key=key,
        name=_text(entry, "name", where),
        kind=_text(entry, "kind", where, DEVICE_KINDS),
        memory_bytes=memory_bytes,
        mem_bw_bytes_per_s=_number(entry, "mem_bw_gb_per_s", where, gt=0) * GB,
        peak_flops=peak_flops,
        link_bytes_per_s=_number(entry, "link_gb_per_s", where, gt=0) * GB,
        idle_w=idle_w,
        peak_w=peak_w,
        mfu=_number(entry, "mfu", where, gt=0, le=1),
        mbu=_number(entry, "mbu", where, gt=0, le=1),
        step_overhead_s=_number(entry, "step_overhead_s", where, ge=0),
        allreduce_latency_s=_number(entry, "allreduce_latency_s", where, ge=0),
        price_usd_per_hour=(_number(entry, "price_usd_per_hour", where, ge=0)
                            if "price_usd_per_hour" in entry else None),
        # rentable_shapes carries its own source (the cloud's slice table)
        sources=_sources(entry, DEVICE_SOURCE_GROUPS + (("shapes",) if "rentable_shapes" in entry else ())
                         + (("interconnect",) if "interconnect" in entry else ()), where),
        host_link_bytes_per_s=(_number(entry, "host_link_gb_per_s", where, gt=0) * GB
                               if "host_link_gb_per_s" in entry else None),
        aliases=_aliases(entry, where),
        rentable_shapes=_shapes(entry, where),
        devices_per_node=_integer(entry, "devices_per_node", where) if "devices_per_node" in entry else None,
        interconnect=_interconnect(entry, where),
        kernel_tables=_kernel_tables(entry, where),
    )


def _kernel_tables(entry: dict, where: _Where) -> str | None:
    """A .npz or a folder (relative to the catalog file: made absolute when it is read); what is
    in it is checked when the kernel model loads it (simcost.perf.kernel_import)."""
    path = _text(entry, "kernel_tables", where) if "kernel_tables" in entry else None
    found = Path(path).expanduser() if path is not None else None
    if found is not None and not (found.is_dir() or (found.is_file() and found.suffix == ".npz")):
        raise InputError(where("kernel_tables"), f"{path}: " + ("no such file or folder" if not found.exists() else
                         "expected a .npz in simcost's format or a folder of aiconfigurator's Parquet tables"))
    return path


def _interconnect(entry: dict, where: _Where) -> Interconnect | None:
    ic = entry.get("interconnect")
    if ic is None:
        return None
    keys = ("kind", "bandwidth_gb_per_s", "latency_us")
    if not isinstance(ic, dict) or set(ic) != set(keys):
        raise InputError(where("interconnect"), f"{ic!r}; expected {{kind, bandwidth_gb_per_s, latency_us}}")
    if ic["kind"] not in INTERCONNECT_KINDS:
        raise InputError(where("interconnect", "kind"), f"{ic['kind']!r}; expected one of {', '.join(INTERCONNECT_KINDS)}")
    return Interconnect(ic["kind"], _number(ic, "bandwidth_gb_per_s", where, gt=0, path=("interconnect",)) * GB,
                        _number(ic, "latency_us", where, ge=0, path=("interconnect",)) * 1e-6)


def _shapes(entry: dict, where: _Where) -> tuple[int, ...]:
    shapes = entry.get("rentable_shapes", [])
    if (not isinstance(shapes, list) or (not shapes and "rentable_shapes" in entry)
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shapes)
            or shapes != sorted(set(shapes))):
        raise InputError(where("rentable_shapes"), f"{shapes!r}; expected an increasing list of chip counts, e.g. [1, 4, 8]")
    return tuple(shapes)


def _aliases(entry: dict, where: _Where) -> tuple[str, ...]:
    names = entry.get("aliases", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(where("aliases"), f"{names!r}; expected a list of names")
    return tuple(names)


_MODEL_SHAPE = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                "vocab_size", "max_model_len")
_MOE = ("num_experts", "experts_per_token", "expert_params")
_WINDOW = ("sliding_window", "num_sliding_layers")
_MLA = ("kv_lora_rank", "qk_rope_head_dim")
_MOE_LAYOUT = ("num_shared_experts", "first_dense_layers")  # 0 allowed


def _model(key: str, entry: Any, where: _Where) -> ModelSpec:
    serving = "tokens"
    if isinstance(entry, dict) and "serving" in entry:
        serving = _text(entry, "serving", where, SERVING_KINDS)
    if serving == "per_item":
        # an encoder or a CNN: no token steps, so the transformer shape is optional
        entry = _fields(entry, where, ("name", "serving", "item_input", "num_params", "weight_format",
                                       "flops_per_item", "sources"), _MODEL_SHAPE + ("aliases",))
    else:
        entry = _fields(entry, where, ("name",) + _MODEL_SHAPE + ("num_params", "weight_format", "sources"),
                        ("serving", "aliases", "notes", "mlp") + _MOE + _WINDOW + _MLA + _MOE_LAYOUT)
    ints = {name: _integer(entry, name, where) if name in entry else 0
            for name in _MODEL_SHAPE + ("num_params",) + _MOE + _WINDOW + _MLA}
    ints.update({name: _count(entry, name, where) for name in _MOE_LAYOUT})
    _check_window(entry, ints, where)
    _check_mla(entry, ints, where)
    if ints["num_kv_heads"] and ints["num_heads"] % ints["num_kv_heads"]:
        raise InputError(where("num_kv_heads"), f"{ints['num_kv_heads']} does not divide num_heads={ints['num_heads']}")
    _check_experts(entry, ints, where)
    if serving == "tokens":
        _check_param_count(ints, where)
    return ModelSpec(
        key=key,
        name=_text(entry, "name", where),
        weight_format=_text(entry, "weight_format", where, WEIGHT_FORMATS),
        sources=_sources(entry, MODEL_SOURCE_GROUPS, where),
        serving=serving,
        flops_per_item=_number(entry, "flops_per_item", where, gt=0) if serving == "per_item" else 0.0,
        item_input=_text(entry, "item_input", where) if serving == "per_item" else "",
        aliases=_aliases(entry, where),
        notes=_text(entry, "notes", where) if "notes" in entry else "",
        mlp=_text(entry, "mlp", where, MLP_KINDS) if "mlp" in entry else "gated",
        **ints,
    )


def _check_param_count(ints: dict, where: _Where) -> None:
    """num_params sizes the weights, so a count in the wrong unit (8 for 8B) would fit any model on
    any device; the shape's embeddings and one MLP matrix per layer are a floor every real model
    is above (bundled ones by 1.5x or more)."""
    floor = ints["vocab_size"] * ints["hidden_size"] + ints["num_layers"] * ints["hidden_size"] * ints["intermediate_size"]
    if ints["num_params"] < floor:
        raise InputError(where("num_params"), f"{ints['num_params']:,} is below the {floor:,} parameters of the shape's "
                         "embeddings and one MLP matrix per layer alone; expected the whole count (8030261248 for an 8B model)")


def _check_window(entry: dict, ints: dict, where: _Where) -> None:
    if ("sliding_window" in entry) != ("num_sliding_layers" in entry):
        raise InputError(where("num_sliding_layers" if "sliding_window" in entry else "sliding_window"),
                         "missing; sliding-window layers need both sliding_window and num_sliding_layers")
    if ints["num_sliding_layers"] > ints["num_layers"]:
        raise InputError(where("num_sliding_layers"),
                         f"{ints['num_sliding_layers']} is above num_layers={ints['num_layers']}")


def _count(entry: dict, name: str, where: _Where) -> int:
    value = entry.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(where(name), f"{value!r}; expected a whole number >= 0")
    return value


def _check_mla(entry: dict, ints: dict, where: _Where) -> None:
    if not any(name in entry for name in _MLA):
        return
    for name in _MLA:
        if name not in entry:
            raise InputError(where(name), f"missing; latent attention needs both {' and '.join(_MLA)}")
    width = ints["kv_lora_rank"] + ints["qk_rope_head_dim"]
    if ints["num_kv_heads"] != 1 or 2 * ints["head_dim"] != width:
        raise InputError(where("head_dim"), f"latent attention is entered absorbed: num_kv_heads 1 and head_dim "
                         f"(kv_lora_rank + qk_rope_head_dim) / 2 = {width / 2:g}, got num_kv_heads "
                         f"{ints['num_kv_heads']} and head_dim {ints['head_dim']}")


def _check_experts(entry: dict, ints: dict, where: _Where) -> None:
    given = [name for name in _MOE if name in entry]
    if not given:
        return
    for name in _MOE:
        if name not in entry:
            raise InputError(where(name), f"missing; a mixture of experts needs all of {', '.join(_MOE)}")
    if ints["num_experts"] < 2:
        raise InputError(where("num_experts"), f"{ints['num_experts']}; a mixture of experts has at least 2")
    if ints["experts_per_token"] > ints["num_experts"]:
        raise InputError(where("experts_per_token"),
                         f"{ints['experts_per_token']} is above num_experts={ints['num_experts']}")
    if ints["expert_params"] >= ints["num_params"]:
        raise InputError(where("expert_params"),
                         f"{ints['expert_params']} is not below num_params={ints['num_params']}")


# --- prices ---------------------------------------------------------------------------------

_OFFER_REQUIRED = ("device", "devices_per_instance", "sources")
_OFFER_OPTIONAL = ("on_demand_usd_per_hour", "purchase", "quoted_usd_per_device_hour", "spot_usd_per_hour",
                   "one_year", "three_year")
_QUOTE_TOLERANCE_USD = 0.005  # sources print per-device prices rounded to the cent


def _mapping(value: Any, where: _Where) -> dict:
    if not isinstance(value, dict) or not value:
        raise InputError(where(), f"expected a non-empty mapping, got {value!r}")
    return value


def _offer(provider: str, region: str, instance: str, entry: Any, devices: dict[str, DeviceSpec],
           where: _Where) -> PriceOffer:
    entry = _fields(entry, where, _OFFER_REQUIRED, _OFFER_OPTIONAL)
    device = _text(entry, "device", where)
    if device not in devices:
        raise InputError(where("device"), f"unknown device '{device}'{closest(device, devices)}")
    per_instance = _devices_per_instance(entry["devices_per_instance"], where)
    if ("purchase" in entry) == ("on_demand_usd_per_hour" in entry):
        raise InputError(where("on_demand_usd_per_hour"), "give on_demand_usd_per_hour or purchase (exactly one)")
    purchase = _purchase(entry["purchase"], devices[device], where) if "purchase" in entry else None
    on_demand = purchase.usd_per_hour if purchase else _number(entry, "on_demand_usd_per_hour", where, gt=0)
    quoted = None
    if "quoted_usd_per_device_hour" in entry:
        quoted = _number(entry, "quoted_usd_per_device_hour", where, gt=0)
        if abs(quoted - on_demand / per_instance) > _QUOTE_TOLERANCE_USD + 1e-9:
            raise InputError(where("quoted_usd_per_device_hour"), f"{quoted} differs from on-demand {on_demand} / "
                             f"{per_instance:g} devices = {on_demand / per_instance:.4f} by more than rounding")
    spot = _spot(entry["spot_usd_per_hour"], where) if "spot_usd_per_hour" in entry else None
    commitments = {years: _commitment(entry[name], years, on_demand, where(name))
                   for years, name in ((1, "one_year"), (3, "three_year")) if name in entry}
    groups = tuple(g for g, present in (("on_demand", purchase is None), ("purchase", purchase is not None),
                                        ("lifetime", purchase is not None), ("energy", purchase is not None),
                                        ("spot", spot is not None), ("one_year", 1 in commitments),
                                        ("three_year", 3 in commitments)) if present)
    return PriceOffer(provider=provider, region=region, instance=instance, device=device,
                      devices_per_instance=per_instance, on_demand_usd_per_hour=on_demand,
                      spot_range_usd_per_hour=spot, commitments=commitments, purchase=purchase,
                      quoted_usd_per_device_hour=quoted, sources=_sources(entry, groups, where))


def _devices_per_instance(value: Any, where: _Where) -> float:
    # "1/14": an instance holding part of one device (8 of a socket's 112 vCPUs)
    at = where("devices_per_instance")
    try:
        count = float(Fraction(value)) if isinstance(value, str) else value
    except (ValueError, ZeroDivisionError):
        raise InputError(at, f"{value!r}; expected a number or a fraction such as 1/14") from None
    if isinstance(count, bool) or not isinstance(count, (int, float)) or not count > 0:
        raise InputError(at, f"{value!r}; expected a number > 0 or a fraction such as 1/14")
    return float(count)


def _spot(value: Any, where: _Where) -> tuple[float, float]:
    at = where("spot_usd_per_hour")
    low_high = [value, value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if (not isinstance(low_high, list) or len(low_high) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in low_high)
            or low_high[0] > low_high[1]):
        raise InputError(at, f"{value!r}; expected a price > 0 or a range [low, high] with low <= high")
    return float(low_high[0]), float(low_high[1])


def _commitment(value: Any, years: int, on_demand: float, at: str) -> Commitment:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("usd_per_hour", "discount"):
        raise InputError(at, f"{value!r}; expected {{usd_per_hour: price}} or {{discount: [low, high]}}")
    if "usd_per_hour" in value:
        price = value["usd_per_hour"]
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 < price:
            raise InputError(f"{at}.usd_per_hour", f"{price!r}; expected a number > 0")
        return Commitment(years, float(price), (float(price), float(price)), derived=False)
    d = value["discount"]
    if (not isinstance(d, list) or len(d) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in d)
            or not 0 <= d[0] <= d[1] < 1):
        raise InputError(f"{at}.discount", f"{d!r}; expected [low, high] fractions with 0 <= low <= high < 1")
    mid = (d[0] + d[1]) / 2.0
    low_high = (on_demand * (1.0 - d[1]), on_demand * (1.0 - d[0]))
    return Commitment(years, on_demand * (1.0 - mid), low_high, derived=True)


def _purchase(value: Any, device: DeviceSpec, where: _Where) -> Purchase:
    inner = _Where(where.file, f"{where.key}.purchase")
    value = _fields(value, inner, ("price_usd", "lifetime_years", "usd_per_kwh"))
    return Purchase(price_usd=_number(value, "price_usd", inner, gt=0),
                    lifetime_years=_number(value, "lifetime_years", inner, gt=0),
                    usd_per_kwh=_number(value, "usd_per_kwh", inner, ge=0), power_w=device.peak_w)


# --- the entry points -------------------------------------------------------------------------

def parse_device(key: str, entry: Any, file: str, section: str = "") -> DeviceSpec:
    """One devices.yaml entry, checked; errors read `file: section.key.field: problem`."""
    return _device(key, entry, _Where(file, section + key))


def parse_model(key: str, entry: Any, file: str, section: str = "") -> ModelSpec:
    """One models.yaml entry, checked; errors read `file: section.key.field: problem`."""
    return _model(key, entry, _Where(file, section + key))


def parse_offer(provider: str, region: str, instance: str, entry: Any, devices: dict[str, DeviceSpec],
                file: str, path: str) -> PriceOffer:
    """One prices.yaml offer, checked against `devices`; errors read `file: path.field: problem`."""
    return _offer(provider, region, instance, entry, devices, _Where(file, path))


def parse_prices(raw: dict, devices: dict[str, DeviceSpec], file: str) -> tuple[PriceOffer, ...]:
    """Every offer of a prices.yaml mapping `provider -> region -> instance -> offer`, in file order."""
    offers = []
    for provider, regions in raw.items():
        for region, instances in _mapping(regions, _Where(file, provider)).items():
            for instance, entry in _mapping(instances, _Where(file, f"{provider}.{region}")).items():
                offers.append(parse_offer(provider, str(region), str(instance), entry, devices, file,
                                          f"{provider}.{region}.{instance}"))
    return tuple(offers)
