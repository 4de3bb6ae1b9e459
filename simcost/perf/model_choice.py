"""`perf.model: auto` (the default): which step-time model a deployment runs, and why.

The kernel-table model (simcost.perf.kernel_model) is chosen where its held-out checks say it
can be trusted (docs/fidelity.md section 2), the roofline everywhere else:
- kernels: an NVIDIA GPU with its own measured tables (A100, H100, H200, B200, GB200, L40S, RTX PRO
  6000; any GPU whose catalog entry names its `kernel_tables`, judged by the same rules), or one
  that borrows the tables of a same-generation NVLink/NVSwitch GPU (TRUSTED_BORROWS:
  H100 <-> H200 held out land within 2-9 % median per step family, B200 <-> GB200 within 1-15 %),
  when the tables hold every operator of the model at this shape;
- roofline: CPUs, TPUs, edge boards and non-NVIDIA accelerators (no tables); GPUs that would borrow
  across a generation or between PCIe parts (A100 from H100: 3-32 % median; L40S <-> RTX PRO 6000
  at TP > 1: 35-330 %); a PCIe GPU at tensor_parallel > 1 (all-reduce over PCIe depends on the
  host's topology far more than on the GPU: the two measured PCIe GPUs' 8-GPU all-reduces differ
  12x for a 2x link ratio) or at expert_parallel > 1 (the same for its gather and scatter);
  tensor parallelism above 8 GPUs (no all-reduce table); expert parallelism across nodes (the
  NCCL tables are one node's); weight formats without tables (nvfp4 off Blackwell, fp32); shapes without tables (a multi-head latent attention shape
  other than DeepSeek-V3's, or on the A100, which has no MLA tables; a KV-head count not
  measured; data-parallel attention over a GPU count the NCCL tables neither hold nor can
  derive from neighbouring counts, kernel_scaling.with_gpu_counts); pipelined micro-batches (the kernel model has none); a
  calibrated profile or a roofline factor set in `perf` (they are the roofline's: choosing it
  keeps them meaningful).
Weight-only int8 and int4 (and mxfp4 on a dense model) have no GEMM rows: kernels runs with their
GEMMs and MoE layers from the roofline (simcost.perf.kernel_tables.gemms_from_roofline), the rest
from the tables, as for any operator the tables lack; so does a MoE layer no row measures.
An fp8 MoE layer whose table is slower than bf16's (the Hopper tables; not the block-scaled fp8
MoE of DeepSeek-style checkpoints) keeps the kernel tables for everything else and takes that
layer from the roofline: the whole roofline also priced the all-reduce by its legacy charge, before
the Hopper GPUs had a fitted fabric, 5x the tables' at TP8 (an fp8 MoE model then decoded 5x slower
than its bf16 twin), and it still misses the tables' measured attention and launch costs.
An explicit `perf.model` is used as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from simcost.catalog.types import DeviceSpec, ModelSpec
from simcost.perf.expert_parallel import devices_per_node, expert_parallel
from simcost.perf.kernel_import import own_tables
from simcost.perf.kernel_mla import mla_tabled
from simcost.perf.kernel_scaling import borrowed_tables, with_derived_rows
from simcost.perf.kernel_tables import DEVICE_TABLES, KernelTables, gemms_from_roofline, mlp_shapes, table_format

if TYPE_CHECKING:
    from simcost.perf.deployment import Deployment
    from simcost.scenario.scenario import Scenario

# GPUs without tables whose borrowed tables auto trusts: the same generation on NVLink/NVSwitch
# (H20 a Hopper die, like the H100 whose tables it takes; B300 a Blackwell Ultra one, from B200).
# Within a generation the leave-one-GPU-out check lands at 1-15 % median per step family (2-9 %
# for H100 <-> H200); across one (A100 from H100) at up to 32 %, worse than the roofline in some.
TRUSTED_BORROWS = {"h20": "h100_sxm", "b300": "b200_sxm"}
# a scale-up link below this is PCIe (Gen5 x16: 64 GB/s one way; NVLink 3-5: 300-900 GB/s)
PCIE_MAX_LINK_BYTES_PER_S = 100e9
MAX_TABLE_GPUS = 8  # the largest all-reduce the tables measure (GB200's stop at 4: its 8 is derived)
# perf keys that only the roofline reads: setting one under auto asks for the roofline
ROOFLINE_KEYS = ("mfu", "mbu", "prefill_overhead_s", "prefill_request_s", "attention_efficiency", "allreduce_latency_s")


class PerfChoice(NamedTuple):
    """What `scenario.perf.model` resolves to on a deployment, and why (a line for the summary)."""

    model: str
    why: str
    fp8_moe_from_roofline: bool = False  # auto on the Hopper tables: their fp8 MoE layer by the roofline


def choose_perf_model(scenario: Scenario, dep: Deployment) -> tuple[str, str]:
    """(model, why): the step-time model `scenario.perf.model` resolves to on `dep`."""
    choice = perf_choice(scenario, dep)
    return choice.model, choice.why


def perf_choice(scenario: Scenario, dep: Deployment) -> PerfChoice:
    """`choose_perf_model`'s answer, with what the kernel model must price differently."""
    perf = scenario.perf
    if perf.model != "auto":
        user = dep.device.kernel_tables if perf.model == "kernels" else None
        return PerfChoice(perf.model, "set in perf.model" + (f"; kernel tables from {tables_name(user)}" if user else ""))
    if getattr(dep.model, "serving", "tokens") == "per_item":
        return PerfChoice("roofline", "auto: a model served per item")
    if perf.profile:
        return PerfChoice("roofline", "auto: perf.profile is a calibrated roofline")
    given = [k for k in ROOFLINE_KEYS if getattr(perf, k, None) is not None]
    if given:
        return PerfChoice("roofline", f"auto: perf.{given[0]} is a roofline factor")
    tables, why = _auto_tables(dep.device, dep.tensor_parallel)
    if tables is None:
        return PerfChoice("roofline", f"auto: {why}")
    if dep.tensor_parallel > MAX_TABLE_GPUS:
        return PerfChoice("roofline", f"auto: no all-reduce table for {dep.tensor_parallel} GPUs (the tables stop at {MAX_TABLE_GPUS})")
    ep, dp = expert_parallel(scenario)
    if ep > 1 and ep > devices_per_node(scenario, dep.device):
        return PerfChoice("roofline", f"auto: expert_parallel {ep} spans nodes (the communication tables are one node's)")
    if ep > 1 and dep.device.link_bytes_per_s < PCIE_MAX_LINK_BYTES_PER_S:
        return PerfChoice("roofline", f"auto: {dep.device.key} runs expert parallelism over PCIe")
    # the GPU counts and MoE size its own tables lack, derived exactly as the kernel model derives them
    tables = with_derived_rows(tables, dep.device, dep.model, dep.weight_format, dep.tensor_parallel, ep, dp)
    missing = missing_operators(tables, dep.model, dep.tensor_parallel, dep.weight_format, dep.kv_cache_format,
                                ep, dp)
    if missing:
        return PerfChoice("roofline", f"auto: {missing}")
    if (scenario.hardware.pipeline_micro_batches or 1) > 1:
        return PerfChoice("roofline", "auto: hardware.pipeline_micro_batches is a roofline schedule")
    if _untrusted_fp8_moe(tables, dep.model, dep.tensor_parallel, dep.weight_format, ep):
        return PerfChoice("kernels", f"auto: {why}; {FP8_MOE_FROM_ROOFLINE}", fp8_moe_from_roofline=True)
    if gemms_from_roofline(dep.weight_format, mla_tabled(dep.model), dense=dep.model.num_experts <= 1):
        return PerfChoice("kernels", f"auto: {why}; its {dep.weight_format} GEMMs from the roofline (no measured rows)")
    if _unmeasured_moe(tables, dep.model, dep.tensor_parallel, dep.weight_format, ep):
        return PerfChoice("kernels", f"auto: {why}; its MoE layer from the roofline (no measured rows for its shape)")
    return PerfChoice("kernels", f"auto: {why}")


def _unmeasured_moe(tables: KernelTables, model: ModelSpec, t: int, weight_format: str, ep: int) -> bool:
    """A MoE layer no row (nor a size derived from rows) measures: the kernel model prices it by the
    roofline and the rest from the tables."""
    if model.num_experts <= 1:
        return False
    dtype = table_format("moe", weight_format, mla_tabled(model)) or weight_format
    ms, _ = tables.moe_ms(dtype, np.array([1.0, 256.0]), model.hidden_size, model.intermediate_size,
                          model.experts_per_token, model.num_experts, t if ep <= 1 else 1, max(ep, 1))
    return bool(np.isnan(ms).any())


FP8_MOE_FROM_ROOFLINE = "its fp8 MoE layer from the roofline (the measured one is slower than bf16: an untuned kernel path)"


def tables_name(path: str) -> str:
    """A user's kernel tables as `perf_model` names them: by file or folder name, not by path, so
    summary.json does not change with where the user's files sit."""
    return Path(path).name


def auto_tables(device: DeviceSpec, tp: int) -> KernelTables | None:
    """The kernel tables auto runs `device` with at tensor_parallel `tp` (None: the roofline)."""
    return _auto_tables(device, tp)[0]


def _auto_tables(device: DeviceSpec, tp: int) -> tuple[KernelTables | None, str]:
    """The tables auto would use on `device` at tensor_parallel `tp`, or None and why not."""
    if device.kind != "gpu" or "bf16" not in device.peak_flops:
        return None, f"no kernel tables for {device.kind} devices"
    name = device.kernel_tables or DEVICE_TABLES.get(device.key)
    lender = TRUSTED_BORROWS.get(device.key)
    if name is None and lender is None:
        return None, f"no kernel tables for {device.key} or a GPU of its generation"
    if tp > 1 and device.link_bytes_per_s < PCIE_MAX_LINK_BYTES_PER_S:
        return None, f"{device.key} all-reduces over PCIe at tensor_parallel {tp}"
    own = own_tables(device)  # a user's (catalog kernel_tables) are judged by the same rules as shipped ones
    if own is not None:
        return own, f"own tables from {tables_name(device.kernel_tables)}" if device.kernel_tables else "own tables"
    assert lender is not None
    return borrowed_tables(lender, device), f"{lender}'s tables scaled (same generation)"


def missing_operators(tables: KernelTables, model: ModelSpec, t: int, weight_format: str, kv_format: str,
                      ep: int = 1, dp: int = 1) -> str:
    """Why the tables cannot price `model` at tensor_parallel `t` (expert_parallel `ep` with `dp`
    attention groups) ('' when they can): an operator the kernel model would otherwise take from
    the roofline, or a table not to be trusted."""
    mla = mla_tabled(model)
    dtype = table_format("gemm", weight_format, mla, dense=model.num_experts <= 1)
    roof_gemms = gemms_from_roofline(weight_format, mla, dense=model.num_experts <= 1)  # and MoE layers
    if not roof_gemms and (dtype is None or not tables.has("gemm", dtype)):
        return f"no kernel tables for {weight_format} weights"
    kv_dtype = "fp8" if kv_format == "fp8" else "bfloat16"
    heads, kv_heads, hd = model.num_heads / t, max(model.num_kv_heads / t, 1.0), model.head_dim
    hidden = model.hidden_size
    shapes: list[tuple[float, float]] = []
    if model.is_mla:
        if not mla:
            return "no kernel table for this multi-head latent attention shape (the tables hold DeepSeek-V3's)"
        gemm_type = table_format("mla", weight_format, mla=True) or weight_format
        for phase in ("context", "generation"):
            if tables.mla_grid(phase, gemm_type, kv_dtype, heads) is None:
                return (f"no MLA {phase} table for {heads:g} heads per GPU with {weight_format} weights and "
                        f"{kv_format} KV")
    else:
        for op in ("context_attention", "generation_attention"):
            if (tables.attention_grid(op, kv_dtype, heads, kv_heads, hd) is None
                    and tables.nearest_heads(op, kv_dtype, heads, kv_heads, hd) is None
                    and (op == "context_attention" or tables.fold_factor(op, kv_dtype, heads, kv_heads, hd) is None)):
                return f"no {op.replace('_', ' ')} table for {kv_heads:g} KV heads of {hd} per GPU ({kv_format} KV)"
        shapes += [((heads + 2 * kv_heads) * hd, hidden), (hidden, heads * hd)]
    if model.num_experts > 1:
        for op in ("all_gather", "reduce_scatter"):
            if dp > 1 and np.isnan(tables.nccl_ms(op, dp, np.array([1e6]))[0]).any():
                return f"no NCCL {op.replace('_', '-')} table for {dp} GPUs (data-parallel attention's dispatch)"
        widths = [model.num_shared_experts * model.intermediate_size / t] if model.num_shared_experts else []
        if model.first_dense_layers:
            widths.append((model.experts_per_token + model.num_shared_experts) * model.intermediate_size / t)
        for w in widths:
            shapes += mlp_shapes(w, hidden)
    else:
        shapes += mlp_shapes(model.intermediate_size / t, hidden, model.mlp == "gated")
    for n, k in shapes if not roof_gemms else ():
        if np.isnan(tables.gemm_ms(str(dtype), np.array([16.0]), n, k)[0]).any():
            return f"no GEMM table for {n:g} x {k:g}"
    return ""


def _untrusted_fp8_moe(tables: KernelTables, model: ModelSpec, t: int, weight_format: str, ep: int) -> bool:
    """A per-tensor fp8 MoE layer whose measured rows are slower than bf16's (the Hopper tables):
    auto prices that layer by the roofline and keeps the tables for the rest."""
    return (model.num_experts > 1 and ep <= 1 and table_format("moe", weight_format, mla_tabled(model)) == "fp8"
            and _fp8_moe_slower(tables, model, t))


def _fp8_moe_slower(tables: KernelTables, model: ModelSpec, t: int) -> bool:
    """Whether the measured fp8 MoE layer takes longer than the bf16 one of the same shape at a
    weight-bound or a compute-bound token count: what the Hopper tables show (2-4x slower;
    B200's 0.4-0.6x), i.e. an untuned fp8 kernel path, not what an fp8 deployment would run
    (fp8 halves the bytes and doubles the peak). Not applied to GEMMs: Blackwell's fp8 GEMMs
    are slower than bf16 only at small m, and the roofline's fp8 factors come from those same
    GEMM tables (format_efficiency_ratio), so it would not price them differently."""
    tokens = np.array([16.0, 4096.0])
    shape = (model.hidden_size, model.intermediate_size, model.experts_per_token, model.num_experts, t, 1)
    fp8, _ = tables.moe_ms("fp8", tokens, *shape)
    bf16, _ = tables.moe_ms("bfloat16", tokens, *shape)
    return bool(np.any(fp8 > bf16))


def describe(choices: list[tuple[str, str, str]]) -> str:
    """One line for the run summary from (pool label, model, why) per pool."""
    distinct = {(m, w) for _, m, w in choices}
    if len(distinct) == 1:
        model, why = distinct.pop()
        return f"{model} ({why})"
    return "; ".join(f"{label}: {m} ({w})" for label, m, w in choices)
