"""Device, model and price catalogs: `configs/devices.yaml`, `configs/models.yaml` and
`configs/prices.yaml`, located, loaded once per folder, and looked up by key or alias.

The device and model catalogs are YAML mappings `key -> entry`; the price catalog is
`provider -> region -> instance -> offer` (see `load_prices`). `simcost.catalog.entries` checks
every entry (required fields, types, ranges, a `sources` group with a source text and a date for
every kind of value) and converts its human units into SI base units; `simcost.catalog.types`
holds what an entry becomes. A bad entry is an `InputError` naming the file and the key path, e.g.
`devices.yaml: h100-sxm.mem_bw_gb_per_s: missing`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TypeVar

import yaml

from simcost.catalog.entries import parse_device, parse_model, parse_prices
from simcost.catalog.types import (
    ANY_REGION,
    DeviceSpec,
    ModelSpec,
    PriceOffer,
)
from simcost.errors import InputError, closest

__all__ = ["config_dir", "load_devices", "load_models", "load_prices", "get_device", "get_model", "catalog_names",
           "price_offer", "find_offer", "on_demand_usd_per_device_hour", "device_hour_price", "check_aliases"]


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
    return check_aliases({key: parse_device(key, entry, "devices.yaml") for key, entry in raw.items()},
                          "devices.yaml")


@functools.lru_cache(maxsize=8)
def _load_models(directory: str) -> dict[str, ModelSpec]:
    raw = _read_catalog(Path(directory) / "models.yaml")
    return check_aliases({key: parse_model(key, entry, "models.yaml") for key, entry in raw.items()},
                          "models.yaml")


def check_aliases(entries: dict, file: str) -> dict:
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
    return parse_prices(_read_catalog(Path(directory) / "prices.yaml"), _load_devices(directory), "prices.yaml")


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


