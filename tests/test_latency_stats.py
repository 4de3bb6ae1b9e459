"""metrics.latency.stats: the mean and percentiles of the non-NaN values, against a plain-Python
reference (linear interpolation between the sorted values, numpy's default); a caller's array is
left as it was unless handed over as scratch, and scratch gives the same numbers."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from simcost.metrics.latency import PERCENTILES, stats

values = st.lists(st.one_of(st.floats(0, 1e3), st.just(math.nan)), max_size=60).map(lambda v: np.array(v, dtype=np.float64))


def reference_percentile(ordered: list[float], q: float) -> float:
    at = (len(ordered) - 1) * q / 100
    lo = math.floor(at)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


@given(values)
def test_stats_match_the_reference_and_leave_the_input_alone(v):
    before = v.copy()
    got = stats(v)
    assert np.array_equal(v, before, equal_nan=True)
    kept = sorted(x for x in v.tolist() if not math.isnan(x))
    assert got["count"] == len(kept)
    if not kept:
        assert got["mean"] is None and got["p99"] is None
        return
    assert math.isclose(got["mean"], math.fsum(kept) / len(kept), rel_tol=1e-12, abs_tol=1e-12)
    for key, q in PERCENTILES.items():
        assert math.isclose(got[key], reference_percentile(kept, q), rel_tol=1e-12, abs_tol=1e-9)


@given(values)
def test_scratch_gives_the_same_numbers(v):
    assert stats(v.copy(), scratch=True) == stats(v)
