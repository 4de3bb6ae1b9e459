"""perf.model auto (the default): kernels where the kernel tables are trusted and cover the
model, the roofline elsewhere; explicit models stay as given; the run summary says which and why."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from simcost.catalog.specs import get_device
from simcost.errors import InputError
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_tables import cuda_graph_max_tokens, table_format
from simcost.perf.model_choice import choose_perf_model, describe
from simcost.perf.step_model import step_params, step_time_s
from simcost.scenario.scenario import scenario_from_dict
from simcost.simulation.simulation import Simulation

PRICE = {"price_usd_per_device_hour": 2.0}  # devices the catalog has no price for


def make(device="h100-sxm", model="llama-3.1-8b", tp=1, perf=None, engine=None, weight_format=None, **hardware):
    raw = {"duration_s": 5.0, "seed": 3,
           "workload": {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
                        "input_tokens": {"dist": "fixed", "value": 256},
                        "output_tokens": {"dist": "fixed", "value": 16}},
           "model": {"name": model, **({"weight_format": weight_format} if weight_format else {})}, "hardware": {"device": device, "tensor_parallel": tp, **hardware},
           "fleet": PRICE, "engine": {"max_model_len": 4096, **(engine or {})}}
    if perf is not None:
        raw["perf"] = perf
    return scenario_from_dict(raw)


def choice(**kw):
    s = make(**kw)
    return choose_perf_model(s, plan_deployment(s))


def test_the_default_is_auto():
    assert make().perf.model == "auto"


@pytest.mark.parametrize("device,tp", [("h100-sxm", 1), ("h100-sxm", 8), ("a100-80gb", 4), ("h200", 2), ("b200", 4),
                                       ("gb200-nvl72", 4), ("l40s", 1), ("rtx-pro-6000-server", 1)])
def test_auto_runs_the_kernel_tables_on_a_gpu_with_its_own(device, tp):
    s = make(device=device, model="llama-3.1-70b" if tp > 1 else "llama-3.1-8b", tp=tp)
    dep = plan_deployment(s)
    assert choose_perf_model(s, dep) == ("kernels", "auto: own tables")
    # and step_params runs it: the same vector as asking for kernels explicitly
    explicit = step_params(make(device=device, model=dep.model.key, tp=tp, perf={"model": "kernels"}), dep)
    np.testing.assert_array_equal(step_params(s, dep), explicit)


def test_a_same_generation_gpu_borrows_quietly_and_a_cross_generation_one_gets_the_roofline():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto's trusted borrow says so in the summary, not in a warning
        model, why = choice(device="h20")
        s = make(device="b300")
        p = step_params(s, plan_deployment(s))
    assert (model, why) == ("kernels", "auto: h100_sxm's tables scaled (same generation)")
    assert p[sm.P_KIND] == sm.KIND_KERNELS
    for device in ("a100-80gb-pcie", "l4", "mi300x", "gaudi3"):  # no tables of their generation on NVLink
        assert choice(device=device)[0] == "roofline"


@pytest.mark.parametrize("device", ["xeon-8480", "tpu-v6e", "jetson-thor"])
def test_not_a_gpu_runs_the_roofline(device):
    model, why = choice(device=device, model="llama-3.2-1b")
    assert model == "roofline" and f"for {get_device(device).kind} devices" in why


def test_a_pcie_gpu_runs_the_roofline_above_one_device():
    assert choice(device="l40s", tp=1)[0] == "kernels"
    model, why = choice(device="l40s", model="llama-3.1-8b", tp=2)
    assert model == "roofline" and "PCIe" in why


@pytest.mark.parametrize("model,weight_format,lacks", [
    ("phi-3.5-mini", None, "no context attention table"),    # head_dim 96
])
def test_shapes_and_formats_the_tables_lack_run_the_roofline(model, weight_format, lacks):
    s = make(model=model, weight_format=weight_format, tp=2 if model == "llama-4-scout" else 1)
    got, why = choose_perf_model(s, plan_deployment(s))
    assert got == "roofline" and lacks in why


@pytest.mark.parametrize("model,tp", [("qwen3-30b-a3b", 8), ("llama-4-scout", 8), ("mixtral-8x7b", 2)])
def test_hoppers_fp8_moe_runs_the_kernel_tables_with_that_layer_from_the_roofline(model, tp):
    # H100's measured fp8 MoE layers run 2-4x slower than bf16's (an untuned kernel path). Falling back
    # to the whole roofline priced the rest with its legacy all-reduce: at TP8, Qwen3-30B-A3B in fp8
    # decoded one sequence in 25 ms a step against bf16's 4.7 ms on the kernel tables
    s = make(model=model, weight_format="fp8", tp=tp)
    dep = plan_deployment(s)
    got, why = choose_perf_model(s, dep)
    assert got == "kernels" and "fp8 MoE layer from the roofline" in why
    explicit = make(model=model, weight_format="fp8", tp=tp, perf={"model": "kernels"})
    fp8, measured_rows = step_params(s, dep), step_params(explicit, dep)  # explicit kernels keep the rows
    bf16_s = make(model=model, weight_format="bf16", tp=tp)
    bf16 = step_params(bf16_s, plan_deployment(bf16_s))
    for decode in (1, 64, 256):  # decode steps at 1,024 tokens of context
        args = (0, decode, decode * 1025.0, decode * 1024.0, 0)
        assert step_time_s(fp8, *args) <= step_time_s(bf16, *args) < step_time_s(measured_rows, *args)


def test_an_unmeasured_moe_layer_takes_the_roofline_inside_the_kernel_tables():
    # the A100 tables have no MoE rows for Llama-4-Scout's 16 experts (top 1): the whole roofline,
    # with its legacy all-reduce, decoded one sequence slower at TP8 (27.8 ms) than at TP4 (18.9 ms)
    def decode_s(tp):
        s = make(device="a100-80gb", model="llama-4-scout", tp=tp)
        dep = plan_deployment(s)
        got, why = choose_perf_model(s, dep)
        assert got == "kernels" and "its MoE layer from the roofline" in why
        return step_time_s(step_params(s, dep), 0, 1, 1025.0, 1024.0, 0)
    assert decode_s(8) < decode_s(4)


def test_more_kv_heads_than_the_decode_tables_measure_fold_into_a_larger_batch():
    # Llama-2-7B: 32 KV heads per GPU; H100's decode table stops at 8 (prefill has 32/32)
    s = make(model="llama-2-7b")
    assert choose_perf_model(s, plan_deployment(s)) == ("kernels", "auto: own tables")


def test_tensor_parallelism_beyond_the_all_reduce_tables_runs_the_roofline():
    assert choice(device="gb200-nvl72", model="llama-3.1-70b", tp=8)[0] == "kernels"
    model, why = choice(device="gb200-nvl72", model="llama-3.1-70b", tp=16)
    assert model == "roofline" and "16 GPUs" in why


def test_latent_attention_runs_the_kernel_tables_where_they_hold_its_modules():
    assert choice(device="h200", model="deepseek-v3", tp=8, pipeline_parallel=2) == ("kernels", "auto: own tables")
    # the tables measure DeepSeek-V3's latent shape only: another one takes the roofline
    s = make(device="h200", model="deepseek-v3", tp=8, pipeline_parallel=2)
    dep = plan_deployment(s)
    other = replace(dep, model=replace(dep.model, kv_lora_rank=448, head_dim=256))
    got, why = choose_perf_model(s, other)
    assert got == "roofline" and "latent attention shape" in why
    # the A100 tables have no MLA modules
    got, why = choice(device="a100-80gb", model="deepseek-v3", tp=8, pipeline_parallel=4, weight_format="bf16")
    assert got == "roofline" and "no MLA context table" in why


@pytest.mark.parametrize("device,model,weight_format,tp", [
    ("h100-sxm", "llama-3.1-70b", "int4", 8), ("a100-80gb", "llama-3.1-70b", "int4", 8),
    ("h100-sxm", "llama-3.1-8b", "int8", 1), ("h200", "qwen3-30b-a3b", "int4", 4),
    # the tables' mxfp4 rows are MoE layers (gpt-oss); a dense model's mxfp4 GEMMs have none, and
    # the bf16 rows read 3.8x the bytes its mxfp4 weights hold (Llama-3.1-70B on one H100: 54 ms a
    # decode step, against 11 ms to read the weights once)
    ("h100-sxm", "llama-3.1-70b", "mxfp4", 1),
])
def test_weight_only_formats_take_their_gemms_from_the_roofline_and_the_rest_from_the_tables(
        device, model, weight_format, tp):
    # int4 on 8 x H100 ran the whole roofline, whose legacy all-reduce made Llama-3.1-70B decode in
    # 40 ms a step, against bf16's 10.9 ms on the tables: int4 looked 4x slower than bf16
    assert table_format("gemm", "mxfp4", dense=True) is None
    s = make(device=device, model=model, weight_format=weight_format, tp=tp)
    dep = plan_deployment(s)
    got, why = choose_perf_model(s, dep)
    assert got == "kernels" and f"its {weight_format} GEMMs from the roofline" in why
    p = step_params(s, dep)
    np.testing.assert_array_equal(p, step_params(make(device=device, model=model, weight_format=weight_format, tp=tp,
                                                      perf={"model": "kernels"}), dep))
    one = step_time_s(p, 0, 1, 1025.0, 1024.0, 0)
    assert one >= dep.weight_bytes * (dep.model.active_params / dep.model.num_params) / tp / dep.device.mem_bw_bytes_per_s
    if tp > 1:  # bf16 fits there: 4 or 8 bits a weight decode no slower than 16
        bf16_s = make(device=device, model=model, weight_format="bf16", tp=tp)
        assert one < step_time_s(step_params(bf16_s, plan_deployment(bf16_s)), 0, 1, 1025.0, 1024.0, 0)


def test_mxfp4_moe_runs_its_measured_kernel():
    s = make(model="gpt-oss-20b")
    dep = plan_deployment(s)
    assert choose_perf_model(s, dep) == ("kernels", "auto: own tables")
    assert table_format("moe", dep.weight_format) == "w4a16_mxfp4" and table_format("gemm", dep.weight_format) == "bfloat16"


def test_expert_parallel_runs_the_kernel_tables_within_a_node_and_micro_batches_the_roofline():
    assert choice(model="qwen3-30b-a3b", tp=2, expert_parallel=2) == ("kernels", "auto: own tables")
    assert choice(model="qwen3-30b-a3b", tp=1, expert_parallel=8, data_parallel_attention=True)[0] == "kernels"
    model, why = choice(model="qwen3-30b-a3b", tp=1, expert_parallel=16, data_parallel_attention=True)
    assert model == "roofline" and "spans nodes" in why
    model, why = choice(device="l40s", model="qwen3-30b-a3b", tp=1, expert_parallel=2, data_parallel_attention=True)
    assert model == "roofline" and "PCIe" in why
    assert choice(model="llama-3.1-8b", pipeline_parallel=2, pipeline_micro_batches=2)[0] == "roofline"
    # GB200's NCCL tables stop at 4 GPUs: DP attention over 8 groups takes its dispatch from its
    # 4-GPU rows and B200's 8/4 ratio (kernel_scaling.with_gpu_counts); 16 GPUs no table measures
    assert choice(device="gb200-nvl72", model="deepseek-v3", tp=1, expert_parallel=8,
                  data_parallel_attention=True)[0] == "kernels"
    model, why = choice(device="gb200-nvl72", model="deepseek-v3", tp=1, expert_parallel=16, data_parallel_attention=True)
    assert model == "roofline" and "no NCCL all-gather table for 16 GPUs" in why
    assert choice(device="gb200-nvl72", model="deepseek-v3", tp=1, expert_parallel=4, data_parallel_attention=True,
                  weight_format="nvfp4")[0] == "kernels"


@pytest.mark.parametrize("perf,reason", [({"mfu": 0.5}, "perf.mfu"), ({"allreduce_latency_s": 1e-5}, "perf.allreduce_latency_s")])
def test_a_roofline_factor_set_asks_for_the_roofline(perf, reason):
    model, why = choice(perf=perf)
    assert model == "roofline" and reason in why
    # step_overhead_s is the kernel model's too: it stays on kernels, with that overhead
    s = make(perf={"step_overhead_s": 0.003})
    assert choose_perf_model(s, plan_deployment(s))[0] == "kernels"


def test_a_calibrated_profile_runs_the_roofline_it_was_fitted_for(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("device: h100-sxm\nmodel: llama-3.1-8b\nfactors: {mfu: 0.5, mbu: 0.7, step_overhead_s: 0.004, allreduce_latency_s: 2.0e-5}\n")
    s = make(perf={"profile": str(profile)})
    dep = plan_deployment(s)
    assert choose_perf_model(s, dep) == ("roofline", "auto: perf.profile is a calibrated roofline")
    p = sm.StepParams.from_array(step_params(s, dep))
    assert p.kind == sm.KIND_ROOFLINE and p.byte_rate == pytest.approx(dep.device.mem_bw_bytes_per_s * 0.7)
    # asked for the kernel model with it, the profile only prices its fallbacks: said so
    with pytest.warns(UserWarning, match="price only the operators the kernel tables lack"):
        step_params(make(perf={"model": "kernels", "profile": str(profile)}), dep)


@pytest.mark.parametrize("given", ["roofline", "kernels"])
def test_an_explicit_model_is_kept(given):
    s = make(device="mi300x", perf={"model": given})
    assert choose_perf_model(s, plan_deployment(s)) == (given, "set in perf.model")


def test_auto_refuses_constant_model_keys():
    with pytest.raises(InputError, match="use model: constant"):
        make(perf={"decode_step_s": 0.01})


def test_the_cuda_graph_cutoff_follows_max_num_seqs():
    # vLLM V1: max_cudagraph_capture_size = min(2 x max_num_seqs, 512)
    assert [cuda_graph_max_tokens(n) for n in (8, 128, 256, 1024)] == [16, 256, 512, 512]
    small = make(engine={"max_num_seqs": 8, "max_num_batched_tokens": 2048})
    dep = plan_deployment(small)
    p_small, p_big = step_params(small, dep), step_params(make(engine={"max_num_batched_tokens": 2048}), dep)
    # 100 decode tokens: a CUDA graph at max_num_seqs 256, eager (the launch floor) at 8
    eager = dep.model.num_layers * 0.0004
    t_small = step_time_s(p_small, 40, 60, 40 * 41 // 2 + 60 * 301, 60 * 300, 1)
    t_big = step_time_s(p_big, 40, 60, 40 * 41 // 2 + 60 * 301, 60 * 300, 1)
    assert t_big < eager < t_small


def test_the_run_summary_names_the_model_and_why():
    result = Simulation(make()).run()
    assert result.summary["perf_model"] == "kernels (auto: own tables)"
    assert result.summary["step_time_measured_fraction"] > 0.5
    cpu = Simulation(make(device="mi300x")).run().summary
    assert cpu["perf_model"].startswith("roofline (auto: no kernel tables for mi300x")
    assert "step_time_measured_fraction" not in cpu


def test_describe_pools():
    assert describe([("serve", "kernels", "auto: own tables")]) == "kernels (auto: own tables)"
    assert describe([("a", "kernels", "x"), ("b", "roofline", "y")]) == "a: kernels (x); b: roofline (y)"


def test_auto_prices_a_moe_size_the_tables_lack_as_the_kernel_model_does():
    """The A100's Qwen3-30B-A3B MoE rows stop at moe_tp_size 4; the kernel model derives TP8 from
    them and the nearest GPU's TP4 -> TP8 ratio (kernel_scaling.with_moe_size), so auto runs it
    there too instead of judging the table by its measured rows alone."""
    s = make(device="a100-80gb", model="qwen3-30b-a3b", tp=8)
    dep = plan_deployment(s)
    assert choose_perf_model(s, dep) == ("kernels", "auto: own tables")
    explicit = step_params(make(device="a100-80gb", model="qwen3-30b-a3b", tp=8, perf={"model": "kernels"}), dep)
    np.testing.assert_array_equal(step_params(s, dep), explicit)
    assert np.isfinite(explicit).all()
