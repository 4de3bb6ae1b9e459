"""The report page of a sweep folder (sweep.json, from `simcost sweep`): the sweep table, the
latency-versus-spend frontier and each point's cost and latency (simcost.analysis.report)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from simcost.analysis.report_html import figure, fmt, key_values, page, png_of, section, table, usd
from simcost.analysis.report_read import read_json, read_measured_latencies, read_scenario, read_summary, requests_file
from simcost.analysis.report_run import CATEGORY_LABELS, scenario_rows
from simcost.errors import InputError
from simcost.units import HOURS_PER_MONTH

MAX_CDF_POINTS = 8  # a sweep's latency CDFs: beyond this many curves a panel no longer reads
SWEEP_LABELS = {  # sweep.json columns: header and how to show the value
    "p50_ttft_s": ("p50 TTFT (ms)", "ms"), "p99_ttft_s": ("p99 TTFT (ms)", "ms"), "p99_tpot_s": ("p99 TPOT (ms)", "ms"),
    "p99_e2el_s": ("p99 E2EL (ms)", "ms"), "requests_per_s": ("req/s", ".2f"),
    "output_tokens_per_s": ("output tok/s", ",.0f"), "goodput_requests_per_s": ("goodput req/s", ".2f"),
    "slo_attainment": ("SLO attainment", "pct"), "usd_per_hour": ("$/hour", ",.2f"),
    "usd_per_1m_output_tokens": ("$/1M output tokens", ",.3f"), "usd_per_request": ("$/request", ".6f"),
    "utilization": ("utilization", "pct"), "meets_slo": ("meets SLO", "bool"),
}


# --- a sweep folder -------------------------------------------------------------------------------

def sweep_page(folder: Path) -> str:
    rows = read_sweep_rows(folder / "sweep.json")
    keys = varied_keys(rows)
    runs = run_folders(folder, rows)  # {point: [(run label, folder)]}
    summaries = {label: read_summary(d / "summary.json") for point_runs in runs.values() for label, d in point_runs}
    first_run = next((point_runs[0] for point_runs in runs.values()), None)
    first = summaries[first_run[0]] if first_run else None
    scenario = read_scenario(first_run[1] / "scenario.yaml") if first_run else None
    sections = [
        section("sweep", "Sweep", key_values(sweep_rows(rows, keys, first, scenario))),
        section("sweep-table", "Sweep results", sweep_table(rows, keys)),
        frontier_section(rows, keys, first),
        sweep_latency_section(runs, summaries),
        points_cost_section(summaries),
    ]
    title = f"simcost sweep report: {first['scenario']}" if first else "simcost sweep report"
    return page(title, f"sweep folder {folder}", sections)


def read_sweep_rows(path: Path) -> list[dict]:
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(str(path), "expected a JSON list of rows (objects), as simcost sweep writes")
    if not rows:
        raise InputError(str(path), "holds no rows")
    return rows


def varied_keys(rows: list[dict]) -> list[str]:
    """The scenario keys a sweep varied: row keys that are key paths (a.b) or top-level scenario
    fields, as opposed to metric, CI, status and folder columns."""
    from simcost.analysis.sweep import COLUMNS
    from simcost.scenario.scenario import Scenario

    top = {f.name for f in dataclasses.fields(Scenario)}
    seen = dict.fromkeys(k for r in rows for k in r)
    return [k for k in seen if k not in COLUMNS and ("." in k or k in top)]


def ok(row: dict) -> bool:
    return row.get("status", "ok") == "ok"


def point_label(row: dict, keys: list[str]) -> str:
    if len(keys) == 1:
        return str(row.get(keys[0]))
    return ", ".join(f"{k}={row.get(k)}" for k in keys) or "-"


def run_folders(folder: Path, rows: list[dict]) -> dict[str, list[tuple[str, Path]]]:
    """Each point's run folders, [(label, folder)]: from the rows' run_dir (one folder, or one
    seed=S folder per seed), else (an older sweep) every subfolder holding a summary.json."""
    def has_summary(d: Path) -> bool:
        return (d / "summary.json").is_file()

    if not any("run_dir" in r for r in rows):
        return {d.name: [(d.name, d)] for d in sorted(folder.iterdir()) if d.is_dir() and has_summary(d)}
    out = {}
    for r in rows:
        d = folder / str(r.get("run_dir") or "")
        if not ok(r) or not r.get("run_dir") or not d.is_dir():
            continue
        seeds = sorted((s for s in d.glob("seed=*") if has_summary(s)), key=lambda s: _natural(s.name))
        runs = [(d.name, d)] if has_summary(d) else [(f"{d.name} {s.name}", s) for s in seeds]
        if runs:
            out[d.name] = runs
    return out


def _natural(name: str):
    head, _, tail = name.partition("=")
    return (head, int(tail)) if tail.lstrip("-").isdigit() else (head, tail)


def sweep_rows(rows: list[dict], keys: list[str], first: dict | None, scenario: dict | None) -> list[tuple[str, str]]:
    failed = sum(not ok(r) for r in rows)
    seeds = max((int(r["seeds"]) for r in rows if r.get("seeds")), default=1)
    out = [("varied", ", ".join(keys) or "-"),
           ("points", f"{len(rows)}" + (f", {failed} failed" if failed else "")),
           ("seeds per point", f"{seeds}: the table shows means with 95 % confidence intervals" if seeds > 1 else "")]
    if first:
        base = dict(scenario_rows(first, scenario))
        out += [(k, base[k]) for k in ("scenario", "seed", "model", "hardware", "workload", "SLO") if k in base]
        out.append(("note", "the model, hardware and seed shown are the first run's; the varied keys differ per point"))
    return out


def sweep_table(rows: list[dict], keys: list[str]) -> str:
    """One row per point; a metric with a 95 % CI (several seeds) shows as mean +-half-width;
    the CI columns themselves, and empty error columns, are folded away."""
    seen = dict.fromkeys(k for r in rows for k in r)
    hidden = {k for k in seen if k.endswith(("_ci95_low", "_ci95_high"))} | {"run_dir", "seeds"}  # shown elsewhere
    if not any(r.get("error") for r in rows):
        hidden |= {"error", "status"}
    columns = keys + [k for k in seen if k not in keys and k not in hidden]
    head = [SWEEP_LABELS.get(k, (k, ""))[0] for k in columns]
    body = [[sweep_cell(r, k) for k in columns] for r in rows]
    return table(head, body, numeric_from=len(keys))


def sweep_cell(row: dict, key: str) -> str:
    value = row.get(key)
    if key not in SWEEP_LABELS:
        return fmt(value, ".4g") if isinstance(value, float) else "-" if value is None else str(value)
    spec = SWEEP_LABELS[key][1]
    text = fmt(value, spec)
    low, high = row.get(f"{key}_ci95_low"), row.get(f"{key}_ci95_high")
    if low is None or high is None or text == "-":
        return text
    return f"{text} ±{fmt((float(high) - float(low)) / 2, spec)}"


def frontier_section(rows: list[dict], keys: list[str], first: dict | None) -> str:
    from simcost.analysis.frontier import frontier, plot_frontier

    latency_key, spend_key = "p99_ttft_s", "usd_per_hour"
    rows = [r for r in rows if ok(r) and r.get(latency_key) is not None and r.get(spend_key) is not None]
    if not rows:
        return ""
    labelled = [{**r, "_label": point_label(r, keys)} for r in rows]
    on = frontier(labelled, latency_key, spend_key)
    slo_s = (first or {}).get("slo", {}).get("ttft_s")
    png = png_of(lambda p: plot_frontier(labelled, latency_key, spend_key, slo_s, p, label_key="_label",
                                         title=f"p99 TTFT vs $/hour ({len(on)} of {len(rows)} points on the frontier)"))
    head = ["point", "p99 TTFT (ms)", "$/hour", "$/month (730 h)", "meets SLO"]
    body = [[r["_label"], fmt(r[latency_key], "ms"), fmt(r[spend_key], ",.2f"),
             fmt(float(r[spend_key]) * HOURS_PER_MONTH, ",.0f"), fmt(r.get("meets_slo"), "bool")] for r in on]
    slo_note = "; dashed: the TTFT SLO" if slo_s else ""
    return section("frontier", "Latency-versus-spend frontier",
                   figure(png, "p99 TTFT against fleet $/hour", "Frontier points (filled) are beaten by no other "
                          f"point on both p99 TTFT and $/hour; dominated points are hollow{slo_note}."),
                   "<h3>On the frontier, cheapest first</h3>", table(head, body))


def points_cost_section(summaries: dict[str, dict]) -> str:
    if not summaries:
        return ""
    cats = list(dict.fromkeys(k for s in summaries.values() for k in (s["cost"].get("by_category") or {})))
    cats = [k for k in CATEGORY_LABELS if k in cats] + [k for k in cats if k not in CATEGORY_LABELS]
    head = ["run folder", "$/hour", "bill", *(CATEGORY_LABELS.get(k, k).split(" (")[0] for k in cats),
            "$/request", "$/1M output tokens", "kWh per 1k requests"]
    body = [[name, fmt(s["cost"].get("usd_per_hour"), ",.2f"), usd(s["cost"].get("total_usd")),
             *(usd((s["cost"].get("by_category") or {}).get(k)) for k in cats),
             usd(s["cost"].get("usd_per_request"), 6), usd(s["cost"].get("usd_per_1m_output_tokens"), 3),
             fmt((s.get("energy") or {}).get("kwh_per_1k_requests"), ".4g")] for name, s in summaries.items()]
    return section("sweep-cost", "Cost by run", table(head, body),
                   '<p class="note">From each run folder\'s summary.json; bills cover each run\'s whole horizon.</p>')


def sweep_latency_section(runs: dict[str, list[tuple[str, Path]]], summaries: dict[str, dict]) -> str:
    """TTFT, TPOT and E2EL CDFs of the first run of the first MAX_CDF_POINTS points with request records."""
    curves: dict[str, Any] = {}
    for point, point_runs in runs.items():
        label, d = point_runs[0]
        path = requests_file(d)[0]
        if len(curves) == MAX_CDF_POINTS or path is None:
            continue
        warmup_s = (read_scenario(d / "scenario.yaml") or {}).get("warmup_s")
        lat = read_measured_latencies(path, warmup_s, summaries[label]["requests"]["measured"])
        if len(lat["ttft_s"]):
            curves[label] = lat
    if not curves:
        return ""
    slo = next(iter(summaries.values()))["slo"]
    png = png_of(lambda p: plot_cdf_overlay(curves, slo, p))
    shown = f"{len(curves)} of {len(runs)} points" if len(curves) < len(runs) else f"all {len(runs)} points"
    return section("sweep-latency", "Latency distributions by point",
                   figure(png, "CDFs of TTFT, TPOT and E2EL, one line per point",
                          f"From each point's request records (measured requests; the first seed's run), {shown}; "
                          "dashed: the SLO limits."))


def plot_cdf_overlay(curves: dict[str, dict[str, np.ndarray]], slo: dict, path: Path) -> Path:
    """One panel per latency, one CDF per point; a log time axis when the points differ over 10x."""
    from simcost.analysis.frontier import wide
    from simcost.results.plots import plt, readable_log_axis, time_unit

    names = ("ttft_s", "tpot_s", "e2el_s")
    fig, axes = plt.subplots(1, len(names), figsize=(12.6, 3.6))
    for ax, key in zip(axes, names):
        top = [float(np.nanmax(c[key])) for c in curves.values() if np.isfinite(c[key]).any()]
        unit, scale = time_unit(max(top, default=np.nan))
        for label, lat in curves.items():
            v = np.sort(lat[key][~np.isnan(lat[key])]) * scale
            if len(v):
                ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label)
        medians = np.array([np.nanmedian(c[key]) for c in curves.values() if np.isfinite(c[key]).any()])
        if slo.get(key):
            ax.axvline(slo[key] * scale, color="tab:red", linestyle="--")
        if wide(medians):
            readable_log_axis(ax, "x")  # plain numbers, not 2x10^0
        ax.set_xlabel(f"{key.removesuffix('_s').upper()} ({unit})")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("fraction of requests")
    axes[-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
