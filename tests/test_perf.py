"""Deployment planning (fit, KV capacity, formats) and the roofline / constant step-time model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.catalog.specs import get_device
from simcost.catalog.types import compute_format_for
from simcost.errors import InputError
from simcost.perf import roofline as rl
from simcost.perf import step_model as sm
from simcost.perf.deployment import ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN, plan_deployment
from simcost.perf.step_model import decode_span_times_s, step_params, step_time_s
from simcost.perf.step_reference import decode_span_times_s_py, step_time_s_py
from simcost.scenario.scenario import scenario_from_dict


def make(model="llama-3.1-8b", device="h100-sxm", tp=1, weight_format=None, perf=None, engine=None, fleet=None,
         memory_utilization=0.9, pp=1, kv_cache_format=None, micro_batches=None):
    raw = {
        "duration_s": 10.0,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                     "input_tokens": {"dist": "fixed", "value": 128},
                     "output_tokens": {"dist": "fixed", "value": 16}},
        "model": {"name": model},
        "hardware": {"device": device, "tensor_parallel": tp, "memory_utilization": memory_utilization},
        "perf": {"model": "roofline"},  # the roofline's formulas are what these tests check
    }
    if pp > 1:
        raw["hardware"]["pipeline_parallel"] = pp
    if micro_batches:
        raw["hardware"]["pipeline_micro_batches"] = micro_batches
    if weight_format:
        raw["model"]["weight_format"] = weight_format
    if kv_cache_format:
        raw["model"]["kv_cache_format"] = kv_cache_format
    if perf:
        raw["perf"] = {"model": "roofline", **perf}
    for key, value in (("engine", engine), ("fleet", fleet)):
        if value:
            raw[key] = value
    return scenario_from_dict(raw)


def plan(**kw):
    scenario = make(**kw)
    dep = plan_deployment(scenario)
    return scenario, dep, step_params(scenario, dep)


def decode_s(p, context_tokens=512, batch=1):
    kv = context_tokens * batch
    return step_time_s_py(p, 0, batch, kv + batch, kv, 0)


def prefill_s(p, n):
    return step_time_s_py(p, n, 0, n * (n + 1) // 2, 0, 1)


# --- planning -------------------------------------------------------------------------------

def test_kv_bytes_per_token_by_hand():
    _, dep8, _ = plan(model="llama-3.1-8b", engine={"max_model_len": 8192})
    assert dep8.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131_072
    _, dep70, _ = plan(model="llama-2-70b", device="a100-80gb", tp=2)
    assert dep70.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680
    assert dep70.weight_bytes == 68_976_648_192 * 2


def test_kv_capacity_by_hand():
    # Llama-2-70B fp16 on 2 x A100 80 GiB at 0.9; vLLM v0's whole-prompt budget max(4096, 2048).
    _, dep, _ = plan(model="llama-2-70b", device="a100-80gb", tp=2, engine={"preset": "vllm-v0"})
    per_device_free = 80 * 2**30 * 0.9 - 68_976_648_192 * 2 / 2 - 4096 * 8192 * (4 + 20 / 2)  # activations: 4 B/d replicated, 20 split
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

def _terms(p, num_prefill, num_decode, pairs, kv_read, num_requests=0):
    # compute and memory seconds, through the reference with everything but one term switched off
    # (the tests may look inside perf's private parameter layout).
    compute, memory = p.copy(), p.copy()
    for q in (compute, memory):
        q[[sm.P_STEP_OVERHEAD_S, sm.P_COMM_S_PER_TOKEN, sm.P_COMM_FIXED_S]] = 0.0
    memory[[sm.P_FLOPS_PER_TOKEN, sm.P_FLOPS_PER_ATTN_PAIR]] = 0.0
    compute[[sm.P_WEIGHT_BYTES, sm.P_KV_BYTES_PER_TOKEN]] = 0.0
    return (step_time_s_py(compute, num_prefill, num_decode, pairs, kv_read, num_requests),
            step_time_s_py(memory, num_prefill, num_decode, pairs, kv_read, num_requests))


def test_batch1_decode_is_bandwidth_bound_and_scales_with_weight_bytes():
    _, _, p16 = plan(engine={"max_model_len": 8192})
    compute, memory = _terms(p16, 0, 1, 513, 512)
    assert memory > 20 * compute
    _, _, p8 = plan(weight_format="int8", engine={"max_model_len": 8192})
    overhead = p16[sm.P_STEP_OVERHEAD_S]
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
    assert decode_s(tuned) == pytest.approx((decode_s(base) - base[sm.P_STEP_OVERHEAD_S]) * 0.8 / 0.4, rel=1e-9)


def test_constant_model():
    _, _, p = plan(engine={"max_model_len": 8192},
                   perf={"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.001})
    assert step_time_s_py(p, 100, 0, 5050, 0, 1) == pytest.approx(0.001 + 0.01)
    assert step_time_s_py(p, 100, 0, 5050, 0, 4) == pytest.approx(0.001 + 0.01)  # no per-request term
    assert step_time_s_py(p, 100, 3, 5050 + 300, 297, 1) == pytest.approx(0.001 + 0.01 + 0.02)
    assert step_time_s_py(p, 0, 8, 800, 792, 0) == pytest.approx(0.021)
    assert step_time_s_py(p, 0, 0, 0, 0, 0) == 0.0


# --- kernels against their references -------------------------------------------------------

PARAM_CASES = {
    "h100-8b": dict(engine={"max_model_len": 8192}),
    "a100-70b-tp4": dict(model="llama-2-70b", device="a100-80gb", tp=4),
    "a100-70b-tp4-per-request": dict(model="llama-2-70b", device="a100-80gb", tp=4,
                                     perf={"prefill_overhead_s": 0.003, "prefill_request_s": 0.017}),
    "l4-8b-int4": dict(device="l4", weight_format="int4", engine={"max_model_len": 8192}),
    "constant": dict(engine={"max_model_len": 8192},
                     perf={"model": "constant", "prefill_s_per_token": 2e-4, "decode_step_s": 0.015}),
}
PARAMS = {name: plan(**kw)[2] for name, kw in PARAM_CASES.items()}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(PARAMS)), num_prefill=st.integers(0, 16384), num_decode=st.integers(0, 512),
       context=st.integers(0, 200_000), num_requests=st.integers(0, 64))
def test_step_time_kernel_equals_reference(name, num_prefill, num_decode, context, num_requests):
    assert_kernel_equals_reference(PARAMS[name], num_prefill, num_decode, context, num_requests)


def assert_kernel_equals_reference(p, num_prefill, num_decode, context, num_requests) -> int:
    """The numba step kernel equals its plain-Python twin on one step; returns the KV tokens read."""
    pairs = num_prefill * (num_prefill + 1) // 2 + num_decode * (context + 1)
    kv_read = num_decode * context
    expected = step_time_s_py(p, num_prefill, num_decode, pairs, kv_read, num_requests)
    assert step_time_s(p, num_prefill, num_decode, pairs, kv_read, num_requests) == pytest.approx(expected, rel=1e-12, abs=0)
    return kv_read


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(PARAMS)), num_seqs=st.integers(1, 512), kv_sum=st.integers(0, 10_000_000),
       num_steps=st.integers(0, 64))
def test_decode_span_kernel_equals_reference_and_repeated_steps(name, num_seqs, kv_sum, num_steps):
    p = PARAMS[name]
    span = decode_span_times_s(p, num_seqs, kv_sum, num_steps)
    assert span.shape == (num_steps,) and span.dtype == np.float64
    np.testing.assert_allclose(span, decode_span_times_s_py(p, num_seqs, kv_sum, num_steps), rtol=1e-12, atol=0)
    steps = [step_time_s(p, 0, num_seqs, kv_sum + j * num_seqs + num_seqs, kv_sum + j * num_seqs, 0)
             for j in range(num_steps)]
    np.testing.assert_allclose(span, steps, rtol=1e-12, atol=0)


# --- prefill overhead, attention efficiency -------------------------------------------------

def test_prefill_overhead_is_charged_once_per_step_with_prefill():
    _, _, base = plan(engine={"max_model_len": 8192})
    _, _, p = plan(engine={"max_model_len": 8192}, perf={"prefill_overhead_s": 0.004})
    assert prefill_s(p, 512) == pytest.approx(prefill_s(base, 512) + 0.004, rel=1e-12)
    assert decode_s(p, batch=8) == decode_s(base, batch=8)  # decode-only steps do not pay it
    mixed = (100, 4, 100 * 101 // 2 + 4 * 513, 4 * 512, 1)
    assert step_time_s_py(p, *mixed) == pytest.approx(step_time_s_py(base, *mixed) + 0.004, rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 7])
def test_prefill_request_cost_is_charged_per_request_with_prefill(k):
    r = 0.0123
    _, _, base = plan(model="llama-2-70b", device="a100-80gb", tp=4)
    _, _, p = plan(model="llama-2-70b", device="a100-80gb", tp=4, perf={"prefill_request_s": r})
    assert p[sm.P_PREFILL_REQUEST_S] == r and base[sm.P_PREFILL_REQUEST_S] == 0.0
    n = 256  # k prompts of n tokens in one step
    prefill = (k * n, 0, k * n * (n + 1) // 2, 0)
    mixed = (k * n, 8, k * n * (n + 1) // 2 + 8 * 1025, 8 * 1024)
    for args in (prefill, mixed):
        for twin in (step_time_s, step_time_s_py):
            assert twin(p, *args, k) - twin(base, *args, k) == pytest.approx(k * r, rel=1e-9), (args, twin)
            # the factor at 0 ignores the count, bit for bit
            assert twin(base, *args, k) == twin(base, *args, 1)
    for twin in (step_time_s, step_time_s_py):  # decode-only steps do not pay it, whatever the count
        assert twin(p, 0, 8, 8 * 1025, 8 * 1024, k) == twin(base, 0, 8, 8 * 1025, 8 * 1024, k)
    np.testing.assert_array_equal(decode_span_times_s(p, 8, 8 * 1024, 5), decode_span_times_s(base, 8, 8 * 1024, 5))


def test_attention_efficiency_scales_only_attention_flops():
    _, _, base = plan(engine={"max_model_len": 8192}, perf={"step_overhead_s": 0.0})
    _, _, half = plan(engine={"max_model_len": 8192}, perf={"step_overhead_s": 0.0, "attention_efficiency": 0.5})
    n = 8192
    pairs = n * (n + 1) // 2
    compute_base, _ = _terms(base, n, 0, pairs, 0)
    compute_half, _ = _terms(half, n, 0, pairs, 0)
    attn_s = 4 * 32 * 4096 * pairs / base[sm.P_FLOP_RATE]  # Llama-3.1-8B: L 32, d 4096
    assert compute_half - compute_base == pytest.approx(attn_s, rel=1e-9)


# --- mixture of experts ---------------------------------------------------------------------

MIXTRAL = dict(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8, head_dim=128, intermediate_size=14336,
               vocab_size=32000, num_params=46_702_792_704, weight_format="bf16", max_model_len=32768)
MIXTRAL_EXPERT_PARAMS = 32 * 8 * 3 * 4096 * 14336  # layers x experts x (gate, up, down) x d x ffn


def mixtral_spec():
    from simcost.catalog.types import ModelSpec
    return ModelSpec(key="mixtral-test", name="Mixtral-like", sources={}, num_experts=8, experts_per_token=2,
                     expert_params=MIXTRAL_EXPERT_PARAMS, **MIXTRAL)


def moe_params(tp=1):
    h100 = get_device("h100-sxm")
    return sm.roofline_params(h100, mixtral_spec(), tp, "bf16", MIXTRAL["num_params"] * 2.0, "bf16", mfu=0.5, mbu=0.8,
                                step_overhead_s=0.0, allreduce_latency_s=0.0)


def test_moe_flops_use_active_parameters():
    p = moe_params()
    active = MIXTRAL["num_params"] - MIXTRAL_EXPERT_PARAMS * 6 / 8  # 2 of 8 experts
    assert p[sm.P_FLOPS_PER_TOKEN] == pytest.approx(2 * active)
    assert 12.8e9 < active < 13.0e9  # Mistral's published 12.9 B active


def test_moe_decode_bytes_follow_the_experts_touched():
    p = moe_params()
    total = MIXTRAL["num_params"] * 2.0
    shared = total - MIXTRAL_EXPERT_PARAMS * 2.0
    _, memory_1 = _terms(p, 0, 1, 1, 0)
    assert memory_1 * p[sm.P_BYTE_RATE] == pytest.approx(shared + MIXTRAL_EXPERT_PARAMS * 2.0 * 2 / 8 + p[sm.P_KV_BYTES_PER_TOKEN])
    _, memory_256 = _terms(p, 0, 256, 256, 0)
    weights_256 = memory_256 * p[sm.P_BYTE_RATE] - 256 * p[sm.P_KV_BYTES_PER_TOKEN]
    assert weights_256 == pytest.approx(total * (1 - 1e-12), rel=1e-9)  # (3/4)^256: every expert is read
    # by hand: 4 tokens touch 8 (1 - (3/4)^4) = 5.47 experts of 8 in expectation
    _, memory_4 = _terms(p, 0, 4, 4, 0)
    assert memory_4 * p[sm.P_BYTE_RATE] - 4 * p[sm.P_KV_BYTES_PER_TOKEN] == pytest.approx(
        shared + MIXTRAL_EXPERT_PARAMS * 2.0 * (1 - 0.75 ** 4))
    assert rl.expected_experts_touched(8, 2, 4) == pytest.approx(8 * (1 - 0.75 ** 4))


def test_dense_model_has_no_expert_term():
    _, _, p = plan(engine={"max_model_len": 8192})
    assert p[sm.P_NUM_EXPERTS] == 0 and p[sm.P_EXPERT_BYTES] == 0


# --- pipeline parallel, node size, fit messages ---------------------------------------------

def test_pipeline_parallel_spans_and_prices_all_devices():
    _, dep1, p1 = plan(model="llama-2-70b", device="a100-80gb", tp=4, engine={"preset": "vllm-v0"})  # budget 4096
    _, dep2, p2 = plan(model="llama-2-70b", device="a100-80gb", tp=4, pp=2, micro_batches=1, engine={"preset": "vllm-v0"})
    assert dep2.num_devices == 8 and dep2.pipeline_parallel == 2
    assert dep2.price_usd_per_hour == pytest.approx(2 * dep1.price_usd_per_hour)
    assert dep2.idle_w == 2 * dep1.idle_w and dep2.peak_w == 2 * dep1.peak_w
    # KV capacity by hand: each device holds half the layers' KV for its 2 of 8 KV heads
    free = 80 * 2**30 * 0.9 - 68_976_648_192 * 2 / 8 - 4096 * 8192 * (4 + 20 / 4)
    assert dep2.num_kv_blocks == math.floor(free / (2 * 40 * 2 * 128 * 2 * 16))
    # with one micro-batch the stages run one after another: the single-stage step plus 1 hop of activations
    hop_s_per_token = 8192 * 2 / get_device("a100-80gb").link_bytes_per_s
    for args in ((512, 0, 512 * 513 // 2, 0, 1), (0, 32, 32 * 1025, 32 * 1024, 0)):
        tokens = args[0] + args[1]
        assert step_time_s_py(p2, *args) == pytest.approx(step_time_s_py(p1, *args) + tokens * hop_s_per_token, rel=1e-12)


def test_tensor_parallel_beyond_a_node_is_refused():
    with pytest.raises(InputError) as err:
        plan_deployment(make(model="llama-2-70b", device="a100-80gb", tp=16))
    assert err.value.where == "hardware.tensor_parallel"
    assert "8 a100-80gb devices in a node" in err.value.problem and "pipeline_parallel" in err.value.problem


def test_does_not_fit_says_by_how_much_and_suggests_stages_when_the_node_is_full():
    with pytest.raises(InputError) as err:
        plan_deployment(make(model="llama-3.1-405b", device="a100-80gb", tp=8,
                             engine={"preset": "vllm-v0", "max_model_len": 4096}))  # budget 4096
    problem = err.value.problem
    assert "short by" in problem and "pipeline_parallel >= 2" in problem and "tensor_parallel >=" not in problem
    assert "int8, int4" in problem  # smaller formats the A100 runs
    shortfall = float(problem.split("short by ")[1].split(" GB")[0])
    reserve = 4096 * 16384 * (4 + 20 / 8)  # per device at TP8
    by_hand = (405_853_388_800 * 2 + 8 * (reserve - 80 * 2**30 * 0.9)) / 1e9  # ~195 GB
    assert shortfall == pytest.approx(by_hand, abs=0.06)
    dep = plan_deployment(make(model="llama-3.1-405b", device="a100-80gb", tp=8, pp=2, engine={"max_model_len": 4096}))
    assert dep.num_devices == 16 and dep.kv_capacity_tokens >= 4096


def test_kv_capacity_by_hand_for_an_8b_model():
    _, dep, _ = plan(model="llama-3.1-8b", device="h100-sxm", engine={"max_model_len": 8192})
    free = get_device("h100-sxm").memory_bytes * 0.9 - 8_030_261_248 * 2 - 8192 * 4096 * ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN
    assert dep.num_kv_blocks == math.floor(free / (131_072 * 16))


MOE_AND_PIPELINE_PARAMS = {
    "mixtral-tp2": moe_params(tp=2),
    "70b-tp4-pp2-tuned": plan(model="llama-2-70b", device="a100-80gb", tp=4, pp=2,
                              perf={"prefill_overhead_s": 0.003, "attention_efficiency": 0.4,
                                    "prefill_request_s": 0.02})[2],
}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(MOE_AND_PIPELINE_PARAMS)), num_prefill=st.integers(0, 16384),
       num_decode=st.integers(0, 512), context=st.integers(0, 200_000), num_requests=st.integers(0, 64))
def test_moe_and_pipeline_kernel_equals_reference(name, num_prefill, num_decode, context, num_requests):
    p = MOE_AND_PIPELINE_PARAMS[name]
    kv_read = assert_kernel_equals_reference(p, num_prefill, num_decode, context, num_requests)
    span = decode_span_times_s(p, max(num_decode, 1), kv_read, 4)
    np.testing.assert_allclose(span, decode_span_times_s_py(p, max(num_decode, 1), kv_read, 4), rtol=1e-12, atol=0)


# --- formats on CPUs, per-item models -------------------------------------------------------

def test_16_bit_and_weight_only_formats_compute_in_fp32_on_an_fp32_only_cpu():
    graviton = get_device("graviton3")
    assert set(graviton.peak_flops) == {"fp32"}
    for fmt in ("bf16", "fp16", "int8", "int4", "fp32"):
        assert compute_format_for(graviton, fmt) == "fp32", fmt
    assert compute_format_for(graviton, "fp8") is None
    # a GPU with 16-bit tensor cores keeps computing 16-bit
    assert compute_format_for(get_device("t4"), "bf16") == "fp16"


def test_per_item_model_plans_without_a_kv_cache_and_times_a_batch_by_hand():
    scenario = make(model="resnet-50", device="graviton3", fleet={"price_usd_per_device_hour": 0.29})
    dep = plan_deployment(scenario)
    assert dep.weight_bytes == 25_557_032 * 4 and dep.kv_bytes_per_token == 0 and dep.num_kv_blocks == 0
    assert dep.compute_format == "fp32"
    g = get_device("graviton3")
    p = sm.per_item_params(scenario, dep, bytes_per_item=224 * 224 * 3 * 4)
    for items in (1, 8, 64):
        compute_s = items * 8.178e9 / (g.peak_flops["fp32"] * g.mfu)
        memory_s = (25_557_032 * 4 + items * 224 * 224 * 3 * 4) / (g.mem_bw_bytes_per_s * g.mbu)
        want = max(compute_s, memory_s) + g.step_overhead_s
        assert step_time_s_py(p, items, 0, 0, 0, items) == pytest.approx(want, rel=1e-12)
        assert step_time_s(p, items, 0, 0, 0, items) == pytest.approx(want, rel=1e-12)
    # one image: ~4.4 ms of compute on 64 Graviton3 cores at mfu 0.35; compute-bound from the first item
    assert step_time_s_py(p, 1, 0, 0, 0, 1) - g.step_overhead_s > 2 * (25_557_032 * 4) / (g.mem_bw_bytes_per_s * g.mbu)


def test_per_item_model_is_refused_by_the_token_engine_with_a_clear_message():
    scenario = make(model="bert-base", device="graviton3", fleet={"price_usd_per_device_hour": 0.29})
    dep = plan_deployment(scenario)
    with pytest.raises(InputError, match=r"^engine\.policy: chunked schedules tokens over a KV cache, but bert-base is served per item"):
        step_params(scenario, dep)
    with pytest.raises(InputError, match="served token by token"):
        sm.per_item_params(*plan(engine={"max_model_len": 8192})[:2])


def test_per_item_model_that_does_not_fit_says_by_how_much():
    with pytest.raises(InputError) as err:
        plan_deployment(make(model="bert-base", device="graviton3", memory_utilization=1e-4))
    assert err.value.where == "hardware.device" and "short by" in err.value.problem


def test_kv_cache_format_changes_capacity_and_decode_bytes():
    _, dep16, p16 = plan(model="llama-2-70b", device="a100-80gb", tp=2, engine={"preset": "vllm-v0"})  # budget 4096
    _, dep8, p8 = plan(model="llama-2-70b", device="a100-80gb", tp=2, kv_cache_format="fp8", engine={"preset": "vllm-v0"})
    assert dep8.kv_bytes_per_token == dep16.kv_bytes_per_token / 2 == 163_840
    per_device_free = 80 * 2**30 * 0.9 - 68_976_648_192 * 2 / 2 - 4096 * 8192 * (4 + 20 / 2)  # activations: 4 B/d replicated, 20 split
    assert dep8.num_kv_blocks == math.floor(per_device_free * 2 / (163_840 * 16))
    _, memory16 = _terms(p16, 0, 64, 64 * 2049, 64 * 2048)
    _, memory8 = _terms(p8, 0, 64, 64 * 2049, 64 * 2048)
    kv_bytes16 = 64 * 2049 * 327_680 / 2  # per device
    assert (memory16 - memory8) * p16[sm.P_BYTE_RATE] == pytest.approx(kv_bytes16 / 2, rel=1e-9)


def test_step_params_are_named_slots_of_the_kernel_vector():
    """Each named parameter sits at its P_* slot, and a vector survives the round trip."""
    named = sm.StepParams(kind=sm.KIND_CONSTANT, step_overhead_s=0.5, prefill_request_s=7.0)
    p = named.to_array()
    assert len(p) == sm.NUM_PARAMS and p.dtype == np.float64
    assert (p[sm.P_KIND], p[sm.P_STEP_OVERHEAD_S], p[sm.P_PREFILL_REQUEST_S]) == (sm.KIND_CONSTANT, 0.5, 7.0)
    assert sm.StepParams.from_array(p) == named
