"""FOCUS export: the required columns, with the right types, summing to the bill."""

from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest
from scenarios import scenario

from simcost.results.focus import COLUMNS, focus_rows, write_focus
from simcost.simulation.simulation import run

SP = {"model": "savings_plan", "commitment_usd_per_hour": 50.0, "discount": 0.3}  # mostly unused


@pytest.fixture(scope="module", params=["on_demand", "savings_plan"])
def result(request):
    pricing = SP if request.param == "savings_plan" else {}
    return run(scenario(fleet={"replicas": 2, "pricing": pricing}))


def test_rows_have_focus_columns_and_types(result):
    rows = focus_rows(result)
    assert rows and all(tuple(row) == COLUMNS or set(row) == set(COLUMNS) for row in rows)
    for row in rows:
        for name in ("BilledCost", "EffectiveCost", "ListCost"):
            assert isinstance(row[name], float) and row[name] >= 0
        start = datetime.fromisoformat(row["ChargePeriodStart"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(row["ChargePeriodEnd"].replace("Z", "+00:00"))
        assert start < end and (end - start).total_seconds() <= 3600
        assert row["ChargeCategory"] in ("Usage", "Purchase")
        assert row["PricingCategory"] in ("Standard", "Committed", "Dynamic", "Other")  # FOCUS 1.0+ allowed values
        assert row["BillingCurrency"] == "USD"
        assert isinstance(json.loads(row["Tags"]), dict)
    usage = [r for r in rows if r["ChargeCategory"] == "Usage"]
    assert {r["ResourceId"] for r in usage} == {"test/replica-0", "test/replica-1"}


def test_costs_sum_to_the_bill(result, tmp_path):
    rows = focus_rows(result)
    assert sum(r["EffectiveCost"] for r in rows) == pytest.approx(result.bill.total_usd, rel=1e-9)
    assert sum(r["BilledCost"] for r in rows) == pytest.approx(result.bill.total_usd, rel=1e-9)
    if result.bill.tariff.model == "savings_plan":
        assert any(r["ChargeCategory"] == "Purchase" for r in rows)
    paths = write_focus(rows, tmp_path / "focus.csv")
    with paths[0].open() as fh:
        read = list(csv.DictReader(fh))
    assert tuple(read[0]) == COLUMNS
    assert sum(float(r["EffectiveCost"]) for r in read) == pytest.approx(result.bill.total_usd, rel=1e-12)
    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(tmp_path / "focus.parquet")
    assert str(table.schema.field("BilledCost").type) == "double"
    assert str(table.schema.field("ChargePeriodStart").type).startswith("timestamp")
    assert sum(table.column("EffectiveCost").to_pylist()) == pytest.approx(result.bill.total_usd, rel=1e-9)


def test_on_demand_list_cost_equals_billed_cost():
    r = run(scenario(fleet={"pricing": {"min_charge_s": 600}}))  # a 60 s run billed 10 minutes
    rows = focus_rows(r)
    assert sum(x["ListCost"] for x in rows) == pytest.approx(sum(x["BilledCost"] for x in rows), rel=1e-12)
    assert r.bill.minimum_usd > 0
