"""Per-life hour windows (simcost.cost.hours): every value and every sum equals, to the bit, what
the dense (lives, hours) matrix gives with numpy, for lives of no time, one hour, many hours, and
ends exactly on hour boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.cost.energy import hour_overlap_s, split_steps_by_hour, split_steps_by_hour_py
from simcost.cost.hours import HourWindows, _pairwise_rows, clock_hour, hour_of, last_hour_of
from simcost.units import S_PER_HOUR


def lives(rng: np.random.Generator, n: int, hours: int) -> tuple[np.ndarray, np.ndarray]:
    """Random [start, end) spans: a third on hour boundaries, some of no time, some past the end."""
    start = rng.random(n) * hours * S_PER_HOUR
    length = rng.choice([0.0, 1.0, 1800.0, 3600.0, 7200.0, 5e4], n) * rng.choice([1.0, rng.random()], n)
    end = start + length
    on_boundary = rng.random(n) < 0.33
    start[on_boundary] = np.floor(start[on_boundary] / S_PER_HOUR) * S_PER_HOUR
    end[on_boundary] = start[on_boundary] + np.round(length[on_boundary] / S_PER_HOUR) * S_PER_HOUR
    return start, end


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), hours=st.sampled_from([1, 2, 3, 7, 24, 200]))
def test_windows_hold_every_hour_and_sum_as_numpy_does(seed, n, hours):
    rng = np.random.default_rng(seed)
    start, end = lives(rng, n, hours)
    w = HourWindows.of_intervals(start, end, hours)
    dense = hour_overlap_s(start, end, hours)
    np.testing.assert_array_equal(w.dense(w.overlap_s(start, end)), dense)  # no hour with time left out
    values = w.overlap_s(start, end) * w.per_entry(rng.random(n) * 10.0 ** rng.integers(-4, 4, n))
    matrix = w.dense(values)
    assert w.total(values) == matrix.sum()
    np.testing.assert_array_equal(w.row_sums(values), matrix.sum(axis=1))
    np.testing.assert_array_equal(w.column_sums(values), matrix.sum(axis=0))
    mask = rng.random(n) < 0.5
    part, entries = w.select(mask)
    assert part.total(values[entries]) == matrix[mask].sum()
    np.testing.assert_array_equal(part.column_sums(values[entries]), matrix[mask].sum(axis=0))
    life, hour = rng.integers(0, max(n, 1), 50), rng.integers(0, hours, 50)
    if n:
        np.testing.assert_array_equal(w.at(values, life, hour), matrix[life, hour])


def test_sums_match_numpy_on_a_long_run_shape():
    """Thousands of lives over a month of hours: numpy's pairwise grouping spans many blocks."""
    rng = np.random.default_rng(7)
    n, hours = 5000, 720
    first = rng.integers(0, hours, n)
    w = HourWindows.spanning(first, np.minimum(hours - 1, first + rng.integers(0, 4, n)), hours)
    values = rng.random(w.size)
    matrix = w.dense(values)
    assert w.total(values) == matrix.sum()
    np.testing.assert_array_equal(w.column_sums(values), matrix.sum(axis=0))
    np.testing.assert_array_equal(w.row_sums(values), matrix.sum(axis=1))


@pytest.mark.parametrize("n,hours", [(1, 1), (3, 1), (20000, 1), (7, 24), (400, 720)])
def test_full_windows_sum_as_numpy_does_on_the_dense_matrix(n, hours):
    """Every life over every hour (a static fleet): the shortcut through numpy's own sums gives the
    dense matrix's sums, to the bit, past numpy's 8,192-element buffer too; so do the kernels."""
    w = HourWindows.spanning(np.zeros(n, np.int64), np.full(n, hours - 1), hours)
    assert w.full
    values = np.random.default_rng(n + hours).random(w.size) * 10.0 ** np.random.default_rng(1).integers(-6, 6, w.size)
    matrix = w.dense(values)
    assert w.total(values) == matrix.sum()
    np.testing.assert_array_equal(w.row_sums(values), matrix.sum(axis=1))
    np.testing.assert_array_equal(w.column_sums(values), matrix.sum(axis=0))
    pos = np.arange(w.size, dtype=np.int64)  # the kernels' pairwise replay agrees with the shortcut
    assert _pairwise_rows(pos, values, np.array([0, w.size]), w.size)[0] == w.total(values)


def test_hours_of_boundaries():
    t = np.array([0.0, 3599.999, 3600.0, 7200.0, 1e9])
    np.testing.assert_array_equal(hour_of(t, 3), [0, 0, 1, 2, 2])  # the last hour takes any overrun
    np.testing.assert_array_equal(last_hour_of(t, 3), [0, 0, 0, 1, 2])  # an end on a boundary stays before it
    w = HourWindows.of_intervals(np.array([3600.0, 0.0]), np.array([3600.0, 7200.0]), 3)
    assert w.first_hour.tolist() == [1, 0] and w.counts.tolist() == [1, 2]  # no time: its start's hour alone


def _floor_hour_cases() -> np.ndarray:
    """Every hour edge of a year and the doubles either side of it (where a rounded product with
    1/3600 could land in the wrong hour), hour edges and their neighbours near the end of the exact
    range, random times, and finite values outside the range that the kernel hands to the
    division (negative, huge)."""
    edges = np.arange(0, 24 * 366 + 1, dtype=np.float64) * S_PER_HOUR
    big = np.array([2.0**40, 2.0**49, 2.0**50 - 1, 2.0**50, 2.0**51, 1e18, -0.0, -1.0, -3600.0, -3601.0])
    near_big = (np.floor(big[:3] / S_PER_HOUR) * S_PER_HOUR)
    rng = np.random.default_rng(7)
    return np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), big, near_big,
                           np.nextafter(near_big, -np.inf), rng.uniform(0, 1e7, 20_000), rng.uniform(0, 1e12, 20_000),
                           [5e-324, 1e-300, 0.1, 3599.9999999999995]])


def test_clock_hour_is_float_floor_division_exactly():
    """clock_hour replaces `int(t // 3600)` in the per-step kernels: it must give the same hour for
    every time, not only most (a step put in the wrong hour moves its cost to another tariff)."""
    wrong = [t for t in _floor_hour_cases() if clock_hour(float(t)) != int(t // S_PER_HOUR)]
    assert not wrong, wrong[:5]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 60), replicas=st.integers(1, 4), hours=st.integers(1, 5))
def test_step_windows_take_every_hour_a_step_touches(seed, n, replicas, hours):
    """Steps on hour boundaries exactly, across them, and past the end: the kernel's entries are
    the dense twin's matrix."""
    rng = np.random.default_rng(seed)
    start = np.where(rng.random(n) < 0.3, rng.integers(0, hours + 1, n) * S_PER_HOUR, rng.random(n) * hours * S_PER_HOUR)
    end = start + rng.choice([0.0, 3600.0, 10.0, 5000.0], n)
    replica = rng.integers(0, replicas, n)
    util = rng.random(n)
    alive = rng.random(replicas) * hours * S_PER_HOUR
    w = HourWindows.of_intervals(alive, alive, hours, start, end, replica)
    busy_s, busy_u_s = split_steps_by_hour(start, end, replica, util, w.first_hour, w.offset, hours)
    ref_s, ref_u_s = split_steps_by_hour_py(start, end, replica, util, replicas, hours)
    np.testing.assert_allclose(w.dense(busy_s), ref_s, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(w.dense(busy_u_s), ref_u_s, rtol=1e-12, atol=1e-9)
    assert busy_s.sum() == pytest.approx(float((end - start).sum()), rel=1e-12, abs=1e-9)
