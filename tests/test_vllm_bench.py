"""vllm_bench.json / `simcost run --format vllm`: vLLM's benchmark keys, in its units, holding
summary.json's numbers over the same requests."""

from __future__ import annotations

import json
import statistics

import pytest
from scenarios import scenario

from simcost.cli.main import main
from simcost.results.vllm_bench import vllm_bench
from simcost.simulation.simulation import run
from simcost.workload.request_table import COMPLETED

# What `vllm bench serve --save-result --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles
# 50,90,95,99` writes besides per-request lists and run metadata (vllm/benchmarks/serve.py: the
# `result` dict, then mean_/median_/std_/p{P}_ + metric + _ms per selected metric)
VLLM_KEYS = {"duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput",
             "request_goodput", "output_throughput", "total_token_throughput"} | {
    f"{stat}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99")}


@pytest.fixture(scope="module")
def result():
    return run(scenario(warmup_s=10.0, fleet={"replicas": 2}))


def test_keys_are_vllms(result):
    out = vllm_bench(result)
    assert set(out) - {"backend", "model_id", "num_prompts"} == VLLM_KEYS
    assert not [k for k in out if k.endswith("_s")]  # every latency in ms, as vLLM's


def test_values_are_the_summarys_in_milliseconds(result):
    out, s = vllm_bench(result), result.summary
    for m in ("ttft", "tpot", "itl", "e2el"):
        for ours, theirs in (("mean", "mean"), ("p50", "median"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99")):
            assert out[f"{theirs}_{m}_ms"] == pytest.approx(1e3 * s[f"{m}_s"][ours], rel=1e-12)
    assert out["duration"] == s["measured_window_s"] and out["completed"] == s["requests"]["measured"]
    # vLLM's throughputs: totals over the benchmark duration
    assert out["request_throughput"] == pytest.approx(out["completed"] / out["duration"])
    assert out["output_throughput"] == pytest.approx(out["total_output_tokens"] / out["duration"])
    assert out["total_token_throughput"] == pytest.approx(
        (out["total_input_tokens"] + out["total_output_tokens"]) / out["duration"])


def test_std_is_the_population_spread_of_the_measured_requests(result):
    t = result.table
    measured = [i for i in range(t.num_requests) if t.status[i] == COMPLETED and t.arrival_s[i] >= 10.0]
    assert 0 < len(measured) < t.num_requests  # warm-up left some out
    e2el_ms = [1e3 * (float(t.finish_s[i]) - float(t.arrival_s[i])) for i in measured]
    ttft_ms = [1e3 * (float(t.first_token_s[i]) - float(t.arrival_s[i])) for i in measured]
    out = vllm_bench(result)
    assert out["std_e2el_ms"] == pytest.approx(statistics.pstdev(e2el_ms), rel=1e-9)
    assert out["std_ttft_ms"] == pytest.approx(statistics.pstdev(ttft_ms), rel=1e-9)
    assert out["total_output_tokens"] == sum(int(t.output_tokens[i]) for i in measured)


def test_run_format_vllm_prints_the_json_the_folder_holds(tmp_path, capsys):
    from simcost.catalog.specs import config_dir

    out_dir = tmp_path / "run"
    assert main(["run", str(config_dir() / "example.yaml"), "--set", "duration_s=30", "--set", "warmup_s=5", "--out", str(out_dir),
                 "--format", "vllm", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out_dir / "vllm_bench.json").read_text())
    assert printed["mean_ttft_ms"] == pytest.approx(1e3 * json.loads((out_dir / "summary.json").read_text())["ttft_s"]["mean"])
