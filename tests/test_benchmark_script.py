"""experiments/benchmark.py's --loop child, the harness behind speed-history.md's loop ratios: it
runs the simulation of the scenario it is given and reports that run's wall and CPU seconds (no
timing is asserted: machines here are shared and noisy)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
