"""What `simcost forecast` prints and writes (simcost.analysis.forecast runs it): the console
report, forecast.csv (one row per month), forecast.png (spend with its band, the budget line,
the first month over budget marked; SLO attainment below) and result.json."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from simcost.analysis.forecast import Forecast, first_month

# --- output ---------------------------------------------------------------------------------

def write_csv(result: Forecast, path: Path) -> Path:
    rows = [asdict(m) for m in result.months]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_report(result: Forecast) -> str:
    fleet = "resized each month (--resize)" if result.resize else "static fleet"
    lines: list[str | None] = [f"{result.scenario}: {result.path.describe()}; {result.seeds} seed(s) per month "
             f"(band {result.band}); {result.hours_per_month:g} h/month; {fleet}; {result.runs} runs",
             "", _format_table(result), ""]
    lines += [budget_line(result), slo_line(result)]
    return "\n".join(line for line in lines if line is not None)


def _format_table(result: Forecast) -> str:
    head = (f"{'month':>5}{'load x':>8}{'req/s':>9}{'replicas':>9}{'$/month':>12}{'low':>11}{'high':>11}"
            f"{'SLO att.':>10}{'SLO':>5}{'budget':>8}")
    rows = [head]
    for m in result.months:
        attainment = "-" if m.slo_attainment_mean is None else f"{m.slo_attainment_mean:.1%}"
        budget = "" if result.budget_usd_per_month is None else ("over" if m.over_budget else "ok")
        rows.append(f"{m.month:>5}{m.load_factor:>8.3f}{m.offered_requests_per_s:>9.2f}{m.fleet:>9}"
                    f"{m.usd_per_month_mean:>12,.0f}{m.usd_per_month_low:>11,.0f}{m.usd_per_month_high:>11,.0f}"
                    f"{attainment:>10}{'yes' if m.meets_slo else 'no':>5}{budget:>8}")
    return "\n".join(rows)


def budget_line(result: Forecast) -> str | None:
    budget = result.budget_usd_per_month
    if budget is None:
        return None
    crossed = first_month(result.months, lambda m: m.over_budget)
    band_crossed = first_month(result.months, lambda m: m.usd_per_month_high > budget)
    if crossed is None:
        text = f"budget of ${budget:,.0f}/month not crossed within {result.path.months} months"
    else:
        text = f"budget of ${budget:,.0f}/month first crossed in month {crossed.month} (${crossed.usd_per_month_mean:,.0f} mean)"
    if band_crossed is not None and (crossed is None or band_crossed.month < crossed.month):
        text += f"; the band's top crosses it from month {band_crossed.month}"
    return text


def slo_line(result: Forecast) -> str:
    missed = first_month(result.months, lambda m: not m.meets_slo)
    first, last = result.months[0], result.months[-1]
    if result.resize:
        grown = first_month(result.months, lambda m: m.replicas != first.replicas)
        text = (f"fleet from {first.replicas} to {last.replicas} replicas" +
                (f", first changed in month {grown.month}" if grown else ", unchanged"))
        if missed:
            text += (f"; no fleet up to {result.max_replicas} replicas meets the SLO from month {missed.month}"
                     " (raise --max-replicas)")
        return text
    if missed is None:
        return f"SLO met in every month by the static fleet of {first.replicas} replica(s)"
    return (f"SLO first missed in month {missed.month} (load x{missed.load_factor:.3g}) by the static fleet of "
            f"{missed.replicas} replica(s): more replicas are needed from month {missed.month} (try --resize)")


def plot_forecast(result: Forecast, path: Path) -> Path:
    """Spend per month with its band, the budget line and the first month over it; SLO attainment
    below. Filled markers meet the SLO, hollow ones do not (as in sweep.png)."""
    from simcost.results.plots import plt

    months = np.array([m.month for m in result.months])
    fig, (ax, ax_slo) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    _plot_spend(ax, result, months)
    attainment = [np.nan if m.slo_attainment_mean is None else m.slo_attainment_mean for m in result.months]
    ax_slo.plot(months, np.array(attainment) * 100, marker="o", color="tab:green")
    lowest_pct = np.nanmin(np.array(attainment, dtype=float) * 100, initial=95.0)
    ax_slo.set_ylim(max(0.0, lowest_pct - 5), 101)
    ax_slo.axhline(result.slo_target * 100, color="gray", linestyle="--", label=f"target {result.slo_target:.0%}")
    ax_slo.set_ylabel("SLO attainment %")
    ax_slo.set_xlabel("month")
    ax_slo.set_xticks(months)
    ax_slo.grid(alpha=0.3)
    ax_slo.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{result.scenario}: {result.path.describe()}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_spend(ax, result: Forecast, months: np.ndarray) -> None:
    mean = np.array([m.usd_per_month_mean for m in result.months])
    ok = np.array([m.meets_slo for m in result.months])
    ax.fill_between(months, [m.usd_per_month_low for m in result.months], [m.usd_per_month_high for m in result.months],
                    color="tab:blue", alpha=0.2, label=f"band ({result.band}, {result.seeds} seeds)")
    ax.plot(months, mean, color="tab:blue", label="mean $/month")
    ax.scatter(months[ok], mean[ok], color="tab:blue", zorder=3, label="meets SLO")
    if (~ok).any():
        ax.scatter(months[~ok], mean[~ok], facecolors="white", edgecolors="tab:blue", zorder=3, label="misses SLO")
    for month, factor in result.path.steps:  # the step changes of the growth path
        ax.axvline(month, color="gray", linestyle=":", alpha=0.7)
        ax.annotate(f"load x{factor:g}", (month, 0), textcoords="offset points", xytext=(3, 4), fontsize=8, color="gray")
    previous = None
    for m, y in zip(result.months, mean):
        if m.fleet != previous:  # label the fleet size where it changes
            ax.annotate(f"{m.fleet} repl.", (m.month, y), textcoords="offset points", xytext=(0, 8), fontsize=8, ha="center")
            previous = m.fleet
    budget = result.budget_usd_per_month
    if budget is not None:
        ax.axhline(budget, color="tab:red", linestyle="--", label=f"budget ${budget:,.0f}")
        crossed = first_month(result.months, lambda m: m.over_budget)
        if crossed is not None:
            ax.scatter([crossed.month], [crossed.usd_per_month_mean], marker="*", s=220, color="tab:red", zorder=4,
                       label=f"over budget from month {crossed.month}")
    ax.set_ylabel("$ per month")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter("${x:,.0f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def write_outputs(result: Forecast, out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return (write_csv(result, out_dir / "forecast.csv"), plot_forecast(result, out_dir / "forecast.png"),
            write_json(result, out_dir / "result.json"))


def write_json(result: Forecast, path: Path) -> Path:
    """Every number of the forecast (what `simcost report` reads), with the month rows."""
    path.write_text(json.dumps(forecast_json(result), indent=2, default=str) + "\n")
    return path


def forecast_json(result: Forecast) -> dict:
    return {"command": "forecast", **{k: v for k, v in asdict(result).items() if k != "months"},
            "band": result.band, "months": [asdict(m) | {"fleet": m.fleet} for m in result.months]}
