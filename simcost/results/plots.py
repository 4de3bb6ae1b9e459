"""Figures from results: pure functions from data to a PNG file. Never imported by the engine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from simcost.metrics.timeseries import TimeSeries

CDF_POINTS = 512  # points per CDF curve: a smooth curve at any run size, and a draw that does not grow with it


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported on the first figure: it takes ~0.4 s, which
    runs that draw nothing (simcost --help, check, sweeps without figures) should not pay."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers or in CI
    import matplotlib.pyplot as plt

    return plt


def __getattr__(name: str) -> Any:
    """`from simcost.results.plots import plt` still works, importing pyplot only then."""
    if name == "plt":
        return _pyplot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cdf_points(values: np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, fraction <= x) at `points` evenly spaced ranks of the sorted values, first and last
    included: the empirical CDF's own steps, thinned, instead of one step per request."""
    values = np.sort(values)
    ranks = np.unique(np.linspace(0, len(values) - 1, min(points, len(values))).round().astype(np.int64))
    return values[ranks], (ranks + 1) / len(values)


def latency_cdfs(latencies_s: dict[str, np.ndarray], slo_s: dict[str, float | None], title: str, path: Path) -> Path:
    """Empirical CDFs of TTFT, TPOT and E2EL, with the SLO limits as vertical lines."""
    plt = _pyplot()
    width_in = 4.2 * len(latencies_s)
    fig, axes = plt.subplots(1, len(latencies_s), figsize=(width_in, 3.4))
    for ax, (name, values) in zip(np.atleast_1d(axes), latencies_s.items()):
        values = values[~np.isnan(values)]
        if len(values):
            ax.step(*_cdf_points(values), where="post")
        if slo_s.get(name):
            ax.axvline(slo_s[name], color="tab:red", linestyle="--", label=f"SLO {slo_s[name]:g} s")
            ax.legend(loc="lower right")
        ax.set_xlabel(f"{name.removesuffix('_s').upper()} (s)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    # fixed margins (in inches, so any number of panels fits), not tight_layout: that draws the
    # whole figure once more just to measure it
    fig.subplots_adjust(left=0.75 / width_in, right=1 - 0.2 / width_in, bottom=0.16, top=0.86, wspace=0.28)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_vs_spend(rows: list[dict], param: str, path: Path) -> Path:
    """p99 TTFT and p99 TPOT against $/hour and $ per 1M output tokens, one point per sweep
    value; filled markers meet every SLO, hollow ones do not."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    spend = (("usd_per_hour", "fleet $/hour"), ("usd_per_1m_output_tokens", "$ per 1M output tokens"))
    for ax, (cost_key, cost_label) in zip(axes, spend):
        for metric, color in (("p99_ttft_s", "tab:blue"), ("p99_tpot_s", "tab:orange")):
            pts = [r for r in rows if r.get(cost_key) is not None and r.get(metric) is not None]
            x = np.array([r[cost_key] for r in pts])
            y = np.array([r[metric] for r in pts])
            ok = np.array([bool(r["meets_slo"]) for r in pts], dtype=bool)
            order = np.argsort(x)
            ax.plot(x[order], y[order], color=color, alpha=0.5, label=metric.replace("_s", " (s)"))
            ax.scatter(x[ok], y[ok], color=color, zorder=3)
            ax.scatter(x[~ok], y[~ok], facecolors="none", edgecolors=color, zorder=3)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(str(r[param]), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(cost_label)
        ax.set_ylabel("p99 latency (s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(title="filled: meets SLO", fontsize=8)
    fig.suptitle(f"latency vs spend over {param}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timeseries(ts: TimeSeries, path_png: Path, title: str = "") -> Path:
    """Five panels on one time axis: replicas, queue and running, KV use, $/hour, request and
    token rates. Rates and $ are drawn as steps over their intervals; states as read."""
    plt = _pyplot()
    fig, axes = plt.subplots(5, 1, figsize=(9, 11), sharex=True)
    ax_rep, ax_queue, ax_kv, ax_usd, ax_rate = axes
    many = len(ts.pools) > 1

    def label(name: str, pool: str) -> str:
        return f"{name} ({pool})" if many else name

    for p, pool in enumerate(ts.pools):
        ax_rep.step(ts.t_s, ts.replicas[p], where="post", label=label("billed", pool))
        ax_rep.step(ts.t_s, ts.ready[p], where="post", linestyle="--", label=label("ready", pool))
        ax_queue.plot(ts.t_s, ts.waiting[p], label=label("waiting", pool))
        ax_queue.plot(ts.t_s, ts.running[p], label=label("running", pool))
        ax_kv.plot(ts.t_s, 100 * ts.kv_used_fraction[p], label=pool)
        ax_usd.step(ts.t_s, ts.usd_per_hour[p], where="post", label=pool)
    if many:
        ax_usd.step(ts.t_s, ts.usd_per_hour.sum(axis=0), where="post", color="black", label="fleet")
    ax_rate.step(ts.t_s, ts.arrivals_per_s.sum(axis=0), where="post", label="arrivals")
    ax_rate.step(ts.t_s, ts.completions_per_s.sum(axis=0), where="post", label="completions")
    ax_tok = ax_rate.twinx()
    ax_tok.step(ts.t_s, ts.output_tokens_per_s.sum(axis=0), where="post", color="tab:green", alpha=0.6)
    ax_tok.set_ylabel("output tok/s", color="tab:green")
    ax_rate.set_zorder(ax_tok.get_zorder() + 1)  # request rates over the token rate
    ax_rate.patch.set_visible(False)
    ax_rep.set_ylim(0, 1.15 * max(1, ts.replicas.max()))  # headroom: flat lines stay off the frame
    ax_rep.yaxis.get_major_locator().set_params(integer=True)
    ax_kv.set_ylim(0, 100)
    ax_usd.set_ylim(0, 1.15 * max(1e-9, ts.usd_per_hour.sum(axis=0).max()))
    for ax, ylabel in zip(axes, ("replicas", "requests", "KV used (%)", "$/hour", "requests/s")):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    ax_rate.set_xlabel(f"time (s); sampled every {ts.interval_s:g} s")
    ax_rate.set_xlim(0, ts.horizon_s)
    fig.suptitle(title or "over time")
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.05, top=0.95, hspace=0.12)  # fixed: no tight_layout re-draw
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return Path(path_png)
