"""One output file appears whole or not at all.

`staged_file` hands out a temporary path beside the target (same suffix, so writers that infer a
format from it, such as matplotlib's savefig, still do) and moves it into place with os.replace
only when the writer finished, so a failure or Ctrl-C leaves neither a half-written file nor a
folder made for it. Results folders get the same guarantee from `simcost.results.folder`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simcost.errors import InputError


@contextmanager
def staged_file(path: Path, key: str) -> Iterator[Path]:
    """Write to the yielded path; on success it replaces `path`. An OSError (the target is a
    folder, a read-only disk) becomes an InputError at `key`; nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise InputError(key, f"{path} is a folder; give a file name")
    made = make_parents(path.parent, key)
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as exc:
        remove_empty(made)
        raise InputError(key, f"cannot write {path} ({exc.strerror or exc}); nothing written") from None
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        remove_empty(made)
        if isinstance(exc, OSError):
            raise InputError(key, f"cannot write {path} ({exc.strerror or exc}); nothing written") from None
        raise


def make_parents(folder: Path, key: str = "--out") -> list[Path]:
    """mkdir -p, returning the folders it created (outermost first)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        for path in missing:
            path.mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(key, f"cannot create {folder} ({exc.strerror or exc})") from None
    return missing


def remove_empty(made: list[Path]) -> None:
    """Remove folders `make_parents` created, innermost first, while they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            break


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
