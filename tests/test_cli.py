"""The `simcost` command as a user meets it: the quickstart, a sweep, and every kind of bad
input giving one line naming the problem, exit status 2 and no traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "example.yaml"


def simcost(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "simcost.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600)


def test_quickstart_run_writes_results(tmp_path):
    out = tmp_path / "example"
    proc = simcost("run", EXAMPLE, "--out", out, "--set", "duration_s=120", "--set", "warmup_s=10")
    assert proc.returncode == 0, proc.stderr
    assert "TTFT" in proc.stdout and "per 1M output tokens" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        assert set(summary[key]) >= {"mean", "p50", "p90", "p95", "p99"}
    assert set(summary["throughput"]) >= {"requests_per_s", "output_tokens_per_s"}
    assert set(summary["cost"]) >= {"total_usd", "idle_usd", "usd_per_request", "usd_per_1m_output_tokens"}
    assert set(summary["requests"]) >= {"arrived", "completed", "rejected", "in_flight"}
    assert summary["seed"] == 42 and "goodput_requests_per_s" in summary
    rows = (out / "requests.csv").read_text().splitlines()
    assert len(rows) == summary["requests"]["arrived"] + 1
    assert (out / "latency.png").stat().st_size > 1000
    assert yaml.safe_load((out / "scenario.yaml").read_text())["duration_s"] == 120
    # the written scenario reproduces the run exactly
    again = simcost("run", out / "scenario.yaml", "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "summary.json").read_text()) == summary


def test_seed_override_changes_the_run(tmp_path):
    a = simcost("run", EXAMPLE, "--out", tmp_path / "a", "--set", "duration_s=60", "--set", "warmup_s=0",
                "--set", "workload.trace=null", "--set", "workload.arrivals={process: poisson, rate_per_s: 5}",
                "--set", "workload.input_tokens={dist: fixed, value: 100}",
                "--set", "workload.output_tokens={dist: fixed, value: 10}", "--seed", "5")
    assert a.returncode == 0, a.stderr
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["seed"] == 5


def test_sweep_writes_table_and_plot(tmp_path):
    out = tmp_path / "sweep"
    proc = simcost("sweep", EXAMPLE, "--param", "fleet.replicas", "--values", "1,2", "--out", out,
                   "--set", "duration_s=60", "--set", "warmup_s=10", "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    lines = (out / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("fleet.replicas,") and len(lines) == 3
    rows = json.loads((out / "sweep.json").read_text())
    assert rows[1]["usd_per_hour"] == pytest.approx(2 * rows[0]["usd_per_hour"])
    assert (out / "sweep.png").stat().st_size > 1000 and (out / "frontier.png").stat().st_size > 1000
    assert (out / "fleet.replicas=2" / "summary.json").exists()


def write(tmp_path, data) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def base():
    return yaml.safe_load(EXAMPLE.read_text())


def with_(**changes):
    data = base()
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


BAD = {
    "unknown key": (with_(engine__max_num_seq=3), ["engine.max_num_seq", "unknown key", "max_num_seqs"]),
    "wrong type": (with_(fleet__replicas="two"), ["fleet.replicas", "'two'", "whole number"]),
    "negative rate": (with_(workload__trace__rate_multiplier=-1), ["workload.trace.rate_multiplier", "-1", "> 0"]),
    "zero size": (with_(engine__block_size=0), ["engine.block_size", ">= 1"]),
    "unknown device": (with_(hardware__device="h100"), ["hardware.device", "h100", "h100-sxm"]),
    "unknown model": (with_(model__name="llama-3-8b"), ["model.name", "llama-3-8b", "llama-3.1-8b"]),
    "does not fit": (with_(model__name="llama-2-70b", hardware__device="a100-80gb"),
                     ["hardware.tensor_parallel", "llama-2-70b", "tensor_parallel"]),
    "bad yaml": ("seed: [1,\n", ["s.yaml", "YAML"]),
    "not a mapping": ("- 1\n- 2\n", ["s.yaml", "mapping"]),
    "unknown trace": (with_(workload__trace__name="azure_chat"), ["workload.trace.name", "azure_chat"]),
    "missing section": ({k: v for k, v in base().items() if k != "model"}, ["model", "missing"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_2(tmp_path, case):
    data, needles = BAD[case]
    proc = simcost("run", write(tmp_path, data), "--out", tmp_path / "out")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, err
    assert err.startswith("simcost: error: ")
    for needle in needles:
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bad_override_and_missing_file(tmp_path):
    proc = simcost("run", EXAMPLE, "--set", "engine.max_num_seqs=-5")
    assert proc.returncode == 2 and "engine.max_num_seqs" in proc.stderr and "Traceback" not in proc.stderr
    proc = simcost("run", EXAMPLE, "--set", "engine")
    assert proc.returncode == 2 and "key.path=value" in proc.stderr
    proc = simcost("run", tmp_path / "nope.yaml")
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_check_reports_capacity():
    proc = simcost("check", EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    assert "KV blocks" in proc.stdout and "h100-sxm" in proc.stdout


def test_relative_paths_in_a_scenario_are_relative_to_its_file(tmp_path):
    """A scenario next to its own trace runs from any working directory."""
    folder = tmp_path / "study"
    folder.mkdir()
    trace = ROOT / "simcost" / "data" / "traces" / "AzureLLMInferenceTrace_code.csv"
    (folder / "my_trace.csv").write_bytes(trace.read_bytes())
    data = with_(workload__trace__name="my_trace.csv", duration_s=30, warmup_s=0)
    (folder / "s.yaml").write_text(yaml.safe_dump(data))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = simcost("run", folder / "s.yaml", "--out", tmp_path / "out", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["requests"]["arrived"] > 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_every_bundled_scenario_validates_and_generates(path):
    """Each bundled scenario loads, fits its hardware and yields requests (a short slice of it)."""
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.simulation import Simulation

    scenario = load_scenario(path, ["duration_s=60", "warmup_s=0"])
    assert len(Simulation(scenario).requests) > 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_check_accepts_every_bundled_scenario_and_names_each_pool(path, capsys):
    from simcost.cli.main import main

    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ok;" in out and "KV blocks" in out
    if re.search(r"^\s*pools:", path.read_text(), re.M):  # a fleet of pools: one line per pool, each on its own device
        assert "pools" in out.splitlines()[0] and len(out.splitlines()) >= 3


def test_an_unwritable_results_folder_fails_before_the_run(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for args in (("run", EXAMPLE, "--out", blocker / "out"),
                 ("sweep", EXAMPLE, "--param", "fleet.replicas", "--values", "1,2", "--out", blocker / "sweep")):
        proc = simcost(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [f"simcost: error: --out: cannot create {blocker / args[-1].name} "
                                                    f"({blocker} is a file)"]
        assert "throughput" not in proc.stdout  # failed before simulating
