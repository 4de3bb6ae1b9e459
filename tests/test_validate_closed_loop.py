"""`simcost validate` on vLLM bench results without `start_times` (vLLM before January 2026):
the replay sends as vLLM's client did. A closed loop under max_concurrency C never has more than
C in flight, sends in file order at the instants a plain-Python semaphore reference gives, and a
log simcost wrote of such a run validates to 0 %; a burst log without start_times is the same log
with equal start_times; a finite rate draws gamma gaps with the logged mean rate and burstiness."""

from __future__ import annotations

import heapq
import json
from pathlib import Path

import numpy as np
import pytest

from simcost.analysis.calibrate_log import fit_log
from simcost.analysis.validate import Outcomes, simulate, validate, validation_scenario, vllm_bench_result
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.scenario.scenario import load_scenario
from simcost.simulation.simulation import Simulation
from simcost.workload.serving_log import bench_send_times_s, load_log

LOGS = Path(__file__).resolve().parents[1] / "simcost" / "data" / "logs"
SCENARIO = LOGS / "example_8b_h100.yaml"
LOG = LOGS / "example_8b_h100_vllm_bench.json"
RAW = json.loads(LOG.read_text())
LIMIT = 8


def write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def old_result(raw: dict, **top) -> dict:
    """A result as vLLM wrote it before start_times existed: the lists, and the client's settings."""
    out = {k: v for k, v in raw.items() if k != "start_times"}
    out.update({"request_rate": "inf", "burstiness": 1.0, "max_concurrency": None, **top})
    return out


def semaphore_sends_s(arrival_s: np.ndarray, e2e_s: np.ndarray, limit: int) -> np.ndarray:
    """vLLM's client by hand: request i waits for its arrival and then for the earliest of the
    `limit` slots to free (an asyncio.Semaphore wakes waiters first come, first served)."""
    ends: list[float] = []
    sends = np.empty(len(arrival_s))
    for i, (arrival, e2e) in enumerate(zip(arrival_s, e2e_s)):
        sends[i] = max(arrival, heapq.heappop(ends)) if len(ends) == limit else arrival
        heapq.heappush(ends, sends[i] + e2e)
    return sends


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    """The example log's requests run as a closed loop of LIMIT, and the log simcost writes of it."""
    tmp = tmp_path_factory.mktemp("closed")
    path = write(tmp, "closed.json", old_result(RAW, max_concurrency=LIMIT))
    log = load_log(path)
    scenario = validation_scenario(SCENARIO, path)
    sim = simulate(scenario, log)
    result = vllm_bench_result(sim.arrival_s, log.trace.input_tokens, sim)
    result = old_result(result, max_concurrency=LIMIT, duration=float(np.max(sim.arrival_s + sim.e2e_s)))
    return log, scenario, sim, write(tmp, "own.json", result)


def test_a_closed_loop_sends_in_file_order_as_a_semaphore_would(closed):
    log, _, sim, _ = closed
    assert log.send == "closed_loop" and not log.paired
    assert not np.isnan(sim.e2e_s).any()
    # the file's order, its lengths, the first LIMIT at once
    assert sim.output_tokens.tolist() == RAW["output_lens"]
    assert np.all(np.diff(sim.arrival_s) >= 0) and np.count_nonzero(sim.arrival_s == 0) == LIMIT
    np.testing.assert_allclose(sim.arrival_s, semaphore_sends_s(np.zeros(len(log)), sim.e2e_s, LIMIT), atol=1e-9)
    # never more than LIMIT in flight, and LIMIT whenever requests still wait
    finish_s = sim.arrival_s + sim.e2e_s  # (arrival + (finish - arrival): within rounding of the finish)
    in_flight = [np.count_nonzero((sim.arrival_s <= t) & (finish_s > t + 1e-9)) for t in sim.arrival_s]
    assert max(in_flight) == LIMIT and min(in_flight) == LIMIT


def test_the_scenario_key_limits_any_trace(tmp_path):
    """workload.trace.max_concurrency outside validate: a trace with real gaps, two slots."""
    trace = tmp_path / "t.csv"
    rows = [(0.0, 3000, 300), (0.0, 200, 50), (0.1, 800, 400), (0.2, 100, 20), (5.0, 500, 100), (30.0, 100, 10)]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     + "".join(f"2024-01-01 00:00:{t:09.6f},{i},{o}\n" for t, i, o in rows))
    scenario = load_scenario(SCENARIO, [f"workload={{trace: {{name: {trace}, max_concurrency: 2}}}}", "duration_s=null",
                                        "warmup_s=0"])
    sim = Simulation(scenario, timeseries=False)
    table = sim.run().table
    assert sim.gate is not None and sim.gate.most_in_flight == 2
    arrival = np.array([r[0] for r in rows])
    e2e = table.finish_s - table.arrival_s
    np.testing.assert_allclose(table.arrival_s, semaphore_sends_s(arrival, e2e, 2), atol=1e-9)
    assert table.arrival_s[2] > arrival[2] and table.arrival_s[5] == arrival[5]  # held; not held


def test_a_log_simcost_wrote_of_a_closed_loop_validates_to_zero(closed):
    _, scenario, _, own = closed
    report, _, _ = validate(scenario, load_log(own))
    table = report["comparison"]
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        for k in ("mean", "p50", "p90", "p99"):
            assert table[metric][k]["error_pct"] == pytest.approx(0.0, abs=1e-3)
    for k in ("requests_per_s", "output_tokens_per_s"):  # measured over the logged duration
        assert table["throughput"][k]["error_pct"] == pytest.approx(0.0, abs=1e-3)
    assert report["ttft_gap"] is None and report["log"]["send"] == "closed_loop"


def test_measured_throughput_is_completions_over_the_logged_duration(tmp_path):
    log = load_log(write(tmp_path, "d.json", old_result(RAW, max_concurrency=4, duration=100.0)))
    report, _, _ = validate(validation_scenario(SCENARIO, LOG), log)
    row = report["comparison"]["throughput"]
    assert row["requests_per_s"]["measured"] == pytest.approx(len(RAW["ttfts"]) / 100.0)
    assert row["output_tokens_per_s"]["measured"] == pytest.approx(sum(RAW["output_lens"]) / 100.0)
    no_duration = load_log(write(tmp_path, "n.json", old_result(RAW, max_concurrency=4)))
    assert Outcomes.of_log(no_duration).window_s != Outcomes.of_log(no_duration).window_s  # NaN: unknown
    report, _, _ = validate(validation_scenario(SCENARIO, LOG), no_duration)
    assert report["comparison"]["throughput"]["requests_per_s"]["measured"] is None


def test_a_burst_without_start_times_is_the_burst_with_equal_start_times(tmp_path):
    equal = dict(RAW, start_times=[1234.5] * len(RAW["ttfts"]))
    without = old_result(RAW)
    a, b = load_log(write(tmp_path, "equal.json", equal)), load_log(write(tmp_path, "without.json", without))
    assert (a.send, b.send) == ("logged", "burst") and a.paired and b.paired
    scenario = validation_scenario(SCENARIO, LOG)
    ra, rb = validate(scenario, a)[0], validate(scenario, b)[0]
    assert ra["comparison"] == rb["comparison"] and ra["ttft_gap"] == rb["ttft_gap"] and ra["ttft_gap"] is not None


def test_a_finite_rate_draws_gamma_gaps_at_the_logged_rate(tmp_path):
    n, rate, burstiness = 4000, 5.0, 0.5
    raw = {"input_lens": [100] * n, "output_lens": [10] * n, "ttfts": [0.01] * n, "itls": [[0.01] * 9] * n,
           "errors": [""] * n, "request_rate": rate, "burstiness": burstiness, "max_concurrency": None}
    log = load_log(write(tmp_path, "rate.json", raw))
    assert log.send == "gamma" and not log.paired
    gaps = np.diff(bench_send_times_s(log, np.random.default_rng(3)))
    assert gaps.min() >= 0
    # mean 1/rate (standard error 1/rate/sqrt(burstiness n) = 0.0045 s); squared CV 1/burstiness
    assert gaps.mean() == pytest.approx(1 / rate, abs=0.015)
    assert gaps.var() / gaps.mean() ** 2 == pytest.approx(1 / burstiness, rel=0.15)
    # the gaps of failed requests are kept, so the survivors' rate is the logged one
    raw["errors"] = ["" if i % 2 else "boom" for i in range(n)]
    half = load_log(write(tmp_path, "half.json", raw))
    sends = bench_send_times_s(half, np.random.default_rng(3))
    assert len(sends) == n // 2 and (sends[-1] - sends[0]) / (n // 2 - 1) == pytest.approx(2 / rate, rel=0.05)


def test_a_finite_rate_replay_is_seeded_and_says_so(tmp_path, capsys):
    path = write(tmp_path, "r.json", old_result(RAW, request_rate=3.0, max_concurrency=16))
    log = load_log(path)
    a = simulate(validation_scenario(SCENARIO, path), log)
    b = simulate(validation_scenario(SCENARIO, path), log)
    c = simulate(validation_scenario(SCENARIO, path, seed=8), log)
    assert np.array_equal(a.arrival_s, b.arrival_s) and not np.array_equal(a.arrival_s, c.arrival_s)
    assert len(a.arrival_s) / (a.arrival_s[-1] - a.arrival_s[0]) == pytest.approx(3.0, rel=0.25)  # 203 gaps
    assert main(["validate", str(SCENARIO), str(path), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no start_times" in err[0] and "request_rate 3/s" in err[0]


def test_calibrate_on_a_closed_loop_log_fits_quantiles_only(closed):
    _, scenario, _, own = closed
    fit = fit_log(scenario, load_log(own), max_evaluations=6)
    assert not fit.paired and fit.evaluations <= 8  # one Nelder-Mead stage (plus its start)
    assert fit.median_abs_pct["before"]["ttft_s"] == pytest.approx(0.0, abs=1e-3)  # the log is the scenario's own


@pytest.mark.parametrize("top, words", [
    ({"request_rate": "fast"}, ["request_rate is 'fast'", '"inf"']),
    ({"request_rate": 0}, ["request_rate is 0"]),
    ({"burstiness": -1}, ["burstiness is -1"]),
    ({"max_concurrency": 0}, ["max_concurrency is 0", ">= 1"]),
    ({"max_concurrency": 2.5}, ["max_concurrency is 2.5"]),
    ({"duration": "long"}, ["duration is 'long'"]),
])
def test_bad_client_fields_fail_on_one_line(tmp_path, capsys, top, words):
    path = write(tmp_path, "bad.json", old_result(RAW, **top))
    with pytest.raises(InputError) as err:
        load_log(path)
    assert all(w in str(err.value) for w in words) and "bad.json:" in err.value.where, str(err.value)
    assert main(["validate", str(SCENARIO), str(path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_without_start_times_or_a_rate_the_log_is_refused(tmp_path):
    raw = {k: v for k, v in RAW.items() if k != "start_times"}
    with pytest.raises(InputError, match="start_times .or request_rate."):
        load_log(write(tmp_path, "none.json", raw))


def test_a_concurrency_limit_inside_a_mix_is_refused(tmp_path):
    mix = ("workload={mix: [{name: a, trace: {name: azure_conv, max_concurrency: 4}}, "
           "{name: b, trace: {name: azure_code}}]}")
    with pytest.raises(InputError, match="max_concurrency"):
        load_scenario(SCENARIO, [mix])
    with pytest.raises(InputError, match="max_concurrency"):
        load_scenario(SCENARIO, ["workload={trace: {name: azure_conv, max_concurrency: 0}}"])
