"""Measured vLLM kernel latencies (simcost/data/kernels, from NVIDIA aiconfigurator, Apache-2.0):
loading and interpolation, in plain numpy. Used once per deployment by
`simcost.perf.kernel_model`, which evaluates them onto the grids its numba kernel reads; nothing
here runs per step.

Interpolation is linear in log(size) -> log(latency) between measured sizes (a kernel's latency
is close to a power law of its size between neighbouring points: flat where launch-bound, linear
where compute- or bandwidth-bound, and log-log follows both without overshooting). Each lookup
returns (ms, measured): `measured` is False where the point lies outside the table's range, and
the value there is the edge point scaled linearly in size (the roofline ratio of a compute- or
bandwidth-bound kernel), or NaN where the table has no such shape at all (the caller then uses
the roofline).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

import simcost.portable_math as pmath
from simcost.perf.kernel_heads import fill_cells, heads_blend, log_slope

TABLE_DIR = Path(__file__).resolve().parents[1] / "data" / "kernels"

# catalog device key -> table file (simcost/data/kernels/<name>.npz)
DEVICE_TABLES = {"a100-80gb": "a100_sxm", "h100-sxm": "h100_sxm", "h200": "h200_sxm", "b200": "b200_sxm",
                 "gb200": "gb200", "gb200-nvl72": "gb200", "l40s": "l40s", "rtx-pro-6000-server": "rtx_pro_6000_server"}

# simcost format -> the tables' dtype name (bf16 and fp16 kernels run at the same rate; int8/int4
# weight-only formats dequantise to bf16 before the matmul, which the bf16 table does not price)
TABLE_DTYPE = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8"}

# the tables' format names per simcost weight format, by operator, where they differ from
# TABLE_DTYPE (simcost's choice of the kernel vLLM runs by default for such a checkpoint):
# - fp8 on a multi-head latent attention model: DeepSeek-V3/R1 and Kimi K2 ship 128 x 128
#   block-scaled FP8, which vLLM runs with its block-scaled MoE kernels and MLA projections (the
#   "fp8_block" MoE rows and MLA modules). Its dense GEMMs (shared experts, dense layers, LM head)
#   take the per-tensor "fp8" GEMM rows: the block-scaled GEMM rows carry a flat 55-90 us (H200)
#   or 180-260 us (B200) floor at small m, 5-25x the fp8 and bf16 rows of the same shape and far
#   above the block-scaled projections inside the measured MLA modules (about 0.1 ms for a whole
#   module on H200), i.e. host-side cost of an eagerly timed kernel, not what a CUDA-graph decode
#   step pays; so they are not shipped;
# - nvfp4: the FP4 GEMM and MoE kernels (Blackwell only: other GPUs have no rows);
# - mxfp4 (gpt-oss): MoE weights in MXFP4 with bf16 activations (vLLM's default on Hopper and
#   Blackwell; W4A8 MXFP8 is opt-in), the other linear layers in bf16 as the checkpoint ships them.
# int8 and int4 (weight-only) have no dense GEMM rows, so no table format.
FP8_BLOCK = "fp8_block"
FORMAT_TABLES = {"gemm": {"nvfp4": "nvfp4", "mxfp4": "bfloat16"},
                 "moe": {"nvfp4": "nvfp4", "mxfp4": "w4a16_mxfp4"},
                 "mla": {"bf16": "bfloat16", "fp16": "bfloat16", "nvfp4": "nvfp4", "fp8": FP8_BLOCK}}


def table_format(op: str, weight_format: str, mla: bool = False, dense: bool = False) -> str | None:
    """The tables' format name that `op` (gemm, moe or mla: the MLA modules' gemm_type) uses for
    `weight_format` weights; None where there is none. `dense`: the model has no MoE layers, so
    its mxfp4 GEMMs hold mxfp4 weights, which no GEMM row measures (the bf16 rows stand for
    gpt-oss's attention only because its checkpoint keeps those layers in bf16)."""
    if op == "moe" and weight_format == "fp8" and mla:
        return FP8_BLOCK
    if op == "gemm" and weight_format == "mxfp4" and dense:
        return None
    if op == "mla":
        return FORMAT_TABLES["mla"].get(weight_format)
    return FORMAT_TABLES.get(op, {}).get(weight_format, TABLE_DTYPE.get(weight_format))


# weight-only formats (vLLM's Marlin-style W4A16/W8A16 kernels; mxfp4 of a dense model): no GEMM row
# measures them, so the kernel model prices their GEMMs (and MoE layers) by the roofline and the
# rest (attention, all-reduce, elementwise, overheads) from the tables
WEIGHT_ONLY_FORMATS = ("int8", "int4", "mxfp4")


def gemms_from_roofline(weight_format: str, mla: bool = False, dense: bool = False) -> bool:
    """Whether `weight_format` is weight-only with no GEMM rows (its GEMMs take the roofline)."""
    return weight_format in WEIGHT_ONLY_FORMATS and table_format("gemm", weight_format, mla, dense) is None


# vLLM V1 captures CUDA graphs for batches up to max_cudagraph_capture_size tokens, by default
# min(2 x max_num_seqs, 512) (vLLM 0.11+, VllmConfig's CUDA-graph sizes); larger steps run
# eagerly, and so does their all-reduce
CUDA_GRAPH_MAX_TOKENS = 512


def cuda_graph_max_tokens(max_num_seqs: int) -> int:
    """The largest step (tokens) vLLM V1 runs as a CUDA graph by default at this max_num_seqs."""
    return min(2 * max_num_seqs, CUDA_GRAPH_MAX_TOKENS)


# fp8 (W8A8) GEMMs reach a smaller fraction of their (doubled) peak than bf16 ones: the median over
# the GPUs with tables of (fp8 fraction / bf16 fraction), compute-bound (m = 4096-8192, n = k =
# 8192) and weight-read-bound (m = 1-16). Used for devices without tables; a simcost assumption
# derived from the measurements (tests/test_kernel_model.py recomputes it) of the five GPUs with
# fp8 tables and a catalog entry when it was set (FP8_RATIO_GPUS); GB200, mapped later (0.67 / 0.59),
# would move the mfu median to 0.76: left as is, since changing it moves the golden outputs.
FP8_RATIO_ASSUMED = (0.80, 0.77)
FP8_RATIO_GPUS = ("h100-sxm", "h200", "b200", "l40s", "rtx-pro-6000-server")


def gemm_efficiency(name: str | KernelTables, dtype: str, peak_flops: float, mem_bw_bytes_per_s: float
                    ) -> tuple[float, float]:
    """(fraction of peak FLOP/s at large m, fraction of peak bandwidth reading the weights at
    small m) of the measured 8192 x 8192 GEMM in table `name` (or these tables)."""
    t = KernelTables(name) if isinstance(name, str) else name
    large, _ = t.gemm_ms(dtype, np.array([4096.0, 8192.0]), 8192, 8192)
    small, _ = t.gemm_ms(dtype, np.array([1.0, 16.0]), 8192, 8192)
    weight_b = 2.0 if dtype == "bfloat16" else 1.0
    flops = 2.0 * np.array([4096.0, 8192.0]) * 8192 * 8192 / (large / 1e3)
    return float(flops.max() / peak_flops), float((8192 * 8192 * weight_b / (small / 1e3)).max() / mem_bw_bytes_per_s)


def format_efficiency_ratio(device_key: str, compute_format: str, peak_flops: dict[str, float],
                            mem_bw_bytes_per_s: float, user_tables: Callable[[], KernelTables | None] | None = None
                            ) -> tuple[float, float]:
    """(mfu, mbu) of `compute_format` relative to bf16 on this device: 1 for 16-bit formats,
    measured for fp8 where the device has tables (`user_tables()`: a user's, loaded only for fp8,
    kernel_import.own_tables; else the shipped ones of the key), FP8_RATIO_ASSUMED otherwise."""
    if compute_format != "fp8":
        return 1.0, 1.0
    name = table_name(device_key)
    tables = user_tables() if user_tables is not None else None if name is None else KernelTables(name)
    if (tables is None or "bf16" not in peak_flops or not tables.has("gemm", TABLE_DTYPE["fp8"])
            or not tables.has("gemm", TABLE_DTYPE["bf16"])):
        return FP8_RATIO_ASSUMED
    fp8 = gemm_efficiency(tables, "fp8", peak_flops["fp8"], mem_bw_bytes_per_s)
    bf16 = gemm_efficiency(tables, "bfloat16", peak_flops["bf16"], mem_bw_bytes_per_s)
    return fp8[0] / bf16[0], fp8[1] / bf16[1]


def table_name(device_key: str) -> str | None:
    return DEVICE_TABLES.get(device_key)


@lru_cache(maxsize=8)
def load_tables(name: str) -> dict[str, np.ndarray]:
    with np.load(TABLE_DIR / f"{name}.npz") as f:
        return {k: np.asarray(f[k], dtype=np.float64) for k in f.files}


def loglog(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-log interpolation of (xs, ys) at x; beyond either end the edge value scaled linearly in
    x (below the smallest size, the smallest latency: a kernel is never faster than its launch).
    Returns (values, inside range)."""
    x = np.asarray(x, dtype=np.float64)
    lx = pmath.log(np.clip(x, xs[0], xs[-1]))
    y = pmath.exp(np.interp(lx, pmath.log(xs), pmath.log(ys)))
    y = np.where(x > xs[-1], ys[-1] * x / xs[-1], y)
    return y, (x >= xs[0]) & (x <= xs[-1])


def bracket(v: float, axis: np.ndarray) -> tuple[int, int, float] | None:
    """Indices around v in the sorted axis and the log-space weight of the upper one; None outside."""
    if len(axis) == 0 or v < axis[0] or v > axis[-1]:
        return None
    j = int(np.searchsorted(axis, v))
    if axis[j] == v:
        return j, j, 0.0
    return j - 1, j, float(pmath.log(v / axis[j - 1]) / pmath.log(axis[j] / axis[j - 1]))


def _grid(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(batch axis, length axis, ms matrix with NaN where unmeasured) of rows whose first two
    columns are batch and length and whose last is latency; None for no rows."""
    if len(sel) == 0:
        return None
    batches, lengths = np.unique(sel[:, 0]), np.unique(sel[:, 1])
    grid = np.full((len(batches), len(lengths)), np.nan)
    grid[np.searchsorted(batches, sel[:, 0]), np.searchsorted(lengths, sel[:, 1])] = sel[:, -1]
    return batches, lengths, grid


def _neighbours(v: float, counts: np.ndarray) -> tuple[float, float] | None:
    """The two measured counts around v, or the two nearest beyond the measured ones; None with
    fewer than two counts or where v itself is measured."""
    if len(counts) < 2 or v in counts:
        return None
    near = bracket(v, counts)
    if near is not None:
        return float(counts[near[0]]), float(counts[near[1]])
    return (float(counts[0]), float(counts[1])) if v < counts[0] else (float(counts[-2]), float(counts[-1]))


def mlp_shapes(width: float, hidden: float, gated: bool = True) -> list[tuple[float, float]]:
    """(n, k) of the GEMMs of an MLP of `width` (per GPU): gate/up fused (a plain MLP: up alone),
    then down. The kernel model prices these; model_choice checks the tables hold them."""
    return [((2 if gated else 1) * width, hidden), (hidden, width)]


class KernelTables:
    """One GPU's tables (simcost/data/kernels/<name>.npz)."""

    def __init__(self, name: str, arrays: dict[str, np.ndarray] | None = None, scaled_from: str | None = None,
                 derived_counts: dict[str, frozenset[float]] | None = None):
        self.name = name
        self.arrays = load_tables(name) if arrays is None else arrays
        # the measured GPU's table these were scaled from (simcost.perf.kernel_scaling); None: measured here
        self.scaled_from = scaled_from
        # per all-reduce / NCCL table, the GPU counts whose rows were derived, not measured
        # (kernel_scaling.with_gpu_counts); their lookups count as not measured
        self.derived_counts = derived_counts or {}

    def _measured_count(self, key: str, num_gpus: float) -> bool:
        return float(num_gpus) not in self.derived_counts.get(key, frozenset())

    def has(self, op: str, dtype: str) -> bool:
        return f"{op}/{dtype}" in self.arrays

    # --- GEMM: (m, n, k) -> ms ---
    def gemm_ms(self, dtype: str, m: np.ndarray, n: float, k: float) -> tuple[np.ndarray, np.ndarray]:
        """An (m x k) by (k x n) GEMM for every m. Between measured n and k, bilinear in
        (log n, log k) of log latency; NaN if n or k lie outside the measured shapes."""
        m = np.asarray(m, dtype=np.float64)
        rows = self.arrays.get(f"gemm/{dtype}")
        nan = np.full(m.shape, np.nan)
        if rows is None:
            return nan, np.zeros(m.shape, bool)
        ns, ks = np.unique(rows[:, 1]), np.unique(rows[:, 2])
        # wider than any measured shape (an LM head over a 128k vocabulary): as that many column
        # (or reduction) blocks of a measured width, one after another; not counted as measured
        pieces = max(np.ceil(n / ns[-1]), 1.0) * max(np.ceil(k / ks[-1]), 1.0)
        if pieces > 1:
            ms, _ = self.gemm_ms(dtype, m, n / max(np.ceil(n / ns[-1]), 1.0), k / max(np.ceil(k / ks[-1]), 1.0))
            return ms * pieces, np.zeros(m.shape, bool)
        bn, bk = bracket(n, ns), bracket(k, ks)
        if bn is None or bk is None:
            return nan, np.zeros(m.shape, bool)
        log_y = np.zeros(m.shape)
        inside = np.ones(m.shape, bool)
        for i, wn in ((bn[0], 1 - bn[2]), (bn[1], bn[2])):
            for j, wk in ((bk[0], 1 - bk[2]), (bk[1], bk[2])):
                sel = rows[(rows[:, 1] == ns[i]) & (rows[:, 2] == ks[j])]
                if len(sel) < 2:
                    return nan, np.zeros(m.shape, bool)
                y, ok = loglog(m, sel[:, 0], sel[:, 3])
                log_y += wn * wk * pmath.log(y)
                inside &= ok
        return pmath.exp(log_y), inside

    # --- attention: (batch, length) grid for one head shape ---
    def attention_grid(self, op: str, dtype: str, heads: float, kv_heads: float, head_dim: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(batch axis, length axis, ms matrix with NaN where unmeasured) for `op`
        (context_attention: length = prompt tokens; generation_attention: length = context) at
        this per-GPU head shape; None if the table has no such shape."""
        rows = self.arrays.get(f"{op}/{dtype}")
        if rows is None:
            return None
        return _grid(rows[(rows[:, 2] == heads) & (rows[:, 3] == kv_heads) & (rows[:, 4] == head_dim)])

    def attention_heads(self, op: str, dtype: str, heads: float, kv_heads: float, head_dim: float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """A query-head count the table lacks (tensor parallelism divides the heads: a TP degree
        not measured) from the measured counts with the same KV heads and head_dim: log-log in
        heads between the two around it, or beyond them continued from the two nearest
        (heads_blend); None with fewer than two measured counts."""
        rows = self.arrays.get(f"{op}/{dtype}")
        if rows is None:
            return None
        counts = np.unique(rows[(rows[:, 3] == kv_heads) & (rows[:, 4] == head_dim), 2])
        pair = _neighbours(heads, counts)
        if pair is None:
            return None
        lo = self.attention_grid(op, dtype, pair[0], kv_heads, head_dim)
        hi = self.attention_grid(op, dtype, pair[1], kv_heads, head_dim)
        if lo is None or hi is None:
            return None
        blend = heads_blend(lo, hi, pair[0], pair[1], heads)
        if blend is None:
            return None
        # the union of the neighbours' axes, cells either lacks filled from the nearest count
        batches, lengths = np.union1d(lo[0], hi[0]), np.union1d(lo[1], hi[1])
        grid = np.full((len(batches), len(lengths)), np.nan)
        grid[np.ix_(np.searchsorted(batches, blend[0]), np.searchsorted(lengths, blend[1]))] = blend[2]
        slope = log_slope(lo, hi, pair[0], pair[1]) or 0.0
        return fill_cells((batches, lengths, grid), heads, slope, self.head_grids(op, dtype, kv_heads, head_dim))[0]

    def head_grids(self, op: str, dtype: str, kv_heads: float, head_dim: float
                   ) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """{query heads: (batch axis, length axis, ms)} of every measured layout with these KV heads
        and head_dim."""
        rows = self.arrays.get(f"{op}/{dtype}")
        if rows is None:
            return {}
        counts = np.unique(rows[(rows[:, 3] == kv_heads) & (rows[:, 4] == head_dim), 2])
        grids = {float(c): self.attention_grid(op, dtype, c, kv_heads, head_dim) for c in counts}
        return {c: g for c, g in grids.items() if g is not None}

    def attention_filled(self, op: str, dtype: str, heads: float, kv_heads: float, head_dim: float
                         ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None:
        """A measured layout's grid with the cells it lacks taken from its other head counts
        (fill_cells, the slope to the nearest count that shares cells) and which cells those are;
        None if the layout is not measured."""
        grid = self.attention_grid(op, dtype, heads, kv_heads, head_dim)
        if grid is None:
            return None
        others = self.head_grids(op, dtype, kv_heads, head_dim)
        slope = 0.0
        for c in sorted((c for c in others if c != heads), key=lambda c: abs(pmath.log(c / heads))):
            found = log_slope(grid, others[c], heads, c)
            if found is not None:
                slope = found
                break
        return fill_cells(grid, heads, slope, others)

    def nearest_heads(self, op: str, dtype: str, heads: float, kv_heads: float, head_dim: float) -> float | None:
        """The measured query-head count closest to `heads` (in ratio) with the same KV heads and
        head_dim, for scaling a head layout the table lacks; None if there is none."""
        rows = self.arrays.get(f"{op}/{dtype}")
        if rows is None:
            return None
        candidates = np.unique(rows[(rows[:, 3] == kv_heads) & (rows[:, 4] == head_dim), 2])
        if len(candidates) == 0:
            return None
        return float(candidates[np.argmin(np.abs(pmath.log(candidates / heads)))])

    def fold_factor(self, op: str, dtype: str, heads: float, kv_heads: float, head_dim: float) -> int | None:
        """The smallest k >= 2 with (heads / k, kv_heads / k) measured at this head_dim, or None.
        Decode attention runs one block per (sequence, KV head) and reads each KV head's cache
        once, so k times the KV heads at batch b is the measured layout at batch k x b (held out
        on the tables' own MHA rows: 1-4 % median, 22 % worst; prefill attention does not fold as
        well, 12-35 % median, so only decode uses it)."""
        rows = self.arrays.get(f"{op}/{dtype}")
        if rows is None or kv_heads < 2 or heads % 1 or kv_heads % 1:
            return None
        layouts = {(h, kv) for h, kv in rows[rows[:, 4] == head_dim][:, 2:4]}
        for k in range(2, int(kv_heads) + 1):
            if kv_heads % k == 0 and heads % k == 0 and (heads / k, kv_heads / k) in layouts:
                return k
        return None

    # --- all-reduce: message bytes -> ms at num_gpus ---
    def allreduce_ms(self, num_gpus: int, message_bytes: np.ndarray, graph: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """vLLM's custom all-reduce over `num_gpus`, CUDA-graph backend where `graph`, else eager."""
        message_bytes = np.asarray(message_bytes, dtype=np.float64)
        out = np.full(message_bytes.shape, np.nan)
        inside = np.zeros(message_bytes.shape, bool)
        for backend, where in (("vllm_graph", graph), ("vllm_eager", ~graph)):
            rows = self.arrays.get(f"allreduce/{backend}")
            if rows is None:
                continue
            sel = rows[rows[:, 0] == num_gpus]
            if len(sel) < 2:
                continue
            y, ok = loglog(message_bytes, sel[:, 1], sel[:, 2])
            out = np.where(where, y, out)
            inside = np.where(where, ok & self._measured_count(f"allreduce/{backend}", num_gpus), inside)
        return out, inside

    # --- DeepSeek-V3's MLA attention module: (batch, length) grid at one per-GPU head count ---
    def mla_grid(self, phase: str, gemm_type: str, kv_dtype: str, heads: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(batch axis, length axis, ms matrix with NaN where unmeasured) of the whole MLA module
        (projections, norms, rotary, attention, output projection) for `phase` context (length:
        prompt tokens) or generation (length: attended tokens, the new one included); None if
        the table has no such head count."""
        rows = self.arrays.get(f"mla_{phase}/{gemm_type}_kv{kv_dtype}")
        if rows is None:
            return None
        return _grid(rows[rows[:, 2] == heads])

    def mla_between(self, phase: str, gemm_type: str, kv_dtype: str, heads: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """An MLA head count the table lacks between two measured ones: log-log in heads between
        their grids (heads_blend); None without both neighbours."""
        rows = self.arrays.get(f"mla_{phase}/{gemm_type}_kv{kv_dtype}")
        if rows is None:
            return None
        counts = np.unique(rows[:, 2])
        near = bracket(heads, counts)
        if near is None or near[0] == near[1]:
            return None
        lo = self.mla_grid(phase, gemm_type, kv_dtype, counts[near[0]])
        hi = self.mla_grid(phase, gemm_type, kv_dtype, counts[near[1]])
        return None if lo is None or hi is None else heads_blend(lo, hi, counts[near[0]], counts[near[1]], heads)

    # --- NCCL collectives: total bytes (nccl-tests' size) -> ms at num_gpus ---
    def nccl_ms(self, op: str, num_gpus: int, message_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NCCL `op` (all_gather, reduce_scatter, alltoall) over `num_gpus` of `message_bytes`
        in all (all-gather: the gathered output; reduce-scatter: each GPU's input)."""
        message_bytes = np.asarray(message_bytes, dtype=np.float64)
        rows = self.arrays.get(f"nccl/{op}")
        if rows is not None:
            sel = rows[rows[:, 0] == num_gpus]
            if len(sel) >= 2:
                y, ok = loglog(message_bytes, sel[:, 1], sel[:, 2])
                return y, ok & self._measured_count(f"nccl/{op}", num_gpus)
        return np.full(message_bytes.shape, np.nan), np.zeros(message_bytes.shape, bool)

    # --- fused MoE: tokens -> ms for one layer shape ---
    def moe_ms(self, dtype: str, tokens: np.ndarray, hidden: float, inter: float, topk: float, experts: float,
               tp: float, ep: float) -> tuple[np.ndarray, np.ndarray]:
        """The fused MoE layer at each token count, moe_tp_size `tp`, moe_ep_size `ep`. A size the
        table lacks: the rows kernel_scaling.with_moe_size derived (from the own sizes and another
        GPU's ratio between them), else, at a tp (at ep 1) or an ep (at tp 1) between two measured
        ones, log-log between them
        at each token count (a TP slice of every expert, or an EP share of them: compute and
        weight reads shrink with the GPU count, launch cost does not; log-log follows both), not
        counted as measured; NaN outside them."""
        tokens = np.asarray(tokens, dtype=np.float64)
        rows = self.arrays.get(f"moe/{dtype}")
        nan = np.full(tokens.shape, np.nan), np.zeros(tokens.shape, bool)
        if rows is None:
            return nan
        layer = rows[np.all(rows[:, 1:5] == np.array([hidden, inter, topk, experts]), axis=1)]
        sel = layer[(layer[:, 5] == tp) & (layer[:, 6] == ep)]
        if len(sel) >= 2:
            return loglog(tokens, sel[:, 0], sel[:, 7])
        derived = self.arrays.get(f"moe_derived/{dtype}")  # kernel_scaling.with_moe_size's rows
        if derived is not None:
            sel = derived[np.all(derived[:, 1:7] == np.array([hidden, inter, topk, experts, tp, ep]), axis=1)]
            if len(sel) >= 2:
                return loglog(tokens, sel[:, 0], sel[:, 7])[0], np.zeros(tokens.shape, bool)
        axis, other, size = (5, 6, tp) if ep == 1 else (6, 5, ep)  # the GPU-count axis that varies
        layer = layer[layer[:, other] == 1]
        counts = np.array([v for v in np.unique(layer[:, axis]) if (layer[:, axis] == v).sum() >= 2])
        near = bracket(size, counts) if (tp == 1 or ep == 1) else None
        if near is None:
            return nan
        lo, hi, w = near
        y_lo = loglog(tokens, *layer[layer[:, axis] == counts[lo]][:, [0, 7]].T)[0]
        y_hi = loglog(tokens, *layer[layer[:, axis] == counts[hi]][:, [0, 7]].T)[0]
        return pmath.exp((1 - w) * pmath.log(y_lo) + w * pmath.log(y_hi)), np.zeros(tokens.shape, bool)
