"""`simcost trace inspect`: the bundled traces reproduce the facts in data/traces/README.md, a
hand-built trace gives hand-computed numbers, and the command prints, writes its files, and fails
with one line naming the file."""

from __future__ import annotations

import json
import math

import pytest

from simcost.cli.main import main
from simcost.workload.trace_inspect import auto_bin_s, format_inspection, inspect_trace, parse_columns, sparkline
from simcost.workload.traces import BUNDLED, load_trace

# name: (rows, span rounded as the README gives it (s, or ms for Mooncake), span min, input mean, median,
# max, output mean, median, max, mean rate req/s or None, prefix reuse % or None, distinct blocks or None)
README = {
    "azure_code": (8_819, 3436, 57.3, 2048, 1469, 7437, 27.9, 13, 1899, 2.57, None, None),
    "azure_conv": (19_366, 3502, 58.4, 1155, 1020, 14_050, 211, 129, 1000, 5.53, None, None),
    "mooncake_conversation": (12_031, 3_536_999, 58.9, 12_035, 6909, 126_195, 343, 350, 2000, None, 36.6, 182_790),
    "mooncake_synthetic": (3_993, 1_022_025, 17.0, 15_325, 11_587, 191_378, 149, 69, 893, None, 64.0, None),
}


def test_readme_covers_every_bundled_trace():
    assert set(README) == set(BUNDLED)


@pytest.mark.parametrize("name", sorted(README))
def test_bundled_inspection_matches_readme(name):
    rows, span, minutes, in_mean, in_p50, in_max, out_mean, out_p50, out_max, rate, reuse, distinct = README[name]
    info = inspect_trace(load_trace(name))
    assert info["requests"] == rows
    assert round(info["span_s"] * (1000 if name.startswith("mooncake") else 1)) == span
    assert round(info["span_s"] / 60, 1) == minutes
    assert round(info["input_tokens"]["mean"]) == in_mean and info["input_tokens"]["p50"] == in_p50
    assert info["input_tokens"]["max"] == in_max
    assert round(info["output_tokens"]["mean"], 1 if isinstance(out_mean, float) else 0) == out_mean
    assert info["output_tokens"]["p50"] == out_p50 and info["output_tokens"]["max"] == out_max
    if rate is not None:
        assert round(info["mean_rate_per_s"], 2) == rate
    text = format_inspection(info)
    assert f"{rows:,}" in text and f"({minutes} min)" in text
    if reuse is None:
        assert info["prefix"] is None and "no block hashes" in text
    else:
        assert round(100 * info["prefix"]["reuse_upper_bound"], 1) == reuse and f"{reuse}%" in text
        assert info["prefix"]["block_tokens"] == 512
        assert distinct is None or info["prefix"]["distinct_blocks"] == distinct
    assert info["sessions"] is None and info["tenants"] is None
    # An hour-long trace gets 60 s bins; the counts cover every request exactly once.
    assert info["rate"]["bin_s"] == (30.0 if name == "mooncake_synthetic" else 60.0)
    assert sum(info["rate"]["requests_per_bin"]) == rows


def test_mooncake_synthetic_arrivals_look_poisson_and_azure_code_does_not():
    # The README says the synthetic trace's arrivals are Poisson-generated: gaps CV ~1, dispersion ~1.
    synthetic = inspect_trace(load_trace("mooncake_synthetic"))
    assert synthetic["gaps"]["cv"] == pytest.approx(1.0, abs=0.05)
    assert 0.5 < synthetic["rate"]["index_of_dispersion"] < 1.5
    code = inspect_trace(load_trace("azure_code"))
    assert code["gaps"]["cv"] > 5 and code["rate"]["index_of_dispersion"] > 50


def test_mooncake_conversation_arrivals_share_timestamps():
    gaps = inspect_trace(load_trace("mooncake_conversation"))["gaps"]
    assert gaps["zero_gaps"] == 10_851 and gaps["distinct_arrival_times"] == 1_180


# --- a small trace with hand-computed answers -------------------------------------------------

ARRIVAL_S = [0, 1, 2, 3, 4, 5, 6, 7, 16]  # gaps: seven of 1 s, one of 9 s
HAND_COLUMNS = "arrival=t_ms,arrival_unit=ms,input_tokens=prompt,output_tokens=completion,session=conv,tenant=team"


@pytest.fixture
def hand_trace(tmp_path):
    sessions = ["s1", "s1", "s2", "s1", "s3", "s2", "s1", "s3", "s4"]
    teams = ["a"] * 6 + ["b"] * 3
    rows = [f"{1000 * t + 500},{100 * (i + 1)},{90 - 10 * i},{s},{team}"
            for i, (t, s, team) in enumerate(zip(ARRIVAL_S, sessions, teams))]
    path = tmp_path / "hand.csv"
    path.write_text("t_ms,prompt,completion,conv,team\n" + "\n".join(rows) + "\n")
    return path


def test_hand_trace_numbers(hand_trace):
    info = inspect_trace(load_trace(str(hand_trace), parse_columns(HAND_COLUMNS)), bin_s=4)
    assert info["requests"] == 9 and info["span_s"] == 16.0 and info["mean_rate_per_s"] == 9 / 16
    gaps = info["gaps"]  # mean 16/8 = 2 s; variance (7 * 1^2 + 7^2) / 8 = 7
    assert gaps["mean_s"] == pytest.approx(2.0) and gaps["cv"] == pytest.approx(math.sqrt(7) / 2)
    assert gaps["p50_s"] == pytest.approx(1.0) and gaps["zero_gaps"] == 0
    # Bins [0,4) [4,8) [8,12) [12,16]: 4, 4, 0, 1 requests; mean 2.25, variance 3.1875.
    rate = info["rate"]
    assert rate["requests_per_bin"] == [4, 4, 0, 1] and rate["whole_bins"] == 4
    assert rate["peak_per_s"] == 1.0 and rate["min_per_s"] == 0.0
    assert rate["peak_to_mean"] == pytest.approx(4 / 2.25)
    assert rate["index_of_dispersion"] == pytest.approx(3.1875 / 2.25)
    assert rate["count_cv"] == pytest.approx(math.sqrt(3.1875) / 2.25)
    assert rate["poisson_count_cv"] == pytest.approx(1 / 1.5)
    # Input 100..900: linear percentiles; output runs the other way, so Spearman is -1.
    assert info["input_tokens"] == {"mean": 500.0, "p50": 500.0, "p90": 820.0, "p99": 892.0, "max": 900}
    assert info["output_tokens"]["max"] == 90 and info["spearman_input_output"] == pytest.approx(-1.0)
    assert info["sessions"] == {"count": 4, "turns_mean": 2.25, "turns_max": 4}
    assert info["tenants"]["count"] == 2
    assert [(t["tenant"], round(t["share"], 4)) for t in info["tenants"]["top"]] == [("a", 0.6667), ("b", 0.3333)]
    assert info["prefix"] is None


def test_partial_last_bin_is_left_out_of_bin_statistics(hand_trace):
    trace = load_trace(str(hand_trace), parse_columns(HAND_COLUMNS))
    rate = inspect_trace(trace, bin_s=5)["rate"]  # [0,5) [5,10) [10,15) whole, [15,16] partial
    assert rate["requests_per_bin"] == [5, 3, 0, 1] and rate["whole_bins"] == 3 and rate["last_bin_s"] == 1.0
    assert rate["peak_per_s"] == 1.0 and rate["peak_to_mean"] == pytest.approx(5 / (8 / 3))
    assert inspect_trace(trace)["rate"]["bin_s"] == 0.5  # auto: 32 bins over 16 s
    assert inspect_trace(trace, bin_s=100)["rate"]["peak_per_s"] is None  # no whole bin


def test_auto_bin_and_sparkline():
    assert auto_bin_s(3600) == 60 and auto_bin_s(1022) == 30 and auto_bin_s(14 * 86400) == 21600
    assert auto_bin_s(0) is None
    assert sparkline([0, 5, 10]) == "_+@" and sparkline([]) == "" and len(sparkline(list(range(1, 200)))) == 60


def test_single_request_trace(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0000000,10,5\n")
    info = inspect_trace(load_trace(str(path)))
    assert info["requests"] == 1 and info["mean_rate_per_s"] is None and info["gaps"]["cv"] is None
    assert info["spearman_input_output"] is None and "1 requests" not in format_inspection(info)


# --- the command -------------------------------------------------------------------------------

def run(capsys, *args):
    code = main(["trace", "inspect", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_and_writes_plot_and_json(tmp_path, capsys, hand_trace):
    png, js = tmp_path / "out" / "t.png", tmp_path / "out" / "t.json"
    code, out, err = run(capsys, hand_trace, "--columns", HAND_COLUMNS, "--bin-s", "4", "--plot", png, "--json", js)
    assert code == 0, err
    assert "requests per 4 s bin" in out and "turns per session mean 2.25" in out and f"wrote {png}, {js}" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    data = json.loads(js.read_text())
    assert data["rate"]["requests_per_bin"] == [4, 4, 0, 1] and data["tenants"]["top"][0]["tenant"] == "a"


def test_cli_bundled_name(capsys):
    code, out, err = run(capsys, "mooncake_conversation")
    assert code == 0, err
    assert "prefix reuse upper bound    36.6%" in out and "10,851 zero gaps" in out and "wrote" not in out


@pytest.mark.parametrize("case", ["missing", "empty", "missing_column", "unmapped_column"])
def test_cli_bad_file_is_one_line_naming_it(tmp_path, capsys, case):
    path = tmp_path / f"{case}.csv"
    args = [path]
    if case == "empty":
        path.write_text("")
    elif case == "missing_column":
        path.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:00:00.0000000,10\n")
    elif case == "unmapped_column":
        path.write_text("t,prompt,completion\n0,10,5\n")
        args += ["--columns", "arrival=t,input_tokens=prompt,output_tokens=answer"]
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("simcost: error: ") and path.name in err, err


@pytest.mark.parametrize("args, message", [
    (["--bin-s", "0"], "--bin-s: 0; expected a number of seconds > 0"),
    (["--bin-s", "nan"], "--bin-s: nan; expected a number of seconds > 0"),
    (["--bin-s", "1e-6"], "--bin-s: 1e-06 s makes 3,435,948,056 bins over 3,435.9 s; expected at most 1,000,000"),
    (["--columns", "arrival"], "--columns: 'arrival' is not of the form key=column"),
    (["--columns", "arrival=t,input_tokens=a,output_tokens=b,arrival_unit=min"], "--columns.arrival_unit: 'min'"),
    (["--columns", "arrival=t,input_tokens=a"], "--columns.output_tokens: missing"),
])
def test_cli_bad_options(capsys, args, message):
    code, out, err = run(capsys, "azure_code", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
