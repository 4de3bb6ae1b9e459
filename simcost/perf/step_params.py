"""The step-time model's parameters by name (`StepParams`) and their slots in the float64 vector
the numba kernels read (`P_*`, `NUM_PARAMS`); a table or kernel model packs its rows after them."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

KIND_ROOFLINE = 0.0
KIND_CONSTANT = 1.0
KIND_TABLE = 2.0  # measured step times (simcost.perf.step_table) packed after the roofline's slots
KIND_KERNELS = 3.0  # measured kernel latencies (simcost.perf.kernel_model) packed after the roofline's slots


@dataclass(frozen=True)
class StepParams:
    """The step-time model's parameters by name. Everything per tensor-parallel rank (FLOPs and
    bytes divided by t, summed over pipeline stages), so the kernels need no model or device
    objects. The kernels read them as one float64 vector (`to_array`), indexed by the P_* slots
    below, which follow the field order."""

    kind: float = KIND_ROOFLINE  # KIND_ROOFLINE, KIND_CONSTANT or KIND_TABLE
    step_overhead_s: float = 0.0  # fixed seconds per step (both kinds)
    prefill_s_per_token: float = 0.0  # constant model
    decode_step_s: float = 0.0  # constant model: added once when a step has any decode token
    flops_per_token: float = 0.0  # 2 * active parameters / t
    flops_per_attn_pair: float = 0.0  # 4 * L * d / t
    flop_rate: float = 0.0  # peak_flops[compute_format] * mfu (one device)
    weight_bytes: float = 0.0  # bytes of the weights outside routed experts / t
    kv_bytes_per_token: float = 0.0  # KV bytes per token per device
    byte_rate: float = 0.0  # mem_bw * mbu (one device)
    comm_s_per_token: float = 0.0  # all-reduce transfer seconds per step token (0 when t == 1)
    comm_fixed_s: float = 0.0  # all-reduce latency seconds per step: 2 L (t-1) allreduce_latency_s
    prefill_overhead_s: float = 0.0  # added once when a step has any prefill token (eager-mode launches)
    expert_bytes: float = 0.0  # MoE: bytes of all routed experts / t (0 for a dense model)
    num_experts: float = 0.0  # MoE: routed experts per layer n (0 for a dense model)
    experts_per_token: float = 0.0  # MoE: experts each token is routed to, k
    pipeline_s_per_token: float = 0.0  # pipeline parallel: activation transfer seconds per step token, all hops
    prefill_request_s: float = 0.0  # added per request with prefill tokens in the step (per-sequence work)
    pipeline_stages: float = 1.0  # pipeline parallel: stages (the roofline splits a step into micro-batches)
    pipeline_micro_batches: float = 1.0  # at most this many micro-batches per step (1: stages in sequence)

    def to_array(self) -> np.ndarray:
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=np.float64)

    @classmethod
    def from_array(cls, p: np.ndarray) -> StepParams:
        """The named parameters of a packed vector (a table model's rows after them are left out)."""
        return cls(*p[:NUM_PARAMS])


# The slots of the packed vector. The kernels index it with these module-level ints, which numba
# compiles in as constants, so naming the parameters costs the kernels nothing.
_SLOT = {f.name: i for i, f in enumerate(fields(StepParams))}
NUM_PARAMS = len(_SLOT)
P_KIND = _SLOT["kind"]
P_STEP_OVERHEAD_S = _SLOT["step_overhead_s"]
P_PREFILL_S_PER_TOKEN = _SLOT["prefill_s_per_token"]
P_DECODE_STEP_S = _SLOT["decode_step_s"]
P_FLOPS_PER_TOKEN = _SLOT["flops_per_token"]
P_FLOPS_PER_ATTN_PAIR = _SLOT["flops_per_attn_pair"]
P_FLOP_RATE = _SLOT["flop_rate"]
P_WEIGHT_BYTES = _SLOT["weight_bytes"]
P_KV_BYTES_PER_TOKEN = _SLOT["kv_bytes_per_token"]
P_BYTE_RATE = _SLOT["byte_rate"]
P_COMM_S_PER_TOKEN = _SLOT["comm_s_per_token"]
P_COMM_FIXED_S = _SLOT["comm_fixed_s"]
P_PREFILL_OVERHEAD_S = _SLOT["prefill_overhead_s"]
P_EXPERT_BYTES = _SLOT["expert_bytes"]
P_NUM_EXPERTS = _SLOT["num_experts"]
P_EXPERTS_PER_TOKEN = _SLOT["experts_per_token"]
P_PIPELINE_S_PER_TOKEN = _SLOT["pipeline_s_per_token"]
P_PREFILL_REQUEST_S = _SLOT["prefill_request_s"]
P_PIPELINE_STAGES = _SLOT["pipeline_stages"]
P_PIPELINE_MICRO_BATCHES = _SLOT["pipeline_micro_batches"]
