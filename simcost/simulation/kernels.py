"""The one-line notice while numba compiles: the first run on a fresh install (or after a kernel's
source changed) compiles kernels for several seconds before its first events, and the CLI says
so on stderr instead of sitting silent.

Every kernel is `@njit(cache=True)`, so numba keeps its machine code on disk (in `__pycache__`
beside the source, or under NUMBA_CACHE_DIR) and a warm run loads it without compiling. Which
kernels a run calls depends on the scenario (the token-gap sketch only above a size, a ledger path
only with some pricing), so the notice listens for compilations as they start (numba's
"numba:compile" event) instead of guessing from the cache beforehand.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

COMPILING_NOTICE = "compiling kernels (first run only)..."


@contextmanager
def compile_notice(stream: Any = None) -> Iterator[None]:
    """While inside, the first compilation of a simcost kernel prints COMPILING_NOTICE once to
    `stream` (stderr by default). Worker processes forked inside inherit it, so a parallel sweep's
    first run on a fresh install may print it once per worker."""
    from numba.core import event

    class Notice(event.Listener):
        shown = False

        def on_start(self, ev: Any) -> None:
            dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
            module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
            if not self.shown and module.startswith("simcost."):
                self.shown = True
                print(COMPILING_NOTICE, file=stream or sys.stderr, flush=True)

        def on_end(self, ev: Any) -> None:
            pass

    listener = Notice()
    event.register("numba:compile", listener)
    try:
        yield
    finally:
        event.unregister("numba:compile", listener)
