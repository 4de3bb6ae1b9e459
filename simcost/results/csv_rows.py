"""requests.csv's rows as csv.writer writes them, faster: the cells of a block of rows as text
per column (floats by repr, NaN empty, as the csv module is given them), joined here unless a
cell needs quoting, which the csv module then does. Byte-equal to csv.writer's output
(tests/test_csv_rows.py compares the two)."""

from __future__ import annotations

import re

import numpy as np


def write_csv_rows(fh, writer, columns: list[np.ndarray]) -> None:
    """The rows of these columns as `writer` (a default csv.writer on fh) writes them: joined
    here when no cell needs quoting (the csv module's writerows took ~7 us a row of 26 cells,
    0.7 s at 100k requests; joining is ~6x faster), else by the csv module. SUB_ROWS rows at a
    time, so the Python strings of only that many rows exist at once."""
    n = len(columns[0]) if columns else 0
    for start in range(0, n, SUB_ROWS):
        part = [v[start:start + SUB_ROWS] for v in columns]
        texts = [_csv_texts(v) for v in part]
        if len(texts) < 2 or any(t is None for t in texts):  # (one column: csv quotes an empty row)
            writer.writerows(zip(*(_csv_column(v) for v in part)))  # quoted cells: the csv module's rules
        else:
            fh.write("".join(map(_CSV_ROW.format, map(",".join, zip(*texts)))))


SUB_ROWS = 8192
_CSV_ROW = "{}\r\n"  # csv.writer's default line terminator
_CSV_QUOTED = re.compile(r'[,"\r\n]')  # what csv.QUOTE_MINIMAL quotes a cell for (with "," and '"')


def _csv_texts(values: np.ndarray) -> list[str] | None:
    """One column's cells as csv.writer writes `_csv_column(values)` unquoted; None when a
    cell needs quoting. It writes None as an empty cell, a float (a subclass too) by repr and
    anything else by str."""
    kind = values.dtype.kind
    if kind == "f":
        return _csv_column(values)
    if kind in "iub":
        return list(map(str, values.tolist()))
    cells = ["" if x is None else repr(x) if isinstance(x, float) else str(x) for x in values.tolist()]
    return None if _CSV_QUOTED.search("".join(cells)) else cells


def _csv_column(values: np.ndarray) -> list:
    """One column as the csv module should write it: floats as repr() (shortest round-trip text),
    NaN as an empty cell. tolist() makes Python floats in one call, ~10x faster than float(v) per element."""
    if values.dtype.kind == "f":
        texts = list(map(repr, values.tolist()))
        for i in np.flatnonzero(np.isnan(values)).tolist():
            texts[i] = ""
        return texts
    return values.tolist()
