"""Writing that need not hold up a run: its figures (and focus.parquet), in a second process.

`simcost run` forks a child once it has imported the simulation stack (which the child then
shares instead of importing again for its jobs' inputs). While the parent loads numba's target and
simulates, the child imports matplotlib (~0.4 s) and pyarrow (~0.15 s; not pandas); when the run
ends the parent hands it small inputs (CDF points, the time series, the bill's rows) and writes
the CSV and JSON files while the child draws. With a core to
spare that takes up to ~1 s off the whole process (docs/speed.md). The parent waits for the child
before the results folder is published, so the folder still appears whole.

A job that fails in the child comes back as a `BackgroundFailure` naming its file; the caller
publishes the other files and reports it. Ctrl-C goes to the parent, which ends the child (the
child ignores SIGINT, so it prints nothing); a parent that dies closes the pipe and the child exits.

Without fork (Windows), with threads running (forking them is unsafe) or with one core, the
jobs run in-process, in order, as before.
"""

from __future__ import annotations

import gc
import importlib.abc
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

# (file it writes, function, arguments): functions and arguments pickle, so they can cross the pipe
Job = tuple[str, Callable[..., Any], tuple]


class BackgroundFailure(RuntimeError):
    """Jobs that failed: {file name: the error's last lines}."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        self.folder: object = None  # where the other files went, when a results folder was written
        super().__init__(failures)

    def __str__(self) -> str:
        return "; ".join(f"{name}: {why.strip().splitlines()[-1] if why.strip() else 'failed'}"
                         for name, why in self.failures.items())


def _run_jobs(jobs: list[Job]) -> dict[str, str]:
    failures = {}
    for name, function, args in jobs:
        try:
            function(*args)
        except Exception:  # one failed figure must not cost the others
            failures[name] = traceback.format_exc(limit=-2)
    return failures


def _warm_figures() -> None:
    """matplotlib, the import the child exists to take off the parent's path."""
    import io

    from simcost.results.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2, 2))  # one small figure saved: fonts, text layout and PNG encoder loaded now
    ax.step([0, 1], [0, 1], label="warm")
    ax.legend(title="up")
    fig.savefig(io.BytesIO(), format="png", dpi=110)
    plt.close(fig)
    # what unpickling the jobs imports (the parent has imported them before forking, as a rule)
    import simcost.metrics.timeseries  # noqa: F401
    import simcost.results.focus  # noqa: F401


class _NoPandas(importlib.abc.MetaPathFinder):
    """Refuses pandas: pyarrow imports it on its first array only to tell pandas objects apart
    (~0.25 s of CPU); simcost hands it none, and focus.parquet comes out byte-identical without it."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] == "pandas":
            raise ImportError(f"{fullname}: not loaded by simcost's own processes")
        return None


def keep_pandas_out() -> None:
    """For processes that are simcost's alone (the figure process; the `simcost` command and the
    sweep workers it forks, which write focus.parquet in-process): pandas stays unloaded. Never
    for a library user's process, whose own code may want pandas after pyarrow has looked."""
    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def _warm_parquet() -> None:
    keep_pandas_out()
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401

        pa.array([0.0])
    except ImportError:
        pass


class _Helper:
    """A second drawer, forked from the child once matplotlib is loaded (before pyarrow, which
    may start threads): the child's jobs are split between the two, so on two cores latency.png
    and timeseries.png are drawn at once (~0.45 s one after the other, ~0.3 s side by side).
    Linux only (it must die with the child: PR_SET_PDEATHSIG, so a parent that kills the child
    on Ctrl-C kills it too); elsewhere the child draws everything itself."""

    def __init__(self, inherited: Any) -> None:
        """`inherited`: the child's end of the parent's pipe, closed in the helper (the parent
        must see EOF there when the child dies)."""
        self.pid = 0
        self._conn: Any = None
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ours, theirs = multiprocessing.Pipe()
        child_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError:  # no process to spare (EAGAIN): the child draws everything itself
            ours.close()
            theirs.close()
            return
        if pid == 0:  # the helper
            status = 0
            try:
                ours.close()
                inherited.close()
                libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
                if os.getppid() == child_pid:  # (not orphaned before the line above)
                    jobs = theirs.recv()
                    theirs.send(_run_jobs(jobs))
            except BaseException:  # EOF (the child had nothing to give), a broken pipe: just go
                status = 1
            finally:
                os._exit(status)
        theirs.close()
        self.pid, self._conn = pid, ours

    def split(self, jobs: list[Job]) -> list[Job]:
        """Hand every other job to the helper; the rest are the caller's."""
        if not self.pid or len(jobs) < 2:
            return jobs
        self._conn.send(jobs[1::2])
        return jobs[0::2]

    def close(self, jobs: list[Job]) -> dict[str, str]:
        """The helper's failures (all of its jobs, if it died), once it is gone."""
        if not self.pid:
            return {}
        failures: dict[str, str] = {}
        mine = jobs[1::2] if len(jobs) >= 2 else []
        try:
            if mine:
                failures = self._conn.recv()
        except (EOFError, OSError):
            failures = {name: "the second figure process died" for name, _, _ in mine}
        self._conn.close()  # a helper still waiting sees EOF and exits
        os.waitpid(self.pid, 0)
        return failures


def _child(conn: Any, parent_end: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    parent_end.close()  # so a parent that dies leaves this end at EOF, not waiting forever
    # no garbage collection while matplotlib and pyarrow create their long-lived objects (its
    # passes over them were ~0.1 s of this process's ~1 s of CPU), and none of them, nor the
    # parent's modules, scanned again after (gc.freeze): the jobs' collections see only their own.
    # The helper, forked in between, keeps it off: it lives for one figure
    gc.disable()  # (the parent forks with its collector off while it imports, as a rule)
    try:
        _warm_figures()
    except Exception:  # a broken matplotlib install: the jobs report it
        pass
    helper = _Helper(conn)
    _warm_parquet()
    gc.freeze()
    gc.enable()
    try:
        jobs = conn.recv()
    except (EOFError, OSError):
        helper.close([])
        return  # the parent wrote nothing (an input error, an interrupt)
    failures = _run_jobs(helper.split(jobs))
    failures.update(helper.close(jobs))
    conn.send(failures)


def _can_fork() -> bool:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return (cores > 1 and "fork" in multiprocessing.get_all_start_methods()
            and threading.active_count() == 1)


class Background:
    """`Background()` starts the child (when it can); `run(jobs)` hands them over, `wait()` blocks
    until they are written and raises `BackgroundFailure` for any that failed; `close()` ends the
    child whatever state it is in. Without a child, `run` does the jobs at once and `wait` reports."""

    def __init__(self, enabled: bool = True):
        self._process: Any = None
        self._conn: Any = None
        self._failures: dict[str, str] = {}
        self._pending: list[str] = []
        if enabled and _can_fork():
            context = multiprocessing.get_context("fork")
            self._conn, child_end = context.Pipe()
            self._process = context.Process(target=_child, args=(child_end, self._conn), daemon=True,
                                            name="simcost-figures")
            self._process.start()
            child_end.close()

    @property
    def forked(self) -> bool:
        return self._process is not None

    def run(self, jobs: list[Job]) -> None:
        if self._process is None:
            self._failures.update(_run_jobs(jobs))
            return
        self._pending = [name for name, _, _ in jobs]
        self._conn.send(jobs)

    def wait(self) -> None:
        if self._process is not None and self._pending:
            try:
                self._failures.update(self._conn.recv())
            except (EOFError, OSError):  # killed (out of memory?) before it answered
                self._process.join()
                why = f"the figure process ended with exit code {self._process.exitcode}"
                self._failures.update({name: why for name in self._pending})
            self._pending = []
        if self._failures:
            failures, self._failures = self._failures, {}
            raise BackgroundFailure(failures)

    def close(self) -> None:
        if self._process is None:
            return
        self._conn.close()  # a child still waiting for jobs sees EOF and exits
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._process = None

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
