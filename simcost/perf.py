"""Deployment planning (what fits where, KV capacity, price) and the step-time model.

`plan_deployment` turns a scenario into a `Deployment`: one replica of a model on
`tensor_parallel` devices, with its weight bytes, KV blocks, limits, price and power.
`step_params` packs the step-time model into a float64 vector, and the numba kernels
`step_time_s` / `decode_span_times_s` evaluate it; each has a plain-Python twin (`*_py`) that the
tests compare against (DESIGN.md section 4).

Formats. `weight_format` sets the bytes per weight and the compute rate:
- bf16 / fp16 / fp32 run at that format's peak. A device lacking one 16-bit format runs the other
  (same bytes, cast at load, as vLLM does for bf16 checkpoints on a T4).
- fp8 runs at the fp8 peak (W8A8); a device without an fp8 peak refuses fp8 weights.
- int8 / int4 are weight-only quantisation (W8A16, W4A16: AWQ, GPTQ): bytes at the small format,
  compute at the bf16 (else fp16) rate, since the weights are dequantised before the matmul.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numba import njit

from simcost.catalog import DeviceSpec, ModelSpec, get_device, get_model
from simcost.config import Scenario
from simcost.errors import InputError

__all__ = ["BYTES_PER_ELEMENT", "Deployment", "plan_deployment", "step_params", "roofline_params",
           "efficiency_factors", "EFFICIENCY_FACTORS", "compute_format_for",
           "step_time_s", "step_time_s_py", "decode_span_times_s", "decode_span_times_s_py",
           "ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN"]

BYTES_PER_ELEMENT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}

# Activation reserve per device = max_num_batched_tokens * hidden_size * this many bytes. vLLM
# sizes the reserve by profiling a forward pass of max_num_batched_tokens tokens; its peak is a
# dozen-odd live bf16 tensors per token: residual, norm output, q/k/v, attention output (~6 x d)
# and the MLP gate and up projections (2 x 3.5 d for Llama shapes), i.e. ~13 d elements = 26 d
# bytes, rounded to 24 as not all are live at once. It is not divided by tensor parallelism
# (the residual stream is replicated), which errs towards fewer KV blocks.
ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN = 24.0

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

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_kv_blocks * self.block_size


@dataclass(frozen=True)
class Pool:
    """Replicas of one deployment in a fleet: all of them ("serve"), or one side of a
    disaggregated fleet ("prefill", "decode"). Replica indices follow pool order."""

    role: str
    deployment: Deployment
    replicas: int


def fleet_pools(scenario: Scenario, dep: Deployment) -> list[Pool]:
    """The scenario's pools; `dep` is the scenario's own deployment (its hardware section)."""
    d = scenario.fleet.disaggregation
    if d is None:
        return [Pool("serve", dep, scenario.fleet.replicas)]
    decode_dep = dep
    if d.decode_hardware is not None:
        try:
            decode_dep = plan_deployment(replace(scenario, hardware=d.decode_hardware))
        except InputError as exc:  # name the key the user wrote
            where = exc.where.replace("hardware", "fleet.disaggregation.decode_hardware", 1)
            raise InputError(where, exc.problem) from None
    return [Pool("prefill", dep, d.prefill_replicas), Pool("decode", decode_dep, d.decode_replicas)]


# --- planning -------------------------------------------------------------------------------

def compute_format_for(device: DeviceSpec, weight_format: str) -> str | None:
    """The format the matmuls run in for `weight_format` on `device`, or None if it cannot."""
    peaks = device.peak_flops
    if weight_format in ("int8", "int4"):
        weight_format = "bf16"  # weight-only quantisation: dequantised to 16-bit before the matmul
    if weight_format in peaks:
        return weight_format
    if weight_format in ("bf16", "fp16"):
        other = "fp16" if weight_format == "bf16" else "bf16"
        return other if other in peaks else None
    return None


def _supported_weight_formats(device: DeviceSpec) -> list[str]:
    return [f for f in BYTES_PER_ELEMENT if compute_format_for(device, f) is not None]


def _kv_heads_per_device(model: ModelSpec, tp: int) -> float:
    # With tp > num_kv_heads each device keeps one KV head (vLLM replicates them), so KV per device
    # stops shrinking; otherwise the heads split evenly.
    return max(model.num_kv_heads / tp, 1.0)


def _free_bytes_per_device(device: DeviceSpec, model: ModelSpec, weight_bytes: float, tp: int,
                           memory_utilization: float, max_num_batched_tokens: int) -> float:
    reserve_bytes = max_num_batched_tokens * model.hidden_size * ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN
    return device.memory_bytes * memory_utilization - weight_bytes / tp - reserve_bytes


def _kv_blocks(free_bytes_per_device: float, kv_bytes_per_token_per_device: float, block_size: int) -> int:
    if free_bytes_per_device <= 0:
        return 0
    return math.floor(free_bytes_per_device / (kv_bytes_per_token_per_device * block_size))


def plan_deployment(scenario: Scenario) -> Deployment:
    """Place one replica of the scenario's model on its devices; InputError if it does not fit."""
    device = get_device(scenario.hardware.device, "hardware.device")
    model = get_model(scenario.model.name, "model.name")
    tp = scenario.hardware.tensor_parallel
    util = scenario.hardware.memory_utilization

    weight_format = scenario.model.weight_format or model.weight_format
    compute_format = compute_format_for(device, weight_format)
    if compute_format is None:
        raise InputError("model.weight_format",
                         f"{weight_format} weights need {weight_format} compute, which {device.key} lacks; "
                         f"{device.key} supports {', '.join(_supported_weight_formats(device))}")
    kv_format = scenario.model.kv_cache_format or _DEFAULT_KV_FORMAT

    if model.num_heads % tp:
        raise InputError("hardware.tensor_parallel",
                         f"{tp} does not divide {model.key}'s {model.num_heads} attention heads")

    max_model_len = scenario.engine.max_model_len or model.max_model_len
    if max_model_len > model.max_model_len:
        raise InputError("engine.max_model_len",
                         f"{max_model_len} exceeds {model.key}'s context length {model.max_model_len}")
    # Defaults: vLLM v0 without chunked prefill fits a whole max-length prompt in one step; with
    # chunked prefill, 2048-token budgets (Sarathi-Serve's and vLLM's long-standing default).
    max_num_batched_tokens = scenario.engine.max_num_batched_tokens or (
        2048 if scenario.engine.policy == "chunked" else max(max_model_len, 2048))
    if max_num_batched_tokens < scenario.engine.max_num_seqs:  # vLLM refuses this too
        raise InputError("engine.max_num_batched_tokens",
                         f"{max_num_batched_tokens} is below engine.max_num_seqs={scenario.engine.max_num_seqs}; "
                         f"a step must have room for one token of every running request")

    weight_bytes = model.num_params * BYTES_PER_ELEMENT[weight_format]
    b_kv = BYTES_PER_ELEMENT[kv_format]
    kv_bytes_per_token = 2.0 * model.num_layers * model.num_kv_heads * model.head_dim * b_kv
    block_size = scenario.engine.block_size

    def kv_tokens(t: int) -> int:
        per_device = 2.0 * model.num_layers * _kv_heads_per_device(model, t) * model.head_dim * b_kv
        free = _free_bytes_per_device(device, model, weight_bytes, t, util, max_num_batched_tokens)
        return _kv_blocks(free, per_device, block_size) * block_size

    num_kv_tokens = kv_tokens(tp)
    if num_kv_tokens < block_size:
        _raise_does_not_fit(device, model, weight_format, weight_bytes, tp, util, max_num_batched_tokens,
                            kv_tokens, block_size)
    if scenario.engine.num_kv_blocks is not None:
        # an explicit capacity (vLLM's num_gpu_blocks_override), for what-if studies and tests;
        # requests that can never fit it are rejected one by one instead of refusing to start
        num_kv_tokens = scenario.engine.num_kv_blocks * block_size
    elif num_kv_tokens < max_model_len:
        # vLLM refuses to start in this case too: one max-length request could never be scheduled.
        raise InputError("engine.max_model_len",
                         f"{max_model_len} tokens, but the KV cache of {tp} x {device.key} holds only "
                         f"{num_kv_tokens} tokens of {model.key} at memory_utilization {util}; set "
                         f"engine.max_model_len <= {num_kv_tokens} or raise hardware.tensor_parallel")

    price_per_device = scenario.fleet.price_usd_per_device_hour
    if price_per_device is None:
        price_per_device = device.price_usd_per_hour
    return Deployment(
        device=device, model=model, tensor_parallel=tp, num_devices=tp,
        weight_format=weight_format, kv_cache_format=kv_format, compute_format=compute_format,
        weight_bytes=weight_bytes, kv_bytes_per_token=kv_bytes_per_token,
        block_size=block_size, num_kv_blocks=num_kv_tokens // block_size,
        max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens,
        price_usd_per_hour=price_per_device * tp, idle_w=device.idle_w * tp, peak_w=device.peak_w * tp,
    )


def _raise_does_not_fit(device, model, weight_format, weight_bytes, tp, util, max_num_batched_tokens,
                        kv_tokens, block_size) -> None:
    usable_gb = device.memory_bytes * util / 1e9
    fits = [t for t in range(tp + 1, _MAX_SUGGESTED_TP + 1) if model.num_heads % t == 0 and kv_tokens(t) >= block_size]
    smaller = [f for f in ("fp8", "int8", "int4")
               if BYTES_PER_ELEMENT[f] < BYTES_PER_ELEMENT[weight_format] and compute_format_for(device, f)]
    hints = []
    if fits:
        hints.append(f"tensor_parallel >= {fits[0]}")
    if smaller:
        hints.append(f"a smaller weight_format ({', '.join(smaller)})")
    reserve_gb = max_num_batched_tokens * model.hidden_size * ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN / 1e9
    if reserve_gb > 0.1 * usable_gb:  # the activation reserve, not the weights, is a big part of the problem
        hints.append(f"a smaller engine.max_num_batched_tokens or engine.max_model_len (activations of "
                     f"{max_num_batched_tokens} tokens take {reserve_gb:.1f} GB per device)")
    raise InputError("hardware.tensor_parallel",
                     f"{model.key} in {weight_format} needs {weight_bytes / 1e9:.1f} GB of weights, but "
                     f"{tp} x {device.key} holds {usable_gb * tp:.1f} GB at memory_utilization {util}, "
                     f"with no room left for the KV cache; use {' or '.join(hints) or 'a larger device'}")


# --- the step-time parameter vector -----------------------------------------------------------
# Everything per device (FLOPs and bytes already divided by tensor parallelism), so the kernels
# need no model or device objects.
P_KIND = 0  # KIND_ROOFLINE or KIND_CONSTANT
P_STEP_OVERHEAD_S = 1  # fixed seconds per step (both kinds)
P_PREFILL_S_PER_TOKEN = 2  # constant model
P_DECODE_STEP_S = 3  # constant model: added once when a step has any decode token
P_FLOPS_PER_TOKEN = 4  # 2 * P / t
P_FLOPS_PER_ATTN_PAIR = 5  # 4 * L * d / t
P_FLOP_RATE = 6  # peak_flops[compute_format] * mfu (one device)
P_WEIGHT_BYTES = 7  # weight bytes / t
P_KV_BYTES_PER_TOKEN = 8  # KV bytes per token per device
P_BYTE_RATE = 9  # mem_bw * mbu (one device)
P_COMM_S_PER_TOKEN = 10  # all-reduce transfer seconds per step token (0 when t == 1)
P_COMM_FIXED_S = 11  # all-reduce latency seconds per step: 2 L (t-1) allreduce_latency_s
NUM_PARAMS = 12

KIND_ROOFLINE = 0.0
KIND_CONSTANT = 1.0


def step_params(scenario: Scenario, dep: Deployment) -> np.ndarray:
    """The step-time model of `scenario.perf` for deployment `dep`, packed for the kernels."""
    perf = scenario.perf
    if perf.model == "constant":
        p = np.zeros(NUM_PARAMS, dtype=np.float64)
        p[P_KIND] = KIND_CONSTANT
        p[P_STEP_OVERHEAD_S] = perf.step_overhead_s or 0.0
        p[P_PREFILL_S_PER_TOKEN] = perf.prefill_s_per_token
        p[P_DECODE_STEP_S] = perf.decode_step_s
        return p
    factors = efficiency_factors(scenario, dep)
    return roofline_params(dep.device, dep.model, dep.tensor_parallel, dep.compute_format,
                           dep.weight_bytes, dep.kv_cache_format, **factors)


EFFICIENCY_FACTORS = ("mfu", "mbu", "step_overhead_s", "allreduce_latency_s")


def efficiency_factors(scenario: Scenario, dep: Deployment) -> dict[str, float]:
    """The roofline's factors. Precedence: a value set in `perf`, then the calibrated profile
    named by `perf.profile`, then the device catalog's defaults."""
    factors = {name: getattr(dep.device, name) for name in EFFICIENCY_FACTORS}
    profile_path = getattr(scenario.perf, "profile", None)
    if profile_path:
        from simcost.calibrate import load_profile  # lazy: calibrate imports this module
        factors.update(load_profile(profile_path, dep.device.key, dep.model.key, "perf.profile"))
    for name in EFFICIENCY_FACTORS:
        value = getattr(scenario.perf, name, None)
        if value is not None:
            factors[name] = value
    return factors


def roofline_params(device: DeviceSpec, model: ModelSpec, t: int, compute_format: str, weight_bytes: float,
                    kv_cache_format: str, *, mfu: float, mbu: float, step_overhead_s: float,
                    allreduce_latency_s: float) -> np.ndarray:
    """The roofline of `model` (weight_bytes in total) on `t` x `device` with the given factors."""
    p = np.zeros(NUM_PARAMS, dtype=np.float64)
    hidden = model.num_heads * model.head_dim
    p[P_KIND] = KIND_ROOFLINE
    p[P_STEP_OVERHEAD_S] = step_overhead_s
    p[P_FLOPS_PER_TOKEN] = 2.0 * model.num_params / t
    # Causal attention: QK^T and PV cost 2 * 2 * d FLOPs per (query, key) pair per layer; the
    # caller counts pairs exactly (n(n+1)/2 for a fresh prefill), so no halving here.
    p[P_FLOPS_PER_ATTN_PAIR] = 4.0 * model.num_layers * hidden / t
    p[P_FLOP_RATE] = device.peak_flops[compute_format] * mfu
    p[P_WEIGHT_BYTES] = weight_bytes / t
    p[P_KV_BYTES_PER_TOKEN] = (2.0 * model.num_layers * _kv_heads_per_device(model, t) * model.head_dim
                               * BYTES_PER_ELEMENT[kv_cache_format])
    p[P_BYTE_RATE] = device.mem_bw_bytes_per_s * mbu
    if t > 1:
        # Megatron-style tensor parallelism: two all-reduces per layer (after attention and after
        # the MLP) of the step's bf16 activations; a ring all-reduce moves 2 (t-1)/t of the data
        # over each device's link. Its latency grows with the ring's 2 (t-1) hops, so the catalog's
        # allreduce_latency_s is the latency at t = 2 and t devices pay (t - 1) times it. (A flat
        # per-all-reduce latency cannot match the Splitwise A100 data, whose batch-1 decode stops
        # improving from TP4 to TP8, without also making TP2 slower than TP1 for small models.)
        allreduces = 2.0 * model.num_layers
        bytes_per_token = 2.0 * (t - 1) / t * hidden * 2.0
        p[P_COMM_S_PER_TOKEN] = allreduces * bytes_per_token / device.link_bytes_per_s
        p[P_COMM_FIXED_S] = allreduces * (t - 1) * allreduce_latency_s
    return p


# --- kernels --------------------------------------------------------------------------------
# A step with no new tokens runs nothing and takes 0 s. Token counts are used as float64 so that
# sums over long contexts cannot overflow.

@njit(cache=True)
def step_time_s(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens):
    tokens = float(num_prefill_tokens) + float(num_decode_tokens)
    if tokens <= 0.0:
        return 0.0
    if p[P_KIND] == KIND_CONSTANT:
        t = p[P_STEP_OVERHEAD_S] + p[P_PREFILL_S_PER_TOKEN] * float(num_prefill_tokens)
        if num_decode_tokens > 0:
            t += p[P_DECODE_STEP_S]
        return t
    flops = p[P_FLOPS_PER_TOKEN] * tokens + p[P_FLOPS_PER_ATTN_PAIR] * float(attn_token_pairs)
    nbytes = p[P_WEIGHT_BYTES] + p[P_KV_BYTES_PER_TOKEN] * (float(kv_read_tokens) + tokens)
    return (max(flops / p[P_FLOP_RATE], nbytes / p[P_BYTE_RATE])
            + p[P_COMM_FIXED_S] + p[P_COMM_S_PER_TOKEN] * tokens + p[P_STEP_OVERHEAD_S])


@njit(cache=True)
def decode_span_times_s(p, num_seqs, kv_tokens_sum, num_steps):
    """Durations of `num_steps` decode steps of the same `num_seqs` requests whose cached tokens
    sum to `kv_tokens_sum` at the first step; each step adds one token per request."""
    out = np.empty(num_steps, dtype=np.float64)
    n = float(num_seqs)
    for j in range(num_steps):
        kv = float(kv_tokens_sum) + j * n
        out[j] = step_time_s(p, 0, num_seqs, kv + n, kv)
    return out


def item_time_s(p: np.ndarray, flops: float, nbytes: float) -> float:
    """Seconds one step spends on non-token items (simcost.config.ItemSpec) of one device's
    share of `flops` and `nbytes`: the roofline of that work alone, added to the token work
    (encoders run before the language model, not overlapped with it)."""
    if flops <= 0.0 and nbytes <= 0.0:
        return 0.0
    return max(flops / p[P_FLOP_RATE], nbytes / p[P_BYTE_RATE])


def step_time_s_py(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens) -> float:
    """Plain-Python reference for `step_time_s`, written from the formula, not the kernel."""
    tokens = num_prefill_tokens + num_decode_tokens
    if tokens <= 0:
        return 0.0
    if p[P_KIND] == KIND_CONSTANT:
        decode_s = p[P_DECODE_STEP_S] if num_decode_tokens > 0 else 0.0
        return float(p[P_STEP_OVERHEAD_S] + p[P_PREFILL_S_PER_TOKEN] * num_prefill_tokens + decode_s)
    compute_s = (p[P_FLOPS_PER_TOKEN] * tokens + p[P_FLOPS_PER_ATTN_PAIR] * attn_token_pairs) / p[P_FLOP_RATE]
    memory_s = (p[P_WEIGHT_BYTES] + p[P_KV_BYTES_PER_TOKEN] * (kv_read_tokens + tokens)) / p[P_BYTE_RATE]
    comm_s = p[P_COMM_FIXED_S] + p[P_COMM_S_PER_TOKEN] * tokens
    return float(max(compute_s, memory_s) + comm_s + p[P_STEP_OVERHEAD_S])


def decode_span_times_s_py(p, num_seqs, kv_tokens_sum, num_steps) -> np.ndarray:
    return np.array([step_time_s_py(p, 0, num_seqs, kv_tokens_sum + j * num_seqs + num_seqs,
                                    kv_tokens_sum + j * num_seqs) for j in range(num_steps)], dtype=np.float64)
