"""Multi-head latent attention (DeepSeek-V2/V3 style) in the kernel-table step model: the measured
MLA modules (simcost/data/kernels, `mla_context/*` and `mla_generation/*`) as the model's prefill
and decode attention grids.

What a row measures (aiconfigurator's vLLM collector builds vLLM's `DeepseekV2MLAAttention` from
DeepSeek-V3's config.json with num_heads set to the row's per-GPU heads, tp_size 1, and times its
forward): the whole attention block of one layer on one GPU: the replicated q_a / kv_a
projections and their norms, the head-sharded q_b / kv_b projections, rotary, the attention
kernels (prefill un-absorbed, decode absorbed over the cached latent) and the output projection,
in the row's GEMM precision. Not included: the input norm and residual (the step model's
elementwise term) and the all-reduce after the output projection (its all-reduce term). So for an
MLA model the step model takes the QKV and output GEMMs and rotary out of its per-token grid and
prices them inside these modules instead: nothing is counted twice.

Approximations (docs/step_model.md): a mixed step runs the prefill and decode modules as two
calls, paying the projections' launches twice; a chunk after a cached prefix is priced as r
requests of the equivalent prompt length s (the step model's rule for attention), whose r s
tokens of projections exceed the chunk's own when the prefix is long. The tables hold
DeepSeek-V3's shapes only: another MLA shape (MLA_TABLE_SHAPE) takes the roofline.
"""

from __future__ import annotations

import numpy as np

import simcost.portable_math as pmath
from simcost.catalog.types import ModelSpec
from simcost.perf.kernel_tables import KernelTables

# the shapes the MLA tables were measured at (DeepSeek-V3's config.json; Kimi K2 shares them)
MLA_TABLE_SHAPE = {"hidden_size": 7168, "kv_lora_rank": 512, "qk_rope_head_dim": 64}
# DeepSeek-V3's other attention dimensions (config.json), for the roofline where the tables have no point
Q_LORA_RANK, QK_NOPE_HEAD_DIM, V_HEAD_DIM = 1536, 128, 128


def mla_tabled(model: ModelSpec) -> bool:
    """Whether `model` is an MLA model of the shape the tables measured."""
    return model.is_mla and all(getattr(model, k) == v for k, v in MLA_TABLE_SHAPE.items())


def mla_weight_elements(heads: float) -> float:
    """Weights of one layer's MLA block on a GPU holding `heads` query heads."""
    hidden, latent = MLA_TABLE_SHAPE["hidden_size"], MLA_TABLE_SHAPE["kv_lora_rank"]
    rope = MLA_TABLE_SHAPE["qk_rope_head_dim"]
    return (hidden * Q_LORA_RANK + hidden * (latent + rope) + Q_LORA_RANK * heads * (QK_NOPE_HEAD_DIM + rope)
            + latent * heads * (QK_NOPE_HEAD_DIM + V_HEAD_DIM) + heads * V_HEAD_DIM * hidden)


def mla_prefill_roofline_s(b, s, heads, flop_rate, byte_rate, weight_b):
    """One layer's MLA block for b prompts of s tokens: projections at b s tokens and the
    un-absorbed causal attention (q.k over nope + rope dims, p.v over v dims)."""
    tokens = b * s
    flops = (2.0 * tokens * mla_weight_elements(heads)
             + 2.0 * heads * (QK_NOPE_HEAD_DIM + MLA_TABLE_SHAPE["qk_rope_head_dim"] + V_HEAD_DIM) * b * s * (s + 1) / 2.0)
    return np.maximum(flops / flop_rate, mla_weight_elements(heads) * weight_b / byte_rate)


def mla_decode_roofline_s(b, c, heads, flop_rate, byte_rate, weight_b, kv_b):
    """One layer's MLA block for b sequences attending c tokens each: projections, the absorbed
    per-head latent products, and attention reading c cached latents per sequence."""
    latent, rope = MLA_TABLE_SHAPE["kv_lora_rank"], MLA_TABLE_SHAPE["qk_rope_head_dim"]
    flops = (2.0 * b * mla_weight_elements(heads) + 2.0 * b * heads * latent * (QK_NOPE_HEAD_DIM + V_HEAD_DIM)
             + 2.0 * b * heads * c * (2 * latent + rope))
    nbytes = mla_weight_elements(heads) * weight_b + b * c * (latent + rope) * kv_b
    return np.maximum(flops / flop_rate, nbytes / byte_rate)


def mla_grid(tables: KernelTables, phase: str, gemm_type: str, kv_dtype: str, heads: float, roofline
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(batch axis, length axis, seconds per layer, measured share) of the MLA module for `phase`
    at `heads` per GPU: measured where the table has the point; in its holes (the collector's cap
    on batch x length) the nearest measured length of the same batch scaled by the ratio of
    `roofline(b, length)` at the two lengths (the module roofline alone, without launch costs,
    sits 20-90 % under the measured modules), not counted as measured; a head count the table
    lacks (a TP degree not measured) log-log in heads between the measured counts around it
    (KernelTables.mla_between; held out 5 % median where scaling the nearest by heads missed by
    35-81 %), else from the nearest measured one within a factor 2, scaled by heads (neither
    counted as measured). None if the table has no rows for this GEMM type and KV dtype, or no
    head count that near."""
    grid = tables.mla_grid(phase, gemm_type, kv_dtype, heads)
    measured = grid is not None
    if grid is None:
        grid = tables.mla_between(phase, gemm_type, kv_dtype, heads)
    if grid is None:
        rows = tables.arrays.get(f"mla_{phase}/{gemm_type}_kv{kv_dtype}")
        if rows is None:
            return None
        candidates = np.unique(rows[:, 2])
        near = float(candidates[np.argmin(np.abs(pmath.log(candidates / heads)))])
        if not 0.5 <= near / heads <= 2.0:  # too far to scale by heads (e.g. one measured head count)
            return None
        found = tables.mla_grid(phase, gemm_type, kv_dtype, near)
        assert found is not None
        grid = found[0], found[1], found[2] * heads / near
    batches, lengths, ms = grid
    b, n = np.meshgrid(batches, lengths, indexing="ij")
    have = ~np.isnan(ms)
    roof = roofline(b, n)
    seconds = np.where(have, ms / 1e3, roof)
    for i in range(len(batches)):
        known = np.flatnonzero(have[i])
        for j in np.flatnonzero(~have[i]) if len(known) else ():
            k = known[np.argmin(np.abs(pmath.log(lengths[known] / lengths[j])))]
            seconds[i, j] = ms[i, k] / 1e3 * roof[i, j] / roof[i, k]
    return batches, lengths, seconds, (have & measured).astype(np.float64)
