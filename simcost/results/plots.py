"""Figures from results: pure functions from data to a PNG file. Never imported by the engine."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from simcost.metrics.timeseries import TimeSeries

CDF_POINTS = 512  # points per CDF curve: a smooth curve at any run size, and a draw that does not grow with it


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported on the first figure: it takes ~0.4 s, which
    runs that draw nothing (simcost --help, check, sweeps without figures) should not pay."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers or in CI
    import matplotlib.pyplot as plt

    return plt


def __getattr__(name: str) -> Any:
    """`from simcost.results.plots import plt` still works, importing pyplot only then."""
    if name == "plt":
        return pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cdf_points(values: np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, fraction <= x) at `points` evenly spaced ranks of the sorted values, first and last
    included: the empirical CDF's own steps, thinned, instead of one step per request."""
    values = np.sort(values)
    ranks = np.unique(np.linspace(0, len(values) - 1, min(points, len(values))).round().astype(np.int64))
    return values[ranks], (ranks + 1) / len(values)


METRIC_NAMES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "itl_s": "ITL", "e2el_s": "E2EL"}
# what ends a replica (RosterArrays.end) -> the event it marks on timeseries.png
END_EVENTS = {"reclaim": "spot reclaim", "failure": "failure", "outage": "site outage", "scale_down": "scale-down"}
EVENT_STYLE = {"replica requested": ("tab:green", "-"), "scale-down": ("tab:gray", ":"),
               "spot reclaim": ("tab:orange", "--"), "failure": ("tab:red", "--"), "site outage": ("tab:purple", "-.")}


def plain_number(value: float, _pos: Any = None) -> str:
    """A tick label as a plain number ('0.5', '20', '3000'), never '2x10^0' or '1e+03'."""
    return np.format_float_positional(float(value), precision=6, trim="-")


def spans_decade(values: np.ndarray) -> bool:
    """Log scale when the finite values are positive and span more than 10x."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return len(v) > 1 and v.min() > 0 and v.max() / v.min() > 10


def readable_log_axis(ax: Any, which: str) -> None:
    """Log scale on ax's `which` axis ("x" or "y"), labelled in plain numbers: decades always, and
    2 and 5 between them when it spans few decades (so a 1-10 s axis does not read just '1', '10')."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(plain_number))
    lo, hi = sorted(abs(v) for v in (ax.get_xlim() if which == "x" else ax.get_ylim()))
    few = lo > 0 and hi / lo < 1e3
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)) if few else NullLocator())  # many decades: decades only
    axis.set_minor_formatter(FuncFormatter(plain_number) if few else NullFormatter())


def time_unit(max_s: float) -> tuple[str, float]:
    """ms or s for latencies up to max_s: (unit, factor from seconds)."""
    return ("ms", 1e3) if np.isfinite(max_s) and max_s < 1.0 else ("s", 1.0)


def clock_unit(span_s: float) -> tuple[str, float]:
    """s, min or h for a time axis spanning span_s: (unit, seconds per unit)."""
    if span_s <= 300:
        return "s", 1.0
    return ("min", 60.0) if span_s <= 5 * 3600 else ("h", 3600.0)


def duration_text(seconds: float) -> str:
    """A duration for a label, rounded as a person would say it: '7 s', '1.5 min', '2 h'."""
    unit, per = ("s", 1.0) if seconds < 90 else ("min", 60.0) if seconds < 5400 else ("h", 3600.0)
    value = seconds / per
    return f"{value:.2g} {unit}" if value < 10 else f"{value:.0f} {unit}"


def short_key(key: str) -> str:
    """A sweep key as a label names it: its last dotted part (fleet.replicas -> replicas)."""
    return key.rsplit(".", 1)[-1]


def latency_cdfs(latencies_s: dict[str, np.ndarray], slo_s: dict[str, float | None], title: str, path: Path) -> Path:
    """Empirical CDFs of one group of requests against one SLO (`workload_latency_cdfs`)."""
    return workload_latency_cdfs({"": latencies_s}, {"": slo_s}, title, path)


def workload_latency_cdfs(by_workload: dict[str, dict[str, np.ndarray]], slo_by_workload: dict[str, dict[str, float | None]],
                          title: str, path: Path) -> Path:
    """latency.png: `latency_figure`, saved."""
    return save(latency_figure(by_workload, slo_by_workload, title), path)


def save(fig: Any, path: Path | str) -> Path:
    """Write the figure and free it (pyplot keeps every open figure otherwise)."""
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


def png_bytes(fig: Any) -> bytes:
    """The figure as a PNG file's bytes, and freed: a figure process can draw it before it knows
    where the file goes (simcost.results.background)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    return buffer.getvalue()


@dataclass(frozen=True)
class LatencyPanel:
    """One panel of latency.png as numbers, no matplotlib: per workload its thinned CDF (x already
    in `unit`), colour and label, the SLO lines drawn, and whether the x axis is logarithmic.
    Small whatever the run's size, so a figure process can be handed it instead of every latency."""

    metric: str
    unit: str
    # per workload, in drawing order: (colour, label, (x, fraction <= x) or None when it has no
    # values, its SLO's x or None when not drawn)
    curves: tuple[tuple[str, str, tuple[np.ndarray, np.ndarray] | None, float | None], ...]
    log_x: bool
    has_slo: bool


def latency_panels(by_workload: dict[str, dict[str, np.ndarray]],
                   slo_by_workload: dict[str, dict[str, float | None]]) -> list[LatencyPanel]:
    """One panel per latency (TTFT, TPOT, E2EL), one CDF per workload in its own colour, each with
    its own workload's SLO limit as a dashed line of that colour and, in the legend, the share of
    its requests within it. A panel no request has values for (TPOT of one-output models) is left out."""
    metrics = [m for m in next(iter(by_workload.values()))
               if any(np.isfinite(lat[m]).any() for lat in by_workload.values())]
    metrics = metrics or list(next(iter(by_workload.values())))[:1]
    panels = []
    for metric in metrics:
        limits = {w: slo_by_workload.get(w, {}).get(metric) for w in by_workload}
        values = {w: lat[metric][np.isfinite(lat[metric])] for w, lat in by_workload.items()}
        data = np.concatenate(list(values.values()))
        top_s = float(data.max()) if len(data) else np.inf
        # an SLO far beyond every request (an hour-long batch limit) would squash the curves: off the axis
        drawn: dict[str, float] = {w: v for w, v in limits.items() if v and v <= 10 * top_s}
        pooled = np.concatenate([data, list(drawn.values())])
        unit, scale = time_unit(float(pooled.max()) if len(pooled) else np.nan)
        curves = []
        for i, (name, v) in enumerate(values.items()):
            color, limit = f"C{i}", limits[name]
            label = name or "all requests"
            if limit and len(v):
                label += f": {np.mean(v <= limit):.1%} within {plain_number(limit * scale)} {unit}"
            curves.append((color, label, _scaled(_cdf_points(v), scale) if len(v) else None,
                           drawn[name] * scale if name in drawn else None))
        panels.append(LatencyPanel(metric, unit, tuple(curves), spans_decade(pooled), any(limits.values())))
    return panels


def latency_figure(by_workload: dict[str, dict[str, np.ndarray]], slo_by_workload: dict[str, dict[str, float | None]],
                   title: str) -> Any:
    """latency.png's figure (`latency_panels`, drawn)."""
    return draw_latency(latency_panels(by_workload, slo_by_workload), title)


def latency_png(panels: list[LatencyPanel], title: str) -> bytes:
    """latency.png's bytes from its panels: what a figure process draws."""
    return png_bytes(draw_latency(panels, title))


def draw_latency(panels: list[LatencyPanel], title: str) -> Any:
    plt = pyplot()
    width_in = 4.2 * len(panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(width_in, 3.6))
    for ax, panel in zip(np.atleast_1d(axes), panels):
        for color, label, cdf, slo_x in panel.curves:
            if cdf is not None:
                ax.step(*cdf, where="post", color=color, label=label)
            if slo_x is not None:
                ax.axvline(slo_x, color=color, linestyle="--", alpha=0.8)
        if panel.log_x:
            readable_log_axis(ax, "x")
        ax.set_xlabel(f"{METRIC_NAMES.get(panel.metric, panel.metric)} ({panel.unit})")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=7, title="dashed: its SLO" if panel.has_slo else None,
                      title_fontsize=7)
    fig.suptitle(title)
    # fixed margins (in inches, so any number of panels fits), not tight_layout: that draws the
    # whole figure once more just to measure it
    fig.subplots_adjust(left=0.75 / width_in, right=1 - 0.2 / width_in, bottom=0.16, top=0.86, wspace=0.28)
    return fig


def _scaled(xy: tuple[np.ndarray, np.ndarray], scale: float) -> tuple[np.ndarray, np.ndarray]:
    return xy[0] * scale, xy[1]


def latency_vs_spend(rows: list[dict], param: str, path: Path) -> Path:
    """sweep.png: `spend_figure`, saved."""
    return save(spend_figure(rows, param), path)


def spend_figure(rows: list[dict], param: str) -> Any:
    """p99 TTFT and p99 TPOT against $/hour and $ per 1M output tokens, one point per sweep
    value labelled `key=value`; filled markers meet every SLO, hollow ones do not."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    spend = (("usd_per_hour", "fleet $/hour"), ("usd_per_1m_output_tokens", "$ per 1M output tokens"))
    latencies = np.array([r[m] for r in rows for m in ("p99_ttft_s", "p99_tpot_s") if r.get(m) is not None], dtype=float)
    unit, scale = time_unit(float(latencies.max()) if len(latencies) else np.nan)
    name = short_key(param)
    for ax, (cost_key, cost_label) in zip(axes, spend):
        for metric, color in (("p99_ttft_s", "tab:blue"), ("p99_tpot_s", "tab:orange")):
            pts = [r for r in rows if r.get(cost_key) is not None and r.get(metric) is not None]
            x = np.array([r[cost_key] for r in pts], dtype=float)
            y = np.array([r[metric] for r in pts], dtype=float) * scale
            ok = np.array([bool(r["meets_slo"]) for r in pts], dtype=bool)
            order = np.argsort(x)
            ax.plot(x[order], y[order], color=color, alpha=0.5, label=f"p99 {METRIC_NAMES[metric[4:]]}")
            ax.scatter(x[ok], y[ok], color=color, zorder=3)
            ax.scatter(x[~ok], y[~ok], facecolors="none", edgecolors=color, zorder=3)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(f"{name}={r[param]}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.margins(x=0.1, y=0.12)  # room for the point labels at the edges
        ax.set_xlabel(cost_label)
        ax.set_ylabel(f"p99 latency ({unit})")
        if spans_decade(latencies):
            readable_log_axis(ax, "y")
        ax.grid(alpha=0.3, which="both")
        ax.legend(title="filled: meets SLO", fontsize=8)
    fig.suptitle(f"p99 latency vs spend, varying {param}")
    fig.tight_layout()
    return fig


def fleet_events(roster: Any) -> dict[str, np.ndarray]:
    """Times (s) of what changed the fleet, from the run's roster (RosterArrays): replicas
    requested after the start (autoscaler scale-ups, replacements of lost ones), scale-downs (drain
    start), spot reclaims, failures and site outages (replica lost). Empty for a fleet that stood still."""
    events = {"replica requested": roster.requested_s[roster.requested_s > 0]}
    ends = np.array(roster.end, dtype=object)
    for end, name in END_EVENTS.items():
        at_s = roster.drain_s if end == "scale_down" else roster.gone_s
        events[name] = at_s[ends == end] if len(ends) else np.zeros(0)
    return {k: np.asarray(v, dtype=float) for k, v in events.items() if len(v)}


def timeseries_png(ts: TimeSeries, title: str = "", events: dict[str, np.ndarray] | None = None,
                   per_item: bool = False) -> bytes:
    """timeseries.png's bytes: `timeseries_figure`, drawn."""
    return png_bytes(timeseries_figure(ts, title, events, per_item))


def write_png(draw: Callable[..., bytes], args: tuple, path: Path) -> Path:
    """The PNG `draw(*args)` makes (`latency_png`, `timeseries_png`), written to path."""
    Path(path).write_bytes(draw(*args))
    return Path(path)


def timeseries_figure(ts: TimeSeries, title: str = "", events: dict[str, np.ndarray] | None = None,
                      per_item: bool = False) -> Any:
    """Five panels on one time axis (s, min or h by the run's length): replicas, queue and running,
    KV use, $/hour, request and token rates. Rates and $ are drawn as steps over their intervals;
    states as read. `events` (`fleet_events`) are marked on the replicas panel; a per-item model
    has no token rate to draw."""
    plt = pyplot()
    fig, axes = plt.subplots(5, 1, figsize=(9, 11), sharex=True)
    ax_rep, ax_queue, ax_kv, ax_usd, ax_rate = axes
    many = len(ts.pools) > 1
    unit, per = clock_unit(ts.horizon_s)
    t = ts.t_s / per

    def label(name: str, pool: str) -> str:
        return f"{name} ({pool})" if many else name

    for p, pool in enumerate(ts.pools):
        ax_rep.step(t, ts.replicas[p], where="post", label=label("billed", pool))
        ax_rep.step(t, ts.ready[p], where="post", linestyle="--", label=label("ready", pool))
        ax_queue.plot(t, ts.waiting[p], label=label("waiting", pool))
        ax_queue.plot(t, ts.running[p], label=label("running", pool))
        ax_kv.plot(t, 100 * ts.kv_used_fraction[p], label=pool)
        ax_usd.step(t, ts.usd_per_hour[p], where="post", label=pool)
    if many:
        ax_usd.step(t, ts.usd_per_hour.sum(axis=0), where="post", color="black", label="fleet")
    ax_rep.set_ylim(0, 1.15 * max(1, ts.replicas.max()))  # headroom: flat lines stay off the frame
    for name, at_s in (events or {}).items():
        color, style = EVENT_STYLE.get(name, ("black", ":"))
        ax_rep.vlines(at_s / per, 0, 1, transform=ax_rep.get_xaxis_transform(), colors=color, linestyles=style,
                      alpha=0.7, label=f"{name} ({len(at_s)})")
    ax_rate.step(t, ts.arrivals_per_s.sum(axis=0), where="post", label="arrivals")
    ax_rate.step(t, ts.completions_per_s.sum(axis=0), where="post", label="completions")
    if not per_item:
        ax_tok = ax_rate.twinx()
        ax_tok.step(t, ts.output_tokens_per_s.sum(axis=0), where="post", color="tab:green", alpha=0.6)
        ax_tok.set_ylabel("output tokens/s", color="tab:green")
        ax_rate.set_zorder(ax_tok.get_zorder() + 1)  # request rates over the token rate
        ax_rate.patch.set_visible(False)
    ax_rep.yaxis.get_major_locator().set_params(integer=True)
    ax_kv.set_ylim(0, 100)
    ax_usd.set_ylim(0, 1.15 * max(1e-9, ts.usd_per_hour.sum(axis=0).max()))
    for ax, ylabel in zip(axes, ("replicas", "requests", "KV used (%)", "$/hour", "requests/s")):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    ax_rate.set_xlabel(f"time ({unit})")
    ax_rate.set_xlim(0, ts.horizon_s / per)
    fig.suptitle(f"{title or 'over time'} (sampled every {duration_text(ts.interval_s)})")
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.05, top=0.95, hspace=0.12)  # fixed: no tight_layout re-draw
    return fig
