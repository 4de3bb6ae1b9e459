"""The fused MoE layer in the kernel-table step model, tensor- or expert-parallel.

Tensor parallel (expert_parallel 1): every GPU holds a 1/t slice of every expert; the measured
layer is the `moe_tp_size` t row, after which the layer's all-reduce runs (the step model's
all-reduce term).

Expert parallel over E GPUs (vLLM `--enable-expert-parallel`; vLLM runs no tensor parallelism
inside the experts then, so the rows are moe_tp_size 1, moe_ep_size E): each GPU holds n/E whole
experts and runs them over every token of the step routed to them. The collector measures this
as the layer on one GPU fed all N tokens with only its n/E experts local, which is what each GPU
does in vLLM once the tokens are gathered:
- without data-parallel attention (E == t) every GPU already holds all N tokens; vLLM sums the
  experts' outputs with the tensor-parallel all-reduce it runs anyway (no all-to-all);
- with data-parallel attention (d = E / t groups, each with its own requests) vLLM's default
  all2all backend (allgather_reducescatter) all-gathers the d groups' hidden states before the
  experts and reduce-scatters the outputs after: two NCCL collectives over d GPUs of N x hidden
  bf16 values each, from the NCCL tables (nccl-tests' size convention). Where the tables lack d
  GPUs and cannot derive them (more than 8; GB200's 8 is derived from its 4 by
  kernel_scaling.with_gpu_counts) the roofline all-to-all of simcost.perf.expert_parallel
  stands in, not counted as measured.
The token distribution is the tables' power_law_1.01 (a skewed router, the loaded GPU measured).

The router, which the measured rows leave out (aiconfigurator's vLLM MoE collector, collect_moe.py,
times `fused_experts` on precomputed top-k ids and weights; its MXFP4 path times vLLM's `FusedMoE`
forward on given router logits, which runs the top-k selection but not the gate):
- the gate GEMM, m tokens x hidden -> n_experts logits: vLLM builds it unquantized (bf16 weights,
  bf16 x bf16 with fp32 logits for DeepSeek: `GateLinear`/`ReplicatedLinear` without a quant
  config), replicated on every tensor-parallel rank, on the tokens a GPU holds before any
  dispatch; priced from the bf16 GEMM table at n = n_experts, k = hidden (router_gate);
- the top-k selection (softmax top-k for Qwen3/Mixtral/gpt-oss, DeepSeek's grouped noaux_tc
  top-k), after the dispatch, on every token the MoE layer sees: ROUTER_TOPK_S per layer plus
  reading the logits (router_topk_s); none for the measured MXFP4 rows, which include it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import simcost.portable_math as pmath
from simcost.catalog.types import DeviceSpec, ModelSpec
from simcost.perf.kernel_tables import KernelTables

# One MoE layer's top-k selection kernel at decode batch sizes, about 4 us in vLLM on Hopper: the
# softmax top-k with the float cast and renormalisation fused went from 10.4 to 4.0 us per layer
# (vllm-project/vllm PR 26717, Qwen3-30B-A3B trace, 2025-10); DeepSeek's grouped top-k kernel takes
# about 4 us on H200 (PR 34206, DeepSeek-R1 with 16 sequences, 2026-02; 7 us before it). Taken for
# every GPU and both router kinds: a simcost assumption beyond those two measurements.
ROUTER_TOPK_S = 4e-6
# simcost assumption: above decode sizes the kernel reads the fp32 logits and writes k (int32 id,
# fp32 weight) pairs per token at the memory roofline, added to the fixed cost
ROUTER_LOGIT_BYTES, ROUTER_CHOICE_BYTES = 4.0, 8.0
GATE_TABLE = "bfloat16"  # the gate stays unquantized in every checkpoint format vLLM loads
# the MoE rows whose collector feeds router logits to vLLM's FusedMoE, which runs the top-k itself
ROUTED_FORMAT_WITH_TOPK = "w4a16_mxfp4"


class Rates:
    """The roofline rates a component falls back to."""

    def __init__(self, device: DeviceSpec, compute_format: str, mfu: float, mbu: float):
        self.flop_rate = device.peak_flops[compute_format] * mfu
        self.byte_rate = device.mem_bw_bytes_per_s * mbu
        self.link_bytes_per_s = device.link_bytes_per_s

    def gemm_s(self, m, n, k, weight_b):
        return np.maximum(2.0 * m * n * k / self.flop_rate, (n * k * weight_b + 2.0 * m * (n + k)) / self.byte_rate)


@dataclass(frozen=True)
class ExpertParallel:
    """A replica's expert-parallel layout: E GPUs, d attention data-parallel groups, and the
    roofline all-to-all of one MoE layer (dispatch and combine: fixed s, s per step token) for
    when the NCCL tables lack d GPUs."""

    ep: int = 1
    dp: int = 1
    alltoall_fixed_s: float = 0.0
    alltoall_s_per_token: float = 0.0


@dataclass(frozen=True)
class MoeLayer:
    """One MoE layer's seconds at each step size of the token grid, and their measured share."""

    seconds: np.ndarray
    measured_share: np.ndarray


def with_fallback(ms: np.ndarray, inside: np.ndarray, roofline_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, measured share): the table's ms where it has a value, else the roofline."""
    have = ~np.isnan(ms)
    return np.where(have, ms / 1e3, roofline_s), (have & inside).astype(np.float64)


def router_gate(tables: KernelTables, model: ModelSpec, rates: Rates, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds, measured share) of one MoE layer's gate GEMM at m tokens: the bf16 GEMM row of
    n = n_experts, k = hidden. Fewer experts than the narrowest measured n (Mixtral's 8, the
    tables start at 32) take that narrowest row, not counted as measured: at these sizes the
    kernel is bound by its launch and by reading the m x hidden activations, not by n."""
    n, k = float(model.num_experts), float(model.hidden_size)
    rows = tables.arrays.get(f"gemm/{GATE_TABLE}")
    narrowest = float(rows[:, 1].min()) if rows is not None else n
    ms, inside = tables.gemm_ms(GATE_TABLE, m, max(n, narrowest), k)
    if n < narrowest:
        inside = np.zeros(m.shape, bool)
    return with_fallback(ms, inside, rates.gemm_s(m, n, k, 2.0))


def router_topk_s(model: ModelSpec, rates: Rates, m: np.ndarray) -> np.ndarray:
    """Seconds of one MoE layer's top-k selection over m tokens (never measured: ROUTER_TOPK_S)."""
    per_token = model.num_experts * ROUTER_LOGIT_BYTES + model.experts_per_token * ROUTER_CHOICE_BYTES
    return ROUTER_TOPK_S + m * per_token / rates.byte_rate


def moe_grid(tables: KernelTables, dtype: str, model: ModelSpec, t: int, weight_b: float, rates: Rates,
             m: np.ndarray, ep: ExpertParallel) -> MoeLayer:
    """One MoE layer at m step tokens (the replica's, all d groups together): the fused experts
    (measured, else the roofline) and, under data-parallel attention, the gather and scatter."""
    hidden, inter = model.hidden_size, model.intermediate_size  # a MoE entry's intermediate_size is one expert's
    k, n = model.experts_per_token, model.num_experts
    split = ep.ep if ep.ep > 1 else t  # GPUs the experts' weights and FLOPs are spread over
    ms, inside = tables.moe_ms(dtype, m, hidden, inter, k, n, t if ep.ep <= 1 else 1, max(ep.ep, 1))
    touched = n * (1.0 - pmath.power(1.0 - k / n, m))
    roof = np.maximum(6.0 * m * hidden * inter * k / split / rates.flop_rate,
                      touched * 3 * hidden * inter * weight_b / split / rates.byte_rate)
    seconds, share = with_fallback(ms, inside, roof)
    # the top-k selection, which only the MXFP4 rows include (module docstring)
    topk = router_topk_s(model, rates, m)
    if dtype == ROUTED_FORMAT_WITH_TOPK:
        topk = np.where(np.isnan(ms), topk, 0.0)
    share = seconds * share / (seconds + topk)
    seconds = seconds + topk
    if ep.dp > 1:
        message = m * hidden * 2.0
        gather, g_in = tables.nccl_ms("all_gather", ep.dp, message)
        scatter, s_in = tables.nccl_ms("reduce_scatter", ep.dp, message)
        roof_comm = (ep.alltoall_fixed_s + ep.alltoall_s_per_token * m) / 2.0
        for comm, comm_in in ((gather, g_in), (scatter, s_in)):
            s, sh = with_fallback(comm, comm_in, roof_comm)
            share = (seconds * share + s * sh) / (seconds + s)
            seconds = seconds + s
    return MoeLayer(seconds, share)
