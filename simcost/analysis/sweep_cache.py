"""The sweep's result cache: one JSON file per run, named by a content hash of everything the run
depends on, so an interrupted or extended sweep reruns only what it has not seen.

The key hashes, as canonical JSON:
- the fully resolved scenario (every default filled in, overrides and seed applied);
- the simcost version and a digest of simcost's own code and catalogs, so an edited tree misses
  instead of returning results of the old code;
- the SHA-256 of every data file the scenario names (traces, rate and ServeGen files, calibrated
  profiles, a catalog device's kernel_tables; bundled names resolved to their packaged files), so a
  changed trace is a miss.
Only finished runs are stored: a run that failed is tried again on the next sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path

# leaf keys of a resolved scenario whose string value may name a data file (config.FILE_KEYS)
FILE_LEAVES = ("name", "trace", "rate_file", "servegen_file", "profile", "kernel_tables")


def run_key(raw: dict) -> str:
    """The content hash of one run: raw is to_dict(scenario), seed included."""
    content = {"simcost": code_version(), "scenario": raw, "files": data_files(raw)}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """The installed version plus a digest of the package's .py and catalog .yaml files."""
    import simcost
    from simcost.catalog.specs import (
        config_dir,  # the catalogs: inside the package in a wheel, beside it in a source tree
    )

    try:
        version = metadata.version("simcost")
    except metadata.PackageNotFoundError:
        version = "unknown"
    digest = hashlib.sha256()
    for folder, pattern in ((Path(simcost.__file__).parent, "**/*.py"), (config_dir(), "*.yaml")):
        for path in sorted(folder.glob(pattern)):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{version}+{digest.hexdigest()[:16]}"


def data_files(raw) -> dict[str, str]:
    """{name as written: sha256} of every data file a resolved scenario names."""
    found: dict[str, str] = {}
    stack = [raw]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in FILE_LEAVES and isinstance(value, str):
                    path = _data_path(value)
                    if path is not None:
                        found[value] = file_sha256(str(path), *_stamp(path))
                    elif key == "kernel_tables" and Path(value).is_dir():  # a catalog device's Parquet folder
                        from simcost.perf.kernel_import import table_files

                        found[value] = ",".join(file_sha256(str(f), *_stamp(f)) for f in table_files(Path(value)))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _data_path(name: str) -> Path | None:
    from simcost.workload.servegen import SERVEGEN_BUNDLED, servegen_path
    from simcost.workload.traces import BUNDLED, trace_path

    if name in BUNDLED:
        return trace_path(name)
    if name in SERVEGEN_BUNDLED:
        return servegen_path(name)
    path = Path(name).expanduser()
    return path if path.is_file() else None


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=256)
def file_sha256(path: str, _mtime_ns: int, _size: int) -> str:
    """A file's SHA-256, computed once per (path, mtime, size): a sweep names the same trace often."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ResultCache:
    """key -> stored entry (a dict), one file per key under `folder`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            entry = json.loads(self.path(key).read_text())
        except (OSError, ValueError):  # absent, or unreadable: a miss, the run is redone
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, entry: dict) -> None:
        """Written whole or not at all (a temporary file, then a rename), so an interrupted
        sweep never leaves a half entry behind."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps({**entry, "key": key}) + "\n")
            os.replace(tmp, self.path(key))
        except BaseException:  # Ctrl-C or a full disk between the two: no stray temporary file
            tmp.unlink(missing_ok=True)
            raise
