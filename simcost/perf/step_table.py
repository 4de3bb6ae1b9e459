"""The table-driven step-time model (`perf.model: table`): measured step times, interpolated.

For users with dense measurements of their own engine. The table is read from the layouts
`simcost calibrate` reads (Splitwise's profiling CSV or the generic one), at the scenario's
tensor-parallel degree, and packed after the roofline's parameters (which stay, so that workload
items are still timed at the device's roofline) so that the numba kernels can walk it:

- prefill: time by the step's prompt tokens, piecewise linear between measured totals (settings
  with the same total, e.g. 1 x 1024 and 2 x 512, are averaged); below the smallest total the
  smallest time (a step never costs less than its weight reads); above the largest, proportional
  to tokens (prefill is compute-bound there).
- decode: time by batch size b and mean cached context c per request. Each measured batch size
  keeps its own context series (piecewise linear); the cost of context beyond a series' range
  (either side) follows the pooled slope of time against cached tokens read (b x c),
  the KV-read cost, fitted by least squares over the series with two or more contexts (0 when
  none). Between batch sizes, linear in b; beyond the largest, the last two batch sizes' slope
  per request continues (0 slope if only one).
- a step with both (chunked prefill): the prefill time of all its tokens plus the KV-read cost
  of the decoders' cached tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

__all__ = ["pack_table", "table_step_time_s", "table_step_time_s_py", "T_HEADER"]

# Layout after the roofline's parameters (offset `base`):
#   base + 0: number of prefill points nP; base + 1: number of decode batch sizes nB;
#   base + 2: KV-read slope (seconds per cached token read); then nP token totals, nP times;
#   then for each batch size: b, n contexts, n contexts, n times.
T_HEADER = 3


def pack_table(base_params: np.ndarray, prefill: Sequence[tuple[float, float]],
               decode: Sequence[tuple[float, float, float]]) -> np.ndarray:
    """`base_params` followed by the table. `prefill`: (tokens, seconds); `decode`: (batch size,
    mean context per request, seconds). Repeated keys are averaged."""
    totals: dict[float, list[float]] = {}
    for tokens, s in prefill:
        totals.setdefault(float(tokens), []).append(s)
    prefill_tokens = np.array(sorted(totals))
    prefill_s = np.array([np.mean(totals[t]) for t in prefill_tokens])
    series: dict[float, dict[float, list[float]]] = {}
    for b, c, s in decode:
        series.setdefault(float(b), {}).setdefault(float(c), []).append(s)
    out = [np.asarray(base_params, dtype=np.float64),
           np.array([len(prefill_tokens), len(series), kv_read_slope(series)]), prefill_tokens, prefill_s]
    for b in sorted(series):
        contexts = np.array(sorted(series[b]))
        out += [np.array([b, len(contexts)]), contexts, np.array([np.mean(series[b][c]) for c in contexts])]
    return np.concatenate(out)


def kv_read_slope(series: dict[float, dict[float, list[float]]]) -> float:
    """Pooled least-squares slope of step time against cached tokens read (b x c), within each
    batch size (each series centred on its own mean), clipped at 0."""
    num = den = 0.0
    for b, by_context in series.items():
        if len(by_context) < 2:
            continue
        x = np.array([b * c for c in by_context])
        y = np.array([np.mean(v) for v in by_context.values()])
        num += float(((x - x.mean()) * (y - y.mean())).sum())
        den += float(((x - x.mean()) ** 2).sum())
    return max(num / den, 0.0) if den > 0 else 0.0


# --- kernel ---------------------------------------------------------------------------------

@njit(cache=True)
def _interp_clamped(x, xs_start, n, p):
    """Piecewise linear through (p[xs_start + i], p[xs_start + n + i]), clamped at both ends."""
    if n == 1 or x <= p[xs_start]:
        return p[xs_start + n]
    for i in range(1, n):
        x1 = p[xs_start + i]
        if x <= x1:
            x0 = p[xs_start + i - 1]
            y0, y1 = p[xs_start + n + i - 1], p[xs_start + n + i]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return p[xs_start + 2 * n - 1]


@njit(cache=True)
def _prefill_s(p, base, tokens):
    n = int(p[base])
    start = base + T_HEADER
    largest = p[start + n - 1]
    if tokens > largest:
        return p[start + 2 * n - 1] * tokens / largest
    return _interp_clamped(tokens, start, n, p)


@njit(cache=True)
def _series_s(p, pos, context, slope):
    """Time of the batch-size series at `pos` (b, n, contexts, times) at `context`."""
    b, n = p[pos], int(p[pos + 1])
    lo, hi = p[pos + 2], p[pos + 1 + n]
    clamped = min(max(context, lo), hi)
    return _interp_clamped(clamped, pos + 2, n, p) + slope * b * (context - clamped)


@njit(cache=True)
def _decode_s(p, base, batch, context):
    n_prefill, n_batches, slope = int(p[base]), int(p[base + 1]), p[base + 2]
    pos = base + T_HEADER + 2 * n_prefill
    prev_pos, prev_b, prev_s = -1, 0.0, 0.0
    for _ in range(n_batches):
        b = p[pos]
        s = _series_s(p, pos, context, slope)
        if batch <= b:
            if prev_pos < 0:
                return s  # below the smallest batch size measured
            return prev_s + (s - prev_s) * (batch - prev_b) / (b - prev_b)
        prev_pos, prev_b, prev_s = pos, b, s
        pos += 2 + 2 * int(p[pos + 1])
    # beyond the largest: the last two batch sizes' slope per request continues
    if n_batches == 1:
        return prev_s
    return prev_s + max(prev_s - _last_but_one_s(p, base, context, slope), 0.0) / (prev_b - _last_but_one_b(p, base)) * (batch - prev_b)


@njit(cache=True)
def _last_but_one_pos(p, base):
    n_prefill, n_batches = int(p[base]), int(p[base + 1])
    pos = base + T_HEADER + 2 * n_prefill
    for _ in range(n_batches - 2):
        pos += 2 + 2 * int(p[pos + 1])
    return pos


@njit(cache=True)
def _last_but_one_b(p, base):
    return p[_last_but_one_pos(p, base)]


@njit(cache=True)
def _last_but_one_s(p, base, context, slope):
    return _series_s(p, _last_but_one_pos(p, base), context, slope)


@njit(cache=True)
def table_step_time_s(p, base, num_prefill_tokens, num_decode_tokens, kv_read_tokens):
    tokens = float(num_prefill_tokens) + float(num_decode_tokens)
    if tokens <= 0.0:
        return 0.0
    if num_prefill_tokens > 0:
        return _prefill_s(p, base, tokens) + p[base + 2] * float(kv_read_tokens)
    return _decode_s(p, base, float(num_decode_tokens), float(kv_read_tokens) / float(num_decode_tokens))


# --- plain-Python reference -----------------------------------------------------------------

def table_step_time_s_py(prefill: list[tuple[float, float]], decode: list[tuple[float, float, float]],
                         num_prefill_tokens, num_decode_tokens, kv_read_tokens) -> float:
    """The same rules from the unpacked table, with numpy's interp (written from the docstring)."""
    tokens = num_prefill_tokens + num_decode_tokens
    if tokens <= 0:
        return 0.0
    series: dict[float, dict[float, list[float]]] = {}
    for b, c, s in decode:
        series.setdefault(float(b), {}).setdefault(float(c), []).append(s)
    slope = kv_read_slope(series)
    if num_prefill_tokens > 0:
        totals: dict[float, list[float]] = {}
        for t, s in prefill:
            totals.setdefault(float(t), []).append(s)
        xs = sorted(totals)
        ys = [float(np.mean(totals[x])) for x in xs]
        base_s = ys[-1] * tokens / xs[-1] if tokens > xs[-1] else float(np.interp(tokens, xs, ys))
        return base_s + slope * kv_read_tokens
    batch, context = float(num_decode_tokens), kv_read_tokens / num_decode_tokens

    def at(b):
        cs = sorted(series[b])
        ys = [float(np.mean(series[b][c])) for c in cs]
        clamped = min(max(context, cs[0]), cs[-1])
        return float(np.interp(clamped, cs, ys)) + slope * b * (context - clamped)

    sizes = sorted(series)
    if batch <= sizes[0]:
        return at(sizes[0])
    if batch > sizes[-1]:
        if len(sizes) == 1:
            return at(sizes[-1])
        per_request = max(at(sizes[-1]) - at(sizes[-2]), 0.0) / (sizes[-1] - sizes[-2])
        return at(sizes[-1]) + per_request * (batch - sizes[-1])
    return float(np.interp(batch, sizes, [at(b) for b in sizes]))
