"""Bundled Azure and Mooncake traces reproduce the facts in simcost/data/traces/README.md; bad trace files fail
with `file:line` and the problem."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from simcost.errors import InputError
from simcost.rng import streams
from simcost.scenario.scenario import scenario_from_dict
from simcost.workload import traces
from simcost.workload.requests import generate, trace_names, workload_summary
from simcost.workload.traces import (
    BUNDLED,
    adopt,
    load_azure_trace,
    load_mooncake_trace,
    load_table_trace,
    load_trace,
    parse_traces,
    prefix_reuse_fraction,
    trace_path,
)

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
    for name in ("azure_conv", "azure_code"):
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


def test_traces_parsed_elsewhere_are_adopted_not_parsed_again(tmp_path, monkeypatch):
    """What `simcost run`'s figure process parses (parse_traces; its items cross a pipe pickled)
    is what a load here then uses, without parsing; a file edited since is parsed again, and a
    trace that failed there is left out, to fail here with its own message."""
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [7, 8]}\n'
                    '{"timestamp": 250, "input_length": 10, "output_length": 4, "hash_ids": [7]}\n')
    bad.write_text('{"timestamp": 0, "input_length": 600, "output_length": -3, "hash_ids": [7, 8]}\n')
    items = parse_traces([(str(bad), None), (str(good), None)])
    assert [key[0] for key, _ in items] == [str(good)]
    assert not any(key[0] == str(good) for key in traces._parsed)  # the figure process keeps no copy
    items = pickle.loads(pickle.dumps(items))
    monkeypatch.setattr(traces, "_parsed", type(traces._parsed)())  # this process has parsed nothing yet
    parsed, real_parse = [], traces._parse_file
    monkeypatch.setattr(traces, "_parse_file", lambda *key: parsed.append(key) or real_parse(*key))
    adopt(items)
    trace = load_trace(str(good))
    assert parsed == [] and trace.source == str(good)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 0.25])
    np.testing.assert_array_equal(trace.block_ids, [7, 8, 7])
    with pytest.raises(ValueError):  # adopted arrays are shared like parsed ones: read-only
        trace.input_tokens[0] = 1
    with pytest.raises(InputError, match=r"bad.jsonl:1.*output_length is -3"):
        load_trace(str(bad))
    good.write_text(good.read_text().replace("600", "601"))
    os.utime(good, ns=(1, 10 ** 18))
    assert load_trace(str(good)).input_tokens[0] == 601 and len(parsed) == 2  # bad, then the edited file


def test_trace_names_lists_each_trace_a_run_loads_once():
    scenario = scenario_from_dict({
        "workload": {"mix": [
            {"name": "replay", "trace": {"name": "mooncake_conversation"}},
            {"name": "resampled", "arrivals": {"process": "poisson", "rate_per_s": 1},
             "input_tokens": {"dist": "empirical", "trace": "azure_code"},
             "output_tokens": {"dist": "empirical", "trace": "azure_code"}},
            {"name": "synthetic", "arrivals": {"process": "poisson", "rate_per_s": 1},
             "input_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "empirical", "trace": "azure_conv"}},
        ]},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"}, "duration_s": 60})
    assert trace_names(scenario) == [("mooncake_conversation", None), ("azure_code", None), ("azure_conv", None)]
    assert trace_names(trace_scenario("azure_conv")) == [("azure_conv", None)]


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
    "missing_column": ("TIMESTAMP,ContextTokens,Generated\n" + GOOD + "\n", 1,
                       ["missing column GeneratedTokens", "Generated", "workload.trace.columns"]),
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
    # blank lines are skipped, but errors still name the file's own line
    "after_blank_lines": (f"\n{HEADER}\n\n{GOOD}\n\n2023-11-16 18:15:47.0000000,-5,10\n", 6, ["ContextTokens", "-5"]),
    "huge_tokens": (f"{HEADER}\n{GOOD}\n2023-11-16 18:15:47.0000000,999999999999,10\n", 3,
                    ["ContextTokens", "999,999,999,999", "at most"]),
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


# --- Mooncake FAST'25 JSONL -----------------------------------------------------------------

# name: (rows, last timestamp ms, input mean, median, max, output mean, median, max, reuse %, distinct blocks)
MOONCAKE = {
    "mooncake_conversation": (12_031, 3_536_999, 12_035, 6_909, 126_195, 343, 350, 2000, 36.6, 182_790),
    "mooncake_synthetic": (3_993, 1_022_025, 15_325, 11_587, 191_378, 149, 69, 893, 64.0, None),
}


@pytest.mark.parametrize("name", sorted(MOONCAKE))
def test_mooncake_trace_matches_readme(name):
    rows, last_ms, in_mean, in_median, in_max, out_mean, out_median, out_max, reuse, distinct = MOONCAKE[name]
    trace = load_trace(name)
    assert len(trace) == rows and trace.arrival_s[0] == 0.0 and round(trace.span_s * 1000) == last_ms
    assert round(trace.input_tokens.mean()) == in_mean and np.median(trace.input_tokens) == in_median
    assert trace.input_tokens.max() == in_max
    assert round(trace.output_tokens.mean()) == out_mean and np.median(trace.output_tokens) == out_median
    assert trace.output_tokens.max() == out_max
    assert round(100 * prefix_reuse_fraction(trace), 1) == reuse
    if distinct is not None:
        assert len(np.unique(trace.block_ids)) == distinct
    blocks = np.diff(trace.block_offsets)
    np.testing.assert_array_equal(blocks, -(-trace.input_tokens // 512))
    assert trace.block_tokens == 512


def test_mooncake_requests_carry_prefix_blocks():
    req = generate(trace_scenario("mooncake_conversation", duration_s=60.0), streams(0))
    trace = load_trace("mooncake_conversation")
    assert len(req) == int(np.sum(trace.arrival_s < 60.0)) and req.prefix_block_tokens == 512
    np.testing.assert_array_equal(req.prefix_block_ids[0], np.arange(14))  # first row: hash_ids 0..13
    np.testing.assert_array_equal(req.prefix_block_ids[1][:2], [0, 14])
    assert all(len(ids) == -(-n // 512) for ids, n in zip(req.prefix_block_ids, req.input_tokens))
    assert prefix_reuse_fraction(load_trace("azure_conv")) is None and generate(
        trace_scenario("azure_conv", duration_s=10.0), streams(0)).prefix_block_ids is None


def test_apache_licence_and_attribution_shipped():
    folder = trace_path("mooncake_conversation").parent
    assert "Apache License" in (folder / "LICENSE-Apache-2.0.txt").read_text()
    readme = (folder / "README.md").read_text()
    assert "kvcache-ai/Mooncake" in readme and "Apache-2.0" in readme and "mooncake_synthetic" in readme


MC = '{"timestamp": %s, "input_length": %s, "output_length": %s, "hash_ids": %s}'
MC_GOOD = MC % (0, 600, 5, "[0, 1]")
MOONCAKE_BAD = {
    "missing_field": (MC_GOOD + '\n{"timestamp": 1, "input_length": 10, "hash_ids": [0]}\n', 2, ["missing field output_length"]),
    "negative_tokens": (MC_GOOD + "\n" + MC % (1, 10, -3, "[0]") + "\n", 2, ["output_length is -3", "negative"]),
    "zero_input": (MC % (0, 0, 3, "[]") + "\n", 1, ["input_length is 0"]),
    "non_integer": (MC_GOOD + "\n" + MC_GOOD + "\n" + MC % (1, 10.5, 3, "[0]") + "\n", 3, ["input_length 10.5", "whole number"]),
    "text_number": (MC % ('"5"', 10, 3, "[0]") + "\n", 1, ["timestamp '5'", "whole number"]),
    "hash_ids_length": (MC_GOOD + "\n" + MC % (1, 1025, 3, "[0, 1]") + "\n", 2, ["2 hash_ids", "input_length 1025", "= 3"]),
    "hash_ids_type": (MC % (0, 10, 3, '"abc"') + "\n", 1, ["hash_ids", "not a list"]),
    "unsorted": (MC % (5, 10, 3, "[0]") + "\n" + MC % (4, 10, 3, "[1]") + "\n", 2, ["timestamp 4", "before", "time order"]),
    "after_blank_line": (MC_GOOD + "\n\n" + MC % (1, 10, -3, "[0]") + "\n", 3, ["output_length is -3"]),
    "bad_json": (MC_GOOD + "\n{timestamp: 1}\n", 2, ["not valid JSON"]),
    "not_object": ("[1, 2]\n", 1, ["expected a JSON object"]),
    "empty": ("", 1, ["empty file"]),
}


@pytest.mark.parametrize("case", sorted(MOONCAKE_BAD))
def test_bad_mooncake_rows_name_file_line_and_problem(tmp_path, case):
    text, line, problems = MOONCAKE_BAD[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_trace(str(path))
    message = str(err.value)
    assert f"{case}.jsonl:{line}:" in message, message
    for problem in problems:
        assert problem in message, message


def test_mooncake_file_by_path_without_final_newline(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(MC_GOOD + "\n" + MC % (1500, 513, 2, "[0, 7]"))
    trace = load_mooncake_trace(path)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 1.5])
    np.testing.assert_array_equal(trace.block_ids, [0, 1, 0, 7])
    assert prefix_reuse_fraction(trace) == 0.25


# --- generic CSV / JSONL with a column mapping ----------------------------------------------

COLUMNS = {"arrival": "t_ms", "arrival_unit": "ms", "input_tokens": "prompt", "output_tokens": "completion",
           "session": "conv", "tenant": "team"}


def columns_of(**kw):
    raw = {"workload": {"trace": {"name": "x", "columns": {**COLUMNS, **kw}}},
           "model": {"name": "m"}, "hardware": {"device": "d"}}
    return scenario_from_dict(raw).workload.trace.columns


def test_generic_csv_with_mapping(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('team,t_ms,prompt,completion,conv\n"a, inc",1000,10,2,s1\nb,1500,20,3,s2\nb,3000,30,4,s1\n')
    trace = load_table_trace(path, columns_of())
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(trace.input_tokens, [10, 20, 30])
    assert list(trace.tenants) == ["a, inc", "b", "b"] and list(trace.session_ids) == ["s1", "s2", "s1"]


@pytest.mark.parametrize("unit, scale", [("s", 1.0), ("ms", 1e-3), ("us", 1e-6)])
def test_generic_jsonl_units(tmp_path, unit, scale):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"ts": 100, "in": 5, "out": 6}\n{"ts": 350.5, "in": 7, "out": 8, "extra": 1}\n')
    cols = scenario_from_dict({"workload": {"trace": {"name": str(path), "columns": {
        "arrival": "ts", "arrival_unit": unit, "input_tokens": "in", "output_tokens": "out"}}},
        "model": {"name": "m"}, "hardware": {"device": "d"}}).workload.trace.columns
    trace = load_trace(str(path), cols)
    np.testing.assert_allclose(trace.arrival_s, [0.0, 250.5 * scale])
    assert trace.session_ids is None and trace.block_ids is None


GENERIC_BAD = {
    "missing_column.csv": ("t_ms,prompt,completion,conv\n1,2,3,s\n", 1, ["missing column team"]),
    "missing_key.jsonl": ('{"t_ms": 1, "prompt": 2, "completion": 3, "conv": "s", "team": "a"}\n'
                          '{"t_ms": 2, "prompt": 2, "conv": "s", "team": "a"}\n', 2, ["missing field completion"]),
    "bad_time.csv": ("t_ms,prompt,completion,conv,team\n1,2,3,s,a\nsoon,2,3,s,a\n", 3, ["t_ms 'soon'", "not a number"]),
    "nan_time.csv": ("t_ms,prompt,completion,conv,team\nnan,2,3,s,a\n", 2, ["not finite"]),
    "negative.csv": ("t_ms,prompt,completion,conv,team\n1,2,-3,s,a\n", 2, ["completion is -3", "negative"]),
    "fraction.csv": ("t_ms,prompt,completion,conv,team\n1,2.5,3,s,a\n", 2, ["prompt '2.5'", "whole number"]),
    "unsorted.csv": ("t_ms,prompt,completion,conv,team\n5,2,3,s,a\n4,2,3,s,a\n", 3, ["before", "time order"]),
    "short_row.csv": ("t_ms,prompt,completion,conv,team\n5,2,3,s\n", 2, ["4 fields, expected 5"]),
    "header_only.csv": ("t_ms,prompt,completion,conv,team\n", 2, ["header only"]),
    "empty.csv": ("\n", 1, ["empty file"]),
}


@pytest.mark.parametrize("case", sorted(GENERIC_BAD))
def test_bad_generic_rows_name_file_line_and_problem(tmp_path, case):
    text, line, problems = GENERIC_BAD[case]
    path = tmp_path / case
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_table_trace(path, columns_of())
    message = str(err.value)
    assert f"{case}:{line}:" in message, message
    for problem in problems:
        assert problem in message, message


# --- replay options: window, sampling, looping ----------------------------------------------

def replay_scenario(name="azure_conv", duration_s=None, **options):
    raw = {"workload": {"trace": {"name": name, **options}}, "model": {"name": "m"}, "hardware": {"device": "d"}}
    if duration_s is not None:
        raw["duration_s"] = duration_s
    return scenario_from_dict(raw)


def test_time_window_shifts_to_zero_and_rate_multiplier_applies_after():
    trace = load_trace("azure_conv")
    req = generate(replay_scenario(start_s=600.0, end_s=1200.0, rate_multiplier=2.0), streams(0))
    inside = (trace.arrival_s >= 600.0) & (trace.arrival_s < 1200.0)
    assert len(req) == inside.sum()
    np.testing.assert_allclose(req.arrival_s, (trace.arrival_s[inside] - 600.0) / 2, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(req.input_tokens, trace.input_tokens[inside])


def test_sample_fraction_is_binomial_and_seeded():
    full = len(load_trace("azure_conv"))
    a = generate(replay_scenario(sample_fraction=0.25), streams(1))
    b = generate(replay_scenario(sample_fraction=0.25), streams(1))
    c = generate(replay_scenario(sample_fraction=0.25), streams(2))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s[:100], c.arrival_s[:100])
    assert abs(len(a) - full / 4) < 4 * math.sqrt(full * 0.25 * 0.75)


def test_loop_fills_duration_with_fresh_block_ids():
    trace = load_trace("mooncake_synthetic")
    n, span_s = len(trace), trace.span_s
    period_s = span_s + span_s / (n - 1)  # last arrival plus one mean gap
    req = generate(replay_scenario("mooncake_synthetic", duration_s=2.5 * period_s, loop=True), streams(0))
    assert len(req) == 2 * n + int(np.sum(trace.arrival_s < 0.5 * period_s))
    assert np.all(np.diff(req.arrival_s) >= 0) and req.arrival_s[-1] < 2.5 * period_s
    np.testing.assert_allclose(req.arrival_s[n], period_s)
    stride = int(trace.block_ids.max()) + 1
    np.testing.assert_array_equal(req.prefix_block_ids[n], req.prefix_block_ids[0] + stride)
    first = np.concatenate(req.prefix_block_ids[:n])
    second = np.concatenate(req.prefix_block_ids[n:2 * n])
    assert not np.intersect1d(first, second).size  # a repeat invents no cache hits


def test_loop_with_window_repeats_every_end_minus_start():
    req = generate(replay_scenario(start_s=100.0, end_s=400.0, rate_multiplier=3.0, loop=True, duration_s=500.0),
                   streams(0))
    trace = load_trace("azure_conv")
    per_copy = int(np.sum((trace.arrival_s >= 100.0) & (trace.arrival_s < 400.0)))
    assert len(req) == 5 * per_copy  # period 300 s / 3 = 100 s, five copies in 500 s
    np.testing.assert_allclose(req.arrival_s[per_copy:2 * per_copy] - req.arrival_s[:per_copy], 100.0)


def test_loop_needs_a_duration_and_end_after_start():
    with pytest.raises(InputError, match="workload.trace.loop: needs duration_s"):
        generate(replay_scenario(loop=True), streams(0))
    with pytest.raises(InputError, match="workload.trace.end_s"):
        replay_scenario(start_s=10.0, end_s=5.0)
    with pytest.raises(InputError, match="workload.trace.sample_fraction"):
        replay_scenario(sample_fraction=0.0)


def test_blank_lines_are_skipped_as_common_readers_skip_them(tmp_path):
    """A trailing CRLF, blank lines between rows or JSONL records hold no request: skipped, none lost."""
    azure = tmp_path / "a.csv"
    azure.write_text(f"{HEADER}\r\n{GOOD}\r\n\r\n{GOOD}\r\n\r\n")
    assert len(load_azure_trace(azure)) == 2
    mooncake = tmp_path / "m.jsonl"
    mooncake.write_text(MC_GOOD + "\n\n" + MC_GOOD + "\n\n")
    assert len(load_mooncake_trace(mooncake)) == 2
