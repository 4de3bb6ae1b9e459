"""Deployment planning (fit, KV capacity, formats) and the roofline / constant step-time model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost import perf
from simcost.catalog import get_device
from simcost.config import scenario_from_dict
from simcost.errors import InputError
from simcost.perf import (ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN, decode_span_times_s, decode_span_times_s_py,
                          plan_deployment, step_params, step_time_s, step_time_s_py)


def make(model="llama-3.1-8b", device="h100-sxm", tp=1, weight_format=None, perf=None, engine=None, fleet=None,
         memory_utilization=0.9):
    raw = {
        "duration_s": 10.0,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                     "input_tokens": {"dist": "fixed", "value": 128},
                     "output_tokens": {"dist": "fixed", "value": 16}},
        "model": {"name": model},
        "hardware": {"device": device, "tensor_parallel": tp, "memory_utilization": memory_utilization},
    }
    if weight_format:
        raw["model"]["weight_format"] = weight_format
    for key, value in (("perf", perf), ("engine", engine), ("fleet", fleet)):
        if value:
            raw[key] = value
    return scenario_from_dict(raw)


def plan(**kw):
    scenario = make(**kw)
    dep = plan_deployment(scenario)
    return scenario, dep, step_params(scenario, dep)


def decode_s(p, context_tokens=512, batch=1):
    kv = context_tokens * batch
    return step_time_s_py(p, 0, batch, kv + batch, kv)


def prefill_s(p, n):
    return step_time_s_py(p, n, 0, n * (n + 1) // 2, 0)


# --- planning -------------------------------------------------------------------------------

def test_kv_bytes_per_token_by_hand():
    _, dep8, _ = plan(model="llama-3.1-8b", engine={"max_model_len": 8192})
    assert dep8.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    _, dep70, _ = plan(model="llama-2-70b", device="a100-80gb", tp=2)
    assert dep70.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680
    assert dep70.weight_bytes == 68_976_648_192 * 2


def test_kv_capacity_by_hand():
    # Llama-2-70B fp16 on 2 x A100 80 GiB at 0.9, default max_num_batched_tokens max(4096, 2048).
    _, dep, _ = plan(model="llama-2-70b", device="a100-80gb", tp=2)
    per_device_free = 80 * 2**30 * 0.9 - 68_976_648_192 * 2 / 2 - 4096 * 8192 * ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN
    expected_blocks = math.floor(per_device_free * 2 / (327_680 * 16))
    assert dep.num_kv_blocks == expected_blocks
    assert dep.max_num_batched_tokens == 4096 and dep.max_model_len == 4096
    assert 40_000 < dep.kv_capacity_tokens < 50_000  # ~7.5 GB free per GPU at 164 kB per token per GPU


def test_price_and_power_are_per_replica():
    _, dep, _ = plan(model="llama-2-70b", device="a100-80gb", tp=4)
    a100 = get_device("a100-80gb")
    assert dep.num_devices == 4
    assert dep.price_usd_per_hour == pytest.approx(4 * a100.price_usd_per_hour)
    assert dep.idle_w == 4 * a100.idle_w and dep.peak_w == 4 * a100.peak_w
    _, dep, _ = plan(model="llama-2-70b", device="a100-80gb", tp=2, fleet={"price_usd_per_device_hour": 2.21})
    assert dep.price_usd_per_hour == pytest.approx(4.42)


def test_70b_on_one_a100_is_refused_with_a_tp_suggestion():
    with pytest.raises(InputError) as err:
        plan_deployment(make(model="llama-2-70b", device="a100-80gb", tp=1))
    assert err.value.where == "hardware.tensor_parallel"
    message = str(err.value)
    assert "138.0 GB" in message and "77.3 GB" in message and "tensor_parallel >= 2" in message
    assert "int8" in message  # smaller formats the A100 can run
    assert plan_deployment(make(model="llama-2-70b", device="a100-80gb", tp=2)).num_kv_blocks > 0


def test_fp8_weights_on_a100_are_refused():
    with pytest.raises(InputError) as err:
        plan_deployment(make(device="a100-80gb", weight_format="fp8", engine={"max_model_len": 8192}))
    assert err.value.where == "model.weight_format"
    assert "bf16" in str(err.value) and "int8" in str(err.value)
    assert plan_deployment(make(device="h100-sxm", weight_format="fp8")).compute_format == "fp8"


def test_weight_only_quantisation_computes_in_16_bit():
    _, dep, _ = plan(weight_format="int4")
    assert dep.compute_format == "bf16" and dep.weight_bytes == 8_030_261_248 * 0.5
    # T4 has no bf16: a bf16 checkpoint runs in fp16 (same bytes).
    _, dep, _ = plan(device="t4", weight_format="int8", engine={"max_model_len": 4096})
    assert dep.compute_format == "fp16"


def test_max_model_len_checks():
    with pytest.raises(InputError) as err:
        plan_deployment(make(model="llama-2-70b", device="a100-80gb", tp=2, engine={"max_model_len": 8192}))
    assert err.value.where == "engine.max_model_len"
    # 8B on one L4 fits only with a shorter context than the model's 128k.
    _, dep, _ = plan(device="l4", engine={"max_model_len": 8192})
    assert dep.kv_capacity_tokens >= 8192
    with pytest.raises(InputError):
        plan_deployment(make(device="l4", tp=1, engine={"max_model_len": 131072, "max_num_batched_tokens": 2048}))


def test_unknown_names_give_closest():
    with pytest.raises(InputError, match=r"^hardware\.device: unknown device 'a100'.*a100-80gb"):
        plan_deployment(make(device="a100"))
    with pytest.raises(InputError, match=r"^model\.name: unknown model 'llama-2-70'.*llama-2-70b"):
        plan_deployment(make(model="llama-2-70"))


def test_tensor_parallel_must_divide_heads():
    with pytest.raises(InputError, match="hardware.tensor_parallel"):
        plan_deployment(make(tp=3))


def test_tensor_parallel_without_scale_up_link_uses_pcie():
    _, dep, p = plan(device="l4", tp=2, engine={"max_model_len": 8192})
    assert dep.num_devices == 2 and decode_s(p) > 0


# --- roofline sanity ------------------------------------------------------------------------

def _terms(p, num_prefill, num_decode, pairs, kv_read):
    # compute and memory seconds, through the reference with everything but one term switched off
    # (the tests may look inside perf's private parameter layout).
    compute, memory = p.copy(), p.copy()
    for q in (compute, memory):
        q[[perf.P_STEP_OVERHEAD_S, perf.P_COMM_S_PER_TOKEN, perf.P_COMM_FIXED_S]] = 0.0
    memory[[perf.P_FLOPS_PER_TOKEN, perf.P_FLOPS_PER_ATTN_PAIR]] = 0.0
    compute[[perf.P_WEIGHT_BYTES, perf.P_KV_BYTES_PER_TOKEN]] = 0.0
    return (step_time_s_py(compute, num_prefill, num_decode, pairs, kv_read),
            step_time_s_py(memory, num_prefill, num_decode, pairs, kv_read))


def test_batch1_decode_is_bandwidth_bound_and_scales_with_weight_bytes():
    _, _, p16 = plan(engine={"max_model_len": 8192})
    compute, memory = _terms(p16, 0, 1, 513, 512)
    assert memory > 20 * compute
    _, _, p8 = plan(weight_format="int8", engine={"max_model_len": 8192})
    overhead = p16[perf.P_STEP_OVERHEAD_S]
    ratio = (decode_s(p8) - overhead) / (decode_s(p16) - overhead)
    assert 0.5 <= ratio < 0.52  # weights halve; the KV bytes of the context do not


def test_long_prefill_is_compute_bound():
    _, _, p = plan(engine={"max_model_len": 8192})
    n = 4096
    compute, memory = _terms(p, n, 0, n * (n + 1) // 2, 0)
    assert compute > 5 * memory
    assert prefill_s(p, n) > 10 * decode_s(p)


def test_tensor_parallel_speeds_decode_but_less_than_linearly():
    _, _, p1 = plan(model="llama-3.1-8b", device="a100-80gb", engine={"max_model_len": 8192})
    _, _, p2 = plan(model="llama-3.1-8b", device="a100-80gb", tp=2, engine={"max_model_len": 8192})
    t1, t2 = decode_s(p1), decode_s(p2)
    assert t2 < t1 < 2 * t2


def test_perf_overrides_take_precedence():
    _, _, base = plan(engine={"max_model_len": 8192})
    _, _, tuned = plan(engine={"max_model_len": 8192}, perf={"mbu": 0.4, "step_overhead_s": 0.0})
    assert decode_s(tuned) == pytest.approx((decode_s(base) - base[perf.P_STEP_OVERHEAD_S]) * 0.8 / 0.4, rel=1e-9)


def test_constant_model():
    _, _, p = plan(engine={"max_model_len": 8192},
                   perf={"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.001})
    assert step_time_s_py(p, 100, 0, 5050, 0) == pytest.approx(0.001 + 0.01)
    assert step_time_s_py(p, 100, 3, 5050 + 300, 297) == pytest.approx(0.001 + 0.01 + 0.02)
    assert step_time_s_py(p, 0, 8, 800, 792) == pytest.approx(0.021)
    assert step_time_s_py(p, 0, 0, 0, 0) == 0.0


# --- kernels against their references -------------------------------------------------------

PARAM_CASES = {
    "h100-8b": dict(engine={"max_model_len": 8192}),
    "a100-70b-tp4": dict(model="llama-2-70b", device="a100-80gb", tp=4),
    "l4-8b-int4": dict(device="l4", weight_format="int4", engine={"max_model_len": 8192}),
    "constant": dict(engine={"max_model_len": 8192},
                     perf={"model": "constant", "prefill_s_per_token": 2e-4, "decode_step_s": 0.015}),
}
PARAMS = {name: plan(**kw)[2] for name, kw in PARAM_CASES.items()}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(PARAMS)), num_prefill=st.integers(0, 16384), num_decode=st.integers(0, 512),
       context=st.integers(0, 200_000))
def test_step_time_kernel_equals_reference(name, num_prefill, num_decode, context):
    p = PARAMS[name]
    pairs = num_prefill * (num_prefill + 1) // 2 + num_decode * (context + 1)
    kv_read = num_decode * context
    expected = step_time_s_py(p, num_prefill, num_decode, pairs, kv_read)
    assert step_time_s(p, num_prefill, num_decode, pairs, kv_read) == pytest.approx(expected, rel=1e-12, abs=0)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(PARAMS)), num_seqs=st.integers(1, 512), kv_sum=st.integers(0, 10_000_000),
       num_steps=st.integers(0, 64))
def test_decode_span_kernel_equals_reference_and_repeated_steps(name, num_seqs, kv_sum, num_steps):
    p = PARAMS[name]
    span = decode_span_times_s(p, num_seqs, kv_sum, num_steps)
    assert span.shape == (num_steps,) and span.dtype == np.float64
    np.testing.assert_allclose(span, decode_span_times_s_py(p, num_seqs, kv_sum, num_steps), rtol=1e-12, atol=0)
    steps = [step_time_s(p, 0, num_seqs, kv_sum + j * num_seqs + num_seqs, kv_sum + j * num_seqs)
             for j in range(num_steps)]
    np.testing.assert_allclose(span, steps, rtol=1e-12, atol=0)
