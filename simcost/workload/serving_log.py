"""Serving logs: a real run's per-request record, read as a trace (arrivals, prompt and output
lengths, for replay) with the measured outcomes attached (time to first token, end-to-end
latency). Three layouts:

- `vllm_bench`: the JSON that `vllm bench serve --save-result --save-detailed` writes
  (vllm/benchmarks/serve.py): parallel lists `input_lens`, `output_lens`, `ttfts` (s),
  `start_times` (s, the client's `time.perf_counter()` when the request was sent), and `latencies`
  (s, end to end) or, in versions that do not save them, `itls` (s, their sum plus the TTFT is the
  end-to-end latency). A request with a non-empty `errors` entry failed: it is left out of the
  replay and of the measured statistics, as vLLM leaves it out of its own, and counted.
  vLLM writes `start_times` only since January 2026 (vLLM PR #32667). Without them the send
  times are rebuilt as vLLM's client made them (`benchmark()` / `get_request()`) from the
  top-level `request_rate` (a number or "inf"), `burstiness` and `max_concurrency`, in the
  file's (the dataset's) order; see `SEND_MODES`.
- `vllm_stats`: JSON Lines, one finished request per line, with vLLM V1's per-request stats
  fields (vllm/v1/metrics/stats.py): `arrival_time` (RequestStateStats, wall-clock s),
  `first_token_latency` (RequestStateStats, s), `e2e_latency`, `num_prompt_tokens` and
  `num_generation_tokens` (FinishedRequestStats). A request that generated no token was aborted
  (the client went away): it is left out and counted, as a bench result's failed requests are.
- any CSV or JSONL with a column mapping (`--columns`, see `LogColumns`).

Every bad row is an `InputError` naming `file:line` and the column; nothing is skipped silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from simcost.errors import InputError, closest
from simcost.scenario.limits import MAX_DURATION_S, MAX_REQUESTS, MAX_TOKENS_PER_REQUEST
from simcost.workload.trace_formats import _csv_records, _json_records, _numbers, _require_keys, whole_numbers
from simcost.workload.traces import Trace, at_file_lines, read_lines, read_text

_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
BENCH_FIELDS = ("input_lens", "output_lens", "ttfts", "start_times")
# How a log's send times are known. logged: from the log. burst: none logged, request_rate inf
# and no max_concurrency, so vLLM sent every request at once (exact). closed_loop: request_rate
# inf with max_concurrency C: C at once, the next in file order when one ends (the rule is
# exact, the instants come from the replay). gamma: a finite request_rate: vLLM drew the gaps
# from numpy's global generator, not saved, so the replay draws its own with the same law
# (statistically what vLLM sent, not the same instants), under max_concurrency if given too.
SEND_MODES = ("logged", "burst", "closed_loop", "gamma")


@dataclass(frozen=True)
class LogColumns:
    """Where a CSV/JSONL log keeps each value (`--columns arrival_s=ts,prompt_tokens=in,...`).
    Times are in `time_unit`. The outcome is either durations (`ttft_s`, `e2e_s`) or absolute
    times on the arrivals' clock (`first_token_s`, `last_token_s`); those clock columns may hold
    ISO 8601 times instead of numbers."""

    arrival_s: str
    prompt_tokens: str
    output_tokens: str
    ttft_s: str | None = None
    e2e_s: str | None = None
    first_token_s: str | None = None
    last_token_s: str | None = None
    time_unit: str = "s"

    @classmethod
    def parse(cls, text: str, where: str = "--columns") -> LogColumns:
        names = [f.name for f in fields(cls)]
        given: dict[str, str] = {}
        for item in (part.strip() for part in text.split(",")):
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key or not value:
                raise InputError(where, f"'{item}' is not key=column (e.g. arrival_s=ts)")
            if key not in names:
                raise InputError(where, f"unknown key '{key}'{closest(key, names)}; expected {', '.join(names)}")
            given[key] = value
        missing = [k for k in ("arrival_s", "prompt_tokens", "output_tokens") if k not in given]
        if missing:
            raise InputError(where, f"missing {', '.join(missing)}; a log needs arrival_s, prompt_tokens, output_tokens "
                                    "and either ttft_s and e2e_s or first_token_s and last_token_s")
        durations, stamps = ("ttft_s" in given and "e2e_s" in given), ("first_token_s" in given and "last_token_s" in given)
        if durations == stamps:
            raise InputError(where, "give either ttft_s and e2e_s (durations) or first_token_s and last_token_s "
                                    "(times on the arrival clock), not both or neither")
        if given.get("time_unit", "s") not in _SECONDS_PER_UNIT:
            raise InputError(where, f"time_unit '{given['time_unit']}'; expected one of {', '.join(_SECONDS_PER_UNIT)}")
        return cls(**given)

    def outcome_keys(self) -> list[str]:
        return [k for k in (self.ttft_s, self.e2e_s, self.first_token_s, self.last_token_s) if k is not None]


# vLLM V1 per-request stats as a column mapping (times in seconds)
VLLM_STATS = LogColumns(arrival_s="arrival_time", prompt_tokens="num_prompt_tokens",
                        output_tokens="num_generation_tokens", ttft_s="first_token_latency", e2e_s="e2e_latency")


@dataclass(frozen=True)
class ServingLog:
    """A serving run's requests in arrival order: `trace` is what a replay needs; the measured
    outcomes are per request of `trace`."""

    trace: Trace
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    format: str
    failed: int = 0  # requests the log marks failed, left out
    send: str = "logged"  # how the send times are known (SEND_MODES)
    request_rate_per_s: float = float("inf")  # the client's rate (send gamma)
    burstiness: float = 1.0  # gamma shape of the client's gaps (1: Poisson)
    max_concurrency: int | None = None  # the client's limit on requests in flight
    duration_s: float | None = None  # the benchmark's duration (first send to last answer), when logged
    file_rows: np.ndarray | None = None  # each request's index in the file (failed ones left out), send gamma

    @property
    def paired(self) -> bool:
        """True when the replay sends each request when the real client did, so a request's
        simulated and measured outcomes can be compared one to one."""
        return self.send in ("logged", "burst")

    def __len__(self) -> int:
        return len(self.trace)

    @property
    def tpot_s(self) -> np.ndarray:
        """vLLM's TPOT: (E2E - TTFT) / (output tokens - 1); NaN for one-token answers."""
        out = self.trace.output_tokens
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(out > 1, (self.e2e_s - self.ttft_s) / (out - 1), np.nan)

    @property
    def finish_s(self) -> np.ndarray:
        return self.trace.arrival_s + self.e2e_s


def load_log(path: str | Path, columns: LogColumns | None = None) -> ServingLog:
    """Read a serving log: with `columns`, a CSV/JSONL through them; else a `.json` file is a
    vLLM bench result and a JSONL file holds vLLM per-request stats."""
    path_text = str(path)
    if not Path(path_text).is_file():
        raise InputError(path_text, "no such log file" if not Path(path_text).exists() else "is a folder, not a log file")
    if columns is None and Path(path_text).suffix.lower() == ".json":
        return _bench(path_text)
    lines, numbers = read_lines(path_text, "log")
    with at_file_lines(path_text, numbers):
        if columns is None:
            if not lines or not lines[0].lstrip().startswith("{"):
                raise InputError(path_text, "not a vLLM bench .json result nor JSON Lines of vLLM request stats; "
                                            "for a CSV give --columns arrival_s=...,prompt_tokens=...,output_tokens=...,ttft_s=...,e2e_s=...")
            return _table(path_text, lines, VLLM_STATS, "vllm_stats")
        return _table(path_text, lines, columns, "columns")


def _table(where: str, lines: list[str], columns: LogColumns, fmt: str) -> ServingLog:
    if not lines:
        raise InputError(f"{where}:1", "empty file; expected one request per row")
    jsonl = lines[0].lstrip().startswith("{")
    records, first = (_json_records(where, lines), 1) if jsonl else (_csv_records(where, lines), 2)
    keys = [columns.arrival_s, columns.prompt_tokens, columns.output_tokens, *columns.outcome_keys()]
    _require_keys(where, records, keys, first)
    unit = _SECONDS_PER_UNIT[columns.time_unit]

    def times(key: str, clock: bool = False) -> np.ndarray:
        values = [r[key] for r in records]
        stamps = _iso_seconds(where, values, key, first) if clock else None  # a time of day, not a duration
        return stamps if stamps is not None else _numbers(where, values, key, first) * unit

    def tokens(key: str, minimum: int = 1) -> np.ndarray:
        values = _whole_floats_as_ints([r[key] for r in records])
        return whole_numbers(where, values, key, first, minimum, not jsonl, MAX_TOKENS_PER_REQUEST)

    arrival = times(columns.arrival_s, clock=True)
    if columns.ttft_s is not None and columns.e2e_s is not None:
        ttft, e2e = times(columns.ttft_s), times(columns.e2e_s)
        names = (columns.ttft_s, columns.e2e_s)
    else:
        first_s, last_s = times(str(columns.first_token_s), True), times(str(columns.last_token_s), True)
        ttft, e2e = first_s - arrival, last_s - arrival
        names = (f"{columns.first_token_s} - {columns.arrival_s}", f"{columns.last_token_s} - {columns.arrival_s}")
    _check_outcomes(where, ttft, e2e, names, lambda i: f"{where}:{i + first}")
    prompt = tokens(columns.prompt_tokens)
    # vLLM records aborted requests (a client that went away, a cancelled stream) with their
    # stats too: no token generated. Like a bench result's failed requests, they are left out of
    # the replay and the comparison, and counted; another log's 0 stays an error (what it means
    # is not known)
    output = tokens(columns.output_tokens, minimum=0 if fmt == "vllm_stats" else 1)
    kept = output > 0
    failed = int(len(kept) - np.count_nonzero(kept))
    if failed == len(kept):
        raise InputError(where, f"all {failed} requests generated no token (aborted); nothing to compare")
    if failed:
        arrival, prompt, output, ttft, e2e = (a[kept] for a in (arrival, prompt, output, ttft, e2e))
    return _log(where, arrival, prompt, output, ttft, e2e, fmt, failed)


def _iso_seconds(where: str, values: list, name: str, first_line: int) -> np.ndarray | None:
    """Seconds since the epoch of a column of ISO 8601 times (2025-03-01T12:00:00.25Z, as gateways
    and tracing tools export them; without a zone, UTC), or None when its first value is not one
    (then it is read as numbers). `time_unit` does not apply."""
    def parse(value) -> float | None:
        if not isinstance(value, str) or "-" not in value.strip()[1:]:
            return None
        try:
            t = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()

    if not values or parse(values[0]) is None:
        return None
    out = np.empty(len(values))
    for i, v in enumerate(values):
        seconds = parse(v)
        if seconds is None:
            raise InputError(f"{where}:{i + first_line}", f"{name} {v!r} is not an ISO 8601 time like the first row's")
        out[i] = seconds
    return out


def _bench(path_text: str) -> ServingLog:
    text = read_text(path_text, "log")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path_text}:{exc.lineno}", f"not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path_text}:1", f"expected a JSON object (a vLLM bench result), got {type(data).__name__}")

    def where(key: str) -> str:  # the line of the field's key, for the message
        at = text.find(f'"{key}"')
        return f"{path_text}:{text.count(chr(10), 0, at) + 1 if at >= 0 else 1}"

    missing = [k for k in BENCH_FIELDS if k not in data and k != "start_times"]
    if "latencies" not in data and "itls" not in data:
        missing.append("latencies (or itls)")
    if "start_times" not in data and "request_rate" not in data:
        missing.append("start_times (or request_rate)")
    if missing:
        hint = (" (vLLM saves start_times only with --save-detailed, since January 2026; without them the send "
                "times are rebuilt from the top-level request_rate, burstiness and max_concurrency that vLLM "
                "writes)" if "start_times (or request_rate)" in missing else
                " (save it with vllm bench serve --save-result --save-detailed)")
        raise InputError(f"{path_text}:1", f"missing field {', '.join(missing)}{hint}")
    lists = {k: data[k] for k in (*BENCH_FIELDS, "latencies", "itls", "errors") if k in data}
    n = len(data["input_lens"])
    for key, values in lists.items():
        if not isinstance(values, list):
            raise InputError(where(key), f"{key} is a {type(values).__name__}, expected a list")
        if len(values) != n:
            raise InputError(where(key), f"{key} has {len(values)} entries, input_lens {n}; expected one per request")
    errors = lists.get("errors", [""] * n)
    ok = np.array([not e for e in errors], dtype=bool)
    rows = np.flatnonzero(ok)
    if not len(rows):
        raise InputError(where("errors"), f"all {n} requests failed; nothing to compare")

    def numbers(key: str) -> np.ndarray:
        return _indexed(where(key), key, lambda vals, k=key: _numbers("", vals, k, 0), [lists[key][i] for i in rows], rows)

    ttft = numbers("ttfts")
    client = {} if "start_times" in lists else _client(data, where)
    start = numbers("start_times") if "start_times" in lists else np.zeros(len(rows))
    if "latencies" in lists:
        e2e = numbers("latencies")
    else:
        itls = [lists["itls"][i] for i in rows]
        sums = [sum(v) if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v) else None for v in itls]
        bad = next((j for j, s in enumerate(sums) if s is None), None)
        if bad is not None:
            raise InputError(where("itls"), f"itls[{rows[bad]}] is not a list of numbers")
        e2e = ttft + np.array(sums, dtype=float)

    def counts(key: str) -> np.ndarray:
        fn = lambda vals, k=key: whole_numbers("", vals, k, 0, 1, False, MAX_TOKENS_PER_REQUEST)  # noqa: E731
        return _indexed(where(key), key, fn, _whole_floats_as_ints([lists[key][i] for i in rows]), rows)

    _check_outcomes(path_text, ttft, e2e, ("ttfts", "latencies" if "latencies" in lists else "ttfts + sum(itls)"),
                    lambda i: f"{where('ttfts')}: request {rows[i]}")
    log = _log(path_text, start, counts("input_lens"), counts("output_lens"), ttft, e2e, "vllm_bench", n - len(rows))
    return replace(log, file_rows=rows, **client) if client else log


def _client(data: dict, where) -> dict:
    """How vLLM's client sent a result's requests, from its top-level fields (start_times absent)."""

    def number(key: str, value, expected: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise InputError(where(key), f"{key} is {value!r}; expected {expected}")
        return float(value)

    raw_rate = data["request_rate"]
    inf = raw_rate in ("inf", "Infinity", float("inf"))
    rate = float("inf") if inf else number("request_rate", raw_rate, 'a rate > 0 requests/s or "inf"')
    burstiness = number("burstiness", data.get("burstiness", 1.0), "a number > 0 (the gamma shape of the gaps)")
    limit = data.get("max_concurrency")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(where("max_concurrency"), f"max_concurrency is {limit!r}; expected null or a whole number >= 1")
    duration = data.get("duration")
    duration_s = None if duration is None else number("duration", duration, "a time > 0 s")
    send = "gamma" if math.isfinite(rate) else "burst" if limit is None else "closed_loop"
    return {"send": send, "request_rate_per_s": rate, "burstiness": burstiness, "max_concurrency": limit,
            "duration_s": duration_s}


def send_note(log: ServingLog) -> str | None:
    """One line saying how a log without send times is replayed (None: its send times are exact)."""
    if log.send in ("logged", "burst"):
        return None
    limit = f"at most {log.max_concurrency} in flight, the next sent when one ends"
    if log.send == "closed_loop":
        return (f"note: {log.trace.source} has no start_times; replaying it as vLLM's client sent it: {limit} "
                "(the instants come from the replay, so statistics are compared, not single requests)")
    how = f"request_rate {log.request_rate_per_s:g}/s, burstiness {log.burstiness:g}" + (
        f", {limit}" if log.max_concurrency is not None else "")
    return (f"note: {log.trace.source} has no start_times; replaying gamma arrivals at its {how}, drawn from "
            "the scenario's seed: statistically what vLLM sent, not the same instants")


# a median TPOT outside these is no serving engine's (the fastest decode ~2 ms a token; a 70B model
# on one CPU socket ~1-3 s): times in another unit than read (ms as s gives 10-50 s a token)
PLAUSIBLE_TPOT_S = (1e-4, 5.0)


def unit_note(log: ServingLog) -> str | None:
    """One line when the log's median TPOT is implausible, i.e. its times are likely in another
    unit than they were read in (None: plausible, or no request with two or more tokens)."""
    tpot = log.tpot_s[~np.isnan(log.tpot_s)]
    if not tpot.size:
        return None
    median = float(np.median(tpot))
    low, high = PLAUSIBLE_TPOT_S
    if low <= median <= high:
        return None
    guess = ("milliseconds read as seconds? (--columns ...,time_unit=ms)" if median > high else
             "seconds read as milliseconds or microseconds? (time_unit is s unless --columns sets it)")
    return (f"note: {log.trace.source}: median TPOT {median:.3g} s per token is implausible for a serving engine; "
            f"{guess}")


def bench_send_times_s(log: ServingLog, rng: np.random.Generator) -> np.ndarray:
    """Send times for a log without them, as vLLM's `get_request` spaced them: the first at 0,
    then gaps gamma(shape=burstiness, scale=1 / (rate x burstiness)), one per request of the file
    (failed ones too, so the rate is the logged one), then the kept requests' times. Zeros when
    the rate is inf (every request at once; a concurrency limit holds them back in the replay)."""
    if log.send == "logged":
        return log.trace.arrival_s
    if not math.isfinite(log.request_rate_per_s):
        return np.zeros(len(log))
    rows = log.file_rows if log.file_rows is not None else np.arange(len(log))
    n_file = len(log) + log.failed
    gaps = rng.gamma(log.burstiness, 1.0 / (log.request_rate_per_s * log.burstiness), max(n_file - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])[rows]


def _whole_floats_as_ints(values: list) -> list:
    """Token counts written as whole floats (161.0, or "2229.0": pandas writes an int column that
    held a missing value so) as ints; anything else as given, for whole_numbers to judge."""
    def whole(v):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, str) and v.strip().endswith(".0"):
            try:
                f = float(v)
            except ValueError:
                return v
            return int(f) if f.is_integer() else v
        return v
    return values if all(type(v) is int for v in values) else [whole(v) for v in values]


def _indexed(where: str, key: str, parse, values: list, rows: np.ndarray) -> np.ndarray:
    """Run a row parser over one JSON list, turning its row number into the request's index."""
    try:
        return parse(values)
    except InputError as exc:
        index = exc.where.rsplit(":", 1)[-1]
        i = rows[int(index)] if index.isdigit() and int(index) < len(rows) else "?"
        problem = exc.problem.replace(f"{key} ", f"{key}[{i}] ", 1)
        raise InputError(where, problem) from None


def _check_outcomes(where: str, ttft: np.ndarray, e2e: np.ndarray, names: tuple[str, str], at) -> None:
    for values, name in ((ttft, names[0]), (e2e, names[1])):
        bad = np.flatnonzero(values < 0)
        if bad.size:
            raise InputError(at(int(bad[0])), f"{name} is {values[bad[0]]:g} s (negative); a latency is >= 0")
    early = np.flatnonzero(e2e < ttft)
    if early.size:
        i = int(early[0])
        raise InputError(at(i), f"{names[1]} {e2e[i]:g} s is before {names[0]} {ttft[i]:g} s; the last token cannot "
                                "come before the first")


def _log(where: str, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray, ttft: np.ndarray, e2e: np.ndarray,
         fmt: str, failed: int) -> ServingLog:
    """Sort by arrival (logs are often in completion order) and make arrivals relative to the first."""
    if len(arrival) > MAX_REQUESTS:  # the replay allocates per request: refuse before it does
        raise InputError(where, f"{len(arrival):,} requests; expected at most {MAX_REQUESTS:,} (replay a part of the log)")
    order = np.argsort(arrival, kind="stable")
    arrival_s = arrival[order] - arrival[order[0]]
    if arrival_s[-1] > MAX_DURATION_S:
        raise InputError(where, f"arrivals span {arrival_s[-1]:.3g} s; expected at most {MAX_DURATION_S:,.0f} s (a year): "
                                "check the time unit")
    trace = Trace(source=where, arrival_s=arrival_s, input_tokens=prompt[order], output_tokens=output[order])
    return ServingLog(trace=trace, ttft_s=ttft[order], e2e_s=e2e[order], format=fmt, failed=failed)
