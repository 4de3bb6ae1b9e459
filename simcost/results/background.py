"""Writing that need not hold up a run: its figures (and focus.parquet), in a second process.

`simcost run` forks a child once it has imported the simulation stack (which the child then
shares instead of importing again for its jobs' inputs). While the parent loads numba's target and
simulates, the child imports matplotlib (~0.4 s) and pyarrow (~0.15 s; not pandas); when the run
ends the parent hands it small inputs (CDF points, the time series, the bill's rows) and writes
the CSV and JSON files while the child draws. The two figures are handed over as soon as their
inputs exist (`early`: latency.png when the last request finishes, timeseries.png once the bill
is settled), so they are drawn while the parent settles the bill and summarises, one by the
child and one by its helper; each keeps its figure's bytes until the folder exists. With a core to
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
from pathlib import Path
from typing import Any

# (file it writes, function, arguments): functions and arguments pickle, so they can cross the pipe;
# function None: the file is an early figure's, written from the bytes the child drew (Background.early)
Job = tuple[str, Callable[..., Any] | None, tuple]


class BackgroundFailure(RuntimeError):
    """Jobs that failed: {file name: the error's last lines}."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        self.folder: object = None  # where the other files went, when a results folder was written
        super().__init__(failures)

    def __str__(self) -> str:
        return "; ".join(f"{name}: {why.strip().splitlines()[-1] if why.strip() else 'failed'}"
                         for name, why in self.failures.items())


def _run_jobs(jobs: list[Job], drawn: dict[str, bytes | str] | None = None) -> dict[str, str]:
    """Each job run; a job whose function is None writes the file `drawn` holds for its name (its
    bytes, or the error that drawing them raised) to its one argument, the path."""
    failures = {}
    for name, function, args in jobs:
        try:
            if function is None:
                made = (drawn or {}).get(name, "not drawn")
                if isinstance(made, str):
                    failures[name] = made
                else:
                    Path(args[0]).write_bytes(made)
            else:
                function(*args)
        except Exception:  # one failed figure must not cost the others
            failures[name] = traceback.format_exc(limit=-2)
    return failures


def _draw(function: Callable[..., bytes], args: tuple) -> bytes | str:
    """An early figure's bytes, or what went wrong (reported when its file is asked for)."""
    try:
        return function(*args)
    except Exception:
        return traceback.format_exc(limit=-2)


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
    may start threads): every other early figure (from the first) and every other job left to
    draw go to it, so on two cores latency.png and timeseries.png are drawn at once (~0.6 s one
    after the other, ~0.35 s side by side; the whole process waited 0.3-0.55 s on them after
    writing its files, ~0.2 s now). It keeps its early figures' bytes and writes their files
    itself when the jobs come.
    Linux only (it must die with the child: PR_SET_PDEATHSIG, so a parent that kills the child
    on Ctrl-C kills it too); elsewhere the child draws everything itself."""

    def __init__(self, inherited: Any) -> None:
        """`inherited`: the child's end of the parent's pipe, closed in the helper (the parent
        must see EOF there when the child dies)."""
        self.pid = 0
        self._conn: Any = None
        self._theirs: list[Job] = []  # the jobs handed to the helper
        self._early: set[str] = set()  # the early figures it draws (and holds the bytes of)
        self._offered = 0  # early figures seen: the odd ones go to the helper
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
                    theirs.send(_serve(theirs))
            except BaseException:  # EOF (the child had nothing to give), a broken pipe: just go
                status = 1
            finally:
                os._exit(status)
        theirs.close()
        self.pid, self._conn = pid, ours

    def early(self, name: str, function: Callable[..., bytes], args: tuple) -> bool:
        """Have the helper draw every other early figure, from the first (True: it took this
        one): the child may still be drawing the first when the second comes."""
        self._offered += 1
        if not self.pid or not self._offered % 2:
            return False
        try:
            self._conn.send(("early", name, function, args))
        except OSError:  # the helper is gone: the child draws it
            return False
        self._early.add(name)
        return True

    def split(self, jobs: list[Job]) -> list[Job]:
        """Hand the helper the files of the early figures it drew and every other figure still
        to draw; the rest are the caller's (with the files of the early figures it drew)."""
        drawable = [job for job in jobs if job[1] is not None][1::2]
        self._theirs = [job for job in jobs if job[1] is None and job[0] in self._early] + drawable
        if not self.pid or not self._theirs:
            self._theirs = []
            return jobs
        try:
            self._conn.send(("jobs", self._theirs))
        except OSError:  # the helper is gone: `close` reports its jobs
            pass
        return [job for job in jobs if not any(job is theirs for theirs in self._theirs)]

    def close(self) -> dict[str, str]:
        """The helper's failures (all of its jobs, if it died), once it is gone."""
        if not self.pid:
            return {}
        failures: dict[str, str] = {}
        try:
            if self._theirs:
                failures = self._conn.recv()
        except (EOFError, OSError):
            failures = {name: "the second figure process died" for name, _, _ in self._theirs}
        self._conn.close()  # a helper still waiting sees EOF and exits
        os.waitpid(self.pid, 0)
        return failures


def _serve(conn: Any) -> dict[str, str]:
    """The helper's side: draw the early figures it is sent, then do its jobs (as `_child` does)."""
    drawn: dict[str, bytes | str] = {}
    while True:
        message = conn.recv()
        if message[0] == "jobs":
            return _run_jobs(message[1], drawn)
        _, name, function, args = message
        drawn[name] = _draw(function, args)


def _child(conn: Any, parent_end: Any, prepare: Callable[[], Any] | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends this process
    parent_end.close()  # so a parent that dies leaves this end at EOF, not waiting forever
    if prepare is not None:  # first, before matplotlib: the parent waits for it before its run
        try:
            made = prepare()
        except Exception:  # the parent does the work itself, and reports what went wrong
            made = None
        try:
            conn.send(("prepared", made))
        except OSError:
            return  # the parent is gone
        del made  # (the parent has its own copy now: this process keeps none for the run's length)
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
    drawn: dict[str, bytes | str] = {}  # early figures, by file name: their bytes or their error
    try:
        while True:
            message = conn.recv()
            if message[0] == "jobs":
                break
            _, name, function, args = message  # ("early", ...): drawn before its folder exists
            if not helper.early(name, function, args):
                drawn[name] = _draw(function, args)
    except (EOFError, OSError):
        helper.close()
        return  # the parent wrote nothing (an input error, an interrupt)
    failures = _run_jobs(helper.split(message[1]), drawn)
    failures.update(helper.close())
    conn.send(failures)


def _can_fork() -> bool:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return (cores > 1 and "fork" in multiprocessing.get_all_start_methods()
            and threading.active_count() == 1)


class Background:
    """`Background()` starts the child (when it can); `early(name, function, args)` has it draw a
    figure's bytes before the folder exists (function returns them); `run(jobs)` hands over the
    rest, an early figure's job being (name, None, (path,)); `wait()` blocks until they are written
    and raises `BackgroundFailure` for any that failed; `close()` ends the child whatever state it
    is in. Without a child, `early` does nothing (`drawn_early` says so), `run` does the jobs at
    once and `wait` reports.

    `prepare`: a function the child calls first, before its imports, for a result the parent
    needs before its run (a run's traces, parsed while the parent loads numba's target);
    `prepared()` returns it, or None (no child, or the function raised: the parent does the
    work itself, and meets the same error)."""

    def __init__(self, enabled: bool = True, prepare: Callable[[], Any] | None = None):
        self._process: Any = None
        self._conn: Any = None
        self._failures: dict[str, str] = {}
        self._pending: list[str] = []
        self._early: set[str] = set()
        self._ran = False  # run() was called: the child takes no more early figures
        self._preparing = False  # the child's answer to `prepare` is still to be read
        if enabled and _can_fork():
            context = multiprocessing.get_context("fork")
            self._conn, child_end = context.Pipe()
            self._process = context.Process(target=_child, args=(child_end, self._conn, prepare), daemon=True,
                                            name="simcost-figures")
            self._process.start()
            child_end.close()
            self._preparing = prepare is not None

    def prepared(self) -> Any:
        """What `prepare` returned in the child (waiting for it), or None; once."""
        if not self._preparing:
            return None
        self._preparing = False
        try:
            message = self._conn.recv()
        except (EOFError, OSError):  # the child died: `run` and `wait` report its files
            return None
        return message[1]

    @property
    def forked(self) -> bool:
        return self._process is not None

    def early(self, name: str, function: Callable[..., bytes], args: tuple) -> None:
        if self._process is None or self._ran:
            return  # drawn with the others, by `run`
        self.prepared()  # (read first, if nobody asked: the next answer read must be the jobs')
        try:
            self._conn.send(("early", name, function, args))
        except OSError:  # the child is gone (killed?): `run` and `wait` report its files, the run goes on
            return
        self._early.add(name)

    def drawn_early(self, name: str) -> bool:
        return name in self._early

    def run(self, jobs: list[Job]) -> None:
        if self._process is None:
            self._failures.update(_run_jobs(jobs))
            return
        self._ran = True
        self.prepared()
        self._pending = [name for name, _, _ in jobs]
        try:
            self._conn.send(("jobs", jobs))
        except OSError:  # the child is gone: `wait` names its files, the run's others are still written
            pass

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
