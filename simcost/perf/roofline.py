"""The roofline's parameters: the efficiency factors a scenario runs with (perf section, calibrated
profile, device catalog), and the FLOPs, bytes and all-reduce terms of a model on t devices,
packed as `StepParams` for the step-time kernels (simcost.perf.step_model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from simcost.catalog.types import BYTES_PER_ELEMENT, FLAT_INTERCONNECTS, DeviceSpec, Interconnect, ModelSpec
from simcost.perf.kernel_import import own_tables
from simcost.perf.kernel_tables import (
    format_efficiency_ratio,
)
from simcost.perf.measurements import EFFICIENCY_FACTORS, FACTOR_DEFAULTS
from simcost.scenario.scenario import Scenario

if TYPE_CHECKING:
    from simcost.perf.deployment import Deployment




from simcost.perf.step_params import KIND_ROOFLINE, StepParams


def kv_heads_per_device(model: ModelSpec, tp: int) -> float:
    # With tp > num_kv_heads each device keeps one KV head (vLLM replicates them), so KV per device
    # stops shrinking; otherwise the heads split evenly.
    return max(model.num_kv_heads / tp, 1.0)


def default_factors(device: DeviceSpec) -> dict[str, float]:
    """The device catalog's factors, with FACTOR_DEFAULTS for those it does not list."""
    # the catalog's own factors are DeviceSpec fields; the others have defaults
    return {name: getattr(device, name) if hasattr(device, name) else FACTOR_DEFAULTS[name] for name in EFFICIENCY_FACTORS}


def pipeline_micro_batches(scenario: Scenario) -> int:
    """Micro-batches a pipelined step splits into: hardware.pipeline_micro_batches, else 1 (the
    stages in sequence). Opt-in, since filling and draining the pipeline inside every step prices
    weight-bound decode above the sequential step, while vLLM's virtual engines keep it full."""
    return scenario.hardware.pipeline_micro_batches or 1


def pipeline_link_bytes_per_s(scenario: Scenario, device: DeviceSpec) -> float:
    """The link between pipeline stages: `hardware.pipeline_link_gb_per_s`, else the device's
    scale-up link (stages in one node)."""
    gb_per_s = getattr(scenario.hardware, "pipeline_link_gb_per_s", None)
    return gb_per_s * 1e9 if gb_per_s else device.link_bytes_per_s


def efficiency_factors(scenario: Scenario, dep: Deployment) -> dict[str, float]:
    """The roofline's factors. Precedence: a value set in `perf`, then the calibrated profile
    named by `perf.profile`, then the device catalog's defaults, whose mfu and mbu are for 16-bit
    GEMMs: fp8 scales them by what fp8 kernels reach relative to bf16 (format_efficiency_ratio)."""
    factors = default_factors(dep.device)
    mfu_ratio, mbu_ratio = format_efficiency_ratio(dep.device.key, dep.compute_format, dep.device.peak_flops,
                                                   dep.device.mem_bw_bytes_per_s,
                                                   (lambda: own_tables(dep.device)) if dep.device.kernel_tables else None)
    factors["mfu"] *= mfu_ratio
    factors["mbu"] *= mbu_ratio
    profile_path = getattr(scenario.perf, "profile", None)
    if profile_path:
        from simcost.perf.measurements import load_profile  # lazy: calibrate imports this module
        factors.update(load_profile(profile_path, dep.device.key, dep.model.key, "perf.profile"))
    for name in EFFICIENCY_FACTORS:
        value = getattr(scenario.perf, name, None)
        if value is not None:
            factors[name] = value
    return factors


def roofline_params(device: DeviceSpec, model: ModelSpec, t: int, compute_format: str, weight_bytes: float,
                    kv_cache_format: str, *, mfu: float, mbu: float, step_overhead_s: float,
                    allreduce_latency_s: float, prefill_overhead_s: float = 0.0, attention_efficiency: float = 1.0,
                    prefill_request_s: float = 0.0, pipeline_parallel: int = 1, pipeline_link_bytes_per_s: float | None = None,
                    pipeline_micro_batches: float | None = None) -> np.ndarray:
    """The roofline of `model` (weight_bytes in total) on `t` x `device` with the given factors.

    Pipeline parallelism (`pipeline_parallel` stages of t devices each): the parameters are those
    of one stage holding every layer (the same FLOPs and bytes per tensor-parallel rank as the sum
    over stages), plus the activations sent between stages; the kernels split a step into up to
    `pipeline_micro_batches` (default pp) micro-batches that flow through the stages
    (simcost.perf.step_model._pipelined_step_s). With 1 the stages run one after another."""
    hidden = model.num_heads * model.head_dim
    expert_params, num_experts, experts_per_token = moe_shape(model)
    # FLOPs use the active parameters: the shared (attention, embedding, router) part plus k of
    # the n experts' share.
    active_params = model.num_params - expert_params + expert_params * experts_per_token / max(num_experts, 1)
    expert_bytes = weight_bytes * expert_params / model.num_params
    pipeline_s_per_token = 0.0
    if pipeline_parallel > 1:
        # (pp - 1) hops per step, each sending the step's bf16 hidden states
        link = pipeline_link_bytes_per_s or device.link_bytes_per_s
        pipeline_s_per_token = (pipeline_parallel - 1) * hidden * 2.0 / link
    comm_s_per_token = comm_fixed_s = 0.0
    if t > 1:
        # Megatron-style tensor parallelism: two all-reduces per layer (after attention and after
        # the MLP) of the step's bf16 activations; a ring all-reduce moves 2 (t-1)/t of the data
        # over each device's link. Its latency grows with the ring's 2 (t-1) hops, so the catalog's
        # allreduce_latency_s is the latency at t = 2 and t devices pay (t - 1) times it. (A flat
        # per-all-reduce latency cannot match the Splitwise A100 data, whose batch-1 decode stops
        # improving from TP4 to TP8, without also making TP2 slower than TP1 for small models.)
        allreduces = 2.0 * model.num_layers
        bytes_per_token = 2.0 * (t - 1) / t * hidden * 2.0
        comm_s_per_token = allreduces * bytes_per_token / device.link_bytes_per_s
        comm_fixed_s = allreduces * (t - 1) * allreduce_latency_s
        fabric = getattr(device, "interconnect", None)
        if fabric is not None:  # opt-in per device: the fabric's own latency and bandwidth
            comm_fixed_s, comm_s_per_token = allreduce_cost(fabric, model.num_layers, model.hidden_size, t)
    return StepParams(
        kind=KIND_ROOFLINE, step_overhead_s=step_overhead_s, prefill_overhead_s=prefill_overhead_s,
        prefill_request_s=prefill_request_s,
        pipeline_stages=float(pipeline_parallel),
        pipeline_micro_batches=float(pipeline_micro_batches or pipeline_parallel),
        flops_per_token=2.0 * active_params / t,
        # Causal attention: QK^T and PV cost 2 * 2 * d FLOPs per (query, key) pair per layer; the
        # caller counts pairs exactly (n(n+1)/2 for a fresh prefill), so no halving here. Attention
        # kernels reach a different fraction of peak than the GEMMs: attention_efficiency (relative
        # to mfu) scales its FLOPs instead of needing a second rate in the kernel.
        flops_per_attn_pair=4.0 * model.num_layers * hidden / t / attention_efficiency,
        flop_rate=device.peak_flops[compute_format] * mfu,
        weight_bytes=(weight_bytes - expert_bytes) / t, expert_bytes=expert_bytes / t,
        num_experts=num_experts, experts_per_token=experts_per_token,
        pipeline_s_per_token=pipeline_s_per_token,
        kv_bytes_per_token=(2.0 * model.num_layers * kv_heads_per_device(model, t) * model.head_dim
                            * BYTES_PER_ELEMENT[kv_cache_format]),
        byte_rate=device.mem_bw_bytes_per_s * mbu,
        comm_s_per_token=comm_s_per_token, comm_fixed_s=comm_fixed_s,
    ).to_array()


def allreduce_cost(fabric: Interconnect, num_layers: int, hidden_size: int, t: int) -> tuple[float, float]:
    """(fixed seconds, seconds per step token) of a step's 2 L all-reduces over t devices of a
    catalog `interconnect`: each moves the step's bf16 residual stream (tokens x hidden x 2 bytes),
    2 (t-1)/t of it over each device's link (ring or switch alike; a full mesh over its t - 1 links
    to the other devices at once), and pays the fabric's latency once on a switch or full mesh
    (near-flat in t) or once per hop of a ring's 2 (t-1)."""
    allreduces = 2.0 * num_layers
    hops = 1.0 if fabric.kind in FLAT_INTERCONNECTS else 2.0 * (t - 1)
    links = t - 1.0 if fabric.kind == "mesh" else 1.0
    return (allreduces * hops * fabric.latency_s,
            allreduces * 2.0 * (t - 1) / t * hidden_size * 2.0 / (fabric.bytes_per_s * links))


def expected_experts_touched(num_experts: float, experts_per_token: float, num_tokens: float) -> float:
    """Expected distinct experts (of n) that `num_tokens` tokens, each routed to k experts
    uniformly, touch in one layer: n (1 - (1 - k/n)^T). Plain Python; 0 for a dense model."""
    if num_experts <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - experts_per_token / num_experts) ** num_tokens)


def moe_shape(model: ModelSpec) -> tuple[float, int, int]:
    """(parameters in routed experts, experts per layer n, experts per token k); (0, 0, 0) for a
    dense model or a catalog that predates the MoE fields."""
    num_experts = int(getattr(model, "num_experts", 0) or 0)
    if num_experts <= 1:
        return 0.0, 0, 0
    return float(getattr(model, "expert_params", 0.0)), num_experts, int(getattr(model, "experts_per_token", 1))
