"""The published vLLM serving check (experiments/validate_vllm_serving.py): its rows are sourced,
name devices and models simcost knows and hold what `vllm bench serve` prints; a row's benchmark
is replayed as vLLM runs it (every prompt at once, or at most max_concurrency in flight); and the
low-concurrency decode rows the kernel model matches stay within the band docs/fidelity.md
section 3b reports."""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import simcost

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import validate_vllm_serving as vs  # noqa: E402

# docs/fidelity.md section 3b: these rows land within 2-7 % on TPOT and 5 % on request throughput with
# `auto` (kernel tables); 10 % leaves room for table updates, not for a different step model
# (the roofline misses them by 23-54 %)
BAND = 0.10


def _row(model: str, max_concurrency: int) -> vs.Row:
    return next(r for r in vs.read_rows() if r.model == model and r.max_concurrency == max_concurrency)


def test_rows_are_sourced_vllm_runs_on_known_devices_and_models(tmp_path):
    with open(vs.ROWS_FILE, newline="") as f:
        raw = list(csv.DictReader(f))
    rows = vs.read_rows()
    assert len(rows) == len(raw) == 22
    assert len({r.device for r in rows}) >= 3 and len({r.model for r in rows}) >= 5
    for r, line in zip(rows, raw):
        assert r.url.startswith("https://github.com/") and r.engine.startswith("vllm-")
        assert line["notes"]  # every row states its assumptions
        assert r.num_prompts > 0 and r.duration_s > 0 and r.total_input_tokens >= r.num_prompts
        if line["requested_output_tokens"]:  # random dataset: at most what was asked for came back
            assert r.total_output_tokens <= r.num_prompts * int(line["requested_output_tokens"])
            assert r.total_output_tokens >= 0.9 * r.num_prompts * int(line["requested_output_tokens"])
        # vLLM prints request throughput as prompts / duration, rounded to 2 decimals
        assert r.published["request_throughput"] == pytest.approx(r.num_prompts / r.duration_s)
        assert r.published["mean_tpot_ms"] > 0 and r.published["median_ttft_ms"] > 0
    for key in {(r.device, r.model, r.weight_format, r.tensor_parallel) for r in rows}:
        row = next(r for r in rows if (r.device, r.model, r.weight_format, r.tensor_parallel) == key)
        scenario = simcost.load(vs.row_scenario(replace(row, num_prompts=2), tmp_path / "p.csv", "auto"))
        assert (scenario.model.name, scenario.hardware.device) == (row.model, row.device)


def test_all_at_once_rows_send_every_prompt_at_zero(tmp_path):
    row = replace(next(r for r in vs.read_rows() if math.isinf(r.request_rate) and not r.max_concurrency),
                  num_prompts=7)
    vs.row_scenario(row, tmp_path / "p.csv", "auto")
    with open(tmp_path / "p.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 7
    assert {(float(x["arrival_s"]), int(x["input_tokens"]), int(x["output_tokens"])) for x in lines} == {
        (0.0, row.input_tokens, row.output_tokens)}


def test_a_closed_loop_never_has_more_than_max_concurrency_requests_in_flight(tmp_path):
    row = replace(_row("qwen3-8b", 4), num_prompts=12, duration_s=5.0)
    run = simcost.run(vs.row_scenario(row, tmp_path / "p.csv", "auto"), timeseries=False, progress=False)
    t = run.result.table
    first = np.argsort(t.arrival_s, kind="stable")[:row.num_prompts]
    arrival, finish = t.arrival_s[first], t.finish_s[first]
    assert np.count_nonzero(arrival == 0.0) == row.max_concurrency  # the semaphore's first wave
    for at in arrival:  # in flight just after each arrival: started, not yet finished
        assert np.count_nonzero((arrival <= at) & (finish > at)) <= row.max_concurrency
    stats = vs.benchmark_stats(t, row.num_prompts)
    assert stats is not None
    assert stats["request_throughput"] == pytest.approx(row.num_prompts / (finish.max() - arrival.min()))


@pytest.mark.parametrize("model,max_concurrency", [("qwen3-8b", 1), ("qwen3-30b-a3b", 10)])
def test_low_concurrency_decode_rows_stay_within_the_reported_band(tmp_path, model, max_concurrency):
    row = _row(model, max_concurrency)
    stats, used = vs.simulate(row, "auto", tmp_path)
    assert used.startswith("kernels")
    for metric in ("mean_tpot_ms", "median_tpot_ms", "request_throughput"):
        assert abs(stats[metric] / row.published[metric] - 1.0) < BAND, metric
    # the known miss (docs/fidelity.md 3b): at low load simcost's TTFT lacks the 34-68 ms vLLM's
    # API server adds per request, so it stays below the published one
    assert stats["mean_ttft_ms"] < row.published["mean_ttft_ms"]


def test_a_long_prompt_burst_under_kv_pressure_decodes_at_vllms_pace(tmp_path):
    """A100, Qwen3-32B, 500 prompts of ~4,000 tokens at once with the A100's 2,048-token budget:
    the KV cache holds ~10 requests, so prompts are preempted mid-prefill. vLLM V1 keeps a
    preempted request's computed blocks cached and admits nothing in a step that preempted;
    simcost did neither, preempted 3,381 times and decoded at 3.5x vLLM's TPOT
    (docs/fidelity.md 3b). Now a preemption per ~10 requests, and TPOT within the band."""
    row = next(r for r in vs.read_rows() if r.device == "a100-80gb" and r.model == "qwen3-32b"
               and r.input_tokens > 3000 and math.isinf(r.request_rate))
    run = simcost.run(vs.row_scenario(row, tmp_path / "prompts.csv", "auto"), timeseries=False, progress=False)
    t = run.result.table
    assert 0 < int(t.num_preemptions.sum()) <= row.num_prompts // 5
    stats = vs.benchmark_stats(t, row.num_prompts)
    assert stats is not None
    for metric in ("mean_tpot_ms", "median_tpot_ms"):
        assert abs(stats[metric] / row.published[metric] - 1.0) < BAND, metric
