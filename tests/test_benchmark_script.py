"""experiments/benchmark.py's --loop and --instructions children, the harness behind
speed-history.md's loop ratios: each runs the simulation of the scenario it is given (the --loop
child reports that run's wall and CPU seconds; no timing is asserted: machines here are shared
and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmark.py"


def test_the_loop_child_times_one_simulation_run():
    out = subprocess.run([sys.executable, str(SCRIPT), "--loop-child", str(ROOT / "configs" / "scenarios" / "poisson_8b_h100.yaml"),
                          "--loop-set", "duration_s=90", "warmup_s=10"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    times = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(times) == {"wall_s", "cpu_s"}
    assert times["wall_s"] > 0 and times["cpu_s"] > 0


def test_a_bad_override_fails_the_child_with_the_scenario_error():
    out = subprocess.run([sys.executable, str(SCRIPT), "--loop-child", str(ROOT / "configs" / "scenarios" / "poisson_8b_h100.yaml"),
                          "--loop-set", "duration_s=-5"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "duration_s" in out.stderr


def test_a_workload_without_overrides_gets_a_child_command_that_runs(tmp_path):
    """Poisson 10k has no --set overrides: its child command must not end in a bare --loop-set
    (which argparse refuses), and it must run."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPT.parent))
    text = (ROOT / "configs" / "scenarios" / "poisson_8b_h100.yaml").read_text()
    scenario = tmp_path / "short.yaml"
    scenario.write_text(text.replace("duration_s: 1250", "duration_s: 60").replace("warmup_s: 60", "warmup_s: 5"))
    cmd = benchmark.loop_command(scenario, [])
    assert "--loop-set" not in cmd
    assert benchmark.loop_command(scenario, ["seed=3"])[-2:] == ["--loop-set", "seed=3"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    assert set(json.loads(out.stdout.strip().splitlines()[-1])) == {"wall_s", "cpu_s"}


def test_the_runs_child_runs_and_callgrinds_count_is_read(tmp_path):
    """--instructions' pieces that need no valgrind: the child runs the scenario it is given (a
    bad override fails it), and the instruction count is read from callgrind's report."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import benchmark
    finally:
        sys.path.remove(str(SCRIPT.parent))
    scenario = str(ROOT / "configs" / "scenarios" / "poisson_8b_h100.yaml")
    ok = subprocess.run([sys.executable, str(SCRIPT), "--runs-child", scenario, "--runs", "2", "--loop-set", "duration_s=30", "warmup_s=5"],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, str(SCRIPT), "--runs-child", scenario, "--loop-set", "duration_s=-5"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "duration_s" in bad.stderr
    report = "==7308== Events    : Ir\n==7308== Collected : 8859788788\n==7308==\n==7308== I   refs:      8,859,788,788\n"
    assert benchmark.collected_instructions(report) == 8_859_788_788
    with pytest.raises(RuntimeError, match="no instruction count"):
        benchmark.collected_instructions("valgrind: command not found\n")
