"""Pipeline parallelism with micro-batches in the roofline (simcost.perf.step_model): a step's
sequences split into up to pp micro-batches that flow through the stages, against a hand
computation; pipeline_parallel 1 and one micro-batch are the sequential model exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import scenario

from simcost.catalog.specs import get_device
from simcost.perf.deployment import plan_deployment
from simcost.perf.step_model import step_params, step_time_s
from simcost.perf.step_params import StepParams
from simcost.perf.step_reference import step_time_s_py


def params(pp=2, micro_batches=None, tp=4):
    hw = {"device": "a100-80gb", "tensor_parallel": tp, "pipeline_parallel": pp}
    if micro_batches:
        hw["pipeline_micro_batches"] = micro_batches
    s = scenario(model={"name": "llama-2-70b"}, hardware=hw)
    return step_params(s, plan_deployment(s))


def test_a_decode_step_of_two_micro_batches_by_hand():
    p, seq = params(pp=2, micro_batches=2), params(pp=2, micro_batches=1)
    s = StepParams.from_array(p)
    assert (s.pipeline_stages, s.pipeline_micro_batches) == (2.0, 2.0)
    n, kv = 64, 64 * 1000
    # one micro-batch of 32 sequences through one stage (half the layers, all the weights re-read)
    compute = (s.flops_per_token * 32 + s.flops_per_attn_pair * (kv + n) / 2) / s.flop_rate
    memory = (s.weight_bytes + s.kv_bytes_per_token * (kv / 2 + 32)) / s.byte_rate
    stage = (max(compute, memory) + s.comm_fixed_s + s.comm_s_per_token * 32) / 2
    send = 8192 * 2 / get_device("a100-80gb").link_bytes_per_s * 32
    want = 3 * stage + 1 * send + s.step_overhead_s
    assert step_time_s_py(p, 0, n, kv + n, kv, 0) == pytest.approx(want, rel=1e-12)
    assert step_time_s(p, 0, n, kv + n, kv, 0) == pytest.approx(want, rel=1e-12)
    # decode is weight-bound: two micro-batches re-read the weights, so the step is slower than in
    # sequence (3/2 of a stage's weight time vs 1) -- what buys throughput is the overlap of batches
    assert step_time_s_py(p, 0, n, kv + n, kv, 0) > step_time_s_py(seq, 0, n, kv + n, kv, 0)


def test_a_compute_bound_prefill_of_many_prompts_gains_from_the_overlap():
    p, seq = params(pp=4, tp=2, micro_batches=4), params(pp=4, tp=2, micro_batches=1)
    s = StepParams.from_array(p)
    args = (4 * 2048, 0, 4 * 2048 * 2049 // 2, 0, 4)
    fixed = s.step_overhead_s + s.prefill_overhead_s + 4 * s.prefill_request_s
    hops = 3 * s.pipeline_s_per_token / 3 * 2048  # the first micro-batch's 3 sends
    ratio = (step_time_s_py(p, *args) - fixed - hops) / (step_time_s_py(seq, *args) - fixed - 4 * hops)
    # 4 micro-batches over 4 stages: (4 + 4 - 1) / 4 slots of a quarter of the work = 7/16 of the
    # sequential time when compute-bound, a little more for the all-reduce latency paid per micro-batch
    assert 7 / 16 <= ratio < 7 / 16 + 0.03


def test_micro_batches_are_opt_in():
    # filling and draining the pipeline inside a step overprices steady-state decode, so by
    # default the stages run in sequence (docs/reference/limitations.md)
    assert StepParams.from_array(params(pp=2)).pipeline_micro_batches == 1.0
    assert np.array_equal(params(pp=2), params(pp=2, micro_batches=1))


def test_one_sequence_cannot_be_split():
    p, seq = params(pp=4, tp=2, micro_batches=4), params(pp=4, tp=2, micro_batches=1)
    for args in ((0, 1, 1001, 1000, 0), (2048, 0, 2048 * 2049 // 2, 0, 1)):
        assert step_time_s_py(p, *args) == pytest.approx(step_time_s_py(seq, *args), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(num_prefill=st.integers(0, 8192), num_decode=st.integers(0, 256), context=st.integers(0, 100_000),
       num_requests=st.integers(0, 16), pp=st.sampled_from([2, 3, 4]))
def test_kernel_equals_reference(num_prefill, num_decode, context, num_requests, pp):
    p = params(pp=pp, tp=2, micro_batches=pp)
    kv = context * num_decode
    pairs = num_prefill * (num_prefill + 1) // 2 + kv + num_decode
    want = step_time_s_py(p, num_prefill, num_decode, pairs, kv, num_requests)
    assert step_time_s(p, num_prefill, num_decode, pairs, kv, num_requests) == pytest.approx(want, rel=1e-12, abs=0)


def test_the_printed_deployment_counts_every_pipeline_stage(tmp_path, capsys):
    # 405B on TP8 x PP2 bills 16 H100s; check and the run summary printed "8 x h100-sxm"
    from simcost.cli.main import main

    example = str(Path(__file__).resolve().parents[1] / "configs" / "example.yaml")
    sets = ["--set", "model.name=llama-3.1-405b", "--set", "hardware.tensor_parallel=8", "--set",
            "hardware.pipeline_parallel=2", "--set", "engine.max_model_len=8192", "--set", "fleet.replicas=1"]
    assert main(["check", example, *sets]) == 0
    assert "on 16 x h100-sxm (tensor parallel 8 x pipeline parallel 2)" in capsys.readouterr().out
    assert main(["run", example, *sets, "--set", "duration_s=2", "--set", "warmup_s=0", "-q",
                 "--request-records", "none", "--out", str(tmp_path / "o")]) == 0
    assert "on 1 x 16 x h100-sxm (tensor parallel 8 x pipeline parallel 2)" in capsys.readouterr().out
