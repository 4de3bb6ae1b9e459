"""Energy is the integral of power over time; carbon is kWh x grid intensity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_cases import bill

from simcost.cost.energy import split_steps_by_hour, split_steps_by_hour_py
from simcost.cost.hours import HourWindows

SITE = {"pue": 1.5, "grid_gco2_per_kwh": 300.0}


def test_energy_is_the_integral_of_power():
    steps = {0: [(0.0, 10.0), (3595.0, 3605.0)], 1: [(100.0, 1900.0)]}  # one step crosses the hour
    b = bill(steps, {"replicas": 2, "site": SITE}, 5000.0, idle_w=100.0, peak_w=500.0)
    dt = 0.01
    t = np.arange(0.0, 5000.0, dt) + dt / 2  # midpoints: exact for piecewise-constant power
    watts = np.zeros_like(t)
    for spans in steps.values():
        busy = np.zeros_like(t, dtype=bool)
        for s, e in spans:
            busy |= (t >= s) & (t < e)
        watts += np.where(busy, 500.0, 100.0)
    kwh = watts.sum() * dt * 1.5 / 3.6e6
    assert b.energy.total_kwh == pytest.approx(kwh, rel=1e-9)
    # by hand: 2 x 5000 s idle power + 1820 busy s x 400 W extra, x PUE
    assert b.energy.total_kwh == pytest.approx((2 * 5000 * 100 + 1820 * 400) * 1.5 / 3.6e6, rel=1e-12)
    kwh = b.energy.windows.dense(b.energy.hour_kwh)
    assert kwh.shape == (2, 2)
    assert kwh[0, 0] == pytest.approx((3600 * 100 + 15 * 400) * 1.5 / 3.6e6)


def test_carbon_is_kwh_times_intensity():
    b = bill({0: [(0.0, 30.0)]}, {"site": SITE}, 60.0)
    assert b.energy.total_gco2 == pytest.approx(b.energy.total_kwh * 300.0, rel=1e-15)


def test_idle_replica_draws_idle_power():
    b = bill({}, {"site": {"pue": 1.0}}, 3600.0, idle_w=250.0)
    assert b.energy.total_kwh == pytest.approx(0.25)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), replicas=st.integers(1, 3), hours=st.integers(1, 4))
def test_split_by_hour_matches_reference(seed, n, replicas, hours):
    rng = np.random.default_rng(seed)
    start = rng.random(n) * hours * 3600
    end = start + rng.random(n) * 4000  # some cross one or more hour boundaries, some overrun
    replica = rng.integers(0, replicas, n)
    util = rng.random(n)
    # each replica's window: the hours its steps touch, from a random earlier first hour
    first = rng.integers(0, hours, replicas)
    windows = HourWindows.of_intervals(first * 3600.0, first * 3600.0, hours, start, end, replica)
    got = split_steps_by_hour(start, end, replica, util, windows.first_hour, windows.offset, hours)
    ref = split_steps_by_hour_py(start, end, replica, util, replicas, hours)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(windows.dense(a), b, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got[0].sum(), (end - start).sum(), rtol=1e-12)
