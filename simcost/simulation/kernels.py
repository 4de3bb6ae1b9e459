"""Getting numba ready for a run: its CPU target loaded without scipy.linalg, and the one-line
notice while it compiles (the first run on a fresh install, or after a kernel's source changed,
compiles kernels for several seconds before its first events, and the CLI says so on stderr
instead of sitting silent).

Every kernel is `@njit(cache=True)`, so numba keeps its machine code on disk (in `__pycache__`
beside the source, or under NUMBA_CACHE_DIR) and a warm run loads it without compiling. Which
kernels a run calls depends on the scenario (the token-gap sketch only above a size, a ledger path
only with some pricing), so the notice listens for compilations as they start (numba's
"numba:compile" event) instead of guessing from the cache beforehand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

COMPILING_NOTICE = "compiling kernels (first run only)..."

# numba.np.arraymath imports this at import time only to pick a BLAS inner product for
# np.correlate/np.convolve on floats; importing it imports all of scipy.linalg first
_BLAS_PROBE = "scipy.linalg.cython_blas"


def load_numba_target() -> None:
    """Load numba's CPU target (the typing and lowering registries every first kernel call loads,
    even from the on-disk cache) now, minus scipy.linalg. Loading it imports numba.np.arraymath,
    which imports scipy.linalg (and numpy.f2py through scipy's array-API layer) to see whether
    BLAS is there: ~0.2 s of CPU, a tenth of a whole `simcost run`, for np.correlate and
    np.convolve, which no simcost kernel calls. The probe is refused for that one import and
    nothing else: a later `import scipy.linalg` works as usual, and numba's np.dot and linalg
    check for BLAS again when they are compiled. What stays is that np.correlate/np.convolve
    compiled later in this process take numba's loop instead of BLAS, so only the CLI, which owns
    its process, calls this; a library user's process keeps numba's own behaviour."""
    from numba.core.registry import cpu_target

    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        cpu_target.target_context.refresh()  # nothing to save: BLAS is loaded, or the target is
        return
    sys.modules[_BLAS_PROBE] = None  # type: ignore[assignment]  # importing it now fails: "no BLAS"
    try:
        cpu_target.target_context.refresh()
    finally:
        if sys.modules.get(_BLAS_PROBE, ...) is None:
            del sys.modules[_BLAS_PROBE]


@contextmanager
def compile_notice(stream: Any = None) -> Iterator[None]:
    """While inside, the first compilation of a simcost kernel prints COMPILING_NOTICE once to
    `stream` (stderr by default). Worker processes forked inside (a parallel sweep's) inherit the
    listener; the first process to compile creates a marker file, so the command prints it once."""
    import tempfile  # (numba has imported it already)

    from numba.core import event

    owner = os.getpid()
    marker = os.path.join(tempfile.gettempdir(), f"simcost-compiling-{owner}-{os.urandom(4).hex()}")

    class Notice(event.Listener):
        shown = False  # in this process

        def on_start(self, ev: Any) -> None:
            if self.shown or compiled_kernel(ev) is None:
                return
            self.shown = True
            if _first_to_claim(marker):
                print(COMPILING_NOTICE, file=stream or sys.stderr, flush=True)

        def on_end(self, ev: Any) -> None:
            pass

    listener = Notice()
    event.register("numba:compile", listener)
    try:
        yield
    finally:
        event.unregister("numba:compile", listener)
        if os.getpid() == owner and os.path.exists(marker):
            os.unlink(marker)


def compiled_kernel(ev: Any) -> Any:
    """The simcost function a "numba:compile" event compiles (its py_func), or None for anyone
    else's kernel."""
    dispatcher = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
    func = getattr(dispatcher, "py_func", None)
    return func if (getattr(func, "__module__", "") or "").startswith("simcost.") else None


def _first_to_claim(marker: str) -> bool:
    """Create `marker` unless another process did; True for the one that created it (and when
    the folder cannot be written: a notice twice beats none)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True
