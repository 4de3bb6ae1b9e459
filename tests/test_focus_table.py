"""FOCUS rows held as columns (simcost.results.focus_table): written, they are the bytes that
writing the same rows one dict at a time gives (csv.DictWriter, pyarrow from lists), nulls and
floats included."""

from __future__ import annotations

import csv
from datetime import datetime

import numpy as np
import pytest

from simcost.results import focus_table
from simcost.results.focus_table import FocusTable

NAMES = ("ChargePeriodStart", "Cost", "Quantity", "Description")
FLOATS = ("Cost", "Quantity")


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cost = float(rng.random() * 10.0 ** int(rng.integers(-12, 12)))
        out.append({"ChargePeriodStart": f"2025-01-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z",
                    "Cost": cost if i % 5 else 0.0, "Quantity": None if i % 3 == 0 else cost / 7,
                    "Description": None if i % 4 == 0 else f'replica-{i}: "quoted", with commas'})
    return out


def dict_writer_bytes(data: list[dict], path) -> bytes:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=NAMES)
        writer.writeheader()
        for row in data:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return path.read_bytes()


@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_columns_write_the_bytes_rows_would(tmp_path, monkeypatch, n):
    monkeypatch.setattr(focus_table, "CSV_CHUNK_ROWS", 64)  # several blocks of rows
    data = rows(n)
    table = FocusTable.from_rows(data, NAMES, FLOATS)
    assert len(table) == n and table.rows() == data
    table.write_csv(tmp_path / "columns.csv")
    assert (tmp_path / "columns.csv").read_bytes() == dict_writer_bytes(data, tmp_path / "rows.csv")
    both = table.concat(FocusTable.from_rows(data[:3], NAMES, FLOATS))
    assert both.rows() == data + data[:3]


def test_parquet_from_columns_is_the_table_from_lists():
    pa = pytest.importorskip("pyarrow")
    data = rows(50)
    got = FocusTable.from_rows(data, NAMES, FLOATS).arrow_table(("ChargePeriodStart",))
    expected = {n: pa.array([r[n] for r in data], type=pa.float64() if n in FLOATS else pa.string()) for n in NAMES}
    expected["ChargePeriodStart"] = pa.array([datetime.fromisoformat(r["ChargePeriodStart"].replace("Z", "+00:00"))
                                              for r in data], type=pa.timestamp("ms", tz="UTC"))
    assert got.equals(pa.table(expected))
