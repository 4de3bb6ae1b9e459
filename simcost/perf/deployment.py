"""Deployment planning: what fits where, KV capacity, price.

`plan_deployment` turns a scenario into a `Deployment`: one replica of a model on
`tensor_parallel x pipeline_parallel` devices, with its weight bytes, KV blocks, limits, price and
power. Mixture-of-experts models hold all their experts; per-item models (serving: per_item)
hold their weights and no KV cache. The step-time model (parameter vector and numba kernels) is
`simcost.perf.step_model`, re-exported here.

Formats. `weight_format` sets the bytes per weight and the compute rate:
- bf16 / fp16 / fp32 run at that format's peak. A device lacking one 16-bit format runs the other
  (same bytes, cast at load, as vLLM does for bf16 checkpoints on a T4), else fp32 (a CPU with
  fp32 units only, such as Graviton, converts 16-bit weights as it loads them). fp32 weights need
  an fp32 peak in the device catalog.
- fp8 runs at the fp8 peak (W8A8); a device without an fp8 peak refuses fp8 weights.
- int8 / int4 are weight-only quantisation (W8A16, W4A16: AWQ, GPTQ): bytes at the small format,
  compute at the bf16 (else fp16) rate, since the weights are dequantised before the matmul.
- nvfp4 runs at the fp4 peak and needs one (Blackwell); mxfp4 runs at the fp4 peak where there is
  one, else weight-only on a GPU's 16-bit units. Both count their block scales in their bytes.
- An fp8 KV cache needs a GPU (vLLM widens it in the attention kernel, Ampere included) or a
  device with an fp8 peak.

KV cache. A token keeps `ModelSpec.kv_elements_per_token_per_layer` elements in each layer (the
latent of multi-head latent attention, else K and V of its KV heads). Sliding-window (and chunked)
layers keep at most the window per sequence, and at most max_num_seqs sequences run, so the
cache holds T tokens of the full-attention layers where
  free = T x full + min(T, window x max_num_seqs) x sliding   (bytes per token of each group).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from simcost.catalog.types import BYTES_PER_ELEMENT, DeviceSpec, ModelSpec, compute_format_for, format_refusal
from simcost.errors import InputError
from simcost.perf.expert_parallel import (
    check_expert_parallel,
    devices_per_node,
    expert_parallel,
    weight_bytes_per_device,
)
from simcost.perf.step_model import is_per_item
from simcost.scenario.fleet_plan import fleet_plan
from simcost.scenario.scenario import Scenario, shortest_request

# Activation reserve per device = max_num_batched_tokens * hidden_size * bytes. vLLM sizes the
# reserve by profiling a forward pass of max_num_batched_tokens tokens; its peak is a dozen-odd
# live bf16 tensors per token: residual, norm output, q/k/v, attention output (~6 x d) and the MLP
# gate and up projections (2 x 3.5 d for Llama shapes), i.e. ~13 d elements = 26 d bytes, rounded
# to 24 as not all are live at once. Under tensor parallelism the residual stream and its norm
# output (4 bytes of d) are replicated on every device; the rest (20) is split over the TP group.
ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN = 24.0  # at tensor_parallel 1
ACTIVATION_REPLICATED_BYTES_PER_HIDDEN = 4.0


def activation_reserve_bytes(max_num_batched_tokens: int, hidden_size: int, tp: int) -> float:
    """Bytes each device of a tensor-parallel group of `tp` keeps for activations."""
    sharded = ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN - ACTIVATION_REPLICATED_BYTES_PER_HIDDEN
    return max_num_batched_tokens * hidden_size * (ACTIVATION_REPLICATED_BYTES_PER_HIDDEN + sharded / tp)

_DEFAULT_KV_FORMAT = "bf16"
_MAX_SUGGESTED_TP = 64


@dataclass(frozen=True)
class Deployment:
    """One replica. Bytes are whole-model, KV blocks and prices per replica (all its devices)."""

    device: DeviceSpec
    model: ModelSpec
    tensor_parallel: int
    num_devices: int
    weight_format: str
    kv_cache_format: str
    compute_format: str
    weight_bytes: float  # whole model
    kv_bytes_per_token: float  # whole model, all layers: 2 * L * h_kv * d_h * b_kv
    block_size: int
    num_kv_blocks: int  # per replica, over all its devices
    max_model_len: int
    max_num_batched_tokens: int
    price_usd_per_hour: float  # per replica
    idle_w: float  # per replica
    peak_w: float  # per replica
    pipeline_parallel: int = 1  # stages; num_devices = tensor_parallel * pipeline_parallel * data_parallel
    expert_parallel: int = 1  # devices the routed experts split over (simcost.perf.expert_parallel)
    data_parallel: int = 1  # attention groups of tensor_parallel devices (data-parallel attention)

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_kv_blocks * self.block_size


@dataclass(frozen=True)
class Pool:
    """Replicas of one deployment in a fleet: all of them ("serve"), or one side of a
    disaggregated fleet ("prefill", "decode"). Replica indices follow pool order. A pool of
    fleet.pools also has its `name` and its own `scenario`: the scenario with this pool's
    hardware, model, engine, pricing and site in place (what its engine and its bill read);
    other pools run the scenario's own sections (simcost.scenario.fleet_plan.PoolPlan)."""

    role: str
    deployment: Deployment
    replicas: int
    name: str = ""
    scenario: Scenario | None = None  # fleet.pools only
    serves: tuple[int, ...] | None = None  # workload entry indices it may serve (None: all)

    @property
    def label(self) -> str:
        return self.name or self.role

    @property
    def own_scenario(self) -> Scenario:
        """The pool's own scenario: only pools of fleet.pools have one (callers check first)."""
        if self.scenario is None:
            raise ValueError(f"pool {self.label!r} has no scenario of its own (it is not one of fleet.pools)")
        return self.scenario


def fleet_pools(scenario: Scenario) -> list[Pool]:
    """The scenario's pools (simcost.scenario.fleet_plan), each with its deployment planned."""
    pools: list[Pool] = []
    planned: dict[int, Deployment] = {}  # pools running the very same scenario share one deployment
    for plan in fleet_plan(scenario):
        dep = planned.get(id(plan.scenario))
        if dep is None:
            try:
                dep = planned[id(plan.scenario)] = plan_deployment(plan.scenario)
            except InputError as exc:  # name the key the user wrote
                raise InputError(plan.config_key(exc.where), exc.problem) from None
        pools.append(Pool(plan.role, dep, plan.replicas, plan.name, plan.scenario if plan.own_section else None,
                          plan.serves))
    return pools


# --- planning -------------------------------------------------------------------------------



def _supported_weight_formats(device: DeviceSpec) -> list[str]:
    return [f for f in BYTES_PER_ELEMENT if compute_format_for(device, f) is not None]


def _free_bytes_per_device(device: DeviceSpec, model: ModelSpec, weight_bytes: float, num_devices: int,
                           memory_utilization: float, max_num_batched_tokens: int, tp: int,
                           weights_per_device: float | None = None) -> float:
    reserve_bytes = activation_reserve_bytes(max_num_batched_tokens, model.hidden_size, tp)
    if weights_per_device is None:
        weights_per_device = weight_bytes / num_devices
    return device.memory_bytes * memory_utilization - weights_per_device - reserve_bytes


def check_rentable(device: DeviceSpec, tp: int, pp: int = 1, where: str = "hardware.tensor_parallel") -> None:
    """A TPU is rented by the slice: a replica's tp x pp chips must be a slice the cloud offers."""
    if device.rentable_shapes and tp * pp not in device.rentable_shapes:
        chips = f"{tp} x {pp} = {tp * pp}" if pp > 1 else f"{tp}"
        raise InputError(where, f"{chips} {device.key} chips is not a slice a cloud rents; rentable slices: "
                         f"{', '.join(map(str, device.rentable_shapes))} chips")


def _check_parallelism(scenario: Scenario, device: DeviceSpec, model: ModelSpec, tp: int, pp: int) -> None:
    check_rentable(device, tp, pp)
    if model.num_heads % tp:
        raise InputError("hardware.tensor_parallel",
                         f"{tp} does not divide {model.key}'s {model.num_heads} attention heads")
    per_node = devices_per_node(scenario, device)
    if tp > per_node:
        raise InputError("hardware.tensor_parallel",
                         f"{tp} is more than the {per_node} {device.key} devices in a node (tensor parallelism "
                         f"needs the node's scale-up link); use tensor_parallel <= {per_node} and "
                         f"hardware.pipeline_parallel across nodes, or set hardware.devices_per_node")
    if model.num_layers < pp:
        raise InputError("hardware.pipeline_parallel",
                         f"{pp} stages for {model.key}'s {model.num_layers} layers; at most one stage per layer")
    check_expert_parallel(scenario, device, model, per_node)


def kv_capacity_tokens(free_bytes: float, full_bytes_per_token: float, sliding_bytes_per_token: float,
                       sliding_cap_tokens: int) -> int:
    """Tokens T of context a device's `free_bytes` hold, when full-attention layers keep every
    token and sliding-window layers at most `sliding_cap_tokens` (window x sequences) in all:
    the largest T with T x full + min(T, cap) x sliding <= free."""
    if free_bytes <= 0:
        return 0
    every_layer = free_bytes / (full_bytes_per_token + sliding_bytes_per_token)
    if every_layer <= sliding_cap_tokens or full_bytes_per_token <= 0:
        # (a model of sliding layers only keeps the old, conservative count: every token in every layer)
        return math.floor(every_layer)
    return math.floor((free_bytes - sliding_cap_tokens * sliding_bytes_per_token) / full_bytes_per_token)


def _check_fits_context(scenario: Scenario, model: ModelSpec) -> None:
    """A workload whose every request is longer than the model's context would be rejected whole;
    say so before simulating (an explicit engine.max_model_len is checked with the scenario)."""
    for i, entry in enumerate(scenario.workload.entries()):
        shortest = shortest_request(entry)
        if shortest is not None and shortest[1] > model.max_model_len:
            where = f"workload.mix[{i}]" if scenario.workload.mix is not None else "workload"
            raise InputError(f"{where}.input_tokens",
                             f"the shortest request '{scenario.workload.entry_name(i)}' can send is {shortest[1]:,} "
                             f"tokens of prompt and output, above {model.key}'s context length "
                             f"{model.max_model_len:,}, so every request would be rejected")


def _plan_kv(scenario: Scenario, device: DeviceSpec, model: ModelSpec, weight_format: str, kv_format: str,
             tp: int, pp: int, util: float) -> tuple[int, int, int, float, int]:
    """Context and batch limits and the KV cache of a token model: (max_model_len,
    max_num_batched_tokens, block_size, KV bytes per token, KV capacity in tokens)."""
    max_model_len = scenario.engine.max_model_len or model.max_model_len
    if max_model_len > model.max_model_len:
        raise InputError("engine.max_model_len",
                         f"{max_model_len} exceeds {model.key}'s context length {model.max_model_len}")
    if scenario.engine.max_model_len is None:
        _check_fits_context(scenario, model)
    # Default (the engine preset's, simcost.scenario.deployment): a whole max-length prompt
    # without chunked prefill; with it, V1's budget by device memory, or 2048
    max_num_batched_tokens = scenario.engine.max_num_batched_tokens or scenario.engine.default_max_num_batched_tokens(
        max_model_len, device.key, device.memory_bytes)
    if max_num_batched_tokens < scenario.engine.max_num_seqs:  # vLLM refuses this too
        raise InputError("engine.max_num_batched_tokens",
                         f"{max_num_batched_tokens} is below engine.max_num_seqs={scenario.engine.max_num_seqs}; "
                         f"a step must have room for one token of every running request")

    weight_bytes = model.num_params * BYTES_PER_ELEMENT[weight_format]
    b_kv = BYTES_PER_ELEMENT[kv_format]
    # all layers: what one prompt token's KV weighs when it moves (swap, prefill-to-decode transfer)
    kv_bytes_per_token = model.num_layers * model.kv_elements_per_token_per_layer() * b_kv
    block_size = scenario.engine.block_size
    draft_bytes = _draft_weight_bytes(scenario, weight_format)

    ep, dp = expert_parallel(scenario)

    def kv_tokens(t: int, stages: int = pp) -> int:
        # each device keeps the KV of its stage's layers for its share of the KV heads
        per_layer = model.kv_elements_per_token_per_layer(t) * b_kv
        # expert parallelism: the experts over E devices; data-parallel attention: d groups of t
        # devices, each with its own KV cache and 1/d of the step's tokens (activation reserve)
        weights = (weight_bytes_per_device(model, weight_bytes, t, stages, ep) + draft_bytes / (t * stages)
                   if ep > 1 else None)
        free = _free_bytes_per_device(device, model, weight_bytes + draft_bytes, t * stages, util,
                                      math.ceil(max_num_batched_tokens / dp), t, weights)
        tokens = kv_capacity_tokens(free, model.num_full_layers / stages * per_layer,
                                    model.num_sliding_layers / stages * per_layer,
                                    model.sliding_window * math.ceil(scenario.engine.max_num_seqs / dp))
        return tokens // block_size * block_size * dp

    num_kv_tokens = kv_tokens(tp)
    if num_kv_tokens < block_size:
        _raise_does_not_fit(device, model, weight_format, weight_bytes, tp, util, max_num_batched_tokens,
                            kv_tokens, block_size, pp, devices_per_node(scenario, device))
    if scenario.engine.num_kv_blocks is not None:
        # an explicit capacity (vLLM's num_gpu_blocks_override), for what-if studies and tests;
        # requests that can never fit it are rejected one by one instead of refusing to start
        num_kv_tokens = scenario.engine.num_kv_blocks * block_size
    elif num_kv_tokens < max_model_len:
        # vLLM refuses to start in this case too: one max-length request could never be scheduled.
        raise InputError("engine.max_model_len",
                         f"{max_model_len} tokens, but the KV cache of {tp * pp} x {device.key} holds only "
                         f"{num_kv_tokens} tokens of {model.key} at memory_utilization {util}; set "
                         f"engine.max_model_len <= {num_kv_tokens} or raise hardware.tensor_parallel")

    return max_model_len, max_num_batched_tokens, block_size, kv_bytes_per_token, num_kv_tokens


def _draft_weight_bytes(scenario: Scenario, weight_format: str) -> float:
    """Speculative decoding with a draft model keeps its weights (in the target's format) next to
    the target's, split over the same devices; an EAGLE head or MTP module is left out (about one
    layer). Its KV cache is not counted."""
    spec = scenario.engine.speculative
    if spec is None or spec.draft_model is None:
        return 0.0
    draft = scenario.specs.model(spec.draft_model, "engine.speculative.draft_model")
    return draft.num_params * BYTES_PER_ELEMENT[weight_format]


PER_ITEM_NO_LENGTH_LIMIT = 2**31 - 1  # a per-item Deployment's max_model_len


def _plan_per_item(scenario: Scenario, device: DeviceSpec, model: ModelSpec, weight_format: str,
                   num_devices: int, util: float) -> tuple[int, int, int, float, int]:
    """A per-item model has no KV cache: only its weights must fit."""
    weight_bytes = model.num_params * BYTES_PER_ELEMENT[weight_format]
    usable_bytes = device.memory_bytes * util * num_devices
    if weight_bytes > usable_bytes:
        raise InputError("hardware.device",
                         f"{model.key} in {weight_format} needs {weight_bytes / 1e9:.2f} GB of weights, but "
                         f"{num_devices} x {device.key} holds {usable_bytes / 1e9:.2f} GB at memory_utilization {util} "
                         f"(short by {(weight_bytes - usable_bytes) / 1e9:.2f} GB); use a smaller weight_format or device")
    # a batch holds at most max_num_batched_tokens items (default: max_num_seqs, one item each)
    max_items = scenario.engine.max_num_batched_tokens or scenario.engine.max_num_seqs
    # A request is its items (its "prompt") and one result (its one output "token"). The context
    # length has no meaning per item, so the Fleet's length check is given no limit; a request
    # with more items than a batch holds is rejected as exceeds_batch_tokens (as Triton rejects a
    # request over max_batch_size).
    return PER_ITEM_NO_LENGTH_LIMIT, max_items, scenario.engine.block_size, 0.0, 0


def plan_deployment(scenario: Scenario) -> Deployment:
    """Place one replica of the scenario's model on its devices; InputError if it does not fit."""
    catalog = scenario.specs
    device = catalog.device(scenario.hardware.device, "hardware.device")
    model = catalog.model(scenario.model.name, "model.name")
    tp = scenario.hardware.tensor_parallel
    pp = getattr(scenario.hardware, "pipeline_parallel", 1)
    util = scenario.hardware.memory_utilization

    weight_format = scenario.model.weight_format or model.weight_format
    compute_format = compute_format_for(device, weight_format)
    if compute_format is None and weight_format in ("nvfp4", "mxfp4", "fp8"):
        supported = _supported_weight_formats(device)
        raise InputError("model.weight_format", f"{format_refusal(device, weight_format)}; {device.key} runs "
                         f"{', '.join(supported)}")
    if compute_format is None:
        supported = _supported_weight_formats(device)
        given = "set" if scenario.model.weight_format else f"{model.key}'s checkpoint is {weight_format}; set"
        # the suggestion: the widest format the device runs natively (the least change to the
        # model's numerics; on a Jetson fp16, not bf16 cast to fp16)
        native = [f for f in supported if compute_format_for(device, f) == f] or supported
        widest = max(native, key=lambda f: BYTES_PER_ELEMENT.get(f, 0)) if native else None
        raise InputError("model.weight_format",
                         f"{weight_format} weights need {weight_format} compute, which {device.key} lacks; {given} "
                         f"model.weight_format: {widest} ({device.key} supports {', '.join(supported)})")
    kv_format = scenario.model.kv_cache_format or _DEFAULT_KV_FORMAT
    kv_refused = format_refusal(device, kv_format, "KV cache")
    if kv_refused:
        raise InputError("model.kv_cache_format", f"{kv_refused}; use bf16 or fp16")
    weight_bytes = model.num_params * BYTES_PER_ELEMENT[weight_format]

    if is_per_item(model):
        max_model_len, max_num_batched_tokens, block_size, kv_bytes_per_token, num_kv_tokens = _plan_per_item(
            scenario, device, model, weight_format, tp * pp, util)
    else:
        _check_parallelism(scenario, device, model, tp, pp)
        max_model_len, max_num_batched_tokens, block_size, kv_bytes_per_token, num_kv_tokens = _plan_kv(
            scenario, device, model, weight_format, kv_format, tp, pp, util)

    price_per_device = list_usd_per_device_hour(scenario, device)
    ep, dp = expert_parallel(scenario) if not is_per_item(model) else (1, 1)
    dep = Deployment(
        device=device, model=model, tensor_parallel=tp, num_devices=tp * pp * dp,
        expert_parallel=ep, data_parallel=dp,
        weight_format=weight_format, kv_cache_format=kv_format, compute_format=compute_format,
        weight_bytes=weight_bytes, kv_bytes_per_token=kv_bytes_per_token,
        block_size=block_size, num_kv_blocks=num_kv_tokens // block_size,
        max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens,
        price_usd_per_hour=price_per_device * tp * dp, idle_w=device.idle_w * tp * dp,
        peak_w=device.peak_w * tp * dp,
    )
    return _span_stages(dep, pp)


def list_usd_per_device_hour(scenario: Scenario, device: DeviceSpec) -> float:
    """A device's on-demand list price: fleet.price_usd_per_device_hour, else the price catalog's
    offer at fleet.site.provider, else the device catalog's. Owned hardware is billed from its
    capital and power (simcost.cost.pricing.owned_rates), so a board nobody rents out (an edge
    board) needs no list price: 0, its FOCUS ListCost, rather than an error."""
    fleet = scenario.fleet
    if fleet.price_usd_per_device_hour is not None:
        return fleet.price_usd_per_device_hour
    try:  # the scenario's own catalog: bundled offers plus any it brings
        return scenario.specs.on_demand_usd_per_device_hour(device, fleet.site.provider, fleet.site.region)
    except InputError:
        if fleet.pricing.model == "owned":
            return 0.0
        raise


def _span_stages(dep: Deployment, pp: int) -> Deployment:
    """A replica of pp pipeline stages runs on pp times the devices of one tensor-parallel group:
    priced and powered for all of them."""
    if pp == 1:
        return dep
    return replace(dep, pipeline_parallel=pp, price_usd_per_hour=dep.price_usd_per_hour * pp,
                   idle_w=dep.idle_w * pp, peak_w=dep.peak_w * pp)


def _raise_does_not_fit(device, model, weight_format, weight_bytes, tp, util, max_num_batched_tokens,
                        kv_tokens, block_size, pp=1, per_node=_MAX_SUGGESTED_TP) -> None:
    n = tp * pp
    usable_gb = device.memory_bytes * util / 1e9
    reserve_gb = activation_reserve_bytes(max_num_batched_tokens, model.hidden_size, tp) / 1e9
    short_gb = weight_bytes / 1e9 + n * (reserve_gb - usable_gb)
    fits = [t for t in range(tp + 1, min(per_node, _MAX_SUGGESTED_TP) + 1)
            if model.num_heads % t == 0 and kv_tokens(t, pp) >= block_size]
    stages = [s for s in range(pp + 1, model.num_layers + 1) if kv_tokens(tp, s) >= block_size]
    smaller = [f for f in ("fp8", "int8", "int4")
               if BYTES_PER_ELEMENT[f] < BYTES_PER_ELEMENT[weight_format] and compute_format_for(device, f)]
    hints = []
    if fits:
        hints.append(f"tensor_parallel >= {fits[0]}")
    elif stages:  # the node has no room for more tensor parallelism: span nodes
        hints.append(f"pipeline_parallel >= {stages[0]}")
    if smaller:
        hints.append(f"a smaller weight_format ({', '.join(smaller)})")
    if reserve_gb > 0.1 * usable_gb:  # the activation reserve, not the weights, is a big part of the problem
        hints.append(f"a smaller engine.max_num_batched_tokens or engine.max_model_len (activations of "
                     f"{max_num_batched_tokens} tokens take {reserve_gb:.1f} GB per device)")
    raise InputError("hardware.tensor_parallel",
                     f"{model.key} in {weight_format} needs {weight_bytes / 1e9:.1f} GB of weights, but "
                     f"{n} x {device.key} holds {usable_gb * n:.1f} GB at memory_utilization {util}, "
                     f"with no room left for the KV cache (short by {max(short_gb, 0.0):.1f} GB with the activation "
                     f"reserve); use {' or '.join(hints) or 'a larger device'}")
