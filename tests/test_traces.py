"""Bundled Azure traces reproduce the facts in simcost/data/traces/README.md; bad trace files fail
with `file:line` and the problem."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from simcost.config import scenario_from_dict
from simcost.errors import InputError
from simcost.rng import streams
from simcost.traces import BUNDLED, load_azure_trace, load_trace, trace_path
from simcost.workload import generate, workload_summary

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"

# name: (rows, span_s, input mean, median, max, output mean, median, max, mean rate req/s); README rounding.
FACTS = {
    "azure_conv": (19_366, 3502, 1155, 1020, 14_050, 211, 129, 1000, 5.53),
    "azure_code": (8_819, 3436, 2048, 1469, 7437, 27.9, 13, 1899, 2.57),
}


def trace_scenario(name, rate_multiplier=1.0, duration_s=None):
    raw = {"workload": {"trace": {"name": name, "rate_multiplier": rate_multiplier}},
           "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"}}
    if duration_s is not None:
        raw["duration_s"] = duration_s
    return scenario_from_dict(raw)


# --- the bundled traces ---------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FACTS))
def test_bundled_trace_matches_readme(name):
    rows, span_s, in_mean, in_median, in_max, out_mean, out_median, out_max, rate = FACTS[name]
    trace = load_trace(name)
    assert len(trace) == rows
    assert trace.arrival_s.dtype == np.float64 and trace.input_tokens.dtype == np.int64
    assert trace.arrival_s[0] == 0.0 and np.all(np.diff(trace.arrival_s) >= 0)
    assert round(trace.span_s) == span_s
    assert round(trace.input_tokens.mean()) == in_mean
    assert np.median(trace.input_tokens) == in_median and trace.input_tokens.max() == in_max
    digits = 1 if isinstance(out_mean, float) else 0
    assert round(trace.output_tokens.mean(), digits) == out_mean
    assert np.median(trace.output_tokens) == out_median and trace.output_tokens.max() == out_max
    assert trace.input_tokens.min() >= 1 and trace.output_tokens.min() >= 1  # "no zero-token rows"
    assert round(len(trace) / trace.span_s, 2) == rate


def test_conv_span_is_exact_to_100ns():
    # First row 2023-11-16 18:15:46.6805900, last 19:14:08.4025270 (README: 18:15:46.68 -> 19:14:08.40).
    trace = load_trace("azure_conv")
    ticks = round(trace.arrival_s[-1] * 1e7)
    assert ticks == ((19 - 18) * 3600 + (14 - 15) * 60 + (8 - 46)) * 10 ** 7 + 4025270 - 6805900
    assert abs(trace.arrival_s[1] - 4.3145790) < 1e-12  # 18:15:50.9951690 - 18:15:46.6805900


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_shipped_copies_are_byte_identical_to_shared(name):
    shared = SHARED_TRACES / BUNDLED[name]
    if not shared.exists():
        pytest.skip(f"{SHARED_TRACES} is absent (only present in the development checkout)")
    assert trace_path(name).read_bytes() == shared.read_bytes()


def test_shipped_copies_keep_upstream_bytes():
    # Verbatim means CRLF endings and no final newline, as upstream (guards against "fixing" them).
    for name in BUNDLED:
        data = trace_path(name).read_bytes()
        assert data.startswith(HEADER.encode() + b"\r\n") and not data.endswith(b"\n")
    assert (trace_path("azure_conv").parent / "LICENSE-CC-BY-4.0.txt").is_file()
    readme = (trace_path("azure_conv").parent / "README.md").read_text()
    assert "CC-BY-4.0" in readme and "Splitwise" in readme and "verbatim" in readme.lower()


def test_rate_multiplier_two_halves_the_span():
    base = generate(trace_scenario("azure_conv"), streams(0))
    fast = generate(trace_scenario("azure_conv", rate_multiplier=2.0), streams(0))
    assert len(fast) == len(base) == 19_366
    assert workload_summary(fast)["span_s"] == pytest.approx(workload_summary(base)["span_s"] / 2, rel=1e-12)
    np.testing.assert_array_equal(fast.input_tokens, base.input_tokens)


def test_duration_cuts_the_trace():
    trace = load_trace("azure_code")
    req = generate(trace_scenario("azure_code", rate_multiplier=2.0, duration_s=600.0), streams(0))
    assert len(req) == int(np.sum(trace.arrival_s / 2 < 600.0)) and req.arrival_s[-1] < 600.0
    np.testing.assert_array_equal(req.output_tokens, trace.output_tokens[:len(req)])
    req.arrival_s[0] = -1.0  # Requests own their arrays; the cached trace is untouched
    assert load_trace("azure_code").arrival_s[0] == 0.0


def test_loaded_traces_are_cached_and_read_only():
    assert load_trace("azure_conv").arrival_s is load_trace("azure_conv").arrival_s
    with pytest.raises(ValueError):
        load_trace("azure_conv").input_tokens[0] = 5


def test_unknown_trace_name_suggests_bundled():
    with pytest.raises(InputError) as err:
        trace_path("azure_cnv")
    assert err.value.where == "workload.trace.name" and "azure_conv" in str(err.value)


def test_trace_by_path(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(f"{HEADER}\n2024-01-01 00:00:00.0000000,5,6\n")
    assert trace_path(str(path)) == path
    assert load_trace(str(path)).source == str(path)


# --- parsing details ------------------------------------------------------------------------

ROWS = ["2023-11-16 23:59:59.9999999,10,1", "2023-11-17 00:00:00.0000000,20,2", "2023-11-17 00:00:01.5000000,30,3"]


@pytest.mark.parametrize("newline, final", [("\n", True), ("\n", False), ("\r\n", True), ("\r\n", False)])
def test_line_endings_and_final_newline(tmp_path, newline, final):
    path = tmp_path / "t.csv"
    path.write_bytes((newline.join([HEADER, *ROWS]) + (newline if final else "")).encode())
    trace = load_azure_trace(path)
    np.testing.assert_array_equal(np.round(trace.arrival_s * 1e7), [0, 1, 15_000_001])  # across midnight
    np.testing.assert_array_equal(trace.input_tokens, [10, 20, 30])
    np.testing.assert_array_equal(trace.output_tokens, [1, 2, 3])


def test_other_timestamp_widths_and_extra_columns(tmp_path):
    # Not the upstream layout (fewer fractional digits, an extra column): the row-wise parser.
    path = tmp_path / "t.csv"
    path.write_text("id,TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "a,2023-11-16 10:00:00,1,1\nb,2023-11-16 10:00:00.25,2,2\nc,2023-11-16T10:00:01.000000001,3,3\n")
    trace = load_azure_trace(path)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 0.25, 1.000000001])


def test_edited_file_is_reread(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(f"{HEADER}\n{ROWS[0]}\n")
    assert len(load_azure_trace(path)) == 1
    path.write_text(f"{HEADER}\n" + "\n".join(ROWS) + "\n")
    os.utime(path, ns=(1, 10 ** 18))  # a distinct mtime even on coarse-clock file systems
    assert len(load_azure_trace(path)) == 3


# --- bad trace files ------------------------------------------------------------------------

GOOD = "2023-11-16 18:15:46.6805900,374,44"
BAD = {
    "missing_column": ("TIMESTAMP,ContextTokens,Generated\n" + GOOD + "\n", 1, ["missing column GeneratedTokens", "Generated"]),
    "empty": ("", 1, ["empty file"]),
    "blank_header": ("\n\n", 1, ["empty file"]),
    "header_only": (HEADER + "\r\n", 2, ["header only"]),
    "negative_tokens": (f"{HEADER}\n{GOOD}\n2023-11-16 18:15:47.0000000,-5,10\n", 3, ["ContextTokens", "-5", "negative"]),
    "non_integer_tokens": (f"{HEADER}\n{GOOD}\n{GOOD}\n2023-11-16 18:15:47.0000000,12,3.5\n", 4, ["GeneratedTokens", "'3.5'", "whole number"]),
    "text_tokens": (f"{HEADER}\n2023-11-16 18:15:47.0000000,abc,3\n", 2, ["ContextTokens", "'abc'"]),
    "zero_output": (f"{HEADER}\n{GOOD}\n2023-11-16 18:15:47.0000000,12,0\n", 3, ["GeneratedTokens is 0", "at least 1 token"]),
    "zero_input": (f"{HEADER}\n2023-11-16 18:15:47.0000000,0,7\n", 2, ["ContextTokens is 0"]),
    "bad_timestamp": (f"{HEADER}\n{GOOD}\n16/11/2023 18:15:47,12,3\n", 3, ["TIMESTAMP", "16/11/2023", "YYYY-MM-DD"]),
    "bad_date": (f"{HEADER}\n{GOOD}\n2023-02-30 18:15:47.0000000,12,3\n", 3, ["TIMESTAMP", "2023-02-30"]),
    "bad_time": (f"{HEADER}\n{GOOD}\n2023-11-16 25:15:47.0000000,12,3\n", 3, ["out of range"]),
    "backwards": (f"{HEADER}\r\n{GOOD}\r\n2023-11-16 18:15:47.0000000,1,1\r\n2023-11-16 18:15:46.0000000,1,1", 4,
                  ["18:15:46.0000000", "before", "time order"]),
    "short_row": (f"{HEADER}\n{GOOD}\n2023-11-16 18:15:47.0000000,12\n", 3, ["2 fields, expected 3"]),
    "blank_line": (f"{HEADER}\n{GOOD}\n\n{GOOD}\n", 3, ["blank line"]),
    "blank_first_line": (f"\n{HEADER}\n{GOOD}\n", 1, ["blank line", "header"]),
    "stray_quote": (f"{HEADER}\n{GOOD}\n2023-11-16 18:15:47.0000000,\"12,3\n{GOOD}\n", 3, ["ContextTokens", "whole number"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_trace_names_file_line_and_problem(tmp_path, case):
    text, line, problems = BAD[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(text.encode())
    with pytest.raises(InputError) as err:
        load_azure_trace(path)
    message = str(err.value)
    assert f"{case}.csv:{line}:" in message, message
    for problem in problems:
        assert problem in message, message
    assert "\n" not in message


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(InputError, match="cannot read trace"):
        load_azure_trace(tmp_path / "absent.csv")
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n{GOOD}\n".encode() + b"\xff,1,1\n")
    with pytest.raises(InputError, match=r"latin1\.csv:3: not UTF-8"):
        load_azure_trace(path)
