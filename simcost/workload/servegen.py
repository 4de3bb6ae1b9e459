"""Alibaba ServeGen per-client arrivals: load a client-windows file, regenerate request arrivals.

A ServeGen file (simcost/data/traces/README.md) holds, for each anonymised client and 600-s
window, the client's mean rate and a fitted inter-arrival-time (IAT) law, Gamma(a=shape) or
Weibull(c=shape) with a scale; a missing (client, window) means rate 0. Upstream ServeGen rebuilds
a window by drawing IATs from the fitted law and rescaling them so that the window holds
rate x 600 requests. simcost does the same, vectorised over all (client, window) rows at once,
with two choices of its own, made explicit:

* Count. x = rate x rate_multiplier x 600 may be fractional (a multiplier makes it so; the
  files' own x are whole up to float rounding), and n = floor(x) + Bernoulli(x - floor(x)) from
  the run's rng: E[n] = x exactly, and the rounding adds a variance of f(1 - f) <= 1/4 per
  window (f the fraction), nothing else.
* Placement. n + 1 IATs are drawn and scaled to fill the window exactly; the arrivals are the
  first n partial sums. So neither edge of a window holds an arrival (the first is one IAT in,
  the last one IAT before the end) and windows join without a seam. With exponential IATs
  (cv 1) this is exactly a Poisson process given n arrivals (uniform order statistics); for other
  shapes the gaps follow the fitted law rescaled to mean 600/(n+1) s, and the gap across a window
  edge is the sum of two IATs (a stationary renewal process would give one length-biased IAT,
  which has the same law when cv is 1). Only the fitted shape survives the rescale: the scale
  cancels, so it is validated but unused.

Clock: the file's time starts at local midnight. A run covers [start_s, start_s + duration_s x
time_compression) of it, and simulated time is (file time - start_s) / time_compression: 60
plays a day in 24 minutes, every rate x60 and every gap /60. Windows cut by the span's ends are
regenerated whole and then cut, so a partial window keeps its share of the window's arrivals.
Each request keeps its client id. Speed: a one-day mm-image or deepseek-r1 file (0.8 M, 1.4 M
requests) takes ~0.1-0.2 s; a full day of the 14-day m-small file (85 M requests) ~16 s and 3 GB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import simcost.portable_math as pmath
from simcost.errors import InputError, closest
from simcost.scenario.arrivals import ServegenArrivals
from simcost.workload.trace_formats import _csv_records, _numbers, _require_keys, whole_numbers
from simcost.workload.traces import _BUNDLED_DIR, _lines, _non_blank, at_file_lines, trace_path

SERVEGEN_BUNDLED = {"servegen_mm_image": "servegen_multimodal_mm-image_client_windows.csv",
                    "servegen_deepseek_r1": "servegen_reason_deepseek-r1_client_windows.csv"}
COLUMNS = ("client_id", "window_start_s", "rate_rps", "iat_cv", "iat_dist", "iat_shape", "iat_scale")
IAT_DISTS = ("Gamma", "Weibull")
WINDOW_S = 600
# Windows are regenerated in groups of about this many IATs: bounded memory, and a cumsum over a
# group never mixes more than a few thousand rows (its rounding stays below 1e-9 s).
_GROUP_GAPS = 1 << 22
_GROUP_ROWS = 4096


@dataclass(frozen=True)
class ClientWindows:
    """A client-windows file in memory, rows sorted by (window_start_s, client_id). Read-only
    arrays: loaded files are cached and shared."""

    source: str
    client_id: np.ndarray  # int64
    window_start_s: np.ndarray  # int64, multiples of WINDOW_S, from local midnight
    rate_per_s: np.ndarray  # float64 >= 0 (the file's rate_rps)
    iat_cv: np.ndarray  # float64 >= 0
    iat_weibull: np.ndarray  # bool: Weibull, else Gamma
    iat_shape: np.ndarray  # float64 > 0
    iat_scale: np.ndarray  # float64 > 0

    def __len__(self) -> int:
        return len(self.client_id)

    @property
    def end_s(self) -> float:
        """End of the last window with a row: the file's horizon."""
        return float(self.window_start_s.max()) + WINDOW_S


@dataclass(frozen=True)
class ServeGenArrivals:
    arrival_s: np.ndarray  # float64, sorted, simulated seconds
    client_id: np.ndarray  # int64, the client of each arrival


# --- loading --------------------------------------------------------------------------------

def servegen_path(name: str, key: str = "workload.arrivals.servegen_file") -> Path:
    """A bundled name (SERVEGEN_BUNDLED) -> the packaged file; otherwise `name` as a path."""
    if name in SERVEGEN_BUNDLED:
        return _BUNDLED_DIR / SERVEGEN_BUNDLED[name]
    if not Path(name).expanduser().exists():
        raise InputError(key, f"'{name}' is neither a bundled ServeGen file nor an existing file"
                              f"{closest(name, SERVEGEN_BUNDLED)}")
    return trace_path(name, key)  # a file, or the error for a directory


def read_csv_columns(path: Path, columns: tuple[str, ...], rows: str,
                     key: str) -> tuple[str, dict[str, list[str]], list[int]]:
    """(where, {column: cells}, line numbers) of a small CSV with a header naming at least
    `columns` (others are ignored). `rows` names the rows in messages. Blank lines are skipped, as
    every common CSV reader skips them; `line numbers` holds each kept line's number in the file
    (header first), for `at_file_lines` around the caller's checks of cell i at `where:i+2`.
    Every problem is an InputError at `file:line`; also used for piecewise rate files."""
    where = str(path)
    if not path.is_file():
        raise InputError(key, f"'{path}' is not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(where, f"cannot read file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError(f"{where}:{line}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    lines, numbers = _non_blank(_lines(text))
    if not lines:
        raise InputError(f"{where}:1", f"empty file; expected a header {','.join(columns)} and {rows}")
    with at_file_lines(where, numbers):
        if len(lines) < 2:
            raise InputError(f"{where}:2", f"header only, no {rows}")
        records = _csv_records(where, lines)
        _require_keys(where, records[:1], columns, first_line=2)  # every record has the header's keys
    return where, {name: [record[name] for record in records] for name in columns}, numbers


def load_client_windows(name: str, key: str = "workload.arrivals.servegen_file") -> ClientWindows:
    """Read and validate a client-windows file (a bundled name or a path); cached per file."""
    path = servegen_path(name, key)
    stat = path.stat()
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size, key)


@functools.lru_cache(maxsize=8)
def _load_cached(path_text: str, _mtime_ns: int, _size: int, key: str) -> ClientWindows:
    where, cells, numbers = read_csv_columns(Path(path_text), COLUMNS, "client-window rows", key)
    with at_file_lines(where, numbers):
        return _client_windows(path_text, where, cells)


def _client_windows(path_text: str, where: str, cells: dict[str, list[str]]) -> ClientWindows:
    client = whole_numbers(where, cells["client_id"], "client_id", 2, 0, text_ok=True)
    window_s = whole_numbers(where, cells["window_start_s"], "window_start_s", 2, 0, text_ok=True)
    _first_bad(where, window_s % WINDOW_S != 0,
               lambda i: f"window_start_s {window_s[i]} is not a multiple of {WINDOW_S} (windows are {WINDOW_S} s)")
    numbers = {}
    for column, strict in (("rate_rps", False), ("iat_cv", False), ("iat_shape", True), ("iat_scale", True)):
        values = numbers[column] = _numbers(where, cells[column], column, 2)
        bad = values <= 0 if strict else values < 0
        _first_bad(where, bad, lambda i: f"{column} is {values[i]}; expected {'>' if strict else '>='} 0")
    dist = np.array(cells["iat_dist"], dtype=object)
    _first_bad(where, ~np.isin(dist, IAT_DISTS), lambda i: f"iat_dist {dist[i]!r} is not {' or '.join(IAT_DISTS)}"
                                                          f"{closest(str(dist[i]), IAT_DISTS, list_all=False)}")
    order = np.lexsort((client, window_s))
    _check_unique(where, client, window_s, order)
    arrays = dict(client_id=client, window_start_s=window_s, rate_per_s=numbers["rate_rps"],
                  iat_cv=numbers["iat_cv"], iat_weibull=dist == "Weibull", iat_shape=numbers["iat_shape"],
                  iat_scale=numbers["iat_scale"])
    for name, array in arrays.items():
        arrays[name] = array[order]
        arrays[name].flags.writeable = False
    return ClientWindows(source=path_text, **arrays)


def _first_bad(where: str, bad: np.ndarray, problem) -> None:
    """InputError at the first row where `bad` holds (row i is on line i + 2)."""
    rows = np.flatnonzero(bad)
    if rows.size:
        raise InputError(f"{where}:{rows[0] + 2}", problem(int(rows[0])))


def _check_unique(where: str, client: np.ndarray, window_s: np.ndarray, order: np.ndarray) -> None:
    same = (np.diff(client[order]) == 0) & (np.diff(window_s[order]) == 0)
    if same.any():
        pairs = np.stack([order[:-1][same], order[1:][same]])  # stable sort: earlier row first
        first, again = pairs[:, np.argmin(pairs[1])]
        raise InputError(f"{where}:{again + 2}", f"client {client[again]}, window {window_s[again]} s is already on "
                                                 f"line {first + 2}; each (client, window) once")


# --- regeneration ---------------------------------------------------------------------------

def servegen_arrivals_with_clients(spec: ServegenArrivals, duration_s: float, rng: np.random.Generator) -> ServeGenArrivals:
    """The arrivals of a `process: servegen` spec on [0, duration_s) with each one's client id.
    `simcost.arrivals.arrivals` returns the same times (same draws) without the ids."""
    windows = load_client_windows(spec.servegen_file)
    return servegen_arrivals(windows, duration_s, rng, start_s=spec.start_s,
                             time_compression=spec.time_compression,
                             rate_multiplier=spec.rate_multiplier, clients=spec.clients,
                             top_clients=spec.top_clients)


def servegen_arrivals(windows: ClientWindows, duration_s: float, rng: np.random.Generator, *,
                      start_s: float = 0.0, time_compression: float = 1.0, rate_multiplier: float = 1.0,
                      clients: tuple[int, ...] | None = None, top_clients: int | None = None) -> ServeGenArrivals:
    """Regenerated arrivals on [0, duration_s) of simulated time, i.e. of file time
    [start_s, start_s + duration_s x time_compression), for all clients, the listed `clients`, or
    the `top_clients` with the most expected requests in that span (ties: lower id)."""
    end_s = start_s + duration_s * time_compression
    if end_s > windows.end_s:
        raise InputError("duration_s", f"{duration_s} s x time_compression {time_compression} from start_s {start_s} "
                                       f"reaches {end_s:g} s of file time, past the end of {windows.source} "
                                       f"({windows.end_s:g} s)")
    in_span = (windows.window_start_s + WINDOW_S > start_s) & (windows.window_start_s < end_s)
    rows = np.flatnonzero(in_span & _client_mask(windows, in_span, start_s, end_s, clients, top_clients))
    expected = windows.rate_per_s[rows] * rate_multiplier * WINDOW_S
    whole = np.floor(expected)
    counts = (whole + (rng.random(len(rows)) < expected - whole)).astype(np.int64)
    rows, counts = rows[counts > 0], counts[counts > 0]
    parts = [_regenerate(windows, rows[g], counts[g], rng, start_s, end_s)
             for g in _groups(windows.window_start_s[rows], counts)]
    if not parts:
        return ServeGenArrivals(np.empty(0), np.empty(0, dtype=np.int64))
    arrival_s = (np.concatenate([p[0] for p in parts]) - start_s) / time_compression
    # file time < end_s can still round to duration_s after the division
    arrival_s = np.minimum(arrival_s, np.nextafter(duration_s, 0.0))
    return ServeGenArrivals(arrival_s, np.concatenate([p[1] for p in parts]))


def _client_mask(windows: ClientWindows, in_span: np.ndarray, start_s: float, end_s: float,
                 clients: tuple[int, ...] | None, top_clients: int | None) -> np.ndarray:
    known = np.unique(windows.client_id)
    if clients is not None:
        for i, client in enumerate(clients):
            if client not in known:
                raise InputError(f"workload.arrivals.clients[{i}]",
                                 f"client {client} is not in {windows.source} "
                                 f"(it has {len(known)} clients, ids {known.min()}..{known.max()})")
        return np.isin(windows.client_id, clients)
    if top_clients is None:
        return np.ones(len(windows), dtype=bool)
    if top_clients > len(known):
        raise InputError("workload.arrivals.top_clients",
                         f"{top_clients}, but {windows.source} has {len(known)} clients")
    overlap_s = (np.minimum(windows.window_start_s + WINDOW_S, end_s) - np.maximum(windows.window_start_s, start_s))
    totals = np.zeros(len(known))
    np.add.at(totals, np.searchsorted(known, windows.client_id[in_span]), (windows.rate_per_s * overlap_s)[in_span])
    return np.isin(windows.client_id, known[np.lexsort((known, -totals))[:top_clients]])


def _groups(window_s: np.ndarray, counts: np.ndarray) -> list[slice]:
    """Consecutive row ranges of whole windows, each about _GROUP_GAPS IATs / _GROUP_ROWS rows.
    Windows never straddle two groups, so sorting within groups sorts everything."""
    if not len(window_s):
        return []
    edges = np.flatnonzero(np.diff(window_s)) + 1
    starts, ends = np.concatenate([[0], edges]), np.concatenate([edges, [len(window_s)]])
    gaps = np.concatenate([[0], np.cumsum(counts + 1)])
    groups, lo = [], 0
    for i in range(len(starts)):
        last = i + 1 == len(starts)
        if last or gaps[ends[i + 1]] - gaps[starts[lo]] > _GROUP_GAPS or ends[i + 1] - starts[lo] > _GROUP_ROWS:
            groups.append(slice(starts[lo], ends[i]))
            lo = i + 1
    return groups


def _regenerate(windows: ClientWindows, rows: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
                start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(file times, client ids) of some rows' windows, sorted, cut to [start_s, end_s)."""
    sizes = counts + 1  # n arrivals split the window into n + 1 IATs
    firsts = np.cumsum(sizes) - sizes
    gaps = _unit_gaps(windows.iat_shape[rows], windows.iat_weibull[rows], sizes, firsts, rng)
    partial = np.cumsum(gaps)
    lasts = firsts + sizes - 1
    before = np.concatenate([[0.0], partial])[firsts]  # the cumsum up to each row's start
    span = np.repeat(partial[lasts] - before, sizes)
    arrival = np.ones(len(gaps), dtype=bool)
    arrival[lasts] = False  # the last partial sum is the window's end, not an arrival
    # Fraction of the window; the clip only undoes rounding of the cumsum across rows.
    position = np.clip(((partial - np.repeat(before, sizes)) / span)[arrival], 0.0, 1.0)
    window_s = np.repeat(windows.window_start_s[rows], counts).astype(np.float64)
    # Tiny shapes put arrivals within 1e-13 of the window's end; keep them inside their window.
    file_s = np.minimum(window_s + WINDOW_S * position, np.nextafter(window_s + WINDOW_S, 0.0))
    client = np.repeat(windows.client_id[rows], counts)
    keep = (file_s >= start_s) & (file_s < end_s)
    order = np.argsort(file_s[keep], kind="stable")
    return file_s[keep][order], client[keep][order]


def _unit_gaps(shape: np.ndarray, weibull: np.ndarray, sizes: np.ndarray, firsts: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """`sizes[i]` IATs of row i's law, scaled to sum to 1 per row. Drawn as logarithms, because
    fitted shapes reach 0.01: Gamma(0.01) underflows to 0 about once in 1,000 draws and
    Weibull(0.01) spans 1e-200..1e130. log Gamma(a) = log Gamma(a + 1) + log(U)/a (exact);
    log Weibull(c) = log(E)/c with E ~ Exp(1). Each row is shifted by its maximum before exp."""
    shape_each = np.repeat(shape, sizes)
    weibull_each = np.repeat(weibull, sizes)
    log_gaps = np.empty(len(shape_each))
    a = shape_each[~weibull_each]
    log_gaps[~weibull_each] = pmath.log(rng.gamma(a + 1.0)) + pmath.log(rng.random(len(a))) / a
    c = shape_each[weibull_each]
    log_gaps[weibull_each] = pmath.log(rng.standard_exponential(len(c))) / c
    log_gaps -= np.repeat(np.maximum.reduceat(log_gaps, firsts), sizes)
    gaps = pmath.exp(log_gaps)
    gaps /= np.repeat(np.add.reduceat(gaps, firsts), sizes)
    return gaps
