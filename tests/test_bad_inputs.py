"""Bad input of any kind, through the CLI in-process: exit 0 or 2 only; on 2, exactly one line on
stderr naming a key path or file, no traceback, and nothing left in the --out folder.

The fuzz tests draw malformed scenarios (random key paths of the real schema, and unknown ones,
set to wrong types, negatives, NaN, inf, huge numbers, empty strings and unknown names), --set
overrides and malformed traces (CSV and JSONL), then the named cases pin the messages of inputs
an audit found mishandled.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simcost.cli.main import main
from simcost.scenario.scenario import Scenario

BASE = {
    "name": "fuzz", "seed": 1, "duration_s": 5,
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
                 "input_tokens": {"dist": "fixed", "value": 64}, "output_tokens": {"dist": "fixed", "value": 16}},
    "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"}, "slo": {"ttft_s": 2.0},
}
# `simcost: error: <where>: <problem>`, where is a key path, a flag or file[:line]
ONE_LINE = re.compile(r"^simcost: error: \S.*?: \S")
# SIMCOST_FUZZ_EXAMPLES=2000 explores further with fresh random inputs; by default the same 60
# examples per test run every time, so CI stays fast and repeatable
_EXPLORE = int(os.environ.get("SIMCOST_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXPLORE or 60, deadline=None, derandomize=not _EXPLORE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    return code, capsys.readouterr().err


def check_outcome(code: int, err: str, out_dir: Path | None = None) -> None:
    assert code in (0, 2), f"exit {code}: {err}"
    assert "Traceback" not in err, err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ONE_LINE.match(lines[0]), err
        if out_dir is not None:
            assert not out_dir.exists() or not any(out_dir.iterdir()), f"left behind: {list(out_dir.iterdir())}"
            leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.endswith(".partial")]
            assert not leftovers, leftovers


# --- the schema's key paths ------------------------------------------------------------------

def _dataclasses_of(tp) -> list:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")) or origin is tuple:
        return [c for arg in typing.get_args(tp) for c in _dataclasses_of(arg)]
    return [tp] if dataclasses.is_dataclass(tp) else []


def key_paths(cls=Scenario, prefix: str = "", depth: int = 0) -> list[str]:
    """Every key path of the scenario schema (variants of tagged unions included), to depth 3."""
    found = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        found.append(path)
        if depth < 3:
            for sub in _dataclasses_of(typing.get_type_hints(cls)[f.name]):
                if sub is not cls:
                    found += key_paths(sub, f"{path}.", depth + 1)
    return sorted(set(found))


KEYS = key_paths()
BAD_VALUES = st.one_of(
    st.integers(-10**25, 10**25), st.sampled_from([0, -1, 1, 2**63, 10**12, 24, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -0.0]),
    st.sampled_from(["", "nope", "1e9", "poisson", "h100-sxm", "fixed", "true", "-"]), st.booleans(), st.none(),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.sampled_from(["dist", "process", "x"]),
                                                              st.sampled_from(["fixed", 1, "poisson"]), max_size=2),
)


def set_path(raw: dict, path: str, value) -> dict:
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value
    return raw


@FUZZ
@given(edits=st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.sampled_from(["bogus", "workload.nope",
                                                                                   "engine.blok_size"])), BAD_VALUES),
                      min_size=1, max_size=3))
def test_malformed_scenarios_fail_in_one_line(tmp_path_factory, capsys, edits):
    folder = tmp_path_factory.mktemp("scn")
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in edits:
        set_path(raw, path, value)
    scenario = folder / "s.yaml"
    scenario.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = folder / "out"
    code, err = cli(["run", str(scenario), "--no-progress", "--set", "duration_s=5", "--out", str(out)], capsys)
    check_outcome(code, err, out)


SET_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["1e9", "nan", ".inf", "-.inf", "[1, 2", "{a: 1", "null",
                                                            "99999999999999999999999", "'x'", "0x10", ""]))


@FUZZ
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), text=SET_TEXT)
def test_malformed_overrides_fail_in_one_line(tmp_path_factory, capsys, key, text):
    folder = tmp_path_factory.mktemp("set")
    scenario = folder / "s.yaml"
    scenario.write_text(yaml.safe_dump(BASE))
    code, err = cli(["check", str(scenario), "--set", f"{key}={text}"], capsys)
    check_outcome(code, err)


def test_check_refuses_what_run_would_refuse_when_it_builds_the_step_model(tmp_path, capsys):
    """`simcost check` builds each deployment's step-time model too, as `run` does next: a
    measurements table that cannot be read fails there in one line, not only at `run`."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(BASE))
    missing = tmp_path / "nope.csv"
    code, err = cli(["check", str(scenario), "--set", "perf.model=table", "--set", f"perf.table={missing}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "perf.table" in err and "nope.csv" in err, err
    assert cli(["check", str(scenario)], capsys)[0] == 0


# --- traces ------------------------------------------------------------------------------------

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
STAMPS = st.one_of(st.sampled_from(["2023-11-16 18:15:46.6805900", "2023-11-16 18:15:47.1000000", "nan", "",
                                    "2023-02-30 10:00:00.0", "yesterday", "2023-11-16 18:15:45.0000000"]))
TOKENS = st.one_of(st.integers(-5, 5000), st.sampled_from(["-3", "abc", "", "3.5", "nan", "999999999999",
                                                           "99999999999999999999999"]))
JSON_TIMES = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.just("x"))


def _azure(rows, blank) -> str:
    lines = [HEADER] + [f"{t},{i},{o}" for t, i, o in rows]
    return "\r\n".join(lines) + ("\r\n\r\n" if blank else "\n")


def _generic_jsonl(rows, blank) -> str:
    import json
    lines = [json.dumps({"t": t, "prompt": i, "completion": o}) for t, i, o in rows]
    return ("\n\n" if blank else "\n").join(lines) + "\n"


def _write(path: Path, text: str, encoding: str) -> None:
    path.write_bytes(text.encode(encoding, errors="replace"))


@FUZZ
@given(rows=st.lists(st.tuples(STAMPS, TOKENS, TOKENS), max_size=5), blank=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]), drop_column=st.booleans())
def test_malformed_csv_traces_fail_in_one_line(tmp_path_factory, capsys, rows, blank, encoding, drop_column):
    folder = tmp_path_factory.mktemp("csv")
    text = _azure(rows, blank)
    if drop_column:
        text = text.replace(",GeneratedTokens", "", 1)
    trace = folder / "t.csv"
    _write(trace, text + ("\xe9" if encoding == "latin-1" else ""), encoding)
    check_outcome(*cli(["trace", "inspect", str(trace)], capsys))


@FUZZ
@given(rows=st.lists(st.tuples(JSON_TIMES, TOKENS, TOKENS), max_size=5), blank=st.booleans(),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-16"]))
def test_malformed_jsonl_traces_fail_in_one_line(tmp_path_factory, capsys, rows, blank, encoding):
    folder = tmp_path_factory.mktemp("jsonl")
    trace = folder / "t.jsonl"
    _write(trace, _generic_jsonl(rows, blank), encoding)
    columns = "arrival=t,arrival_unit=ms,input_tokens=prompt,output_tokens=completion"
    check_outcome(*cli(["trace", "inspect", str(trace), "--columns", columns], capsys))
    scenario = jsonl_trace_scenario(trace, folder)
    out = folder / "out"
    check_outcome(*cli(["run", str(scenario), "--no-progress", "--out", str(out)], capsys), out)


def jsonl_trace_scenario(trace, folder):
    """A scenario file in `folder` replaying the generic JSONL `trace` (t in ms, prompt, completion)."""
    raw = set_path(yaml.safe_load(yaml.safe_dump(BASE)), "workload", {"trace": {
        "name": str(trace), "columns": {"arrival": "t", "arrival_unit": "ms", "input_tokens": "prompt",
                                        "output_tokens": "completion"}}})
    raw.pop("duration_s")
    scenario = folder / "s.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    return scenario


# --- inputs an audit found mishandled ------------------------------------------------------------

def scenario_file(tmp_path: Path, text: str | bytes | None = None, **edits) -> Path:
    path = tmp_path / "s.yaml"
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in edits.items():
        set_path(raw, key.replace("__", "."), value)
    data = text if text is not None else yaml.safe_dump(raw, sort_keys=False)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


CASES = {
    "not utf-8": (dict(text=b"name: x\n\xff\xfe: 1\n"), ["s.yaml:2", "UTF-8"]),
    "duplicate key": (dict(text="name: a\nseed: 1\nname: b\n"), ["s.yaml:3", "duplicate key 'name'", "line 1"]),
    "alias containing itself": (dict(text="name: &a [*a]\nseed: 1\n"), ["s.yaml", "YAML aliases"]),
    "billion laughs": (dict(text="a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{k}: &{k} [{', '.join([f'*{p}'] * 10)}]\n" for p, k in zip("abcdefgh", "bcdefghi"))),
        ["s.yaml", "more than 1,000,000 values"]),
    "replicas 1e12": (dict(fleet__replicas=10**12), ["fleet.replicas", "<= 10,000"]),
    "prompt above int64": (dict(workload__input_tokens__value=10**20), ["workload.input_tokens.value", "64 bits"]),
    "1e9 req/s": (dict(workload__arrivals__rate_per_s=1e9), ["workload.arrivals.rate_per_s", "requests"]),
    "1e9 users": (dict(workload__arrivals=None, workload__clients={"users": 10**9, "think_time": {
        "dist": "fixed", "value_s": 1.0}}), ["workload.clients.users", "<= 100,000"]),
    "block size 24": (dict(engine__block_size=24), ["engine.block_size", "vLLM", "8, 16, 32"]),
    "block size 1e6": (dict(engine__block_size=10**6), ["engine.block_size"]),
    "max_waiting 0": (dict(engine__max_waiting=0), ["engine.max_waiting", "idle"]),
    "max_model_len 1": (dict(engine__max_model_len=1), ["engine.max_model_len", "at least 80"]),
    "every prompt above the model's context": (dict(workload__input_tokens={"dist": "fixed", "value": 200_000}),
                                                ["workload.input_tokens", "200,016", "131,072"]),
    "lognormal sigma 60": (dict(workload__input_tokens={"dist": "lognormal", "mean": 1000, "sigma": 60}),
                           ["workload.input_tokens.sigma", "mean 1000"]),
    "slow cold start": (dict(fleet__cold_start={"weights_gb_per_s": 1e-9}), ["fleet.cold_start.weights_gb_per_s", "days"]),
    "trace window after its end": (dict(duration_s=None, workload={"trace": {"name": "azure_conv", "start_s": 1e8}}),
                                   ["workload.trace.start_s", "no request"]),
    "closed loop always rejected": (dict(workload__arrivals=None, workload__clients={
        "users": 2, "think_time": {"dist": "fixed", "value_s": 0.0}}, engine__num_kv_blocks=1),
        ["workload.clients.think_time", "forever"]),
    # hosted-API pools (fleet.api_pools): prices, providers, models and rate limits
    "api negative price": (dict(fleet__api_pools=[{"name": "a", "provider": "openai", "model": "gpt-4o-mini",
                                                   "input_usd_per_1m": -1}]),
                           ["fleet.api_pools[0].input_usd_per_1m", ">= 0"]),
    "api unknown provider": (dict(fleet__api_pools=[{"name": "a", "provider": "opnai", "model": "gpt-4o-mini"}]),
                             ["fleet.api_pools[0].provider", "openai"]),
    "api unknown model": (dict(fleet__api_pools=[{"name": "a", "provider": "openai", "model": "gpt-9"}]),
                          ["fleet.api_pools[0].model", "gpt-9"]),
    "api rate limit 0": (dict(fleet__api_pools=[{"name": "a", "provider": "openai", "model": "gpt-4o-mini",
                                                 "rate_limits": {"requests_per_min": 0}}]),
                         ["fleet.api_pools[0].rate_limits.requests_per_min", "> 0"]),
    "api custom without price": (dict(fleet__api_pools=[{"name": "a", "provider": "custom", "model": "m",
                                                         "input_usd_per_1m": 1.0}]),
                                 ["fleet.api_pools[0].output_usd_per_1m", "missing"]),
    "cascade to nowhere": (dict(fleet__cascade={"escalate_to": "big", "escalation_rate": 0.2}),
                           ["fleet.cascade.escalate_to", "'big'"]),
    "exact cache without hashes": (dict(fleet__response_cache={"mode": "exact"}),
                                   ["fleet.response_cache.mode", "hash"]),
    "budget of 0": (dict(cost__budget={"monthly_usd": 0}), ["cost.budget.monthly_usd", "> 0"]),
    # a newcomer's first guess at a length: the message shows the mapping it takes
    "bare number for a length": (dict(workload__input_tokens=100),
                                 ["workload.input_tokens", "{dist: ..., ...}", "fixed", "got 100"]),
    "a bare name for the arrivals": (dict(workload__arrivals="poisson"),
                               ["workload.arrivals", "{process: ..., ...}", "poisson"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_known_bad_inputs_name_the_key_at_fault(tmp_path, capsys, case):
    edits, expected = CASES[case]
    path = scenario_file(tmp_path, **edits)
    out = tmp_path / "out"
    code, err = cli(["run", str(path), "--no-progress", "--out", str(out)], capsys)
    check_outcome(code, err, out)
    assert code == 2 and all(text in err for text in expected), err


def test_a_set_value_with_a_recursive_alias_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = cli(["run", str(scenario_file(tmp_path)), "--set", "name=&a [*a]", "--out", str(out)], capsys)
    check_outcome(code, err, out)
    assert code == 2 and "--set name" in err and "YAML aliases" in err


def test_size_refuses_a_tensor_parallel_degree_below_one(tmp_path, capsys):
    code, err = cli(["size", str(scenario_file(tmp_path)), "--devices", "h100-sxm", "--tensor-parallel", "0,1"], capsys)
    check_outcome(code, err)
    assert code == 2 and "--tensor-parallel" in err and ">= 1" in err


def test_blank_trace_lines_are_skipped_and_huge_tokens_refused(tmp_path, capsys):
    ok = tmp_path / "ok.csv"
    ok.write_text(f"{HEADER}\r\n2023-11-16 18:15:46.6805900,374,44\r\n\r\n2023-11-16 18:15:47.6805900,12,4\r\n")
    code, _ = cli(["trace", "inspect", str(ok)], capsys)
    assert code == 0
    huge = tmp_path / "huge.csv"
    huge.write_text(f"{HEADER}\n2023-11-16 18:15:46.6805900,999999999999,44\n")
    code, err = cli(["trace", "inspect", str(huge)], capsys)
    assert code == 2 and "huge.csv:2" in err and "at most" in err


@pytest.mark.parametrize("name, text, expected", [
    ("array.jsonl", '[{"t": 0, "prompt": 5, "completion": 3}]\n', ["array.jsonl:1", "JSON array"]),
    ("dup.jsonl", '{"t": 0, "prompt": 5, "completion": 3}\n{"t": 1, "prompt": 5, "prompt": 6, "completion": 3}\n',
     ["dup.jsonl:2", "duplicate field 'prompt'"]),
    ("dup.csv", "t,prompt,prompt,completion\n0,5,6,3\n", ["dup.csv:1", "column prompt appears more than once"]),
])
def test_ambiguous_traces_are_refused_not_guessed(tmp_path, capsys, name, text, expected):
    """A JSON array is not JSON Lines, and a field or column given twice has no single value."""
    trace = tmp_path / name
    trace.write_text(text)
    out = tmp_path / "out"
    code, err = cli(["run", str(jsonl_trace_scenario(trace, tmp_path)), "--no-progress", "--out", str(out)], capsys)
    check_outcome(code, err, out)
    assert code == 2 and all(text in err for text in expected), err


def test_an_azure_trace_with_a_column_twice_is_refused(tmp_path, capsys):
    trace = tmp_path / "azure.csv"
    trace.write_text(f"{HEADER},ContextTokens\n2023-11-16 18:15:46.6805900,374,44,12\n")
    code, err = cli(["trace", "inspect", str(trace)], capsys)
    assert code == 2 and "azure.csv:1" in err and "ContextTokens appears more than once" in err, err


def test_a_folder_in_the_way_or_a_missing_pyarrow_is_found_before_the_run(tmp_path, capsys, monkeypatch):
    path = scenario_file(tmp_path)
    out = tmp_path / "out"
    (out / "summary.json").mkdir(parents=True)
    code, err = cli(["run", str(path), "--no-progress", "--out", str(out)], capsys)
    assert code == 2 and "summary.json" in err and [p.name for p in out.iterdir()] == ["summary.json"]
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    fresh = tmp_path / "fresh"
    code, err = cli(["run", str(path), "--no-progress", "--records", "parquet", "--out", str(fresh)], capsys)
    assert code == 2 and "pyarrow" in err and not fresh.exists()


def test_an_existing_folder_keeps_other_files_and_loses_stale_outputs(tmp_path, capsys):
    path = scenario_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "requests.parquet").write_text("an earlier run's")
    code, _ = cli(["run", str(path), "--no-progress", "--out", str(out)], capsys)
    assert code == 0 and (out / "notes.txt").read_text() == "mine"
    assert not (out / "requests.parquet").exists() and (out / "requests.csv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_interrupt_prints_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from simcost.simulation import simulation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulation.Simulation, "run", interrupted)
    out = tmp_path / "out"
    code, err = cli(["run", str(scenario_file(tmp_path)), "--no-progress", "--out", str(out)], capsys)
    assert code == 130 and err.strip() == "simcost: interrupted; nothing written" and not out.exists()


def test_an_interrupted_write_leaves_no_folder(tmp_path, capsys, monkeypatch):
    from simcost.results import writer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_focus", interrupted)  # after summary.json and the records
    out = tmp_path / "deep" / "out"
    code, err = cli(["run", str(scenario_file(tmp_path)), "--no-progress", "--out", str(out)], capsys)
    assert code == 130 and not (tmp_path / "deep").exists()


def test_a_trace_spanning_centuries_is_refused_not_simulated(tmp_path, capsys):
    """Found by the JSONL fuzz: timestamps in the wrong unit made a run as long as the trace."""
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"t": 0, "prompt": 5, "completion": 3}\n{"t": 1e15, "prompt": 5, "completion": 3}\n')
    path = jsonl_trace_scenario(trace, tmp_path)
    out = tmp_path / "out"
    code, err = cli(["run", str(path), "--no-progress", "--out", str(out)], capsys)
    check_outcome(code, err, out)
    assert code == 2 and "workload.trace.name" in err and "a year" in err
