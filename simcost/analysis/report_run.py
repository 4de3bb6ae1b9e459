"""The report page of a run folder (summary.json, from `simcost run`): the scenario, the
headline, latency CDFs, the fleet over time, the cost by category, pool, workload and tenant, and
the unit economics (simcost.analysis.report)."""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path

import numpy as np

from simcost.analysis.report_html import figure, fmt, key_values, page, png_of, section, side, table, usd
from simcost.analysis.report_read import (
    read_measured_latencies,
    read_scenario,
    read_summary,
    read_timeseries,
    requests_file,
)
from simcost.units import HOURS_PER_MONTH

LATENCY_KEYS = ("ttft_s", "tpot_s", "itl_s", "e2el_s")
STAT_KEYS = ("mean", "p50", "p90", "p95", "p99")
CATEGORY_LABELS = {  # summary cost.by_category keys, in the order shown; unknown keys follow
    "busy": "busy (steps serving requests)", "idle": "idle", "provisioning": "provisioning (cold start)",
    "loading": "loading (image and weights)", "draining": "draining", "minimum_charge": "minimum charge",
    "unused_commitment": "unused commitment",
}


# --- a run folder ---------------------------------------------------------------------------------

def run_page(folder: Path) -> str:
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
