"""`simcost validate` and `simcost calibrate --log`: a serving log is replayed exactly, its measured
statistics are the ones a hand computation from the file gives, a log simcost wrote itself
validates to 0 %, doubled latencies show -50 %, bad rows fail on one line naming file:line, and
factors a log was generated with are recovered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simcost.analysis.calibrate_log import fit_log, parse_fit, write_log_profile
from simcost.analysis.validate import Outcomes, simulate, validate, validation_scenario, vllm_bench_result
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.workload.requests import trace_requests
from simcost.workload.serving_log import LogColumns, load_log, unit_note

LOGS = Path(__file__).resolve().parents[1] / "simcost" / "data" / "logs"
SCENARIO = LOGS / "example_8b_h100.yaml"
LOG = LOGS / "example_8b_h100_vllm_bench.json"
TRUE = {"mfu": 0.45, "mbu": 0.6}  # what experiments/make_example_log.py generated the example with
RAW = json.loads(LOG.read_text())


def hand_stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def percentile(p: float) -> float:  # numpy's default (linear) rule, written out
        rank = p / 100 * (len(ordered) - 1)
        lo = int(rank)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)

    return {"mean": sum(values) / len(values), "p50": percentile(50), "p90": percentile(90), "p99": percentile(99)}


def write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture(scope="module")
def example():
    scenario = validation_scenario(SCENARIO, LOG)
    log = load_log(LOG)
    return scenario, log, validate(scenario, log)


def test_the_replay_is_exactly_the_logs_arrivals_and_lengths(example):
    scenario, log, _ = example
    order = np.argsort(RAW["start_times"], kind="stable")
    start = np.array(RAW["start_times"])[order]
    requests = trace_requests(scenario, log.trace)
    np.testing.assert_allclose(requests.arrival_s, start - start[0], atol=1e-9)
    assert requests.input_tokens.tolist() == np.array(RAW["input_lens"])[order].tolist()
    assert requests.output_tokens.tolist() == np.array(RAW["output_lens"])[order].tolist()
    simulated = simulate(scenario, log)  # the run's table holds the same requests, one row each
    np.testing.assert_allclose(simulated.arrival_s, requests.arrival_s)
    assert simulated.output_tokens.tolist() == requests.output_tokens.tolist()
    assert scenario.warmup_s == 0 and scenario.duration_s is None  # every logged request counts


def test_measured_statistics_are_the_files_own_by_hand(example, tmp_path, capsys):
    _, _, (report, _, _) = example
    ttft, e2e, out = RAW["ttfts"], RAW["latencies"], RAW["output_lens"]
    tpot = [(e - t) / (o - 1) for t, e, o in zip(ttft, e2e, out) if o > 1]  # vLLM's TPOT
    for metric, values in (("ttft_s", ttft), ("tpot_s", tpot), ("e2e_s", e2e)):
        for stat, value in hand_stats(values).items():
            assert report["comparison"][metric][stat]["measured"] == pytest.approx(value, rel=1e-9)
    start = RAW["start_times"]
    window_s = max(s + e for s, e in zip(start, e2e)) - min(start)
    assert report["comparison"]["throughput"]["requests_per_s"]["measured"] == pytest.approx(len(start) / window_s)
    assert report["comparison"]["throughput"]["output_tokens_per_s"]["measured"] == pytest.approx(sum(out) / window_s)

    # the command prints the same numbers and writes them with the figure
    assert main(["validate", str(SCENARIO), str(LOG), "--out", str(tmp_path / "v")]) == 0
    printed = capsys.readouterr().out
    mean_ttft_ms = hand_stats(ttft)["mean"] * 1e3
    assert f"{mean_ttft_ms:.2f}" in printed
    written = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert written["comparison"]["ttft_s"]["mean"]["measured"] == pytest.approx(hand_stats(ttft)["mean"])
    assert written["log"]["requests"] == len(start)
    assert (tmp_path / "v" / "validation_cdf.png").stat().st_size > 1000


def test_the_example_log_is_off_by_the_factors_it_was_made_with(example):
    _, _, (report, _, _) = example
    table = report["comparison"]
    # generated with slower factors (mfu 0.45, mbu 0.6 against the catalog's 0.65, 0.8): the
    # catalog's model is too fast everywhere, by about the decode rate ratio on TPOT
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        assert all(table[metric][k]["error_pct"] < -10 for k in ("mean", "p50", "p90", "p99"))
    assert table["tpot_s"]["p50"]["error_pct"] == pytest.approx((0.6 / 0.8 - 1) * 100, abs=6)


def _own_log(tmp_path: Path, scale: float = 1.0) -> Path:
    """A log simcost writes of the example scenario run with catalog factors; latencies x scale."""
    scenario = validation_scenario(SCENARIO, LOG)
    log = load_log(LOG)
    sim = simulate(scenario, log)
    out = Outcomes(sim.arrival_s, sim.ttft_s * scale, sim.e2e_s * scale, sim.output_tokens)
    return write(tmp_path, "own.json", vllm_bench_result(sim.arrival_s, log.trace.input_tokens, out, 100.0))


def test_a_log_simcost_wrote_validates_to_zero_and_doubled_latencies_to_minus_half(tmp_path):
    scenario = validation_scenario(SCENARIO, LOG)
    same, _, _ = validate(scenario, load_log(_own_log(tmp_path)))
    doubled, _, _ = validate(scenario, load_log(_own_log(tmp_path, 2.0)))
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        for k in ("mean", "p50", "p90", "p99"):
            assert same["comparison"][metric][k]["error_pct"] == pytest.approx(0.0, abs=1e-3)
            assert doubled["comparison"][metric][k]["error_pct"] == pytest.approx(-50.0, abs=1e-3)
    assert same["comparison"]["throughput"]["requests_per_s"]["error_pct"] == pytest.approx(0.0, abs=1e-3)


def test_failed_requests_are_left_out_and_counted(tmp_path):
    raw = dict(RAW)
    raw["errors"] = ["" for _ in RAW["errors"]]
    raw["errors"][3] = "Connection reset"
    raw["output_lens"] = list(RAW["output_lens"])
    raw["output_lens"][3] = 0  # as vLLM records a failed request
    log = load_log(write(tmp_path, "failed.json", raw))
    assert log.failed == 1 and len(log) == len(RAW["errors"]) - 1


def test_without_latencies_the_end_to_end_time_is_ttft_plus_the_inter_token_gaps(tmp_path):
    raw = {"input_lens": [10, 20], "output_lens": [3, 2], "ttfts": [0.1, 0.2], "itls": [[0.05, 0.07], [0.1]],
           "start_times": [11.5, 10.0], "errors": ["", ""]}
    log = load_log(write(tmp_path, "old.json", raw))
    assert log.trace.arrival_s.tolist() == [0.0, 1.5]  # sorted by start time
    assert log.trace.input_tokens.tolist() == [20, 10]
    np.testing.assert_allclose(log.e2e_s, [0.3, 0.22])
    np.testing.assert_allclose(log.tpot_s, [0.1, 0.06])


def test_vllm_request_stats_jsonl_and_a_mapped_csv(tmp_path):
    stats = write(tmp_path, "stats.jsonl", "\n".join(json.dumps(r) for r in [
        {"arrival_time": 1000.0, "num_prompt_tokens": 100, "num_generation_tokens": 5, "first_token_latency": 0.05,
         "e2e_latency": 0.25},
        {"arrival_time": 1000.4, "num_prompt_tokens": 50, "num_generation_tokens": 1, "first_token_latency": 0.03,
         "e2e_latency": 0.03}]) + "\n")
    log = load_log(stats)
    assert log.format == "vllm_stats" and log.trace.arrival_s.tolist() == pytest.approx([0.0, 0.4])
    assert log.tpot_s[0] == pytest.approx(0.05) and np.isnan(log.tpot_s[1])  # one token: no TPOT
    csv = write(tmp_path, "log.csv", "ts,in,out,first,last\n2000,10,3,2100,2300\n2500,12,4,2550,2850\n")
    log = load_log(csv, LogColumns.parse("arrival_s=ts,prompt_tokens=in,output_tokens=out,first_token_s=first,"
                                         "last_token_s=last,time_unit=ms"))
    np.testing.assert_allclose(log.ttft_s, [0.1, 0.05])
    np.testing.assert_allclose(log.e2e_s, [0.3, 0.35])


COLUMNS = "arrival_s=ts,prompt_tokens=in,output_tokens=out,ttft_s=ttft,e2e_s=e2e"


def test_aborted_requests_in_vllm_stats_are_left_out_and_counted(tmp_path):
    """vLLM writes stats for aborted requests too (no token generated): they are not replayed nor
    compared, and counted as failed; a log of nothing else is refused on one line. In a mapped
    CSV a 0-token output stays an error: what it means there is not known."""
    rows = [{"arrival_time": 1000.0, "num_prompt_tokens": 100, "num_generation_tokens": 5, "first_token_latency": 0.05,
             "e2e_latency": 0.25},
            {"arrival_time": 1000.2, "num_prompt_tokens": 70, "num_generation_tokens": 0, "first_token_latency": 0.0,
             "e2e_latency": 0.4},
            {"arrival_time": 1000.4, "num_prompt_tokens": 50, "num_generation_tokens": 2, "first_token_latency": 0.03,
             "e2e_latency": 0.09}]
    log = load_log(write(tmp_path, "stats.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n"))
    assert log.failed == 1 and len(log) == 2
    assert log.trace.input_tokens.tolist() == [100, 50] and log.trace.output_tokens.tolist() == [5, 2]
    assert log.trace.arrival_s.tolist() == pytest.approx([0.0, 0.4])
    np.testing.assert_allclose(log.e2e_s, [0.25, 0.09])
    aborted = write(tmp_path, "aborted.jsonl", json.dumps(rows[1]) + "\n")
    with pytest.raises(InputError, match="all 1 requests generated no token"):
        load_log(aborted)
    csv = write(tmp_path, "zero.csv", "ts,in,out,ttft,e2e\n0,10,3,0.1,0.5\n1,10,0,0.1,0.5\n")
    with pytest.raises(InputError) as err:
        load_log(csv, LogColumns.parse(COLUMNS))
    assert err.value.where.endswith(":3") and "out" in str(err.value)




@pytest.mark.parametrize("body, where, words", [
    ("ts,in,out,ttft,e2e\n0,10,3,0.1,0.5\n1,10,x,0.1,0.5\n", ":3", ["out", "not a whole number"]),
    ("ts,in,out,ttft,e2e\n0,10,3,0.1,0.5\n1,10,3,-0.1,0.5\n", ":3", ["ttft", "negative"]),
    ("ts,in,out,ttft,e2e\n0,10,3,0.1,0.5\n1,-4,3,0.1,0.5\n", ":3", ["in", "negative"]),
    ("ts,in,out,ttft\n0,10,3,0.1\n", ":1", ["missing column e2e"]),
    ("ts,in,out,ttft,e2e\n0,10,3,0.1,0.5\n\n1,10,3,abc,0.5\n", ":4", ["ttft", "not a number"]),
    ("ts,in,out,ttft,e2e\n0,10,3,0.4,0.3\n", ":2", ["before"]),
])
def test_bad_rows_name_file_line_and_column(tmp_path, capsys, body, where, words):
    path = write(tmp_path, "bad.csv", body)
    with pytest.raises(InputError) as err:
        load_log(path, LogColumns.parse(COLUMNS))
    assert err.value.where.endswith(where) and all(w in str(err.value) for w in words), str(err.value)
    assert main(["validate", str(SCENARIO), str(path), "--columns", COLUMNS, "--out", str(tmp_path / "o")]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"bad.csv{where}" in message and not (tmp_path / "o").exists()


def test_token_counts_written_as_whole_floats_are_read(tmp_path):
    # pandas writes an int column holding a missing value as floats ("2229.0"), and JSON
    # writers may too (161.0): the count is whole, so it is read; 2.5 stays refused (above)
    csv = write(tmp_path, "floats.csv", "ts,in,out,ttft,e2e\n0,10.0,3,0.1,0.5\n1,12,4.0,0.1,0.5\n")
    log = load_log(csv, LogColumns.parse(COLUMNS))
    assert log.trace.input_tokens.tolist() == [10, 12] and log.trace.output_tokens.tolist() == [3, 4]
    raw = json.loads(LOG.read_text())
    raw["output_lens"] = [float(n) for n in raw["output_lens"]]
    assert load_log(write(tmp_path, "floats.json", raw)).trace.output_tokens.tolist() == \
        load_log(LOG).trace.output_tokens.tolist()
    with pytest.raises(InputError, match="'2.5' is not a whole number"):
        load_log(write(tmp_path, "half.csv", "ts,in,out,ttft,e2e\n0,2.5,3,0.1,0.5\n"), LogColumns.parse(COLUMNS))


def test_a_log_of_one_token_answers_has_no_tpot_and_no_plot_warning(tmp_path, capsys):
    raw = json.loads(LOG.read_text())
    raw["output_lens"], raw["latencies"] = [1] * len(raw["ttfts"]), list(raw["ttfts"])
    path = write(tmp_path, "one_token.json", raw)
    assert main(["validate", str(SCENARIO), str(path), "-q", "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err, err  # the empty TPOT panel drew a legend with nothing in it
    report = json.loads((tmp_path / "o" / "validation.json").read_text())
    assert report["comparison"]["tpot_s"]["mean"]["measured"] is None


@pytest.mark.parametrize("scale, unit, hint", [(1e3, "s", "time_unit=ms"), (1e-3, "ms", "seconds")])
def test_times_in_the_wrong_unit_get_a_note(tmp_path, capsys, scale, unit, hint):
    # milliseconds read as seconds made TPOT 15 s per token and TTFT errors of +25,000 %, silently
    raw = json.loads(LOG.read_text())
    rows = ["ts,in,out,ttft,e2e"] + [f"{t * scale},{i},{o},{f * scale},{e * scale}" for t, i, o, f, e in zip(
        raw["start_times"], raw["input_lens"], raw["output_lens"], raw["ttfts"], raw["latencies"])]
    path = write(tmp_path, "units.csv", "\n".join(rows) + "\n")
    columns = COLUMNS + ("" if unit == "s" else ",time_unit=ms")
    note = unit_note(load_log(path, LogColumns.parse(columns)))
    assert note is not None and "TPOT" in note and hint in note, note
    assert unit_note(load_log(LOG)) is None
    assert main(["validate", str(SCENARIO), str(path), "--columns", columns, "-q", "--out", str(tmp_path / "o")]) == 0
    assert hint in capsys.readouterr().err


def test_a_per_item_model_is_refused_rather_than_compared_token_by_token(tmp_path, capsys):
    # ResNet-50 "validated" an LLM log: 3.42 simulated tok/s against 603 measured, TTFTs compared as
    # if an image were a prompt; the log's prompt and output tokens mean nothing to a per-item model
    edge = Path(__file__).resolve().parents[1] / "configs" / "scenarios" / "edge_resnet50_jetson.yaml"
    with pytest.raises(InputError, match="per item"):
        validation_scenario(edge, LOG)
    assert main(["validate", str(edge), str(LOG), "-q", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_scenario_naming_its_workloads_says_why_the_log_is_not_one_of_them(tmp_path, capsys):
    # cloud_edge_8b's pools serve workload 'chat'; the replay's only workload is the log ('default'),
    # and the bare "'chat' is not a workload of this scenario (known: default)" left a user guessing
    scenario = Path(__file__).resolve().parents[1] / "configs" / "scenarios" / "cloud_edge_8b.yaml"
    assert main(["validate", str(scenario), str(LOG), "-q", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'chat'" in err and "validate replays the log as the scenario's one workload" in err


def test_iso_datetimes_are_read_as_times(tmp_path):
    # gateways and tracing tools (LiteLLM, Langfuse) export start, first-token and end times as ISO
    # 8601 text; they were refused as "not a number"
    csv = write(tmp_path, "iso.csv", "start,in,out,first,end\n"
                "2025-03-01T12:00:00.250Z,10,3,2025-03-01T12:00:00.350Z,2025-03-01T12:00:00.750Z\n"
                "2025-03-01 12:00:01.000000+00:00,12,4,2025-03-01 12:00:01.050000+00:00,2025-03-01 12:00:01.400000+00:00\n")
    log = load_log(csv, LogColumns.parse("arrival_s=start,prompt_tokens=in,output_tokens=out,first_token_s=first,"
                                         "last_token_s=end"))
    np.testing.assert_allclose(log.trace.arrival_s, [0.0, 0.75])
    np.testing.assert_allclose(log.ttft_s, [0.1, 0.05], atol=1e-6)
    np.testing.assert_allclose(log.e2e_s, [0.5, 0.4], atol=1e-6)
    mixed = write(tmp_path, "mixed.csv", "start,in,out,first,end\n2025-03-01T12:00:00,10,3,0.1,0.5\n"
                  "5,10,3,0.1,0.5\n")
    with pytest.raises(InputError) as err:
        load_log(mixed, LogColumns.parse("arrival_s=start,prompt_tokens=in,output_tokens=out,ttft_s=first,e2e_s=end"))
    assert err.value.where.endswith("mixed.csv:3") and "start" in str(err.value), str(err.value)


def test_a_log_spanning_more_than_a_year_is_refused(tmp_path):
    path = write(tmp_path, "ns.csv", "ts,in,out,ttft,e2e\n0,10,3,0.1,0.5\n40000000000,10,3,0.1,0.5\n")  # ns read as s
    with pytest.raises(InputError, match="time unit"):
        load_log(path, LogColumns.parse(COLUMNS))


@pytest.mark.parametrize("change, words", [
    (lambda r: r.pop("start_times"), ["start_times", "--save-detailed"]),
    (lambda r: r["ttfts"].pop(), ["ttfts has", "one per request"]),
    (lambda r: r["ttfts"].__setitem__(7, -0.5), ["negative", "request 7"]),
    (lambda r: r["input_lens"].__setitem__(4, 2.5), ["input_lens[4]", "whole number"]),
    (lambda r: r["errors"].__setitem__(slice(None), ["boom"] * len(r["errors"])), ["all", "failed"]),
])
def test_a_bad_vllm_bench_file_fails_on_one_line(tmp_path, change, words):
    raw = json.loads(LOG.read_text())
    change(raw)
    with pytest.raises(InputError) as err:
        load_log(write(tmp_path, "bad.json", raw))
    assert all(w in str(err.value) for w in words) and "bad.json:" in err.value.where, str(err.value)


@pytest.mark.parametrize("text, words", [
    ("arrival_s=ts,prompt_tokens=in", ["missing output_tokens"]),
    ("arrival_s=ts,prompt_tokens=in,output_tokens=out,ttft_s=a", ["either ttft_s and e2e_s"]),
    ("arrival=ts", ["unknown key 'arrival'"]),
    ("arrival_s=ts,prompt_tokens=in,output_tokens=out,ttft_s=a,e2e_s=b,time_unit=h", ["time_unit"]),
])
def test_a_bad_column_map_is_refused(text, words):
    with pytest.raises(InputError) as err:
        LogColumns.parse(text)
    assert err.value.where == "--columns" and all(w in str(err.value) for w in words)


def test_calibrate_from_the_log_recovers_the_factors_it_was_made_with(tmp_path, capsys):
    fit = fit_log(validation_scenario(SCENARIO, LOG), load_log(LOG), parse_fit(None))
    # TTFT of a request moves by the phase of step boundaries when mfu changes at all, a noise
    # floor of a few per cent on mfu; decode steps pin mbu tighter
    assert fit.factors["mfu"] == pytest.approx(TRUE["mfu"], rel=0.05)
    assert fit.factors["mbu"] == pytest.approx(TRUE["mbu"], rel=0.02)
    assert fit.factors["step_overhead_s"] == 0.005  # held at the catalog's value
    assert fit.median_abs_pct["after"]["tpot_s"] < fit.median_abs_pct["before"]["tpot_s"] / 10
    # the profile it writes is one a scenario can use, and the log then validates closely
    profile = tmp_path / "profile.yaml"
    write_log_profile(profile, validation_scenario(SCENARIO, LOG), fit, LOG, len(RAW["ttfts"]))
    report, _, _ = validate(validation_scenario(SCENARIO, LOG, [f"perf.profile={profile}"]), load_log(LOG))
    table = report["comparison"]
    assert abs(table["tpot_s"]["mean"]["error_pct"]) < 2 and abs(table["e2e_s"]["mean"]["error_pct"]) < 2
    assert abs(table["ttft_s"]["mean"]["error_pct"]) < 10


def test_calibrate_log_flags(tmp_path, capsys):
    assert main(["calibrate", "--log", str(LOG)]) == 2
    assert "--scenario" in capsys.readouterr().err
    assert main(["calibrate", "--log", str(LOG), "--scenario", str(SCENARIO), "--fit", "mfu,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["calibrate", "--log", str(LOG), "--scenario", str(SCENARIO), "--device", "h100-sxm"]) == 2
    assert main(["calibrate"]) == 2
    assert "missing" in capsys.readouterr().err


def test_a_frontend_delay_is_told_apart_from_a_prefill_rate_gap(tmp_path):
    """A log made with engine.frontend_s = 40 ms shows a 40 ms fixed TTFT gap and no per-token one
    against the same scenario without it, and none once the scenario sets it; a log whose TTFTs
    carry 0.1 ms per prompt token more shows that rate and no fixed part."""
    scenario = validation_scenario(SCENARIO, LOG)
    log = load_log(LOG)
    delayed = simulate(validation_scenario(SCENARIO, LOG, ["engine.frontend_s=0.04"]), log)
    made = write(tmp_path, "fe.json", vllm_bench_result(delayed.arrival_s, log.trace.input_tokens, delayed, 100.0))
    gap = validate(scenario, load_log(made))[0]["ttft_gap"]
    assert gap["fixed_s"] == pytest.approx(0.04, abs=1e-6) and gap["s_per_1k_prompt_tokens"] == pytest.approx(0.0, abs=1e-6)
    with_it = validate(validation_scenario(SCENARIO, LOG, ["engine.frontend_s=0.04"]), load_log(made))[0]
    assert with_it["ttft_gap"]["fixed_s"] == pytest.approx(0.0, abs=1e-6)
    assert with_it["comparison"]["ttft_s"]["p50"]["error_pct"] == pytest.approx(0.0, abs=1e-3)

    plain = simulate(scenario, log)
    extra = 1e-4 * log.trace.input_tokens.astype(float)
    slow = Outcomes(plain.arrival_s, plain.ttft_s + extra, plain.e2e_s + extra, plain.output_tokens)
    made = write(tmp_path, "rate.json", vllm_bench_result(plain.arrival_s, log.trace.input_tokens, slow, 100.0))
    gap = validate(scenario, load_log(made))[0]["ttft_gap"]
    assert gap["s_per_1k_prompt_tokens"] == pytest.approx(0.1, rel=1e-3) and gap["fixed_s"] == pytest.approx(0.0, abs=1e-4)
