"""Heavy libraries load only where used, so `simcost --help` or `simcost catalog` answer at once and a
run pays only for what it draws: checked by which modules an import leaves in sys.modules (in a fresh
interpreter), never by timing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import simcost

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(statement: str, candidates: list[str]) -> list[str]:
    probe = f"import sys\n{statement}\nprint('loaded:', *(m for m in {candidates!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[-1].split()[1:]  # the probe's line, after whatever the statement printed


def test_the_cli_module_loads_no_simulation_stack():
    heavy = ["numpy", "numba", "scipy", "matplotlib", "simpy", "simcost.simulation.simulation"]  # (numpy: see below)
    assert loaded_after("import simcost.cli.main", heavy) == []


def test_a_run_and_its_writer_load_no_pyplot_or_scipy_solvers():
    statement = "import simcost.simulation.simulation, simcost.results.writer"
    assert loaded_after(statement, ["matplotlib", "scipy.optimize", "scipy.special"]) == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: figures are drawn in-process")
def test_simcost_run_leaves_pyplot_and_pandas_to_its_figure_process(tmp_path):
    """The run's parent never imports matplotlib or pandas (pyarrow loads it): its figures and
    focus.parquet come from the child forked at the start, and they are there all the same."""
    out = tmp_path / "run"
    statement = ("from simcost.cli.main import main\n"
                 f"assert main(['run', 'configs/example.yaml', '--set', 'duration_s=30', '--set', 'warmup_s=5', "
                 f"'--out', {str(out)!r}, '--quiet']) == 0")
    assert loaded_after(statement, ["matplotlib", "pandas", "scipy.optimize", "scipy.linalg"]) == []
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "timeseries.png").exists() == (out / "timeseries.csv").exists()


def test_the_command_writes_parquet_in_process_without_pandas_and_byte_for_byte(tmp_path):
    """`simcost sweep --jobs 1` writes each run's focus.parquet in its own process: pyarrow would
    import pandas there only to find no data frames; the command keeps it out (python -X
    importtime lists every module it imports), and the file is the one written with pandas loaded.
    `main()` called from a user's process leaves pandas alone."""
    pytest.importorskip("pyarrow")
    pytest.importorskip("pandas")
    args = ["sweep", "configs/example.yaml", "--param", "fleet.replicas", "--values", "1", "--set", "duration_s=30",
            "--set", "warmup_s=5", "--jobs", "1", "--quiet"]
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "simcost.cli", *args, "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    # (a refused import is listed too, as "pandas" alone: a loaded pandas brings its data frame)
    assert "pyarrow.parquet" in imported and "pandas.core.frame" not in imported
    statement = f"from simcost.cli.main import main\nassert main({[*args, '--out', str(tmp_path / 'main')]!r}) == 0"
    assert loaded_after(statement, ["pandas"]) == ["pandas"]  # (pyarrow's doing, in a process not the command's)
    cli, in_main = (tmp_path / side / "fleet.replicas=1" / "focus.parquet" for side in ("cli", "main"))
    assert cli.read_bytes() == in_main.read_bytes()


@pytest.mark.parametrize("exported,expected", [(None, "False"), ("1", "True")])
def test_the_command_turns_numpy_hugepages_off_unless_the_user_chose(exported, expected):
    """entry() sets numpy's NUMPY_MADVISE_HUGEPAGE switch before numpy loads (the CLI module
    loads none: above); a value the user exported is kept."""
    probe = ("import simcost.cli.main as cli\n"
             "cli._no_numpy_hugepages()\n"
             "import numpy\n"
             "core = numpy._core if hasattr(numpy, '_core') else numpy.core  # (numpy 1.26: numpy.core)\n"
             "_set_madvise_hugepage = core.multiarray._set_madvise_hugepage\n"
             "print(_set_madvise_hugepage(True))")  # returns the setting numpy started with
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if exported is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = exported
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected]


def test_numba_target_loads_without_scipy_linalg_which_still_imports_after():
    """load_numba_target refuses numba's BLAS probe for its one import only: the kernels run, then
    scipy.linalg and its BLAS import as usual."""
    statement = ("from simcost.simulation.kernels import load_numba_target\n"
                 "load_numba_target()\n"
                 "import numpy as np\n"
                 "from simcost.engine.decode_kernels import decode_blocks_needed\n"
                 "ids = np.array([0, 1])\n"
                 "assert decode_blocks_needed(ids, np.array([16, 3]), np.array([4, 9]), np.array([1, 1]), 16) == 1\n"
                 "print('before:', 'scipy.linalg' in sys.modules)\n"
                 "import scipy.linalg.cython_blas")
    assert loaded_after(statement, ["scipy.linalg", "scipy.linalg.cython_blas"]) == ["scipy.linalg",
                                                                                     "scipy.linalg.cython_blas"]
    probe = f"import sys\n{statement}"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stdout.splitlines() == ["before: False"], proc.stderr


def test_every_public_name_resolves():
    for name in simcost.__all__:
        assert getattr(simcost, name) is not None
    assert set(simcost.__all__) <= set(dir(simcost))
