"""The kernel-table model's multi-head latent attention (measured MLA modules), expert parallelism
(moe_ep_size rows and NCCL dispatch) and table formats: grids against the shipped rows by hand,
the numba kernel against its plain-Python reference, and the measured share."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.catalog.specs import get_device
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_mla import mla_tabled
from simcost.perf.kernel_model import K_DP, K_MOE_APART
from simcost.perf.kernel_moe import ROUTER_CHOICE_BYTES, ROUTER_LOGIT_BYTES, ROUTER_TOPK_S
from simcost.perf.kernel_reference import kernel_step_time_s_py, unpack_grids
from simcost.perf.kernel_tables import KernelTables, table_format
from tests.scenarios import scenario

H200 = KernelTables("h200_sxm")
LAYERS, MOE_LAYERS = 61, 58  # DeepSeek-V3: 3 dense layers first


def deepseek(tp=8, ep=1, dp_attention=False, **perf):
    hardware = {"device": "h200", "tensor_parallel": tp}
    if ep > 1:
        hardware.update(expert_parallel=ep, data_parallel_attention=dp_attention)
    s = scenario(model={"name": "deepseek-v3"}, hardware=hardware, perf={"model": "kernels", **perf},
                 engine={"max_model_len": 32768, "max_num_seqs": 256, "max_num_batched_tokens": 8192})
    return sm.step_params(s, plan_deployment(s))


TP8, EP8 = deepseek(), deepseek(tp=1, ep=8, dp_attention=True)
# the memory rate the unmeasured parts fall back to: the catalog mbu scaled for fp8 compute
_S = scenario(model={"name": "deepseek-v3"}, hardware={"device": "h200", "tensor_parallel": 8})
H200_BYTE_RATE = get_device("h200").mem_bw_bytes_per_s * sm.efficiency_factors(_S, plan_deployment(_S))["mbu"]


def rows(key: str) -> np.ndarray:
    return H200.arrays[key]


def test_deepseek_runs_block_fp8_mla_modules_and_moe():
    assert mla_tabled(plan_deployment(scenario(model={"name": "deepseek-v3"},
                                               hardware={"device": "h200", "tensor_parallel": 8})).model)
    assert table_format("mla", "fp8", mla=True) == "fp8_block" and table_format("moe", "fp8", mla=True) == "fp8_block"
    # its dense GEMMs take the per-tensor fp8 rows (the block-scaled GEMM rows are not shipped)
    assert table_format("gemm", "fp8", mla=True) == "fp8" and "gemm/fp8_block" not in H200.arrays
    assert TP8[sm.P_KIND] == sm.KIND_KERNELS


def test_decode_grid_is_the_measured_module_times_the_layers():
    g = unpack_grids(TP8, sm.NUM_PARAMS)
    table = rows("mla_generation/fp8_block_kvbfloat16")  # the scenario's KV cache is bf16
    sel = table[table[:, 2] == 16]  # 128 heads over TP8
    for b, c, _, ms in sel[::17]:
        i, j = list(g["b"]).index(b), list(g["c"]).index(c)
        assert g["decode_s"][i, j] == pytest.approx(ms / 1e3 * LAYERS, rel=1e-6)
        assert g["decode_share"][i, j] == 1.0


def test_prefill_grid_interpolates_the_module_log_log_between_measured_lengths():
    g = unpack_grids(TP8, sm.NUM_PARAMS)
    table = rows("mla_context/fp8_block_kvbfloat16")
    sel = table[(table[:, 2] == 16) & (table[:, 0] == 4)]
    (s0, y0), (s1, y1) = sel[5, [1, 3]], sel[6, [1, 3]]
    r = list(g["r"]).index(4)
    mid = float(np.exp(np.interp(np.log(np.sqrt(s0 * s1)), np.log(g["s"]), np.log(g["prefill_s"][r]))))
    assert mid == pytest.approx(np.sqrt(y0 * y1) / 1e3 * LAYERS, rel=1e-6)


def test_a_decode_step_adds_the_module_to_the_per_token_work_by_hand():
    g = unpack_grids(TP8, sm.NUM_PARAMS)
    b, c = 64, 4096  # both measured: context c - 1 cached tokens per sequence, plus the new one
    module = rows("mla_generation/fp8_block_kvbfloat16")
    ms = module[(module[:, 0] == b) & (module[:, 1] == c) & (module[:, 2] == 16), 3][0]
    linear = np.exp(np.interp(np.log(b), np.log(g["tokens"]), np.log(g["linear_s"])))
    head = np.exp(np.interp(np.log(b), np.log(g["tokens"]), np.log(g["head_s"])))
    want = linear + head + ms / 1e3 * LAYERS + sm.KERNEL_STEP_OVERHEAD_S
    kv = b * (c - 1.0)
    assert sm.step_time_s(TP8.copy(), 0, b, kv + b, kv, 0) == pytest.approx(want, rel=1e-9)


def test_expert_parallel_prices_the_ep_rows_and_the_nccl_gather_and_scatter_by_hand():
    assert EP8[sm.NUM_PARAMS + K_DP] == 8 and EP8[sm.NUM_PARAMS + K_MOE_APART] == 1
    g = unpack_grids(EP8, sm.NUM_PARAMS)
    moe = rows("moe/fp8_block")
    ep8 = moe[np.all(moe[:, 1:7] == [7168, 2048, 8, 256, 1, 8], axis=1)]
    gather, scatter = rows("nccl/all_gather"), rows("nccl/reduce_scatter")
    for n in (64.0, 1024.0):
        want_ms = ep8[ep8[:, 0] == n, 7][0]
        for table in (gather, scatter):
            sel = table[table[:, 0] == 8]
            want_ms += np.exp(np.interp(np.log(n * 7168 * 2), np.log(sel[:, 1]), np.log(sel[:, 2])))
        # plus the router's top-k over all n tokens, after the gather (not measured)
        topk_s = ROUTER_TOPK_S + n * (256 * ROUTER_LOGIT_BYTES + 8 * ROUTER_CHOICE_BYTES) / H200_BYTE_RATE
        got = g["moe_s"][list(g["tokens"]).index(n)]
        assert got == pytest.approx((want_ms / 1e3 + topk_s) * MOE_LAYERS, rel=1e-6)
        assert g["moe_share"][list(g["tokens"]).index(n)] == pytest.approx(want_ms / 1e3 / (want_ms / 1e3 + topk_s))
    # without data-parallel attention (EP over the TP group) the EP rows stay inside the per-token grid
    plain = deepseek(tp=8, ep=8)
    assert plain[sm.NUM_PARAMS + K_MOE_APART] == 0 and plain[sm.NUM_PARAMS + K_DP] == 1


def test_data_parallel_attention_runs_one_group_s_share_of_the_attention():
    # 64 decode sequences of 2,000 cached tokens over 8 groups: each GPU runs the attention and
    # dense layers of 8 of them (measured points: b = 8 and 64 tokens), the experts of all 64
    g = unpack_grids(EP8, sm.NUM_PARAMS)
    kv = 64 * 2000.0
    total, _ = kernel_step_time_s_py(EP8, sm.NUM_PARAMS, 0.0, 0.0, 0, 64, kv + 64, kv, 0)

    def on_tokens(name, n):
        return np.exp(np.interp(np.log(n), np.log(g["tokens"]), np.log(g[name])))

    decode = np.exp(np.interp(np.log(2001.0), np.log(g["c"]), np.log(g["decode_s"][list(g["b"]).index(8)])))
    want = on_tokens("linear_s", 8) + on_tokens("head_s", 8) + decode + on_tokens("moe_s", 64)
    assert total == pytest.approx(want, rel=1e-9)


def test_under_data_parallel_attention_one_prompt_runs_whole_on_one_group():
    g = unpack_grids(EP8, sm.NUM_PARAMS)
    n = 2048.0  # one prompt: its group runs all of it, the experts see the same tokens
    total, _ = kernel_step_time_s_py(EP8, sm.NUM_PARAMS, 0.0, 0.0, n, 0, n * (n + 1) / 2, 0.0, 1)

    def on_tokens(name, x):
        return np.exp(np.interp(np.log(x), np.log(g["tokens"]), np.log(g[name])))

    prefill = np.exp(np.interp(np.log(n), np.log(g["s"]), np.log(g["prefill_s"][0])))
    want = on_tokens("linear_s", n) + on_tokens("head_s", 1.0) + prefill + on_tokens("moe_s", n)
    assert total == pytest.approx(want, rel=1e-9)
    # sixteen prompts of 128 tokens: two per group
    total, _ = kernel_step_time_s_py(EP8, sm.NUM_PARAMS, 0.0, 0.0, 2048, 0, 16 * 128 * 129 / 2, 0.0, 16)
    prefill = np.exp(np.interp(np.log(128.0), np.log(g["s"]), np.log(g["prefill_s"][list(g["r"]).index(2)])))
    want = on_tokens("linear_s", 256.0) + on_tokens("head_s", 2.0) + prefill + on_tokens("moe_s", 2048.0)
    assert total == pytest.approx(want, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(prefill=st.integers(0, 20000), decode=st.integers(0, 600), context=st.integers(0, 30000),
       requests=st.integers(1, 8), which=st.sampled_from(["tp8", "ep8", "ep8-no-dp", "qwen3-moe-tp1", "qwen3-moe-tp2",
                                            "mixtral-tp2", "gpt-oss-120b"]))
def test_kernel_matches_its_plain_python_reference_with_moe_mla_and_ep(prefill, decode, context, requests, which):
    p = PARAMS[which].copy()
    assert p[sm.P_KIND] == sm.KIND_KERNELS
    r = requests if prefill else 0
    pairs = float(prefill * (prefill // max(r, 1) + 1) / 2 + decode * (context + 1))
    kv = float(decode * context)
    got = sm.step_time_s(p, prefill, decode, pairs, kv, r)
    want, measured = kernel_step_time_s_py(p, sm.NUM_PARAMS, p[sm.P_STEP_OVERHEAD_S], p[sm.P_PIPELINE_S_PER_TOKEN],
                                           prefill, decode, pairs, kv, r)
    assert got == pytest.approx(want, rel=1e-9)
    assert p[sm.NUM_PARAMS + 6] == pytest.approx(measured, rel=1e-9, abs=1e-15)
    assert 0.0 <= measured <= got


def moe(model, device="h100-sxm", tp=1):
    s = scenario(model={"name": model}, hardware={"device": device, "tensor_parallel": tp}, perf={"model": "kernels"})
    return sm.step_params(s, plan_deployment(s))


# DeepSeek-V3 on H200 under TP8 and EP8, and the other MoE kinds with their router (gate from the
# GEMM rows; top-k added, or inside gpt-oss's measured MXFP4 rows)
PARAMS = {"tp8": TP8, "ep8": EP8, "ep8-no-dp": deepseek(tp=8, ep=8), "qwen3-moe-tp1": moe("qwen3-30b-a3b"),
          "qwen3-moe-tp2": moe("qwen3-30b-a3b", tp=2), "mixtral-tp2": moe("mixtral-8x7b", tp=2),
          "gpt-oss-120b": moe("gpt-oss-120b", "h200")}


def test_nvfp4_on_blackwell_runs_the_fp4_gemm_rows():
    s = scenario(model={"name": "llama-3.1-8b", "weight_format": "nvfp4"}, hardware={"device": "b200"},
                 perf={"model": "kernels"}, fleet={"price_usd_per_device_hour": 6.0})
    p = sm.step_params(s, plan_deployment(s))
    g = unpack_grids(p, sm.NUM_PARAMS)
    b200 = KernelTables("b200_sxm")
    # the LM head at 16 tokens is the nvfp4 row of its shape, not the bf16 one
    want, _ = b200.gemm_ms("nvfp4", np.array([16.0]), 128256, 4096)
    bf16, _ = b200.gemm_ms("bfloat16", np.array([16.0]), 128256, 4096)
    assert g["head_s"][list(g["tokens"]).index(16)] == pytest.approx(want[0] / 1e3, rel=1e-9)
    assert want[0] != pytest.approx(bf16[0], rel=0.05)
