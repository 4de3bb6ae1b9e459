"""The top-level Scenario section, and loading a scenario from a YAML file or a dict.

Each section is a frozen, keyword-only dataclass; `simcost.scenario.schema.build` maps YAML onto
them with unknown-key, type and bound checks, and each class's `_check(path)` holds its own
cross-field rules. Every failure is an `InputError` naming the key path, the value and what was
expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from simcost.catalog.catalog import Catalog, UserCatalog, bundled_catalog, catalog_parts, read_catalog_file
from simcost.catalog.hf_config import entry_from_file
from simcost.errors import InputError
from simcost.scenario.deployment import (
    ITERATION_POLICIES,
    EngineConfig,
    HardwareConfig,
    ModelConfig,
    PerfConfig,
)
from simcost.scenario.fleet import FleetConfig
from simcost.scenario.pricing import CostConfig
from simcost.scenario.schema import apply_overrides, bounds, build
from simcost.scenario.workload import SloConfig, WorkloadConfig


@dataclass(frozen=True, kw_only=True)
class Scenario:
    workload: WorkloadConfig
    model: ModelConfig
    hardware: HardwareConfig
    name: str = "scenario"
    seed: int = field(default=0, metadata=bounds(ge=0))
    duration_s: float | None = field(default=None, metadata=bounds(gt=0))  # arrivals in [0, duration_s)
    warmup_s: float = field(default=0.0, metadata=bounds(ge=0))
    drain_s: float | None = field(default=None, metadata=bounds(ge=0))  # None: run until every request ends
    perf: PerfConfig = PerfConfig()
    engine: EngineConfig = EngineConfig()
    fleet: FleetConfig = FleetConfig()
    slo: SloConfig = SloConfig()
    cost: CostConfig = CostConfig()
    # the scenario's own catalog entries (its catalog: section and catalog files, read in); None: bundled only
    catalog: UserCatalog | None = None

    @property
    def specs(self) -> Catalog:
        """The devices, models and prices this scenario sees: the bundled ones plus its own."""
        return self.catalog.catalog if self.catalog is not None else bundled_catalog()

    def _check(self, path: str) -> None:
        if self.duration_s is None and any(entry.trace is None for entry in self.workload.entries()):
            raise InputError("duration_s", "missing; synthetic arrivals need a duration in seconds")
        if self.fleet.disaggregation is not None and self.engine.policy not in ITERATION_POLICIES:
            raise InputError("fleet.disaggregation", f"needs an iteration-level engine.policy (prefill_first or chunked), not {self.engine.policy}")
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise InputError("warmup_s", f"{self.warmup_s} is not below duration_s={self.duration_s}")
        if self.fleet.pools is not None:
            self._check_serves()

    def _check_serves(self) -> None:
        """Every pool serves known workloads, and every workload has a pool."""
        names = [self.workload.entry_name(i) for i in range(len(self.workload.entries()))]
        pools = self.fleet.pools or ()
        for k, pool in enumerate(pools):
            for j, name in enumerate(pool.serves or ()):
                if name not in names:
                    raise InputError(f"fleet.pools[{k}].serves[{j}]", f"'{name}' is not a workload of this scenario "
                                     f"(known: {', '.join(names)})")
        for name in names:
            if not any(pool.serves is None or name in pool.serves for pool in pools):
                raise InputError("fleet.pools", f"no pool serves workload '{name}'; add it to a pool's serves")


def load_scenario(path: str | Path, overrides: tuple[str, ...] | list[str] = (), seed: int | None = None,
                  catalog_files: tuple[str, ...] | list[str] = ()) -> Scenario:
    """Read a YAML scenario, apply `key.path=value` overrides and an optional seed, validate.
    `catalog_files` (`--catalog`) add catalog entries after the scenario's own."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(str(path), f"cannot read scenario file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise InputError(str(path), f"expected a mapping of sections at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    _resolve_paths(raw, path.parent)
    _resolve_one(raw, ("model", "config_json"), path.parent)
    parts = catalog_parts(raw.pop("catalog", None), "catalog", path.parent)
    for name in catalog_files:
        parts += read_catalog_file(Path(name), f"--catalog {name}")
    if parts:
        raw["catalog"] = UserCatalog.from_parts(parts)
    return scenario_from_dict(raw, (), seed)


# keys whose value may be a file; relative paths in a scenario file mean relative to that file
FILE_KEYS = (("workload", "trace", "name"), ("workload", "input_tokens", "trace"),
             ("workload", "output_tokens", "trace"), ("workload", "arrivals", "rate_file"),
             ("workload", "arrivals", "servegen_file"), ("perf", "profile"))


def _resolve_paths(raw: dict, scenario_dir: Path) -> None:
    """Make relative file paths relative to the scenario's folder, when the file is there (bundled
    names such as azure_conv are never files there and stay as they are). Workload keys apply to
    each entry of a workload mix too."""
    workload = raw.get("workload")
    mix = workload.get("mix") if isinstance(workload, dict) else None
    entries = [entry for entry in mix if isinstance(entry, dict)] if isinstance(mix, list) else []
    for keys in FILE_KEYS:
        roots = [raw] + ([{"workload": entry} for entry in entries] if keys[0] == "workload" else [])
        for root in roots:
            _resolve_one(root, keys, scenario_dir)


def _resolve_one(root: dict, keys: tuple[str, ...], scenario_dir: Path) -> None:
    node: Any = root
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    value = node.get(keys[-1])
    if isinstance(value, str) and not Path(value).is_absolute() and (scenario_dir / value).is_file():
        node[keys[-1]] = str(scenario_dir / value)


def scenario_from_dict(raw: dict, overrides=(), seed: int | None = None) -> Scenario:
    raw = apply_overrides(raw, overrides)
    if seed is not None:
        raw["seed"] = seed
    _merge_pool_engines(raw)
    catalog = _import_model(raw, _user_catalog(raw.pop("catalog", None)))
    scenario = build(Scenario, raw, "")
    return scenario if catalog is None else replace(scenario, catalog=catalog)


def _import_model(raw: dict, catalog: UserCatalog | None) -> UserCatalog | None:
    """`model: {config_json: path}`: the model read from a Hugging Face config.json joins the
    scenario's catalog, under model.name if given, else a key made from the config's name."""
    model = raw.get("model")
    if not isinstance(model, dict) or "config_json" not in model:
        return catalog
    path = model["config_json"]
    if not isinstance(path, str):
        raise InputError("model.config_json", f"{path!r}; expected the path of a config.json")
    name = model.get("name")
    key, entry = entry_from_file(Path(path).expanduser(), name if isinstance(name, str) else None)
    raw["model"] = {**{k: v for k, v in model.items() if k != "config_json"}, "name": key}
    parts = [("catalog", catalog.sections())] if catalog is not None else []
    return UserCatalog.from_parts(parts + [(f"model.config_json {path}", {"models": {key: entry}})])


def _user_catalog(section) -> UserCatalog | None:
    """A scenario's catalog: already read (load_scenario), or a section as written; its `files`
    are relative to the working folder here (load_scenario makes them relative to the scenario)."""
    if section is None or isinstance(section, UserCatalog):
        return section
    parts = catalog_parts(section, "catalog", Path.cwd())
    return UserCatalog.from_parts(parts) if parts else None


def _merge_pool_engines(raw: dict) -> None:
    """A pool's engine section holds only the keys it changes: lay them over the scenario's."""
    fleet = raw.get("fleet")
    pools = fleet.get("pools") if isinstance(fleet, dict) else None
    engine = raw["engine"] if isinstance(raw.get("engine"), dict) else {}
    first = pools[0] if isinstance(pools, list) and pools and isinstance(pools[0], dict) else None
    if first is not None and "hardware" not in raw and "hardware" in first:
        raw["hardware"] = first["hardware"]  # the scenario's own hardware: the first pool's
    for pool in pools if isinstance(pools, list) else ():
        if isinstance(pool, dict) and isinstance(pool.get("engine"), dict):
            pool["engine"] = {**engine, **pool["engine"]}
