"""Leave one tensor-parallel degree out: for each GPU with kernel tables (simcost/data/kernels) and
each measured degree t in 2, 4, 8, remove every row that belongs to t and predict it the way
simcost prices a degree its tables lack; compare with the removed measurements.

    python experiments/validate_kernel_tables_tp.py

The tables with a GPU-count axis and how a missing count is priced:
- all-reduce (vLLM custom, CUDA-graph and eager) and NCCL all-gather / reduce-scatter / all-to-all,
  by num_gpus: from the GPU's own other counts and how the nearest measured GPU's times change
  between those counts (simcost.perf.kernel_scaling.with_gpu_counts); before, a missing
  all-reduce count was the nearest GPU's rows scaled by specs, a missing NCCL count the roofline;
- fused MoE by moe_tp_size (ep 1) or moe_ep_size (tp 1): the GPU's own sizes around it times how
  the nearest measured GPU's layer changes between them (kernel_scaling.with_moe_size), else
  log-log between the own sizes (KernelTables.moe_ms); before, the roofline;
- attention by heads per GPU (TP divides the heads): the nearest measured query-head count with
  the same KV heads, scaled by heads, or for decode a larger batch of fewer KV heads
  (kernel_model._attention_grid); MLA modules: the nearest head count within 2x, scaled by heads
  (kernel_mla.mla_grid). Unchanged here.
GEMMs have no GPU-count axis (a TP degree's shards are n x k shapes on a grid shared by every
degree) and stay in.

Two tables, cells median |error| % / worst signed error % (predicted / measured - 1), "now \\|
before" where the method changed:
1. per operator family, each GPU and held-out degree: every removed row (attention and MLA at
   the layouts of Llama-3.1-70B, Qwen3-30B-A3B and DeepSeek-V3 at t);
2. whole steps of the kernel model (GPU time, as experiments/validate_kernel_tables.py) with all
   of t's rows removed, against the model on the full tables;
3. attention beyond the measured head counts (a degree whose layout lies outside them): the
   largest and the smallest query-head count of each measured (KV heads, head_dim) removed.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
from validate_kernel_tables import STEPS, cell, roofline_ms

from simcost.catalog.specs import get_model
from simcost.perf.calibrate import Pair
from simcost.perf.expert_parallel import alltoall_cost
from simcost.perf.kernel_mla import mla_grid
from simcost.perf.kernel_model import _attention_grid
from simcost.perf.kernel_moe import ExpertParallel
from simcost.perf.kernel_scaling import (
    GPU_COUNT_TABLES,
    TABLE_DEVICE,
    _distance,
    scale_rows,
    table_device,
    with_gpu_counts,
    with_moe_size,
)
from simcost.perf.kernel_tables import KernelTables, load_tables
from simcost.perf.roofline import default_factors
from simcost.perf.step_model import kernel_step_params, step_time_s

DEGREES = (2, 4, 8)
OPERATOR_FAMILIES = ("allreduce graph", "allreduce eager", "nccl", "moe decode", "moe prefill", "moe ep decode",
                     "moe ep prefill",
                     "attention prefill", "attention decode", "mla prefill", "mla decode")
EDGE_FAMILIES = ("prefill above", "prefill below", "decode above", "decode below")
ATTENTION_MODELS = ("llama-3.1-70b", "qwen3-30b-a3b")
# (model, weight format, degrees) of the whole-step check
STEP_MODELS = (("llama-3.1-70b", "bf16", DEGREES), ("qwen3-30b-a3b", "bf16", DEGREES), ("deepseek-v3", "fp8", (4, 8)))
# expert parallel with data-parallel attention over as many groups (TP1): the NCCL gather/scatter
EP_MODELS = (("deepseek-v3", "fp8", (4, 8)),)


def layout(model, t: int) -> tuple[float, float, float]:
    """(query heads, KV heads, head_dim) per GPU of `model` at tensor parallel t."""
    return model.num_heads / t, max(model.num_kv_heads / t, 1.0), float(model.head_dim)


class Before(KernelTables):
    """Tables that price a missing head count as simcost did before: the nearest measured one
    scaled by heads, never from two measured ones."""

    def attention_heads(self, *args):
        return None

    def mla_between(self, *args):
        return None


def without_degree(name: str, t: int, models=()) -> dict[str, np.ndarray]:
    """`name`'s tables without the rows of degree t: all-reduce and NCCL at t GPUs, MoE rows at
    moe_tp_size t (no EP), and each of `models`' attention layout (MLA: head count) at t."""
    out = {}
    for key, rows in load_tables(name).items():
        op = key.split("/")[0]
        keep = np.ones(len(rows), bool)
        if key in GPU_COUNT_TABLES:
            keep = rows[:, 0] != t
        elif op == "moe":  # tensor (ep 1) or expert parallel (tp 1) over t GPUs
            keep = ~(((rows[:, 5] == t) & (rows[:, 6] == 1)) | ((rows[:, 5] == 1) & (rows[:, 6] == t)))
        for model in models:
            if op in ("context_attention", "generation_attention") and not model.is_mla:
                keep &= ~np.all(rows[:, 2:5] == layout(model, t), axis=1)
            elif op.startswith("mla_") and model.is_mla:
                keep &= rows[:, 2] != model.num_heads / t
        out[key] = rows[keep]
    return out


def _add(out: dict, fam: str, pred: np.ndarray, measured: np.ndarray) -> None:
    out.setdefault(fam, []).append(pred / measured - 1.0)


def previous_borrowed(name: str) -> dict[str, np.ndarray]:
    """The all-reduce rows the previous rule gave `name` for every count: the nearest other GPU
    with that count, its rows scaled to `name` by specs (kernel_scaling.scale_rows)."""
    device, out = table_device(name), {}
    ranked = sorted((n for n in TABLE_DEVICE if n != name), key=lambda n: _distance(table_device(n), device))
    for key in ("allreduce/vllm_graph", "allreduce/vllm_eager"):
        parts = []
        for g in (2.0, 4.0, 8.0):
            for other in ranked:
                rows = load_tables(other).get(key)
                if rows is not None and g in rows[:, 0]:
                    scaled = scale_rows("allreduce", key.split("/")[1], rows[rows[:, 0] == g], table_device(other),
                                        device)
                    if scaled is not None:
                        parts.append(scaled)
                    break
        out[key] = np.concatenate(parts)
    return out


def count_errors(name: str, t: int, now: dict, before: dict) -> None:
    """All-reduce and NCCL rows at t GPUs, derived from the other counts (now) and, for the
    all-reduce, borrowed from the nearest GPU scaled (before)."""
    own, device = load_tables(name), table_device(name)
    derived = with_gpu_counts(KernelTables(name, arrays=without_degree(name, t)), device, (t,))
    borrowed = previous_borrowed(name)
    for key in GPU_COUNT_TABLES:
        if key not in own or t not in own[key][:, 0] or t not in derived.arrays[key][:, 0]:
            continue
        fam = "nccl" if key.startswith("nccl") else key.replace("/vllm_", " ")
        rows = own[key][own[key][:, 0] == t]
        got = derived.arrays[key][derived.arrays[key][:, 0] == t]
        _add(now, fam, np.array([got[got[:, 1] == s, 2][0] for s in rows[:, 1]]), rows[:, 2])
        if key.startswith("allreduce") and key in borrowed:
            lent = borrowed[key][borrowed[key][:, 0] == t]
            _add(before, fam, np.array([lent[lent[:, 1] == s, 2][0] for s in rows[:, 1]]), rows[:, 2])


def moe_errors(name: str, t: int, now: dict, before: dict) -> None:
    """MoE rows at moe_tp_size t (no EP) and at moe_ep_size t (TP1), from the measured sizes on
    either side (now) and the roofline with the catalog's factors (before)."""
    held, device = KernelTables(name, arrays=without_degree(name, t)), table_device(name)
    for key, rows in load_tables(name).items():
        if not key.startswith("moe/"):
            continue
        dtype = key.split("/")[1]
        for tp, ep, kind in ((t, 1, "moe"), (1, t, "moe ep")):
            sel = rows[(rows[:, 5] == tp) & (rows[:, 6] == ep)]
            for shape in np.unique(sel[:, 1:5], axis=0):
                part = sel[np.all(sel[:, 1:5] == shape, axis=1)]
                derived = with_moe_size(held, device, dtype, tuple(shape), tp, ep)
                pred, _ = derived.moe_ms(dtype, part[:, 0], *shape, tp, ep)
                roof = roofline_ms("moe", dtype, part, name)
                for fam, where in ((f"{kind} decode", part[:, 0] <= 128), (f"{kind} prefill", part[:, 0] > 128)):
                    if where.any() and not np.isnan(pred[where]).any():
                        _add(now, fam, pred[where], part[where, -1])
                        if roof is not None:
                            _add(before, fam, roof[where], part[where, -1])


def _compare(now: dict, fam: str, full, held) -> None:
    """Held-out grid against the full one at the full grid's measured points both grids hold."""
    batches, lengths, seconds, share = full
    h_batches, h_lengths, h_seconds = held[0], held[1], held[2]
    for i, b in enumerate(batches):
        for j, n in enumerate(lengths):
            hi, hj = np.flatnonzero(h_batches == b), np.flatnonzero(h_lengths == n)
            if share[i, j] == 1.0 and len(hi) and len(hj) and np.isfinite(h_seconds[hi[0], hj[0]]):
                _add(now, fam, np.array([h_seconds[hi[0], hj[0]]]), np.array([seconds[i, j]]))


def attention_errors(name: str, t: int, now: dict, before: dict) -> None:
    """Attention at Llama-3.1-70B's and Qwen3-30B-A3B's layouts at t, and DeepSeek-V3's MLA
    modules at 128 / t heads, priced without them (what the kernel model does; before: the
    nearest head count scaled by heads)."""
    never = lambda *a: np.full(np.broadcast(*a[:2]).shape, np.nan)  # noqa: E731 (no roofline: compare tables only)
    for key in ATTENTION_MODELS:
        model = get_model(key)
        full, arrays = KernelTables(name), without_degree(name, t, (model,))
        for dtype in ("bfloat16", "fp8"):
            for op, fam in (("context_attention", "attention prefill"), ("generation_attention", "attention decode")):
                if not full.has(op, dtype) or full.attention_grid(op, dtype, *layout(model, t)) is None:
                    continue
                ref = _attention_grid(full, op, dtype, model, t, never)
                for out, cls in ((now, KernelTables), (before, Before)):
                    _compare(out, fam, ref, _attention_grid(cls(name, arrays=arrays), op, dtype, model, t, never))
    model = get_model("deepseek-v3")
    full, arrays = KernelTables(name), without_degree(name, t, (model,))
    for key in [k for k in full.arrays if k.startswith("mla_")]:
        phase, rest = key[len("mla_"):].split("/")
        gemm_type, kv = rest.rsplit("_kv", 1)
        heads = model.num_heads / t
        if full.mla_grid(phase, gemm_type, kv, heads) is None:
            continue
        ref = mla_grid(full, phase, gemm_type, kv, heads, never)
        for out, cls in ((now, KernelTables), (before, Before)):
            got = mla_grid(cls(name, arrays=arrays), phase, gemm_type, kv, heads, never)
            if ref is not None and got is not None:
                _compare(out, f"mla {'prefill' if phase == 'context' else 'decode'}", ref, got)


def edge_head_errors(name: str) -> dict[str, dict[str, list]]:
    """The largest and the smallest measured query-head count of every attention layout (KV heads,
    head_dim) with three or more removed in turn: {"now"|"before": {"<op> above|below": errors}}
    (now: continued from the two nearest; before: the nearest scaled by heads)."""
    never = lambda *a: np.full(np.broadcast(*a[:2]).shape, np.nan)  # noqa: E731
    out: dict[str, dict[str, list]] = {"now": {}, "before": {}}
    for key, rows in load_tables(name).items():
        op, dtype = key.split("/")
        if op not in ("context_attention", "generation_attention"):
            continue
        for kv, hd in np.unique(rows[:, 3:5], axis=0):
            counts = np.unique(rows[(rows[:, 3] == kv) & (rows[:, 4] == hd), 2])
            for h, side in ((counts[-1], "above"), (counts[0], "below")) if len(counts) >= 3 else ():
                drop = (rows[:, 2] == h) & (rows[:, 3] == kv) & (rows[:, 4] == hd)
                arrays = {key: rows[~drop]}
                model = dataclasses.replace(get_model("llama-3.1-8b"), num_heads=int(h), num_kv_heads=int(kv),
                                            head_dim=int(hd), num_layers=1)  # only the layout is read
                fam = f"{'prefill' if op == 'context_attention' else 'decode'} {side}"
                ref = _attention_grid(KernelTables(name), op, dtype, model, 1, never)
                for which, cls in (("now", KernelTables), ("before", Before)):
                    _compare(out[which], fam, ref, _attention_grid(cls(name, arrays=arrays), op, dtype, model, 1, never))
    return out


def before_tables(name: str, t: int, model) -> KernelTables:
    """The held-out tables as simcost priced them before: the all-reduce at t borrowed from the
    nearest GPU scaled, no NCCL at t, the MoE layer's TP rows gone (the roofline), a missing head
    count from the nearest scaled by heads."""
    arrays = without_degree(name, t, (model,))
    lent = previous_borrowed(name)
    derived = {}
    for key in ("allreduce/vllm_graph", "allreduce/vllm_eager"):
        if key in arrays and key in lent:
            arrays[key] = np.concatenate([arrays[key], lent[key][lent[key][:, 0] == t]])
            derived[key] = frozenset({float(t)})
    if model.num_experts > 1:  # the old lookup took only the exact (tp, ep) row: none of the layer's
        for key in [k for k in arrays if k.startswith("moe/")]:
            rows = arrays[key]
            arrays[key] = rows[~np.all(rows[:, 1:5] == [model.hidden_size, model.intermediate_size,
                                                        model.experts_per_token, model.num_experts], axis=1)]
    # scaled_from set: kernel_params does not derive the missing counts (the old behaviour)
    return Before(name, arrays=arrays, scaled_from="(before)", derived_counts=derived)


def _configs(own: dict) -> list[tuple[str, str, int, int]]:
    """(model, weight format, tensor parallel, expert parallel with as many attention groups)
    of the whole-step check whose degree the GPU measured (GB200: no 8)."""
    out = [(m, f, t, 1) for m, f, degrees in STEP_MODELS for t in degrees if t in own["allreduce/vllm_graph"][:, 0]]
    return out + [(m, f, 1, e) for m, f, degrees in EP_MODELS for e in degrees
                  if "nccl/all_gather" in own and e in own["nccl/all_gather"][:, 0]]


def step_errors(name: str) -> dict[str, dict[str, np.ndarray]]:
    """{"now"|"before": {"<model> TP<t>|EP<e> DP<e> prefill|decode": signed errors}} of whole steps."""
    device = table_device(name)
    out: dict[str, dict[str, list]] = {"now": {}, "before": {}}
    own = load_tables(name)
    factors = {**default_factors(device), "step_overhead_s": 0.0}
    kw = dict(step_overhead_s=0.0, cuda_graphs=True, eager_s_per_layer=0.0)
    for model_key, weight_format, t, e in _configs(own):
        try:
            pair = Pair.of(device.key, model_key, weight_format)
        except Exception:  # e.g. fp8 on the A100
            continue
        if pair.model.is_mla and not any(k.startswith("mla_") for k in own):
            continue
        held = max(t, e)
        ep = ExpertParallel()
        if e > 1:
            fixed_s, per_token_s = alltoall_cost(pair.model, device, e, 8, device.allreduce_latency_s, 0.0)
            layers = pair.model.num_layers - pair.model.first_dense_layers
            ep = ExpertParallel(ep=e, dp=e, alltoall_fixed_s=fixed_s / layers, alltoall_s_per_token=per_token_s / layers)
        roof = pair.params(t, factors)
        args = (roof, pair.device, pair.model, t, pair.weight_format, "bf16", pair.compute_format, factors)
        ref = kernel_step_params(*args, expert_parallel=ep, **kw)
        now = kernel_step_params(*args, tables=KernelTables(name, arrays=without_degree(name, held, (pair.model,))),
                                 expert_parallel=ep, **kw)
        before = kernel_step_params(*args, tables=before_tables(name, held, pair.model), expert_parallel=ep, **kw)
        split = f"TP{t}" if e == 1 else f"EP{e} DP{e}"
        for prompt, r, d, c in STEPS:
            pairs = prompt * (prompt / max(r, 1) + 1) / 2.0 + d * (c + 1)
            times = [step_time_s(p, prompt, d, pairs, float(d * c), r) for p in (ref, now, before)]
            fam = f"{model_key} {split} {'decode' if d else 'prefill'}"
            out["now"].setdefault(fam, []).append(times[1] / times[0] - 1.0)
            out["before"].setdefault(fam, []).append(times[2] / times[0] - 1.0)
    return {k: {f: np.array(v) for f, v in fams.items()} for k, fams in out.items()}


def run() -> dict:
    """Operator errors per (GPU, degree) and step errors per GPU (tests/test_kernel_model.py reads them)."""
    ops: dict[tuple[str, int], dict[str, dict[str, np.ndarray]]] = {}
    for name in TABLE_DEVICE:
        for t in DEGREES:
            now: dict[str, list] = {}
            before: dict[str, list] = {}
            count_errors(name, t, now, before)
            moe_errors(name, t, now, before)
            attention_errors(name, t, now, before)
            ops[(name, t)] = {"now": {f: np.concatenate(v) for f, v in now.items()},
                              "before": {f: np.concatenate(v) for f, v in before.items()}}
    steps = {name: step_errors(name) for name in TABLE_DEVICE}
    edges = {name: {k: {f: np.concatenate(v) for f, v in fams.items()} for k, fams in edge_head_errors(name).items()}
             for name in TABLE_DEVICE}
    return {"operators": ops, "steps": steps, "edges": edges}


def both(errs: dict, fam: str) -> str:
    now, before = errs["now"].get(fam), errs["before"].get(fam)
    return cell(now) if before is None else f"{cell(now)} \\| {cell(before)}"


def pooled(errors: dict, families, gpus=None, which: str = "now") -> dict[str, dict[str, float]]:
    """Per family over the GPUs (all unless `gpus`): median of |errors| and worst |error|, % (of
    simcost's method `which`: now or before)."""
    out = {}
    for fam in families:
        e = [v[which][fam] for k, v in errors.items() if fam in v[which]
             and (gpus is None or (k[0] if isinstance(k, tuple) else k) in gpus)]
        if e:
            e = np.concatenate(e)
            out[fam] = {"median_pct": float(np.median(np.abs(e)) * 100), "worst_pct": float(np.max(np.abs(e)) * 100)}
    return out


NVLINK = ("a100_sxm", "h100_sxm", "h200_sxm", "b200_sxm", "gb200")


def main() -> None:
    warnings.simplefilter("ignore")
    result = run()
    print("\n== per operator, degree t's rows removed (median |error| % / worst signed %; now \\| before) ==")
    print("| GPU | t | " + " | ".join(OPERATOR_FAMILIES) + " |")
    print("|---|---|" + "---|" * len(OPERATOR_FAMILIES))
    for (name, t), errs in result["operators"].items():
        print(f"| {TABLE_DEVICE[name]} | {t} | " + " | ".join(both(errs, f) for f in OPERATOR_FAMILIES) + " |")
    families = sorted({f for v in result["steps"].values() for f in v["now"]},
                      key=lambda f: (f.split()[0], int(f.split()[1][2:]), f))
    print("\n== whole steps, kernel model GPU time, degree t's rows removed (now \\| before) ==")
    for chunk in (families[i:i + 6] for i in range(0, len(families), 6)):
        print("| GPU | " + " | ".join(chunk) + " |")
        print("|---|" + "---|" * len(chunk))
        for name, errs in result["steps"].items():
            print(f"| {TABLE_DEVICE[name]} | " + " | ".join(both(errs, f) if f in errs["now"] else "-"
                                                            for f in chunk) + " |")
        print()
    print("== attention beyond the measured head counts: the largest / smallest of each layout removed "
          "(now \\| before) ==")
    print("| GPU | " + " | ".join(EDGE_FAMILIES) + " |")
    print("|---|" + "---|" * len(EDGE_FAMILIES))
    for name, errs in result["edges"].items():
        print(f"| {TABLE_DEVICE[name]} | " + " | ".join(both(errs, f) for f in EDGE_FAMILIES) + " |")
    print()
    for title, errs, fams in (("per operator", result["operators"], OPERATOR_FAMILIES),
                              ("whole steps", result["steps"], families),
                              ("beyond the head counts", result["edges"], EDGE_FAMILIES)):
        print(f"{title}, NVLink GPUs pooled (median |error| % / worst |error| %, now | before):")
        before = pooled(errs, fams, NVLINK, "before")
        for fam, s in pooled(errs, fams, NVLINK).items():
            b = before.get(fam)
            was = "" if b is None else f" | {b['median_pct']:5.1f} / {b['worst_pct']:5.1f}"
            print(f"  {fam:<32} {s['median_pct']:5.1f} / {s['worst_pct']:5.1f}{was}")


if __name__ == "__main__":
    main()
