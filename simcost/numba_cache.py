"""numba's on-disk kernel cache, dropped when any kernel source changes.

numba keys a cached kernel on its own file's modification time and size only: a kernel that calls
another jitted function from a different file keeps the machine code it compiled against the old
callee (numba's documented limitation), so editing, say, perf/kernel_model.py alone left
step_model's cached step kernels running the old model, silently. `refresh_stale_kernels` runs
once per process when `simcost` is imported: it compares every source file that compiles kernels
(`njit`) with a stamp kept beside the cache, and if any of them changed, was added or was removed,
it deletes simcost's cached kernels, so they compile afresh (the CLI says "compiling kernels").

Where the cache is: under NUMBA_CACHE_DIR when that is set, else in each package folder's
`__pycache__` (numba's default when the folder is writable). A cache it cannot write to is left
alone; an installed wheel's files all get new times when it is upgraded, which numba notices itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
STAMP_NAME = "simcost_kernel_sources.json"
CACHE_SUFFIXES = (".nbi", ".nbc")


def _sources(package_dir: Path, known: dict) -> dict[str, list]:
    """{relative path: [mtime_ns, size, compiles kernels]} of every .py file, reading a file only
    when its time or size differs from `known`'s entry."""
    out: dict[str, list] = {}
    for path in package_dir.rglob("*.py"):
        rel = path.relative_to(package_dir).as_posix()
        st = path.stat()
        old = known.get(rel)
        if isinstance(old, list) and len(old) == 3 and old[:2] == [st.st_mtime_ns, st.st_size]:
            out[rel] = old
        else:
            out[rel] = [st.st_mtime_ns, st.st_size, "njit" in path.read_text(encoding="utf-8", errors="replace")]
    return out


def _kernel_files(sources: dict) -> dict[str, list]:
    return {rel: entry for rel, entry in sources.items() if entry[2]}


def _cached_kernels(package_dir: Path, cache_root: Path | None) -> list[Path]:
    if cache_root is not None:  # numba mirrors each source's absolute path below NUMBA_CACHE_DIR
        return [p for suffix in CACHE_SUFFIXES for p in cache_root.rglob(f"*{suffix}") if "simcost" in p.parts]
    return [p for suffix in CACHE_SUFFIXES for p in package_dir.rglob(f"__pycache__/*{suffix}")]


def refresh_stale_kernels(package_dir: Path = PACKAGE_DIR, cache_root: Path | None = None) -> bool:
    """Delete the cached kernels if a kernel source changed since the stamp; True if it did."""
    if cache_root is None and os.environ.get("NUMBA_CACHE_DIR"):
        cache_root = Path(os.environ["NUMBA_CACHE_DIR"])
    stamp = (cache_root if cache_root is not None else package_dir / "__pycache__") / STAMP_NAME
    try:
        known = json.loads(stamp.read_text())
    except (OSError, ValueError):
        known = None
    sources = _sources(package_dir, known if isinstance(known, dict) else {})
    if isinstance(known, dict) and _kernel_files(known) == _kernel_files(sources):
        if known != sources:  # other files changed: remember them so they are not read again
            _write(stamp, sources)
        return False
    stale = _cached_kernels(package_dir, cache_root)
    for path in stale:
        try:
            path.unlink()
        except OSError:
            pass
    _write(stamp, sources)
    return bool(stale)


def _write(stamp: Path, sources: dict) -> None:
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sources, sort_keys=True))
        tmp.replace(stamp)
    except OSError:
        pass  # a cache folder simcost cannot write: numba cannot cache there either
