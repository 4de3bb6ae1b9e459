"""Convert aiconfigurator's vLLM kernel tables (Parquet) into the compact .npz files simcost ships.

Run once, with pyarrow installed (it is not a simcost dependency):

    pip install pyarrow
    python experiments/convert_kernel_tables.py SOURCE_DIR

SOURCE_DIR holds one folder per GPU (a100_sxm, h100_sxm, ...) as in aiconfigurator's
`aic-core/src/aiconfigurator_core/systems/data/` (commit 095f58a51c4c). Each GPU becomes
simcost/data/kernels/<gpu>.npz of float32 arrays, one per operator and dtype (columns in
`COLUMNS`, latency in ms). Kept: GEMMs (bf16, per-tensor fp8, nvfp4; not block-scaled fp8,
whose small-m rows carry a host-side floor, see simcost.perf.kernel_tables.FORMAT_TABLES),
full-attention (window 0) prefill and decode attention per KV-cache dtype, vLLM custom all-reduce
(CUDA-graph and eager), fused MoE (bf16, fp8, fp8_block, nvfp4, w4a16_mxfp4; the power_law_1.01
token distribution; every moe_tp_size / moe_ep_size), DeepSeek-V3's
MLA attention modules per GEMM type and KV-cache dtype with the prefill query in bf16 (vLLM's
default; the opt-in fp8 prefill query, mla_dtype fp8, is dropped), and the NCCL all-gather,
reduce-scatter and all-to-all (expert-parallel dispatch and combine) with message_size converted
to bytes. Dropped: the NCCL all-reduce (vLLM's custom one is kept), the int4 and W4A8-MXFP8 MoE
rows (no dense int4 GEMM rows to go with them; W4A8 is opt-in in vLLM), GEMM probes at odd m above 17
(m = 2^j + 1, within a percent of m = 2^j), sliding-window attention rows, other MoE token
distributions. Where several kernels measured the same point the fastest is kept (vLLM picks its
fastest backend; the MLA rows' kernel_source is the backend vLLM itself chose for that batch,
e.g. FlashAttention for long prefills and FlashMLA for short ones on Hopper, so merging the
sources keeps vLLM's own choice).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "simcost" / "data" / "kernels"

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


def convert(gpu_dir: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq
    arrays: dict[str, np.ndarray] = {}
    for op, (rel, split, keys) in COLUMNS.items():
        path = gpu_dir / rel
        if not path.exists():
            continue
        t = pq.read_table(path).to_pydict()
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


def main() -> None:
    source = Path(sys.argv[1])
    OUT.mkdir(parents=True, exist_ok=True)
    for gpu_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        arrays = convert(gpu_dir)
        np.savez_compressed(OUT / f"{gpu_dir.name}.npz", **arrays)
        print(gpu_dir.name, {k: v.shape[0] for k, v in arrays.items()})


if __name__ == "__main__":
    main()
