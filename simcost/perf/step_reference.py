"""Plain-Python twins of the step-time kernels (simcost.perf.step_model), written from the
formulas, not the kernels, for the tests to compare against (docs/design.md section 4)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from simcost.perf.kernel_reference import kernel_step_time_s_py
from simcost.perf.step_table import T_HEADER, table_step_time_s_py

if TYPE_CHECKING:
    pass




from simcost.perf.roofline import expected_experts_touched
from simcost.perf.step_params import KIND_CONSTANT, KIND_KERNELS, KIND_TABLE, NUM_PARAMS, StepParams


def step_time_s_py(p, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                   num_prefill_requests) -> float:
    """Plain-Python reference for `step_time_s`, written from the formula, not the kernel."""
    tokens = num_prefill_tokens + num_decode_tokens
    if tokens <= 0:
        return 0.0
    s = StepParams.from_array(p)
    if s.kind == KIND_KERNELS:
        return kernel_step_time_s_py(p, NUM_PARAMS, s.step_overhead_s, s.pipeline_s_per_token, num_prefill_tokens,
                                     num_decode_tokens, attn_token_pairs, kv_read_tokens, num_prefill_requests)[0]
    if s.kind == KIND_TABLE:
        prefill, decode = unpack_table(p)
        return table_step_time_s_py(prefill, decode, num_prefill_tokens, num_decode_tokens, kv_read_tokens)
    if s.kind == KIND_CONSTANT:
        decode_s = s.decode_step_s if num_decode_tokens > 0 else 0.0
        return float(s.step_overhead_s + s.prefill_s_per_token * num_prefill_tokens + decode_s)
    if s.pipeline_stages > 1 and s.pipeline_micro_batches > 1:
        return _pipelined_step_s_py(s, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                                    num_prefill_requests)
    compute_s = (s.flops_per_token * tokens + s.flops_per_attn_pair * attn_token_pairs) / s.flop_rate
    experts = expected_experts_touched(s.num_experts, s.experts_per_token, tokens)
    expert_bytes = s.expert_bytes * experts / s.num_experts if s.num_experts else 0.0
    memory_s = (s.weight_bytes + expert_bytes + s.kv_bytes_per_token * (kv_read_tokens + tokens)) / s.byte_rate
    comm_s = s.comm_fixed_s + s.comm_s_per_token * tokens
    pipeline_s = s.pipeline_s_per_token * tokens
    prefill_s = (s.prefill_overhead_s + s.prefill_request_s * num_prefill_requests
                 if num_prefill_tokens > 0 else 0.0)
    return float(max(compute_s, memory_s) + comm_s + pipeline_s + s.step_overhead_s + prefill_s)


def _pipelined_step_s_py(s: StepParams, num_prefill_tokens, num_decode_tokens, attn_token_pairs, kv_read_tokens,
                         num_prefill_requests) -> float:
    """Reference for `_pipelined_step_s`: a GPipe-style schedule of m micro-batches over pp stages,
    the time one micro-batch spends in one stage being the single-stage roofline of 1/m of the
    step's work over pp."""
    pp = s.pipeline_stages
    m = int(min(s.pipeline_micro_batches, max(num_decode_tokens + num_prefill_requests, 1)))
    one = replace(s, pipeline_stages=1.0, pipeline_micro_batches=1.0, pipeline_s_per_token=0.0, step_overhead_s=0.0,
                  prefill_overhead_s=0.0, prefill_request_s=0.0).to_array()
    micro = step_time_s_py(one, num_prefill_tokens / m, num_decode_tokens / m, attn_token_pairs / m,
                           kv_read_tokens / m, 0)
    send_s = s.pipeline_s_per_token / (pp - 1) * (num_prefill_tokens + num_decode_tokens) / m
    prefill_s = (s.prefill_overhead_s + s.prefill_request_s * num_prefill_requests if num_prefill_tokens > 0 else 0.0)
    return float((pp + m - 1) * micro / pp + (pp - 1) * send_s + s.step_overhead_s + prefill_s)


def unpack_table(p: np.ndarray) -> tuple[list, list]:
    """The (tokens, s) prefill and (batch, context, s) decode rows packed in a table model."""
    base = NUM_PARAMS
    n_prefill, n_batches = int(p[base]), int(p[base + 1])
    start = base + T_HEADER
    prefill = list(zip(p[start:start + n_prefill], p[start + n_prefill:start + 2 * n_prefill]))
    decode, pos = [], start + 2 * n_prefill
    for _ in range(n_batches):
        b, n = p[pos], int(p[pos + 1])
        decode += [(b, c, s) for c, s in zip(p[pos + 2:pos + 2 + n], p[pos + 2 + n:pos + 2 + 2 * n])]
        pos += 2 + 2 * n
    return prefill, decode


def decode_span_times_s_py(p, num_seqs, kv_tokens_sum, num_steps) -> np.ndarray:
    return np.array([step_time_s_py(p, 0, num_seqs, kv_tokens_sum + j * num_seqs + num_seqs,
                                    kv_tokens_sum + j * num_seqs, 0) for j in range(num_steps)], dtype=np.float64)
