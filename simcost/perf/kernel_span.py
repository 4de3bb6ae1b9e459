"""The kernel-table model's decode span (simcost.perf.kernel_model): `num_steps` decode steps of
the same `num_seqs` requests, each adding one token per request, as one kernel call.

Why apart from `kernel_step_time_s`: within a span only the decode context changes, so the token
grid, the LM head and the MoE grid (their inputs are the batch size), the batch axis' position and
the decode grid's logarithms at the current context row are the same at every step. They are
looked up once here (once per context row for the logarithms) instead of per step: the Mooncake
run computes ~4M span steps. Every step's seconds are the same floats as `kernel_step_time_s(p,
base, overhead_s, pipeline_s_per_token, 0, num_seqs, kv + num_seqs, kv, 0)` step after step, and
`count_kernel_steps` adds them and their measured seconds to the model's two accumulators in the
same order as that kernel would (tests/test_kernel_model.py checks this, bit for bit). Counting is
apart because a span can be cut short (an arrival interrupts it): the accumulators count only the
steps a run applies.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from simcost.perf.kernel_model import (
    K_ACC_MEASURED,
    K_ACC_TOTAL,
    K_DP,
    K_EAGER_FLOOR_S,
    K_GRAPH_MAX_TOKENS,
    K_HEADER,
    K_MOE_APART,
    _beyond,
    _grid1,
    _group_share,
    _locate,
    _on_t,
)


@njit(cache=True)
def kernel_span_times_s(p, base, overhead_s, pipeline_s_per_token, num_seqs, kv_tokens_sum, num_steps, measured_s):
    """Seconds of each of `num_steps` decode steps of `num_seqs` requests whose cached tokens sum
    to `kv_tokens_sum` at the first step (kernel_step_time_s's decode-only case, hoisted); each
    step's seconds from measured kernels go to measured_s[step]. Nothing is counted here."""
    out = np.empty(num_steps, dtype=np.float64)
    n = float(num_seqs)
    tokens = 0.0 + n  # as kernel_step_time_s: float(prompt tokens) + float(decode tokens)
    if tokens <= 0.0:
        out[:] = 0.0
        measured_s[:num_steps] = 0.0
        return out
    n_t, n_b, n_c = int(p[base]), int(p[base + 3]), int(p[base + 4])
    n_r, n_s = int(p[base + 1]), int(p[base + 2])
    none = num_seqs - num_seqs  # no prompt tokens or requests, as int64s: literal 0s would compile _group_share twice
    g_tokens, g_decode, g_requests = _group_share(p[base + K_DP], none, num_seqs, none)
    t_axis = base + K_HEADER
    fixed, fixed_measured = _grid1(g_tokens, p, t_axis, n_t)
    head_axis = t_axis + 2 * n_t
    sampled = g_decode + g_requests
    if sampled > 0.0:
        v, mv = _on_t(sampled, p, t_axis, n_t, head_axis + n_t)
        fixed += v
        fixed_measured += mv
    r_axis = head_axis + 3 * n_t
    b_axis = r_axis + n_r + n_s + 2 * n_r * n_s
    moe = p[base + K_MOE_APART] > 0.0
    moe_v = moe_mv = 0.0
    if moe:
        moe_v, moe_mv = _on_t(tokens, p, t_axis, n_t, b_axis + n_b + n_c + 2 * n_b * n_c)
    eager = tokens > p[base + K_GRAPH_MAX_TOKENS]
    floor_s = p[base + K_EAGER_FLOOR_S]
    added_s = overhead_s + pipeline_s_per_token * tokens
    # the decode grid (_grid2 with x = g_decode, y = the context): x's side once
    c_axis = b_axis + n_b
    vals = c_axis + n_c
    shares = vals + n_b * n_c
    i, wx, in_x = _locate(g_decode, p, b_axis, n_b)
    i1 = min(i + 1, n_b - 1)
    beyond_x = _beyond(g_decode, p, b_axis, n_b)
    last_j = -1
    log00 = log10 = log01 = log11 = 0.0
    # the bounds and log-width of row last_j while y stays inside it (y grows by 1 a step): _locate's
    # interior case, the same floats, without its search and its second logarithm per step; both
    # 0.0 (no y inside) when the last located y was off the grid's interior
    y_lo = y_hi = y_log_width = 0.0
    y_first, y_top = p[c_axis], p[c_axis + n_c - 1]
    d = n
    for step in range(num_steps):
        kv = float(kv_tokens_sum) + step * n
        decode_kv = kv * d / (d + 0.0)
        y = decode_kv / d + 1.0
        if y_lo <= y < y_hi and y_first < y:
            j, wy, in_y = last_j, math.log(y / y_lo) / y_log_width, True
        else:
            j, wy, in_y = _locate(y, p, c_axis, n_c)
            y_lo = y_hi = 0.0
            if y_first < y < y_top:  # (never with one row: then y_first == y_top)
                y_lo, y_hi = p[c_axis + j], p[c_axis + j + 1]
                y_log_width = math.log(y_hi / y_lo)
        j1 = min(j + 1, n_c - 1)
        if j != last_j:
            log00 = math.log(p[vals + i * n_c + j])
            log10 = math.log(p[vals + i1 * n_c + j])
            log01 = math.log(p[vals + i * n_c + j1])
            log11 = math.log(p[vals + i1 * n_c + j1])
            last_j = j
        lv = ((1 - wx) * (1 - wy) * log00 + wx * (1 - wy) * log10 + (1 - wx) * wy * log01 + wx * wy * log11)
        share = ((1 - wx) * (1 - wy) * p[shares + i * n_c + j] + wx * (1 - wy) * p[shares + i1 * n_c + j]
                 + (1 - wx) * wy * p[shares + i * n_c + j1] + wx * wy * p[shares + i1 * n_c + j1])
        v = math.exp(lv) * beyond_x * _beyond(y, p, c_axis, n_c)
        total = fixed + v
        measured = fixed_measured + (v * share if (in_x and in_y) else 0.0)
        if moe:
            total += moe_v
            measured += moe_mv
        if eager:
            total = max(total, floor_s)
        total += added_s
        measured_s[step] = measured
        out[step] = total
    return out


@njit(cache=True)
def count_kernel_steps(p, base, times_s, measured_s, first, end):
    """Steps first..end-1 of a span (kernel_span_times_s's two arrays) into the model's
    accumulators, one step after another as kernel_step_time_s adds its own."""
    for step in range(first, end):
        p[base + K_ACC_TOTAL] += times_s[step]
        p[base + K_ACC_MEASURED] += measured_s[step]
