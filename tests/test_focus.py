"""FOCUS export: FOCUS 1.1's mandatory columns and allowed values on every row, commitments as
Purchase rows and CommitmentDiscount columns, and every dollar of the bill in it."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from focus_check import check_focus_file, read_focus_csv
from scenarios import scenario

from simcost.results.focus import COLUMNS, focus_rows, write_focus
from simcost.results.focus_spec import MANDATORY, focus_problems
from simcost.simulation.simulation import run
from simcost.units import HOURS_PER_YEAR, S_PER_HOUR

SP_UNUSED = {"model": "savings_plan", "commitment_usd_per_hour": 50.0, "discount": 0.3}  # 2 H100s use ~7 $/h
SP_SHORT = {"model": "savings_plan", "commitment_usd_per_hour": 3.0, "discount": 0.3}  # covers part of the usage
RESERVED = {"model": "reserved", "upfront_usd_per_device": 10000.0, "recurring_usd_per_device_hour": 1.0,
            "term_years": 1.0}
PRICING = {"on_demand": {}, "savings_plan_unused": SP_UNUSED, "savings_plan_short": SP_SHORT, "reserved": RESERVED,
           "spot": {"model": "spot", "spot_usd_per_device_hour": 1.2},
           "owned": {"model": "owned", "capex_usd_per_device": 25000.0, "usd_per_kwh": 0.12}}


@pytest.fixture(scope="module", params=list(PRICING))
def result(request):
    # two clock hours at a low rate: hourly rows, partial last hour
    return run(scenario(duration_s=4000.0, workload={
        "arrivals": {"process": "poisson", "rate_per_s": 0.3},
        "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 200}}, fleet={"replicas": 2, "pricing": PRICING[request.param]}))


def upfront_minus_amortised(result) -> float:
    cfg = result.scenario.fleet.pricing
    if cfg.model != "reserved":
        return 0.0
    devices = 2 * result.deployment.num_devices
    return devices * cfg.upfront_usd_per_device * (1 - result.horizon_s / S_PER_HOUR / (HOURS_PER_YEAR * cfg.term_years))


def test_the_written_file_conforms_to_focus_1_1_and_holds_the_bill(result, tmp_path):
    write_focus(focus_rows(result), tmp_path / "focus.csv")
    rows = check_focus_file(tmp_path / "focus.csv", result.summary["cost"]["total_usd"], upfront_minus_amortised(result))
    assert {r["ResourceId"] for r in rows if r["ResourceType"] and "x" in r["ResourceType"]} == {"test/replica-0", "test/replica-1"}
    assert {r["ChargePeriodStart"][:13] for r in rows} == {"2025-01-01T00", "2025-01-01T01"}
    model = result.scenario.fleet.pricing.model
    if model in ("on_demand", "spot", "owned"):  # FOCUS PricingCategory of each model's replica-hours
        assert {r["PricingCategory"] for r in rows} == {{"on_demand": "Standard", "spot": "Dynamic", "owned": "Other"}[model]}
    assert all(r["BillingPeriodStart"] == "2025-01-01T00:00:00.000Z" and r["BillingPeriodEnd"] == "2025-02-01T00:00:00.000Z"
               for r in rows)


def test_savings_plan_hours_split_into_the_fee_what_used_it_and_what_was_lost(result):
    cfg = result.scenario.fleet.pricing
    if cfg.model != "savings_plan":
        pytest.skip("savings plans only")
    rows = focus_rows(result)
    fee, used, unused, on_demand = (defaultdict(float) for _ in range(4))
    for r in rows:
        h = r["ChargePeriodStart"]
        if r["ChargeCategory"] == "Purchase":
            assert (r["ChargeFrequency"], r["CommitmentDiscountType"], r["EffectiveCost"]) == ("Recurring", "Savings Plan", 0.0)
            fee[h] += r["BilledCost"]
        elif r["CommitmentDiscountStatus"] == "Used":
            used[h] += r["EffectiveCost"]
        elif r["CommitmentDiscountStatus"] == "Unused":
            unused[h] += r["EffectiveCost"]
        else:
            on_demand[h] += r["BilledCost"]
            assert r["EffectiveCost"] == r["BilledCost"] == r["ContractedCost"]
    hours = sorted(fee)
    assert len(hours) == 2
    for h, covered_s in zip(hours, (S_PER_HOUR, result.horizon_s - S_PER_HOUR)):
        assert fee[h] == pytest.approx(cfg.commitment_usd_per_hour * covered_s / S_PER_HOUR, rel=1e-12)
        # the commitment is either drawn on or lost, hour by hour
        assert used[h] + unused[h] == pytest.approx(fee[h], rel=1e-9)
        # usage above the commitment: on demand; below it: part of the commitment unused, none on demand
        assert (on_demand[h] > 0) == (unused[h] == 0)
    if cfg.commitment_usd_per_hour == SP_UNUSED["commitment_usd_per_hour"]:
        assert sum(on_demand.values()) == 0 and sum(unused.values()) > sum(used.values())
    else:
        assert sum(unused.values()) == 0 and sum(on_demand.values()) > 0


def test_a_reservation_bills_its_upfront_once_and_amortises_it_over_the_usage(result):
    cfg = result.scenario.fleet.pricing
    if cfg.model != "reserved":
        pytest.skip("reservations only")
    rows = focus_rows(result)
    devices = 2 * result.deployment.num_devices
    once = [r for r in rows if r["ChargeFrequency"] == "One-Time"]
    assert len(once) == 1 and once[0]["ChargeCategory"] == "Purchase"
    assert once[0]["BilledCost"] == devices * cfg.upfront_usd_per_device and once[0]["EffectiveCost"] == 0
    recurring = [r for r in rows if r["ChargeCategory"] == "Purchase" and r["ChargeFrequency"] == "Recurring"]
    hours = result.horizon_s / S_PER_HOUR
    assert math.fsum(r["BilledCost"] for r in recurring) == pytest.approx(devices * cfg.recurring_usd_per_device_hour * hours)
    usage = [r for r in rows if r["ChargeCategory"] == "Usage"]
    assert all(r["CommitmentDiscountStatus"] == "Used" and r["BilledCost"] == 0 for r in usage)
    rate = cfg.upfront_usd_per_device / (HOURS_PER_YEAR * cfg.term_years) + cfg.recurring_usd_per_device_hour
    assert math.fsum(r["EffectiveCost"] for r in usage) == pytest.approx(devices * rate * hours, rel=1e-9)


def test_the_checker_finds_what_breaks_the_specification(result):
    rows = focus_rows(result)
    assert focus_problems(rows, COLUMNS) == []
    broken = [dict(rows[0], ChargeCategory="Refund", ChargePeriodStart="2025-01-01 00:00", ServiceCategory="GPUs",
                   Tags='{"scenario": "x"}', ChargeClass="Fix")]
    problems = focus_problems(broken, [c for c in COLUMNS if c != "PricingUnit"] + ["Model"])
    for needle in ("missing mandatory column PricingUnit", "column Model is neither", "ChargeCategory='Refund'",
                   "ChargePeriodStart='2025-01-01 00:00' is not ISO", "ServiceCategory='GPUs'", "tag 'scenario'",
                   "ChargeClass='Fix'"):
        assert any(needle in p for p in problems), needle
    assert any("is null" in p for p in focus_problems([dict(rows[0], BillingAccountId=None)], COLUMNS))
    assert set(MANDATORY) <= set(COLUMNS) and len(MANDATORY) == 21


def test_parquet_has_the_columns_typed(result, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    write_focus(focus_rows(result), tmp_path / "focus.csv")
    table = pq.read_table(tmp_path / "focus.parquet")
    assert table.column_names == list(COLUMNS) == read_focus_csv(tmp_path / "focus.csv")[0]
    assert str(table.schema.field("BilledCost").type) == "double"
    assert str(table.schema.field("BillingPeriodStart").type).startswith("timestamp")
    assert math.fsum(table.column("EffectiveCost").to_pylist()) == pytest.approx(result.bill.total_usd, rel=1e-9)


def test_on_demand_list_cost_equals_billed_cost():
    r = run(scenario(fleet={"pricing": {"min_charge_s": 600}}))  # a 60 s run billed 10 minutes
    rows = focus_rows(r)
    assert sum(x["ListCost"] for x in rows) == pytest.approx(sum(x["BilledCost"] for x in rows), rel=1e-12)
    assert sum(x["PricingQuantity"] for x in rows) == pytest.approx(600 / S_PER_HOUR)
    assert r.bill.minimum_usd > 0
