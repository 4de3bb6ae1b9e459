"""Heavy libraries load only where used, so `simcost --help` or `simcost catalog` answer at once and a
run pays only for what it draws: checked by which modules an import leaves in sys.modules (in a fresh
interpreter), never by timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import simcost

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(statement: str, candidates: list[str]) -> list[str]:
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {candidates!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_cli_module_loads_no_simulation_stack():
    heavy = ["numba", "scipy", "matplotlib", "simpy", "simcost.simulation.simulation"]
    assert loaded_after("import simcost.cli.main", heavy) == []


def test_a_run_and_its_writer_load_no_pyplot_or_scipy_solvers():
    statement = "import simcost.simulation.simulation, simcost.results.writer"
    assert loaded_after(statement, ["matplotlib", "scipy.optimize", "scipy.special"]) == []


def test_every_public_name_resolves():
    for name in simcost.__all__:
        assert getattr(simcost, name) is not None
    assert set(simcost.__all__) <= set(dir(simcost))
