"""`njit_helper`: numba's `njit(cache=True)` for the small functions kernels call in their inner
loops (a pool kernel's list and index operations, per block of a request).

With numba's runtime (NRT) on, a call from one jitted function to another passes each array
argument's reference count through the runtime, an atomic increment and decrement per array
per call, which LLVM removes only where it inlines and prunes them (the kernel-table span's
helpers: no cost; the prefix pool's list helpers: all of it). In a loop over a request's 750 blocks that cost more than
the work: releasing a block onto the LRU took ~16 ns with three arrays passed to the helper,
~4 ns with the runtime off in the helper (the same machine code otherwise). A helper that
allocates nothing and returns no array needs no runtime, so it is compiled without it
(numba's `_nrt=False`, an option of every numba this project supports); numba refuses to
compile one that allocates, so a helper cannot silently grow into needing it. Kernels called
from Python keep the runtime (`njit`).
"""

from __future__ import annotations

from numba import njit

njit_helper = njit(cache=True, _nrt=False)  # type: ignore[call-overload]  # (_nrt: not in numba's type stubs)
