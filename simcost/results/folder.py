"""A results folder appears whole or not at all.

Files are written into a hidden temporary folder beside the target and moved into place only when
every one of them is written, so a failure (a full disk, a path that is a folder) or Ctrl-C
leaves nothing behind. When the target folder already exists, it keeps its other files: each file
of the new run replaces its namesake (os.replace, atomic per file), and output files of an
earlier run that this one did not write (timeseries.csv after a run without time series) are
removed, so the folder never mixes two runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simcost.errors import InputError
from simcost.files import current_umask, make_parents, remove_empty


def check_targets(out_dir: Path, names: tuple[str, ...]) -> None:
    """Before any work: the folder is not a file, and no output file's name is taken by a folder
    (which would fail only when the results were ready to move in)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out", f"{out_dir} is a file, not a folder")
    for name in names:
        path = out_dir / name
        if path.exists() and (path.is_dir() or not path.is_file()):
            raise InputError("--out", f"{path} is in the way: it is a folder, and the run writes a file there; "
                                      "move it or choose another --out")


@contextmanager
def staged_folder(out_dir: Path, owned: tuple[str, ...]) -> Iterator[Path]:
    """A temporary folder to write into; on success its files move into `out_dir` (see the
    module docstring; `owned` names the files an earlier run may have left), on any failure or
    interrupt it is removed along with any parent folders made for it."""
    made = make_parents(out_dir.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 would outlive the rename
        yield tmp
        _publish(tmp, out_dir, owned)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(made)  # only if nothing else appeared there
        if isinstance(exc, OSError):
            raise InputError("--out", f"cannot write {out_dir} ({exc.strerror or exc}); nothing written") from None
        raise


def _publish(tmp: Path, out_dir: Path, owned: tuple[str, ...]) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)  # one step: the folder appears complete
        return
    written = {p.name for p in tmp.iterdir()}
    for name in sorted(written):
        os.replace(tmp / name, out_dir / name)
    for name in owned:
        if name not in written:
            (out_dir / name).unlink(missing_ok=True)
    tmp.rmdir()
