"""The first run compiles numba kernels for seconds: `simcost run` says so on stderr then, and only
then. An empty NUMBA_CACHE_DIR stands for a fresh install."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from simcost.simulation.kernels import COMPILING_NOTICE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "example.yaml"


def run_with_cache(cache_dir: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "simcost.cli.main", "run", str(EXAMPLE), "--out", str(out),
                           "--set", "duration_s=30", "--set", "warmup_s=0", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_the_notice_shows_on_a_cold_cache_only(tmp_path):
    first = run_with_cache(tmp_path / "numba", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines().count(COMPILING_NOTICE) == 1
    second = run_with_cache(tmp_path / "numba", tmp_path / "b")
    assert second.returncode == 0, second.stderr
    assert COMPILING_NOTICE not in second.stderr
    # the cold run compiled on two cores (simcost.simulation.precompile): the same numbers
    for name in ("summary.json", "requests.csv", "timeseries.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_kernel_list_names_kernels_that_exist():
    """kernel_signatures.pkl (rewritten with `python -m simcost.simulation.precompile` when
    kernels change) must not rot: every entry is a jitted function simcost still has."""
    from simcost.simulation.precompile import dispatcher, load_entries

    first, more = load_entries()
    assert len(first) >= 10
    missing = [entry[:2] for entry in first + more if dispatcher(entry) is None]
    assert not missing, f"re-record the list: {missing}"


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="the compiling process needs Linux and a second core")
def test_a_cold_cache_forks_a_process_that_fills_it(tmp_path):
    """start() on a cold cache forks a process that compiles the list into numba's cache, last
    of the example's kernels first; on a warm one it forks nothing."""
    probe = (
        "import os, pickle, sys\n"
        "from pathlib import Path\n"
        "from simcost.simulation import precompile as pc\n"
        "first, more = pc.load_entries()\n"
        "path = Path(sys.argv[1])\n"
        "path.write_bytes(pickle.dumps((first[-2:], more[:1])))\n"
        "pid = pc.start(path)\n"
        "assert pid > 0, 'nothing forked on a cold cache'\n"
        "assert os.waitpid(pid, 0)[1] == 0\n"
        "print(all(pc.is_cached(e) for e in first[-2:] + more[:1]), pc.start(path))\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "list.pkl")], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "0"]



@pytest.mark.parametrize("model, kernels", [("roofline", ["_analytic_step_s", "_analytic_span_s"]),
                                            ("kernels", ["_kernels_model_step_s", "_kernels_span_ends"])])
def test_a_run_loads_only_its_step_time_models_kernels(model, kernels):
    """A fresh install compiles what a run calls: a run must not compile (or load) the other
    step-time models' kernels, which took half of the first run's compile time when one kernel
    branched over all three. (A span of the kernels model is one call of _kernels_span_ends,
    which has _kernels_span_s compiled inside it.)"""
    probe = ("from simcost.api import run\n"
             "from simcost.perf import step_model as sm\n"
             f"run('configs/example.yaml', overrides={{'duration_s': 30, 'warmup_s': 0, 'perf.model': {model!r}}})\n"
             "used = [f.__name__ for f in (sm._analytic_step_s, sm._analytic_span_s, sm._table_model_step_s,\n"
             "        sm._table_span_s, sm._kernels_model_step_s, sm._kernels_span_ends) if f.signatures]\n"
             "print(*used)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == kernels


def test_forked_workers_print_the_notice_once_between_them(tmp_path):
    """A parallel sweep's workers are forked inside the notice: the first to compile prints it."""
    from types import SimpleNamespace

    from numba.core import event

    from simcost.simulation.kernels import compile_notice

    kernel = SimpleNamespace(py_func=SimpleNamespace(__module__="simcost.engine.decode_kernels"))
    log = tmp_path / "stderr.txt"
    with log.open("a") as stream, compile_notice(stream):
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:  # a worker compiling a simcost kernel, twice
                for _ in range(2):
                    event.start_event("numba:compile", data={"dispatcher": kernel})
                    event.end_event("numba:compile", data={"dispatcher": kernel})
                stream.flush()
                os._exit(0)
            children.append(pid)
        assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)
        event.start_event("numba:compile", data={"dispatcher": kernel})  # the parent compiles too
        event.end_event("numba:compile", data={"dispatcher": kernel})
    assert log.read_text().splitlines() == [COMPILING_NOTICE]
    assert not list(Path(tempfile.gettempdir()).glob(f"simcost-compiling-{os.getpid()}-*"))
