"""The top-level Scenario section, and loading a scenario from a YAML file or a dict.

Each section is a frozen, keyword-only dataclass; `simcost.scenario.schema.build` maps YAML onto
them with unknown-key, type and bound checks, and each class's `_check(path)` holds its own
cross-field rules. Every failure is an `InputError` naming the key path, the value and what was
expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from simcost.catalog.catalog import Catalog, UserCatalog, bundled_catalog, catalog_parts, read_catalog_file
from simcost.catalog.hf_config import entry_from_file
from simcost.errors import InputError
from simcost.scenario.arrivals import MmppArrivals, peak_rate_per_s
from simcost.scenario.deployment import (
    ITERATION_POLICIES,
    EngineConfig,
    HardwareConfig,
    ModelConfig,
    PerfConfig,
)
from simcost.scenario.fleet import FleetConfig
from simcost.scenario.limits import MAX_DURATION_S, MAX_REPLICAS, MAX_REQUESTS, MAX_TIMED_EVENTS, REPLICAS_WHY
from simcost.scenario.output import OutputConfig
from simcost.scenario.pricing import CostConfig
from simcost.scenario.schema import apply_overrides, bounds, build, to_dict
from simcost.scenario.workload import LengthSpec, SloConfig, WorkloadConfig
from simcost.yamlio import read_yaml_file

DURATION_WHY = "a simulated year; use simcost forecast for longer horizons"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    workload: WorkloadConfig
    model: ModelConfig
    hardware: HardwareConfig
    name: str = "scenario"
    seed: int = field(default=0, metadata=bounds(ge=0))
    duration_s: float | None = field(default=None, metadata=bounds(DURATION_WHY, gt=0, le=MAX_DURATION_S))  # arrivals in [0, duration_s)
    warmup_s: float = field(default=0.0, metadata=bounds(ge=0))
    drain_s: float | None = field(default=None, metadata=bounds(DURATION_WHY, ge=0, le=MAX_DURATION_S))  # None: run until every request ends
    perf: PerfConfig = PerfConfig()
    engine: EngineConfig = EngineConfig()
    fleet: FleetConfig = FleetConfig()
    slo: SloConfig = SloConfig()
    cost: CostConfig = CostConfig()
    output: OutputConfig = OutputConfig()  # what the run writes: simcost.scenario.output
    # the scenario's own catalog entries (its catalog: section and catalog files, read in); None: bundled only
    catalog: UserCatalog | None = None

    def __post_init__(self) -> None:
        # engine keys whose preset default depends on the device (max_num_seqs), for this
        # scenario's device; an unknown device is reported where the deployment is planned
        try:
            device = self.specs.device(self.hardware.device, "hardware.device")
        except InputError:
            return
        engine = self.engine.for_device(device.key, device.kind, device.memory_bytes)
        if engine is not self.engine:
            object.__setattr__(self, "engine", engine)

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
        if (self.fleet.pools is not None or self.fleet.api_pools or self.fleet.cascade is not None
                or self.fleet.response_cache is not None):
            self._check_serves()
        if self.fleet.num_replicas > MAX_REPLICAS:  # each key is bounded; their sum must be too
            key = "pools" if self.fleet.pools is not None else "disaggregation" if self.fleet.disaggregation else "redundancy"
            raise InputError(f"fleet.{key}", f"{self.fleet.num_replicas:,} replicas in all; expected at most "
                             f"{MAX_REPLICAS:,} ({REPLICAS_WHY})")
        names = [self.workload.entry_name(i) for i in range(len(self.workload.entries()))]
        for j, rate in enumerate(self.cost.outcomes or ()):
            if rate.workload not in names:
                raise unknown_workload(f"cost.outcomes[{j}].workload", f"'{rate.workload}'", names)
        self._check_request_count()
        self._check_max_model_len()
        self._check_timed_events()
        self._check_frontend()

    def _check_frontend(self) -> None:
        """engine.frontend_s delays a request before the fleet routes it, so one value serves every pool."""
        for k, pool in enumerate(self.fleet.pools or ()):
            if pool.engine is not None and pool.engine.frontend_s != self.engine.frontend_s:
                raise InputError(f"fleet.pools[{k}].engine.frontend_s", f"{pool.engine.frontend_s} differs from "
                                 f"engine.frontend_s={self.engine.frontend_s}; the delay comes before routing, so it "
                                 "is set once, in the top-level engine section")

    def _check_timed_events(self) -> None:
        """Periods so short that the run would schedule billions of events (an autoscaler sampling
        every nanosecond, on-off bursts switching every nanosecond): refuse them before the run
        hangs or allocates the switch times."""
        if self.duration_s is None:
            return
        periods = []
        scalers = [("fleet.autoscaler", self.fleet.autoscaler)] + [
            (f"fleet.pools[{k}].autoscaler", pool.autoscaler) for k, pool in enumerate(self.fleet.pools or ())]
        for where, scaler in scalers:
            if scaler is not None:
                periods += [(f"{where}.tick_s", scaler.tick_s), (f"{where}.sample_s", scaler.sample_s)]
        for i, entry in enumerate(self.workload.entries()):
            arrivals = entry.arrivals
            if isinstance(arrivals, MmppArrivals):
                where = f"workload.mix[{i}].arrivals" if self.workload.mix is not None else "workload.arrivals"
                periods += [(f"{where}.mean_on_s", arrivals.mean_on_s), (f"{where}.mean_off_s", arrivals.mean_off_s)]
        for where, period_s in periods:
            if self.duration_s / period_s > MAX_TIMED_EVENTS:
                raise InputError(where, f"{period_s:g} s makes ~{self.duration_s / period_s:.3g} events over "
                                 f"duration_s={self.duration_s:g}; expected at least {self.duration_s / MAX_TIMED_EVENTS:.3g} s "
                                 f"(at most {MAX_TIMED_EVENTS:,} events)")

    def _check_max_model_len(self) -> None:
        """A max_model_len below every request the workload can draw rejects them all; say so now
        rather than report a run in which nothing was served."""
        engines = [("engine", self.engine)] + [(f"fleet.pools[{k}].engine", pool.engine)
                                               for k, pool in enumerate(self.fleet.pools or ()) if pool.engine]
        for where, engine in engines:
            for i, entry in enumerate(self.workload.entries()):
                shortest = shortest_request(entry)
                if shortest is None:
                    continue
                name, (prompt, total) = self.workload.entry_name(i), shortest
                if engine.max_model_len is not None and total > engine.max_model_len:
                    raise InputError(f"{where}.max_model_len", f"{engine.max_model_len} tokens is below the shortest request "
                                     f"workload '{name}' can send ({total} tokens of prompt and output), so every "
                                     f"request would be rejected; expected at least {total}")
                budget = engine.max_num_batched_tokens
                if budget is not None and engine.policy == "prefill_first" and prompt > budget:
                    raise InputError(f"{where}.max_num_batched_tokens", f"{budget} tokens is below the shortest prompt "
                                     f"workload '{name}' can send ({prompt} tokens), and prefill_first does not split "
                                     f"prompts, so every request would be rejected; expected at least {prompt} "
                                     "(or policy: chunked)")

    def _check_request_count(self) -> None:
        """The requests synthetic arrivals would make, estimated before any is drawn: a rate typed
        with three zeros too many must be refused now, not die allocating the request table."""
        for i, entry in enumerate(self.workload.entries()):
            peak = peak_rate_per_s(entry.arrivals) if entry.arrivals is not None else None
            if peak is None or self.duration_s is None:
                continue
            key, rate = peak
            turns = (_bound(entry.session.turns, "largest") if entry.session is not None else None) or 1
            expected = rate * self.duration_s * turns
            if expected > MAX_REQUESTS:
                where = f"workload.mix[{i}].arrivals.{key}" if self.workload.mix is not None else f"workload.arrivals.{key}"
                raise InputError(where, f"~{expected:.3g} requests at up to {rate:g}/s over duration_s={self.duration_s:g}"
                                 f"{f' x {turns:g} turns' if turns != 1 else ''}; expected at most {MAX_REQUESTS:,} "
                                 "(lower the rate or the duration)")

    def _check_serves(self) -> None:
        """Every pool serves known workloads, and every workload has a pool."""
        names = [self.workload.entry_name(i) for i in range(len(self.workload.entries()))]
        pools = self.fleet.pools or ()
        for k, pool in enumerate(pools):
            for j, name in enumerate(pool.serves or ()):
                if name not in names:
                    raise unknown_workload(f"fleet.pools[{k}].serves[{j}]", f"'{name}'", names)
        for name in names if self.fleet.pools is not None else ():
            if not any(pool.serves is None or name in pool.serves for pool in pools):
                raise InputError("fleet.pools", f"no pool serves workload '{name}'; add it to a pool's serves")
        api_names = [a.name for a in self.fleet.api_pools]
        for k, api in enumerate(self.fleet.api_pools):
            if api_names.index(api.name) != k or api.name in [p.name for p in pools]:
                raise InputError(f"fleet.api_pools[{k}].name", f"'{api.name}' is used twice; pools need distinct names")
            for j, name in enumerate(api.serves or ()):
                if name not in names:
                    raise unknown_workload(f"fleet.api_pools[{k}].serves[{j}]", f"'{name}'", names)
        cascade = self.fleet.cascade
        if cascade is not None:
            targets = [p.name for p in pools] + api_names
            for key in ("first", "escalate_to"):
                name = getattr(cascade, key)
                if name not in targets and not (key == "first" and name == "fleet"):
                    raise InputError(f"fleet.cascade.{key}", f"'{name}' is not a pool of fleet.pools or fleet.api_pools "
                                     f"(known: {', '.join((['fleet'] if key == 'first' else []) + targets) or 'none'})")
            for j, name in enumerate((cascade.workloads or ()) + tuple(r.workload for r in cascade.rates or ())):
                if name not in names:
                    raise unknown_workload("fleet.cascade", f"workload '{name}'", names)
        cache = self.fleet.response_cache
        for name in ((cache.workloads or ()) + tuple(r.workload for r in cache.rates or ())) if cache else ():
            if name not in names:
                raise unknown_workload("fleet.response_cache", f"workload '{name}'", names)


class UnknownWorkload(InputError):
    """A key names a workload the scenario does not have (`simcost validate`, whose replay has one
    workload, catches it to say why)."""


def unknown_workload(where: str, named: str, names: list[str]) -> UnknownWorkload:
    return UnknownWorkload(where, f"{named} is not a workload of this scenario (known: {', '.join(names)})")


def _bound(spec: LengthSpec, which: str) -> float | None:
    """spec.smallest() or spec.largest(), where the distribution has one: an empirical one (a
    trace's lengths) has none until the trace is read."""
    method = getattr(spec, which, None)
    return method() if method is not None else None


def shortest_request(entry: WorkloadConfig) -> tuple[int, int] | None:
    """(the fewest prompt tokens, the fewest prompt plus output tokens) a synthetic workload's
    request can have; None when a trace or an empirical distribution decides."""
    smallest = [getattr(spec, "smallest", None) for spec in (entry.input_tokens, entry.output_tokens)]
    prompt, output = (method() if method is not None else None for method in smallest)
    if entry.trace is not None or prompt is None or output is None:
        return None
    fewest_items = (_bound(entry.items.per_request, "smallest") or 0) if entry.items is not None else 0
    items = int(entry.items.prompt_tokens_per_item * fewest_items) if entry.items is not None else 0
    return prompt + items, prompt + items + output


def load_scenario(path: str | Path, overrides: tuple[str, ...] | list[str] = (), seed: int | None = None,
                  catalog_files: tuple[str, ...] | list[str] = ()) -> Scenario:
    """Read a YAML scenario, apply `key.path=value` overrides and an optional seed, validate.
    `catalog_files` (`--catalog`) add catalog entries after the scenario's own."""
    path = Path(path)
    raw = read_yaml_file(path, "scenario file")
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


def scenario_text(scenario: Scenario) -> str:
    """The scenario as run, as YAML (a results folder's scenario.yaml). Every key holds the value
    that ran, except a max_num_seqs the engine preset chose for the device: it is left out, with
    the value in a comment, so the file reruns the same here and a rerun on another device
    (--set hardware.device=...) gets that device's default, not this one's. A pool's engine
    section leaves it out too (each pool's device decides it when the pool is planned)."""
    raw = to_dict(scenario)
    chosen = raw["engine"].pop("max_num_seqs") if scenario.engine.seqs_from_preset else None
    for pool, raw_pool in zip(scenario.fleet.pools or (), (raw.get("fleet") or {}).get("pools") or ()):
        if pool.engine is not None and pool.engine.seqs_from_preset:
            raw_pool["engine"].pop("max_num_seqs", None)
    lines = yaml.safe_dump(raw, sort_keys=False).splitlines()
    if chosen is not None and "engine:" in lines:
        at = lines.index("engine:") + 1
        lines.insert(at, f"  # max_num_seqs: {chosen}  (the engine preset's for {scenario.hardware.device})")
    return "\n".join(lines) + "\n"


_PRESET_SEQS = re.compile(r"^  # max_num_seqs: (\d+)  \(the engine preset's", re.MULTILINE)


def preset_max_num_seqs(text: str) -> int | None:
    """The max_num_seqs `scenario_text` wrote as a comment (its preset chose it), or None."""
    found = _PRESET_SEQS.search(text)
    return int(found.group(1)) if found else None
