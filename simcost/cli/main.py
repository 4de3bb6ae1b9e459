"""The `simcost` command: run a scenario, sweep one key, check a scenario file, inspect a trace, or
validate against a serving log.

Bad input of any kind ends with one line on stderr (`simcost: error: <where>: <problem>`) and
exit status 2, never a traceback. The subcommands and their flags are `simcost.cli.parser`'s; what
each does, `simcost.cli.commands`'; this module runs one and turns its errors into that line.
"""

from __future__ import annotations

import os
import sys
import typing
import warnings

from simcost.cli.parser import MAX_JOBS, MAX_SEEDS, build_parser, one_line
from simcost.errors import InputError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        _check_counts(args)
        if args.command in SIMULATING and args.command != "run":  # (run: after its figure process forks)
            from simcost.simulation.kernels import load_numba_target

            load_numba_target()  # before a sweep's workers fork, so they inherit it
        if args.command in SIMULATING and not getattr(args, "quiet", False):
            from simcost.simulation.kernels import compile_notice

            with compile_notice():  # a fresh install compiles numba kernels for seconds: say so, once
                status = args.func(args)
        else:
            status = args.func(args)
        sys.stdout.flush()  # a closed pipe raises here, inside the try, not at interpreter exit
        return status
    except BrokenPipeError:
        # the reader went away (`simcost ... | head`): Python's documented recipe, stdout pointed
        # at devnull so the interpreter's final flush does not raise again; 141 = 128 + SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except InputError as exc:
        print(f"simcost: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # results folders are staged, so an interrupted command leaves none
        print("simcost: interrupted; nothing written", file=sys.stderr)
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """simcost's own warnings (a borrowed kernel table, a calibration carried to another device) as
    one line a user reads, not Python's file:line report; other libraries' keep their form."""
    if "simcost" in str(filename) and issubclass(category, UserWarning):
        print(f"simcost: warning: {one_line(str(message))}", file=file or sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=file or sys.stderr)


# commands that simulate (and so may compile numba kernels on a fresh install)
SIMULATING = ("run", "sweep", "size", "levers", "commitments", "forecast", "validate", "calibrate", "breakeven")



def _check_counts(args) -> None:
    from simcost.scenario.limits import MAX_REPLICAS

    for flag, name, limit in (("--seeds", "seeds", MAX_SEEDS), ("--jobs", "jobs", MAX_JOBS),
                              ("--max-replicas", "max_replicas", MAX_REPLICAS)):
        value = getattr(args, name, None)
        if value is not None and value > limit:
            raise InputError(flag, f"{value}; expected at most {limit:,} (a bound against typos)")



def _no_numpy_hugepages() -> None:
    """numpy asks the kernel for transparent huge pages on every large array (madvise); where the
    kernel then compacts memory to find one at each first touch (THP defrag "madvise", a common
    default, and this machine's), that cost the Mooncake run ~0.45 s of system time of its ~4 s and
    a sweep worker ~0.6-0.9 s per run, against nothing measurable in user time without. Set
    through numpy's own switch before numpy loads (`import simcost.cli.main` loads none); a value
    the user exported wins."""
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")


def entry() -> typing.NoReturn:
    """The `simcost` command: `main()`, then the exit handlers (atexit: logging, multiprocessing,
    temporary files) and an immediate exit. Tearing the interpreter down after a run (numba's
    compiled code, LLVM, every module) took longer than writing the results (0.5-1.5 s on a
    2-core machine); nothing is left to write by then, and the output streams are flushed first.
    The process is the command's own, so pandas stays out of it (and the sweep workers it forks):
    pyarrow would import it (~0.25 s) only to find no data frames."""
    _no_numpy_hugepages()
    from simcost.results.background import keep_pandas_out

    keep_pandas_out()
    status = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)  # a profiler or coverage writes its data after this returns: exit normally
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader went away, or the stream was closed
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
