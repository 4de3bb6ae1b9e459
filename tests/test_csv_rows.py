"""requests.csv's rows written by joining the cells against csv.writer's writerows on the same
cells, byte for byte: floats (NaN, inf, tiny and huge), ints, bools, text with and without the
characters csv quotes, None and float objects in text columns, one column."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from simcost.results import csv_rows
from simcost.results.csv_rows import _csv_column, write_csv_rows


def by_csv_module(columns: list[np.ndarray]) -> str:
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(zip(*(_csv_column(v) for v in columns)))
    return buf.getvalue()


def by_write_csv_rows(columns: list[np.ndarray]) -> str:
    buf = io.StringIO(newline="")
    write_csv_rows(buf, csv.writer(buf), columns)
    return buf.getvalue()


@pytest.mark.parametrize("sub_rows", [8192, 3])
def test_joined_rows_are_what_the_csv_module_writes(sub_rows, monkeypatch):
    """(sub_rows 3: many sub-blocks, some joined and some by the csv module, in one call)"""
    monkeypatch.setattr(csv_rows, "SUB_ROWS", sub_rows)
    rng = np.random.default_rng(5)
    words = ["completed", "", "default", "a b", "tenant-1", "x,y", 'say "hi"', "two\nlines", "cr\r"]
    for _ in range(300):
        n = int(rng.integers(0, 30))
        floats = rng.choice([0.0, 1e-7, 3.5, 1e300, np.inf, -np.inf, np.nan, 0.1 + 0.2], n) * rng.uniform(0.5, 2, n)
        text = np.array([words[i] for i in rng.integers(0, len(words) - 4 if rng.random() < 0.5 else len(words), n)],
                        dtype=object)
        mixed = np.array([None if rng.random() < 0.3 else float(rng.uniform()) if rng.random() < 0.5 else "s"
                          for _ in range(n)], dtype=object)
        columns = [floats, rng.integers(-5, 10**12, n), rng.random(n) < 0.5, text, mixed,
                   rng.uniform(0, 1, n).astype(np.float32)]
        picked = [columns[i] for i in sorted(rng.choice(len(columns), int(rng.integers(1, len(columns) + 1)),
                                                        replace=False))]
        assert by_write_csv_rows(picked) == by_csv_module(picked)


def test_a_single_empty_column_is_quoted_as_the_csv_module_does():
    columns = [np.array(["", "a"], dtype=object)]
    assert by_write_csv_rows(columns) == by_csv_module(columns) == '""\r\na\r\n'
