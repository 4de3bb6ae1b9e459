"""simcost from Python: `run`, `sweep` and `size`, the library form of the commands of the same name.

    >>> import simcost
    >>> run = simcost.run("configs/example.yaml", overrides={"duration_s": 60})  # doctest: +SKIP
    >>> run.summary["ttft_s"]["p99"], run.to_pandas("requests")                 # doctest: +SKIP

A scenario is a YAML file's path, a dict of the same schema, or a `Scenario`; `overrides` is a
dict of dotted keys (`{"engine.max_num_seqs": 128}`), as `--set` takes them. Results hold the
summary (`.summary`, the dict summary.json holds), tables as data frames (`.to_pandas(...)`,
needs pandas: pip install 'simcost[notebook]'), a one-line `repr` and a table in Jupyter, and
`.write(folder)`, which writes the folder the command writes.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from simcost.catalog.catalog import absolute_kernel_tables
from simcost.errors import InputError
from simcost.scenario.deployment import PRESET_KEYS, EngineConfig, free_device_defaults
from simcost.scenario.scenario import Scenario, load_scenario, scenario_from_dict
from simcost.scenario.schema import to_dict

ScenarioLike = str | os.PathLike | dict | Scenario


def load(scenario: ScenarioLike, *, seed: int | None = None, overrides: dict | None = None,
         catalog: tuple[str, ...] | list[str] = ()) -> Scenario:
    """The validated scenario: from a file (relative paths in it are relative to it, as for the
    CLI), a dict (relative to the working folder) or a Scenario, with `overrides` and `seed`."""
    sets = _set_texts(overrides)
    if isinstance(scenario, Scenario):
        if not (sets or seed is not None or catalog):
            return scenario
        return _from_raw(_unpreset(to_dict(scenario), overrides or {}, scenario.engine), sets, seed, catalog)
    if isinstance(scenario, dict):
        return _from_raw(scenario, sets, seed, catalog)
    if isinstance(scenario, (str, os.PathLike)):
        return load_scenario(Path(scenario), sets, seed, tuple(catalog))
    raise InputError("scenario", f"a {type(scenario).__name__}; expected a YAML file path, a dict or a Scenario")


def _unpreset(raw: dict, overrides: dict, engine: EngineConfig) -> dict:
    """A built Scenario holds the keys its engine preset filled in; a new engine.preset decides
    them again unless the same overrides give them, and a new device or policy the one the
    preset set for the device (max_num_seqs)."""
    if {"hardware.device", "engine.policy"} & set(overrides) and "engine.max_num_seqs" not in overrides:
        free_device_defaults(raw.get("engine"), engine)
    if "engine.preset" in overrides:
        for key in PRESET_KEYS:
            if f"engine.{key}" not in overrides:
                raw["engine"].pop(key, None)
    return raw


def _from_raw(raw: dict, sets: tuple[str, ...], seed: int | None, catalog) -> Scenario:
    if not catalog:
        return scenario_from_dict(raw, sets, seed)
    if isinstance(raw.get("catalog"), dict):  # a dict's paths are relative to the working folder, not the copy's
        raw = {**raw, "catalog": absolute_kernel_tables(raw["catalog"], Path.cwd())}
    with tempfile.TemporaryDirectory() as folder:  # catalog files join a scenario the way load_scenario reads them
        return load_scenario(_scenario_file(raw, Path(folder)), sets, seed, tuple(catalog))


def _set_texts(overrides: dict | None) -> tuple[str, ...]:
    """{key: value} as --set texts, written by the YAML library that reads them back (so 1e-05
    stays a float and '1' stays a string)."""
    if overrides is None:
        return ()
    if not isinstance(overrides, dict):
        raise InputError("overrides", f"a {type(overrides).__name__}; expected a dict such as {{'fleet.replicas': 4}}")
    from simcost.analysis.sweep import point_overrides

    return point_overrides(overrides)


def _scenario_file(raw: dict, folder: Path) -> Path:
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- run ------------------------------------------------------------------------------------

def run(scenario: ScenarioLike, *, seed: int | None = None, overrides: dict | None = None, out: str | Path | None = None,
        timeseries: bool = True, progress: bool = True) -> Run:
    """Simulate the scenario once (`simcost run`); with `out`, also write its results folder.
    The bar (progress) shows only on a terminal or in a notebook."""
    from simcost.simulation.simulation import Simulation

    result = Simulation(load(scenario, seed=seed, overrides=overrides), timeseries=timeseries).run(progress=progress)
    outcome = Run(result)
    if out is not None:
        outcome.write(out)
    return outcome


class Run:
    """One simulated run. `.result` is the simulator's RunResult (request table, steps, bill)."""

    def __init__(self, result: Any):
        self.result = result
        self.paths: dict[str, Path] = {}

    @property
    def summary(self) -> dict:
        return self.result.summary

    @property
    def scenario(self) -> Scenario:
        return self.result.scenario

    def to_pandas(self, table: str = "requests"):
        """"requests" (requests.csv's rows), "steps" (one per engine step, with its cost),
        "timeseries" (the fleet sampled over time) or "costs" (the FOCUS bill; also "focus")."""
        from simcost.results.tables import run_table

        try:
            columns = run_table(self.result, table)
        except ValueError as exc:
            raise InputError("to_pandas", str(exc)) from None
        return pandas_module().DataFrame(columns)

    def write(self, out_dir: str | Path, records: str = "csv") -> dict[str, Path]:
        """The folder `simcost run --out out_dir` writes; {name: path} of its files."""
        from simcost.results.writer import write_run

        self.paths = write_run(self.result, Path(out_dir), records)
        return self.paths

    def headline(self) -> dict[str, str]:
        s = self.summary
        met = "met" if s["meets_slo"] else "NOT met"
        att = "" if s["slo_attainment"] is None else f" ({s['slo_attainment']:.1%})"
        return {"scenario": s["scenario"], "requests": f"{s['requests']['arrived']:,} requests ({s['requests']['completed']:,} completed)",
                "TTFT p50 / p99": f"{_ms(s['ttft_s']['p50'])} / {_ms(s['ttft_s']['p99'])}",
                "$/hour": f"${s['cost']['usd_per_hour']:,.2f}" if s["cost"]["usd_per_hour"] is not None else "-",
                "SLO": met + att}

    def __repr__(self) -> str:
        h = self.headline()
        return (f"<simcost.Run {h['scenario']}: {h['requests']}, TTFT p50/p99 {h['TTFT p50 / p99']}, "
                f"{h['$/hour']}/hour, SLO {h['SLO']}>")

    def _repr_html_(self) -> str:
        s = self.summary
        rows = list(self.headline().items())
        rows += [(f"{k.removesuffix('_s').upper()} p50 / p90 / p99", " / ".join(_ms(s[k][p]) for p in ("p50", "p90", "p99")))
                 for k in ("ttft_s", "tpot_s", "e2el_s")]
        rows += [("$ per 1M output tokens", _usd(s["cost"]["usd_per_1m_output_tokens"]))]
        return _html_table("simcost run", rows)


# --- sweep ----------------------------------------------------------------------------------

def sweep(scenario: ScenarioLike, grid: dict, *, jobs: int = 1, seeds: int = 1, seed: int | None = None,
          overrides: dict | None = None, out: str | Path | None = None, backend: str = "local",
          address: str | None = None, cache: str | Path | None = None, run_folders: bool | None = None,
          progress: bool = True) -> SweepRuns:
    """`simcost sweep`: `grid` is {key: [values]} (the grid over every key) or a space file's
    mapping ({"design": "lhs", "points": 20, "keys": {...}}). With `out`, the sweep's folder is
    written there (and a run folder per point unless run_folders=False); without, in a temporary
    folder that is removed (no run folders, no cache kept)."""
    from simcost.analysis.sweep import sweep as run_sweep
    from simcost.analysis.sweep_space import space_from_dict, space_from_flags

    if not isinstance(grid, dict) or not grid:
        raise InputError("grid", "expected {key: [values]}, e.g. {'fleet.replicas': [1, 2, 4]}, or a space mapping")
    if "keys" in grid:
        space = space_from_dict(grid, "grid")
    else:
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise InputError(f"grid: {key}", f"{values!r}; expected a non-empty list of values")
        space = space_from_flags(list(grid), [list(v) for v in grid.values()])
    base = load(scenario, overrides=overrides)  # a bad scenario fails here, before any folder is made
    with tempfile.TemporaryDirectory(prefix="simcost-sweep-") as tmp:
        given = isinstance(scenario, (str, os.PathLike))
        path = Path(scenario) if isinstance(scenario, (str, os.PathLike)) else _scenario_file(to_dict(base), Path(tmp))
        sets = _set_texts(overrides) if given else ()  # a written scenario has them applied already
        folder = Path(out) if out is not None else Path(tmp) / "sweep"
        folders = run_folders if run_folders is not None else out is not None
        result = run_sweep(path, space, folder, sets, seed, seeds, jobs, backend, address,
                           Path(cache) if cache is not None else None, folders, progress)
    return SweepRuns(result, out is not None)


class SweepRuns:
    """A sweep's table: one row per point (the key values, metrics, status)."""

    def __init__(self, result: Any, kept: bool):
        self.result = result
        self.rows: list[dict] = result.rows
        self.keys: tuple[str, ...] = result.keys
        self.paths: dict[str, Path] = result.paths if kept else {}

    @property
    def summary(self) -> dict:
        r = self.result
        return {"keys": list(self.keys), "points": len(self.rows), "executed": r.executed, "cached": r.cached,
                "failed": r.failed, "meeting_slo": sum(bool(row.get("meets_slo")) for row in self.rows)}

    def to_pandas(self, table: str = "points"):
        if table != "points":
            raise InputError("to_pandas", f"unknown table '{table}'; a sweep has one: points")
        return pandas_module().DataFrame(self.rows)

    def __repr__(self) -> str:
        s = self.summary
        return (f"<simcost.SweepRuns over {', '.join(self.keys)}: {s['points']} points, {s['meeting_slo']} meet the SLO, "
                f"{s['failed']} failed>")

    def _repr_html_(self) -> str:
        from simcost.analysis.sweep import format_table

        return f"<pre>{html.escape(format_table(self.rows, self.keys))}</pre>"


# --- size -----------------------------------------------------------------------------------

def size(scenario: ScenarioLike, *, devices: str | list[str], tensor_parallel: str | list[int] | None = None,
         policies: str | list[str] | None = None, pricing: list | None = None, max_replicas: int = 16,
         pool: str | None = None, seeds: int = 1, jobs: int = 1, seed: int | None = None, slo: dict | None = None,
         overrides: dict | None = None, out: str | Path | None = None, progress: bool = True) -> Sizing:
    """`simcost size`: the cheapest fleet meeting the SLO over devices x tensor-parallel degrees x
    engine policies x pricing options (lists, or the CLI's comma-separated text); `pricing` entries
    are fleet.pricing mappings or model names; `slo` sets keys of the scenario's slo section
    ({"ttft_s": 0.5, "attainment": 0.99}). With `out`, writes the sizing folder (result.json,
    options.csv, a figure, the chosen deployment's vLLM arguments and Kubernetes manifest)."""
    from simcost.analysis.sizing import size as run_size
    from simcost.analysis.sizing_outputs import parse_options

    if slo is not None and not isinstance(slo, dict):
        raise InputError("slo", f"a {type(slo).__name__}; expected a dict of slo keys, e.g. {{'ttft_s': 0.5}}")
    base = load(scenario, seed=seed, overrides={**(overrides or {}), **{f"slo.{k}": v for k, v in (slo or {}).items()}})
    options = parse_options(devices, tensor_parallel, policies, pricing)
    outcome = Sizing(run_size(base, options, max_replicas, seeds, jobs, pool=pool, progress=progress), base)
    if out is not None:
        outcome.write(out)
    return outcome


class Sizing:
    """A sizing's ranked options, the chosen fleet, its headroom and N+1/N+2 prices."""

    def __init__(self, result: Any, scenario: Scenario):
        self.result, self.scenario = result, scenario
        self.paths: dict[str, Path] = {}

    @property
    def summary(self) -> dict:
        from simcost.analysis.sizing_outputs import sizing_json

        return sizing_json(self.result)

    @property
    def chosen(self):
        return self.result.chosen

    def to_pandas(self, table: str = "options"):
        from simcost.analysis.sizing_outputs import option_rows

        if table != "options":
            raise InputError("to_pandas", f"unknown table '{table}'; a sizing has one: options")
        return pandas_module().DataFrame(option_rows(self.result))

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """The folder `simcost size --out out_dir` writes; {name: path} of its files."""
        from simcost.analysis.sizing_outputs import write_sizing

        self.paths = write_sizing(self.result, self.scenario, Path(out_dir))
        return self.paths

    def __repr__(self) -> str:
        c = self.chosen
        if c is None:
            return f"<simcost.Sizing {self.result.scenario}: no option meets the SLO within {self.result.max_replicas} replicas>"
        return (f"<simcost.Sizing {self.result.scenario}: {c.replicas} x {c.label}, ${c.usd_per_hour:,.2f}/hour "
                f"(${c.usd_per_month:,.0f}/month), {len(self.result.options)} options>")

    def _repr_html_(self) -> str:
        from simcost.analysis.sizing_outputs import format_sizing

        return f"<pre>{html.escape(format_sizing(self.result))}</pre>"


# --- shared ---------------------------------------------------------------------------------

def pandas_module() -> Any:
    from importlib import import_module

    try:
        return import_module("pandas")  # an optional extra: imported when a table is asked for
    except ImportError:
        raise ImportError("to_pandas needs pandas: pip install 'simcost[notebook]'") from None


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f} ms"


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4g}"


def _html_table(title: str, rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f"<table><caption>{html.escape(title)}</caption>{body}</table>"
