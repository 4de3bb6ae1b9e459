"""Row parsers for JSON-Lines traces (Mooncake FAST'25) and generic CSV/JSONL files with a column
mapping. Each returns the arrays of a `simcost.workload.traces.Trace` as a dict (kept apart from traces.py
so neither module grows past a screenful of concerns). Every bad row raises `InputError` with
`file:line`; nothing is skipped.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from itertools import chain

import numpy as np

from simcost.errors import InputError
from simcost.scenario.limits import MAX_TOKENS_PER_REQUEST
from simcost.scenario.workload import TraceColumns

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
MOONCAKE_BLOCK_TOKENS = 512
_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_mooncake(where: str, lines: list[str]) -> dict:
    """Mooncake JSONL: timestamp (ms, integer), input_length, output_length, hash_ids (one id per
    512-token block; len(hash_ids) == ceil(input_length / 512) is required)."""
    records = _json_records(where, lines)
    _require_keys(where, records, MOONCAKE_FIELDS, first_line=1)
    column = lambda key: [r[key] for r in records]  # noqa: E731
    ms = whole_numbers(where, column("timestamp"), "timestamp", first_line=1, minimum=0)
    input_tokens = whole_numbers(where, column("input_length"), "input_length", first_line=1, minimum=1,
                                 maximum=MAX_TOKENS_PER_REQUEST)
    output_tokens = whole_numbers(where, column("output_length"), "output_length", first_line=1, minimum=1,
                                  maximum=MAX_TOKENS_PER_REQUEST)
    block_ids, block_offsets = _hash_ids(where, column("hash_ids"), input_tokens)
    _check_order(where, ms, column("timestamp"), "timestamp", first_line=1)
    return dict(arrival_s=(ms - ms[0]) / 1000.0, input_tokens=input_tokens, output_tokens=output_tokens,
                block_ids=block_ids, block_offsets=block_offsets, block_tokens=MOONCAKE_BLOCK_TOKENS)


def parse_table(where: str, lines: list[str], columns: TraceColumns) -> dict:
    """A CSV with a header row, or JSONL objects (first non-blank character `{`), read through
    `columns`. Arrival times in `columns.arrival_unit`, made relative to the first row."""
    if not any(line.strip() for line in lines):
        raise InputError(f"{where}:1", "empty file; expected request rows")
    if lines[0].lstrip().startswith("["):
        raise InputError(f"{where}:1", "a JSON array; expected JSON Lines, one request object per line")
    jsonl = lines[0].lstrip().startswith("{")
    records, first_line = (_json_records(where, lines), 1) if jsonl else (_csv_records(where, lines), 2)
    keys = [k for k in (columns.arrival, columns.input_tokens, columns.output_tokens,
                        columns.session, columns.tenant) if k is not None]
    _require_keys(where, records, keys, first_line)
    column = lambda key: [r[key] for r in records]  # noqa: E731
    raw_times = column(columns.arrival)
    times = _numbers(where, raw_times, columns.arrival, first_line)
    _check_order(where, times, raw_times, columns.arrival, first_line)
    out = dict(arrival_s=(times - times[0]) * _SECONDS_PER_UNIT[columns.arrival_unit],
               input_tokens=whole_numbers(where, column(columns.input_tokens), columns.input_tokens, first_line, 1,
                                          not jsonl, MAX_TOKENS_PER_REQUEST),
               output_tokens=whole_numbers(where, column(columns.output_tokens), columns.output_tokens, first_line, 1,
                                           not jsonl, MAX_TOKENS_PER_REQUEST))
    for name, key in (("session_ids", columns.session), ("tenants", columns.tenant)):
        if key is not None:
            out[name] = np.array([str(v) for v in column(key)], dtype=object)
    return out


# --- records --------------------------------------------------------------------------------

def _json_records(where: str, lines: list[str]) -> list[dict]:
    if not lines:
        raise InputError(f"{where}:1", "empty file; expected one JSON object per line")
    records = []
    # one decoder for every line: json.loads(line, object_pairs_hook=...) builds one per call
    # (a third of the time on a 12k-line trace); json.loads alone refuses a leading BOM
    decode = json.JSONDecoder(object_pairs_hook=_unique_keys).decode
    for i, line in enumerate(lines):
        if not line.strip():
            raise InputError(f"{where}:{i + 1}", "blank line; expected a JSON object")
        try:
            record = decode(line) if line[0] != "\ufeff" else json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}:{i + 1}", f"not valid JSON ({exc.msg})") from None
        except _DuplicateKey as exc:
            raise InputError(f"{where}:{i + 1}", f"duplicate field {exc.args[0]!r}; which value is meant?") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}:{i + 1}", f"expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object hook: refuse a key given twice rather than silently keep the last value."""
    record = dict(pairs)
    if len(record) != len(pairs):
        counts = Counter(key for key, _ in pairs)
        raise _DuplicateKey(next(key for key, n in counts.items() if n > 1))
    return record


def _csv_records(where: str, lines: list[str]) -> list[dict]:
    # One csv.reader per line: quoting is honoured, but a stray quote cannot swallow later lines.
    header = [h.strip() for h in next(csv.reader([lines[0]]))]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputError(f"{where}:1", f"column {', '.join(repeated)} appears more than once in the header")
    if len(lines) < 2:
        raise InputError(f"{where}:2", "header only, no request rows")
    records = []
    for i, line in enumerate(lines[1:]):
        cells = next(csv.reader([line]), [])
        if len(cells) != len(header):
            problem = "blank line" if not line.strip() else f"{len(cells)} fields, expected {len(header)} as in the header"
            raise InputError(f"{where}:{i + 2}", problem)
        records.append(dict(zip(header, cells)))
    return records


def _require_keys(where: str, records: list[dict], keys, first_line: int) -> None:
    for i, record in enumerate(records):
        missing = [k for k in keys if k not in record]
        if missing:
            line = 1 if first_line == 2 else i + first_line  # a CSV lacks the column in its header
            raise InputError(f"{where}:{line}", f"missing {'column' if first_line == 2 else 'field'} "
                                                f"{', '.join(missing)} (found: {', '.join(map(str, record))})")


# --- values ---------------------------------------------------------------------------------

def _is_whole(value, text_ok: bool) -> bool:
    if text_ok and isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return False
        return True
    return type(value) is int


def whole_numbers(where: str, values: list, name: str, first_line: int, minimum: int,
                  text_ok: bool = False, maximum: int | None = None) -> np.ndarray:
    """int64 array of JSON integers (or integer text, for CSV cells: text_ok); floats such as 3.5
    (or 3.0) are refused rather than truncated."""
    # every value a JSON integer (a trace's usual case): checked and converted in C, not per value
    plain_ints = set(map(type, values)) == {int}
    if not plain_ints and not all(_is_whole(v, text_ok) for v in values):
        i = next(i for i, v in enumerate(values) if not _is_whole(v, text_ok))
        raise InputError(f"{where}:{i + first_line}", f"{name} {values[i]!r} is not a whole number")
    try:
        array = np.array(values if plain_ints else [int(v) for v in values], dtype=np.int64)
    except OverflowError:
        raise InputError(where, f"{name}: a value does not fit in 64 bits") from None
    too_big = np.flatnonzero(array > maximum) if maximum is not None else np.empty(0, dtype=np.int64)
    if too_big.size:
        i = int(too_big[0])
        raise InputError(f"{where}:{i + first_line}", f"{name} is {array[i]:,}; expected at most {maximum:,}")
    bad = np.flatnonzero(array < minimum)
    if bad.size:
        i = int(bad[0])
        kind = "negative" if array[i] < 0 else "below the minimum"
        raise InputError(f"{where}:{i + first_line}", f"{name} is {array[i]} ({kind}); expected >= {minimum}")
    return array


def _numbers(where: str, values: list, name: str, first_line: int) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            if isinstance(v, bool):
                raise ValueError
            out[i] = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{where}:{i + first_line}", f"{name} {v!r} is not a number") from None
        if not math.isfinite(out[i]):
            raise InputError(f"{where}:{i + first_line}", f"{name} {v!r} is not finite")
    return out


def _check_order(where: str, times: np.ndarray, raw: list, name: str, first_line: int) -> None:
    backwards = np.flatnonzero(np.diff(times) < 0)
    if backwards.size:
        i = int(backwards[0]) + 1
        raise InputError(f"{where}:{i + first_line}", f"{name} {raw[i]!r} is before the previous row's "
                                                      f"{raw[i - 1]!r}; rows must be in time order")


def _hash_ids(where: str, lists: list, input_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-row hash_ids into (ids, offsets), checking one id per 512-token block."""
    rows_ok = all(type(ids) is list for ids in lists)
    flat = list(chain.from_iterable(lists)) if rows_ok else []
    if not rows_ok or set(map(type, flat)) - {int} or (flat and min(flat) < 0):
        for i, ids in enumerate(lists):  # find the row to name (the check above runs in C)
            if not isinstance(ids, list) or not all(type(h) is int and h >= 0 for h in ids):
                raise InputError(f"{where}:{i + 1}",
                                 f"hash_ids {str(ids)[:40]} is not a list of non-negative integers")
    lengths = np.array([len(ids) for ids in lists], dtype=np.int64)
    expected = -(-input_tokens // MOONCAKE_BLOCK_TOKENS)
    wrong = np.flatnonzero(lengths != expected)
    if wrong.size:
        i = int(wrong[0])
        raise InputError(f"{where}:{i + 1}", f"{lengths[i]} hash_ids for input_length {input_tokens[i]}; expected "
                                             f"ceil({input_tokens[i]}/{MOONCAKE_BLOCK_TOKENS}) = {expected[i]}")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.fromiter(flat, dtype=np.int64, count=int(offsets[-1]))
    return ids, offsets
