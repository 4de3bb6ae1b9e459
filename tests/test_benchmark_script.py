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
