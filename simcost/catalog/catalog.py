"""The catalog a scenario sees: the bundled devices, models and price offers, plus the entries the
scenario brings itself (its `catalog:` section, catalog files, `--catalog`).

`Catalog` is immutable and per scenario: `bundled_catalog()` is the package's own, and
`Catalog.with_entries` returns a new catalog with a user's entries added or replacing bundled ones
of the same key, checked by exactly the rules the bundled files are (`simcost.catalog.entries`).
Nothing is registered globally, so two scenarios with different catalogs in one process never see
each other's entries.

`UserCatalog` is a scenario's additions as written (catalog files already read in), kept as plain
data so that a resolved scenario written out (results folders, sweep cache keys) carries them.

A catalog file, the scenario's `catalog:` section and `--catalog FILE` share one layout:

    devices: {key: {...devices.yaml entry...}}
    models:  {key: {...models.yaml entry...}}
    prices:  [{provider: aws, region: us-east-1, instance: p6-b200.48xlarge, ...prices.yaml offer...}]
    files:   [other catalog files, relative to this file]    # scenario section and files only
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from simcost.catalog import entries, specs
from simcost.catalog.types import DeviceSpec, ModelSpec, PriceOffer
from simcost.errors import InputError, closest
from simcost.yamlio import read_yaml_file

__all__ = ["Catalog", "UserCatalog", "bundled_catalog", "read_catalog_file", "SECTIONS"]

SECTIONS = ("devices", "models", "prices", "files")
_OFFER_KEYS = ("provider", "region", "instance")


class Catalog:
    """Devices and models by key, and price offers in lookup order (a user's offers first)."""

    __slots__ = ("devices", "models", "prices")

    def __init__(self, devices: Mapping[str, DeviceSpec], models: Mapping[str, ModelSpec],
                 prices: tuple[PriceOffer, ...]):
        self.devices: Mapping[str, DeviceSpec] = MappingProxyType(dict(devices))
        self.models: Mapping[str, ModelSpec] = MappingProxyType(dict(models))
        self.prices: tuple[PriceOffer, ...] = tuple(prices)

    def device(self, key: str, where: str = "hardware.device") -> DeviceSpec:
        """The device with catalog key (or alias) `key`."""
        found = self.devices.get(key) or _by_alias(self.devices, key)
        if found is None:
            raise InputError(where, f"unknown device '{key}'{closest(key, self.devices)}")
        return found

    def model(self, key: str, where: str = "model.name") -> ModelSpec:
        """The model with catalog key (or alias) `key`."""
        found = self.models.get(key) or _by_alias(self.models, key)
        if found is None:
            raise InputError(where, f"unknown model '{key}'{closest(key, self.models)}")
        return found

    def price_offer(self, device: str, provider: str, region: str) -> PriceOffer:
        return specs.find_offer(self.prices, device, provider, region)

    def on_demand_usd_per_device_hour(self, device: DeviceSpec, provider: str | None, region: str) -> float:
        return specs.device_hour_price(self.prices, device, provider, region)

    def with_entries(self, raw: Any, label: str) -> Catalog:
        """This catalog plus `raw` (devices, models, prices sections; no files), each entry checked
        as the bundled ones are; errors name `label` and the entry's key path."""
        raw = _sections(raw, label, allowed=SECTIONS[:3])
        devices = dict(self.devices)
        for key, entry in _entries(raw, "devices", label).items():
            devices[key] = entries.parse_device(key, entry, label, "devices.")
        models = dict(self.models)
        for key, entry in _entries(raw, "models", label).items():
            models[key] = entries.parse_model(key, entry, label, "models.")
        specs.check_aliases(devices, f"{label}: devices")
        specs.check_aliases(models, f"{label}: models")
        added = [_offer(item, i, devices, label) for i, item in enumerate(_offer_list(raw, label))]
        replaced = {(o.provider, o.region, o.instance) for o in added}
        kept = [o for o in self.prices if (o.provider, o.region, o.instance) not in replaced]
        changed = {k for k, d in devices.items() if self.devices.get(k) is not d}
        # a purchase charges its device's power: an overridden device changes its offers' rate
        kept = [_repower(o, devices[o.device]) if o.device in changed and o.purchase else o for o in kept]
        return Catalog(devices, models, tuple(added) + tuple(kept))


def _by_alias(entries: Mapping, name: str):
    return next((e for e in entries.values() if name in e.aliases), None)


def _sections(raw: Any, label: str, allowed: tuple[str, ...]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(label, f"expected a mapping with {', '.join(allowed)}, got {type(raw).__name__}")
    for name in raw:
        if name not in allowed:
            raise InputError(f"{label}: {name}", f"unknown section{closest(str(name), allowed)}")
    return raw


def _entries(raw: dict, section: str, label: str) -> dict:
    value = raw.get(section) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise InputError(f"{label}: {section}", f"expected a mapping of key -> entry, got {type(value).__name__}")
    return value


def _offer_list(raw: dict, label: str) -> list:
    value = raw.get("prices") or []
    if not isinstance(value, list):
        raise InputError(f"{label}: prices", "expected a list of offers, each with provider, region and instance")
    return value


def _offer(item: Any, i: int, devices: dict, label: str) -> PriceOffer:
    at = f"{label}: prices[{i}]"
    if not isinstance(item, dict):
        raise InputError(at, f"expected a mapping, got {type(item).__name__}")
    for name in _OFFER_KEYS:
        if not isinstance(item.get(name), str) or not item[name].strip():
            raise InputError(f"{at}.{name}", "missing; an offer names its provider, region and instance")
    entry = {k: v for k, v in item.items() if k not in _OFFER_KEYS}
    return entries.parse_offer(item["provider"], item["region"], item["instance"], entry, devices, label, f"prices[{i}]")


def _repower(offer: PriceOffer, device: DeviceSpec) -> PriceOffer:
    assert offer.purchase is not None
    purchase = replace(offer.purchase, power_w=device.peak_w)
    return replace(offer, purchase=purchase, on_demand_usd_per_hour=purchase.usd_per_hour)


@functools.lru_cache(maxsize=4)
def _bundled(directory: str) -> Catalog:
    return Catalog(specs.load_devices(Path(directory)), specs.load_models(Path(directory)),
                   tuple(specs.load_prices(Path(directory))))


def bundled_catalog(config_dir: Path | None = None) -> Catalog:
    """The package's catalogs (configs/devices.yaml, models.yaml, prices.yaml)."""
    return _bundled(str(Path(config_dir).resolve() if config_dir is not None else specs.config_dir()))


# --- a scenario's own entries ---------------------------------------------------------------------

@dataclass(frozen=True)
class UserCatalog:
    """A scenario's catalog additions as plain data, in the order they apply (later wins): the
    entries of its catalog files, then its inline entries, then `--catalog` files."""

    devices: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    prices: list = field(default_factory=list)

    def __hash__(self) -> int:
        return hash(self.content())

    def sections(self) -> dict:
        return {"devices": self.devices, "models": self.models, "prices": self.prices}

    def content(self) -> str:
        """Canonical JSON of the entries: what a cache key or a memo needs."""
        return json.dumps(self.sections(), sort_keys=True, default=str)

    @property
    def catalog(self) -> Catalog:
        """The bundled catalog with these entries added."""
        return _merged(self.content())

    @staticmethod
    def from_parts(parts: list[tuple[str, dict]]) -> UserCatalog:
        """Check each part (label, sections) against the bundled catalog plus the parts before
        it, so an error names the file or section it is in, then merge them."""
        catalog = bundled_catalog()
        devices: dict = {}
        models: dict = {}
        prices: list = []
        for label, raw in parts:
            catalog = catalog.with_entries(raw, label)
            devices.update(raw.get("devices") or {})
            models.update(raw.get("models") or {})
            prices = list(raw.get("prices") or []) + prices  # later parts' offers are looked up first
        return UserCatalog(devices=devices, models=models, prices=prices)


@functools.lru_cache(maxsize=16)
def _merged(content: str) -> Catalog:
    # keyed by content, not by object: equal additions share one (immutable) Catalog
    return bundled_catalog().with_entries(json.loads(content), "scenario catalog")


def read_catalog_file(path: Path, label: str | None = None, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """The parts of catalog file `path`: the files it names (relative to it), then its own entries."""
    path = Path(path)
    label = label or str(path)
    if path.resolve() in seen:
        raise InputError(label, "catalog files include each other in a loop")
    raw = read_yaml_file(path, "catalog file")  # not UTF-8, not YAML, a repeated key: one line naming file:line
    return catalog_parts(raw, label, path.parent, seen + (path.resolve(),))


def catalog_parts(raw: Any, label: str, base_dir: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """A catalog section or file as parts (label, sections): its `files` first, then itself."""
    raw = _sections(raw, label, allowed=SECTIONS)
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise InputError(f"{label}: files", f"{files!r}; expected a list of catalog file paths")
    parts: list[tuple[str, dict]] = []
    for name in files:
        path = Path(name).expanduser()
        parts += read_catalog_file(path if path.is_absolute() else base_dir / path, name, seen)
    own = absolute_kernel_tables({k: v for k, v in raw.items() if k != "files"}, base_dir)
    return parts + ([(label, own)] if own else [])


def absolute_kernel_tables(section: dict, base_dir: Path) -> dict:
    """A catalog section with its devices' `kernel_tables` paths, relative to the catalog that
    names them, made absolute (the merged catalog no longer knows which file an entry came from)."""
    devices = section.get("devices")
    if not isinstance(devices, dict):
        return section
    return {**section, "devices": {key: _absolute(entry, base_dir) for key, entry in devices.items()}}


def _absolute(entry: Any, base_dir: Path) -> Any:
    path = entry.get("kernel_tables") if isinstance(entry, dict) else None
    if not isinstance(path, str) or not path.strip() or Path(path).expanduser().is_absolute():
        return entry
    return {**entry, "kernel_tables": str((base_dir / path).resolve())}
