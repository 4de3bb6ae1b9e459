"""Batching policies against load: every policy in POLICIES on the Azure 2023
conversation trace and on Mooncake's long-prompt conversation trace, each at several loads (the
trace's recorded rate times a multiplier), same seed and same requests for every policy at a
given load (a paired comparison).

    python experiments/batching_sweep.py                   # full sweep, results/batching_sweep
    python experiments/batching_sweep.py --quick           # smoke version: 2 loads, 60-s windows
    python experiments/batching_sweep.py --jobs 2 --copy-figures docs/figures
    python experiments/batching_sweep.py --policies chunked,static --workloads azure_conv

Measured per (workload, load, policy): p50/p99 TTFT, p99 TPOT, p99 ITL, p99 E2EL, throughput,
goodput and SLO attainment (after warm-up), $ per 1M output tokens and per request (the whole
bill, run until every request has finished, so an overloaded policy pays for its backlog),
utilization, preemptions and rejections. Writes to --out: `sweep.csv` and `sweep.json` (one row
per point), `load_<workload>.png` (p99 TTFT, p99 TPOT, goodput and $ per 1M output tokens against
load, a line per policy) and `latency_vs_spend.png` (p99 TTFT against $ per 1M output tokens, a
point per load, a line per policy; filled markers meet the SLOs, hollow ones do not). Prints the
table. Points run in parallel processes (--jobs, default os.cpu_count()).

Deployments: Llama-3.1-8B on H100s; each run replays the trace's first 600 s at the new rate
(duration_s = 600 s after the multiplier, 60-s warm-up; Azure allows multipliers up to ~5.8 and
Mooncake up to ~5.9 before the trace runs out). Azure conversation (1.2k-token prompts): one
replica at x0.5 to x4 (2.4 to 24 req/s; for continuous batching x0.5-x2 are light, x3 the knee,
x4 overload). Mooncake conversation (12k-token prompts on average, up to 126k): four replicas
behind join-shortest-queue at x0.5 to x2 (1.5 to 6.1 req/s; x1 the knee). The request-level
policies (one_at_a_time, static, dynamic) saturate far below these loads.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simcost.analysis.sweep import row as sweep_row  # noqa: E402
from simcost.scenario.scenario import scenario_from_dict  # noqa: E402
from simcost.simulation.simulation import run  # noqa: E402

# name -> engine overrides; adding a policy is one line. Variants reuse a base dict. Prefix
# caching (on by default for vLLM V1's iteration-level policies) is off except in chunked_prefix,
# so that one variant shows what it adds.
NO_PREFIX = {"engine.prefix_caching": False}
CHUNKED = {"engine.policy": "chunked", "engine.max_num_batched_tokens": 2048, **NO_PREFIX}
POLICIES: dict[str, dict] = {
    "one_at_a_time": {"engine.policy": "one_at_a_time"},
    "static": {"engine.policy": "static", "engine.max_num_seqs": 32, "engine.batch_timeout_s": 0.05},
    "dynamic": {"engine.policy": "dynamic", "engine.max_num_seqs": 32, "engine.preferred_batch_sizes": [8, 16, 32],
                "engine.max_queue_delay_s": 0.05},
    "prefill_first": {"engine.policy": "prefill_first", **NO_PREFIX},  # vLLM v0
    "chunked": CHUNKED,  # vLLM v1 / Sarathi-Serve, budget 2048 tokens
    "chunked_sjf": {**CHUNKED, "engine.queue": "sjf"},  # oracle output lengths
    "chunked_swap": {**CHUNKED, "engine.preemption": "swap"},
    "chunked_prefix": {**CHUNKED, "engine.prefix_caching": True},
}

SEED = 42
WINDOW_S = 600.0  # arrivals replayed per run (simulated seconds)
WARMUP_S = 60.0
QUICK_WINDOW_S, QUICK_WARMUP_S = 60.0, 10.0


def base_scenario(trace: str, replicas: int, ttft_slo_s: float) -> dict:
    return {
        "name": f"batching-{trace}", "seed": SEED, "warmup_s": WARMUP_S,
        "workload": {"trace": {"name": trace}},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"},
        "fleet": {"replicas": replicas, "router": "join_shortest_queue"},
        "slo": {"ttft_s": ttft_slo_s, "tpot_s": 0.1},
    }


# workload -> base scenario and its loads (multipliers of the trace's recorded arrival rate)
WORKLOADS: dict[str, dict] = {
    "azure_conv": {"scenario": base_scenario("azure_conv", replicas=1, ttft_slo_s=2.0),
                   "loads": (0.5, 1.0, 2.0, 3.0, 4.0), "quick_loads": (1.0, 4.0)},
    "mooncake_conv": {"scenario": base_scenario("mooncake_conversation", replicas=4, ttft_slo_s=10.0),
                      "loads": (0.5, 1.0, 1.5, 2.0), "quick_loads": (0.5, 2.0)},
}

COLUMNS = ("workload", "load", "policy", "offered_requests_per_s", "arrived", "completed", "rejected",
           "p50_ttft_s", "p99_ttft_s", "p99_tpot_s", "p99_itl_s", "p99_e2el_s", "requests_per_s",
           "output_tokens_per_s", "goodput_requests_per_s", "slo_attainment", "meets_slo", "usd_per_hour",
           "usd_per_1m_output_tokens", "usd_per_request", "utilization", "preemptions")


def scenario_for(workload: str, load: float, policy: str, window_s: float, warmup_s: float):
    raw = json.loads(json.dumps(WORKLOADS[workload]["scenario"]))  # a deep copy
    raw["duration_s"], raw["warmup_s"] = window_s, warmup_s
    raw["workload"]["trace"]["rate_multiplier"] = load
    overrides = [f"{key}={json.dumps(value)}" for key, value in POLICIES[policy].items()]
    return scenario_from_dict(raw, overrides)


def run_point(workload: str, load: float, policy: str, window_s: float, warmup_s: float) -> dict:
    summary = run(scenario_for(workload, load, policy, window_s, warmup_s)).summary
    return point_row(summary, workload, load, policy, window_s)


def point_row(summary: dict, workload: str, load: float, policy: str, window_s: float) -> dict:
    base = sweep_row(summary, "load", load)  # simcost.analysis.sweep's columns: p99s, throughput, costs
    counts = summary["requests"]
    extra = {"workload": workload, "policy": policy, "offered_requests_per_s": counts["arrived"] / window_s,
             "arrived": counts["arrived"], "completed": counts["completed"], "rejected": counts["rejected"],
             "p99_itl_s": summary["itl_s"]["p99"], "preemptions": summary["preemptions"]}
    merged = {**base, **extra}
    return {key: merged[key] for key in COLUMNS}


def points(workloads, policies, quick: bool) -> list[tuple[str, float, str]]:
    key = "quick_loads" if quick else "loads"
    return [(w, load, p) for w in workloads for load in WORKLOADS[w][key] for p in policies]


def run_all(todo, window_s: float, warmup_s: float, jobs: int) -> list[dict]:
    # validate every point first, so a bad policy entry fails before any time is spent
    for w, load, p in todo:
        scenario_for(w, load, p, window_s, warmup_s)
    args = [(w, load, p, window_s, warmup_s) for w, load, p in todo]
    if jobs <= 1:
        return [run_point(*a) for a in args]
    # heaviest (highest-load) points first, so no long run starts last
    order = sorted(range(len(args)), key=lambda i: -args[i][1])
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {i: pool.submit(run_point, *args[i]) for i in order}
        return [futures[i].result() for i in range(len(args))]


# --- output ---------------------------------------------------------------------------------

def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _num(value, scale: float = 1.0, fmt: str = ",.1f") -> str:
    return "-" if value is None else format(value * scale, fmt)


def format_table(rows: list[dict]) -> str:
    head = (f"{'workload':<14}{'load':>5} {'policy':<15}{'req/s in':>9}{'p99 TTFT s':>12}{'p99 TPOT ms':>12}"
            f"{'p99 ITL ms':>11}{'goodput':>9}{'SLO %':>7}{'$/1M out':>10}{'$/req':>10}{'preempt':>8}{'rej':>5}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['workload']:<14}{r['load']:>5g} {r['policy']:<15}{_num(r['offered_requests_per_s'], 1, '.2f'):>9}"
            f"{_num(r['p99_ttft_s'], 1, ',.2f'):>12}{_num(r['p99_tpot_s'], 1e3):>12}{_num(r['p99_itl_s'], 1e3):>11}"
            f"{_num(r['goodput_requests_per_s'], 1, '.2f'):>9}{_num(r['slo_attainment'], 100):>7}"
            f"{_num(r['usd_per_1m_output_tokens'], 1, '.3f'):>10}{_num(r['usd_per_request'], 1, '.5f'):>10}"
            f"{r['preemptions']:>8}{r['rejected']:>5}")
    return "\n".join(lines)


def by_policy(rows: list[dict], workload: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["workload"] == workload:
            out.setdefault(r["policy"], []).append(r)
    return {p: sorted(rs, key=lambda r: r["load"]) for p, rs in out.items()}


def _style(policy: str, index: int) -> dict:
    """Colour and marker per policy; lines thin out down the table, so a policy whose results
    equal an earlier one's (chunked_swap without preemptions) shows inside it, not over it."""
    markers = "osD^vP*Xh<>"
    return {"color": plt.get_cmap("tab10")(index % 10), "marker": markers[index % len(markers)],
            "linestyle": "--" if "prefix" in policy else "-", "linewidth": max(0.8, 3.6 - 0.45 * index)}


def _draw(ax, x, y, ok, policy: str, index: int) -> None:
    st = _style(policy, index)
    ax.plot(x, y, color=st["color"], linestyle=st["linestyle"], linewidth=st["linewidth"], alpha=0.75,
            marker=st["marker"], markersize=0, label=policy)
    ax.scatter(x[ok], y[ok], color=st["color"], marker=st["marker"], zorder=3, s=22)
    ax.scatter(x[~ok], y[~ok], facecolors="none", edgecolors=st["color"], marker=st["marker"], zorder=3, s=22)


def _plain_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers (0.5, 1, 2, 10), not 5 x 10^-1."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _legend_below(fig, ax, ncol: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False,
               title="filled markers meet the SLOs, hollow ones do not", title_fontsize=8)


def _xy(series: list[dict], x_key: str, y_key: str):
    pts = [r for r in series if r[x_key] is not None and r[y_key] is not None]
    return (np.array([r[x_key] for r in pts], float), np.array([r[y_key] for r in pts], float),
            np.array([bool(r["meets_slo"]) for r in pts], bool))


PANELS = (("p99_ttft_s", "p99 TTFT (s)", True, "ttft_s"), ("p99_tpot_s", "p99 TPOT (s)", True, "tpot_s"),
          ("goodput_requests_per_s", "goodput (req/s meeting every SLO)", False, None),
          ("usd_per_1m_output_tokens", "$ per 1M output tokens", True, None))


def plot_load(rows: list[dict], workload: str, slo: dict, path: Path) -> Path:
    """Four panels against load, a line per policy; filled markers meet the SLOs."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2))
    series = by_policy(rows, workload)
    for ax, (key, label, log_y, slo_key) in zip(axes.flat, PANELS):
        for i, (policy, rs) in enumerate(series.items()):
            _draw(ax, *_xy(rs, "load", key), policy, i)
        if slo_key and slo.get(slo_key):
            ax.axhline(slo[slo_key], color="tab:red", linestyle=":", linewidth=1)
            ax.annotate(f"SLO {slo[slo_key]:g} s", (0.01, slo[slo_key]), xycoords=("axes fraction", "data"),
                        textcoords="offset points", xytext=(2, 2), fontsize=7, color="tab:red")
        if log_y:
            ax.set_yscale("log")
            _plain_ticks(ax.yaxis)
        ax.set_xlabel("load (x the trace's recorded arrival rate)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes.flat[1], ncol=min(len(series), 4))
    fig.suptitle(f"batching policies on {workload} (Llama-3.1-8B, H100)")
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency_vs_spend(rows: list[dict], workloads: list[str], path: Path) -> Path:
    """p99 TTFT against $ per 1M output tokens: a point per load (labelled), a line per policy."""
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.6 * len(workloads), 4.4), squeeze=False)
    for ax, workload in zip(axes.flat, workloads):
        for i, (policy, rs) in enumerate(by_policy(rows, workload).items()):
            x, y, ok = _xy(rs, "usd_per_1m_output_tokens", "p99_ttft_s")
            _draw(ax, x, y, ok, policy, i)
            if policy in ("chunked", "one_at_a_time"):
                for r, xi, yi in zip(rs, x, y):
                    ax.annotate(f"x{r['load']:g}", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlabel("$ per 1M output tokens")
        ax.set_ylabel("p99 TTFT (s)")
        ax.set_title(workload)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes.flat[0], ncol=min(len(POLICIES), 7 if len(workloads) > 1 else 4))
    fig.suptitle("latency vs spend: one point per load (x rate multiplier), one line per policy")
    fig.tight_layout(rect=(0, 0.1 if len(workloads) > 1 else 0.16, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(rows: list[dict], workloads: list[str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / "sweep.csv")
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    figures = [plot_load(rows, w, WORKLOADS[w]["scenario"]["slo"], out_dir / f"load_{w}.png") for w in workloads]
    figures.append(plot_latency_vs_spend(rows, workloads, out_dir / "latency_vs_spend.png"))
    return figures


DOC_FIGURES = ("load_azure_conv.png", "latency_vs_spend.png")  # the ones the README shows


def copy_figures(figures: list[Path], dest: Path) -> list[Path]:
    """Copy the README's figures into e.g. docs/figures, prefixed batching_."""
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(f, dest / f"batching_{f.name}")) for f in figures if f.name in DOC_FIGURES]


def _names(text: str | None, table: dict) -> list[str]:
    names = list(table) if not text else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"batching_sweep: unknown {unknown}; expected some of {', '.join(table)}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/batching_sweep"))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quick", action="store_true", help="two loads per workload, 60-s windows")
    p.add_argument("--window-s", type=float, help="arrival window per run (default 600, --quick 60)")
    p.add_argument("--workloads", help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    p.add_argument("--policies", help=f"comma-separated, of: {', '.join(POLICIES)}")
    p.add_argument("--copy-figures", type=Path, metavar="DIR",
                   help=f"also copy {' and '.join(DOC_FIGURES)} here (docs/figures)")
    args = p.parse_args(argv)
    workloads, policies = _names(args.workloads, WORKLOADS), _names(args.policies, POLICIES)
    window_s = args.window_s or (QUICK_WINDOW_S if args.quick else WINDOW_S)
    warmup_s = min(QUICK_WARMUP_S if args.quick else WARMUP_S, window_s / 6)
    start = time.perf_counter()
    rows = run_all(points(workloads, policies, args.quick), window_s, warmup_s, args.jobs)
    wall_s = time.perf_counter() - start
    figures = write_outputs(rows, workloads, args.out)
    if args.copy_figures:
        figures += copy_figures(figures, args.copy_figures)
    print(format_table(rows))
    print(f"\n{len(rows)} runs ({window_s:g}-s windows, seed {SEED}) in {wall_s:.1f} s wall with {args.jobs} jobs")
    print("wrote", ", ".join(str(f) for f in [args.out / "sweep.csv", args.out / "sweep.json", *figures]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
