"""The step-time model: `step_params` packs the scenario's model (`perf.model`: roofline, kernels,
constant or table) for a `simcost.perf.deployment.Deployment` into the float64 vector the numba
kernels read (its named slots: simcost.perf.step_params; the roofline's terms:
simcost.perf.roofline), and `step_time_s` / `decode_span_times_s` evaluate it, each with a
plain-Python twin (simcost.perf.step_reference) written from the formulas, which the tests
compare against (docs/design.md section 4). The roofline covers dense and mixture-of-experts models, tensor and
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
from dataclasses import fields
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from simcost.catalog.types import DeviceSpec, ModelSpec
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
from simcost.perf.kernel_span import count_kernel_steps, kernel_span_times_s
from simcost.perf.kernel_tables import (
    CUDA_GRAPH_MAX_TOKENS,
    KernelTables,
    cuda_graph_max_tokens,
)
from simcost.perf.model_choice import auto_tables, perf_choice
from simcost.perf.roofline import efficiency_factors, pipeline_link_bytes_per_s, pipeline_micro_batches, roofline_params
from simcost.perf.step_params import (
    KIND_CONSTANT,
    KIND_KERNELS,
    KIND_ROOFLINE,
    KIND_TABLE,
    NUM_PARAMS,
    P_BYTE_RATE,
    P_COMM_FIXED_S,
    P_COMM_S_PER_TOKEN,
    P_DECODE_STEP_S,
    P_EXPERT_BYTES,
    P_EXPERTS_PER_TOKEN,
    P_FLOP_RATE,
    P_FLOPS_PER_ATTN_PAIR,
    P_FLOPS_PER_TOKEN,
    P_KIND,
    P_KV_BYTES_PER_TOKEN,
    P_NUM_EXPERTS,
    P_PIPELINE_MICRO_BATCHES,
    P_PIPELINE_S_PER_TOKEN,
    P_PIPELINE_STAGES,
    P_PREFILL_OVERHEAD_S,
    P_PREFILL_REQUEST_S,
    P_PREFILL_S_PER_TOKEN,
    P_STEP_OVERHEAD_S,
    P_WEIGHT_BYTES,
    StepParams,
)
from simcost.perf.step_table import table_step_time_s
from simcost.scenario.deployment import REQUEST_LEVEL_POLICIES
from simcost.scenario.scenario import Scenario

if TYPE_CHECKING:
    from simcost.perf.deployment import Deployment




def step_params(scenario: Scenario, dep: Deployment) -> np.ndarray:
    """The step-time model of `scenario.perf` for deployment `dep`, packed for the kernels
    (`perf.model: auto` resolved by simcost.perf.model_choice)."""
    perf = scenario.perf
    if is_per_item(dep.model):
        return per_item_step_params(scenario, dep)
    choice = perf_choice(scenario, dep)
    model = choice.model
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
        return _kernel_params(scenario, dep, p, factors, tables, choice.fp8_moe_from_roofline)
    return p


def _kernel_params(scenario: Scenario, dep: Deployment, roofline: np.ndarray, factors: dict[str, float],
                   tables: KernelTables | None = None, moe_roofline: bool = False) -> np.ndarray:
    perf = scenario.perf
    return kernel_step_params(roofline, dep.device, dep.model, dep.tensor_parallel, dep.weight_format,
                              dep.kv_cache_format, dep.compute_format, factors, perf.step_overhead_s,
                              cuda_graphs=perf.cuda_graphs, eager_s_per_layer=perf.eager_s_per_layer,
                              graph_max_tokens=cuda_graph_max_tokens(scenario.engine.max_num_seqs), tables=tables,
                              expert_parallel=kernel_expert_parallel(scenario, dep, factors["allreduce_latency_s"]),
                              moe_roofline=moe_roofline)


def kernel_step_params(roofline: np.ndarray, device: DeviceSpec, model: ModelSpec, t: int, weight_format: str,
                       kv_cache_format: str, compute_format: str, factors: dict[str, float],
                       step_overhead_s: float | None = None, *, cuda_graphs: bool = True,
                       eager_s_per_layer: float | None = None, graph_max_tokens: int = CUDA_GRAPH_MAX_TOKENS,
                       tables: KernelTables | None = None, expert_parallel: ExpertParallel | None = None,
                       moe_roofline: bool = False) -> np.ndarray:
    """The kernel-table model after the roofline's slots (its fallback rates: `factors`' mfu and
    mbu); the roofline itself where the device has no tables for the weight format (the run
    summary then reports 0 measured). `tables`: these instead of the device's (validation);
    `moe_roofline`: the MoE layer by the roofline, not its rows (auto, model_choice)."""
    k = kernel_params(roofline, device, model, t, weight_format, kv_cache_format, compute_format,
                      factors["mfu"], factors["mbu"], cuda_graphs=cuda_graphs,
                      eager_s_per_layer=EAGER_S_PER_LAYER if eager_s_per_layer is None else eager_s_per_layer,
                      graph_max_tokens=graph_max_tokens, tables=tables, expert_parallel=expert_parallel,
                      moe_roofline=moe_roofline)
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
    of p's model alone, as step_time_s). Every step is counted as run (`decode_span` and
    `count_decode_steps` for a span that may be cut short)."""
    span = decode_span(p, num_seqs, kv_tokens_sum, num_steps)
    count_decode_steps(p, span, 0, num_steps)
    return span[0]


def decode_span(p, num_seqs, kv_tokens_sum, num_steps) -> tuple[np.ndarray, np.ndarray | None]:
    """decode_span_times_s's step durations, not yet counted, and for a kernels model the seconds
    of each step from measured kernels (None for any other model): a caller counts the steps it
    applies with count_decode_steps, so step_time_measured_fraction shares the step seconds a run
    applied, not those computed ahead of an interrupt (~40 % of Mooncake's span steps)."""
    if p[P_KIND] == KIND_KERNELS:
        measured_s = np.empty(num_steps, dtype=np.float64)
        return _kernels_span_s(p, num_seqs, kv_tokens_sum, num_steps, measured_s), measured_s
    return _SPAN_S.get(p[P_KIND], _analytic_span_s)(p, num_seqs, kv_tokens_sum, num_steps), None


def decode_span_ends(p, num_seqs, kv_tokens_sum, num_steps, start_s: float, first_extra_s: float,
                     ) -> tuple[tuple[np.ndarray, np.ndarray | None], np.ndarray]:
    """(`decode_span`, its steps' end times): the steps start at start_s, the first one
    first_extra_s longer (a transfer it waits for; `span_ends_into`). A kernels model fills the
    three rows of one array in one call: two fewer kernel calls a span, and no array made in a
    kernel and handed to Python (~1 us each)."""
    if p[P_KIND] == KIND_KERNELS:
        rows = np.empty((3, num_steps), dtype=np.float64)
        _kernels_span_ends(p, num_seqs, kv_tokens_sum, num_steps, start_s, first_extra_s, rows)
        return (rows[0], rows[1]), rows[2]
    span = decode_span(p, num_seqs, kv_tokens_sum, num_steps)
    step_end_s = np.empty(num_steps, dtype=np.float64)
    span_ends_into(span[0], start_s, first_extra_s, step_end_s)
    return span, step_end_s


@njit(cache=True)
def span_ends_into(step_s, start_s, first_extra_s, out):
    """out[j]: the end of step j of steps that start at start_s and take step_s each, the first
    first_extra_s longer. The same floats as the numpy form `step_s[0] += first_extra_s; start_s +
    step_s.cumsum()` (cumsum adds in order)."""
    total = 0.0
    for j in range(step_s.shape[0]):
        total += step_s[j] + first_extra_s if j == 0 else step_s[j]
        out[j] = start_s + total


def span_ends_py(step_s, start_s, first_extra_s):
    """span_ends_into's twin, returning the ends."""
    out, total = [], 0.0
    for j, s in enumerate(step_s.tolist()):
        total += s + first_extra_s if j == 0 else s
        out.append(start_s + total)
    return np.array(out, dtype=np.float64)


@njit(cache=True)
def _kernels_span_ends(p, num_seqs, kv_tokens_sum, num_steps, start_s, first_extra_s, rows):
    """rows[0]: _kernels_span_s's step seconds, rows[1] their measured seconds, rows[2] the steps'
    ends (span_ends_into)."""
    rows[0, :] = _kernels_span_s(p, num_seqs, kv_tokens_sum, num_steps, rows[1])
    span_ends_into(rows[0], start_s, first_extra_s, rows[2])


def count_decode_steps(p, span: tuple[np.ndarray, np.ndarray | None], first: int, end: int) -> None:
    """Steps first..end-1 of a `decode_span` into a kernels model's accumulators (what
    simcost.perf.step_model.kernel_seconds reads); nothing for other models."""
    times_s, measured_s = span
    if measured_s is not None and end > first:
        count_kernel_steps(p, NUM_PARAMS, times_s, measured_s, first, end)


@njit(cache=True)
def _table_span_s(p, num_seqs, kv_tokens_sum, num_steps):
    out = np.empty(num_steps, dtype=np.float64)
    n = float(num_seqs)
    for j in range(num_steps):
        kv = float(kv_tokens_sum) + j * n
        out[j] = table_step_time_s(p, NUM_PARAMS, 0, num_seqs, kv)
    return out


@njit(cache=True)
def _kernels_span_s(p, num_seqs, kv_tokens_sum, num_steps, measured_s):
    # kernel_step_time_s step after step, with what no step changes looked up once
    return kernel_span_times_s(p, NUM_PARAMS, p[P_STEP_OVERHEAD_S], p[P_PIPELINE_S_PER_TOKEN], num_seqs,
                               kv_tokens_sum, num_steps, measured_s)


@njit(cache=True)
def _analytic_span_s(p, num_seqs, kv_tokens_sum, num_steps):
    out = np.empty(num_steps, dtype=np.float64)
    n = float(num_seqs)
    # no prompt tokens, as an int64 like step_time_s's: a literal 0 would make numba compile a
    # second version of _analytic_step_s and _pipelined_step_s (~1 s of a fresh install's first run)
    none = num_seqs - num_seqs
    for j in range(num_steps):
        kv = float(kv_tokens_sum) + j * n
        out[j] = _analytic_step_s(p, none, num_seqs, kv + n, kv, none)
    return out


# the roofline and constant models (any other kind) share the analytic kernels
_STEP_S = {KIND_TABLE: _table_model_step_s, KIND_KERNELS: _kernels_model_step_s}
_SPAN_S = {KIND_TABLE: _table_span_s}  # (a kernels model's span: decode_span)


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


