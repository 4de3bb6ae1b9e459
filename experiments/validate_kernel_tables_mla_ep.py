"""Held-out checks of the kernel tables added for multi-head latent attention and expert
parallelism (simcost/data/kernels: mla_context/*, mla_generation/*, moe rows at moe_ep_size > 1,
nccl/*), and DeepSeek-V3 step times on 8 x H200, kernels against the roofline.

    python experiments/validate_kernel_tables_mla_ep.py

1. Interpolation held out: every measured point strictly inside a table's size axis (MLA: prompt
   length or attended context at each batch and head count; MoE: tokens at each EP shape; NCCL:
   bytes at each GPU count) is dropped and predicted log-log from its two neighbours, as the
   kernel model interpolates between measured points. Beside it, the roofline of the same rows
   with the catalog's mfu and mbu (what `auto` ran before these tables: simcost.perf.kernel_mla's
   module roofline, the MoE roofline of simcost.perf.kernel_moe, the expert_parallel all-to-all).
   Cells: median |error| % / worst signed error % (predicted / measured - 1).
2. MLA holes (batch x length beyond the collector's cap): the largest measured length of each
   batch row held out and predicted from the next smaller one scaled by the module roofline's
   ratio (simcost.perf.kernel_mla.mla_grid's rule), against the module roofline alone.
3. DeepSeek-V3 (FP8, bf16 KV) on 8 x H200: decode steps of 1-256 sequences and one-prompt prefill
   steps, TP8 and EP8 with data-parallel attention, the kernel model against the roofline.
4. The 8,192-token one-prompt prefill under EP8 with data-parallel attention taken apart per
   operator (the step's own grids and table rows; the parts must add up to the step), beside a
   FLOP count of each part on the GPU that runs it and the rate each part's time implies.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from simcost.catalog.specs import get_device
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_mla import mla_decode_roofline_s, mla_prefill_roofline_s, mla_weight_elements
from simcost.perf.kernel_moe import Rates, router_gate, router_topk_s
from simcost.perf.kernel_reference import kernel_step_time_s_py, unpack_grids
from simcost.perf.kernel_scaling import TABLE_DEVICE
from simcost.perf.kernel_tables import KernelTables, gemm_efficiency, load_tables
from simcost.perf.roofline import default_factors, efficiency_factors
from simcost.scenario.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def held_out(rows: np.ndarray, group_cols: list[int], x_col: int) -> tuple[np.ndarray, np.ndarray]:
    """(measured ms, predicted ms) of every point inside its group's x axis, from its neighbours."""
    measured, predicted = [], []
    keys = np.unique(rows[:, group_cols], axis=0)
    for key in keys:
        sel = rows[np.all(rows[:, group_cols] == key, axis=1)]
        sel = sel[np.argsort(sel[:, x_col])]
        x, y = np.log(sel[:, x_col]), np.log(sel[:, -1])
        for i in range(1, len(sel) - 1):
            w = (x[i] - x[i - 1]) / (x[i + 1] - x[i - 1])
            measured.append(sel[i, -1])
            predicted.append(np.exp((1 - w) * y[i - 1] + w * y[i + 1]))
    return np.array(measured), np.array(predicted)


def cell(measured: np.ndarray, predicted: np.ndarray) -> str:
    if len(measured) == 0:
        return "-"
    err = predicted / measured - 1.0
    return f"{100 * np.median(np.abs(err)):.1f} / {100 * err[np.argmax(np.abs(err))]:+.0f}"


def rates(key: str, fmt: str = "bf16") -> tuple[float, float]:
    """(FLOP/s, bytes/s) of a catalog device at its catalog mfu and mbu."""
    device = get_device(key)
    f = default_factors(device)
    return device.peak_flops.get(fmt, device.peak_flops["bf16"]) * f["mfu"], device.mem_bw_bytes_per_s * f["mbu"]


def interpolation_table() -> None:
    print("== held-out interpolation | roofline on the same rows (median |error| % / worst signed %) ==")
    print("| GPU | MLA prefill | MLA decode | MoE EP>1 | NCCL gather/scatter |")
    print("|---|---|---|---|---|")
    for name, key in TABLE_DEVICE.items():
        arrays = load_tables(name)
        cells = []
        for phase in ("context", "generation"):
            kv = "bfloat16"
            gemm = "fp8_block" if f"mla_{phase}/fp8_block_kv{kv}" in arrays else "bfloat16"
            rows = arrays.get(f"mla_{phase}/{gemm}_kv{kv}")
            if rows is None:
                cells.append("-")
                continue
            m, p = held_out(rows, [0, 2], 1)
            fmt, wb = ("fp8", 1.0) if gemm == "fp8_block" else ("bf16", 2.0)
            flops, bw = rates(key, fmt)
            b, n, h = rows[:, 0], rows[:, 1], rows[:, 2]
            roof = (mla_prefill_roofline_s(b, n, h, flops, bw, wb) if phase == "context"
                    else mla_decode_roofline_s(b, n, h, flops, bw, wb, 2.0)) * 1e3
            cells.append(f"{cell(m, p)} \\| {cell(rows[:, -1], roof)}")
        moe = [held_out(r[r[:, 6] > 1], [1, 2, 3, 4, 5, 6], 0) for k, r in arrays.items() if k.startswith("moe/")]
        cells.append(cell(np.concatenate([m for m, _ in moe]), np.concatenate([p for _, p in moe])))
        nccl = [arrays[k] for k in ("nccl/all_gather", "nccl/reduce_scatter") if k in arrays]
        cells.append(" ; ".join(cell(*held_out(r, [0], 1)) for r in nccl) or "-")
        print(f"| {name} | " + " | ".join(cells) + " |")


def hole_rule_table() -> None:
    print("\n== MLA holes: largest measured length per batch held out (median |error| % / worst signed %) ==")
    print("| GPU | prefill: edge scaled | prefill: roofline | decode: edge scaled | decode: roofline |")
    print("|---|---|---|---|---|")
    for name, key in TABLE_DEVICE.items():
        arrays = load_tables(name)
        flops, bw = rates(key)
        cells = []
        for phase in ("context", "generation"):
            rows = arrays.get(f"mla_{phase}/bfloat16_kvbfloat16")
            if rows is None:
                cells += ["-", "-"]
                continue
            measured, edge, roof = [], [], []
            for b, h in np.unique(rows[:, [0, 2]], axis=0):
                sel = rows[(rows[:, 0] == b) & (rows[:, 2] == h)]
                sel = sel[np.argsort(sel[:, 1])]
                if len(sel) < 3:
                    continue
                lengths = sel[-2:, 1]
                r = (mla_prefill_roofline_s(b, lengths, h, flops, bw, 2.0) if phase == "context"
                     else mla_decode_roofline_s(b, lengths, h, flops, bw, 2.0, 2.0))
                measured.append(sel[-1, -1])
                edge.append(sel[-2, -1] * r[1] / r[0])
                roof.append(r[1] * 1e3)
            m = np.array(measured)
            cells += [cell(m, np.array(edge)), cell(m, np.array(roof))]
        print(f"| {name} | " + " | ".join(cells) + " |")


def deepseek_steps() -> None:
    print("\n== DeepSeek-V3 FP8 on 8 x H200: step ms, kernels | roofline (measured share of the kernel step) ==")
    for path in ("deepseek_v3_h200.yaml", "deepseek_v3_h200_ep8.yaml"):
        s = load_scenario(ROOT / "configs" / "scenarios" / path)
        params = {}
        for model in ("kernels", "roofline"):
            run = dataclasses.replace(s, perf=dataclasses.replace(s.perf, model=model))
            params[model] = sm.step_params(run, plan_deployment(run))
        print(f"{path}: decode (sequences x context)")
        for b in (1, 8, 32, 64, 128, 256):
            cells = []
            for c in (1000, 4000, 16000):
                kv = b * c
                k = sm.step_time_s(params["kernels"].copy(), 0, b, kv + b, kv, 0)
                r = sm.step_time_s(params["roofline"].copy(), 0, b, kv + b, kv, 0)
                meas = kernel_step_time_s_py(params["kernels"], sm.NUM_PARAMS, params["kernels"][sm.P_STEP_OVERHEAD_S],
                                             0.0, 0, b, kv + b, kv, 0)[1] / k
                cells.append(f"{b}x{c}: {1e3 * k:.1f} | {1e3 * r:.1f} ({meas:.2f})")
            print("  " + "; ".join(cells))
        cells = []
        for n in (512, 2048, 8192):
            pairs = n * (n + 1) / 2
            k = sm.step_time_s(params["kernels"].copy(), n, 0, pairs, 0, 1)
            r = sm.step_time_s(params["roofline"].copy(), n, 0, pairs, 0, 1)
            cells.append(f"{n}: {1e3 * k:.1f} | {1e3 * r:.1f}")
        print("  one-prompt prefill: " + "; ".join(cells))


def loglog_at(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    return float(np.exp(np.interp(np.log(x), np.log(xs), np.log(ys))))


def deepseek_prefill_parts(n: int = 8192) -> None:
    """One prompt of n tokens on DeepSeek-V3 FP8, EP8 with data-parallel attention on 8 x H200,
    per operator: the prompt's group (one GPU) runs its MLA modules, dense parts and gate; the
    MoE layers run the EP8 row (one GPU's 32 experts over all n tokens, the tables' busiest GPU
    under the power-law router) with the NCCL gather and scatter and the top-k."""
    s = load_scenario(ROOT / "configs" / "scenarios" / "deepseek_v3_h200_ep8.yaml")
    run = dataclasses.replace(s, perf=dataclasses.replace(s.perf, model="kernels"))
    dep = plan_deployment(run)
    p = sm.step_params(run, dep)
    model, g, tables = dep.model, unpack_grids(p, sm.NUM_PARAMS), KernelTables("h200_sxm")
    layers, moe_layers = model.num_layers, model.num_layers - model.first_dense_layers
    factors = efficiency_factors(run, dep)
    rates = Rates(dep.device, dep.compute_format, factors["mfu"], factors["mbu"])
    m = np.array([float(n)])
    hidden, inter, k, experts = model.hidden_size, model.intermediate_size, model.experts_per_token, model.num_experts
    total = sm.step_time_s(p.copy(), n, 0, n * (n + 1) / 2, 0, 1)
    gate = float(router_gate(tables, model, rates, m)[0][0]) * moe_layers
    experts_s = float(tables.moe_ms("fp8_block", m, hidden, inter, k, experts, 1, 8)[0][0]) / 1e3 * moe_layers
    rest_s = loglog_at(n, g["tokens"], g["linear_s"]) - gate
    parts = {
        "MLA modules (128 heads on the prompt's GPU)": loglog_at(n, g["s"], g["prefill_s"][0]),
        "routed experts (EP8 row: 32 of 256 experts, all tokens)": experts_s,
        "NCCL all-gather + reduce-scatter": sum(float(tables.nccl_ms(op, 8, m * hidden * 2.0)[0][0])
                                                for op in ("all_gather", "reduce_scatter")) / 1e3 * moe_layers,
        "router top-k": float(router_topk_s(model, rates, m)[0]) * moe_layers,
        "router gate GEMM (bf16)": gate,
        "shared experts, 3 dense layers, norms": rest_s,
        "LM head (1 token)": loglog_at(1.0, g["tokens"], g["head_s"]),
        "step overhead": float(p[sm.P_STEP_OVERHEAD_S]),
    }
    print(f"\n== DeepSeek-V3 FP8, EP8 + DP attention, 8 x H200: one {n}-token prompt, {1e3 * total:.0f} ms ==")
    for name, sec in parts.items():
        print(f"  {name:58s} {1e3 * sec:7.1f} ms  {100 * sec / total:5.1f} %")
    print(f"  {'sum of the parts':58s} {1e3 * sum(parts.values()):7.1f} ms")
    # FLOPs each GPU runs: the prompt's GPU all non-expert work, every GPU 1/8 of the experts if balanced
    pairs = n * (n + 1) / 2
    mla_flops = layers * (2.0 * n * mla_weight_elements(128) + 2.0 * 128 * (128 + 64 + 128) * pairs)
    dense_params = (moe_layers * 3 * hidden * inter * model.num_shared_experts
                    + model.first_dense_layers * 3 * hidden * inter * (k + model.num_shared_experts))
    expert_flops = moe_layers * 2.0 * n * 3 * hidden * inter * k
    one_gpu = float(tables.moe_ms("fp8_block", m, hidden, inter, k, experts, 1, 1)[0][0]) / 1e3 * moe_layers
    fp8 = gemm_efficiency("h200_sxm", "fp8", dep.device.peak_flops["fp8"], dep.device.mem_bw_bytes_per_s)[0]
    fp8_rate = fp8 * dep.device.peak_flops["fp8"]
    print(f"  FLOPs and the rate each part's time implies; measured fp8 GEMM (8192^3): {fp8_rate / 1e12:.0f} TFLOP/s")
    rows = (("MLA modules, the prompt's GPU", mla_flops, parts["MLA modules (128 heads on the prompt's GPU)"]),
            ("shared + dense MLPs, the prompt's GPU", 2.0 * n * dense_params, rest_s),
            ("routed experts, per GPU if balanced (1/8)", expert_flops / 8, experts_s),
            ("routed experts, all 256 on one GPU (EP1 row)", expert_flops, one_gpu))
    for name, flops, sec in rows:
        print(f"  {name:46s} {flops / 1e12:7.1f} TFLOP in {1e3 * sec:6.1f} ms = {flops / sec / 1e12:6.0f} TFLOP/s;"
              f" at the fp8 GEMM rate {1e3 * flops / fp8_rate:6.1f} ms")


if __name__ == "__main__":
    interpolation_table()
    hole_rule_table()
    deepseek_steps()
    deepseek_prefill_parts()
