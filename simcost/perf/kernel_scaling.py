"""Kernel tables for a GPU that has none: the most similar measured GPU's tables, every row scaled
by the ratio of the two devices' rooflines for that row's shape (peak FLOP/s for the format,
memory bandwidth, scale-up link). What the measured GPU's kernels reach of its peaks (their
efficiency, their shape effects, their launch latency) is assumed to carry over; the device-spec
ratio moves only the part of each latency that the peaks set.

Scaling a row: t_target = launch + (t_source - launch) x factor, where launch is a kernel's
fixed cost (LAUNCH_S, the smallest latencies the tables hold: 5-10 us on every measured GPU),
which does not shrink with a faster chip, and the roofline of a row is max(FLOPs / peak, bytes /
bandwidth) (all-reduce: its latency + bandwidth time over the link). For the on-chip kernels
(GEMM, attention, fused MoE: SHARE_SCALED) the factor splits the source row by its utilisation
u = roofline_source / t_source, the share of its time its roofline accounts for:
    factor = (roofline_target / roofline_source) ^ u x (peak_source / peak_target) ^ (e (1 - u)):
the share the peaks set moves with the roofline ratio; the rest is latency and occupancy
(launch and memory latency, too few blocks to fill the chip, tile quantisation), which a second
memory bandwidth does not shorten (H100 -> H200: same SMs and clocks, 1.43x the bandwidth, and
decode GEMMs at 10-40 % of their roofline gain 2-5 %, not 43 %) but more and faster SMs do,
partly: by the compute-peak ratio raised to the operator's SCALING_EXPONENT e (< 1: per-SM
throughput grows faster across generations than latency falls). The all-reduce (no on-chip
share): factor = roofline ratio ^ e. e is fitted on the tables.
`experiments/validate_kernel_tables.py` checks the method by leaving each measured GPU out and
predicting its tables from the nearest other one (docs/fidelity.md section 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

import simcost.portable_math as pmath
from simcost.catalog.types import DeviceSpec, ModelSpec
from simcost.perf.kernel_import import own_tables
from simcost.perf.kernel_mla import mla_tabled
from simcost.perf.kernel_tables import KernelTables, bracket, load_tables, loglog, table_format

# table file -> the catalog device it was measured on
TABLE_DEVICE = {"a100_sxm": "a100-80gb", "h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200",
                "gb200": "gb200-nvl72", "l40s": "l40s", "rtx_pro_6000_server": "rtx-pro-6000-server"}

# devices whose nearest measured GPU is the same chip or architecture (a simcost choice): H20 is
# a Hopper die, B300 a Blackwell Ultra one, the A100 PCIe the SXM chip, RTX 4090 and L4 Ada parts
# like the L40S, RTX 5090 the consumer Blackwell of the RTX PRO 6000. Other GPUs: DEFAULT rule.
BORROWED_TABLES = {"h20": "h100_sxm", "b300": "b200_sxm", "a100-80gb-pcie": "a100_sxm", "rtx-4090": "l40s",
                   "l4": "l40s", "rtx-5090": "rtx_pro_6000_server"}

# fixed cost of a kernel that a faster chip does not shorten: about the smallest latency in the
# tables (GEMM and attention at one token: 5-10 us on every GPU measured)
LAUNCH_S = 5e-6

# the operators whose rows split into a roofline share and a latency/occupancy share (module
# docstring); the all-reduce's time is the link's, scaled whole
SHARE_SCALED = ("gemm", "context_attention", "generation_attention", "moe")
# a kernel at the practical ceiling of its roofline (DRAM reads top out near 80-90 % of the
# nominal bandwidth, tensor cores below their peak) is wholly roofline-bound: a row's roofline share
# u is its utilisation over the utilisation the source table's best rows reach, this percentile
# of them (not the maximum: a few rows exceed a roofline that understates their work). Chosen
# among 90, 95 and 100 by the all-pairs loss of experiments/validate_kernel_tables.py's fit (mean
# over ordered GPU pairs of the median |log error| per operator): 90 -> GEMM 20.5 %, prefill
# attention 21.3 %, decode attention 22.5 %, MoE 34.8 %; 100 -> 20.4, 23.6, 23.1, 34.7 %; a
# separate ceiling for compute- and bandwidth-bound rows -> 20.4, 22.5, 22.5, 34.9 % (not better,
# dropped); a simcost choice
UTILISATION_CEILING = 90.0
# per operator, the exponent e of the module docstring: on the compute-peak ratio for the
# latency/occupancy share of an on-chip kernel, on the roofline ratio for the all-reduce. Fitted on
# the shipped tables by experiments/validate_kernel_tables.py (every ordered pair of measured GPUs,
# minimising the median |log error|; tests/test_kernel_model.py refits it); a simcost fit.
SCALING_EXPONENT = {"gemm": 0.7, "context_attention": 0.15, "generation_attention": 0.3, "allreduce": 1.3,
                    "moe": 1.0}

_FORMAT = {"bfloat16": "bf16", "fp8": "fp8"}
_BYTES = {"bfloat16": 2.0, "fp8": 1.0}


def nearest_table(device: DeviceSpec, exclude: str | None = None) -> str | None:
    """The measured table a GPU without tables borrows: BORROWED_TABLES, else (the default rule)
    the measured GPU closest in compute-to-bandwidth ratio, memory bandwidth and scale-up link
    (sum of |log ratio|: its kernels sit in the same regime at the same shapes, and NVLink and
    PCIe all-reduces behave unlike each other). None for anything but a GPU with a bf16 peak."""
    if device.kind != "gpu" or "bf16" not in device.peak_flops:
        return None
    named = BORROWED_TABLES.get(device.key)
    if named is not None and named != exclude:
        return named
    return min((n for n in TABLE_DEVICE if n != exclude), key=lambda n: _distance(table_device(n), device))


def _distance(a: DeviceSpec, b: DeviceSpec) -> float:
    """How unalike two GPUs are for borrowing kernel latencies (see nearest_table)."""
    return float(abs(pmath.log(a.peak_flops["bf16"] / a.mem_bw_bytes_per_s * b.mem_bw_bytes_per_s / b.peak_flops["bf16"]))
                 + abs(pmath.log(a.mem_bw_bytes_per_s / b.mem_bw_bytes_per_s))
                 + abs(pmath.log(a.link_bytes_per_s / b.link_bytes_per_s)))


@lru_cache(maxsize=1)
def _table_devices() -> dict[str, DeviceSpec]:
    from simcost.catalog.specs import load_devices
    devices = load_devices()
    return {name: devices[key] for name, key in TABLE_DEVICE.items()}


def table_device(name: str) -> DeviceSpec:
    return _table_devices()[name]


def row_roofline_s(op: str, dtype: str, rows: np.ndarray, device: DeviceSpec, mfu: float = 1.0, mbu: float = 1.0,
                   hops: bool = False) -> np.ndarray | None:
    """Each row's roofline seconds on `device` at its peaks (efficiency factors 1: they cancel in
    the ratio; the validation passes the catalog's to price the plain roofline, whose all-reduce
    pays its latency per ring hop, `hops`); None where the device lacks the format's peak."""
    bw = device.mem_bw_bytes_per_s * mbu
    if op == "allreduce":
        gpus, message = rows[:, 0], rows[:, 1]
        latency = device.allreduce_latency_s * ((gpus - 1) if hops else 1.0)
        return latency + 2.0 * (gpus - 1) / gpus * message / device.link_bytes_per_s
    attention_flops = device.peak_flops["bf16"] * mfu  # attention computes in 16 bits, fp8 KV included
    if op == "context_attention":
        b, s, h, kvh, hd = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        kv_b = _BYTES[dtype]
        return np.maximum(4.0 * h * hd * b * s * (s + 1) / 2.0 / attention_flops,
                          b * s * hd * (2.0 * h * 2.0 + 2.0 * kvh * kv_b) / bw)
    if op == "generation_attention":
        b, c, h, kvh, hd = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        return np.maximum(4.0 * b * h * hd * c / attention_flops, b * c * 2.0 * kvh * hd * _BYTES[dtype] / bw)
    fmt = _FORMAT.get(dtype)  # formats, MLA modules and NCCL rows this scaling has no roofline for: left out
    if fmt is None or fmt not in device.peak_flops:
        return None
    flops, wb = device.peak_flops[fmt] * mfu, _BYTES[dtype]
    if op == "gemm":
        m, n, k = rows[:, 0], rows[:, 1], rows[:, 2]
        return np.maximum(2.0 * m * n * k / flops, (n * k * wb + 2.0 * m * (n + k)) / bw)
    if op == "moe":
        tokens, hidden, inter, topk, experts, tp, ep = (rows[:, i] for i in range(7))
        touched = experts * (1.0 - (1.0 - topk / experts) ** tokens) / ep
        return np.maximum(6.0 * tokens * hidden * inter * topk / (tp * ep) / flops,
                          touched * 3.0 * hidden * inter * wb / tp / bw)
    return None


def scale_rows(op: str, dtype: str, rows: np.ndarray, source: DeviceSpec, target: DeviceSpec,
               launch_s: float = LAUNCH_S, exponents: tuple[tuple[str, float], ...] | None = None
               ) -> np.ndarray | None:
    """`rows` (one operator's table, latency in ms in the last column) as measured on `source`,
    moved to `target` by the factor of the module docstring with the operator's SCALING_EXPONENT
    (or `exponents`')."""
    terms = scaling_terms(op, dtype, rows, source, target)
    if terms is None:
        return None
    ratio, share, base = terms
    exponent = dict(SCALING_EXPONENT if exponents is None else exponents).get(op, 1.0)
    launch_ms = launch_s * 1e3
    out = rows.copy()
    out[:, -1] = launch_ms + np.maximum(rows[:, -1] - launch_ms, 0.0) * ratio ** share * base ** (exponent * (1 - share))
    return out


def scaling_terms(op: str, dtype: str, rows: np.ndarray, source: DeviceSpec, target: DeviceSpec,
                  table: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(roofline ratio target / source, the share u of each source row's time its roofline sets,
    the ratio the rest scales by) of `rows` measured on `source`, part of `table` (`rows` if None):
    for SHARE_SCALED operators u = the row's utilisation of its roofline over the table's ceiling
    (UTILISATION_CEILING), at most 1, and the compute-peak ratio source / target; else u = 0 and
    the roofline ratio. None where a device lacks the format's peak."""
    src, tgt = row_roofline_s(op, dtype, rows, source), row_roofline_s(op, dtype, rows, target)
    if src is None or tgt is None:
        return None
    if op not in SHARE_SCALED:
        return tgt / src, np.zeros(len(rows)), tgt / src
    fmt = "bf16" if op.endswith("attention") else _FORMAT[dtype]  # attention computes in 16 bits
    table = rows if table is None else table
    table_roofline = row_roofline_s(op, dtype, table, source)
    assert table_roofline is not None  # the same operator and format as `rows`
    ceiling = np.percentile(np.clip(table_roofline * 1e3 / table[:, -1], 0.0, 1.0), UTILISATION_CEILING)
    share = np.clip(src * 1e3 / rows[:, -1] / ceiling, 0.0, 1.0)
    return tgt / src, share, np.full(len(rows), source.peak_flops[fmt] / target.peak_flops[fmt])


@lru_cache(maxsize=32)
def borrowed_tables(source_name: str, target: DeviceSpec, launch_s: float = LAUNCH_S,
                    exclude: str | None = None, exponents: tuple[tuple[str, float], ...] | None = None
                    ) -> KernelTables:
    """`source_name`'s tables scaled to `target` (KernelTables.scaled_from says from where). GPU
    counts its all-reduce tables lack (GB200's stop at 4) come from the next nearest measured GPU
    that has them, scaled the same way; `exclude` (a table never to use: the validation's
    held-out GPU)."""
    source = table_device(source_name)
    arrays = {}
    for key, rows in load_tables(source_name).items():
        op, dtype = key.split("/")
        scaled = scale_rows(op, dtype, rows, source, target, launch_s, exponents)
        if scaled is not None:
            arrays[key] = scaled
    # counts the source lacks: its own scaled rows times another board's ratio between the counts
    # (with_gpu_counts), as for a GPU's own tables; then any still missing from the nearest other
    # GPU's rows scaled by the link
    allreduce = {k: v for k, v in arrays.items() if k.startswith("allreduce/")}
    derived = with_gpu_counts(KernelTables(source_name, arrays=allreduce), target, (2, 4, 8), exclude=exclude)
    arrays.update(derived.arrays)
    for key in allreduce:
        arrays[key] = _fill_gpu_counts(key, arrays[key], target, launch_s, {source_name, exclude}, exponents)
    return KernelTables(f"{source_name}->{target.key}", arrays=arrays, scaled_from=source_name)


def _fill_gpu_counts(key: str, rows: np.ndarray, target: DeviceSpec, launch_s: float, used: set,
                     exponents: tuple[tuple[str, float], ...] | None) -> np.ndarray:
    """All-reduce rows for GPU counts up to 8 that `rows` lack, from the nearest other tables."""
    while True:
        missing = [g for g in (2, 4, 8) if g not in rows[:, 0]]
        candidates = [n for n in TABLE_DEVICE if n not in used]
        if not missing or not candidates:
            return rows
        name = min(candidates, key=lambda n: _distance(table_device(n), target))
        used = used | {name}
        other = load_tables(name).get(key)
        if other is None:
            continue
        extra = other[np.isin(other[:, 0], missing)]
        scaled = scale_rows("allreduce", key.split("/")[1], extra, table_device(name), target, launch_s, exponents)
        if scaled is not None and len(scaled):
            rows = np.concatenate([rows, scaled])


# the tables with a GPU-count axis: vLLM's custom all-reduce and the NCCL collectives
GPU_COUNT_TABLES = ("allreduce/vllm_graph", "allreduce/vllm_eager", "nccl/all_gather", "nccl/reduce_scatter",
                    "nccl/alltoall")


def _count_curve(rows: np.ndarray, count: float, sizes: np.ndarray) -> np.ndarray:
    """log ms of `rows` (num_gpus, bytes, ms) at `count` GPUs (within the measured counts) and
    these message sizes: log-log in size, log-log in GPU count between measured counts."""
    counts = np.unique(rows[:, 0])
    near = bracket(count, counts)
    assert near is not None, "the lender's counts span `count` (_count_lender)"
    lo, hi, w = near
    curve = [pmath.log(loglog(sizes, *rows[rows[:, 0] == counts[i]][:, 1:3].T)[0]) for i in (lo, hi)]
    return (1 - w) * curve[0] + w * curve[1]


def with_gpu_counts(tables: KernelTables, device: DeviceSpec, counts: Iterable[float],
                    exclude: str | None = None) -> KernelTables:
    """`tables` (a GPU's own) with rows for the GPU counts in `counts` that its all-reduce and
    NCCL tables lack, from its own measured counts and how the nearest measured GPU that has the
    count changes between them (ratio transfer): at each message size,
        log t(n) = sum over anchors a of w_a [log t_own(a) + log t_lender(n) - log t_lender(a)],
    the anchors being the two own counts around n (log-count weights) or, outside them, the
    nearest one. How the time grows with GPU count is the algorithm's and the switch's (one-
    or two-shot, (n-1)/n of the bytes per GPU, hops), shared by GPUs on the same kind of link; its
    level (link speed, NVL72 against HGX) is the GPU's own. Held out on the tables (each count
    removed in turn, docs/fidelity.md "one TP degree left out"): 2-9 % median on NVLink GPUs'
    graph all-reduce, where borrowing the nearest GPU's rows scaled by specs missed by 3-34 %.
    Between two own counts with a lender that measured neither side of n exactly (TP 6: no table
    has 6 GPUs) the lender's terms cancel and this is log-log in the GPU count between the own
    rows. Derived counts are recorded in `derived_counts` (looked up as not measured). `exclude`: a
    table never to use as lender (the validation's own)."""
    arrays, derived = dict(tables.arrays), dict(tables.derived_counts)
    for key in GPU_COUNT_TABLES:
        rows = arrays.get(key)
        if rows is None:
            continue
        own = np.unique(rows[:, 0])
        for n in sorted({float(c) for c in counts if c >= 2} - set(own)):
            near = bracket(n, own)
            anchors: list[tuple[float, float]]
            if near is not None:  # between two own counts: both, by log-count weight
                anchors = [(float(own[near[0]]), 1.0 - near[2]), (float(own[near[1]]), near[2])]
            else:  # beyond them: the nearest
                anchors = [(float(own[0] if n < own[0] else own[-1]), 1.0)]
            lender = _count_lender(key, device, [n] + [a for a, _ in anchors], {tables.name, exclude})
            if lender is None:
                continue
            sizes = rows[rows[:, 0] == anchors[0][0], 1]
            log_ms = np.zeros(len(sizes))
            for a, w in anchors:
                own_a = pmath.log(loglog(sizes, *rows[rows[:, 0] == a][:, 1:3].T)[0])
                log_ms += w * (own_a + _count_curve(lender, n, sizes) - _count_curve(lender, a, sizes))
            arrays[key] = np.concatenate([arrays[key], np.column_stack([np.full(len(sizes), n), sizes,
                                                                        pmath.exp(log_ms)])])
            derived[key] = derived.get(key, frozenset()) | {n}
    return KernelTables(tables.name, arrays=arrays, scaled_from=tables.scaled_from, derived_counts=derived)


def _count_lender(key: str, device: DeviceSpec, counts: list[float], used: set) -> np.ndarray | None:
    """The `key` rows of the measured GPU nearest `device` whose GPU counts span all of `counts`,
    one with the same scale-up domain first (_domain: an 8-GPU board against a GB200 NVL72 rack),
    since how a collective grows with the GPU count is the topology's: GB200's 2-GPU eager
    all-reduce takes 1.8x its 4-GPU one at 16 MB where every 8-GPU board's takes 0.73-0.85x."""
    ranked = sorted((n for n in TABLE_DEVICE if n not in used),
                    key=lambda n: (_domain(table_device(n)) != _domain(device), _distance(table_device(n), device)))
    for name in ranked:
        rows = load_tables(name).get(key)
        if rows is not None and all(bracket(c, np.unique(rows[:, 0])) is not None for c in counts):
            return rows
    return None


def _domain(device: DeviceSpec) -> int:
    """GPUs in the device's scale-up (NVLink) domain: the catalog's devices_per_node, else a board's 8."""
    return device.devices_per_node or 8


def with_derived_rows(tables: KernelTables, device: DeviceSpec, model: ModelSpec, weight_format: str, t: int,
                      ep: int = 1, dp: int = 1) -> KernelTables:
    """A GPU's own tables with what `model` at tensor_parallel `t` (expert_parallel `ep`, `dp`
    attention groups) needs and they lack, derived from their neighbours: the GPU counts
    (with_gpu_counts) and the MoE size (with_moe_size). The kernel model runs on these and auto
    judges these, so the two cannot disagree. Borrowed tables (scaled_from) come as they are."""
    if tables.scaled_from is not None:
        return tables
    tables = with_gpu_counts(tables, device, (t, dp))
    if model.num_experts > 1:
        tables = with_moe_size(tables, device, table_format("moe", weight_format, mla_tabled(model)) or "",
                               (model.hidden_size, model.intermediate_size, model.experts_per_token,
                                model.num_experts), t if ep <= 1 else 1, max(ep, 1))
    return tables


MOE_DERIVED = "moe_derived/"  # + dtype: MoE rows derived by with_moe_size (looked up as not measured)


def with_moe_size(tables: KernelTables, device: DeviceSpec, dtype: str, shape: tuple[float, float, float, float],
                  tp: int, ep: int, exclude: str | None = None) -> KernelTables:
    """`tables` (a GPU's own) with rows for the fused MoE layer of `shape` (hidden, expert
    intermediate size, top-k, experts) at moe_tp_size `tp` (ep 1) or moe_ep_size `ep` (tp 1) where
    its table lacks that size, by the ratio transfer of with_gpu_counts: at each token count
        log t(n) = sum over anchors a of w_a [log t_own(a) + log t_lender(n) - log t_lender(a)],
    the anchors the own measured sizes around n (log-size weights) or, beyond them, the nearest;
    the lender the measured GPU nearest in specs that measured this layer at n and at the anchors.
    Why: how the layer's time changes with the TP slice or the EP share is set by the kernel and
    its tuned tile configs at each per-GPU shape (which tile, how many experts per GPU hold
    tokens, when the launch floor takes over), shared by GPUs that run the same kernels; the
    level is the GPU's own. Log-log between the own sizes alone assumes a power law between them
    and misses where the config changes (DeepSeek-V3's EP8 rows at 1-8 tokens are 1.5-2.5x its
    EP4 and EP16 ones on every measured GPU). Held out on the tables (each size 2, 4, 8 removed in
    turn, tp and ep): 1.9-2.7 % median on H100, H200, B200, GB200 against 4.2-5.4 % for log-log
    between the own sizes; on the A100 (vLLM 0.14, lenders 0.24) about even with it (6.1 against
    5.4 % where both apply). Without a lender (a size no other GPU measured, TP 6) nothing is
    added and KernelTables.moe_ms takes log-log between the own sizes. Derived rows are stored
    under MOE_DERIVED + dtype."""
    rows = tables.arrays.get(f"moe/{dtype}")
    if rows is None or (tp > 1 and ep > 1) or max(tp, ep) <= 1:
        return tables
    axis, other, size = (5, 6, float(tp)) if ep <= 1 else (6, 5, float(ep))
    layer = _moe_layer(rows, shape, other)
    counts = np.array([c for c in np.unique(layer[:, axis]) if (layer[:, axis] == c).sum() >= 2])
    if len(counts) == 0 or size in counts:
        return tables
    near = bracket(size, counts)
    anchors: list[tuple[float, float]]
    if near is not None:
        anchors = [(float(counts[near[0]]), 1.0 - near[2]), (float(counts[near[1]]), near[2])]
    else:
        anchors = [(float(counts[0] if size < counts[0] else counts[-1]), 1.0)]
    lender = _moe_lender(f"moe/{dtype}", shape, axis, other, [size] + [a for a, _ in anchors], device,
                         {tables.name, exclude})
    if lender is None:
        return tables
    tokens = layer[layer[:, axis] == anchors[0][0], 0]

    def curve(part: np.ndarray, count: float) -> np.ndarray:
        sel = part[part[:, axis] == count]
        return pmath.log(loglog(tokens, sel[:, 0], sel[:, 7])[0])

    log_ms = sum(w * (curve(layer, a) + curve(lender, size) - curve(lender, a)) for a, w in anchors)
    new = np.column_stack([tokens, np.tile(np.asarray(shape, dtype=np.float64), (len(tokens), 1)),
                           np.full(len(tokens), float(tp if ep <= 1 else 1)), np.full(len(tokens), float(max(ep, 1))),
                           pmath.exp(log_ms)])
    arrays = dict(tables.arrays)
    key = MOE_DERIVED + dtype
    arrays[key] = new if key not in arrays else np.concatenate([arrays[key], new])
    return KernelTables(tables.name, arrays=arrays, scaled_from=tables.scaled_from, derived_counts=tables.derived_counts)


def _moe_layer(rows: np.ndarray, shape: tuple[float, float, float, float], other: int) -> np.ndarray:
    """The rows of one MoE layer shape with the other parallel size 1 (tp 1 for EP sizes, ep 1 for TP)."""
    return rows[np.all(rows[:, 1:5] == np.asarray(shape, dtype=np.float64), axis=1) & (rows[:, other] == 1)]


def _moe_lender(key: str, shape: tuple[float, float, float, float], axis: int, other: int, counts: list[float],
                device: DeviceSpec, used: set) -> np.ndarray | None:
    """The rows of the layer `shape` of the measured GPU nearest `device` that measured it at
    every size in `counts` (two or more token counts each); None if no GPU did."""
    for name in sorted((n for n in TABLE_DEVICE if n not in used), key=lambda n: _distance(table_device(n), device)):
        rows = load_tables(name).get(key)
        if rows is None:
            continue
        layer = _moe_layer(rows, shape, other)
        if all((layer[:, axis] == c).sum() >= 2 for c in counts):
            return layer
    return None


def tables_for_device(device: DeviceSpec) -> KernelTables | None:
    """The device's own tables (a user's from the catalog, else shipped), else the nearest
    measured GPU's scaled to it, else None."""
    own = own_tables(device)
    if own is not None:
        return own
    source = nearest_table(device)
    if source is None:
        return None
    warnings.warn(f"perf.model kernels: {device.key} has no kernel tables; using {TABLE_DEVICE[source]}'s, scaled "
                  "by the two devices' peak FLOP/s, memory bandwidth and link (reported as step_time_scaled_fraction)",
                  stacklevel=2)
    return borrowed_tables(source, device)
