"""The MoE router in the kernel-table model: the measured MoE rows leave out the gate GEMM (and,
but for the MXFP4 rows, the top-k selection), so the model adds the gate from the bf16 GEMM rows
and the top-k as a fixed cost per MoE layer. Checked against the shipped rows by hand, with the
router taken out to isolate it (the numba kernel against its plain-Python reference on these MoE
models: tests/test_kernel_mla_ep.py)."""

from __future__ import annotations

import numpy as np
import pytest

import simcost.perf.kernel_model as km
import simcost.perf.kernel_moe as kmoe
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_moe import ROUTER_CHOICE_BYTES, ROUTER_LOGIT_BYTES, ROUTER_TOPK_S, Rates, router_gate
from simcost.perf.kernel_reference import kernel_step_time_s_py, unpack_grids
from simcost.perf.kernel_tables import KernelTables
from tests.scenarios import scenario

H100, H200 = KernelTables("h100_sxm"), KernelTables("h200_sxm")


def setup(model, device="h100-sxm", tp=1, ep=1, dp_attention=False, **model_keys):
    hardware = {"device": device, "tensor_parallel": tp}
    if ep > 1:
        hardware.update(expert_parallel=ep, data_parallel_attention=dp_attention)
    s = scenario(model={"name": model, **model_keys}, hardware=hardware, perf={"model": "kernels"},
                 engine={"max_model_len": 32768, "max_num_seqs": 256, "max_num_batched_tokens": 8192})
    return s, plan_deployment(s)


def params(*args, **kwargs):
    s, dep = setup(*args, **kwargs)
    return sm.step_params(s, dep)


def gate_row_s(tables: KernelTables, n: float, k: float, m: np.ndarray) -> np.ndarray:
    """The bf16 GEMM row (n, k) at measured m, by hand from the shipped rows."""
    rows = tables.arrays["gemm/bfloat16"]
    sel = rows[(rows[:, 1] == n) & (rows[:, 2] == k)]
    return np.array([sel[sel[:, 0] == x, 3][0] for x in m]) / 1e3


def byte_rate(s, dep) -> float:
    return dep.device.mem_bw_bytes_per_s * sm.efficiency_factors(s, dep)["mbu"]


def without(monkeypatch, what: str, *args, **kwargs) -> np.ndarray:
    """The same deployment's parameters with the gate or the top-k priced at zero."""
    with monkeypatch.context() as mp:
        if what == "gate":
            mp.setattr(km, "router_gate", lambda tables, model, rates, m: (np.zeros(m.shape), np.ones(m.shape)))
        else:
            mp.setattr(kmoe, "router_topk_s", lambda model, rates, m: np.zeros(m.shape))
        return params(*args, **kwargs)


def test_qwen3_moe_adds_the_bf16_gate_row_and_the_top_k_per_moe_layer(monkeypatch):
    s, dep = setup("qwen3-30b-a3b")  # 48 MoE layers, 128 experts, hidden 2048, top 8
    full = unpack_grids(params("qwen3-30b-a3b"), sm.NUM_PARAMS)
    m = np.array([1.0, 8.0, 64.0, 512.0])  # measured GEMM sizes
    at = [list(full["tokens"]).index(x) for x in m]
    no_gate = unpack_grids(without(monkeypatch, "gate", "qwen3-30b-a3b"), sm.NUM_PARAMS)
    gate = (full["linear_s"] - no_gate["linear_s"])[at]
    assert gate == pytest.approx(gate_row_s(H100, 128, 2048, m) * 48, rel=1e-9)
    no_topk = unpack_grids(without(monkeypatch, "topk", "qwen3-30b-a3b"), sm.NUM_PARAMS)
    topk = (full["linear_s"] - no_topk["linear_s"])[at]
    per_token = (128 * ROUTER_LOGIT_BYTES + 8 * ROUTER_CHOICE_BYTES) / byte_rate(s, dep)
    assert topk == pytest.approx((ROUTER_TOPK_S + m * per_token) * 48, rel=1e-6)
    # the gate is a measured row, the top-k is not
    measured = full["linear_share"] * full["linear_s"] - no_gate["linear_share"] * no_gate["linear_s"]
    assert measured[at] == pytest.approx(gate, rel=1e-6)
    assert (full["linear_share"] * full["linear_s"])[at] == pytest.approx(
        (no_topk["linear_share"] * no_topk["linear_s"])[at], rel=1e-9)


def test_the_gate_is_replicated_over_tensor_parallelism_not_split():
    s, dep = setup("qwen3-30b-a3b", tp=4)
    m = np.array([1.0, 64.0])
    one, _ = router_gate(H100, dep.model, Rates(dep.device, "bf16", 0.5, 0.5), m)
    assert one == pytest.approx(gate_row_s(H100, 128, 2048, m), rel=1e-9)  # n = all 128 experts at TP4


def test_fewer_experts_than_the_narrowest_row_take_it_and_count_as_not_measured():
    s, dep = setup("mixtral-8x7b", tp=2)  # 8 experts; the GEMM rows start at n = 32
    m = np.array([1.0, 64.0, 512.0])
    seconds, share = router_gate(H100, dep.model, Rates(dep.device, "bf16", 0.5, 0.5), m)
    assert seconds == pytest.approx(gate_row_s(H100, 32, 4096, m), rel=1e-9)
    assert (share == 0.0).all()


def test_measured_mxfp4_rows_include_the_top_k_so_none_is_added(monkeypatch):
    # gpt-oss ships MXFP4 experts; their rows were timed through vLLM's FusedMoE on router logits
    full = unpack_grids(params("gpt-oss-20b", device="h200"), sm.NUM_PARAMS)
    no_topk = unpack_grids(without(monkeypatch, "topk", "gpt-oss-20b", device="h200"), sm.NUM_PARAMS)
    assert full["linear_s"] == pytest.approx(no_topk["linear_s"], rel=1e-12)
    # in bf16 the same model has no measured MoE rows: the roofline experts, plus the top-k
    s, dep = setup("gpt-oss-20b", device="h200", weight_format="bf16")
    bf16 = unpack_grids(params("gpt-oss-20b", device="h200", weight_format="bf16"), sm.NUM_PARAMS)
    no_topk = unpack_grids(without(monkeypatch, "topk", "gpt-oss-20b", device="h200", weight_format="bf16"),
                           sm.NUM_PARAMS)
    added = (bf16["linear_s"] - no_topk["linear_s"])[0]  # one token, 24 MoE layers of 32 experts, top 4
    assert added == pytest.approx((ROUTER_TOPK_S + (32 * ROUTER_LOGIT_BYTES + 4 * ROUTER_CHOICE_BYTES)
                                   / byte_rate(s, dep)) * 24, rel=1e-6)


def test_under_dp_attention_the_gate_runs_on_the_group_s_tokens_and_the_top_k_on_all(monkeypatch):
    # DeepSeek-V3 EP8 with data-parallel attention on H200: the gate (n = 256, k = 7168, bf16 although
    # the checkpoint is fp8) joins the per-group grid, the top-k the MoE grid the whole step reads
    kwargs = {"device": "h200", "ep": 8, "dp_attention": True}
    full = unpack_grids(params("deepseek-v3", **kwargs), sm.NUM_PARAMS)
    no_gate = unpack_grids(without(monkeypatch, "gate", "deepseek-v3", **kwargs), sm.NUM_PARAMS)
    no_topk = unpack_grids(without(monkeypatch, "topk", "deepseek-v3", **kwargs), sm.NUM_PARAMS)
    m = np.array([1.0, 64.0, 512.0])
    at = [list(full["tokens"]).index(x) for x in m]
    assert (full["linear_s"] - no_gate["linear_s"])[at] == pytest.approx(gate_row_s(H200, 256, 7168, m) * 58, rel=1e-9)
    assert full["moe_s"] == pytest.approx(no_gate["moe_s"], rel=1e-12)
    assert full["linear_s"] == pytest.approx(no_topk["linear_s"], rel=1e-12)
    assert (full["moe_s"] > no_topk["moe_s"]).all()
    # a decode step of 64 sequences: the gate at the busiest group's 8 tokens, the top-k at all 64
    p_full, p_gate = params("deepseek-v3", **kwargs), without(monkeypatch, "gate", "deepseek-v3", **kwargs)
    kv = 64 * 2000.0
    step = [kernel_step_time_s_py(p, sm.NUM_PARAMS, 0.0, 0.0, 0, 64, kv + 64, kv, 0)[0] for p in (p_full, p_gate)]
    assert step[0] - step[1] == pytest.approx(gate_row_s(H200, 256, 7168, [8.0])[0] * 58, rel=1e-9)
