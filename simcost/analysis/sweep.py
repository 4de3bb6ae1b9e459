"""Sweeps: one scenario at many points of a space of scenario keys (simcost.analysis.sweep_space: a grid,
random or Latin-hypercube design), each point on K seeds, collected into a table with 95 %
confidence intervals and a latency-versus-spend figure.

- Runs execute on a backend (simcost.analysis.backends: local processes or Ray) and each finished run is
  stored at once in a result cache keyed by its content hash (simcost.analysis.sweep_cache), so a sweep
  that is interrupted, extended or repeated runs only what it has not seen.
- A run that fails (bad input found only at run time, or any exception) marks its point as failed,
  with the error in the table; the other points go on.
- Seeds are the scenario's seed + 0..K-1 (as `simcost size`), so point i at seed s is the same run
  in every sweep, on every backend.
- Each run's own results folder is written too (unless run_folders=False), so any point can be
  inspected later: <out>/<key=value,...>[/seed=S].
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

# sizing.py and forecast.py import these from here
from simcost.analysis.backends import execute, map_runs, progress_items, worker_pool  # noqa: F401
from simcost.analysis.frontier import plot_frontier
from simcost.analysis.sweep_cache import ResultCache, run_key
from simcost.analysis.sweep_space import Space, points
from simcost.errors import InputError
from simcost.results.folder import staged_folder
from simcost.results.plots import latency_vs_spend
from simcost.results.writer import write_run
from simcost.scenario.scenario import load_scenario, scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.simulation.simulation import run

COLUMNS = ("p50_ttft_s", "p99_ttft_s", "p99_tpot_s", "p99_e2el_s", "requests_per_s", "output_tokens_per_s",
           "goodput_requests_per_s", "slo_attainment", "usd_per_hour", "usd_per_1m_output_tokens",
           "usd_per_request", "utilization", "meets_slo")
NUMERIC = COLUMNS[:-1]  # meets_slo is a verdict: on K seeds, true when every seed meets the SLO
CI_LEVEL = 0.95
SWEEP_FILES = ("sweep.csv", "sweep.json", "sweep.png", "frontier.png")


def parse_values(text: str) -> list:
    """'1,2,4' -> [1, 2, 4]; each item parsed as YAML so numbers, words and null all work."""
    return [yaml.safe_load(item) for item in text.split(",") if item.strip()]


def metrics(summary: dict) -> dict:
    """The sweep table's metric columns from a run's summary.json."""
    s = summary
    return {
        "p50_ttft_s": s["ttft_s"]["p50"], "p99_ttft_s": s["ttft_s"]["p99"], "p99_tpot_s": s["tpot_s"]["p99"],
        "p99_e2el_s": s["e2el_s"]["p99"], "requests_per_s": s["throughput"]["requests_per_s"],
        "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
        "goodput_requests_per_s": s["goodput_requests_per_s"], "slo_attainment": s["slo_attainment"],
        "usd_per_hour": s["cost"]["usd_per_hour"], "usd_per_1m_output_tokens": s["cost"]["usd_per_1m_output_tokens"],
        "usd_per_request": s["cost"]["usd_per_request"], "utilization": s["utilization"],
        "meets_slo": s["meets_slo"],
    }


def row(summary: dict, param: str, value) -> dict:
    """One key's value and a run's metrics (experiments/batching_sweep.py builds its rows so)."""
    return {param: value, **metrics(summary)}


def mean_ci(values: list, level: float = CI_LEVEL) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the mean of the defined values and its two-sided t interval,
    mean -+ t_{(1+level)/2, n-1} s / sqrt(n) with s the sample standard deviation (ddof 1);
    low and high are None below two values."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return None, None, None
    mean = float(v.mean())
    if len(v) < 2:
        return mean, None, None
    from scipy.stats import t

    half = float(t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


# --- runs -----------------------------------------------------------------------------------

def run_one(raw: dict, run_dir: str | None, cache_dir: str | None = None, key: str | None = None) -> dict:
    """One run in a worker: {"summary": ...}, or {"error": "..."} for any exception, so one bad
    point never stops a sweep. Top-level, so process pools and Ray can ship it. The worker caches
    its own result the moment it has it: a run that finishes while an interrupted sweep shuts
    down is kept, though the main process no longer collects it."""
    try:
        result = run(scenario_from_dict(raw))
        if run_dir:
            write_run(result, Path(run_dir))
        if cache_dir and key:
            ResultCache(Path(cache_dir)).put(key, {"seed": raw["seed"], "summary": result.summary})
        return {"summary": result.summary}
    except Exception as exc:  # noqa: BLE001 - reported in the point's row
        return {"error": describe(exc)}


def describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"


@dataclass
class Point:
    """One point of the design: its key values, its runs' raw scenarios and keys (one per seed),
    or the error that kept it from resolving."""
    values: dict
    label: str
    raws: list[dict] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class SweepResult:
    keys: tuple[str, ...]
    rows: list[dict]
    executed: int  # runs simulated by this sweep
    cached: int  # runs read from the cache instead
    failed: int  # points with status error
    paths: dict[str, Path]


def sweep(scenario_path: str | Path, space: Space, out_dir: Path, overrides=(), seed: int | None = None,
          seeds: int = 1, jobs: int = 1, backend: str = "local", address: str | None = None,
          cache_dir: Path | None = None, run_folders: bool = True, progress: bool = False,
          catalog_files: tuple[str, ...] = ()) -> SweepResult:
    base = load_scenario(scenario_path, tuple(overrides), seed, catalog_files)  # a bad base scenario stops everything
    if not (isinstance(seeds, int) and seeds >= 1):
        raise InputError("--seeds", f"{seeds}; expected a whole number >= 1")
    if jobs < 1:
        raise InputError("--jobs", f"{jobs}; expected >= 1")
    seed_list = [base.seed + k for k in range(seeds)]
    pts = resolve(scenario_path, tuple(overrides), seed, space, seed_list, catalog_files)
    if all(p.error for p in pts):  # every point is bad input: say so once, as any other input error
        raise InputError("sweep", f"every point failed to resolve; the first: {pts[0].error}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = ResultCache(cache_dir or out_dir / "cache")
    # One local pool for the runs and then the sweep's figures: its workers have drawn the runs'
    # figures (matplotlib is loaded there, ~0.3 s the parent would spend alone after the last run)
    # and draw the two figures side by side.
    with worker_pool(jobs if backend == "local" else 1) as pool:
        outcomes, executed, cached = run_all(pts, seed_list, cache, out_dir if run_folders else None,
                                             backend, jobs, address, progress, pool)
        rows = [point_row(p, outcomes, seed_list, out_dir if run_folders else None) for p in pts]
        with staged_folder(out_dir, SWEEP_FILES) as tmp:  # the table and figures appear whole or not at all
            staged = write_outputs(rows, space.keys, tmp, base.slo.ttft_s, seeds, pool)
    paths = {name: out_dir / path.name for name, path in staged.items()}
    return SweepResult(space.keys, rows, executed, cached, sum(r["status"] != "ok" for r in rows), paths)


def resolve(scenario_path, overrides: tuple, seed: int | None, space: Space, seed_list: list[int],
            catalog_files: tuple[str, ...] = ()) -> list[Point]:
    """Each design point as resolved scenarios, one per seed; a point whose values are bad input
    keeps its error instead."""
    pts: list = []
    labels: dict[str, dict] = {}  # folder name -> the values it names
    for values in points(space):
        point = Point(values, unique_label(values, labels))
        try:
            raw = to_dict(load_scenario(scenario_path, overrides + point_overrides(values), seed, catalog_files))
        except InputError as exc:
            point.error = str(exc)
        else:
            point.raws = [{**raw, "seed": s} for s in seed_list]
            point.keys = [run_key(r) for r in point.raws]
        pts.append(point)
    return pts


def point_overrides(values: dict) -> tuple[str, ...]:
    """{key: value} as --set texts, written by the YAML library the overrides are read with (so
    1e-05 stays a float and '1' stays a string)."""
    def text(v):
        return yaml.safe_dump(v, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()

    return tuple(f"{k}={text(v)}" for k, v in values.items())


def unique_label(values: dict, used: dict) -> str:
    """A folder name for the point, key=value,...; an equal name for different values gets -2, -3."""
    def fmt(v):
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    label = re.sub(r"[^\w.=,+-]", "_", ",".join(f"{k}={fmt(v)}" for k, v in values.items()))[:150]
    name, n = label, 1
    while used.setdefault(name, values) != values:
        n += 1
        name = f"{label}-{n}"
    return name


def run_dir(out_dir: Path, point: Point, seed_index: int, seeds: int) -> Path:
    return out_dir / point.label / (f"seed={point.raws[seed_index]['seed']}" if seeds > 1 else "")


def run_all(pts: list[Point], seed_list: list[int], cache: ResultCache, out_dir: Path | None, backend: str,
            jobs: int, address: str | None, progress: bool, pool=None) -> tuple[dict, int, int]:
    """{run key: outcome} for every run of every resolved point: from the cache when there,
    else executed (each distinct run once) and stored as it finishes."""
    outcomes, todo = {}, {}
    for p in pts:
        for i, key in enumerate(p.keys):
            if key in outcomes or key in todo:
                continue
            hit = cache.get(key)
            if hit is not None:
                outcomes[key] = hit
            else:
                folder = run_dir(out_dir, p, i, len(seed_list)) if out_dir else None
                # local workers share this file system, so they cache their own results; Ray's
                # may not, so there the results are cached here as they arrive
                worker_cache = str(cache.folder) if backend == "local" else None
                todo[key] = (p.raws[i], str(folder) if folder else None, worker_cache, key)
    cached = len(outcomes)
    keys = list(todo)
    results = execute(run_one, list(todo.values()), backend, jobs, address, pool)
    for i, result, exc in progress_items(results, progress, "sweep", total=len(keys)):
        outcome = {"error": describe(exc)} if exc is not None else result
        outcomes[keys[i]] = outcome
        if "summary" in outcome and cache.get(keys[i]) is None:  # a local worker has cached it already
            cache.put(keys[i], {"seed": todo[keys[i]][0]["seed"], "summary": outcome["summary"]})
    return outcomes, len(keys), cached


def point_row(p: Point, outcomes: dict, seed_list: list[int], out_dir: Path | None) -> dict:
    """The point's values, its metrics (the mean over seeds, with CI columns on K > 1 seeds),
    status (ok or error) and error."""
    k = len(seed_list)
    runs = [outcomes[key] for key in p.keys]
    errors = [(s, o["error"]) for s, o in zip(seed_list, runs) if "error" in o]
    error = p.error or (errors and (f"seed {errors[0][0]}: {errors[0][1]}" if k > 1 else errors[0][1]))
    row = dict(p.values)
    if error:
        row.update(dict.fromkeys(COLUMNS))
        row.update({f"{m}_{side}": None for m in NUMERIC for side in ("ci95_low", "ci95_high")} if k > 1 else {})
    elif k == 1:
        row.update(metrics(runs[0]["summary"]))
    else:
        per_seed = [metrics(o["summary"]) for o in runs]
        cis = {m: mean_ci([r[m] for r in per_seed]) for m in NUMERIC}
        row.update({m: cis[m][0] for m in NUMERIC})
        row["meets_slo"] = all(r["meets_slo"] for r in per_seed)
        row.update({f"{m}_ci95_{side}": cis[m][j] for m in NUMERIC for j, side in ((1, "low"), (2, "high"))})
    if k > 1:
        row["seeds"] = k
    row["status"] = "error" if error else "ok"
    row["error"] = error or ""
    if out_dir is not None:
        row["run_dir"] = "" if error else p.label
    return row


# --- outputs --------------------------------------------------------------------------------

def write_outputs(rows: list[dict], keys: tuple[str, ...], out_dir: Path, slo_ttft_s: float | None,
                  seeds: int, pool=None) -> dict[str, Path]:
    """sweep.csv, sweep.json and the figures; with a process pool, the figures draw in its workers
    while this process writes the table."""
    ok = [r for r in rows if r["status"] == "ok"]
    figures: dict = {}  # name -> (function, args)
    if ok and len(keys) == 1:
        figures["plot"] = (latency_vs_spend, (ok, keys[0], out_dir / "sweep.png"))
    if ok:
        what = keys[0] if len(keys) == 1 else f"{len(keys)} keys"
        mean = f" (mean of {seeds} seeds)" if seeds > 1 else ""
        figures["frontier"] = (plot_frontier, (ok, "p99_ttft_s", "usd_per_hour", slo_ttft_s, out_dir / "frontier.png",
                                               keys[0] if len(keys) == 1 else None,
                                               f"p99 TTFT vs $/hour over {what}{mean}"))
    drawing = {name: pool.submit(fn, *args) for name, (fn, args) in figures.items()} if pool else {}
    paths = {"csv": out_dir / "sweep.csv", "json": out_dir / "sweep.json"}
    write_table(rows, paths["csv"])
    paths["json"].write_text(json.dumps(rows, indent=2, default=str) + "\n")
    for name, (fn, args) in figures.items():
        paths[name] = drawing[name].result() if name in drawing else fn(*args)
    return paths


def write_table(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict], keys: tuple[str, ...]) -> str:
    """The terminal table: varied keys, p99 latencies (mean +- CI half-width on K seeds), spend."""
    def f(v, scale=1.0, fmt=".1f"):
        return "-" if v is None else format(v * scale, fmt)

    def ttft(r):
        low, high = r.get("p99_ttft_s_ci95_low"), r.get("p99_ttft_s_ci95_high")
        pm = "" if low is None else f" ±{(high - low) / 2 * 1e3:.1f}"
        return f(r["p99_ttft_s"], 1e3) + pm

    def fmt_key(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    widths = [max(len(k), *(len(fmt_key(r[k])) for r in rows)) + 2 for k in keys]
    tw = max(13, *(len(ttft(r)) + 2 for r in rows))
    head = "".join(f"{k:>{w}}" for k, w in zip(keys, widths))
    lines = [head + f"{'p99 TTFT ms':>{tw}}{'p99 TPOT ms':>13}{'req/s':>9}{'$/hour':>10}{'$/1M out':>10}{'SLO':>6}"]
    for r in rows:
        line = "".join(f"{fmt_key(r[k]):>{w}}" for k, w in zip(keys, widths))
        if r["status"] != "ok":
            lines.append(f"{line}  failed: {r['error']}")
            continue
        lines.append(f"{line}{ttft(r):>{tw}}{f(r['p99_tpot_s'], 1e3):>13}{f(r['requests_per_s'], 1, '.2f'):>9}"
                     f"{f(r['usd_per_hour'], 1, '.2f'):>10}{f(r['usd_per_1m_output_tokens'], 1, '.3f'):>10}"
                     f"{'yes' if r['meets_slo'] else 'no':>6}")
    return "\n".join(lines)
