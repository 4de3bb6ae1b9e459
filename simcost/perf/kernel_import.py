"""A user's own kernel measurements (a catalog device's `kernel_tables: PATH`), and the conversion
of aiconfigurator's Parquet tables into simcost's arrays that also built the shipped .npz files
(experiments/convert_kernel_tables.py calls `convert`).

PATH is either a .npz in simcost's format (arrays named `<operator>/<dtype>`, columns as in
`COLUMNS`, latency in ms last; simcost/data/kernels/README.md) or one GPU's folder in
aiconfigurator's layout (gemm/ attention/ comm/ moe/ [mla/] Parquet files, as its collector
writes them), converted on load; Parquet needs pyarrow (`pip install 'simcost[parquet]'`). Any
subset of the operators will do: what is missing is priced as the kernel model prices shapes its
tables lack (the roofline, reported as not measured). Every table is checked (columns, finite
positive latencies and sizes, rows present); a bad one is an InputError naming the file
and the table. Loaded once per file version (path, size and modification time).

What the conversion keeps: GEMMs (bf16, per-tensor fp8, nvfp4; not block-scaled fp8, whose
small-m rows carry a host-side floor, see simcost.perf.kernel_tables.FORMAT_TABLES), full-attention
(window 0) prefill and decode attention per KV-cache dtype, vLLM custom all-reduce (CUDA-graph and
eager), fused MoE (bf16, fp8, fp8_block, nvfp4, w4a16_mxfp4; the power_law_1.01 token
distribution; every moe_tp_size / moe_ep_size), DeepSeek-V3's MLA attention modules per GEMM type
and KV-cache dtype with the prefill query in bf16 (vLLM's default; the opt-in fp8 prefill query,
mla_dtype fp8, is dropped), and the NCCL all-gather, reduce-scatter and all-to-all with
message_size converted to bytes. Dropped: the NCCL all-reduce (vLLM's custom one is kept), the
int4 and W4A8-MXFP8 MoE rows, GEMM probes at odd m above 17 (m = 2^j + 1, within a percent of
m = 2^j), sliding-window attention rows, other MoE token distributions. Where several kernels
measured the same point the fastest is kept (vLLM picks its fastest backend; the MLA rows'
kernel_source is the backend vLLM itself chose for that batch, so merging keeps vLLM's choice).
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from simcost.catalog.types import DeviceSpec
from simcost.errors import InputError
from simcost.perf.kernel_tables import DEVICE_TABLES, KernelTables

# array name -> (parquet file, row filter, key columns); latency (ms) is the last column
COLUMNS = {
    "gemm": ("gemm/gemm_perf.parquet", "gemm_dtype", ("m", "n", "k")),
    "context_attention": ("attention/context_attention_perf.parquet", "kv_cache_dtype",
                          ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim")),
    "generation_attention": ("attention/generation_attention_perf.parquet", "kv_cache_dtype",
                             ("batch_size", "context", "num_heads", "num_key_value_heads", "head_dim")),
    "allreduce": ("comm/custom_allreduce_perf.parquet", "backend", ("num_gpus", "message_size")),
    "moe": ("moe/moe_perf.parquet", "moe_dtype",
            ("num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size")),
    # split by "<gemm_type>_kv<kv_cache_dtype>" (see convert)
    "mla_context": ("mla/mla_context_module_perf.parquet", "mla_split", ("batch_size", "isl", "num_heads")),
    # MLA decode: `step` is the attended length, the new token included (isl is 1 throughout)
    "mla_generation": ("mla/mla_generation_module_perf.parquet", "mla_split", ("batch_size", "step", "num_heads")),
    "nccl": ("comm/nccl_perf.parquet", "op_name", ("num_gpus", "bytes")),
}
KEEP = {"gemm": {"bfloat16", "fp8", "nvfp4"}, "context_attention": {"bfloat16", "fp8"},
        "generation_attention": {"bfloat16", "fp8"}, "allreduce": {"vllm_graph", "vllm_eager"},
        "moe": {"bfloat16", "fp8", "fp8_block", "nvfp4", "w4a16_mxfp4"},
        "mla_context": {f"{g}_kv{kv}" for g in ("bfloat16", "fp8_block", "nvfp4") for kv in ("bfloat16", "fp8")},
        "nccl": {"all_gather", "reduce_scatter", "alltoall"}}
KEEP["mla_generation"] = KEEP["mla_context"]
# the Parquet columns each operator's conversion reads (besides its key columns made in convert)
_DERIVED: dict[str, dict[str, tuple[str, ...]]] = {"generation_attention": {"context": ("isl", "step")},
            "mla_context": {"mla_split": ("gemm_type", "kv_cache_dtype", "mla_dtype")},
            "mla_generation": {"mla_split": ("gemm_type", "kv_cache_dtype", "mla_dtype")},
            "nccl": {"bytes": ("message_size", "nccl_dtype")}}
_FILTERS: dict[str, tuple[str, ...]] = {"moe": ("distribution",)}
PARQUET_HINT = ("reading aiconfigurator's Parquet tables needs pyarrow: pip install 'simcost[parquet]', "
                "or give a .npz converted by experiments/convert_kernel_tables.py")


def _needed_columns(op: str) -> list[str]:
    split, keys = COLUMNS[op][1], COLUMNS[op][2]
    derived = _DERIVED.get(op, {})
    names = [c for name in (split,) + keys for c in derived.get(name, (name,))]
    return list(dict.fromkeys(names + list(_FILTERS.get(op, ())) + ["latency"]))


def _read_parquet(path: Path, op: str, label: str) -> dict[str, list]:
    """The columns of one aiconfigurator table, checked: present, rows, sizes >= 0, latency > 0."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(label, PARQUET_HINT) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"{label}: {path.name}", f"not a readable Parquet file ({type(e).__name__})") from None
    missing = [c for c in _needed_columns(op) if c not in table.column_names]
    if missing:
        raise InputError(f"{label}: {path.name}", f"missing column {', '.join(missing)} (expected aiconfigurator's "
                                                  f"{', '.join(_needed_columns(op))})")
    if table.num_rows == 0:
        raise InputError(f"{label}: {path.name}", "empty table (no rows)")
    t = table.to_pydict()
    numeric = [c for c in _needed_columns(op) if c not in (COLUMNS[op][1], "gemm_type", "kv_cache_dtype", "mla_dtype",
                                                          "nccl_dtype", "distribution")]
    for c in numeric:
        try:
            values = np.array([np.nan if v is None else v for v in t[c]], dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{label}: {path.name}", f"column {c}: expected numbers") from None
        _check_values(values, c == "latency", f"{label}: {path.name}", c, zero=True)
    return t


def _check_values(values: np.ndarray, latency: bool, where: str, column: str, zero: bool = False) -> None:
    """Latencies finite and > 0; sizes finite and > 0 (interpolation is in log size), or >= 0 with
    `zero` (a raw column such as decode's step, that the conversion adds to another)."""
    bad = ~np.isfinite(values) | ((values < 0) if zero and not latency else (values <= 0))
    if bad.any():
        i = int(np.argmax(bad))
        expected = "a finite latency > 0 ms" if latency else f"a finite size {'>=' if zero else '>'} 0"
        raise InputError(where, f"column {column}: {bad.sum()} bad value(s), first {float(values[i])} in row {i}; "
                                f"expected {expected}")


def convert(gpu_dir: Path, label: str | None = None) -> dict[str, np.ndarray]:
    """One GPU's aiconfigurator folder as simcost's float32 arrays `<operator>/<dtype>` (module doc)."""
    label = label or str(gpu_dir)
    arrays: dict[str, np.ndarray] = {}
    for op, (rel, split, keys) in COLUMNS.items():
        path = gpu_dir / rel
        if not path.exists():
            continue
        t = _read_parquet(path, op, label)
        if op == "generation_attention":  # decode of token `step` after a prompt of `isl`
            t["context"] = [i + s for i, s in zip(t["isl"], t["step"])]
        if op.startswith("mla_"):
            t["mla_split"] = [f"{g}_kv{kv}" if m == "bfloat16" else "" for g, kv, m
                              in zip(t["gemm_type"], t["kv_cache_dtype"], t["mla_dtype"])]
        if op == "nccl":  # the collector logs elements (nccl-tests' size in bytes / element bytes)
            t["bytes"] = [n * (2 if d == "half" else 1) for n, d in zip(t["message_size"], t["nccl_dtype"])]
        best: dict[tuple, dict[tuple, float]] = defaultdict(dict)
        for i in range(len(t["latency"])):
            if t[split][i] not in KEEP[op]:
                continue
            if "window_size" in t and t["window_size"][i] != 0:
                continue
            if op == "moe" and t["distribution"][i] != "power_law_1.01":
                continue
            if op == "gemm" and t["m"][i] > 17 and t["m"][i] % 2:  # m = 2^j + 1 probes: near-duplicates
                continue
            key = tuple(float(t[c][i]) for c in keys)
            group = best[t[split][i]]
            group[key] = min(group.get(key, np.inf), float(t["latency"][i]))
        for name, rows in best.items():
            arrays[f"{op}/{name}"] = np.array([k + (v,) for k, v in sorted(rows.items())], dtype=np.float32)
    return arrays


def check_tables(arrays: dict[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    """`arrays` as float64 after checking each is a known table with its columns, rows, finite
    positive latencies and positive sizes, each point once; at least one table. Rows come back
    sorted by their key columns, as the conversion writes them."""
    out = {}
    for key, rows in arrays.items():
        op = key.split("/")[0]
        if op not in COLUMNS or "/" not in key:
            raise InputError(f"{label}: {key}", f"unknown table; expected <operator>/<dtype> with operator one of "
                                                f"{', '.join(COLUMNS)}")
        columns = COLUMNS[op][2] + ("latency_ms",)
        if rows.ndim != 2 or rows.shape[1] != len(columns):
            raise InputError(f"{label}: {key}", f"shape {rows.shape}; expected rows of {len(columns)} columns "
                                                f"({', '.join(columns)})")
        if len(rows) == 0:
            raise InputError(f"{label}: {key}", "empty table (no rows)")
        try:
            rows = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{label}: {key}", f"dtype {rows.dtype}; expected numbers") from None
        for j, column in enumerate(columns):
            _check_values(rows[:, j], j == len(columns) - 1, f"{label}: {key}", column)
        # in the conversion's order (by the key columns, first one first): the lookups rely on it
        rows = rows[np.lexsort(rows[:, -2::-1].T)]
        repeated = np.all(rows[1:, :-1] == rows[:-1, :-1], axis=1)
        if repeated.any():
            point = ", ".join(f"{c} {v:g}" for c, v in zip(columns, rows[int(np.argmax(repeated)), :-1]))
            raise InputError(f"{label}: {key}", f"{repeated.sum()} row(s) repeat a measured point (first {point}); "
                                                "expected one latency per point")
        out[key] = rows
    if not out:
        raise InputError(label, f"no kernel table found; expected arrays <operator>/<dtype> with operator one of "
                                f"{', '.join(COLUMNS)} (or aiconfigurator's {', '.join(sorted({r.split('/')[0] for r, _, _ in COLUMNS.values()}))} folders)")
    return out


def table_files(path: Path) -> list[Path]:
    """The files kernel tables at `path` are read from: the .npz, or a folder's Parquet tables."""
    return [path] if path.is_file() else sorted(path.glob("*/*.parquet"))


def _signature(path: Path) -> tuple:
    """What identifies one version of the tables: every file's size and modification time."""
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in table_files(path))


def load_user_tables(path: str) -> dict[str, np.ndarray]:
    """The kernel tables at `path` (a .npz or an aiconfigurator folder), checked, float64."""
    p = Path(path).expanduser().resolve()
    label = f"kernel_tables {path}"
    if not p.exists():
        raise InputError(label, "no such file or folder")
    if not (p.is_dir() or (p.is_file() and p.suffix == ".npz")):
        raise InputError(label, "expected a .npz in simcost's format or a folder of aiconfigurator's Parquet tables")
    return _load(str(p), _signature(p), label)


@lru_cache(maxsize=8)
def _load(path: str, signature: tuple, label: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if p.is_dir():
        return check_tables(convert(p, label), label)
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except Exception as e:  # a corrupt or foreign file: numpy raises several types
        raise InputError(label, f"not a readable .npz ({type(e).__name__})") from None
    return check_tables(arrays, label)


def own_tables(device: DeviceSpec) -> KernelTables | None:
    """The device's own measured tables: its catalog kernel_tables (a user's), else the shipped
    ones of its key; None without either."""
    if device.kernel_tables is not None:
        return KernelTables(f"user:{device.kernel_tables}", arrays=load_user_tables(device.kernel_tables))
    name = DEVICE_TABLES.get(device.key)
    return None if name is None else KernelTables(name)
