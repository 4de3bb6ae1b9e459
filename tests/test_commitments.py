"""Commitment planning: hand-computed plans, the exact quantile optimum against scipy and a brute
scan on random curves, the savings-plan bill against the pricing module's, and a run's demand
curve against its bill (no device-second lost or invented)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from scenarios import scenario

from simcost.analysis.commitments import (
    DEFAULT_RESERVED_DISCOUNT,
    DEFAULT_SAVINGS_PLAN_DISCOUNT,
    demand_curve,
    format_plan,
    plan_from_run,
    plan_reserved,
    plan_savings_plan,
    reserved_cost_usd,
    savings_plan_cost_usd,
    tile_to_week,
)
from simcost.cost.pricing import bill_usd, reserved_effective_usd_per_hour
from simcost.errors import InputError
from simcost.perf.deployment import Pool, plan_deployment
from simcost.scenario.pricing import PricingConfig
from simcost.simulation.simulation import Simulation

METHODS = ("exact", "scipy")


def rel_close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-12)


# --- hand-computed ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_reserved_by_hand(method):
    # o = $10, r = $6 (60 %): R = 2 costs 2 x 6 x 4 + 10 x (4 - 2) = 68; R = 1: 24 + 60 = 84; R = 3: 72 + 10 = 82
    p = plan_reserved([2, 2, 2, 4], 10.0, 6.0, method)
    assert p.devices == 2
    assert p.cost_usd == pytest.approx(68.0)
    assert p.on_demand_cost_usd == pytest.approx(100.0)
    assert (p.saving_usd, p.saving_fraction) == pytest.approx((32.0, 0.32))
    assert p.break_even_utilization == pytest.approx(0.6)
    np.testing.assert_allclose(p.device_utilization, [1.0, 1.0])
    assert reserved_cost_usd([2, 2, 2, 4], [0, 1, 2, 3, 4], 10.0, 6.0) == pytest.approx([100, 84, 68, 82, 96])


@pytest.mark.parametrize("method", METHODS)
def test_reserved_is_the_break_even_quantile(method):
    # demand 0..9, b = 0.35: k = floor(3.5) = 3, R = the 4th largest = 6; cost 6 x 0.35 x 10 + (1 + 2 + 3) = 27
    # (R = 5 and R = 7 cost 27.5). Device 6 is used 4 h in 10 (above b), device 7 would be 3 (below)
    p = plan_reserved(np.arange(10), 1.0, 0.35, method)
    assert p.devices == 6
    assert p.cost_usd == pytest.approx(27.0)
    assert p.device_utilization[-1] == pytest.approx(0.4)
    assert p.mean_utilization == pytest.approx(np.mean([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]))


@pytest.mark.parametrize("method", METHODS)
def test_savings_plan_by_hand(method):
    # U = [20, 20, 20, 40] $/h, d = 0.4: C = 0.6 x 20 = 12; each hour 12 + max(0, U - 20): 12, 12, 12, 32
    p = plan_savings_plan([2, 2, 2, 4], 10.0, 0.4, method)
    assert p.commitment_usd_per_hour == pytest.approx(12.0)
    assert p.cost_usd == pytest.approx(68.0)
    assert p.unused_commitment_usd == pytest.approx(0.0)
    assert p.saving_usd == pytest.approx(32.0)
    assert p.break_even_utilization == pytest.approx(0.6)
    assert p.covered_devices == pytest.approx(2.0)


def test_savings_plan_cost_by_hand_with_unused_commitment():
    # C = 18 covers 30 $/h of usage: hours of 20 bill 18 and lose 18 - 0.6 x 20 = 6 each; the hour of 40 bills 28
    assert savings_plan_cost_usd([2, 2, 2, 4], 10.0, 0.4, 18.0) == pytest.approx((82.0, 18.0))
    assert savings_plan_cost_usd([2, 2, 2, 4], 10.0, 0.4, 0.0) == pytest.approx((100.0, 0.0))


@pytest.mark.parametrize("method", METHODS)
def test_flat_demand_commits_to_all_of_it(method):
    flat = np.full(168, 5.0)
    rp = plan_reserved(flat, 6.88, 4.5, method)
    assert rp.devices == 5 and rp.cost_usd == pytest.approx(5 * 4.5 * 168)
    sp = plan_savings_plan(flat, 6.88, 0.3, method)
    assert sp.commitment_usd_per_hour == pytest.approx(5 * 6.88 * 0.7)
    assert sp.cost_usd == pytest.approx(168 * 5 * 6.88 * 0.7)
    assert sp.unused_commitment_usd == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_spiky_demand_commits_to_the_base(method):
    spiky = np.full(168, 3.0)
    spiky[[10, 40, 70, 100, 130]] = 10.0  # 5 spike hours of 168: far below any break-even
    rp = plan_reserved(spiky, 6.88, 0.65 * 6.88, method)
    assert rp.devices == 3
    assert rp.cost_usd == pytest.approx(3 * 0.65 * 6.88 * 168 + 5 * 7 * 6.88)
    sp = plan_savings_plan(spiky, 6.88, 0.3, method)
    assert sp.commitment_usd_per_hour == pytest.approx(3 * 6.88 * 0.7)


@pytest.mark.parametrize("method", METHODS)
def test_no_commitment_when_it_cannot_pay(method):
    demand = [1.0, 4.0, 2.5]
    rp = plan_reserved(demand, 5.0, 5.0, method)  # break-even 100 %: never worth it (ties go to fewer)
    assert rp.devices == 0 and rp.cost_usd == pytest.approx(rp.on_demand_cost_usd)
    assert rp.mean_utilization is None
    sp = plan_savings_plan(demand, 5.0, 0.0, method)
    assert sp.commitment_usd_per_hour == 0.0 and sp.saving_usd == pytest.approx(0.0)
    zero = plan_reserved(np.zeros(24), 5.0, 3.0, method)
    assert zero.devices == 0 and zero.cost_usd == 0.0


# --- exact = scipy = brute force --------------------------------------------------------------

def random_cases(n=150, seed=7):
    rng = np.random.default_rng(seed)
    for i in range(n):
        hours = int(rng.integers(1, 400))
        demand = rng.gamma(1.5, 4.0, hours) * (1 + np.sin(np.arange(hours) * 2 * np.pi / 24))
        if i % 2:
            demand = np.round(demand)  # whole devices: flat stretches of the cost, ties
        on_demand = float(rng.uniform(0.3, 12.0))
        # every fourth case puts b H on a whole number, where the optimum is a flat segment
        share = round(float(rng.uniform(0.05, 0.95)) * hours) / hours if i % 4 == 1 else float(rng.uniform(0.05, 1.1))
        yield demand, on_demand, share


def test_reserved_exact_equals_scipy_and_integer_scan():
    for demand, od, share in random_cases():
        exact, scipy = plan_reserved(demand, od, share * od, "exact"), plan_reserved(demand, od, share * od, "scipy")
        scan = reserved_cost_usd(demand, np.arange(int(np.ceil(demand.max())) + 1), od, share * od)
        assert rel_close(exact.cost_usd, scipy.cost_usd), (exact, scipy)
        assert rel_close(exact.cost_usd, float(scan.min())), (exact, scan.min())
        # the marginal condition: every reserved device is used more than b of the hours, the next one is not
        u = np.clip(demand - exact.devices, 0.0, 1.0).mean()
        assert u <= exact.break_even_utilization + 1e-12
        if exact.devices:
            assert exact.device_utilization.min() >= exact.break_even_utilization - 1e-12


def test_savings_plan_exact_equals_scipy_and_breakpoints():
    rng = np.random.default_rng(3)
    for demand, od, _ in random_cases(n=100):
        d = float(rng.uniform(0.0, 0.8))
        exact, scipy = plan_savings_plan(demand, od, d, "exact"), plan_savings_plan(demand, od, d, "scipy")
        breakpoints = np.append((1 - d) * demand * od, 0.0)
        brute = min(savings_plan_cost_usd(demand, od, d, c)[0] for c in breakpoints)
        assert rel_close(exact.cost_usd, scipy.cost_usd), (exact, scipy)
        assert rel_close(exact.cost_usd, brute)
        assert exact.cost_usd <= exact.on_demand_cost_usd * (1 + 1e-12)


def test_savings_plan_cost_matches_the_pricing_modules_bill():
    """A flat fleet for 5 hours: the plan's cost function and `pricing.bill_usd` (the number the
    ledger's bill must add up to) agree for commitments below, at and above the usage."""
    dep = plan_deployment(scenario(hardware={"device": "h100-sxm", "tensor_parallel": 2}))
    replicas, od = 3, dep.price_usd_per_hour / dep.num_devices
    demand = np.full(5, replicas * dep.num_devices)
    for commit in (0.0, 10.0, 0.7 * replicas * dep.price_usd_per_hour, 60.0):
        cfg = PricingConfig(model="savings_plan", commitment_usd_per_hour=commit, discount=0.3)
        assert rel_close(savings_plan_cost_usd(demand, od, 0.3, commit)[0],
                         bill_usd(cfg, dep, replicas, 5 * 3600.0, None))


# --- from a run -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run():
    scn = scenario(duration_s=90.0, hardware={"device": "h100-sxm", "tensor_parallel": 2},
                   fleet={"replicas": 2, "router": "round_robin"})
    return Simulation(scn).run()


@pytest.mark.parametrize("period_s", [3600.0, 20.0])
def test_busy_demand_conserves_device_seconds(small_run, period_s):
    r = small_run
    demand = demand_curve(r, "busy", period_s)
    assert len(demand) == int(np.ceil(r.horizon_s / period_s))
    covered_s = np.clip(r.horizon_s - np.arange(len(demand)) * period_s, 0.0, period_s)
    busy_device_s = float(r.bill.replica_busy_s.sum()) * r.deployment.num_devices
    assert rel_close(float(demand @ covered_s) / 3600.0, busy_device_s / 3600.0)
    assert (demand <= 2 * 2 + 1e-9).all() and (demand > 0).any()


def test_provisioned_demand_is_the_whole_fleet(small_run):
    demand = demand_curve(small_run, period_s=30.0)
    np.testing.assert_array_equal(demand, np.full(len(demand), 4.0))


def test_tile_to_week_repeats_cyclically():
    week = tile_to_week([1.0, 2.0, 3.0])
    assert len(week) == 168 and list(week[:7]) == [1, 2, 3, 1, 2, 3, 1] and week[-1] == 3.0  # 168 = 3 x 56
    assert len(tile_to_week(np.ones(200))) == 200  # longer curves are kept whole


def test_plan_from_run_defaults_and_report(small_run):
    plan = plan_from_run(small_run)
    od = small_run.deployment.price_usd_per_hour / small_run.deployment.num_devices
    assert len(plan.demand) == 168 and plan.reserved.devices == 4  # a static fleet: commit to all of it
    assert plan.reserved.reserved_usd_per_device_hour == pytest.approx(od * (1 - DEFAULT_RESERVED_DISCOUNT))
    assert plan.savings_plan.discount == DEFAULT_SAVINGS_PLAN_DISCOUNT
    assert plan.reserved.saving_fraction == pytest.approx(DEFAULT_RESERVED_DISCOUNT)
    assert plan.best == "reserved"
    text = format_plan(plan)
    for part in ("on-demand", "savings plan", "4 devices", "break-even", "assumption", "cheapest: reserved"):
        assert part in text
    busy = plan_from_run(small_run, reserved_usd_per_device_hour=0.5 * od, discount=0.2, basis="busy", week=False)
    assert busy.basis == "busy" and len(busy.demand) == 1 and busy.assumptions == []
    assert busy.reserved.break_even_utilization == pytest.approx(0.5)


def test_plan_from_run_takes_the_scenarios_commitment_prices(small_run):
    reserved = {"model": "reserved", "upfront_usd_per_device": 8760.0, "recurring_usd_per_device_hour": 1.0,
                "term_years": 1}
    scn = replace(small_run.scenario, fleet=replace(small_run.scenario.fleet, pricing=PricingConfig(**reserved)))
    plan = plan_from_run(replace(small_run, scenario=scn))
    assert plan.reserved.reserved_usd_per_device_hour == pytest.approx(2.0)
    assert plan.reserved.reserved_usd_per_device_hour == reserved_effective_usd_per_hour(scn.fleet.pricing)
    sp = PricingConfig(model="savings_plan", commitment_usd_per_hour=5.0, discount=0.42)
    scn = replace(small_run.scenario, fleet=replace(small_run.scenario.fleet, pricing=sp))
    assert plan_from_run(replace(small_run, scenario=scn)).savings_plan.discount == 0.42


def test_bad_input_names_the_key(small_run):
    dep = small_run.deployment
    mixed = SimpleNamespace(pools=[Pool("prefill", dep, 1), Pool("decode", replace(dep, price_usd_per_hour=1.0), 1)])
    cases = [(lambda: plan_from_run(mixed), "fleet.disaggregation.decode_hardware"),
             (lambda: demand_curve(small_run, "idle"), "basis"),
             (lambda: plan_reserved([1, -2], 5.0, 3.0), "demand"),
             (lambda: plan_reserved([], 5.0, 3.0), "demand"),
             (lambda: plan_reserved([1, 2], 0.0, 3.0), "on_demand_usd_per_device_hour"),
             (lambda: plan_savings_plan([1, 2], 5.0, 1.0), "discount"),
             (lambda: plan_reserved([1, 2], 5.0, 3.0, "newton"), "method")]
    for call, where in cases:
        with pytest.raises(InputError) as exc:
            call()
        assert exc.value.where == where
