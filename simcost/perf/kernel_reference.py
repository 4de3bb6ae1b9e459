"""The plain-Python reference of the kernel-table step model's numba kernel
(simcost.perf.kernel_model.kernel_step_time_s), written from that module's docstring rules with
numpy's interp on the unpacked grids; the tests compare the two."""

from __future__ import annotations

import numpy as np

import simcost.portable_math as pmath
from simcost.perf.kernel_model import K_DP, K_EAGER_FLOOR_S, K_GRAPH_MAX_TOKENS, K_HEADER, K_MOE_APART


def unpack_grids(p: np.ndarray, base: int) -> dict[str, np.ndarray]:
    """The grids of a packed kernels model, by name (axes and 2-D arrays)."""
    n_t, n_r, n_s, n_b, n_c = (int(v) for v in p[base:base + 5])
    pos = base + K_HEADER
    out: dict[str, np.ndarray] = {}
    moe = n_t if p[base + K_MOE_APART] > 0 else 0
    for name, size in (("tokens", n_t), ("linear_s", n_t), ("linear_share", n_t), ("head_s", n_t),
                       ("head_share", n_t), ("r", n_r), ("s", n_s), ("prefill_s", n_r * n_s),
                       ("prefill_share", n_r * n_s), ("b", n_b), ("c", n_c), ("decode_s", n_b * n_c),
                       ("decode_share", n_b * n_c), ("moe_s", moe), ("moe_share", moe)):
        out[name] = np.array(p[pos:pos + size])
        pos += size
    for name, shape in (("prefill", (n_r, n_s)), ("decode", (n_b, n_c))):
        out[f"{name}_s"] = out[f"{name}_s"].reshape(shape)
        out[f"{name}_share"] = out[f"{name}_share"].reshape(shape)
    return out


def _loglog_edge(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """np.interp in log-log space, clamped below, scaled linearly above."""
    y = float(pmath.exp(np.interp(pmath.log(min(max(x, xs[0]), xs[-1])), pmath.log(xs), pmath.log(ys))))
    return y * x / xs[-1] if x > xs[-1] else y


def _on_grid(x: float, xs: np.ndarray, values: np.ndarray, shares: np.ndarray) -> tuple[float, float]:
    v = _loglog_edge(x, xs, values)
    inside = xs[0] <= x <= xs[-1]
    share = float(np.interp(pmath.log(min(max(x, xs[0]), xs[-1])), pmath.log(xs), shares))
    return v, v * share if inside else 0.0


def _on_grid2(x: float, y: float, xs: np.ndarray, ys: np.ndarray, values: np.ndarray, shares: np.ndarray
              ) -> tuple[float, float]:
    """Log-log along y for every x row, then along x (bilinear in log space)."""
    rows = np.array([_loglog_edge(y, ys, values[i]) for i in range(len(xs))])
    row_shares = np.array([_on_grid(y, ys, values[i], shares[i])[1] / rows[i] for i in range(len(xs))])
    v = _loglog_edge(x, xs, rows)
    share = float(np.interp(pmath.log(min(max(x, xs[0]), xs[-1])), pmath.log(xs), row_shares))
    return v, v * share if xs[0] <= x <= xs[-1] else 0.0


def kernel_step_time_s_py(p: np.ndarray, base: int, overhead_s: float, pipeline_s_per_token: float,
                          num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                          num_prefill_requests) -> tuple[float, float]:
    """(step seconds, of them measured) from the module docstring's rules, with numpy's interp on
    the unpacked grids; does not touch the accumulator slots."""
    tokens = num_prefill_tokens + num_decode_tokens
    if tokens <= 0:
        return 0.0, 0.0
    g = unpack_grids(p, base)
    dp = float(p[base + K_DP])
    # the busiest data-parallel attention group: 1/dp of the sequences and of the prompts, at least
    # one of each kind present, with those prompts' tokens
    group_decode, group_requests = float(num_decode_tokens), float(num_prefill_requests)
    group_tokens = float(tokens)
    if dp != 1.0:
        group_decode = max(num_decode_tokens / dp, 1.0) if num_decode_tokens > 0 else 0.0
        group_requests = max(num_prefill_requests / dp, 1.0) if num_prefill_requests > 0 else 0.0
        prompt = (num_prefill_tokens * group_requests / num_prefill_requests if num_prefill_requests > 0
                  else num_prefill_tokens / dp)
        group_tokens = max(prompt + group_decode, 1.0)
    total, measured = _on_grid(group_tokens, g["tokens"], g["linear_s"], g["linear_share"])
    sampled = group_decode + group_requests
    if sampled > 0:
        v, mv = _on_grid(sampled, g["tokens"], g["head_s"], g["head_share"])
        total, measured = total + v, measured + mv
    decode_kv = 0.0
    if num_decode_tokens > 0:
        decode_kv = kv_read_tokens * num_decode_tokens / (num_decode_tokens + num_prefill_requests)
        v, mv = _on_grid2(group_decode, decode_kv / num_decode_tokens + 1.0, g["b"], g["c"],
                          g["decode_s"], g["decode_share"])
        total, measured = total + v, measured + mv
    if num_prefill_tokens > 0 and num_prefill_requests > 0:
        pairs = max(attn_token_pairs - decode_kv - num_decode_tokens, num_prefill_tokens)
        s = (np.sqrt(1.0 + 8.0 * pairs / num_prefill_requests) - 1.0) / 2.0
        v, mv = _on_grid2(group_requests, max(s, 1.0), g["r"], g["s"], g["prefill_s"],
                          g["prefill_share"])
        total, measured = total + v, measured + mv
    if len(g["moe_s"]):
        v, mv = _on_grid(tokens, g["tokens"], g["moe_s"], g["moe_share"])
        total, measured = total + v, measured + mv
    if tokens > p[base + K_GRAPH_MAX_TOKENS]:
        total = max(total, p[base + K_EAGER_FLOOR_S])
    return total + overhead_s + pipeline_s_per_token * tokens, measured
