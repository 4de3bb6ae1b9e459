"""Each pricing model against a bill computed by hand, and the allocation identity
(request costs + unallocated = the bill) on hand-built logs and on real runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_cases import bill, unallocated_identity
from scenarios import scenario

from simcost.cost.ledger import charge_steps_hourly, charge_steps_hourly_py
from simcost.errors import InputError
from simcost.simulation.simulation import run

OD_10 = {"usd_per_hour": 10.0}  # on-demand $10 per replica-hour


def test_on_demand_per_second_minimum():
    # $3.60/h = $0.001/s; a 20 s run is billed the 60 s minimum: $0.06
    b = bill({0: [(0.0, 5.0)]}, {}, 20.0, usd_per_hour=3.6)
    assert b.total_usd == pytest.approx(0.06)
    assert b.request_usd.sum() == pytest.approx(0.005)
    assert b.idle_usd == pytest.approx(0.015)
    assert b.minimum_usd == pytest.approx(0.04)
    assert unallocated_identity(b) < 1e-9


def test_on_demand_past_the_minimum_is_per_second():
    b = bill({0: [(0.0, 5.0)]}, {"pricing": {"min_charge_s": 30}}, 90.5, usd_per_hour=3.6)
    assert b.total_usd == pytest.approx(0.0905)
    assert b.minimum_usd == 0


def test_reserved_idle_hour_is_charged_in_full():
    # per device: 8760 upfront over 1 year = $1/h, + $1/h recurring = $2/h; 2 devices = $4/h
    pricing = {"model": "reserved", "upfront_usd_per_device": 8760.0, "recurring_usd_per_device_hour": 1.0,
               "term_years": 1}
    b = bill({}, {"pricing": pricing}, 3600.0, usd_per_hour=8.0, devices=2)
    assert b.total_usd == pytest.approx(4.0)
    assert b.idle_usd == pytest.approx(4.0)
    assert b.tariff.effective_usd_per_hour == pytest.approx(4.0)
    assert b.tariff.break_even_utilization == pytest.approx(0.5)  # $4 effective / $8 on demand
    assert b.tariff.category == "Committed"


SP = {"model": "savings_plan", "commitment_usd_per_hour": 10.0, "discount": 0.3}


def test_savings_plan_hour_below_commitment():
    # U = $10 < C / (1 - d) = $14.29: bill = C = $10; usage costs U (1 - d) = $7, $3 of commitment lost
    b = bill({0: [(0.0, 1800.0)]}, {"pricing": SP}, 3600.0, **OD_10)
    assert b.total_usd == pytest.approx(10.0)
    assert b.unused_commitment_usd == pytest.approx(3.0)
    assert b.request_usd.sum() == pytest.approx(3.5)  # half the hour busy at $7/h
    assert b.idle_usd == pytest.approx(3.5)
    assert unallocated_identity(b) < 1e-9


def test_savings_plan_hour_above_commitment():
    # 3 replicas: U = $30 > $14.29: bill = 10 + 30 - 10 / 0.7 = $25.714...; nothing lost
    b = bill({0: [(0.0, 3600.0)]}, {"replicas": 3, "pricing": SP}, 3600.0, **OD_10)
    assert b.total_usd == pytest.approx(10 + 30 - 10 / 0.7)
    assert b.unused_commitment_usd == 0
    assert b.request_usd.sum() == pytest.approx(b.total_usd / 3)
    assert unallocated_identity(b) < 1e-9


def test_savings_plan_hours_priced_separately():
    # 1.5 h: the half hour is prorated: C = $5, U = $5 -> bill $5, lost 5 - 3.5 = $1.5
    b = bill({}, {"pricing": SP}, 5400.0, **OD_10)
    assert b.total_usd == pytest.approx(15.0)
    assert b.unused_commitment_usd == pytest.approx(3.0 + 1.5)


def test_owned_hardware():
    # capital $43,800 over 5 years = $1/h; power 100 W idle, 500 W peak, PUE 1.5, $0.20/kWh
    # half the hour busy: (3600 x 100 + 1800 x 400) J x 1.5 = 0.45 kWh = $0.09; bill $1.09
    pricing = {"model": "owned", "capex_usd_per_device": 43800.0, "usd_per_kwh": 0.2}
    b = bill({0: [(0.0, 1800.0)]}, {"pricing": pricing, "site": {"pue": 1.5}}, 3600.0)
    assert b.total_usd == pytest.approx(1.09)
    assert b.request_usd.sum() == pytest.approx(0.5 + 0.015 + 0.06)  # capital + idle power + busy extra
    assert b.idle_usd == pytest.approx(0.515)
    assert unallocated_identity(b) < 1e-9


def test_spot_is_dynamic_at_its_price():
    b = bill({}, {"pricing": {"model": "spot", "spot_usd_per_device_hour": 2.0}}, 3600.0, **OD_10)
    assert b.total_usd == pytest.approx(2.0)
    assert b.tariff.category == "Dynamic"


def test_keys_of_another_model_are_rejected():
    with pytest.raises(InputError, match="fleet.pricing.discount"):
        scenario(fleet={"pricing": {"model": "spot", "spot_usd_per_device_hour": 1.0, "discount": 0.2}})


PRICINGS = {
    "on_demand": {},
    "reserved": {"model": "reserved", "upfront_usd_per_device": 10000, "recurring_usd_per_device_hour": 1.5, "term_years": 3},
    "savings_plan": {"model": "savings_plan", "commitment_usd_per_hour": 3.0, "discount": 0.4},
    "spot": {"model": "spot", "spot_usd_per_device_hour": 2.2},
    "owned": {"model": "owned", "capex_usd_per_device": 30000, "usd_per_kwh": 0.1, "lifetime_years": 4},
}


@pytest.mark.parametrize("name", list(PRICINGS))
def test_allocation_identity_on_a_run(name):
    r = run(scenario(fleet={"replicas": 2, "pricing": PRICINGS[name]}))
    b, c = r.bill, r.summary["cost"]
    assert unallocated_identity(b) < 1e-9
    assert c["pricing_model"] == name
    assert c["allocated_usd"] + c["unallocated_usd"] == pytest.approx(c["total_usd"], rel=1e-9)
    assert r.summary["energy"]["kwh"] > 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40), replicas=st.integers(1, 3), hours=st.integers(1, 4))
def test_charge_steps_hourly_matches_reference(seed, n, replicas, hours):
    rng = np.random.default_rng(seed)
    start = rng.random(n) * hours * 3600
    end = start + rng.random(n) * 4000
    replica = rng.integers(0, replicas, n)
    util = rng.random(n)
    rate = rng.random(replicas)  # per replica, times its class's factor in each hour (row 0: ones)
    factor_row = rng.integers(0, 3, replicas)
    hour_factor = np.vstack([np.ones(hours), rng.random((2, hours))])
    got = charge_steps_hourly(start, end, replica, util, rate, factor_row, hour_factor, 0.3)
    ref = charge_steps_hourly_py(start, end, replica, util, rate, factor_row, hour_factor, 0.3)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
