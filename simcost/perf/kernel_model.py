"""The kernel-table step model (`perf: {model: kernels}`): a step is the sum of its operators'
measured latencies (simcost.perf.kernel_tables), precomputed per deployment onto grids that the
numba kernel interpolates, so a step costs a few log/exp calls.

Per step of P prompt tokens (from r requests) and D decode tokens, m = P + D:
- per layer: the QKV, output, gate/up and down GEMMs at m tokens (n, k as sharded over TP), two
  all-reduces of m x hidden bf16 values (vLLM custom all-reduce; CUDA-graph backend up to 512
  tokens, eager above), the fused MoE layer instead of gate/up/down for a mixture of experts
  (simcost.perf.kernel_moe: tensor- or expert-parallel; shared experts and leading dense layers
  as GEMMs) with its router (the gate GEMM from the bf16 table, the top-k selection as a fixed
  cost), and the elementwise work no table holds (norms, residual adds, rotary, SiLU: a
  memory roofline);
- the LM head GEMM once, over the D + r sequences that sample a token;
- prefill attention: r requests of an equivalent prompt length s with r s (s+1)/2 causal pairs
  (those of the step's chunks, a cached prefix included), from the context-attention table;
- decode attention: D requests of mean context c, from the generation-attention table;
- multi-head latent attention (DeepSeek-V3 shapes, simcost.perf.kernel_mla): the measured MLA
  modules replace both attention tables and the QKV and output GEMMs and rotary (the modules
  include them);
- expert parallelism with data-parallel attention over d groups: everything but the MoE layers
  as the busiest group's share (1/d of the decode sequences and of the prompts, at least one of
  each kind present, with those prompts' tokens; the router's gate GEMM with them), the MoE layers,
  their top-k selection and their NCCL gather/scatter at the whole step's tokens;
- a per-step overhead (scheduling, sampling): KERNEL_STEP_OVERHEAD_S unless perf.step_overhead_s
  is set;
- a launch floor for steps that run eagerly (more than min(2 x max_num_seqs, 512) tokens under
  vLLM V1's CUDA graphs, every step with perf.cuda_graphs false): the GPU waits for the CPU to launch its kernels, so
  such a step takes at least layers x perf.eager_s_per_layer (default EAGER_S_PER_LAYER).
A mixed step's decoders are assumed to hold their share D / (D + r) of the cached tokens read.
Shapes the tables lack take that component's roofline with the catalog's mfu and mbu (an MoE
layer not measured, a head_dim or KV-head count not measured), or are derived from the nearest
measured shapes (a query-head count, i.e. a TP degree: log-log in heads between the measured
counts around it or continued from the two nearest, a single measured count scaled by heads;
a GEMM wider than any measured one: as
column blocks of a measured width); points beyond a table's range scale its edge linearly. Both count as not measured: the kernel accumulates total and
measured seconds into two slots of the parameter vector, which the run summary reports as
`step_time_measured_fraction` (a decode span's steps are counted as they are applied:
simcost.perf.kernel_span.count_kernel_steps).

Layout after the step model's named slots (simcost.perf.step_params.NUM_PARAMS = base):
  base + 0..4: nT, nR, nS, nB, nC; base + 5: seconds simulated; base + 6: of them measured;
  base + 7: eager launch floor s; base + 8: largest graph-captured step in tokens (0: none); base + 9: 1 if the
  grids come from another GPU's tables scaled to this device (then 'measured' means 'scaled');
  base + 10: data-parallel attention groups d (1 without); base + 11: 1 if the MoE layers have
  their own grid (d > 1), else they are inside the linear one;
  then T axis, linear s, linear measured share, head s, head measured share (nT each);
  R axis, S axis, prefill-attention s (nR x nS), its measured share; B axis, C axis, decode s
  (nB x nC), its measured share; with base + 11 set, MoE s and its measured share (nT each).
The plain-Python twin of the kernel is simcost.perf.kernel_reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from simcost.catalog.types import BYTES_PER_ELEMENT, DeviceSpec, ModelSpec
from simcost.perf.kernel_mla import mla_decode_roofline_s, mla_grid, mla_prefill_roofline_s, mla_tabled
from simcost.perf.kernel_moe import ExpertParallel, MoeLayer, Rates, moe_grid, router_gate, with_fallback
from simcost.perf.kernel_scaling import tables_for_device, with_derived_rows
from simcost.perf.kernel_tables import (
    CUDA_GRAPH_MAX_TOKENS,
    KernelTables,
    gemms_from_roofline,
    mlp_shapes,
    table_format,
)

K_HEADER = 12
K_ACC_TOTAL, K_ACC_MEASURED, K_EAGER_FLOOR_S, K_GRAPH_MAX_TOKENS, K_SCALED = 5, 6, 7, 8, 9
K_DP, K_MOE_APART = 10, 11
# simcost assumption: vLLM V1's CPU work per step with CUDA graphs (scheduler, input preparation,
# sampling), order of a millisecond; not fitted. Checked, not tuned, against published vLLM 0.11
# runs (docs/fidelity.md 3b): Qwen3-8B on H100 at 1-8 concurrent requests lands within 2-6 % on
# TPOT with it; 1 ms or 2.5 ms would miss by up to 9.5 % or 20 %
KERNEL_STEP_OVERHEAD_S = 0.0015
# simcost assumption: CPU time to launch one decoder layer's kernels eagerly from PyTorch (a dozen
# or so ops at ~30 us of Python and launch each); calibratable as perf.eager_s_per_layer
EAGER_S_PER_LAYER = 0.0004
TOKEN_GRID = np.unique(np.round(2.0 ** (np.arange(0, 18 * 4 + 1) / 4.0)))  # 1 .. 262144 tokens
_FALLBACK_BATCHES = 2.0 ** np.arange(0, 12)
_FALLBACK_LENGTHS = 2.0 ** np.arange(0, 18)


def kernel_tables_for(device: DeviceSpec, weight_format: str, mla: bool = False) -> KernelTables | None:
    """The device's tables, or those of the nearest measured GPU scaled to it (kernel_scaling)."""
    dtype = table_format("gemm", weight_format, mla)
    tables = None if dtype is None else tables_for_device(device)
    return tables if tables is not None and dtype is not None and tables.has("gemm", dtype) else None


def _linear_grid(tables: KernelTables, dtype: str, model: ModelSpec, t: int, weight_b: float, rates: Rates,
                 m: np.ndarray, graph_max_tokens: int = CUDA_GRAPH_MAX_TOKENS, moe: MoeLayer | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-step seconds of everything that scales with the step's tokens, all layers, and its
    measured share (all-reduces of steps up to graph_max_tokens on the CUDA-graph backend).
    `moe`: the MoE layer's grid, added here (None: priced apart, expert parallel with DP attention)."""
    hd, hidden = model.head_dim, model.hidden_size
    kv_heads = max(model.num_kv_heads / t, 1.0)
    heads = model.num_heads / t
    mla = mla_tabled(model)
    # QKV and output projections (inside the measured module for MLA), with their layer weight
    shapes = [] if mla else [((heads + 2 * kv_heads) * hd, hidden, 1.0), (hidden, heads * hd, 1.0)]
    is_moe = model.num_experts > 1
    moe_share = (model.num_layers - model.first_dense_layers) / model.num_layers if is_moe else 0.0
    if not is_moe:
        shapes += [(n, k, 1.0) for n, k in mlp_shapes(model.intermediate_size / t, hidden, model.mlp == "gated")]
    else:
        if model.num_shared_experts:  # always-used experts: a dense MLP beside the routed ones
            shared = model.num_shared_experts * model.intermediate_size / t
            shapes += [(n, k, moe_share) for n, k in mlp_shapes(shared, hidden)]
        if model.first_dense_layers:
            # simcost assumption: a leading dense layer's MLP is (top-k + shared) experts wide,
            # DeepSeek-V3's 18432 = 9 x 2048 (the entry does not record the dense width)
            dense = (model.experts_per_token + model.num_shared_experts) * model.intermediate_size / t
            shapes += [(n, k, 1.0 - moe_share) for n, k in mlp_shapes(dense, hidden)]
    total, measured = np.zeros_like(m), np.zeros_like(m)
    for n, k, layer_share in shapes:
        s, share = with_fallback(*tables.gemm_ms(dtype, m, n, k), rates.gemm_s(m, n, k, weight_b))
        if layer_share != 1.0:
            s = s * layer_share
        total += s
        measured += s * share
    if is_moe:  # the router's gate GEMM, on the tokens this GPU holds (before any dispatch)
        s, share = router_gate(tables, model, rates, m)
        total += s * moe_share
        measured += s * moe_share * share
    if moe is not None:
        s, share = moe.seconds, moe.measured_share
        if moe_share != 1.0:
            s = s * moe_share
        total += s
        measured += s * share
    if t > 1:
        message = m * hidden * 2.0
        # a GPU count the device's own table lacks (GB200's stop at 4) was derived by kernel_params
        # (kernel_scaling.with_gpu_counts) and is looked up as not measured
        ms, inside = tables.allreduce_ms(t, message, m <= graph_max_tokens)
        roof = 10e-6 + 2.0 * (t - 1) / t * message / rates.link_bytes_per_s
        s, share = with_fallback(ms, inside, roof)
        total += 2 * s
        measured += 2 * s * share
    # elementwise work between the kernels: two fused add+RMSNorm (4 passes of hidden each),
    # rotary on q and k (inside the measured module for MLA), SiLU-and-mul (3 passes of the MLP
    # shard, GELU of a plain MLP's 2; inside the fused MoE kernel, not the shared experts' or
    # dense layers')
    elements = 8 * hidden + (0 if mla else 2 * (heads + kv_heads) * hd)
    if not is_moe:
        elements += (3 if model.mlp == "gated" else 2) * model.intermediate_size / t
    elif model.num_shared_experts or model.first_dense_layers:
        elements += 3 * model.intermediate_size / t * (model.num_shared_experts * moe_share + (
            model.experts_per_token + model.num_shared_experts) * (1.0 - moe_share))
    total += m * elements * 2.0 / rates.byte_rate
    return total * model.num_layers, measured * model.num_layers


def _attention_grid(tables: KernelTables, op: str, kv_dtype: str, model: ModelSpec, t: int,
                    roofline) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(batch axis, length axis, seconds over all layers, measured share) for one attention table."""
    heads, kv_heads = model.num_heads / t, max(model.num_kv_heads / t, 1.0)
    layout = tables.attention_filled(op, kv_dtype, heads, kv_heads, model.head_dim)
    grid, filled = (None, None) if layout is None else layout  # filled: cells from other head counts
    measured = grid is not None
    if grid is None:  # a head count the table lacks: log-log in heads from the measured ones around it
        grid = tables.attention_heads(op, kv_dtype, heads, kv_heads, model.head_dim)
    if grid is None:  # a single measured count: it, scaled by heads
        near = tables.nearest_heads(op, kv_dtype, heads, kv_heads, model.head_dim)
        grid = None if near is None else tables.attention_grid(op, kv_dtype, near, kv_heads, model.head_dim)
        if grid is not None and near is not None:
            grid = grid[0], grid[1], grid[2] * heads / near
    if grid is None and op == "generation_attention":  # more KV heads than measured: a larger batch of fewer
        k = tables.fold_factor(op, kv_dtype, heads, kv_heads, model.head_dim)
        grid = None if k is None else tables.attention_grid(op, kv_dtype, heads / k, kv_heads / k, model.head_dim)
        if grid is not None and k is not None:
            grid = grid[0] / k, grid[1], grid[2]
    if grid is None:
        batches, lengths = _FALLBACK_BATCHES, _FALLBACK_LENGTHS
        ms = np.full((len(batches), len(lengths)), np.nan)
    else:
        batches, lengths, ms = grid
    b, n = np.meshgrid(batches, lengths, indexing="ij")
    inside = np.full(ms.shape, measured) if filled is None else ~filled
    s, share = with_fallback(ms, inside, roofline(b, n, heads, kv_heads))
    return batches, lengths, s * model.num_layers, share


def _mla_grids(tables: KernelTables, model: ModelSpec, t: int, weight_format: str, kv_cache_format: str,
               rates: Rates) -> tuple[tuple, tuple]:
    """The prefill and decode grids of an MLA model from its measured modules (all layers), or
    from its roofline where the tables lack this GEMM type or KV dtype."""
    heads, weight_b = model.num_heads / t, BYTES_PER_ELEMENT[weight_format]
    kv_dtype = "fp8" if kv_cache_format == "fp8" else "bfloat16"
    gemm_type = table_format("mla", weight_format, mla=True) or ""
    f, bw = rates.flop_rate, rates.byte_rate
    kv_b = BYTES_PER_ELEMENT[kv_cache_format]
    out = []
    for phase, roof, axes in (
            ("context", lambda b, s: mla_prefill_roofline_s(b, s, heads, f, bw, weight_b), _FALLBACK_LENGTHS),
            ("generation", lambda b, c: mla_decode_roofline_s(b, c, heads, f, bw, weight_b, kv_b), _FALLBACK_LENGTHS)):
        grid = mla_grid(tables, phase, gemm_type, kv_dtype, heads, roof)
        if grid is None:
            b, n = np.meshgrid(_FALLBACK_BATCHES, axes, indexing="ij")
            grid = _FALLBACK_BATCHES, axes, roof(b, n), np.zeros(b.shape)
        out.append((grid[0], grid[1], grid[2] * model.num_layers, grid[3]))
    return out[0], out[1]


def kernel_params(base: np.ndarray, device: DeviceSpec, model: ModelSpec, t: int, weight_format: str,
                  kv_cache_format: str, compute_format: str, mfu: float, mbu: float, *, cuda_graphs: bool = True,
                  eager_s_per_layer: float = EAGER_S_PER_LAYER, graph_max_tokens: int = CUDA_GRAPH_MAX_TOKENS,
                  tables: KernelTables | None = None, expert_parallel: ExpertParallel | None = None,
                  moe_roofline: bool = False) -> np.ndarray | None:
    """`base` (the roofline's named slots, kind set by the caller) followed by the kernel grids;
    None when the device has no tables for this weight format (`tables`: use these instead of
    the device's own, e.g. another GPU's scaled to it; `expert_parallel`: the replica's EP layout;
    `moe_roofline`: the MoE layer by the roofline, as for a layer no table measures)."""
    mla = mla_tabled(model)
    roof_gemms = gemms_from_roofline(weight_format, mla, dense=model.num_experts <= 1)
    tables = kernel_tables_for(device, "bf16" if roof_gemms else weight_format, mla) if tables is None else tables
    dtype = "" if roof_gemms else table_format("gemm", weight_format, mla, dense=model.num_experts <= 1)
    if tables is None or dtype is None or not (roof_gemms or tables.has("gemm", dtype)):
        return None
    ep = expert_parallel or ExpertParallel()
    tables = with_derived_rows(tables, device, model, weight_format, t, ep.ep, ep.dp)
    kv_dtype = "fp8" if kv_cache_format == "fp8" else "bfloat16"
    weight_b = BYTES_PER_ELEMENT[weight_format]
    kv_b = BYTES_PER_ELEMENT[kv_cache_format]
    rates = Rates(device, compute_format, mfu, mbu)
    m = TOKEN_GRID.astype(np.float64)
    moe = None
    if model.num_experts > 1:
        moe_dtype = "" if moe_roofline else table_format("moe", weight_format, mla) or ""
        moe = moe_grid(tables, moe_dtype, model, t, weight_b, rates, m, ep)
    apart = moe is not None and ep.dp > 1  # priced at the whole replica's tokens, the rest at 1/dp of them
    linear_s, linear_meas = _linear_grid(tables, dtype, model, t, weight_b, rates, m, graph_max_tokens,
                                         None if apart else moe)
    head_s, head_share = with_fallback(*tables.gemm_ms(dtype, m, model.vocab_size / t, model.hidden_size),
                                        rates.gemm_s(m, model.vocab_size / t, model.hidden_size, weight_b))
    hd = model.head_dim

    def prefill_roof(b, s, heads, kv_heads):
        return 4.0 * heads * hd * b * s * (s + 1) / 2.0 / rates.flop_rate

    def decode_roof(b, c, heads, kv_heads):
        return b * c * 2.0 * kv_heads * hd * kv_b / rates.byte_rate

    if mla:
        (r_axis, s_axis, pre_s, pre_share), (b_axis, c_axis, dec_s, dec_share) = _mla_grids(
            tables, model, t, weight_format, kv_cache_format, rates)
    else:
        r_axis, s_axis, pre_s, pre_share = _attention_grid(tables, "context_attention", kv_dtype, model, t,
                                                           prefill_roof)
        b_axis, c_axis, dec_s, dec_share = _attention_grid(tables, "generation_attention", kv_dtype, model, t,
                                                           decode_roof)
    header = np.array([len(m), len(r_axis), len(s_axis), len(b_axis), len(c_axis), 0.0, 0.0,
                       eager_s_per_layer * model.num_layers, float(graph_max_tokens) if cuda_graphs else 0.0,
                       0.0 if tables.scaled_from is None else 1.0, float(ep.dp), 1.0 if apart else 0.0])
    parts = [base, header, m, linear_s, linear_meas / linear_s, head_s, head_share,
             r_axis, s_axis, pre_s.ravel(), pre_share.ravel(), b_axis, c_axis, dec_s.ravel(), dec_share.ravel()]
    if apart:
        assert moe is not None
        moe_layers = model.num_layers - model.first_dense_layers
        parts += [moe.seconds * moe_layers, moe.measured_share]
    return np.concatenate(parts)


# --- kernel ---------------------------------------------------------------------------------

@njit(cache=True)
def _locate(x, p, start, n):
    """(lower index, log-space weight of the upper one, inside range) of x on the axis p[start:start+n];
    beyond the top the weight exceeds 1 only through the caller's linear scaling."""
    if n == 1 or x <= p[start]:
        return 0, 0.0, x >= p[start]
    if x >= p[start + n - 1]:
        return n - 2, 1.0, x == p[start + n - 1]
    lo, hi = 0, n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if p[start + mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo, math.log(x / p[start + lo]) / math.log(p[start + lo + 1] / p[start + lo]), True


@njit(cache=True)
def _beyond(x, p, start, n):
    """Linear scale factor for a point beyond the axis' top (1 inside)."""
    top = p[start + n - 1]
    return x / top if x > top else 1.0


@njit(cache=True)
def _grid1(x, p, axis, n):
    """(seconds, measured seconds) on a 1-D grid: values at axis + n, measured share at axis + 2n."""
    i, w, inside = _locate(x, p, axis, n)
    j = min(i + 1, n - 1)
    v = math.exp((1.0 - w) * math.log(p[axis + n + i]) + w * math.log(p[axis + n + j])) * _beyond(x, p, axis, n)
    share = (1.0 - w) * p[axis + 2 * n + i] + w * p[axis + 2 * n + j]
    return v, v * share if inside else 0.0


@njit(cache=True)
def _grid2(x, y, p, x_axis, nx, ny):
    """(seconds, measured seconds) on a 2-D grid laid out as x axis, y axis, values, shares."""
    y_axis = x_axis + nx
    vals = y_axis + ny
    shares = vals + nx * ny
    i, wx, in_x = _locate(x, p, x_axis, nx)
    j, wy, in_y = _locate(y, p, y_axis, ny)
    i1, j1 = min(i + 1, nx - 1), min(j + 1, ny - 1)
    lv = ((1 - wx) * (1 - wy) * math.log(p[vals + i * ny + j]) + wx * (1 - wy) * math.log(p[vals + i1 * ny + j])
          + (1 - wx) * wy * math.log(p[vals + i * ny + j1]) + wx * wy * math.log(p[vals + i1 * ny + j1]))
    share = ((1 - wx) * (1 - wy) * p[shares + i * ny + j] + wx * (1 - wy) * p[shares + i1 * ny + j]
             + (1 - wx) * wy * p[shares + i * ny + j1] + wx * wy * p[shares + i1 * ny + j1])
    v = math.exp(lv) * _beyond(x, p, x_axis, nx) * _beyond(y, p, y_axis, ny)
    return v, v * share if (in_x and in_y) else 0.0


@njit(cache=True)
def _on_t(x, p, t_axis, n_t, values):
    """(seconds, measured seconds) of a grid on the T axis whose values start at `values`
    (measured shares n_t after them)."""
    i, w, inside = _locate(x, p, t_axis, n_t)
    j = min(i + 1, n_t - 1)
    v = math.exp((1 - w) * math.log(p[values + i]) + w * math.log(p[values + j])) * _beyond(x, p, t_axis, n_t)
    if not inside:
        return v, 0.0
    return v, v * ((1 - w) * p[values + n_t + i] + w * p[values + n_t + j])


@njit(cache=True)
def _group_share(dp, num_prefill_tokens, num_decode_tokens, num_prefill_requests):
    """(tokens, decode sequences, prompt requests) of the busiest of dp data-parallel attention
    groups: 1/dp of the step's sequences and requests but at least one of each kind present
    (one prompt runs whole on one group), with those prompts' tokens; the step itself at dp 1."""
    p_tokens, d, r = float(num_prefill_tokens), float(num_decode_tokens), float(num_prefill_requests)
    if dp == 1.0:
        return p_tokens + d, d, r
    g_d = max(d / dp, 1.0) if d > 0.0 else 0.0
    g_r = max(r / dp, 1.0) if r > 0.0 else 0.0
    g_p = p_tokens * g_r / r if r > 0.0 else p_tokens / dp
    return max(g_p + g_d, 1.0), g_d, g_r


@njit(cache=True)
def kernel_step_time_s(p, base, overhead_s, pipeline_s_per_token, num_prefill_tokens, num_decode_tokens,
                       attn_token_pairs, kv_read_tokens, num_prefill_requests):
    tokens = float(num_prefill_tokens) + float(num_decode_tokens)
    if tokens <= 0.0:
        return 0.0
    n_t, n_r, n_s, n_b, n_c = int(p[base]), int(p[base + 1]), int(p[base + 2]), int(p[base + 3]), int(p[base + 4])
    dp = p[base + K_DP]
    g_tokens, g_decode, g_requests = _group_share(dp, num_prefill_tokens, num_decode_tokens, num_prefill_requests)
    t_axis = base + K_HEADER
    total, measured = _grid1(g_tokens, p, t_axis, n_t)
    head_axis = t_axis + 2 * n_t  # the head grid shares the T axis: values and shares follow
    sampled = g_decode + g_requests
    if sampled > 0.0:
        v, mv = _on_t(sampled, p, t_axis, n_t, head_axis + n_t)
        total += v
        measured += mv
    r_axis = head_axis + 3 * n_t
    b_axis = r_axis + n_r + n_s + 2 * n_r * n_s
    decode_kv = 0.0
    if num_decode_tokens > 0:
        d = float(num_decode_tokens)
        decode_kv = float(kv_read_tokens) * d / (d + float(num_prefill_requests))
        v, mv = _grid2(g_decode, decode_kv / d + 1.0, p, b_axis, n_b, n_c)
        total += v
        measured += mv
    if num_prefill_tokens > 0 and num_prefill_requests > 0:
        r = float(num_prefill_requests)
        pairs = max(float(attn_token_pairs) - decode_kv - float(num_decode_tokens), float(num_prefill_tokens))
        s = (math.sqrt(1.0 + 8.0 * pairs / r) - 1.0) / 2.0  # s (s + 1) / 2 = pairs per request
        v, mv = _grid2(g_requests, max(s, 1.0), p, r_axis, n_r, n_s)
        total += v
        measured += mv
    if p[base + K_MOE_APART] > 0.0:  # the MoE layers see the whole replica's tokens
        v, mv = _on_t(tokens, p, t_axis, n_t, b_axis + n_b + n_c + 2 * n_b * n_c)
        total += v
        measured += mv
    if tokens > p[base + K_GRAPH_MAX_TOKENS]:  # launched eagerly: the CPU may be the bottleneck
        total = max(total, p[base + K_EAGER_FLOOR_S])
    total += overhead_s + pipeline_s_per_token * tokens
    p[base + K_ACC_TOTAL] += total
    p[base + K_ACC_MEASURED] += measured
    return total


def tables_scaled(p: np.ndarray, base: int) -> bool:
    """Whether the grids came from another GPU's tables scaled to this device (kernel_scaling)."""
    return bool(p[base + K_SCALED])


def measured_fraction(p: np.ndarray, base: int) -> float | None:
    """The share of simulated step seconds that came from measured kernels (None before any step)."""
    total = p[base + K_ACC_TOTAL]
    return float(p[base + K_ACC_MEASURED] / total) if total > 0 else None
