"""Device and model catalogs: `configs/devices.yaml` and `configs/models.yaml`.

Each catalog is a YAML mapping `key -> entry`. Loading checks every entry against a small schema
(required fields, types, ranges, and a `sources` group with a source text and a date for every
kind of value), converts the catalog's human units (GiB or GB, GB/s, TFLOPs) into SI base units
(bytes, bytes/s, FLOP/s) once, and caches the result per directory. A bad entry is an
`InputError` naming the file and the key path, e.g. `devices.yaml: h100-sxm.mem_bw_gb_per_s: missing`.
"""

from __future__ import annotations

import datetime
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simcost.errors import InputError, closest

__all__ = ["DeviceSpec", "ModelSpec", "config_dir", "load_devices", "load_models",
           "get_device", "get_model", "DEVICE_KINDS", "COMPUTE_FORMATS", "format_catalog"]

DEVICE_KINDS = ("gpu", "cpu", "tpu", "edge")
# Formats a device may list a dense peak for (keys of `peak_tflops`).
COMPUTE_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")
WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")

GB = 1e9  # decimal gigabyte: bandwidths and most vendor memory figures
GIB = 2.0**30  # binary gibibyte: HBM capacities that vendors round to "80GB"
TERA = 1e12

DEVICE_SOURCE_GROUPS = ("spec", "power", "price", "efficiency")
MODEL_SOURCE_GROUPS = ("spec",)
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")  # YYYY-MM-DD, or YYYY-MM for monthly snapshots


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or CPU socket), in SI units. Prices are per device, on-demand."""

    key: str
    name: str
    kind: str
    memory_bytes: float
    mem_bw_bytes_per_s: float
    peak_flops: dict[str, float] = field(hash=False)  # dense FLOP/s (or OP/s) per compute format
    link_bytes_per_s: float  # scale-up link (or PCIe host link), one direction
    idle_w: float
    peak_w: float
    mfu: float  # default fraction of peak FLOP/s reached by a step's matmuls
    mbu: float  # default fraction of peak memory bandwidth reached
    step_overhead_s: float  # default fixed cost per engine step (scheduling, launches)
    allreduce_latency_s: float  # default fixed cost per tensor-parallel all-reduce
    price_usd_per_hour: float
    sources: dict = field(hash=False, compare=False, repr=False)
    host_link_bytes_per_s: float | None = None  # PCIe to host memory, one direction (KV swap, host tier)


@dataclass(frozen=True)
class ModelSpec:
    """A dense decoder-only transformer, as in its Hugging Face config.json."""

    key: str
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_params: int
    weight_format: str  # native checkpoint dtype
    max_model_len: int  # context length
    sources: dict = field(hash=False, compare=False, repr=False)


# --- locating and loading -------------------------------------------------------------------

def config_dir() -> Path:
    """The catalog folder: `<package>/configs` in a wheel install, `<package>/../configs` in a
    source tree or editable install (pyproject maps the top-level configs/ to simcost.configs)."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "configs", package_dir.parent / "configs"):
        if (candidate / "devices.yaml").is_file():
            return candidate
    for candidate in (package_dir / "configs", package_dir.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise InputError(str(package_dir), "no configs/ folder with devices.yaml next to the simcost package")


def load_devices(config_dir: Path | None = None) -> dict[str, DeviceSpec]:
    """All devices of `<config_dir>/devices.yaml`, validated, keyed by catalog key."""
    return dict(_load_devices(_resolve(config_dir)))


def load_models(config_dir: Path | None = None) -> dict[str, ModelSpec]:
    """All models of `<config_dir>/models.yaml`, validated, keyed by catalog key."""
    return dict(_load_models(_resolve(config_dir)))


def get_device(key: str, where: str = "hardware.device") -> DeviceSpec:
    devices = _load_devices(_resolve(None))
    if key not in devices:
        raise InputError(where, f"unknown device '{key}'{closest(key, devices)}")
    return devices[key]


def get_model(key: str, where: str = "model.name") -> ModelSpec:
    models = _load_models(_resolve(None))
    if key not in models:
        raise InputError(where, f"unknown model '{key}'{closest(key, models)}")
    return models[key]


def _resolve(directory: Path | None) -> str:
    # A string key so that the lru_cache below sees one entry per folder however it was named.
    return str(Path(directory).resolve() if directory is not None else config_dir())


@functools.lru_cache(maxsize=8)
def _load_devices(directory: str) -> dict[str, DeviceSpec]:
    raw = _read_catalog(Path(directory) / "devices.yaml")
    return {key: _device(key, entry, _Where("devices.yaml", key)) for key, entry in raw.items()}


@functools.lru_cache(maxsize=8)
def _load_models(directory: str) -> dict[str, ModelSpec]:
    raw = _read_catalog(Path(directory) / "models.yaml")
    return {key: _model(key, entry, _Where("models.yaml", key)) for key, entry in raw.items()}


def _read_catalog(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(str(path), f"cannot read catalog ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        raise InputError(where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(path.name, "expected a non-empty mapping of key -> entry")
    for key in raw:
        if not isinstance(key, str):
            raise InputError(path.name, f"catalog key {key!r} is not text")
    # Keys starting with "_" hold YAML anchors shared by entries (e.g. a common source), not entries.
    return {key: entry for key, entry in raw.items() if not key.startswith("_")}


# --- validation -----------------------------------------------------------------------------

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
                    "mfu", "mbu", "step_overhead_s", "allreduce_latency_s", "price_usd_per_hour", "sources")


def _device(key: str, entry: Any, where: _Where) -> DeviceSpec:
    entry = _fields(entry, where, _DEVICE_REQUIRED, ("memory_gb", "memory_gib", "host_link_gb_per_s"))
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
        price_usd_per_hour=_number(entry, "price_usd_per_hour", where, ge=0),
        sources=_sources(entry, DEVICE_SOURCE_GROUPS, where),
        host_link_bytes_per_s=(_number(entry, "host_link_gb_per_s", where, gt=0) * GB
                               if "host_link_gb_per_s" in entry else None),
    )


_MODEL_INTS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
               "vocab_size", "num_params", "max_model_len")


def _model(key: str, entry: Any, where: _Where) -> ModelSpec:
    entry = _fields(entry, where, ("name",) + _MODEL_INTS + ("weight_format", "sources"))
    ints = {name: _integer(entry, name, where) for name in _MODEL_INTS}
    if ints["num_heads"] % ints["num_kv_heads"]:
        raise InputError(where("num_kv_heads"), f"{ints['num_kv_heads']} does not divide num_heads={ints['num_heads']}")
    return ModelSpec(
        key=key,
        name=_text(entry, "name", where),
        weight_format=_text(entry, "weight_format", where, WEIGHT_FORMATS),
        sources=_sources(entry, MODEL_SOURCE_GROUPS, where),
        **ints,
    )


# --- tables for `simcost catalog` -------------------------------------------------------------

def format_catalog(which: str, config_dir: Path | None = None) -> str:
    """`devices`, `models` or `prices` as a plain-text table."""
    table = {"devices": _device_rows, "models": _model_rows, "prices": _price_rows}[which](config_dir)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


def _tflops(device: DeviceSpec, fmt: str) -> str:
    return f"{device.peak_flops[fmt] / TERA:g}" if fmt in device.peak_flops else "-"


def _device_rows(config_dir: Path | None) -> list[list]:
    rows = [["key", "name", "kind", "memory_GB", "bw_GB/s", "bf16_TFLOPs", "fp8_TFLOPs", "link_GB/s",
             "idle_W", "peak_W", "$/hour", "price_date"]]
    for d in load_devices(config_dir).values():
        rows.append([d.key, d.name, d.kind, f"{d.memory_bytes / GB:.1f}", f"{d.mem_bw_bytes_per_s / GB:g}",
                     _tflops(d, "bf16"), _tflops(d, "fp8"), f"{d.link_bytes_per_s / GB:g}", f"{d.idle_w:g}",
                     f"{d.peak_w:g}", f"{d.price_usd_per_hour:.4g}", d.sources["price"]["date"]])
    return rows


def _model_rows(config_dir: Path | None) -> list[list]:
    rows = [["key", "name", "params_B", "layers", "hidden", "heads", "kv_heads", "format", "context", "source_date"]]
    for m in load_models(config_dir).values():
        rows.append([m.key, m.name, f"{m.num_params / 1e9:.2f}", m.num_layers, m.hidden_size, m.num_heads,
                     m.num_kv_heads, m.weight_format, m.max_model_len, m.sources["spec"]["date"]])
    return rows


def _price_rows(config_dir: Path | None) -> list[list]:
    rows = [["key", "$/hour/device", "date", "source"]]
    for d in load_devices(config_dir).values():
        rows.append([d.key, f"{d.price_usd_per_hour:.4g}", d.sources["price"]["date"], d.sources["price"]["source"]])
    return rows
