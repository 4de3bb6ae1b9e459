"""Reading a results folder for `simcost report` (simcost.analysis.report): summary.json,
scenario.yaml, the request records, the time series, each checked and named when unreadable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml

from simcost.errors import InputError
from simcost.scenario.scenario import preset_max_num_seqs

# --- reading a folder --------------------------------------------------------------------------

def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}", f"malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "not a UTF-8 text file") from None


def read_summary(path: Path) -> dict:
    """summary.json, checked for the keys every section needs."""
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise InputError(str(path), f"expected a JSON object (a run summary), got {type(summary).__name__}")
    for key in ("scenario", "seed", "model", "device", "replicas", "ttft_s", "tpot_s", "e2el_s", "throughput",
                "slo", "requests", "cost"):
        if key not in summary:
            raise InputError(str(path), f"missing key '{key}'; is this a summary.json written by simcost run?")
    return summary


def read_scenario(path: Path) -> dict | None:
    """scenario.yaml as a plain dict, or None when the folder has none (it is optional here)."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InputError(where, f"malformed YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise InputError(str(path), "expected a mapping (a scenario as run)")
    engine = data.get("engine")
    if isinstance(engine, dict) and "max_num_seqs" not in engine and (seqs := preset_max_num_seqs(text)) is not None:
        engine["max_num_seqs"] = seqs  # left to the engine preset; the file says which it chose
    return data


REQUEST_COLUMNS = ("arrival_s", "status", "ttft_s", "tpot_s", "e2el_s")


def read_request_columns(path: Path) -> dict[str, np.ndarray]:
    """The columns of requests.csv (or requests.parquet) the latency CDFs need, as arrays."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # the caller checks it is installed

        names = pq.read_schema(path).names
        _check_columns(path, names)
        table = pq.read_table(path, columns=list(REQUEST_COLUMNS))
        return {c: table.column(c).to_numpy(zero_copy_only=False) for c in REQUEST_COLUMNS}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        _check_columns(path, header)
        index = [header.index(c) for c in REQUEST_COLUMNS]
        cols: list[list] = [[] for _ in REQUEST_COLUMNS]
        for line, row in enumerate(reader, start=2):
            try:
                for values, i in zip(cols, index):
                    values.append(row[i])
            except IndexError:
                raise InputError(f"{path}:{line}", f"{len(row)} fields, the header has {len(header)}") from None
    try:
        return {c: (np.array(v) if c == "status" else np.array([x or "nan" for x in v], dtype=float))
                for c, v in zip(REQUEST_COLUMNS, cols)}
    except ValueError as exc:
        raise InputError(str(path), f"a latency or arrival_s value is not a number ({exc})") from None


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in REQUEST_COLUMNS if c not in names]
    if missing:
        raise InputError(str(path), f"missing column(s) {', '.join(missing)}; is this a requests file from simcost run?")


def read_measured_latencies(path: Path, warmup_s: float | None, num_measured: int) -> dict[str, np.ndarray]:
    """TTFT, TPOT and E2EL of the measured requests: completed, arrived at or after warmup_s.
    Without the warm-up (no scenario.yaml), the last num_measured completed by arrival."""
    cols = read_request_columns(path)
    arrival_s = cols["arrival_s"].astype(float)
    completed = cols["status"] == "completed"
    if warmup_s is not None:
        measured = completed & (arrival_s >= warmup_s)
    else:
        order = np.flatnonzero(completed)[np.argsort(arrival_s[completed], kind="stable")]
        measured = np.zeros(len(arrival_s), dtype=bool)
        measured[order[len(order) - num_measured:] if num_measured else []] = True
    return {k: cols[k].astype(float)[measured] for k in ("ttft_s", "tpot_s", "e2el_s")}


def requests_file(folder: Path) -> tuple[Path | None, str]:
    """The folder's per-request records, and a note when they are there but cannot be read here."""
    if (folder / "requests.csv").is_file():
        return folder / "requests.csv", ""
    if (folder / "requests.parquet").is_file():
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return None, "requests.parquet needs pyarrow for the latency CDFs: pip install 'simcost[parquet]'"
        return folder / "requests.parquet", ""
    return None, ""


def read_timeseries(path: Path) -> dict:
    """timeseries.csv as {pool: {column: array}}, pools in file order (see simcost.metrics.timeseries)."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, dict[str, list]] = {}
    for line, row in enumerate(rows, start=2):
        try:
            values = {k: float(row[k]) for k in ("t_s", "replicas", "usd_per_hour")}
        except (KeyError, TypeError):
            raise InputError(str(path), "missing column t_s, replicas or usd_per_hour") from None
        except ValueError as exc:
            raise InputError(f"{path}:{line}", f"not a number ({exc})") from None
        pool = out.setdefault(row.get("pool") or "serve", {"t_s": [], "replicas": [], "usd_per_hour": []})
        for k, v in values.items():
            pool[k].append(v)
    return {pool: {k: np.array(v) for k, v in cols.items()} for pool, cols in out.items()}
