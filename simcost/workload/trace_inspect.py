"""`simcost trace inspect`: what a capacity planner needs to know about a trace before simulating it.

`inspect_trace` reduces a `simcost.workload.traces.Trace` to plain numbers (JSON-ready; None where a number
does not exist, never NaN): load (rate, rate per time bin), burstiness (inter-arrival CV and the
index of dispersion of per-bin counts, both 1 for a stationary Poisson stream), token lengths,
sessions and tenants when the trace has them, and the prefix-reuse upper bound when it carries
prefix-block hashes. `format_inspection` prints it; `plot_inspection` draws it.

Spreads are population statistics (ddof=0): they describe this trace, not an estimate of a
process behind it. Per-bin statistics use whole bins only, because a partial last bin would read
as a lull that never happened.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from simcost.errors import InputError
from simcost.files import staged_file
from simcost.scenario.schema import build
from simcost.scenario.workload import TraceColumns
from simcost.workload.traces import Trace, prefix_reuse_fraction

# Bin widths a reader can take in at a glance; the smallest giving at most MAX_AUTO_BINS whole bins.
NICE_BIN_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
              1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
MAX_AUTO_BINS = 60
MAX_BINS = 1_000_000  # a --bin-s typo should not allocate gigabytes
PERCENTILES = (50, 90, 99)
TOP_TENANTS = 5
_SPARK = "_.:-=+*#%@"  # ASCII on purpose: the rest of the CLI output is ASCII too


def parse_columns(text: str) -> TraceColumns:
    """`arrival=t,input_tokens=p,output_tokens=c[,arrival_unit=ms,session=s,tenant=t]` -> TraceColumns,
    checked like the scenario key workload.trace.columns."""
    raw = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError("--columns", f"'{item}' is not of the form key=column "
                                          f"(expected e.g. arrival=t,input_tokens=prompt,output_tokens=completion)")
        raw[key.strip()] = value.strip()
    return build(TraceColumns, raw, "--columns")


def auto_bin_s(span_s: float) -> float | None:
    """Smallest NICE_BIN_S width with at most MAX_AUTO_BINS bins over the span (60 s for an hour)."""
    if span_s <= 0:
        return None
    return float(next((b for b in NICE_BIN_S if span_s / b <= MAX_AUTO_BINS), NICE_BIN_S[-1]))


def inspect_trace(trace: Trace, bin_s: float | None = None) -> dict:
    """The trace as plain numbers; `bin_s` None chooses the rate bin with `auto_bin_s`."""
    n = len(trace)
    span_s = float(trace.arrival_s[-1] - trace.arrival_s[0]) if n else 0.0
    bin_s = auto_bin_s(span_s) if bin_s is None else _checked_bin_s(float(bin_s), span_s)
    return {
        "source": trace.source,
        "requests": n,
        "span_s": span_s,
        "mean_rate_per_s": n / span_s if span_s > 0 else None,
        "input_tokens_per_s": float(trace.input_tokens.sum()) / span_s if span_s > 0 else None,
        "output_tokens_per_s": float(trace.output_tokens.sum()) / span_s if span_s > 0 else None,
        "rate": _rate_bins(trace.arrival_s - trace.arrival_s[0], span_s, bin_s),
        "gaps": _gaps(np.diff(trace.arrival_s)),
        "input_tokens": _lengths(trace.input_tokens),
        "output_tokens": _lengths(trace.output_tokens),
        "spearman_input_output": _spearman(trace.input_tokens, trace.output_tokens),
        "sessions": _sessions(trace.session_ids),
        "tenants": _tenants(trace.tenants),
        "prefix": _prefix(trace),
    }


def _checked_bin_s(bin_s: float, span_s: float) -> float:
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise InputError("--bin-s", f"{bin_s:g}; expected a number of seconds > 0")
    if span_s / bin_s > MAX_BINS:
        raise InputError("--bin-s", f"{bin_s:g} s makes {span_s / bin_s:,.0f} bins over {span_s:,.1f} s; "
                                    f"expected at most {MAX_BINS:,}")
    return bin_s


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _rate_bins(t_s: np.ndarray, span_s: float, bin_s: float | None) -> dict:
    """Requests per bin of width bin_s from the first arrival; the last bin may be partial (its
    width is last_bin_s) and is left out of peak, min and dispersion."""
    if bin_s is None:
        return {"bin_s": None, "requests_per_bin": [], "last_bin_s": None, "whole_bins": 0, "peak_per_s": None,
                "min_per_s": None, "peak_to_mean": None, "count_cv": None, "poisson_count_cv": None,
                "index_of_dispersion": None}
    whole = int(span_s // bin_s)
    edges = np.arange(whole + 1) * bin_s
    if span_s > edges[-1]:
        edges = np.append(edges, span_s)
    counts = np.histogram(t_s, bins=edges)[0] if len(edges) > 1 else np.array([len(t_s)])
    full = counts[:whole].astype(float)
    mean_count = full.mean() if whole else 0.0
    return {
        "bin_s": bin_s,
        "requests_per_bin": counts.tolist(),
        "last_bin_s": float(edges[-1] - edges[-2]) if len(edges) > 1 else 0.0,
        "whole_bins": whole,
        "peak_per_s": float(full.max()) / bin_s if whole else None,
        "min_per_s": float(full.min()) / bin_s if whole else None,
        "peak_to_mean": _ratio(float(full.max()), mean_count) if whole else None,
        # Poisson counts have variance == mean, so CV 1/sqrt(mean) and dispersion 1; more is burstier.
        "count_cv": _ratio(float(full.std()), mean_count) if whole > 1 else None,
        "poisson_count_cv": 1 / math.sqrt(mean_count) if whole > 1 and mean_count > 0 else None,
        "index_of_dispersion": _ratio(float(full.var()), mean_count) if whole > 1 else None,
    }


def _gaps(gaps_s: np.ndarray) -> dict:
    """Inter-arrival gaps. Zero gaps are counted apart: many of them mean timestamps come in
    batches (coarse clock or batched logging), which a replay turns into simultaneous arrivals."""
    if not len(gaps_s):
        return {"mean_s": None, "cv": None, "p50_s": None, "p99_s": None, "zero_gaps": 0, "distinct_arrival_times": 1}
    mean_s = float(gaps_s.mean())
    p50_s, p99_s = np.percentile(gaps_s, (50, 99))
    return {"mean_s": mean_s, "cv": _ratio(float(gaps_s.std()), mean_s), "p50_s": float(p50_s), "p99_s": float(p99_s),
            "zero_gaps": int(np.count_nonzero(gaps_s == 0)),
            "distinct_arrival_times": int(np.count_nonzero(gaps_s > 0)) + 1}


def _lengths(tokens: np.ndarray) -> dict:
    out = {"mean": float(tokens.mean())}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(tokens, PERCENTILES))})
    out["max"] = int(tokens.max())
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Rank correlation: long prompts with long answers make batches heavier than independent draws."""
    if len(x) < 2 or x.min() == x.max() or y.min() == y.max():
        return None  # undefined for a constant column
    from scipy.stats import spearmanr  # lazy: scipy.stats takes a while to import

    return float(spearmanr(x, y).statistic)


def _sessions(session_ids: np.ndarray | None) -> dict | None:
    if session_ids is None:
        return None
    turns = np.unique(session_ids, return_counts=True)[1]
    return {"count": len(turns), "turns_mean": float(turns.mean()), "turns_max": int(turns.max())}


def _tenants(tenants: np.ndarray | None) -> dict | None:
    if tenants is None:
        return None
    names, counts = np.unique(tenants, return_counts=True)
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:TOP_TENANTS]
    return {"count": len(names),
            "top": [{"tenant": str(names[i]), "share": float(counts[i]) / len(tenants)} for i in order]}


def _prefix(trace: Trace) -> dict | None:
    if trace.block_ids is None:
        return None
    return {"block_tokens": trace.block_tokens, "block_refs": len(trace.block_ids),
            "distinct_blocks": len(np.unique(trace.block_ids)),
            "reuse_upper_bound": prefix_reuse_fraction(trace)}


# --- terminal -------------------------------------------------------------------------------

def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.3g} s"


def sparkline(counts: list[int], width: int = MAX_AUTO_BINS) -> str:
    """Per-bin counts as one ASCII line scaled from 0 to the peak (bins merged to fit `width`)."""
    if not counts or max(counts) == 0:
        return ""
    groups = np.array_split(np.asarray(counts, dtype=float), min(width, len(counts)))
    means = np.array([g.mean() for g in groups])
    levels = np.minimum((means / means.max() * len(_SPARK)).astype(int), len(_SPARK) - 1)
    return "".join(_SPARK[k] for k in levels)


def format_inspection(info: dict) -> str:
    """The report printed by `simcost trace inspect`: one aligned label (with units) per line."""
    rate, gaps = info["rate"], info["gaps"]
    rows = [("requests", f"{info['requests']:,}"),
            ("span", f"{info['span_s']:,.1f} s ({_duration(info['span_s'])})"),
            ("mean rate (req/s)", _num(info["mean_rate_per_s"], ",.3f")),
            ("token demand (tok/s)", f"{_num(info['input_tokens_per_s'], ',.0f')} input, "
                                     f"{_num(info['output_tokens_per_s'], ',.0f')} output")]
    rows += _rate_rows(rate) + _gap_rows(gaps, info["requests"])
    heads = ["mean"] + [f"p{p}" for p in PERCENTILES] + ["max"]
    table = {name: [f"{v:,.0f}" for v in [info[name]["mean"]] + [info[name][f"p{p}"] for p in PERCENTILES]
                    + [info[name]["max"]]] for name in ("input_tokens", "output_tokens")}
    width = max(10, 2 + max(len(cell) for cells in table.values() for cell in cells))  # columns never touch
    rows += [("", ""), ("tokens per request", "".join(f"{h:>{width}}" for h in heads))]
    for name, cells in table.items():
        rows.append((f"  {name.removesuffix('_tokens')}", "".join(f"{cell:>{width}}" for cell in cells)))
    rows.append(("  Spearman(input, output)", _num(info["spearman_input_output"], ".3f")))
    rows += [("", "")] + _group_rows(info)
    return "\n".join(_align(info["source"], rows))


def _rate_rows(rate: dict) -> list[tuple]:
    if rate["bin_s"] is None:
        return [("rate over time", "- (all requests arrive at once)")]
    label = f"per {rate['bin_s']:g} s bin"
    if not rate["whole_bins"]:
        return [(f"rate {label}", "- (no whole bin: the span is shorter; try a smaller --bin-s)")]
    partial = f", last {rate['last_bin_s']:.3g} s left out" if rate["whole_bins"] < len(rate["requests_per_bin"]) else ""
    return [
        (f"rate {label} (req/s)", f"peak {_num(rate['peak_per_s'], ',.3f')}, min {_num(rate['min_per_s'], ',.3f')}, "
                                  f"peak/mean {_num(rate['peak_to_mean'], '.2f')} ({rate['whole_bins']} whole bins{partial})"),
        (f"requests {label}", f"CV {_num(rate['count_cv'], '.3f')} (Poisson {_num(rate['poisson_count_cv'], '.3f')}), "
                              f"index of dispersion {_num(rate['index_of_dispersion'], '.2f')} (Poisson 1)"),
        ("rate over time", f"|{sparkline(rate['requests_per_bin'][:rate['whole_bins']])}| whole bins, 0 to peak"),
    ]


def _gap_rows(gaps: dict, requests: int) -> list[tuple]:
    rows = [("inter-arrival gap (s)", f"mean {_num(gaps['mean_s'], '.4g')}, CV {_num(gaps['cv'], '.3f')} (Poisson 1), "
                                      f"p50 {_num(gaps['p50_s'], '.4g')}, p99 {_num(gaps['p99_s'], '.4g')}")]
    if gaps["zero_gaps"]:
        rows.append(("same-time arrivals", f"{gaps['zero_gaps']:,} zero gaps; {requests:,} requests at "
                                           f"{gaps['distinct_arrival_times']:,} distinct times"))
    return rows


def _group_rows(info: dict) -> list[tuple]:
    sessions, tenants, prefix = info["sessions"], info["tenants"], info["prefix"]
    rows = [("sessions", "- (no session column)" if sessions is None else
             f"{sessions['count']:,}; turns per session mean {sessions['turns_mean']:.2f}, max {sessions['turns_max']:,}"),
            ("tenants", "- (no tenant column)" if tenants is None else
             f"{tenants['count']:,}; top " + ", ".join(f"{t['tenant']} {t['share']:.1%}" for t in tenants["top"]))]
    if prefix is None:
        return rows + [("prefix blocks", "- (no block hashes)")]
    return rows + [
        (f"prefix blocks ({prefix['block_tokens']} tokens)", f"{prefix['block_refs']:,} references, "
                                                            f"{prefix['distinct_blocks']:,} distinct"),
        ("prefix reuse upper bound", f"{prefix['reuse_upper_bound']:.1%} of block references seen before "
                                     f"(infinite cache)")]


def _align(source: str, rows: list[tuple]) -> list[str]:
    """`label  value` lines with every value starting in the same column."""
    width = max(len(label) for label, _ in rows) + 2
    return [f"trace {source}"] + [f"{label:<{width}}{value}".rstrip() for label, value in rows]


# --- files ----------------------------------------------------------------------------------

def write_json(info: dict, path: Path) -> Path:
    with staged_file(path, "--json") as tmp:
        tmp.write_text(_compact_lists(json.dumps(info, indent=1)) + "\n")
    return path


def _compact_lists(text: str) -> str:
    """Lists of plain numbers on one line: the per-bin counts would otherwise take a line each."""
    return re.sub(r"\[[-+.\deE,\s]*\]", lambda m: json.dumps(json.loads(m.group())), text)


def plot_inspection(trace: Trace, info: dict, path: Path) -> Path:
    """PNG: rate over time, inter-arrival gap histogram (log x), input and output token histograms."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers or in CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    _plot_rate(axes[0, 0], info)
    _plot_gaps(axes[0, 1], np.diff(trace.arrival_s), info["gaps"])
    for ax, name in zip(axes[1], ("input_tokens", "output_tokens")):
        _plot_tokens(ax, getattr(trace, name), info[name], name.replace("_", " "))
    fig.suptitle(f"{info['source']}: {info['requests']:,} requests over {_duration(info['span_s'])}")
    fig.tight_layout()
    try:
        with staged_file(path, "--plot") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def _time_axis(span_s: float) -> tuple[str, float]:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if span_s >= 2 * size:
            return unit, size
    return "s", 1.0


def _plot_rate(ax, info: dict) -> None:
    """Whole bins only, as in the statistics: a short last bin would show a spike or a dip of noise."""
    rate = info["rate"]
    if rate["bin_s"] is None:
        ax.text(0.5, 0.5, "all requests at one instant", ha="center", transform=ax.transAxes)
        return
    unit, size = _time_axis(info["span_s"])
    shown = rate["whole_bins"] or 1  # no whole bin (--bin-s beyond the span): the one partial bin
    width_s = rate["bin_s"] if rate["whole_bins"] else rate["last_bin_s"] or rate["bin_s"]
    counts = np.asarray(rate["requests_per_bin"][:shown], dtype=float)
    ax.stairs(counts / width_s, np.arange(shown + 1) * width_s / size, baseline=None)
    if info["mean_rate_per_s"] is not None:
        ax.axhline(info["mean_rate_per_s"], color="tab:red", linestyle="--",
                   label=f"mean {info['mean_rate_per_s']:.3g}/s")
        ax.legend(loc="lower right")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel(f"requests/s per {width_s:g} s bin")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _hist(ax, values: np.ndarray) -> None:
    """Histogram on a log x axis when the values span more than a decade (lengths, gaps usually do)."""
    lo, hi = float(values.min()), float(values.max())
    if lo > 0 and hi > 10 * lo:
        ax.hist(values, bins=np.geomspace(lo, hi * 1.0001, 50))
        ax.set_xscale("log")
    else:
        ax.hist(values, bins=50 if hi > lo else 1)


def _plot_gaps(ax, gaps_s: np.ndarray, stats: dict) -> None:
    positive = gaps_s[gaps_s > 0]
    if len(positive):
        _hist(ax, positive)
    zero = f", {stats['zero_gaps']:,} zero gaps not shown" if stats["zero_gaps"] else ""
    ax.set_title(f"CV {_num(stats['cv'], '.2f')} (Poisson 1){zero}", fontsize=9)
    ax.set_xlabel("inter-arrival gap (s)")
    ax.set_ylabel("gaps")
    ax.grid(alpha=0.3, which="both")


def _plot_tokens(ax, tokens: np.ndarray, stats: dict, label: str) -> None:
    _hist(ax, tokens)
    for p, style in zip(PERCENTILES, (":", "--", "-")):
        ax.axvline(stats[f"p{p}"], color="tab:red", linestyle=style, label=f"p{p} {stats[f'p{p}']:,.0f}")
    ax.set_xlabel(f"{label} per request")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
