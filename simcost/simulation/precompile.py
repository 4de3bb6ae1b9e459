"""The first run on a fresh install compiles its numba kernels on both cores instead of one.

A cold `simcost run` spends ~4-7 s compiling kernels, one after another, while the second core
idles. `start()` forks a process that compiles kernels into numba's on-disk cache while the run
compiles its own. kernel_signatures.pkl lists them (each kernel's module, name and argument
types): first those the bundled example compiles, in the order it compiles them, which the
process takes from the end, so that it and the run meet in the middle; then those other
bundled scenarios add, which it compiles after. Whichever process gets to a kernel first
compiles it; the other finds it in the cache (numba writes each cache file whole, then renames
it) or, if it gets there while it is still being compiled, compiles it too: the same machine
code either way, so a run's numbers never depend on which process compiled what. A warm cache
(the list's last kernel cached) forks nothing. The process dies with the run
(PR_SET_PDEATHSIG); it prints nothing but the one-line compile notice, when it is the first to
compile (the notice's marker file keeps it to one line).

`record()` writes the list (`NUMBA_CACHE_DIR=$(mktemp -d) python -m
simcost.simulation.precompile`): it runs the scenarios with an empty cache and notes each
compilation as numba starts it. A kernel the list lacks is compiled by the run, as before.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import threading
from pathlib import Path
from typing import Any

SIGNATURES = Path(__file__).with_name("kernel_signatures.pkl")
Entry = tuple[str, str, tuple]  # (module, function name, argument types)


def load_entries(path: Path = SIGNATURES) -> tuple[list[Entry], list[Entry]]:
    """The recorded lists (the example's, in its order; the other scenarios' additions); empty
    when the file is missing or was written by a numba this one cannot read."""
    try:
        with open(path, "rb") as fh:
            first, more = pickle.load(fh)
    except Exception:  # noqa: BLE001 - a missing or foreign file only costs the speed-up
        return [], []
    return ([e for e in first if isinstance(e, tuple) and len(e) == 3],
            [e for e in more if isinstance(e, tuple) and len(e) == 3])


def dispatcher(entry: Entry) -> Any:
    """The jitted function an entry names, or None if it is gone."""
    module, name, _ = entry
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if hasattr(found, "compile") and hasattr(found, "_cache") else None


def is_cached(entry: Entry) -> bool:
    """Whether numba's cache holds the entry's kernel (its index file exists): any signature will
    do, as this only tells a warm cache from a cold one."""
    disp = dispatcher(entry)
    try:
        return disp is None or os.path.exists(disp._cache._cache_file._index_path)
    except AttributeError:  # another numba's cache layout: assume warm, fork nothing
        return True


def start(path: Path = SIGNATURES) -> int:
    """Fork the compiling process when the cache is cold; its pid, or 0 when none was started
    (also with threads running: a fork copies only this one, and a lock another held, numba's
    compiler lock say, would never be released in the copy)."""
    if (not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2
            or threading.active_count() > 1):
        return 0
    first, more = load_entries(path)
    if not first or is_cached(first[-1]):
        return 0
    import ctypes

    try:
        pid = os.fork()
    except OSError:
        return 0
    if pid:
        return pid
    try:  # the compiling process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone when the run is
        compile_all([*reversed(first), *more])
    finally:
        os._exit(0)


def compile_all(entries) -> None:
    """Compile each entry not cached yet into numba's cache; a kernel that fails is left to the run."""
    for entry in entries:
        disp = dispatcher(entry)
        if disp is None:
            continue
        try:
            disp.compile(entry[2])
        except Exception:  # noqa: BLE001 - the run compiles it itself and reports what is wrong
            continue


def record(first: Path, others: list[Path], path: Path = SIGNATURES) -> tuple[list[Entry], list[Entry]]:
    """Run `first`, then `others` (with an empty NUMBA_CACHE_DIR, which the caller sets), and
    write the kernels each compiled, in order, each once: `first`'s, then the others' additions."""
    from numba.core import event

    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.kernels import compiled_kernel
    from simcost.simulation.simulation import Simulation

    seen: list[Entry] = []

    class Recorder(event.Listener):
        def on_start(self, ev: Any) -> None:
            func = compiled_kernel(ev)
            if func is not None:
                entry = (func.__module__, func.__name__, tuple(ev.data["args"]))
                if entry not in seen:
                    seen.append(entry)

        def on_end(self, ev: Any) -> None:
            pass

    listener = Recorder()
    event.register("numba:compile", listener)
    try:
        Simulation(load_scenario(first)).run()
        num_first = len(seen)
        for scenario in others:
            Simulation(load_scenario(scenario)).run()
    finally:
        event.unregister("numba:compile", listener)
    lists = seen[:num_first], seen[num_first:]
    with open(path, "wb") as fh:
        pickle.dump(lists, fh, protocol=4)
    return lists


if __name__ == "__main__":
    if not os.environ.get("NUMBA_CACHE_DIR"):
        sys.exit("set NUMBA_CACHE_DIR to an empty folder: only kernels that compile are recorded")
    from simcost.catalog.specs import config_dir

    root = config_dir()
    first, more = record(root / "example.yaml", sorted((root / "scenarios").glob("*.yaml")))
    print(f"{SIGNATURES}: {len(first)} kernels of the example, {len(more)} more")
