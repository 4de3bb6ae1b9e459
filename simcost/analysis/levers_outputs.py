"""What `simcost levers` prints and writes: the console table, levers.csv, levers.json and
levers.png (simcost.analysis.levers runs the study)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from simcost.analysis.levers import LeverStudy
from simcost.units import HOURS_PER_MONTH

# --- outputs ------------------------------------------------------------------------------------

CSV_COLUMNS = ("rank", "lever", "label", "status", "replicas", "usd_per_hour", "usd_per_month",
               "saving_usd_per_month", "saving_fraction", "annual_saving_usd", "usd_per_1m_output_tokens",
               "p50_ttft_s", "p99_ttft_s", "p99_tpot_s", "slo_attainment", "meets_slo", "requests_per_s",
               "effort_weeks", "quality_risk", "roi", "prefix_token_hit_rate", "cache_served_requests", "note", "reason")


def format_study(result: LeverStudy) -> str:
    fleet = ("each row at its smallest fleet meeting the SLO" if result.mode == "resize"
             else f"the scenario's {result.scenario_replicas} replicas")
    lines = [f"{result.scenario}: levers one at a time, {fleet}, {result.seeds} seed(s); "
             f"ROI = annual saving x (1 - risk) / (effort x ${result.usd_per_engineer_week:,.0f}/week)"]
    if result.mode == "resize" and result.rows[0]["replicas"] != result.scenario_replicas:
        lines.append(f"(the baseline is right-sized from the scenario's {result.scenario_replicas} replicas "
                     f"to {result.rows[0]['replicas']})")
    lines.append("")
    width = max(len(r["label"]) for r in result.rows)
    lines.append(f"{'rank':>4}  {'lever':<{width}}  {'repl':>4}  {'$/month':>9}  {'saving/mo':>9}  {'saving':>7}  "
                 f"{'$/1M out':>8}  {'p99 TTFT ms':>11}  {'p99 TPOT ms':>11}  {'SLO att.':>8}  {'SLO':>3}  "
                 f"{'effort wk':>9}  {'risk':>4}  {'ROI':>7}  note")
    skipped = []
    for r in result.rows:
        if r["status"] != "ok":
            skipped.append(f"  {r['label']}: {r['status']}: {r['reason']}")
            continue
        f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"{f(r['rank'], 'd'):>4}  {r['label']:<{width}}  {r['replicas']:>4}  {r['usd_per_month']:>9,.0f}  "
                     f"{r['saving_usd_per_month']:>9,.0f}  {f(r['saving_fraction'], '.1%'):>7}  "
                     f"{f(r['usd_per_1m_output_tokens'], '.3f'):>8}  {f(_ms(r['p99_ttft_s']), ',.1f'):>11}  "
                     f"{f(_ms(r['p99_tpot_s']), ',.1f'):>11}  {f(r['slo_attainment'], '.1%'):>8}  "
                     f"{'yes' if r['meets_slo'] else 'no':>3}  {f(r['effort_weeks'], 'g'):>9}  "
                     f"{f(r['quality_risk'], '.2f'):>4}  {f(r['roi'], ',.2f'):>7}  {r['note']}")
    if skipped:
        lines += ["", "not run:"] + skipped
    lines.append(f"\nsimulations: {result.simulations}")
    return "\n".join(lines)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def study_json(result: LeverStudy) -> dict:
    """result.json: the study's settings and its ranked rows (what `simcost report` reads)."""
    return {"command": "levers", "scenario": result.scenario, "mode": result.mode, "seeds": result.seeds,
            "scenario_replicas": result.scenario_replicas,
            "usd_per_engineer_week": result.usd_per_engineer_week, "hours_per_month": HOURS_PER_MONTH,
            "simulations": result.simulations, "roi": "annual_saving_usd * (1 - quality_risk) / "
            "(effort_weeks * usd_per_engineer_week)", "rows": result.rows}


def write_outputs(result: LeverStudy, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path, png_path = out_dir / "levers.csv", out_dir / "result.json", out_dir / "levers.png"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)
    json_path.write_text(json.dumps(study_json(result), indent=2, default=json_default) + "\n")
    plot_levers(result, png_path)
    return [csv_path, json_path, png_path]


def json_default(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def plot_levers(result: LeverStudy, path: Path) -> Path:
    """Bar panels over the levers that ran, in rank order: $/month saving, ROI and p99 TTFT
    (the baseline's dashed); hatched bars miss the SLO."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r["status"] == "ok" and r["lever"] != "baseline"]
    baseline = result.rows[0]
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.45 * max(len(rows), 3) + 1.6), sharey=True)
    y = np.arange(len(rows))
    panels = (("saving_usd_per_month", 1.0, r"saving vs baseline (\$/month)"),
              ("roi", 1.0, r"ROI (\$ saved in a year per \$ of engineering)"),
              ("p99_ttft_s", 1e3, "p99 TTFT (ms; dashed: baseline)"))
    for ax, (key, scale, title) in zip(axes, panels):
        values = [(r[key] or 0.0) * scale for r in rows]
        colors = ["tab:blue" if key == "p99_ttft_s" else "tab:green" if v >= 0 else "tab:red" for v in values]
        for bar, r in zip(ax.barh(y, values, color=colors), rows):
            if not r["meets_slo"]:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
        if key == "p99_ttft_s" and baseline.get(key) is not None:
            ax.axvline(baseline[key] * scale, color="black", linestyle="--", linewidth=1)
        else:
            ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [r["label"] for r in rows])
    axes[0].invert_yaxis()
    fleet = "right-sized fleets" if result.mode == "resize" else "the scenario's fleet"
    fig.suptitle(f"{result.scenario}: levers ranked by ROI, {fleet} (hatched: misses the SLO)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
