"""Expert parallelism for mixture-of-experts models, with optional data-parallel attention
(vLLM's `--enable-expert-parallel`, with `--data-parallel-size` for DP attention).

Layout of one replica with `hardware.expert_parallel: E` and `tensor_parallel: t`:
- without data_parallel_attention, E == t: the t devices keep whole experts (n/E each) instead of
  a 1/t slice of every expert. Memory per device and FLOPs are unchanged; the MoE layers'
  all-reduce is replaced by an all-to-all dispatch and combine.
- with data_parallel_attention, d = E / t attention groups of t devices each hold the non-expert
  weights (split over t) and their own KV cache; the E devices together hold the experts, n/E each.
  The replica spans E x pipeline_parallel devices.

One engine schedules the whole replica (vLLM's DP ranks step in lockstep for the MoE layers, idle
ranks running dummy batches): its batch is assumed spread evenly over the d groups, so per device
the attention, KV and non-expert work of a step is 1/d of it. Load imbalance between groups and
between experts is left out (both make real steps slower).

All-to-all per MoE layer, each way (dispatch, then combine): every device sends its N/E of the
step's N tokens to their k experts, (E-1)/E of them on other devices: bytes = N/E x hidden x 2
(bf16) x k x (E-1)/E, costing a latency plus bytes over the link. Within a node (devices_per_node)
that link is the scale-up one; an E beyond the node sends the off-node share over the NIC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcost.catalog.types import GB, DeviceSpec, ModelSpec
from simcost.errors import InputError
from simcost.perf.kernel_moe import ExpertParallel

if TYPE_CHECKING:
    from simcost.perf.deployment import Deployment
    from simcost.scenario.scenario import Scenario

# ASSUMPTION: one 400 Gb/s NIC per GPU (AWS p5/p5en: 3,200 Gbps EFA per 8 GPUs; DGX H100/H200:
# 8 x ConnectX-7 400 Gb/s), i.e. 50 GB/s per device one way; hardware.inter_node_gb_per_s overrides.
INTER_NODE_GB_PER_S = 50.0
# ASSUMPTION: fixed cost of one all-to-all that leaves the node (RDMA setup and the slowest
# peer), the order of DeepEP's reported low-latency dispatch at EP16-64 minus its transfer time.
INTER_NODE_LATENCY_S = 50e-6
DISPATCH_BYTES_PER_ELEMENT = 2.0  # bf16 hidden states each way (DeepEP can send fp8; not modelled)


def expert_parallel(scenario: Scenario) -> tuple[int, int]:
    """(E, d): the expert-parallel degree and the attention data-parallel degree (1 without DP
    attention) the scenario asks for."""
    hw = scenario.hardware
    ep = int(getattr(hw, "expert_parallel", 1) or 1)
    if not getattr(hw, "data_parallel_attention", False):
        return ep, 1
    return ep, max(ep // hw.tensor_parallel, 1)


def check_expert_parallel(scenario: Scenario, device: DeviceSpec, model: ModelSpec, per_node: int) -> None:
    """Refuse, in one line, a layout vLLM cannot run."""
    hw = scenario.hardware
    ep, tp = int(getattr(hw, "expert_parallel", 1) or 1), hw.tensor_parallel
    dp_attention = bool(getattr(hw, "data_parallel_attention", False))
    if ep == 1:
        if dp_attention:
            raise InputError("hardware.data_parallel_attention", "true with expert_parallel 1; data-parallel "
                             "attention shares experts split over expert_parallel > 1 devices")
        return
    if model.num_experts < 2:
        raise InputError("hardware.expert_parallel", f"{ep} on {model.key}, a dense model; expert parallelism "
                         f"splits the experts of a mixture of experts (use tensor_parallel)")
    if model.num_experts % ep:
        divisors = [e for e in range(2, min(model.num_experts, 64) + 1) if model.num_experts % e == 0]
        raise InputError("hardware.expert_parallel", f"{ep} does not divide {model.key}'s {model.num_experts} "
                         f"experts per layer; use one of {', '.join(map(str, divisors))}")
    if not dp_attention and ep != tp:
        raise InputError("hardware.expert_parallel", f"{ep} with tensor_parallel {tp}: without data-parallel "
                         f"attention the experts split over the tensor-parallel group, so set expert_parallel: "
                         f"{tp}, or data_parallel_attention: true")
    if dp_attention and ep % tp:
        raise InputError("hardware.expert_parallel", f"{ep} is not a multiple of tensor_parallel {tp}; data-parallel "
                         f"attention runs expert_parallel / tensor_parallel groups of tensor_parallel devices")
    if ep > per_node and device.kind in ("cpu", "edge"):
        raise InputError("hardware.expert_parallel", f"{ep} is more than the {per_node} {device.key} devices in a "
                         f"node, and {device.kind} devices have no scale-out fabric for the all-to-all; use "
                         f"expert_parallel <= {per_node}")
    if device.rentable_shapes and ep * hw.pipeline_parallel not in device.rentable_shapes:
        raise InputError("hardware.expert_parallel", f"{ep} x {hw.pipeline_parallel} {device.key} chips is not a "
                         f"slice a cloud rents; rentable slices: {', '.join(map(str, device.rentable_shapes))} chips")


def weight_bytes_per_device(model: ModelSpec, weight_bytes: float, tp: int, pp: int, ep: int) -> float:
    """Weights one device keeps: the non-expert ones split over its tensor-parallel group, the
    routed experts over the E expert-parallel devices (each stage holds 1/pp of the layers)."""
    expert_bytes = weight_bytes * model.expert_params / model.num_params if model.num_experts else 0.0
    return ((weight_bytes - expert_bytes) / tp + expert_bytes / max(ep, tp)) / pp


def alltoall_cost(model: ModelSpec, device: DeviceSpec, ep: int, per_node: int, latency_s: float,
                  inter_node_bytes_per_s: float) -> tuple[float, float]:
    """(fixed seconds, seconds per step token) of the all-to-alls of one step: a dispatch and a
    combine in each MoE layer."""
    moe_layers = model.num_layers - model.first_dense_layers
    # per step token: each device handles 1/E of the tokens, k copies, (E-1)/E of them remote
    remote_bytes = model.hidden_size * DISPATCH_BYTES_PER_ELEMENT * model.experts_per_token * (ep - 1) / ep / ep
    if ep <= per_node:
        s_per_byte, latency = 1.0 / device.link_bytes_per_s, latency_s
    else:  # the off-node share of the remote peers goes over the NIC, the rest over the scale-up link
        off_node = (ep - per_node) / (ep - 1)
        s_per_byte = max((1.0 - off_node) / device.link_bytes_per_s, off_node / inter_node_bytes_per_s)
        latency = max(latency_s, INTER_NODE_LATENCY_S)
    return 2.0 * moe_layers * latency, 2.0 * moe_layers * remote_bytes * s_per_byte


def expert_parallel_terms(scenario: Scenario, model: ModelSpec, device: DeviceSpec, tp: int,
                          allreduce_latency_s: float) -> dict[str, float]:
    """How the scenario's expert parallelism changes a tensor-parallel group's roofline (see
    simcost.perf.step_params.StepParams): `<field>_scale` multiplies a field, `<field>_add` adds
    to it after. Empty when E is 1."""
    ep, dp = expert_parallel(scenario)
    if ep <= 1:
        return {}
    hw = scenario.hardware
    inter_bw = (getattr(hw, "inter_node_gb_per_s", None) or INTER_NODE_GB_PER_S) * GB
    fabric = getattr(device, "interconnect", None)  # the catalog's fabric latency where it has one
    a2a_fixed_s, a2a_s_per_token = alltoall_cost(model, device, ep, devices_per_node(scenario, device),
                                                 fabric.latency_s if fabric else allreduce_latency_s, inter_bw)
    # the MoE layers' MLP all-reduce goes: only attention's (every layer) and the dense MLPs' remain
    kept_allreduces = (model.num_layers + model.first_dense_layers) / (2.0 * model.num_layers)
    # per device: 1/d of the step's tokens through attention and the non-expert weights, and 1/E of
    # the expert FLOPs; with t x d == E both are the tp group's rate over d
    return {"flops_per_token_scale": 1.0 / dp, "flops_per_attn_pair_scale": 1.0 / dp,
            "kv_bytes_per_token_scale": 1.0 / dp, "expert_bytes_scale": tp / ep,
            "comm_fixed_s_scale": kept_allreduces, "comm_fixed_s_add": a2a_fixed_s,
            "comm_s_per_token_scale": kept_allreduces / dp, "comm_s_per_token_add": a2a_s_per_token,
            "pipeline_s_per_token_scale": 1.0 / dp}


def kernel_expert_parallel(scenario: Scenario, dep: Deployment, allreduce_latency_s: float) -> ExpertParallel:
    """The kernel-table model's view of the scenario's expert parallelism (simcost.perf.kernel_moe):
    E, d, and one MoE layer's roofline all-to-all for where the NCCL tables lack d GPUs."""
    ep, dp = expert_parallel(scenario)
    if ep <= 1:
        return ExpertParallel()
    model, device = dep.model, dep.device
    inter_bw = (getattr(scenario.hardware, "inter_node_gb_per_s", None) or INTER_NODE_GB_PER_S) * GB
    fabric = getattr(device, "interconnect", None)
    fixed_s, s_per_token = alltoall_cost(model, device, ep, devices_per_node(scenario, device),
                                         fabric.latency_s if fabric else allreduce_latency_s, inter_bw)
    moe_layers = model.num_layers - model.first_dense_layers
    return ExpertParallel(ep=ep, dp=dp, alltoall_fixed_s=fixed_s / moe_layers,
                          alltoall_s_per_token=s_per_token / moe_layers)


# Devices one node holds when neither hardware.devices_per_node nor the catalog says: an 8-GPU
# server (DGX/HGX, p4d/p5, a3), an 8-chip TPU host (v5e-8, v6e-8), a 2-socket CPU server, one
# edge module. Tensor parallelism needs the scale-up link, so it stays within a node.
DEFAULT_DEVICES_PER_NODE = {"gpu": 8, "tpu": 8, "cpu": 2, "edge": 1}


def devices_per_node(scenario: Scenario, device: DeviceSpec) -> int:
    return int(getattr(scenario.hardware, "devices_per_node", None) or getattr(device, "devices_per_node", None)
               or DEFAULT_DEVICES_PER_NODE.get(device.kind, 8))
