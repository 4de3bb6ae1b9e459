"""Owned hardware's full cost of ownership (fleet.pricing owned + colo, staff, maintenance, cost
of capital, resale) over 1- and 3-year terms, against hand computations."""

from __future__ import annotations

import pytest
from scenarios import scenario

from simcost.cost.pricing import owned_lifetime_usd_per_device
from simcost.errors import InputError
from simcost.scenario.pricing import PricingConfig
from simcost.simulation.simulation import Simulation

OWNED = {"model": "owned", "capex_usd_per_device": 30_000.0, "usd_per_kwh": 0.1}


def test_plain_capex_is_unchanged_without_the_ownership_keys():
    assert owned_lifetime_usd_per_device(PricingConfig(**OWNED)) == 30_000.0


@pytest.mark.parametrize(("years", "expected_annual"), [
    # 3 years at 8 %: (30000 - 9000 / 1.08^3) x 0.08 / (1 - 1.08^-3) = 8867.673..., then
    # + 5 % maintenance (1500) + 12 x (150 colo + 100 staff) (3000)
    (3, (30_000 - 9_000 / 1.08 ** 3) * 0.08 / (1 - 1.08 ** -3) + 1_500 + 3_000),
    # 1 year: (30000 - 9000 / 1.08) x 0.08 / (1 - 1 / 1.08) = 30000 x 1.08 - 9000 = 23400, + 4500
    (1, 23_400 + 4_500),
])
def test_equivalent_annual_cost_by_hand(years, expected_annual):
    cfg = PricingConfig(**OWNED, lifetime_years=years, cost_of_capital=0.08, resale_fraction=0.3,
                        maintenance_fraction_per_year=0.05, colo_usd_per_device_month=150.0,
                        staff_usd_per_device_month=100.0)
    assert owned_lifetime_usd_per_device(cfg) / years == pytest.approx(expected_annual, rel=1e-12)


def test_the_bill_charges_the_full_ownership_cost():
    tco = {**OWNED, "lifetime_years": 3, "resale_fraction": 0.2, "colo_usd_per_device_month": 200.0}
    r = Simulation(scenario(duration_s=60.0, fleet={"replicas": 2, "pricing": tco})).run()
    # zero cost of capital: (30000 - 6000) / 3 + 12 x 200 = 10400 a year per device, over 8760 h
    usd_per_device_hour = ((30_000 - 6_000) / 3 + 2_400) / 8_760
    expected = 2 * r.horizon_s / 3600 * usd_per_device_hour + r.bill.energy.total_kwh * 0.1
    assert r.bill.total_usd == pytest.approx(expected, rel=1e-9)
    assert r.bill.request_usd.sum() + r.bill.unallocated_usd == pytest.approx(r.bill.total_usd, rel=1e-9)


def test_ownership_keys_belong_to_owned_pricing_only():
    with pytest.raises(InputError) as e:
        scenario(fleet={"pricing": {"model": "on_demand", "resale_fraction": 0.3}})
    assert "fleet.pricing.resale_fraction" in str(e.value)
