"""Expert parallelism and data-parallel attention (simcost.perf.expert_parallel): memory plan,
step time against hand computations, refusals, and a run that loses no request."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simcost.catalog.specs import get_device, get_model
from simcost.catalog.types import BYTES_PER_ELEMENT
from simcost.errors import InputError
from simcost.perf.deployment import activation_reserve_bytes, plan_deployment
from simcost.perf.step_model import step_params, step_time_s
from simcost.perf.step_params import StepParams
from simcost.perf.step_reference import step_time_s_py
from simcost.scenario.scenario import scenario_from_dict


def make(model="deepseek-v3", tp=1, ep=8, dp_attention=True, engine=None, perf=None, **hardware):
    raw = {
        "duration_s": 30.0,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
                     "input_tokens": {"dist": "uniform", "low": 500, "high": 2000},
                     "output_tokens": {"dist": "uniform", "low": 50, "high": 300}},
        "model": {"name": model},
        "hardware": {"device": "h200", "tensor_parallel": tp, "expert_parallel": ep,
                     "data_parallel_attention": dp_attention, **hardware},
        "engine": {"policy": "chunked", "max_model_len": 32768, "max_num_seqs": 256,
                   "max_num_batched_tokens": 8192, **(engine or {})},
        **({"perf": perf} if perf else {}),
    }
    return scenario_from_dict(raw)


def plan(**kw):
    scenario = make(**kw)
    dep = plan_deployment(scenario)
    return dep, StepParams.from_array(step_params(scenario, dep))


V3 = get_model("deepseek-v3")
H200 = get_device("h200")
MOE_LAYERS = V3.num_layers - V3.first_dense_layers  # 58


def test_dp_attention_splits_experts_over_eight_and_keeps_a_kv_cache_per_gpu():
    dep, _ = plan()
    assert (dep.num_devices, dep.expert_parallel, dep.data_parallel) == (8, 8, 8)
    # by hand: fp8 = 1 byte per weight; non-expert weights whole on each GPU, experts 1/8 each
    non_expert = V3.num_params - V3.expert_params
    weights = non_expert + V3.expert_params / 8
    reserve = activation_reserve_bytes(8192 // 8, V3.hidden_size, 1)  # each GPU steps 1/8 of the tokens
    free = H200.memory_bytes * 0.9 - weights - reserve
    per_token = V3.num_layers * (512 + 64) * 2  # the bf16 latent and rope key of every layer
    tokens_per_gpu = math.floor(free / per_token) // 16 * 16
    assert dep.num_kv_blocks * dep.block_size == 8 * tokens_per_gpu
    assert 3.0e6 < 8 * tokens_per_gpu < 3.4e6
    # priced and powered for all 8 GPUs, like TP8
    tp8 = plan_deployment(make(tp=8, ep=1, dp_attention=False))
    assert dep.price_usd_per_hour == pytest.approx(tp8.price_usd_per_hour)
    assert dep.peak_w == pytest.approx(tp8.peak_w)


def test_ep_over_the_tensor_parallel_group_keeps_memory_and_flops_and_swaps_the_moe_allreduce():
    dep_tp, tp = plan(tp=8, ep=1, dp_attention=False)
    dep_ep, ep = plan(tp=8, ep=8, dp_attention=False)
    assert dep_ep.num_devices == 8 and dep_ep.num_kv_blocks == dep_tp.num_kv_blocks
    assert (ep.flops_per_token, ep.expert_bytes, ep.kv_bytes_per_token) == (tp.flops_per_token, tp.expert_bytes,
                                                                            tp.kv_bytes_per_token)
    # 2 L all-reduces become L + 3 (attention's, the dense MLPs'), plus a dispatch and combine per MoE
    # layer; the H200's NVSwitch pays its latency once per all-reduce and per all-to-all, whatever t
    lat = H200.interconnect.latency_s
    assert tp.comm_fixed_s == pytest.approx(2 * 61 * lat)
    assert ep.comm_fixed_s == pytest.approx(64 * lat + 2 * MOE_LAYERS * lat)
    a2a_per_token = 2 * MOE_LAYERS * V3.hidden_size * 2 * 8 * (7 / 8) / 8 / H200.link_bytes_per_s
    assert ep.comm_s_per_token == pytest.approx(tp.comm_s_per_token * 64 / 122 + a2a_per_token)


def test_dp_attention_step_time_by_hand():
    dep, ep = plan()
    # the same model on one GPU, no expert parallelism: the per-device rates EP8/DP8 divides
    scenario = make(tp=1, ep=1, dp_attention=False)
    from simcost.perf.roofline import efficiency_factors, roofline_params
    one = StepParams.from_array(roofline_params(H200, V3, 1, dep.compute_format, dep.weight_bytes,
                                                dep.kv_cache_format, **efficiency_factors(scenario, dep)))
    assert ep.flops_per_token == pytest.approx(one.flops_per_token / 8)
    assert ep.flops_per_attn_pair == pytest.approx(one.flops_per_attn_pair / 8)
    assert ep.kv_bytes_per_token == pytest.approx(one.kv_bytes_per_token / 8)
    assert ep.weight_bytes == pytest.approx((V3.num_params - V3.expert_params) * BYTES_PER_ELEMENT["fp8"])
    assert ep.expert_bytes == pytest.approx(V3.expert_params / 8)
    # a decode step of 128 sequences of 2,000 cached tokens each, written out
    n, kv = 128, 128 * 2000
    flops = (2 * V3.active_params / 8 * n + one.flops_per_attn_pair / 8 * (kv + n))
    touched = 1 - (1 - 8 / 256) ** n
    nbytes = (V3.num_params - V3.expert_params) + V3.expert_params / 8 * touched + one.kv_bytes_per_token / 8 * (kv + n)
    a2a = 2 * MOE_LAYERS * (H200.interconnect.latency_s + n / 8 * V3.hidden_size * 2 * 8 * (7 / 8) / H200.link_bytes_per_s)
    want = max(flops / one.flop_rate, nbytes / one.byte_rate) + a2a + one.step_overhead_s
    p = step_params(make(perf={"model": "roofline"}), dep)  # auto runs the kernel tables here
    assert step_time_s_py(p, 0, n, kv + n, kv, 0) == pytest.approx(want, rel=1e-9)
    assert step_time_s(p, 0, n, kv + n, kv, 0) == pytest.approx(want, rel=1e-9)


def test_ep_beyond_the_node_sends_the_off_node_share_over_the_nic():
    dep, ep = plan(ep=16)
    assert dep.num_devices == 16
    # 8 of the 15 remote peers are off the node: that share over a 50 GB/s NIC dominates NVLink's 7/15
    s_per_byte = max(7 / 15 / H200.link_bytes_per_s, 8 / 15 / 50e9)
    assert s_per_byte == 8 / 15 / 50e9
    assert ep.comm_fixed_s == pytest.approx(2 * MOE_LAYERS * 50e-6)
    assert ep.comm_s_per_token == pytest.approx(2 * MOE_LAYERS * V3.hidden_size * 2 * 8 * (15 / 16) / 16 * s_per_byte)
    # a faster fabric (hardware.inter_node_gb_per_s) costs less
    _, fast = plan(ep=16, inter_node_gb_per_s=100.0)
    assert fast.comm_s_per_token == pytest.approx(ep.comm_s_per_token / 2)


@pytest.mark.parametrize("kw, key, words", [
    ({"model": "llama-3.1-8b"}, "hardware.expert_parallel", "dense model"),
    ({"ep": 3}, "hardware.expert_parallel", "does not divide deepseek-v3's 256 experts"),
    ({"tp": 8, "ep": 4, "dp_attention": False}, "hardware.expert_parallel", "set expert_parallel: 8"),
    ({"tp": 8, "ep": 4}, "hardware.expert_parallel", "not a multiple of tensor_parallel 8"),
    ({"ep": 1}, "hardware.data_parallel_attention", "expert_parallel 1"),
])
def test_layouts_vllm_cannot_run_are_refused_in_one_line(kw, key, words):
    with pytest.raises(InputError) as err:
        plan_deployment(make(**kw))
    assert err.value.where == key and words in err.value.problem and "\n" not in err.value.problem


def test_a_run_loses_no_request_and_no_token_and_bills_eight_gpus():
    from simcost.simulation.simulation import run
    from simcost.workload.request_table import COMPLETED

    result = run(make())
    t, req = result.table, result.summary["requests"]
    assert req["completed"] + req["rejected"] + req["in_flight"] == req["arrived"] == len(t.arrival_s) > 30
    done = t.status == COMPLETED
    assert (t.generated[done] == t.output_tokens[done]).all()
    assert int((~np.isnan(t.token_time_s)).sum()) == int(t.generated.sum())
    # the replica is billed as 8 GPUs at the catalog's list price (7.912 USD/h each, p5en / 8)
    assert result.deployment.price_usd_per_hour == pytest.approx(8 * 7.912)
    b = result.bill
    assert b.request_usd.sum() + b.unallocated_usd == pytest.approx(b.total_usd, rel=1e-9)
    assert b.total_usd >= result.horizon_s * 8 * 7.912 / 3600 * (1 - 1e-12)  # every GPU-second is paid for


def test_the_vllm_command_enables_expert_parallelism_with_per_rank_limits():
    from simcost.analysis.deploy import vllm_args

    args = vllm_args(make())
    assert "--enable-expert-parallel" in args and args[args.index("--data-parallel-size") + 1] == "8"
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
    # the replica's 256 sequences and 8192-token budget are 32 and 1024 per DP rank
    assert args[args.index("--max-num-seqs") + 1] == "32" and args[args.index("--max-num-batched-tokens") + 1] == "1024"
    plain = vllm_args(make(tp=8, ep=1, dp_attention=False))
    assert "--enable-expert-parallel" not in plain and plain[plain.index("--max-num-seqs") + 1] == "256"
