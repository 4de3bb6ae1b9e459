"""The step-time model: its parameters (`StepParams`, packed into the float64 vector the numba
kernels read), and the kernels.

`step_params` packs the scenario's model (`perf.model`: roofline, constant or table) for a
`simcost.perf.deployment.Deployment`; `step_time_s` / `decode_span_times_s` evaluate it, each with a
plain-Python twin (`*_py`) written from the formulas, which the tests compare against
(docs/design.md section 4). The roofline covers dense and mixture-of-experts models, tensor and
pipeline parallelism, and per-item models: for those `step_params` returns `per_item_params`
(a batch of n items takes step_time_s(p, n, 0, 0, 0, n)) once the engine policy is request-level.

The kernels take the step's counts: prompt tokens computed, decode tokens, causal attention
(query, key) pairs, cached tokens read, and the requests with prompt tokens in the step. The last
prices per-sequence serving work (input preparation, sampling, per-sequence attention launches):
the roofline adds `prefill_request_s` for each, since measured batched prefills cost more than one
prompt of the same total tokens; the constant and table models ignore it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from simcost.catalog.specs import BYTES_PER_ELEMENT, FLAT_INTERCONNECTS, DeviceSpec, Interconnect, ModelSpec
from simcost.errors import InputError, required
from simcost.perf.expert_parallel import expert_parallel_terms, kernel_expert_parallel
from simcost.perf.kernel_model import (
    EAGER_S_PER_LAYER,
    K_ACC_MEASURED,
    K_ACC_TOTAL,
    KERNEL_STEP_OVERHEAD_S,
    kernel_params,
    kernel_step_time_s,
    tables_scaled,
)
from simcost.perf.kernel_moe import ExpertParallel
from simcost.perf.kernel_reference import kernel_step_time_s_py
from simcost.perf.kernel_span import kernel_span_times_s
from simcost.perf.kernel_tables import (
    CUDA_GRAPH_MAX_TOKENS,
    KernelTables,
    cuda_graph_max_tokens,
    format_efficiency_ratio,
)
from simcost.perf.measurements import EFFICIENCY_FACTORS, FACTOR_DEFAULTS
from simcost.perf.model_choice import auto_tables, choose_perf_model
from simcost.perf.step_table import T_HEADER, table_step_time_s, table_step_time_s_py
from simcost.scenario.deployment import REQUEST_LEVEL_POLICIES
from simcost.scenario.scenario import Scenario

if TYPE_CHECKING:
    from simcost.perf.deployment import Deployment




def kv_heads_per_device(model: ModelSpec, tp: int) -> float:
    # With tp > num_kv_heads each device keeps one KV head (vLLM replicates them), so KV per device
    # stops shrinking; otherwise the heads split evenly.
    return max(model.num_kv_heads / tp, 1.0)


# --- the step-time parameters ---------------------------------------------------------------

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


def step_params(scenario: Scenario, dep: Deployment) -> np.ndarray:
    """The step-time model of `scenario.perf` for deployment `dep`, packed for the kernels
    (`perf.model: auto` resolved by simcost.perf.model_choice)."""
    perf = scenario.perf
    if is_per_item(dep.model):
        return per_item_step_params(scenario, dep)
    model, _ = choose_perf_model(scenario, dep)
    if perf.model == "constant":
        return StepParams(kind=KIND_CONSTANT, step_overhead_s=perf.step_overhead_s or 0.0,
                          prefill_s_per_token=perf.prefill_s_per_token, decode_step_s=perf.decode_step_s).to_array()
    factors = efficiency_factors(scenario, dep)
    p = roofline_params(dep.device, dep.model, dep.tensor_parallel, dep.compute_format,
                        dep.weight_bytes, dep.kv_cache_format, **factors,
                        pipeline_parallel=dep.pipeline_parallel,
                        pipeline_link_bytes_per_s=pipeline_link_bytes_per_s(scenario, dep.device),
                        pipeline_micro_batches=pipeline_micro_batches(scenario))
    terms = expert_parallel_terms(scenario, dep.model, dep.device, dep.tensor_parallel, factors["allreduce_latency_s"])
    if terms:
        s = StepParams.from_array(p)
        p[:NUM_PARAMS] = StepParams(**{f.name: getattr(s, f.name) * terms.get(f.name + "_scale", 1.0)
                                       + terms.get(f.name + "_add", 0.0) for f in fields(StepParams)}).to_array()
    if perf.model == "table":
        return _table_params(required(perf.table, "perf.table"), dep, p)
    if model == "kernels":
        if perf.profile:
            warnings.warn(f"perf.profile {perf.profile}: a calibrated profile fits the roofline's factors; under "
                          f"perf.model kernels they price only the operators the kernel tables lack (leave "
                          f"perf.model unset or set roofline to run the calibrated roofline)", stacklevel=2)
        # auto passes the tables it checked (a trusted borrow without the borrowing warning)
        tables = auto_tables(dep.device, dep.tensor_parallel) if perf.model == "auto" else None
        return _kernel_params(scenario, dep, p, factors, tables)
    return p


def _kernel_params(scenario: Scenario, dep: Deployment, roofline: np.ndarray, factors: dict[str, float],
                   tables: KernelTables | None = None) -> np.ndarray:
    perf = scenario.perf
    return kernel_step_params(roofline, dep.device, dep.model, dep.tensor_parallel, dep.weight_format,
                              dep.kv_cache_format, dep.compute_format, factors, perf.step_overhead_s,
                              cuda_graphs=perf.cuda_graphs, eager_s_per_layer=perf.eager_s_per_layer,
                              graph_max_tokens=cuda_graph_max_tokens(scenario.engine.max_num_seqs), tables=tables,
                              expert_parallel=kernel_expert_parallel(scenario, dep, factors["allreduce_latency_s"]))


def kernel_step_params(roofline: np.ndarray, device: DeviceSpec, model: ModelSpec, t: int, weight_format: str,
                       kv_cache_format: str, compute_format: str, factors: dict[str, float],
                       step_overhead_s: float | None = None, *, cuda_graphs: bool = True,
                       eager_s_per_layer: float | None = None, graph_max_tokens: int = CUDA_GRAPH_MAX_TOKENS,
                       tables: KernelTables | None = None, expert_parallel: ExpertParallel | None = None
                       ) -> np.ndarray:
    """The kernel-table model after the roofline's slots (its fallback rates: `factors`' mfu and
    mbu); the roofline itself where the device has no tables for the weight format (the run
    summary then reports 0 measured). `tables`: these instead of the device's (validation)."""
    k = kernel_params(roofline, device, model, t, weight_format, kv_cache_format, compute_format,
                      factors["mfu"], factors["mbu"], cuda_graphs=cuda_graphs,
                      eager_s_per_layer=EAGER_S_PER_LAYER if eager_s_per_layer is None else eager_s_per_layer,
                      graph_max_tokens=graph_max_tokens, tables=tables, expert_parallel=expert_parallel)
    if k is None:
        return roofline
    k[P_KIND] = KIND_KERNELS
    k[P_STEP_OVERHEAD_S] = KERNEL_STEP_OVERHEAD_S if step_overhead_s is None else step_overhead_s
    return k


def _table_params(path: str, dep: Deployment, roofline: np.ndarray) -> np.ndarray:
    """The measured table of `path` at the deployment's tensor-parallel degree, after the
    roofline's slots (kept for workload items); see simcost.perf.step_table."""
    from simcost.perf.measurements import read_points  # lazy: calibrate imports this module
    from simcost.perf.step_table import pack_table
    try:
        points = read_points(path, dep.device.key, dep.model.key)
    except InputError as exc:
        raise InputError("perf.table", f"{exc.where}: {exc.problem}") from None
    degrees = sorted({pt.tensor_parallel for pt in points})
    points = [pt for pt in points if pt.tensor_parallel == dep.tensor_parallel]
    prefill = [(pt.batch_size * pt.prompt_tokens, pt.step_time_s) for pt in points if pt.kind == "prefill"]
    decode = [(pt.batch_size, pt.context_tokens, pt.step_time_s) for pt in points if pt.kind == "decode"]
    if not prefill or not decode:
        raise InputError("perf.table", f"{path} has {len(prefill)} prefill and {len(decode)} decode settings at "
                         f"tensor_parallel {dep.tensor_parallel} (it has tensor_parallel {degrees}); the table "
                         f"model needs both")
    p = pack_table(roofline, prefill, decode)
    p[P_KIND] = KIND_TABLE
    return p




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
                                                   dep.device.mem_bw_bytes_per_s)
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
    2 (t-1)/t of it over each device's link (ring or switch alike), and pays the fabric's latency
    once on a switch or full mesh (near-flat in t) or once per hop of a ring's 2 (t-1)."""
    allreduces = 2.0 * num_layers
    hops = 1.0 if fabric.kind in FLAT_INTERCONNECTS else 2.0 * (t - 1)
    return (allreduces * hops * fabric.latency_s,
            allreduces * 2.0 * (t - 1) / t * hidden_size * 2.0 / fabric.bytes_per_s)


# --- kernels --------------------------------------------------------------------------------
# A step with no new tokens runs nothing and takes 0 s. Token counts are used as float64 so that
# sums over long contexts cannot overflow. `num_prefill_requests` (requests with prompt tokens in
# the step) is priced by the roofline only: the constant model has no per-request term and the
# table is keyed by tokens alone (its measured prefills already include their requests' cost).

def step_time_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests):
    """A step's seconds under p's model: the kernel of that model alone (so a first run compiles
    the model it uses, not all three: ~3 s of a fresh install's first run)."""
    return _STEP_S.get(p[P_KIND], _analytic_step_s)(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs,
                                                     kv_read_tokens, num_prefill_requests)


@njit(cache=True)
def _table_model_step_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests):
    return table_step_time_s(p, NUM_PARAMS, num_prefill_tokens, num_decode_tokens, kv_read_tokens)


@njit(cache=True)
def _kernels_model_step_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                          num_prefill_requests):
    return kernel_step_time_s(p, NUM_PARAMS, p[P_STEP_OVERHEAD_S], p[P_PIPELINE_S_PER_TOKEN], num_prefill_tokens,
                              num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests)


@njit(cache=True)
def _analytic_step_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests):
    # the roofline and constant models, apart from the table so that decode spans stay a tight loop
    tokens = float(num_prefill_tokens) + float(num_decode_tokens)
    if tokens <= 0.0:
        return 0.0
    if p[P_KIND] == KIND_CONSTANT:
        t = p[P_STEP_OVERHEAD_S] + p[P_PREFILL_S_PER_TOKEN] * float(num_prefill_tokens)
        if num_decode_tokens > 0:
            t += p[P_DECODE_STEP_S]
        return t
    if p[P_PIPELINE_STAGES] > 1.0 and p[P_PIPELINE_MICRO_BATCHES] > 1.0:
        return _pipelined_step_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                                 num_prefill_requests)
    flops = p[P_FLOPS_PER_TOKEN] * tokens + p[P_FLOPS_PER_ATTN_PAIR] * float(attn_token_pairs)
    weight_bytes = p[P_WEIGHT_BYTES]
    if p[P_NUM_EXPERTS] > 0.0:  # the experts the step's tokens touch, expected, per layer
        weight_bytes += p[P_EXPERT_BYTES] * (1.0 - (1.0 - p[P_EXPERTS_PER_TOKEN] / p[P_NUM_EXPERTS]) ** tokens)
    nbytes = weight_bytes + p[P_KV_BYTES_PER_TOKEN] * (float(kv_read_tokens) + tokens)
    t = (max(flops / p[P_FLOP_RATE], nbytes / p[P_BYTE_RATE])
         + p[P_COMM_FIXED_S] + (p[P_COMM_S_PER_TOKEN] + p[P_PIPELINE_S_PER_TOKEN]) * tokens + p[P_STEP_OVERHEAD_S])
    if num_prefill_tokens > 0:
        t += p[P_PREFILL_OVERHEAD_S] + p[P_PREFILL_REQUEST_S] * float(num_prefill_requests)
    return t


@njit(cache=True)
def _pipelined_step_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests):
    # m micro-batches of 1/m of the step's sequences (at most one per sequence) through pp stages:
    # the last leaves after (pp + m - 1) stage slots, each stage doing 1/pp of the layers of one
    # micro-batch (its weights read again per micro-batch), and the first micro-batch's pp - 1
    # activation sends on the critical path (later sends overlap the next micro-batch's compute, as
    # long as a send is shorter than a stage). With m == 1 this is the sequential sum of the stages.
    pp = p[P_PIPELINE_STAGES]
    m = min(p[P_PIPELINE_MICRO_BATCHES], max(float(num_decode_tokens) + float(num_prefill_requests), 1.0))
    m = float(int(m))
    tokens = (float(num_prefill_tokens) + float(num_decode_tokens)) / m
    flops = p[P_FLOPS_PER_TOKEN] * tokens + p[P_FLOPS_PER_ATTN_PAIR] * float(attn_token_pairs) / m
    weight_bytes = p[P_WEIGHT_BYTES]
    if p[P_NUM_EXPERTS] > 0.0:
        weight_bytes += p[P_EXPERT_BYTES] * (1.0 - (1.0 - p[P_EXPERTS_PER_TOKEN] / p[P_NUM_EXPERTS]) ** tokens)
    nbytes = weight_bytes + p[P_KV_BYTES_PER_TOKEN] * (float(kv_read_tokens) / m + tokens)
    stage_s = (max(flops / p[P_FLOP_RATE], nbytes / p[P_BYTE_RATE]) + p[P_COMM_FIXED_S]
               + p[P_COMM_S_PER_TOKEN] * tokens) / pp
    send_s = p[P_PIPELINE_S_PER_TOKEN] / (pp - 1.0) * tokens
    t = (pp + m - 1.0) * stage_s + (pp - 1.0) * send_s + p[P_STEP_OVERHEAD_S]
    if num_prefill_tokens > 0:
        t += p[P_PREFILL_OVERHEAD_S] + p[P_PREFILL_REQUEST_S] * float(num_prefill_requests)
    return t


def decode_span_times_s(p, num_seqs, kv_tokens_sum, num_steps):
    """Durations of `num_steps` decode steps of the same `num_seqs` requests whose cached tokens
    sum to `kv_tokens_sum` at the first step; each step adds one token per request (the kernel
    of p's model alone, as step_time_s)."""
    return _SPAN_S.get(p[P_KIND], _analytic_span_s)(p, num_seqs, kv_tokens_sum, num_steps)


@njit(cache=True)
def _table_span_s(p, num_seqs, kv_tokens_sum, num_steps):
    out = np.empty(num_steps, dtype=np.float64)
    n = float(num_seqs)
    for j in range(num_steps):
        kv = float(kv_tokens_sum) + j * n
        out[j] = table_step_time_s(p, NUM_PARAMS, 0, num_seqs, kv)
    return out


@njit(cache=True)
def _kernels_span_s(p, num_seqs, kv_tokens_sum, num_steps):
    # kernel_step_time_s step after step, with what no step changes looked up once
    return kernel_span_times_s(p, NUM_PARAMS, p[P_STEP_OVERHEAD_S], p[P_PIPELINE_S_PER_TOKEN], num_seqs,
                               kv_tokens_sum, num_steps)


@njit(cache=True)
def _analytic_span_s(p, num_seqs, kv_tokens_sum, num_steps):
    out = np.empty(num_steps, dtype=np.float64)
    n = float(num_seqs)
    for j in range(num_steps):
        kv = float(kv_tokens_sum) + j * n
        out[j] = _analytic_step_s(p, 0, num_seqs, kv + n, kv, 0)
    return out


# the roofline and constant models (any other kind) share the analytic kernels
_STEP_S = {KIND_TABLE: _table_model_step_s, KIND_KERNELS: _kernels_model_step_s}
_SPAN_S = {KIND_TABLE: _table_span_s, KIND_KERNELS: _kernels_span_s}


def kernel_seconds(p: np.ndarray) -> tuple[float, float, float]:
    """(step seconds simulated, of them from this device's measured kernels, of them from another
    GPU's kernels scaled to it) accumulated by a kernels model; zeros for any other model."""
    if p[P_KIND] != KIND_KERNELS:
        return 0.0, 0.0, 0.0
    total, table_s = float(p[NUM_PARAMS + K_ACC_TOTAL]), float(p[NUM_PARAMS + K_ACC_MEASURED])
    return (total, 0.0, table_s) if tables_scaled(p, NUM_PARAMS) else (total, table_s, 0.0)


def is_per_item(model: ModelSpec) -> bool:
    """A model served per item (an encoder or an image classifier): no tokens, no KV cache."""
    return getattr(model, "serving", "tokens") == "per_item"


def per_item_params(scenario: Scenario, dep: Deployment, bytes_per_item: float = 0.0) -> np.ndarray:
    """The roofline of a per-item model, packed so that `step_time_s(p, num_items, 0, 0, 0, n)` is
    the time of one batch of `num_items` items from n requests: max(items x flops_per_item / (peak x mfu),
    (weights + items x bytes_per_item) / (bandwidth x mbu)) + step_overhead_s (+ prefill_overhead_s,
    the same launch cost as a prefill step). An item plays the part of a prefill token with no
    attention and no KV; `bytes_per_item` is what one item moves besides the weights (its
    input and activations), 0 when the weights dominate. Split over tensor parallelism like a
    token step, without the all-reduces (encoders this small run on one device). No per-request
    term: prefill_request_s was measured on token engines' prompts, not on item batches, so it
    stays 0 here and a batch's time does not depend on how its items split into requests."""
    if not is_per_item(dep.model):
        raise InputError("model.name", f"{dep.model.key} is served token by token; use step_params")
    factors = efficiency_factors(scenario, dep)
    t = dep.num_devices
    return StepParams(
        kind=KIND_ROOFLINE, step_overhead_s=factors["step_overhead_s"], prefill_overhead_s=factors["prefill_overhead_s"],
        flops_per_token=float(getattr(dep.model, "flops_per_item", 0.0)) / t,
        flop_rate=dep.device.peak_flops[dep.compute_format] * factors["mfu"],
        weight_bytes=dep.weight_bytes / t, kv_bytes_per_token=bytes_per_item / t,
        byte_rate=dep.device.mem_bw_bytes_per_s * factors["mbu"],
    ).to_array()




def per_item_step_params(scenario: Scenario, dep: Deployment) -> np.ndarray:
    """`per_item_params` for a scenario serving a per-item model, after checking that its engine
    and perf sections can serve one; the workload's items.bytes_per_item (one value over all
    entries) is what each item moves besides the weights."""
    key = dep.model.key
    # request-level policies run a per-item model: a batch of requests is one forward pass over all
    # their items; iteration-level ones schedule tokens over a KV cache it has not
    if scenario.engine.policy not in REQUEST_LEVEL_POLICIES:
        raise InputError("engine.policy", f"{scenario.engine.policy} schedules tokens over a KV cache, but {key} is "
                         f"served per item; use one_at_a_time, static or dynamic (dynamic: Triton's dynamic batcher)")
    if scenario.perf.model not in ("roofline", "auto"):
        raise InputError("perf.model", f"{scenario.perf.model} times token steps; {key} is served per item, "
                         f"which only the roofline times (flops_per_item in the model catalog)")
    per_entry = {e.items.bytes_per_item if e.items else 0.0 for e in scenario.workload.entries()}
    if len(per_entry) > 1:
        raise InputError("workload.items.bytes_per_item", f"{sorted(per_entry)} across workloads; one batch of {key} "
                         f"items is timed with one bytes_per_item, so give every workload the same")
    return per_item_params(scenario, dep, per_entry.pop())


def item_time_s(p: np.ndarray, flops: float, nbytes: float) -> float:
    """Seconds one step spends on non-token items (simcost.scenario.workload.ItemSpec) of one device's
    share of `flops` and `nbytes`: the roofline of that work alone, added to the token work
    (encoders run before the language model, not overlapped with it)."""
    if flops <= 0.0 and nbytes <= 0.0:
        return 0.0
    return max(flops / p[P_FLOP_RATE], nbytes / p[P_BYTE_RATE])


def step_time_s_py(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                   num_prefill_requests) -> float:
    """Plain-Python reference for `step_time_s`, written from the formula, not the kernel."""
    tokens = num_prefill_tokens + num_decode_tokens
    if tokens <= 0:
        return 0.0
    s = StepParams.from_array(p)
    if s.kind == KIND_KERNELS:
        return kernel_step_time_s_py(p, NUM_PARAMS, s.step_overhead_s, s.pipeline_s_per_token, num_prefill_tokens,
                                     num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests)[0]
    if s.kind == KIND_TABLE:
        prefill, decode = unpack_table(p)
        return table_step_time_s_py(prefill, decode, num_prefill_tokens, num_decode_tokens, kv_read_tokens)
    if s.kind == KIND_CONSTANT:
        decode_s = s.decode_step_s if num_decode_tokens > 0 else 0.0
        return float(s.step_overhead_s + s.prefill_s_per_token * num_prefill_tokens + decode_s)
    if s.pipeline_stages > 1 and s.pipeline_micro_batches > 1:
        return _pipelined_step_s_py(s, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                                    num_prefill_requests)
    compute_s = (s.flops_per_token * tokens + s.flops_per_attn_pair * attn_token_pairs) / s.flop_rate
    experts = expected_experts_touched(s.num_experts, s.experts_per_token, tokens)
    expert_bytes = s.expert_bytes * experts / s.num_experts if s.num_experts else 0.0
    memory_s = (s.weight_bytes + expert_bytes + s.kv_bytes_per_token * (kv_read_tokens + tokens)) / s.byte_rate
    comm_s = s.comm_fixed_s + s.comm_s_per_token * tokens
    pipeline_s = s.pipeline_s_per_token * tokens
    prefill_s = (s.prefill_overhead_s + s.prefill_request_s * num_prefill_requests
                 if num_prefill_tokens > 0 else 0.0)
    return float(max(compute_s, memory_s) + comm_s + pipeline_s + s.step_overhead_s + prefill_s)


def _pipelined_step_s_py(s: StepParams, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                         num_prefill_requests) -> float:
    """Reference for `_pipelined_step_s`: a GPipe-style schedule of m micro-batches over pp stages,
    the time one micro-batch spends in one stage being the single-stage roofline of 1/m of the
    step's work over pp."""
    pp = s.pipeline_stages
    m = int(min(s.pipeline_micro_batches, max(num_decode_tokens + num_prefill_requests, 1)))
    one = replace(s, pipeline_stages=1.0, pipeline_micro_batches=1.0, pipeline_s_per_token=0.0, step_overhead_s=0.0,
                  prefill_overhead_s=0.0, prefill_request_s=0.0).to_array()
    micro = step_time_s_py(one, num_prefill_tokens / m, num_decode_tokens / m, attn_token_pairs / m,
                           kv_read_tokens / m, 0)
    send_s = s.pipeline_s_per_token / (pp - 1) * (num_prefill_tokens + num_decode_tokens) / m
    prefill_s = (s.prefill_overhead_s + s.prefill_request_s * num_prefill_requests if num_prefill_tokens > 0 else 0.0)
    return float((pp + m - 1) * micro / pp + (pp - 1) * send_s + s.step_overhead_s + prefill_s)


def unpack_table(p: np.ndarray) -> tuple[list, list]:
    """The (tokens, s) prefill and (batch, context, s) decode rows packed in a table model."""
    base = NUM_PARAMS
    n_prefill, n_batches = int(p[base]), int(p[base + 1])
    start = base + T_HEADER
    prefill = list(zip(p[start:start + n_prefill], p[start + n_prefill:start + 2 * n_prefill]))
    decode, pos = [], start + 2 * n_prefill
    for _ in range(n_batches):
        b, n = p[pos], int(p[pos + 1])
        decode += [(b, c, s) for c, s in zip(p[pos + 2:pos + 2 + n], p[pos + 2 + n:pos + 2 + 2 * n])]
        pos += 2 + 2 * n
    return prefill, decode


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


def decode_span_times_s_py(p, num_seqs, kv_tokens_sum, num_steps) -> np.ndarray:
    return np.array([step_time_s_py(p, 0, num_seqs, kv_tokens_sum + j * num_seqs + num_seqs,
                                    kv_tokens_sum + j * num_seqs, 0) for j in range(num_steps)], dtype=np.float64)
