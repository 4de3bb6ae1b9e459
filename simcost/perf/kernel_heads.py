"""Attention grids across query-head counts (tensor parallelism divides the heads): blending the
grids of two measured head counts, and filling the batch x length cells a layout lacks from its
other head counts. Plain numpy on (batch axis, length axis, ms matrix) grids, used by
simcost.perf.kernel_tables once per deployment."""

from __future__ import annotations

import numpy as np

import simcost.portable_math as pmath


def heads_blend(lo: tuple[np.ndarray, np.ndarray, np.ndarray], hi: tuple[np.ndarray, np.ndarray, np.ndarray],
                heads_lo: float, heads_hi: float, heads: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The (batch axis, length axis, ms) grid at `heads` from the grids measured at heads_lo <
    heads_hi, on the axis points both hold (NaN where either is unmeasured; None if they share
    none): log-log in heads between them; beyond them the nearer one continued along the slope
    between the two, clamped to [0, 1] (attention time never falls with more heads and grows at
    most in proportion)."""
    batches, lengths = np.intersect1d(lo[0], hi[0]), np.intersect1d(lo[1], hi[1])
    if len(batches) == 0 or len(lengths) == 0:
        return None

    def pick(g: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        return pmath.log(g[2][np.ix_(np.searchsorted(g[0], batches), np.searchsorted(g[1], lengths))])

    log_lo, log_hi = pick(lo), pick(hi)
    slope = (log_hi - log_lo) / pmath.log(heads_hi / heads_lo)
    if heads_lo <= heads <= heads_hi:
        return batches, lengths, pmath.exp(log_lo + slope * pmath.log(heads / heads_lo))
    anchor, at = (log_lo, heads_lo) if heads < heads_lo else (log_hi, heads_hi)
    return batches, lengths, pmath.exp(anchor + np.clip(slope, 0.0, 1.0) * pmath.log(heads / at))


def log_slope(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
              heads_a: float, heads_b: float) -> float | None:
    """The median log-log slope in heads between two (batch, length, ms) grids over the cells both
    measured, clamped to [0, 1]; None if they share none."""
    batches, lengths = np.intersect1d(a[0], b[0]), np.intersect1d(a[1], b[1])
    if len(batches) == 0 or len(lengths) == 0:
        return None

    def pick(g: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        return g[2][np.ix_(np.searchsorted(g[0], batches), np.searchsorted(g[1], lengths))]

    slopes = pmath.log(pick(b) / pick(a)) / pmath.log(heads_b / heads_a)
    return float(np.clip(np.nanmedian(slopes), 0.0, 1.0)) if np.isfinite(slopes).any() else None


def fill_cells(grid: tuple[np.ndarray, np.ndarray, np.ndarray], heads: float, slope: float,
               measured: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]
               ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """(`grid` with its unmeasured (NaN) cells filled, which cells were filled). The collector
    measured fewer batch x length points at more heads (H100's 2-KV-head decode rows stop at 16
    query heads for 128 x 8,192 and at 4 for 256 x 8,192), and such a cell fell to the roofline; it
    is taken instead from the measured head count nearest `heads` (in ratio, same KV heads and
    head_dim) that has it, scaled by (heads / that count) ^ slope, the local log-log slope in heads
    (log_slope; decode: about 0, the kernel reads each KV head once whatever the query heads per
    KV head; prefill: about 1, FLOPs grow with the query heads). Cells no count measured stay NaN."""
    batches, lengths, ms = grid[0], grid[1], grid[2].copy()
    order = sorted((c for c in measured if c != heads), key=lambda c: abs(pmath.log(c / heads)))
    filled = np.zeros(ms.shape, bool)
    for i, j in zip(*np.nonzero(np.isnan(ms))):
        for c in order:
            g = measured[c]
            gi, gj = np.flatnonzero(g[0] == batches[i]), np.flatnonzero(g[1] == lengths[j])
            if len(gi) and len(gj) and np.isfinite(g[2][gi[0], gj[0]]):
                ms[i, j] = g[2][gi[0], gj[0]] * (heads / c) ** slope
                filled[i, j] = True
                break
    return (batches, lengths, ms), filled
