"""Latency-versus-spend frontier of sweep results.

A point (spend, latency) is *dominated* when another point is no worse in both and strictly
better in one: spend' <= spend and latency' <= latency with at least one strict. The frontier
(Pareto set) is every point that is not dominated. Conventions:

- exact duplicates (equal spend and equal latency) do not dominate each other, so all copies of
  a frontier point are kept;
- a point whose latency or spend is undefined (NaN, None, empty CSV cell) is never on the
  frontier and dominates nothing; +/-inf are ordinary (comparable) numbers.

Rows are sweep rows as `simcost sweep` or experiments/batching_sweep.py write them (dicts from
sweep.json, or from sweep.csv where every value is a string). Any latency column works
(p50_ttft_s, p99_ttft_s, p99_tpot_s, p99_e2el_s, ...) and any spend column (usd_per_hour,
usd_per_1m_output_tokens, ...); `usd_per_month` is derived as usd_per_hour x 730 when a row lacks it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from simcost.errors import InputError, closest
from simcost.units import HOURS_PER_MONTH

LABELS = {
    "usd_per_hour": "fleet $/hour", "usd_per_month": "fleet $/month",
    "usd_per_1m_output_tokens": "$ per 1M output tokens", "usd_per_request": "$ per request",
}


def pareto_mask(latency, spend) -> np.ndarray:
    """Boolean mask of the points not dominated in (spend, latency), both to be minimised.

    O(n log n): sort by spend then latency; within a group of equal spend only the lowest latency
    can survive, and it survives when it beats the best latency of every strictly cheaper group."""
    lat = np.asarray(latency, dtype=float)
    sp = np.asarray(spend, dtype=float)
    if lat.shape != sp.shape or lat.ndim != 1:
        raise ValueError(f"latency and spend must be 1-d and the same length, got {lat.shape} and {sp.shape}")
    mask = np.zeros(lat.shape, dtype=bool)
    idx = np.flatnonzero(~np.isnan(lat) & ~np.isnan(sp))
    if not len(idx):
        return mask
    idx = idx[np.lexsort((lat[idx], sp[idx]))]
    s, y = sp[idx], lat[idx]
    starts = np.r_[True, s[1:] != s[:-1]]  # first (lowest-latency) point of each equal-spend group
    group = np.cumsum(starts) - 1
    best = y[starts]  # lowest latency per group, groups in increasing spend
    cheaper_best = np.r_[np.inf, np.minimum.accumulate(best)[:-1]]
    survives = best < cheaper_best
    survives[0] = True  # the cheapest group has nothing cheaper (matters when its latency is inf)
    mask[idx] = (y == best[group]) & survives[group]
    return mask


def value(row: dict, key: str) -> float:
    """row[key] as a float; NaN when missing, None or empty. usd_per_month derives from usd_per_hour."""
    v = row.get(key)
    if v is None and key == "usd_per_month":
        return value(row, "usd_per_hour") * HOURS_PER_MONTH
    if v is None or v == "":
        return math.nan
    return float(v)


def columns(rows: list[dict], latency_key: str, spend_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The latency and spend columns of rows as float arrays; an unknown key is an InputError."""
    known = set().union(*rows) | ({"usd_per_month"} if any("usd_per_hour" in r for r in rows) else set())
    for where, key in (("latency_key", latency_key), ("spend_key", spend_key)):
        if rows and key not in known:
            raise InputError(where, f"no row has {key!r}{closest(key, known)}")
    lat = np.array([value(r, latency_key) for r in rows], dtype=float)
    sp = np.array([value(r, spend_key) for r in rows], dtype=float)
    return lat, sp


def frontier(rows: list[dict], latency_key: str = "p99_ttft_s", spend_key: str = "usd_per_hour") -> list[dict]:
    """The rows on the latency-versus-spend frontier, cheapest first (ties by latency, then input order)."""
    lat, sp = columns(rows, latency_key, spend_key)
    keep = np.flatnonzero(pareto_mask(lat, sp))
    keep = keep[np.lexsort((keep, lat[keep], sp[keep]))]
    return [rows[i] for i in keep]


def wide(values: np.ndarray) -> bool:
    """Log scale when the finite values are positive and span more than 10x."""
    v = values[np.isfinite(values)]
    return len(v) > 1 and v.min() > 0 and v.max() / v.min() > 10


def plot_frontier(rows: list[dict], latency_key: str = "p99_ttft_s", spend_key: str = "usd_per_hour",
                  slo_limit_s: float | None = None, path: Path | str = "frontier.png",
                  label_key: str | None = None, title: str | None = None) -> Path:
    """frontier.png: `frontier_figure`, saved."""
    from simcost.results.plots import save

    return save(frontier_figure(rows, latency_key, spend_key, slo_limit_s, label_key, title), path)


def frontier_figure(rows: list[dict], latency_key: str = "p99_ttft_s", spend_key: str = "usd_per_hour",
                    slo_limit_s: float | None = None, label_key: str | None = None, title: str | None = None) -> Any:
    """Latency against spend: frontier points filled and joined by a step line, dominated points
    hollow and light, the SLO limit as a horizontal line; log axes (when the values span more
    than 10x) in plain numbers, latency in ms or s, points labelled `key=value`."""
    from simcost.results.plots import plain_number, pyplot, readable_log_axis, short_key, time_unit

    plt = pyplot()
    lat, sp = columns(rows, latency_key, spend_key)
    unit, scale = time_unit(float(np.nanmax(np.r_[lat[np.isfinite(lat)], slo_limit_s or np.nan, -np.inf])))
    lat = lat * scale
    slo = None if slo_limit_s is None else slo_limit_s * scale
    on = pareto_mask(lat, sp)
    ok = np.isfinite(lat) & np.isfinite(sp)  # what can be drawn
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    log_x, log_y = wide(sp[ok]), wide(np.r_[lat[ok], slo if slo is not None else np.nan])
    if log_x:  # scales first, so the limits read below are final
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    dom = ok & ~on
    if dom.any():
        ax.scatter(sp[dom], lat[dom], facecolors="none", edgecolors="tab:gray", alpha=0.5, label="dominated", zorder=2)
    if slo is not None:
        ax.axhline(slo, color="tab:red", linestyle="--", label=f"SLO {plain_number(slo)} {unit}")
    f = np.flatnonzero(on & ok)
    f = f[np.lexsort((lat[f], sp[f]))]
    if len(f):
        ax.scatter(sp[f], lat[f], color="tab:blue", zorder=3, label="frontier")
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        xs, ys = np.r_[sp[f], x1], np.r_[lat[f], lat[f][-1]]  # the staircase runs to the right edge
        ax.step(xs, ys, where="post", color="tab:blue", alpha=0.7, zorder=2)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    if label_key:
        for i in np.flatnonzero(ok):
            ax.annotate(f"{short_key(label_key)}={rows[i].get(label_key)}", (sp[i], lat[i]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xlabel(LABELS.get(spend_key, spend_key))
    ax.set_ylabel(latency_key.removesuffix("_s").replace("_", " ").upper().replace("P", "p", 1) + f" ({unit})")
    for which, log in (("x", log_x), ("y", log_y)):
        if log:
            readable_log_axis(ax, which)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(title or f"latency-vs-spend frontier ({int(on.sum())} of {len(rows)} points)")
    fig.tight_layout()
    return fig
