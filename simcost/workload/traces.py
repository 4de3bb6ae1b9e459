"""Request traces: the bundled Azure LLM inference 2023 and Mooncake FAST'25 traces, files in
their layouts, or any CSV/JSONL with a column mapping.

Azure layout: plain comma-separated text (no quoting; LF or CRLF endings; final newline
optional) with a header naming at least TIMESTAMP, ContextTokens and GeneratedTokens (other
columns are ignored), then one request per row. TIMESTAMP is wall-clock
`YYYY-MM-DD HH:MM:SS.fffffff`; it is converted with integer arithmetic so the upstream 100 ns
resolution survives exactly until the final division into float64 seconds from the first row.
Mooncake layout: JSON Lines with timestamp (ms), input_length, output_length and hash_ids (one id
per 512-token prompt block, kept for a prefix cache). Generic: see `simcost.scenario.workload.TraceColumns`.
Every bad row is an `InputError` naming `file:line`; nothing is skipped, because a silently
dropped request would bias load and cost without anyone noticing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from simcost.errors import InputError, closest, required
from simcost.scenario.limits import MAX_TOKENS_PER_REQUEST
from simcost.scenario.workload import TraceColumns
from simcost.workload.trace_formats import parse_mooncake, parse_table

BUNDLED = {"azure_conv": "AzureLLMInferenceTrace_conv.csv", "azure_code": "AzureLLMInferenceTrace_code.csv",
           "mooncake_conversation": "mooncake_fast25_conversation_trace.jsonl",
           "mooncake_synthetic": "mooncake_fast25_synthetic_trace.jsonl"}
COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "traces"

# Date and time, optional 1-9 fractional digits. `T` is accepted as well as a space because
# that is the only difference between this layout and ISO 8601 and rejecting it helps no one.
_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")
_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Trace:
    """One trace in memory. Arrays are read-only because loaded traces are cached and shared."""

    source: str
    arrival_s: np.ndarray  # float64, seconds from the first row (so arrival_s[0] == 0), non-decreasing
    input_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    # Optional per-request extras. Prefix blocks are CSR: request i's ids are
    # block_ids[block_offsets[i]:block_offsets[i + 1]], one per block_tokens-token prompt block.
    block_ids: np.ndarray | None = None  # int64
    block_offsets: np.ndarray | None = None  # int64, len(trace) + 1
    block_tokens: int | None = None
    session_ids: np.ndarray | None = None  # str (object) per request
    tenants: np.ndarray | None = None  # str (object) per request

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self.arrival_s) else 0.0


def trace_path(name: str, key: str = "workload.trace.name") -> Path:
    """A bundled trace name (see BUNDLED) -> the packaged file; otherwise `name` as a file path
    (relative to the working directory)."""
    if name in BUNDLED:
        return _BUNDLED_DIR / BUNDLED[name]
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise InputError(key, f"'{name}' is a directory, not a trace file")
    if name.startswith("servegen_"):  # a common mix-up: those files are arrival statistics
        raise InputError(key, f"'{name}' is not a request trace: ServeGen files hold per-client arrival rates; "
                              "use them as workload.arrivals: {process: servegen, servegen_file: ...}")
    raise InputError(key,
                     f"'{name}' is neither a bundled trace nor an existing file{closest(name, BUNDLED)}")


def load_trace(name: str, columns: TraceColumns | None = None, key: str = "workload.trace.name") -> Trace:
    """trace_path + the loader for its layout (with `columns`: generic CSV/JSONL; a .jsonl file:
    Mooncake; otherwise Azure CSV), with `source` set to the name as the user wrote it."""
    path = trace_path(name, key)
    kind = "table" if columns is not None else "mooncake" if path.suffix.lower() == ".jsonl" else "azure"
    trace = _load(path, kind, columns)
    return trace if trace.source == name else replace(trace, source=name)


def load_azure_trace(path: str | Path) -> Trace:
    return _load(Path(path), "azure", None)


def load_mooncake_trace(path: str | Path) -> Trace:
    return _load(Path(path), "mooncake", None)


def load_table_trace(path: str | Path, columns: TraceColumns) -> Trace:
    return _load(Path(path), "table", columns)


def _load(path: Path, kind: str, columns: TraceColumns | None) -> Trace:
    """Read and validate a trace. Kept parsed per file (sweeps reload the same trace for every
    point); the key includes mtime and size so an edited file is re-read."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise InputError(str(path), f"cannot read trace ({exc.strerror})") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, kind, columns)
    trace = _parsed.get(key)
    if trace is None:
        trace = _parse_file(*key)
        _keep(key, trace)
    else:
        _parsed.move_to_end(key)
    return trace


_KEPT = 16  # traces kept parsed, least recently used dropped first
# (path, mtime_ns, size, kind, columns) -> its Trace: a process's memo of files, like an lru_cache,
# but one `adopt` can fill with traces another process parsed
_parsed: OrderedDict[tuple, Trace] = OrderedDict()


def _keep(key: tuple, trace: Trace) -> None:
    _parsed[key] = trace
    while len(_parsed) > _KEPT:
        _parsed.popitem(last=False)


def _parse_file(path_text: str, _mtime_ns: int, _size: int, kind: str, columns: TraceColumns | None) -> Trace:
    lines, numbers = read_lines(path_text)
    with at_file_lines(path_text, numbers):
        if kind == "azure":
            return _frozen(_parse(path_text, lines))
        if kind == "mooncake":
            arrays = parse_mooncake(path_text, lines)
        else:  # "table": load_trace passes its columns
            arrays = parse_table(path_text, lines, required(columns, "workload.trace.columns"))
    return _frozen(Trace(source=path_text, **arrays))


def _frozen(trace: Trace) -> Trace:
    """`trace` with its arrays read-only: parsed traces are kept and shared."""
    for value in vars(trace).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return trace


def parse_traces(names: list[tuple[str, TraceColumns | None]]) -> list[tuple[tuple, Trace]]:
    """Each named trace (a `load_trace` name and its columns) parsed, as (key, trace) items for
    `adopt`: the figure process parses a run's traces while `simcost run` loads numba's target
    (simcost.results.background). A trace that fails is left out: the run's own load then raises
    its error, as it would have anyway. The traces it parsed leave this process's memo: the
    figure process lives as long as the run and must not hold a second copy of a large trace."""
    items = []
    for name, columns in names:
        try:
            load_trace(name, columns)
        except InputError:
            continue
        key = next(reversed(_parsed))  # (load_trace just put it last)
        items.append((key, _parsed.pop(key)))
    return items


def adopt(items: list[tuple[tuple, Trace]]) -> None:
    """Keep traces `parse_traces` parsed in another process: a later load of the same file, if
    it is unchanged (same mtime and size), uses them instead of parsing it again."""
    for key, trace in items:
        _keep(key, _frozen(trace))


def read_text(path_text: str, what: str = "trace") -> str:
    """A file's text: UTF-8 (a byte-order mark tolerated), else one line naming file:line."""
    try:
        raw = Path(path_text).read_bytes()
    except OSError as exc:
        raise InputError(path_text, f"cannot read {what} ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig")  # -sig: tolerate a byte-order mark from spreadsheet exports
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError(f"{path_text}:{line}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


def read_lines(path_text: str, what: str = "trace") -> tuple[list[str], list[int]]:
    """The non-blank lines of a text file and each one's line number in the file (see _non_blank)."""
    return _non_blank(_lines(read_text(path_text, what)))


def _lines(text: str) -> list[str]:
    # split("\n") rather than splitlines(): splitlines also breaks on \x0b, \x1c, U+2028 ...,
    # which would shift line numbers in error messages. One trailing newline is a terminator.
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _non_blank(lines: list[str]) -> tuple[list[str], list[int]]:
    """The lines holding something, and each one's line number in the file: blank lines (a
    trailing CRLF, a gap between JSONL records) are skipped, as every common CSV and JSONL reader
    skips them; they hold no request, so no request is lost."""
    kept = [(line, i + 1) for i, line in enumerate(lines) if line.strip()]
    return [line for line, _ in kept], [number for _, number in kept]


@contextmanager
def at_file_lines(path_text: str, numbers: list[int]) -> Iterator[None]:
    """Inside, errors at `path_text:N` count non-blank lines; they leave naming the file's own line."""
    try:
        yield
    except InputError as exc:
        raise _file_line(exc, path_text, numbers) from None


def _file_line(exc: InputError, path_text: str, numbers: list[int]) -> InputError:
    """The parsers number the non-blank lines they were given from 1: report the file's own line."""
    prefix = f"{path_text}:"
    if not exc.where.startswith(prefix) or not exc.where[len(prefix):].isdigit():
        return exc
    index = int(exc.where[len(prefix):]) - 1
    line = numbers[index] if index < len(numbers) else (numbers[-1] + 1 if numbers else 1)
    return InputError(f"{path_text}:{line}", exc.problem)


def prefix_reuse_fraction(trace: Trace) -> float | None:
    """Upper bound on prefix-cache hits with an infinite cache: the fraction of block references
    whose block id already appeared earlier in the trace (None without block ids)."""
    if trace.block_ids is None or not len(trace.block_ids):
        return None
    return 1.0 - len(np.unique(trace.block_ids)) / len(trace.block_ids)


def _parse(where: str, lines: list[str]) -> Trace:
    if not any(line.strip() for line in lines):
        raise InputError(f"{where}:1", f"empty file; expected a header {','.join(COLUMNS)} and request rows")
    if not lines[0].strip():
        raise InputError(f"{where}:1", f"blank line; expected the header {','.join(COLUMNS)}")
    header = [name.strip().strip('"') for name in lines[0].split(",")]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{where}:1", f"column {', '.join(repeated)} appears more than once in the header")
    index = {}
    for name in COLUMNS:
        if name not in header:
            raise InputError(f"{where}:1", f"missing column {name} (found: {', '.join(header)}; expected "
                                           f"Azure's {', '.join(COLUMNS)}, or name your columns with workload.trace."
                                           f"columns: {{arrival: ..., input_tokens: ..., output_tokens: ...}})")
        index[name] = header.index(name)
    body = lines[1:]
    if not body:
        raise InputError(f"{where}:2", "header only, no request rows")

    # Plain split, not the csv module: the layout has no quoting, and csv would silently merge
    # lines after a stray quote, shifting every line number after it.
    rows = [line.split(",") for line in body]
    misfits = [i for i, row in enumerate(rows) if len(row) != len(header)]
    if misfits:
        i, row = misfits[0], rows[misfits[0]]
        problem = "blank line" if not body[i].strip() else f"{len(row)} fields, expected {len(header)} as in the header"
        raise InputError(f"{where}:{i + 2}", problem)
    columns = list(zip(*rows))
    input_tokens = _tokens(where, columns[index["ContextTokens"]], "ContextTokens")
    output_tokens = _tokens(where, columns[index["GeneratedTokens"]], "GeneratedTokens")
    ns = _timestamps_ns(where, columns[index["TIMESTAMP"]])

    backwards = np.flatnonzero(np.diff(ns) < 0)
    if backwards.size:
        i = int(backwards[0]) + 1
        stamps = columns[index["TIMESTAMP"]]
        raise InputError(f"{where}:{i + 2}", f"timestamp {stamps[i].strip()} is before the previous row's "
                                             f"{stamps[i - 1].strip()}; rows must be in time order")
    arrival_s = ns / _NS_PER_S  # int64 ns -> float64: exact ticks, one rounding at the end
    for array in (arrival_s, input_tokens, output_tokens):
        array.flags.writeable = False
    return Trace(source=where, arrival_s=arrival_s, input_tokens=input_tokens, output_tokens=output_tokens)


def _tokens(where: str, cells: tuple[str, ...], column: str) -> np.ndarray:
    try:
        values = np.array(cells).astype(np.int64)  # same rules as int(), in C
    except (ValueError, OverflowError):
        # Slow path only to name the first bad line.
        for i, cell in enumerate(cells):
            try:
                np.int64(int(cell))
            except (ValueError, OverflowError):
                raise InputError(f"{where}:{i + 2}", f"{column} {cell.strip()!r} is not a whole number of tokens") from None
        raise
    bad = np.flatnonzero((values < 1) | (values > MAX_TOKENS_PER_REQUEST))
    if bad.size and values[bad[0]] > MAX_TOKENS_PER_REQUEST:
        i = int(bad[0])
        raise InputError(f"{where}:{i + 2}", f"{column} is {values[i]:,}; expected at most {MAX_TOKENS_PER_REQUEST:,} "
                                             "tokens (no model's context is longer)")
    if bad.size:
        i = int(bad[0])
        kind = "negative" if values[i] < 0 else "zero"
        need = "a request must produce at least 1 token" if column == "GeneratedTokens" else "a request needs at least 1 prompt token"
        raise InputError(f"{where}:{i + 2}", f"{column} is {values[i]} ({kind}); {need}")
    return values


def _timestamps_ns(where: str, cells: tuple[str, ...]) -> np.ndarray:
    """Nanoseconds relative to the first row, as int64 (exact for any span under 292 years)."""
    fast = _timestamps_ns_fixed_width(cells)
    return fast if fast is not None else _timestamps_ns_rowwise(where, cells)


# Byte positions of digits in `YYYY-MM-DD HH:MM:SS.fffffff` (27 bytes) and of its separators.
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 23, 24, 25, 26])
_SEPARATORS = {4: b"-", 7: b"-", 10: b" ", 13: b":", 16: b":", 19: b"."}


def _timestamps_ns_fixed_width(cells: tuple[str, ...]) -> np.ndarray | None:
    """Vectorised parse of the exact upstream layout (7 fractional digits). Returns None when any
    cell deviates, so that the row-wise parser handles it and names the line; ~10x faster."""
    width = 27
    joined = "\n".join(cells)
    if len(joined) != (width + 1) * len(cells) - 1 or not joined.isascii():
        return None
    grid = np.frombuffer((joined + "\n").encode("ascii"), dtype=np.uint8).reshape(len(cells), width + 1)
    digits = grid[:, _DIGITS].astype(np.int64) - ord("0")
    if ((digits < 0) | (digits > 9)).any():
        return None
    if any((grid[:, pos] != ord(sep)).any() for pos, sep in _SEPARATORS.items()):
        return None

    def number(first: int, count: int) -> np.ndarray:  # digits[:, first:first+count] as an integer
        return digits[:, first:first + count] @ (10 ** np.arange(count - 1, -1, -1, dtype=np.int64))

    year, month, day = number(0, 4), number(4, 2), number(6, 2)
    hour, minute, second, ticks_100ns = number(8, 2), number(10, 2), number(12, 2), number(14, 7)
    if (hour > 23).any() or (minute > 59).any() or (second > 59).any():
        return None
    # Dates repeat on every row: validate and convert each distinct one with the calendar once.
    ymd = (year * 100 + month) * 100 + day
    unique, inverse = np.unique(ymd, return_inverse=True)
    try:
        ordinals = np.array([dt.date(int(v) // 10000, int(v) // 100 % 100, int(v) % 100).toordinal() for v in unique],
                            dtype=np.int64)
    except ValueError:
        return None
    days = ordinals[inverse] - ordinals[inverse[0]]  # relative first: keeps every product inside int64
    if np.abs(days).max() > 100_000:  # ~270 years: ns would overflow int64; row-wise path reports it
        return None
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    ns = seconds * _NS_PER_S + ticks_100ns * 100
    return ns - ns[0]


def _timestamps_ns_rowwise(where: str, cells: tuple[str, ...]) -> np.ndarray:
    origin = None
    out = np.empty(len(cells), dtype=np.int64)
    ordinal_days: dict[tuple[str, str, str], int] = {}  # dates repeat on every row; validating each once keeps this ~10x faster
    for i, cell in enumerate(cells):
        match = _TIMESTAMP.fullmatch(cell.strip())
        if match is None:
            raise InputError(f"{where}:{i + 2}", f"TIMESTAMP {cell.strip()!r} is not YYYY-MM-DD HH:MM:SS.fffffff")
        y, mo, d, h, mi, s, frac = match.groups()
        date_key = (y, mo, d)
        days = ordinal_days.get(date_key)
        if days is None:
            try:
                days = ordinal_days[date_key] = dt.date(int(y), int(mo), int(d)).toordinal()
            except ValueError as exc:
                raise InputError(f"{where}:{i + 2}", f"TIMESTAMP {cell.strip()!r}: {exc}") from None
        h, mi, s = int(h), int(mi), int(s)
        if h > 23 or mi > 59 or s > 59:
            raise InputError(f"{where}:{i + 2}", f"TIMESTAMP {cell.strip()!r}: time of day out of range")
        seconds = ((days * 24 + h) * 60 + mi) * 60 + s
        ns = seconds * _NS_PER_S + (int(frac.ljust(9, "0")) if frac else 0)  # Python int: no overflow
        if origin is None:
            origin = ns
        try:
            out[i] = ns - origin
        except OverflowError:
            raise InputError(f"{where}:{i + 2}", f"TIMESTAMP {cell.strip()!r} is centuries from the first row's") from None
    return out
