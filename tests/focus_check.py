"""Checks any FOCUS export must pass (test_focus and every golden case): the FOCUS 1.1 rules of
simcost.results.focus_spec on the file as written, and the bill conserved."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from simcost.results.focus_spec import COST_COLUMNS, focus_problems

NUMERIC = (*COST_COLUMNS, "PricingQuantity", "ListUnitPrice", "ContractedUnitPrice", "CommitmentDiscountQuantity")


def read_focus_csv(path: Path) -> tuple[list[str], list[dict]]:
    """The header and the rows, empty cells as None and numbers as floats."""
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: (None if v == "" else float(v) if k in NUMERIC else v) for k, v in row.items()} for row in reader]
        return list(reader.fieldnames or []), rows


def check_focus_file(path: Path, total_usd: float, upfront_minus_amortised_usd: float = 0.0) -> list[dict]:
    """Conformant, costs consistent, and EffectiveCost summing to `total_usd` (the run's bill);
    BilledCost too, but for a reservation's upfront fee billed whole (`upfront_minus_amortised_usd`)."""
    columns, rows = read_focus_csv(path)
    assert focus_problems(rows, columns) == []
    for row in rows:
        assert all(row[c] >= 0 for c in COST_COLUMNS)
        if row["ContractedUnitPrice"] is not None:  # FOCUS 1.1: ContractedCost = ContractedUnitPrice x PricingQuantity
            assert math.isclose(row["ContractedCost"], row["ContractedUnitPrice"] * row["PricingQuantity"], rel_tol=1e-9)
        if row["PricingCategory"] != "Other":  # owned hardware has no list price; its ListCost is a comparison
            assert row["ListCost"] >= row["ContractedCost"] * (1 - 1e-12)
        if row["CommitmentDiscountStatus"] == "Used":
            assert row["BilledCost"] == 0 and row["EffectiveCost"] <= row["ContractedCost"] * (1 + 1e-12)
    assert math.fsum(r["EffectiveCost"] for r in rows) == _approx(total_usd)
    assert math.fsum(r["BilledCost"] for r in rows) == _approx(total_usd + upfront_minus_amortised_usd)
    return rows


def _approx(x: float):
    import pytest

    return pytest.approx(x, rel=1e-9, abs=1e-9)
