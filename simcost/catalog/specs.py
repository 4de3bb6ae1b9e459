"""Device, model and price catalogs: `configs/devices.yaml`, `configs/models.yaml` and
`configs/prices.yaml`.

The device and model catalogs are YAML mappings `key -> entry`; the price catalog is
`provider -> region -> instance -> offer` (see `load_prices`). Loading checks every entry against
a small schema (required fields, types, ranges, and a `sources` group with a source text and a
date for every kind of value), converts the catalog's human units (GiB or GB, GB/s, TFLOPs) into
SI base units (bytes, bytes/s, FLOP/s) once, and caches the result per directory. A bad entry is
an `InputError` naming the file and the key path, e.g.
`devices.yaml: h100-sxm.mem_bw_gb_per_s: missing`.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import yaml

from simcost.errors import InputError, closest
from simcost.units import HOURS_PER_YEAR

__all__ = ["DeviceSpec", "ModelSpec", "PriceOffer", "Commitment", "Purchase", "config_dir", "load_devices",
           "load_models", "load_prices", "get_device", "get_model", "catalog_names", "price_offer", "on_demand_usd_per_device_hour",
           "DEVICE_KINDS", "COMPUTE_FORMATS", "SERVING_KINDS", "MLP_KINDS", "format_catalog", "format_refusal",
           "KV_CACHE_FORMATS"]

DEVICE_KINDS = ("gpu", "cpu", "tpu", "edge")
# Formats a device may list a dense peak for (keys of `peak_tflops`).
COMPUTE_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
# nvfp4: NVIDIA's 4-bit float, an fp8 scale per 16 weights; mxfp4: the OCP microscaling 4-bit float,
# an 8-bit power-of-two scale per 32 weights (gpt-oss ships its experts so)
WEIGHT_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4")
KV_CACHE_FORMATS = ("fp32", "bf16", "fp16", "fp8", "int8")

GB = 1e9  # decimal gigabyte: bandwidths and most vendor memory figures
GIB = 2.0**30  # binary gibibyte: HBM capacities that vendors round to "80GB"
TERA = 1e12

DEVICE_SOURCE_GROUPS = ("spec", "power", "price", "efficiency")
# Fabrics of a tensor-parallel group: a switch (NVSwitch) or a full mesh (AMD Infinity Fabric)
# all-reduces in a near-flat latency; a ring (PCIe, NVLink bridges, TPU ICI) pays one per hop.
INTERCONNECT_KINDS = ("nvswitch", "mesh", "nvlink_ring", "pcie", "ici")
FLAT_INTERCONNECTS = ("nvswitch", "mesh")


@dataclass(frozen=True)
class Interconnect:
    kind: str  # one of INTERCONNECT_KINDS
    bytes_per_s: float  # one direction, per device
    latency_s: float  # per all-reduce on a flat fabric, per ring hop otherwise
MODEL_SOURCE_GROUPS = ("spec",)
SERVING_KINDS = ("tokens", "per_item")  # decoder LLMs stepped token by token; models charged per item
# a layer's dense MLP: gated (Llama, Mistral, Qwen: gate and up projections, then down, 3 matrices
# of intermediate_size) or plain (BLOOM, GPT-J, Falcon, GPT-2, OPT: up, GELU, down, 2 matrices)
MLP_KINDS = ("gated", "plain")
ANY_REGION = "any"  # a provider-wide price, matching every region
_DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")  # YYYY-MM-DD, or YYYY-MM for monthly snapshots


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or CPU socket, or edge board), in SI units. The price is per device,
    on-demand, or None when the catalog has none (then a scenario names a provider or a price)."""

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
    price_usd_per_hour: float | None
    sources: dict = field(hash=False, compare=False, repr=False)
    host_link_bytes_per_s: float | None = None  # PCIe to host memory, one direction (KV swap, host tier)
    aliases: tuple[str, ...] = ()  # other names for it (measurement files, other tools), e.g. "h100-80gb"
    # TPUs: the slice sizes (chips) a cloud rents; a replica must span one of them. () for devices
    # rented one by one (GPUs, CPUs) or bought.
    rentable_shapes: tuple[int, ...] = ()
    # devices joined by the scale-up link (tensor and expert parallelism stay within it): an
    # NVLink domain such as GB200 NVL72's 72 GPUs; None: the default for the kind (8 GPUs)
    devices_per_node: int | None = None
    # the tensor-parallel fabric for the roofline's all-reduce (latency + bandwidth by topology);
    # None: the legacy (t - 1) x allreduce_latency_s charge the catalog defaults were tuned with
    interconnect: Interconnect | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer as in its Hugging Face config.json (dense, or a mixture of
    experts), or a model served per item (serving "per_item": shape fields 0 where not given)."""

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
    serving: str = "tokens"  # one of SERVING_KINDS
    num_experts: int = 0  # mixture of experts; 0 for a dense model
    experts_per_token: int = 0
    expert_params: int = 0  # parameters of all experts of all layers together
    flops_per_item: float = 0.0  # per_item models: FLOPs of one item of `item_input`
    item_input: str = ""  # per_item models: the input size assumed, e.g. "one 224x224 RGB image"
    aliases: tuple[str, ...] = ()  # other names for it (measurement files, other tools), e.g. "llama2-70b"
    # local attention: a window of sliding_window tokens in num_sliding_layers of the layers (0: none),
    # also Llama 4's chunked attention (a chunk is at most a window). The KV cache keeps at most the
    # window per sequence for those layers (simcost.perf.deployment); the step model reads their
    # KV as full attention for now.
    sliding_window: int = 0
    num_sliding_layers: int = 0
    notes: str = ""  # what the entry simplifies (weight formats, sliding windows), for a reader
    # multi-head latent attention (DeepSeek-V2/V3): each layer caches one compressed latent of
    # kv_lora_rank plus a shared rotary key of qk_rope_head_dim per token, for all heads. The entry
    # gives it in its absorbed form, num_kv_heads 1 and head_dim (kv_lora_rank + qk_rope_head_dim) / 2,
    # so that 2 x num_kv_heads x head_dim is the cached width (checked at load).
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    num_shared_experts: int = 0  # always-used experts of each MoE layer (counted outside expert_params)
    first_dense_layers: int = 0  # leading layers with a dense MLP instead of experts (DeepSeek's first_k_dense)
    mlp: str = "gated"  # one of MLP_KINDS: the kernel-table model prices the MLP's GEMMs by their shapes

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def kv_elements_per_token_per_layer(self, tp: int = 1) -> float:
        """KV-cache elements one token keeps in one layer on one of `tp` tensor-parallel devices.
        Grouped-query attention splits its KV heads over the devices (one head each at least, as
        vLLM replicates them); a latent-attention cache is one vector for all heads, so each
        device keeps all of it."""
        if self.is_mla:
            return float(self.kv_lora_rank + self.qk_rope_head_dim)
        return 2.0 * max(self.num_kv_heads / tp, 1.0) * self.head_dim

    @property
    def num_full_layers(self) -> int:
        """Layers attending to the whole context (their KV grows with it)."""
        return self.num_layers - self.num_sliding_layers

    @property
    def active_params(self) -> float:
        """Parameters used per token: all but the experts, plus the routed share of the experts."""
        if not self.num_experts:
            return float(self.num_params)
        return self.num_params - self.expert_params + self.expert_params * self.experts_per_token / self.num_experts


@dataclass(frozen=True)
class Commitment:
    """A 1- or 3-year commitment price, per instance-hour; `range` equals (price, price) when quoted."""

    term_years: int
    usd_per_hour: float
    range_usd_per_hour: tuple[float, float]
    derived: bool  # from a discount range, not a quoted price


@dataclass(frozen=True)
class Purchase:
    """A device bought outright: its price spread evenly over its lifetime, plus its power."""

    price_usd: float
    lifetime_years: float
    usd_per_kwh: float
    power_w: float  # the device's peak_w: power at its highest mode, around the clock

    @property
    def usd_per_hour(self) -> float:
        return self.price_usd / (self.lifetime_years * HOURS_PER_YEAR) + self.power_w / 1000.0 * self.usd_per_kwh


@dataclass(frozen=True)
class PriceOffer:
    """One instance type of one provider in one region. Prices are per instance-hour; the
    `*_per_device_hour` helpers divide by devices_per_instance."""

    provider: str
    region: str
    instance: str
    device: str
    devices_per_instance: float
    on_demand_usd_per_hour: float  # for a purchase: the effective (amortised + power) rate
    spot_range_usd_per_hour: tuple[float, float] | None
    commitments: dict[int, Commitment] = field(hash=False)  # term in years -> commitment
    purchase: Purchase | None
    quoted_usd_per_device_hour: float | None
    sources: dict = field(hash=False, compare=False, repr=False)

    @property
    def spot_usd_per_hour(self) -> float | None:
        """The typical spot price: the midpoint of the observed range."""
        r = self.spot_range_usd_per_hour
        return None if r is None else (r[0] + r[1]) / 2.0

    def per_device(self, usd_per_instance_hour: float) -> float:
        return usd_per_instance_hour / self.devices_per_instance

    @property
    def on_demand_usd_per_device_hour(self) -> float:
        return self.per_device(self.on_demand_usd_per_hour)


# --- locating and loading -------------------------------------------------------------------

def config_dir() -> Path:
    """The catalog folder: `<package>/configs` in a wheel install, `<package>/../configs` in a
    source tree or editable install (pyproject maps the top-level configs/ to simcost.configs)."""
    package_dir = Path(__file__).resolve().parents[1]  # simcost/
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


def load_prices(config_dir: Path | None = None) -> list[PriceOffer]:
    """All offers of `<config_dir>/prices.yaml`, validated against the devices of the same folder,
    in file order."""
    return list(_load_prices(_resolve(config_dir)))


def price_offer(device: str, provider: str, region: str, config_dir: Path | None = None) -> PriceOffer:
    """The offer a scenario on `device` at `provider`/`region` pays: the first listed for the device
    in that region, else in the provider's region "any"; InputError naming all three if none."""
    return find_offer(_load_prices(_resolve(config_dir)), device, provider, region)


def find_offer(offers: tuple[PriceOffer, ...], device: str, provider: str, region: str) -> PriceOffer:
    """`price_offer` over a given list of offers (a scenario's catalog)."""
    providers = list(dict.fromkeys(o.provider for o in offers))
    if provider not in providers:
        raise InputError("fleet.site.provider", f"unknown provider '{provider}' (known: {', '.join(providers)})")
    at_provider = [o for o in offers if o.provider == provider]
    regions = list(dict.fromkeys(o.region for o in at_provider))
    if region not in regions and ANY_REGION not in regions:
        raise InputError("fleet.site.region", f"{provider} has no prices for region '{region}' "
                         f"(known: {', '.join(regions)})")
    for wanted in (region, ANY_REGION):
        for offer in at_provider:
            if offer.region == wanted and offer.device == device:
                return offer
    here = sorted({o.device for o in at_provider if o.region in (region, ANY_REGION)})
    elsewhere = sorted(f"{o.provider}/{o.region}" for o in offers if o.device == device)
    hint = f"; it is priced at {', '.join(elsewhere)}" if elsewhere else "; no provider in prices.yaml prices it"
    raise InputError("fleet.site.provider", f"no {provider} price for device {device} in region {region} "
                     f"({provider} {region} prices: {', '.join(here)}){hint}")


def on_demand_usd_per_device_hour(device: DeviceSpec, provider: str | None, region: str) -> float:
    """A scenario's on-demand price per device-hour: from the price catalog when it names a
    provider, else the device catalog's own price."""
    return device_hour_price(_load_prices(_resolve(None)), device, provider, region)


def device_hour_price(offers: tuple[PriceOffer, ...], device: DeviceSpec, provider: str | None, region: str) -> float:
    """`on_demand_usd_per_device_hour` over a given list of offers (a scenario's catalog)."""
    if provider is not None:
        return find_offer(offers, device.key, provider, region).on_demand_usd_per_device_hour
    if device.price_usd_per_hour is None:
        priced = sorted(f"{o.provider}/{o.region}" for o in offers if o.device == device.key)
        hint = f" (prices.yaml prices {device.key} at {', '.join(priced)})" if priced else ""
        raise InputError("fleet.price_usd_per_device_hour", f"{device.key} has no price in devices.yaml; set "
                         f"fleet.price_usd_per_device_hour or fleet.site.provider{hint}")
    return device.price_usd_per_hour


T = TypeVar("T")  # a catalog entry type (DeviceSpec, ModelSpec)


def get_device(key: str, where: str = "hardware.device") -> DeviceSpec:
    """The device with catalog key (or alias) `key`."""
    return _entry(_load_devices(_resolve(None)), key, "device", where)


def get_model(key: str, where: str = "model.name") -> ModelSpec:
    """The model with catalog key (or alias) `key`."""
    return _entry(_load_models(_resolve(None)), key, "model", where)


def _entry(entries: dict[str, T], key: str, kind: str, where: str) -> T:
    found = entries.get(key) or _by_alias(entries, key)
    if found is None:
        raise InputError(where, f"unknown {kind} '{key}'{closest(key, entries)}")
    return found


def _by_alias(entries: dict, name: str):
    return next((e for e in entries.values() if name in e.aliases), None)


def catalog_names(spec: DeviceSpec | ModelSpec) -> tuple[str, ...]:
    """Every name `spec` goes by: its key, then its aliases."""
    return (spec.key,) + spec.aliases


def _resolve(directory: Path | None) -> str:
    # A string key so that the lru_cache below sees one entry per folder however it was named.
    return str(Path(directory).resolve() if directory is not None else config_dir())


@functools.lru_cache(maxsize=8)
def _load_devices(directory: str) -> dict[str, DeviceSpec]:
    raw = _read_catalog(Path(directory) / "devices.yaml")
    return _check_aliases({key: _device(key, entry, _Where("devices.yaml", key)) for key, entry in raw.items()},
                          "devices.yaml")


@functools.lru_cache(maxsize=8)
def _load_models(directory: str) -> dict[str, ModelSpec]:
    raw = _read_catalog(Path(directory) / "models.yaml")
    return _check_aliases({key: _model(key, entry, _Where("models.yaml", key)) for key, entry in raw.items()},
                          "models.yaml")


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


def check_aliases(entries: dict, file: str) -> dict:
    """An alias must name one entry only: not another key, not another entry's alias."""
    return _check_aliases(entries, file)


def _check_aliases(entries: dict, file: str) -> dict:
    """An alias must name one entry only: not another key, not another entry's alias."""
    owner: dict[str, str] = {}
    for key, spec in entries.items():
        for alias in spec.aliases:
            other = key if alias in entries else owner.get(alias)
            if other is not None:
                raise InputError(f"{file}: {key}.aliases", f"'{alias}' already names {alias if alias in entries else other}")
            owner[alias] = key
    return entries


@functools.lru_cache(maxsize=8)
def _load_prices(directory: str) -> tuple[PriceOffer, ...]:
    devices = _load_devices(directory)
    raw = _read_catalog(Path(directory) / "prices.yaml")
    offers = []
    for provider, regions in raw.items():
        for region, instances in _mapping(regions, _Where("prices.yaml", provider)).items():
            where = _Where("prices.yaml", f"{provider}.{region}")
            for instance, entry in _mapping(instances, where).items():
                offers.append(_offer(provider, str(region), str(instance), entry, devices,
                                     _Where("prices.yaml", f"{provider}.{region}.{instance}")))
    return tuple(offers)


# libyaml's safe loader when PyYAML has it: the same data, parsed ~20x faster (0.15 s of every run otherwise)
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_catalog(path: Path) -> dict:
    try:
        raw = yaml.load(path.read_text(), Loader=_SAFE_LOADER)
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
                    "mfu", "mbu", "step_overhead_s", "allreduce_latency_s", "sources")
_DEVICE_OPTIONAL = ("memory_gb", "memory_gib", "host_link_gb_per_s", "price_usd_per_hour", "aliases", "rentable_shapes",
                    "devices_per_node", "interconnect")


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
    )


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


# --- tables for `simcost catalog` -------------------------------------------------------------

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


def compute_format_for(device: DeviceSpec, weight_format: str) -> str | None:
    """The format the matmuls run in for `weight_format` on `device`, or None if it cannot."""
    peaks = device.peak_flops
    if weight_format == "nvfp4":
        # needs FP4 tensor cores (NVIDIA Blackwell): no dequantising kernel stands in for it
        return "fp4" if "fp4" in peaks and device.kind in ("gpu", "edge") else None
    if weight_format == "mxfp4":
        if "fp4" in peaks:
            return "fp4"
        # elsewhere weight-only (vLLM's Marlin / Triton MXFP4 MoE kernels on Hopper and Ampere):
        # dequantised to 16 bits before the matmul, so a GPU with a 16-bit peak only
        weight_format = "bf16" if device.kind == "gpu" else ""
    if weight_format in ("int8", "int4"):
        weight_format = "bf16"  # weight-only quantisation: dequantised to 16-bit before the matmul
    if weight_format in peaks:
        return weight_format
    if weight_format in ("bf16", "fp16"):
        other = "fp16" if weight_format == "bf16" else "bf16"
        if other in peaks:
            return other
        # a CPU with fp32 units only (Graviton) converts 16-bit weights and computes in fp32
        return "fp32" if "fp32" in peaks else None
    return None


# 4-bit floats carry their block scales: nvfp4 one fp8 byte per 16 weights, mxfp4 one byte per 32
BYTES_PER_ELEMENT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
                     "nvfp4": 0.5 + 1.0 / 16, "mxfp4": 0.5 + 1.0 / 32}


def format_refusal(device: DeviceSpec, fmt: str, what: str = "weights") -> str | None:
    """Why `device` cannot run `fmt` weights (or, what="KV cache", keep its KV in `fmt`), in one
    phrase; None when it can."""
    if what == "KV cache":
        # stored in fp8 and widened inside the attention kernel: vLLM's CUDA/ROCm kernels do so on any
        # GPU (Ampere included); elsewhere the device needs fp8 support of its own
        if fmt == "fp8" and "fp8" not in device.peak_flops and device.kind not in ("gpu", "edge"):
            return (f"an fp8 KV cache needs fp8 support (NVIDIA Hopper, Ada or Blackwell, AMD MI300 or later, "
                    f"TPU7x) or a GPU's attention kernels to widen it; {device.key} has neither")
        return None
    if compute_format_for(device, fmt) is not None:
        return None
    if fmt == "nvfp4":
        return f"nvfp4 weights need FP4 tensor cores (NVIDIA Blackwell); {device.key} has none"
    if fmt == "mxfp4":
        return f"mxfp4 weights need FP4 units or a GPU with a 16-bit peak to dequantise on; {device.key} has neither"
    if fmt == "fp8":
        return f"fp8 weights need fp8 compute (NVIDIA Hopper, Ada or Blackwell, AMD MI300 or later); {device.key} has none"
    return f"{fmt} weights need {fmt} compute, which {device.key} lacks"
