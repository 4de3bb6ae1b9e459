"""`simcost report RESULTS_DIR`: one self-contained HTML page from a results folder.

A run folder (summary.json, from `simcost run`) gives: the scenario, the headline latency and
throughput table, latency CDFs (requests.csv), the fleet over time (timeseries.csv), the cost by
category, pool, workload and tenant, and the unit economics. A sweep folder (sweep.json, from
`simcost sweep`) gives: the sweep table, the latency-versus-spend frontier (`simcost.analysis.frontier`)
and each point's cost. When a folder holds both files it is read as a sweep.

The page has no external references at all: figures are base64 PNGs drawn here with matplotlib,
the style is inline, there is no script, and a Content-Security-Policy forbids the browser any
load but data: images, so it opens from a file, attached to a planning document, with no server
or network. A section whose data the folder lacks is left out; a file that is there but
unreadable is an InputError naming it. Every string from a file is HTML-escaped.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simcost.errors import InputError
from simcost.files import staged_file
from simcost.units import HOURS_PER_MONTH

MAX_CDF_POINTS = 8  # a sweep's latency CDFs: beyond this many curves a panel no longer reads
LATENCY_KEYS = ("ttft_s", "tpot_s", "itl_s", "e2el_s")
STAT_KEYS = ("mean", "p50", "p90", "p95", "p99")
CATEGORY_LABELS = {  # summary cost.by_category keys, in the order shown; unknown keys follow
    "busy": "busy (steps serving requests)", "idle": "idle", "provisioning": "provisioning (cold start)",
    "loading": "loading (image and weights)", "draining": "draining", "minimum_charge": "minimum charge",
    "unused_commitment": "unused commitment",
}
SWEEP_LABELS = {  # sweep.json columns: header and how to show the value
    "p50_ttft_s": ("p50 TTFT (ms)", "ms"), "p99_ttft_s": ("p99 TTFT (ms)", "ms"), "p99_tpot_s": ("p99 TPOT (ms)", "ms"),
    "p99_e2el_s": ("p99 E2EL (ms)", "ms"), "requests_per_s": ("req/s", ".2f"),
    "output_tokens_per_s": ("output tok/s", ",.0f"), "goodput_requests_per_s": ("goodput req/s", ".2f"),
    "slo_attainment": ("SLO attainment", "pct"), "usd_per_hour": ("$/hour", ",.2f"),
    "usd_per_1m_output_tokens": ("$/1M output tokens", ",.3f"), "usd_per_request": ("$/request", ".6f"),
    "utilization": ("utilization", "pct"), "meets_slo": ("meets SLO", "bool"),
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d2330;
       max-width: 1240px; margin: 24px auto; padding: 0 20px; }
h1 { font-size: 24px; margin-bottom: 2px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 2px solid #d8dde6;
     padding-bottom: 4px; } h3 { font-size: 15px; margin-top: 20px; }
.meta, .note, figcaption { color: #5a6478; font-size: 13px; }
.scroll { overflow-x: auto; } .side { display: flex; flex-wrap: wrap; gap: 0 40px; align-items: flex-start; }
table { border-collapse: collapse; margin: 8px 0 12px; font-variant-numeric: tabular-nums; font-size: 13px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e4e8ee; text-align: left; vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; } td.num, th.num { text-align: right; }
tr.total td { font-weight: 600; border-top: 2px solid #c9d0db; }
.ok { color: #17803d; font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e4e8ee; }
"""
# the browser may load nothing but the page itself and its data: images
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --- entry points ------------------------------------------------------------------------------

def write_report(results_dir: Path, out: Path | None = None) -> Path:
    """Render RESULTS_DIR (a run or a sweep folder) to one HTML file; default RESULTS_DIR/report.html."""
    results_dir = Path(results_dir)
    return write_page(render(results_dir), results_dir, out)


def write_page(html: str, results_dir: Path, out: Path | None = None) -> Path:
    """The page to `out`, default RESULTS_DIR/report.html."""
    out = Path(out) if out is not None else results_dir / "report.html"
    with staged_file(out, "--out") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return out


def render(results_dir: Path) -> str:
    if not results_dir.is_dir():
        raise InputError(str(results_dir), "no such folder; expected a results folder from simcost run or simcost sweep")
    kind = "sweep.json" if (results_dir / "sweep.json").is_file() else "summary.json"
    if (results_dir / kind).is_file():
        try:
            return _sweep_page(results_dir) if kind == "sweep.json" else _run_page(results_dir)
        except (KeyError, TypeError, ValueError) as exc:  # InputError is a ValueError: pass it on as it is
            if isinstance(exc, InputError):
                raise
            raise InputError(str(results_dir / kind), f"unexpected content ({type(exc).__name__}: {exc}); "
                                                      "was the folder written by this version of simcost?") from None
    raise InputError(str(results_dir), "holds neither summary.json (a run folder, from simcost run) nor sweep.json "
                                       "(a sweep folder, from simcost sweep) nor result.json (from simcost size, "
                                       "commitments, levers or forecast)")


# --- reading a folder --------------------------------------------------------------------------

def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}", f"malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "not a UTF-8 text file") from None


def read_summary(path: Path) -> dict:
    """summary.json, checked for the keys every section needs."""
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise InputError(str(path), f"expected a JSON object (a run summary), got {type(summary).__name__}")
    for key in ("scenario", "seed", "model", "device", "replicas", "ttft_s", "tpot_s", "e2el_s", "throughput",
                "slo", "requests", "cost"):
        if key not in summary:
            raise InputError(str(path), f"missing key '{key}'; is this a summary.json written by simcost run?")
    return summary


def read_scenario(path: Path) -> dict | None:
    """scenario.yaml as a plain dict, or None when the folder has none (it is optional here)."""
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(where, f"malformed YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InputError(str(path), "expected a mapping (a scenario as run)")
    return data


REQUEST_COLUMNS = ("arrival_s", "status", "ttft_s", "tpot_s", "e2el_s")


def read_request_columns(path: Path) -> dict[str, np.ndarray]:
    """The columns of requests.csv (or requests.parquet) the latency CDFs need, as arrays."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # the caller checks it is installed

        names = pq.read_schema(path).names
        _check_columns(path, names)
        table = pq.read_table(path, columns=list(REQUEST_COLUMNS))
        return {c: table.column(c).to_numpy(zero_copy_only=False) for c in REQUEST_COLUMNS}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        _check_columns(path, header)
        index = [header.index(c) for c in REQUEST_COLUMNS]
        cols: list[list] = [[] for _ in REQUEST_COLUMNS]
        for line, row in enumerate(reader, start=2):
            try:
                for values, i in zip(cols, index):
                    values.append(row[i])
            except IndexError:
                raise InputError(f"{path}:{line}", f"{len(row)} fields, the header has {len(header)}") from None
    try:
        return {c: (np.array(v) if c == "status" else np.array([x or "nan" for x in v], dtype=float))
                for c, v in zip(REQUEST_COLUMNS, cols)}
    except ValueError as exc:
        raise InputError(str(path), f"a latency or arrival_s value is not a number ({exc})") from None


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in REQUEST_COLUMNS if c not in names]
    if missing:
        raise InputError(str(path), f"missing column(s) {', '.join(missing)}; is this a requests file from simcost run?")


def read_measured_latencies(path: Path, warmup_s: float | None, num_measured: int) -> dict[str, np.ndarray]:
    """TTFT, TPOT and E2EL of the measured requests: completed, arrived at or after warmup_s.
    Without the warm-up (no scenario.yaml), the last num_measured completed by arrival."""
    cols = read_request_columns(path)
    arrival_s = cols["arrival_s"].astype(float)
    completed = cols["status"] == "completed"
    if warmup_s is not None:
        measured = completed & (arrival_s >= warmup_s)
    else:
        order = np.flatnonzero(completed)[np.argsort(arrival_s[completed], kind="stable")]
        measured = np.zeros(len(arrival_s), dtype=bool)
        measured[order[len(order) - num_measured:] if num_measured else []] = True
    return {k: cols[k].astype(float)[measured] for k in ("ttft_s", "tpot_s", "e2el_s")}


def requests_file(folder: Path) -> tuple[Path | None, str]:
    """The folder's per-request records, and a note when they are there but cannot be read here."""
    if (folder / "requests.csv").is_file():
        return folder / "requests.csv", ""
    if (folder / "requests.parquet").is_file():
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return None, "requests.parquet needs pyarrow for the latency CDFs: pip install 'simcost[parquet]'"
        return folder / "requests.parquet", ""
    return None, ""


def read_timeseries(path: Path) -> dict:
    """timeseries.csv as {pool: {column: array}}, pools in file order (see simcost.metrics.timeseries)."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, dict[str, list]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            values = {k: float(row[k]) for k in ("t_s", "replicas", "usd_per_hour")}
        except (KeyError, TypeError):
            raise InputError(str(path), "missing column t_s, replicas or usd_per_hour") from None
        except ValueError as exc:
            raise InputError(f"{path}:{line}", f"not a number ({exc})") from None
        pool = out.setdefault(row.get("pool") or "serve", {"t_s": [], "replicas": [], "usd_per_hour": []})
        for k, v in values.items():
            pool[k].append(v)
    return {pool: {k: np.array(v) for k, v in cols.items()} for pool, cols in out.items()}


# --- HTML pieces ----------------------------------------------------------------------------------

def page(title: str, subtitle: str, sections: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        made_by = f"simcost {version('simcost')}"
    except PackageNotFoundError:
        made_by = "simcost"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>", f'<p class="meta">{escape(subtitle)}</p>',
        *[s for s in sections if s],
        f'<p class="note">Made by {escape(made_by)} (simcost report); self-contained: no server or network needed.</p>',
        "</body>", "</html>", ""])


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"


def table(head: list[str], rows: list[list], numeric_from: int = 1, total_rows: int = 0, caption: str = "") -> str:
    """Cells are escaped here; columns from numeric_from on are right-aligned; the last total_rows
    rows are set off as totals."""
    num, total = ' class="num"', ' class="total"'

    def cells(row, tag):
        return "".join(f"<{tag}{num if i >= numeric_from else ''}>{escape(str(v))}</{tag}>" for i, v in enumerate(row))
    body = [f"<tr{total if i >= len(rows) - total_rows else ''}>{cells(r, 'td')}</tr>" for i, r in enumerate(rows)]
    cap = f'<p class="note">{escape(caption)}</p>' if caption else ""
    return (f'<div class="scroll"><table>\n<thead><tr>{cells(head, "th")}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table></div>" + cap)


def side(*parts: str) -> str:
    """Small tables next to each other (wrapping on a narrow window)."""
    return '<div class="side">' + "".join(f"<div>{p}</div>" for p in parts if p) + "</div>"


def key_values(rows: list[tuple[str, str]]) -> str:
    body = "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows if v)
    return f"<table>\n<tbody>\n{body}\n</tbody>\n</table>"


def figure(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def png_of(draw: Callable[[Path], object]) -> bytes:
    """The bytes of the PNG that draw(path) writes (simcost's plot functions write to a path)."""
    with tempfile.TemporaryDirectory(prefix="simcost-report-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def fmt(value, spec: str) -> str:
    """A number as the report shows it: spec is a format spec, or ms / pct / bool; None and NaN as '-'."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if spec == "bool":
        return "yes" if value in (True, "True", "true") else "no"
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if spec == "ms":
        return f"{value * 1e3:,.1f}"
    if spec == "pct":
        return f"{value:.1%}"
    return format(value, spec)


def usd(value, digits: int = 4) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


# --- a run folder ---------------------------------------------------------------------------------

def _run_page(folder: Path) -> str:
    s = read_summary(folder / "summary.json")
    scenario = read_scenario(folder / "scenario.yaml")
    sections = [
        section("scenario", "Scenario", key_values(scenario_rows(s, scenario))),
        headline_section(s),
        latency_section(folder, s, scenario),
        timeseries_section(folder, s),
        cost_section(s),
        *[group_section(s, key) for key in ("by_tenant", "by_workload", "by_tag")],
        unit_economics_section(s),
    ]
    return page(f"simcost report: {s['scenario']}", f"results folder {folder}", sections)


def scenario_rows(s: dict, scenario: dict | None) -> list[tuple[str, str]]:
    sc = scenario or {}
    model = sc.get("model") or {}
    rows = [("scenario", str(s["scenario"])), ("seed", str(s["seed"])),
            ("model", str(s["model"]) + (f" ({model['weight_format']} weights)" if model.get("weight_format") else "")),
            ("hardware", f"{s['replicas']} replica(s) of {s.get('tensor_parallel', 1)} x {s['device']} "
                         f"(tensor parallel), router {s.get('router', '-')}")]
    pools = s.get("pools") or []
    if len(pools) > 1:
        rows.append(("pools", "; ".join(f"{p['role']}: {p['replicas']} x {p['tensor_parallel']} x {p['device']}"
                                         for p in pools)))
    if sc:
        rows += [("workload", describe_workload(sc.get("workload") or {})),
                 ("run", (f"duration {fmt(sc['duration_s'], 'g')} s" if sc.get("duration_s") else "the whole trace")
                         + f", warm-up {fmt(sc.get('warmup_s'), 'g')} s, ended at {fmt(s.get('horizon_s'), ',.1f')} s"),
                 ("engine", describe_engine(sc.get("engine") or {}))]
    elif s.get("horizon_s") is not None:
        rows.append(("run", f"ended at {s['horizon_s']:,.1f} s"))
    pricing = (s["cost"].get("pricing_model") or "") + (f", {sc['fleet']['site']['region']}"
                                                         if (sc.get("fleet") or {}).get("site") else "")
    rows += [("pricing", pricing), ("SLO", describe_slo(s["slo"]))]
    return rows


def describe_workload(w: dict) -> str:
    if w.get("mix"):
        return "mix: " + ", ".join(f"{e.get('name') or i}" + (f" (tenant {e['tenant']})" if e.get("tenant") else "")
                                   for i, e in enumerate(w["mix"]))
    if w.get("trace"):
        t = w["trace"]
        return f"trace {t.get('name')}" + (f" at {fmt(t['rate_multiplier'], 'g')}x its rate"
                                            if t.get("rate_multiplier") not in (None, 1) else "")
    if w.get("clients"):
        return f"closed loop, {w['clients'].get('users')} users"
    arrivals = dict(w.get("arrivals") or {})
    process = arrivals.pop("process", None)
    return ", ".join([f"{process} arrivals"] * bool(process) + [f"{k} {v}" for k, v in arrivals.items() if v is not None]) or "-"


def describe_engine(e: dict) -> str:
    parts = [f"{e.get('policy', '-')} batching", f"{e.get('queue', 'fcfs')} queue", f"max_num_seqs {e.get('max_num_seqs', '-')}"]
    if e.get("prefix_caching"):
        parts.append("prefix caching")
    return ", ".join(parts)


def describe_slo(slo: dict) -> str:
    limits = [f"{k.removesuffix('_s').upper()} <= {slo[k]:g} s" for k in ("ttft_s", "tpot_s", "e2el_s") if slo.get(k)]
    target = f"for {slo['attainment']:.0%} of requests" if slo.get("attainment") is not None else ""
    return ", ".join(limits) + (f" {target}" if limits and target else "")


def headline_section(s: dict) -> str:
    r = s["requests"]
    counts = (f"{r['arrived']:,} arrived, {r['completed']:,} completed, {r['rejected']:,} rejected, "
              f"{r.get('in_flight', 0):,} in flight; latency over the {r['measured']:,} measured (completed after the warm-up)")
    latency = table(["latency (ms)", *STAT_KEYS],
                    [[k.removesuffix("_s").upper(), *(fmt(s[k][p], "ms") for p in STAT_KEYS)] for k in LATENCY_KEYS if k in s])
    tp, attained = s["throughput"], s.get("slo_attainment")
    met = s.get("meets_slo")
    verdict = f'<span class="{"ok" if met else "bad"}">{"met" if met else "NOT met"}</span>'
    rates = table(["throughput", "value"], [
        ["requests/s", fmt(tp.get("requests_per_s"), ".2f")],
        ["output tokens/s", fmt(tp.get("output_tokens_per_s"), ",.0f")],
        ["total tokens/s", fmt(tp.get("total_tokens_per_s"), ",.0f")],
        ["goodput (requests/s within SLO)", fmt(s.get("goodput_requests_per_s"), ".2f")],
        ["SLO attainment", fmt(attained, "pct")],
        ["utilization", fmt(s.get("utilization"), "pct")],
        ["preemptions", fmt(s.get("preemptions"), ",d")],
    ])
    target = s["slo"].get("attainment")
    outcomes = s.get("slo_outcomes")
    over = ("" if not outcomes else f' over all {outcomes["of"]:,} requests arriving after the warm-up '
            f'(rejected and in flight count as not met; {outcomes["open"]:,} in flight might still have met it)')
    slo_line = (f'<p>SLO ({escape(describe_slo(s["slo"]))}): {verdict}, attainment {escape(fmt(attained, "pct"))}'
                f'{escape(over)} against a target of {escape(fmt(target, "pct"))}.</p>')
    return section("headline", "Headline", f"<p>{escape(counts)}</p>", slo_line, side(latency, rates))


def latency_section(folder: Path, s: dict, scenario: dict | None) -> str:
    path, why_not = requests_file(folder)
    if path is None:
        return section("latency-cdfs", "Latency distributions", f'<p class="note">{escape(why_not)}</p>') if why_not else ""
    lat = read_measured_latencies(path, (scenario or {}).get("warmup_s"), s["requests"]["measured"])
    n = len(lat["ttft_s"])
    if not n:
        return ""
    from simcost.results.plots import workload_latency_cdfs

    by_workload, slos = _by_workload(path, lat, s, scenario)
    png = png_of(lambda p: workload_latency_cdfs(by_workload, slos, f"{s['scenario']}: {n} measured requests", p))
    return section("latency-cdfs", "Latency distributions",
                   figure(png, "empirical CDFs of TTFT, TPOT and E2EL",
                          f"From {path.name}: {n:,} measured requests (completed, arrived after the warm-up); "
                          "dashed lines are the SLO limits (each workload's own, in its colour)."))


def _by_workload(path: Path, lat: dict[str, np.ndarray], s: dict, scenario: dict | None) -> tuple[dict, dict]:
    """The measured latencies per workload of a mix, each with its own SLO (its entry's limits over
    the scenario's); one group against the scenario's SLO otherwise, or without the scenario."""
    pooled = ({"": lat}, {"": {k: s["slo"].get(k) for k in lat}})
    mix = ((scenario or {}).get("workload") or {}).get("mix")
    if not mix or "by_workload" not in s:
        return pooled
    names = _measured_workloads(path, scenario.get("warmup_s") if scenario else None)
    if names is None or len(names) != len(lat["ttft_s"]):
        return pooled
    by_workload, slos = {}, {}
    for entry, name in zip(mix, s["by_workload"]):  # by_workload lists the mix's entries in order
        by_workload[name] = {k: v[names == name] for k, v in lat.items()}
        slos[name] = {k: ((entry.get("slo") or {}).get(k) or s["slo"].get(k)) for k in lat}
    return by_workload, slos


def _measured_workloads(path: Path, warmup_s: float | None) -> np.ndarray | None:
    """The workload column of the measured requests (None: the file has none, or no warm-up to
    pick the measured ones by)."""
    if warmup_s is None:
        return None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if "workload" not in pq.read_schema(path).names:
            return None
        table = pq.read_table(path, columns=["workload", "arrival_s", "status"])
        cols = {c: np.asarray(table.column(c).to_pylist()) for c in ("workload", "arrival_s", "status")}
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "workload" not in rows[0]:
            return None
        cols = {c: np.array([r[c] for r in rows]) for c in ("workload", "arrival_s", "status")}
    measured = (cols["status"] == "completed") & (cols["arrival_s"].astype(float) >= warmup_s)
    return cols["workload"][measured].astype(str)


def timeseries_section(folder: Path, s: dict) -> str:
    path = folder / "timeseries.csv"
    if not path.is_file():
        return ""
    series = read_timeseries(path)
    if not series:
        return ""
    horizon_s = s.get("horizon_s") or max(float(c["t_s"][-1]) for c in series.values())
    png = png_of(lambda p: plot_fleet(series, horizon_s, p, f"{s['scenario']}: fleet over time"))
    fleet_usd = np.sum([c["usd_per_hour"] for c in series.values()], axis=0)
    fleet_replicas = np.sum([c["replicas"] for c in series.values()], axis=0)
    rows = [["replicas", fmt(fleet_replicas.min(), "g"), fmt(fleet_replicas.mean(), ".2f"), fmt(fleet_replicas.max(), "g")],
            ["$/hour", fmt(fleet_usd.min(), ",.2f"), fmt(fleet_usd.mean(), ",.2f"), fmt(fleet_usd.max(), ",.2f")]]
    return section("timeseries", "Fleet over time",
                   figure(png, "replicas and $/hour over time", "From timeseries.csv: replicas in service and the "
                                                                "fleet's $/hour, per pool."),
                   table(["fleet", "min", "mean of samples", "max"], rows))


def plot_fleet(series: dict, horizon_s: float, path: Path, title: str) -> Path:
    """Replicas in service and $/hour against time, one line per pool (plus the fleet's $/hour
    when there are several pools)."""
    from simcost.results.plots import clock_unit, plt

    unit, per = clock_unit(horizon_s)  # s, min or h by the run's length
    fig, (ax_rep, ax_usd) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True)
    for pool, c in series.items():
        ax_rep.step(c["t_s"] / per, c["replicas"], where="post", label=pool)
        ax_usd.step(c["t_s"] / per, c["usd_per_hour"], where="post", label=pool)
    if len(series) > 1:
        first = next(iter(series.values()))
        ax_usd.step(first["t_s"] / per, np.sum([c["usd_per_hour"] for c in series.values()], axis=0), where="post",
                    color="black", label="fleet")
    top_rep = max(float(c["replicas"].max()) for c in series.values())
    top_usd = float(np.sum([c["usd_per_hour"] for c in series.values()], axis=0).max())
    ax_rep.set_ylim(0, 1.15 * max(1.0, top_rep))
    ax_rep.yaxis.get_major_locator().set_params(integer=True)
    ax_usd.set_ylim(0, 1.15 * max(1e-9, top_usd))
    for ax, label in ((ax_rep, "replicas"), (ax_usd, "$/hour")):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    ax_usd.set_xlabel(f"time ({unit})")
    ax_usd.set_xlim(0, horizon_s / per)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def category_rows(by_category: dict, total_usd: float) -> list[list[str]]:
    keys = [k for k in CATEGORY_LABELS if k in by_category] + [k for k in by_category if k not in CATEGORY_LABELS]
    def share(v: float) -> str:
        return fmt(v / total_usd, "pct") if total_usd else "-"

    return [[CATEGORY_LABELS.get(k, k.replace("_", " ")), usd(by_category[k]), share(by_category[k])] for k in keys]


def cost_section(s: dict) -> str:
    c = s["cost"]
    parts = []
    if c.get("by_category"):
        rows = category_rows(c["by_category"], c["total_usd"]) + [["bill", usd(c["total_usd"]), fmt(1.0, "pct")]]
        parts.append(table(["category", "$", "share"], rows, total_rows=1,
                           caption=f"Over the whole run, {fmt(s.get('horizon_s'), ',.1f')} s; the categories add up to the bill."))
    pools = s.get("pools") or []
    if len(pools) > 1:
        parts.append("<h3>By pool</h3>")
        parts.append(table(["pool", "replicas", "device", "$/hour", "$", "allocated $", "utilization"],
                           [[p["role"], p["replicas"], f"{p['tensor_parallel']} x {p['device']}", fmt(p["usd_per_hour"], ",.2f"),
                             usd(p["usd"]), usd(p["allocated_usd"]), fmt(p["utilization"], "pct")] for p in pools]))
    a = c.get("allocation")
    if a:
        how = ("showback: unallocated dollars are a line of their own" if a["unallocated"] == "showback"
               else "chargeback: unallocated dollars are spread over requests")
        parts.append(f'<p class="note">Allocation: busy steps split by {escape(str(a["policy"]))}; {escape(how)}.</p>')
    return section("cost", "Cost", *parts) if parts else ""


def group_section(s: dict, key: str) -> str:
    groups = s.get(key)
    if not groups:
        return ""
    name = key.removeprefix("by_")
    sessions = any(g.get("usd_per_session") is not None for g in groups.values())
    head = [name, "arrived", "completed", "rejected", "p99 TTFT (ms)", "p99 TPOT (ms)", "SLO attainment",
            "allocated $", "unallocated share $", "total $", "$/request", "$/1M output tokens"] + (["$/session"] if sessions else [])
    rows = [[n, f"{g['arrived']:,}", f"{g['completed']:,}", f"{g['rejected']:,}", fmt(g["ttft_s"]["p99"], "ms"),
             fmt(g["tpot_s"]["p99"], "ms"), fmt(g.get("slo_attainment"), "pct"), usd(g.get("allocated_usd")),
             usd(g.get("unallocated_share_usd")), usd(g.get("total_usd")), usd(g.get("usd_per_request"), 6),
             usd(g.get("usd_per_1m_output_tokens"), 3)] + ([usd(g.get("usd_per_session"))] if sessions else [])
            for n, g in groups.items()]
    c, totals = s["cost"], 0
    if key == "by_tenant" and "allocated_usd" in c:  # tenants partition the requests: add up to the bill
        left = (c.get("allocation") or {}).get("unallocated_left_usd") or 0.0
        blank = [""] * 6
        if left:
            rows.append(["(unallocated)", *blank, "", usd(left), usd(left), "", ""] + ([""] if sessions else []))
        rows.append(["bill", *blank, usd(c["allocated_usd"]), usd(c["unallocated_usd"]), usd(c["total_usd"]), "", ""]
                    + ([""] if sessions else []))
        totals = 1 + bool(left)
    return section(f"by-{name}", f"By {name}", table(head, rows, total_rows=totals))


def unit_economics_section(s: dict) -> str:
    c, e = s["cost"], s.get("energy") or {}
    rows = [["fleet $/hour", usd(c.get("usd_per_hour"), 2)],
            ["fleet $/month (730 h)", usd(c["usd_per_hour"] * HOURS_PER_MONTH, 0) if c.get("usd_per_hour") is not None else "-"],
            ["bill for the run", usd(c.get("total_usd"))],
            ["$ per request", usd(c.get("usd_per_request"), 6)],
            ["$ per 1M input tokens", usd(c.get("usd_per_1m_input_tokens"), 3)],
            ["$ per 1M output tokens", usd(c.get("usd_per_1m_output_tokens"), 3)]]
    if c.get("usd_per_session") is not None:
        rows.append(["$ per session", usd(c["usd_per_session"])])
    if e.get("kwh_per_1k_requests") is not None:
        rows.append(["kWh per 1k requests", fmt(e["kwh_per_1k_requests"], ".4g")])
    if e.get("gco2_per_1k_requests") is not None:
        rows.append(["gCO2 per 1k requests", fmt(e["gco2_per_1k_requests"], ".4g")])
    note = f'<p class="note">Energy: {escape(str(e["basis"]))}.</p>' if e.get("basis") else ""
    return section("unit-economics", "Unit economics", table(["unit", "value"], rows), note)


# --- a sweep folder -------------------------------------------------------------------------------

def _sweep_page(folder: Path) -> str:
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
