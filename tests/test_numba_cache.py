"""numba's kernel cache is dropped when any file that compiles kernels changes (numba itself checks
only each kernel's own file, so a changed callee in another file left stale machine code)."""

from __future__ import annotations

import os

from simcost.numba_cache import STAMP_NAME, refresh_stale_kernels


def _package(tmp_path):
    pkg = tmp_path / "simcost"
    (pkg / "perf" / "__pycache__").mkdir(parents=True)
    (pkg / "perf" / "kernel.py").write_text("from numba import njit\n@njit(cache=True)\ndef f(x):\n    return x\n")
    (pkg / "perf" / "step.py").write_text("from numba import njit\nfrom simcost.perf.kernel import f\n")
    (pkg / "plain.py").write_text("X = 1\n")
    return pkg


def _cache(pkg):
    files = [pkg / "perf" / "__pycache__" / name for name in ("step.f-3.py311.nbi", "step.f-3.py311.1.nbc")]
    for f in files:
        f.write_bytes(b"cached")
    return files


def _touch(path, text):
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a later time, whatever the clock


def test_a_changed_kernel_source_drops_the_cache_and_other_changes_do_not(tmp_path):
    pkg = _package(tmp_path)
    cache = _cache(pkg)
    assert refresh_stale_kernels(pkg)  # no stamp yet: whatever is cached may be stale
    assert not any(f.exists() for f in cache) and (pkg / "__pycache__" / STAMP_NAME).is_file()
    cache = _cache(pkg)
    assert not refresh_stale_kernels(pkg)  # nothing changed
    _touch(pkg / "plain.py", "X = 2\n")
    assert not refresh_stale_kernels(pkg) and all(f.exists() for f in cache)  # no kernel in it
    _touch(pkg / "perf" / "kernel.py", "from numba import njit\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    assert refresh_stale_kernels(pkg) and not any(f.exists() for f in cache)
    cache = _cache(pkg)
    (pkg / "perf" / "new_kernel.py").write_text("from numba import njit\n")
    assert refresh_stale_kernels(pkg) and not any(f.exists() for f in cache)  # a kernel file added


def test_under_numba_cache_dir_only_simcost_s_kernels_go(tmp_path):
    pkg = _package(tmp_path / "src")
    root = tmp_path / "cache"
    ours = root / "src" / "simcost" / "perf" / "step.f-3.py311.nbi"
    theirs = root / "other" / "lib.g-1.py311.nbi"
    for f in (ours, theirs):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"cached")
    assert refresh_stale_kernels(pkg, cache_root=root)
    assert not ours.exists() and theirs.exists() and (root / STAMP_NAME).is_file()
