"""Whether a run is about to compile numba kernels: the first run on a fresh install (or after a
kernel's source changed) compiles them for several seconds before the first event, and the CLI
says so on stderr instead of sitting silent.

Every kernel is `@njit(cache=True)`, so numba keeps its machine code on disk (in `__pycache__`
beside the source, or under NUMBA_CACHE_DIR) with an index per kernel. A kernel is cold when
that index is missing, stale (its source changed) or holds no code for this CPU.
"""

from __future__ import annotations

import sys
from typing import Any

COMPILING_NOTICE = "compiling kernels (first run only)..."


def cold_kernels() -> list[str]:
    """Names of the loaded simcost numba kernels that would be compiled, not read from the cache,
    on their first call. Only modules already imported are looked at: build the Simulation first."""
    from numba.core.registry import CPUDispatcher

    cold = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("simcost."):
            continue
        for kernel in vars(module).values():
            if (isinstance(kernel, CPUDispatcher) and kernel.py_func.__module__ == module_name
                    and not _compiled_or_cached(kernel)):
                cold.append(f"{module_name}.{kernel.py_func.__name__}")
    return sorted(cold)


def warn_if_cold(stream: Any = None) -> bool:
    """Print COMPILING_NOTICE to stream (stderr by default) when any kernel is cold; True if it did."""
    if not cold_kernels():
        return False
    print(COMPILING_NOTICE, file=stream or sys.stderr, flush=True)
    return True


def _compiled_or_cached(kernel: Any) -> bool:
    if kernel.signatures:  # already compiled in this process
        return True
    try:
        index = kernel._cache._cache_file._load_index()  # {} when missing or stale
        cpu = kernel.targetctx.codegen().magic_tuple()  # code compiled for another CPU is not reused
    except Exception:  # a kernel without a disk cache, or numba internals that moved: stay quiet
        return True
    return any(key[1] == cpu for key in index)
