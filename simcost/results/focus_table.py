"""FOCUS rows held as columns (simcost.results.focus): one numpy array per column over all rows,
not a dict per row. A long autoscaled run has a row per replica-hour (10^5 and more): a dict each
took most of a year run's memory and seconds to build. Float columns are float64 with a null mask;
the others object arrays of str or None. focus.csv and focus.parquet are written from the columns,
byte for byte what writing the same rows one dict at a time gave."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CSV_CHUNK_ROWS = 1 << 16  # rows turned into text at a time: the text of every row never exists at once


@dataclass(frozen=True)
class FocusTable:
    names: tuple[str, ...]
    values: dict[str, np.ndarray]  # name -> float64 (names in floats) or object array
    nulls: dict[str, np.ndarray]  # float columns: True where the cell is null
    floats: frozenset[str]

    @classmethod
    def empty(cls, names: tuple[str, ...], floats: Iterable[str]) -> FocusTable:
        floats = frozenset(floats)
        return cls(names, {n: np.zeros(0) if n in floats else np.empty(0, dtype=object) for n in names},
                   {n: np.zeros(0, dtype=bool) for n in floats}, floats)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping], names: tuple[str, ...], floats: Iterable[str]) -> FocusTable:
        """Rows of dicts holding every name (None where null) as a table."""
        floats = frozenset(floats)
        values, nulls = {}, {}
        for n in names:
            column = [row[n] for row in rows]
            if n in floats:
                nulls[n] = np.array([v is None for v in column], dtype=bool)
                values[n] = np.array([0.0 if v is None else v for v in column], dtype=np.float64)
            else:
                values[n] = _objects(column)
        return cls(names, values, nulls, floats)

    def __len__(self) -> int:
        return len(self.values[self.names[0]]) if self.names else 0

    def concat(self, *others: FocusTable) -> FocusTable:
        parts = (self, *others)
        return FocusTable(self.names, {n: np.concatenate([p.values[n] for p in parts]) for n in self.names},
                          {n: np.concatenate([p.nulls[n] for p in parts]) for n in self.floats}, self.floats)

    def column(self, name: str, lo: int = 0, hi: int | None = None) -> list:
        """A column's cells (rows lo..hi) as Python values: float, str or None."""
        cells = self.values[name][lo:hi].tolist()
        if name in self.floats:
            for i in np.flatnonzero(self.nulls[name][lo:hi]).tolist():
                cells[i] = None
        return cells

    def rows(self) -> list[dict]:
        """One dict per row (for callers that want rows; the writers use the columns)."""
        columns = [self.column(n) for n in self.names]
        return [dict(zip(self.names, cells)) for cells in zip(*columns)]

    def write_csv(self, path: Path) -> None:
        """Header, then the rows: floats as repr, nulls as empty cells."""
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.names)
            for lo in range(0, len(self), CSV_CHUNK_ROWS):
                hi = lo + CSV_CHUNK_ROWS
                columns = [self._text(n, lo, hi) for n in self.names]
                writer.writerows(zip(*columns))

    def _text(self, name: str, lo: int, hi: int) -> list:
        if name not in self.floats:
            return self.values[name][lo:hi].tolist()
        cells: list[str | None] = list(map(repr, self.values[name][lo:hi].tolist()))
        for i in np.flatnonzero(self.nulls[name][lo:hi]).tolist():
            cells[i] = None
        return cells

    def arrow_table(self, dates: Iterable[str]):
        """A pyarrow table: floats as float64, dates as UTC timestamps (ms), the rest as strings."""
        import pyarrow as pa

        columns = {}
        for n in self.names:
            if n in self.floats:
                columns[n] = pa.array(self.values[n], mask=self.nulls[n], type=pa.float64())
            else:
                columns[n] = pa.array(self.values[n], type=pa.string())
        for n in dates:  # each distinct date parsed once
            text, at = np.unique(self.values[n].astype(str), return_inverse=True)
            ms = np.array([_epoch_ms(t) for t in text.tolist()], dtype=np.int64)
            columns[n] = pa.array(ms[at.reshape(-1)], type=pa.timestamp("ms", tz="UTC"))
        return pa.table(columns)


def _epoch_ms(text: str) -> int:
    return (datetime.fromisoformat(text.replace("Z", "+00:00")) - EPOCH) // timedelta(milliseconds=1)


def _objects(cells: list) -> np.ndarray:
    out = np.empty(len(cells), dtype=object)
    out[:] = cells
    return out
