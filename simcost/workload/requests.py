"""Request streams: synthetic (an arrival process from simcost.workload.arrivals, parametric token lengths)
or from a trace.

Each kind of randomness comes from its own stream (see simcost.rng): arrivals from
`streams.arrivals`, prompt lengths from `streams.input_tokens`, output lengths from
`streams.output_tokens`. So changing, say, the output-length distribution leaves arrival times
and prompt lengths of the same seed untouched, and comparisons between scenarios stay paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from simcost.errors import InputError, required
from simcost.rng import Streams, streams
from simcost.scenario.arrivals import ServegenArrivals
from simcost.scenario.limits import MAX_DURATION_S, MAX_REQUESTS
from simcost.scenario.scenario import Scenario
from simcost.scenario.workload import (
    DelaySpec,
    EmpiricalLength,
    ExponentialDelay,
    ExponentialLength,
    FixedDelay,
    FixedLength,
    LengthSpec,
    LognormalLength,
    TraceColumns,
    TraceSpec,
    UniformDelay,
    UniformLength,
    WorkloadConfig,
)
from simcost.workload.arrivals import arrivals, poisson_arrivals  # noqa: F401 (poisson_arrivals re-exported)
from simcost.workload.servegen import servegen_arrivals_with_clients
from simcost.workload.traces import Trace, load_trace


@dataclass(frozen=True)
class Requests:
    """All requests of a run, in arrival order."""

    arrival_s: np.ndarray  # float64, sorted, seconds from the start of the run
    input_tokens: np.ndarray  # int64 >= 1, prompt length
    output_tokens: np.ndarray  # int64 >= 1, tokens to generate (including the first)
    # Optional, from traces that carry them (None otherwise):
    prefix_block_ids: list[np.ndarray] | None = None  # per request, one id per prefix_block_tokens prompt block
    prefix_block_tokens: int | None = None  # Mooncake: 512
    session_ids: np.ndarray | None = None  # str per request
    tenants: np.ndarray | None = None  # str per request
    # From the scenario's workload entries (None: all from entry 0, one turn, open loop, no items):
    workload: np.ndarray | None = None  # int64, index of the workload (mix entry) it belongs to
    turns: np.ndarray | None = None  # int64, turns of the synthetic session this request opens
    user: np.ndarray | None = None  # int64, closed-loop user sending it (-1: open loop)
    items: np.ndarray | None = None  # int64, non-token items it carries

    def __post_init__(self) -> None:
        # A developer error (a generator bug), not bad user input, so a plain ValueError.
        n = len(self.arrival_s)
        lengths = [len(a) for a in (self.input_tokens, self.output_tokens, self.prefix_block_ids,
                                    self.session_ids, self.tenants, self.workload, self.turns, self.user,
                                    self.items) if a is not None]
        if any(length != n for length in lengths):
            raise ValueError(f"Requests arrays differ in length: {n}, {lengths}")

    def __len__(self) -> int:
        return len(self.arrival_s)


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator, column: str = "input_tokens",
                   key: str | None = None) -> np.ndarray:
    """`n` token counts (int64 >= 1) from `spec`.

    empirical: resampled with replacement from the trace's `column` (input_tokens or output_tokens).
    fixed: `value` every time (draws nothing from `rng`).
    uniform: integers `low`..`high`, both inclusive.
    lognormal: `mean` is the mean of the continuous distribution in tokens and `sigma` the sd of
        ln(x), so mu = ln(mean) - sigma^2/2; each draw is rounded up, P(X <= k) = lognorm.cdf(k).
        The integer mean is therefore about mean + 0.5.
    exponential: ceil(Exponential(mean)), i.e. geometric on 1, 2, ... with
        P(X <= k) = 1 - exp(-k/mean) and mean 1/(1 - exp(-1/mean)) ~= mean + 0.5.
    """
    match spec:
        case FixedLength():
            return np.full(n, spec.value, dtype=np.int64)
        case EmpiricalLength():
            values = getattr(load_trace(spec.trace, key=f"workload.{key or column}.trace"), column)
            return values[rng.integers(0, len(values), size=n)]
        case UniformLength():
            return rng.integers(spec.low, spec.high, size=n, dtype=np.int64, endpoint=True)
        case LognormalLength():
            mu = math.log(spec.mean) - spec.sigma ** 2 / 2
            draws = rng.lognormal(mu, spec.sigma, size=n)
        case ExponentialLength():
            draws = rng.exponential(spec.mean, size=n)
        case _:
            raise TypeError(f"not a length distribution: {spec!r}")
    # ceil maps (0, 1] to 1; the maximum only catches draws that underflowed to exactly 0.0, which
    # belong to (0, 1] too, so it does not change the distribution (it is not a clip of outliers).
    return np.maximum(np.ceil(draws), 1).astype(np.int64)


def workload_streams(scenario: Scenario, run_streams: Streams) -> list[Streams]:
    """One set of streams per workload entry: the run's own for the first (see simcost.rng)."""
    count = len(scenario.workload.entries())
    return [run_streams] + [streams(scenario.seed, i) for i in range(1, count)]


def generate(scenario: Scenario, run_streams: Streams) -> Requests:
    """The scenario's requests known before the run starts: synthetic arrivals on [0, duration_s)
    (session first turns; closed-loop users' first requests), or traces replayed by `replay`,
    for every workload entry, merged in arrival order. Follow-up turns and later closed-loop
    requests depend on completions, so `simcost.workload.sessions` creates them during the run."""
    parts = [_labelled(scenario, i, _generate_entry(scenario, i, s))
             for i, s in enumerate(workload_streams(scenario, run_streams))]
    return parts[0] if len(parts) == 1 else merge(parts)


def trace_requests(scenario: Scenario, trace: Trace) -> Requests:
    """Every request of `trace` as it stands (no window, rate change, loop or sampling), as the
    scenario's first workload: a serving log's replay (simcost.analysis.validate)."""
    rows = np.arange(len(trace))
    return _labelled(scenario, 0, _requests(trace, rows, np.zeros(len(trace), dtype=np.int64), trace.arrival_s))


def _labelled(scenario: Scenario, i: int, part: Requests) -> Requests:
    """`part` with the columns of workload entry i filled in (its index, tenant, one turn, open loop)."""
    workload = scenario.workload
    entry = workload.entries()[i]
    n = len(part)
    tenants = part.tenants if part.tenants is not None else np.full(n, entry.tenant or workload.entry_name(i), dtype=object)
    return replace(part, workload=np.full(n, i, dtype=np.int64), tenants=tenants,
                   turns=part.turns if part.turns is not None else np.ones(n, dtype=np.int64),
                   user=part.user if part.user is not None else np.full(n, -1, dtype=np.int64),
                   items=part.items if part.items is not None else np.zeros(n, dtype=np.int64))


def _generate_entry(scenario: Scenario, index: int, s: Streams) -> Requests:
    entry = scenario.workload.entries()[index]
    if entry.trace is not None:
        return replay(entry.trace, scenario.duration_s, s.arrivals)
    user, extras = None, dict[str, Any]()  # further Requests columns
    duration_s = required(scenario.duration_s, "duration_s")  # a synthetic workload runs for duration_s
    if entry.clients is not None:
        # closed loop: each user's first request one think time after t=0 (users not in lockstep)
        first_s = sample_delays_s(entry.clients.think_time, entry.clients.users, s.arrivals)
        user = np.flatnonzero(first_s < duration_s)
        user = user[np.argsort(first_s[user], kind="stable")]
        arrival_s = first_s[user]
    elif isinstance(entry.arrivals, ServegenArrivals):
        # each ServeGen client becomes a tenant, unless the workload names one for all of them
        regenerated = servegen_arrivals_with_clients(entry.arrivals, duration_s, s.arrivals)
        arrival_s = regenerated.arrival_s
        if entry.tenant is None:
            extras["tenants"] = np.array([f"client-{c}" for c in regenerated.client_id], dtype=object)
    else:
        if entry.arrivals is None:  # validation requires arrivals, clients or a trace
            raise RuntimeError("workload.arrivals is not set")
        arrival_s = arrivals(entry.arrivals, duration_s, s.arrivals)
    n = len(arrival_s)
    input_tokens, output_tokens = sample_request_lengths(entry, n, s)
    if entry.session is not None:
        extras["turns"] = sample_lengths(entry.session.turns, n, s.sessions, key="session.turns")
        extras["session_ids"] = np.array([f"{scenario.workload.entry_name(index)}:{k}" for k in range(n)], dtype=object)
    if entry.items is not None:
        extras["items"] = sample_lengths(entry.items.per_request, n, s.items, key="items.per_request")
        input_tokens = input_tokens + extras["items"] * entry.items.prompt_tokens_per_item
    return Requests(arrival_s=arrival_s, input_tokens=input_tokens, output_tokens=output_tokens, user=user, **extras)


def sample_request_lengths(entry: WorkloadConfig, n: int, s: Streams) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) token counts of `n` requests of a synthetic workload entry."""
    inp, out = entry.input_tokens, entry.output_tokens
    if inp is None or out is None:  # validation sets both on every synthetic entry
        raise RuntimeError("workload.input_tokens or output_tokens is not set")
    if isinstance(inp, EmpiricalLength) and isinstance(out, EmpiricalLength) and inp.trace == out.trace:
        # Joint: one row index per request (from the input stream) gives both lengths.
        trace = load_trace(inp.trace, key="workload.input_tokens.trace")
        rows = s.input_tokens.integers(0, len(trace), size=n)
        return trace.input_tokens[rows], trace.output_tokens[rows]
    return sample_lengths(inp, n, s.input_tokens), sample_lengths(out, n, s.output_tokens, column="output_tokens")


def sample_delays_s(spec: DelaySpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` durations in seconds (float64 >= 0) from `spec` (think times)."""
    match spec:
        case FixedDelay():
            return np.full(n, spec.value_s)
        case UniformDelay():
            return rng.uniform(spec.low_s, spec.high_s, size=n)
        case ExponentialDelay():
            return rng.exponential(spec.mean_s, size=n)
    mu = math.log(spec.mean_s) - spec.sigma ** 2 / 2  # lognormal with the given mean
    return rng.lognormal(mu, spec.sigma, size=n)


_OPTIONAL_COLUMNS = ("session_ids", "tenants", "workload", "turns", "user", "items")


def merge(parts: list[Requests]) -> Requests:
    """Requests of several workloads in one arrival order (stable: ties keep workload order).
    Prefix block ids get a disjoint range per part, so workloads never share cache blocks."""
    arrival_s = np.concatenate([p.arrival_s for p in parts])
    order = np.argsort(arrival_s, kind="stable")
    columns: dict[str, Any] = {name: np.concatenate([_column(p, name) for p in parts])[order]
               for name in ("input_tokens", "output_tokens") + _OPTIONAL_COLUMNS}
    blocks = _merged_blocks(parts, order)
    return Requests(arrival_s=arrival_s[order], **columns, **blocks)


def _column(part: Requests, name: str) -> np.ndarray:
    values = getattr(part, name)
    if values is None and name == "session_ids":  # this workload has no sessions
        return np.full(len(part), None, dtype=object)
    return values


def _merged_blocks(parts: list[Requests], order: np.ndarray) -> dict[str, Any]:
    with_blocks = [p for p in parts if p.prefix_block_ids is not None]
    if not with_blocks:
        return {}
    sizes = {required(p.prefix_block_tokens, "Requests.prefix_block_tokens") for p in with_blocks}
    if len(sizes) > 1:
        raise InputError("workload.mix", f"traces with different prefix block sizes {sorted(sizes)} cannot be mixed")
    ids: list[np.ndarray] = []
    offset = 0
    for p in parts:
        blocks = p.prefix_block_ids or [np.zeros(0, dtype=np.int64)] * len(p)
        ids.extend(b + offset for b in blocks)
        offset += max((int(b.max()) + 1 for b in blocks if len(b)), default=0)
    return {"prefix_block_ids": [ids[i] for i in order], "prefix_block_tokens": sizes.pop()}


def trace_names(scenario: Scenario) -> list[tuple[str, TraceColumns | None]]:
    """The trace files `generate` loads for `scenario` (replayed, or resampled for token
    lengths), each once, as `load_trace`'s (name, columns)."""
    names: list[tuple[str, TraceColumns | None]] = []
    for entry in scenario.workload.entries():
        if entry.trace is not None:
            names.append((entry.trace.name, entry.trace.columns))
        names += [(lengths.trace, None) for lengths in (entry.input_tokens, entry.output_tokens)
                  if isinstance(lengths, EmpiricalLength)]
    return list(dict.fromkeys(names))


def replay(spec: TraceSpec, duration_s: float | None, rng: np.random.Generator) -> Requests:
    """A trace as requests: the window [start_s, end_s) of its own time axis shifted to 0, gaps
    divided by `rate_multiplier` (2 = twice the rate), repeated back to back when `loop` until
    duration_s, cut at duration_s, then each request kept with probability `sample_fraction`
    (from `rng`, the arrivals stream). Looped copies get fresh block and session ids, so repeating
    a trace does not invent prefix-cache hits or merge sessions."""
    trace = load_trace(spec.name, spec.columns)
    lo = int(np.searchsorted(trace.arrival_s, spec.start_s, side="left"))
    hi = len(trace) if spec.end_s is None else int(np.searchsorted(trace.arrival_s, spec.end_s, side="left"))
    rows = np.arange(lo, hi)
    if not len(rows):  # a run of no requests would report zeros as if they were measured
        raise InputError("workload.trace.start_s", f"the window from {spec.start_s:g} s to {spec.end_s or 'the end'} "
                         f"holds no request of {spec.name} (its arrivals span 0 to {trace.span_s:g} s)")
    arrival_s = (trace.arrival_s[rows] - spec.start_s) / spec.rate_multiplier
    if duration_s is None and arrival_s[-1] > MAX_DURATION_S:  # the run would last as long as the trace
        raise InputError("workload.trace.name", f"{spec.name} spans {arrival_s[-1]:.3g} s of arrivals; expected at most "
                         f"{MAX_DURATION_S:,.0f} s (a year): check its time unit, or set end_s or duration_s")
    copy = np.zeros(len(rows), dtype=np.int64)
    if spec.loop:
        period_s = _loop_period_s(spec, trace.arrival_s[rows], duration_s) / spec.rate_multiplier
        loop_s = required(duration_s, "duration_s")  # _loop_period_s refuses None
        copies = math.ceil(loop_s / period_s)
        if copies * len(rows) > MAX_REQUESTS:  # estimated before the copies are allocated
            raise InputError("workload.trace.loop", f"~{copies * len(rows):.3g} requests from {copies:,} copies of the "
                             f"window over duration_s={loop_s:g}; expected at most {MAX_REQUESTS:,}")
        arrival_s = (arrival_s[None, :] + period_s * np.arange(copies)[:, None]).ravel()
        rows, copy = np.tile(rows, copies), np.repeat(np.arange(copies), len(rows))
    keep = np.ones(len(rows), dtype=bool) if duration_s is None else arrival_s < duration_s
    if spec.sample_fraction < 1:
        keep &= rng.uniform(size=len(rows)) < spec.sample_fraction
    return _requests(trace, rows[keep], copy[keep], arrival_s[keep])


def _loop_period_s(spec: TraceSpec, window_s: np.ndarray, duration_s: float | None) -> float:
    """Length of one repeat in trace time: end_s - start_s when given; else up to the last
    arrival plus one mean gap, so the gap across the seam looks like any other."""
    if duration_s is None:
        raise InputError("workload.trace.loop", "needs duration_s: looping repeats the trace to fill it")
    if spec.end_s is not None:
        return spec.end_s - spec.start_s
    span_s = float(window_s[-1] - window_s[0]) if len(window_s) else 0.0
    if span_s <= 0:
        raise InputError("workload.trace.loop", "the trace window spans 0 s; give end_s to set the loop length")
    return float(window_s[-1]) - spec.start_s + span_s / (len(window_s) - 1)


def _requests(trace: Trace, rows: np.ndarray, copy: np.ndarray, arrival_s: np.ndarray) -> Requests:
    """Requests from trace rows (fancy indexing copies, so the cached trace stays untouched)."""
    extras: dict[str, Any] = {}
    if trace.block_ids is not None:
        id_stride = int(trace.block_ids.max(initial=-1)) + 1
        offsets = required(trace.block_offsets, "the trace's block offsets")  # set with block_ids
        starts, ends = offsets[rows], offsets[rows + 1]
        extras["prefix_block_ids"] = [trace.block_ids[a:b] + k * id_stride for a, b, k in zip(starts, ends, copy)]
        extras["prefix_block_tokens"] = trace.block_tokens
    if trace.session_ids is not None:
        extras["session_ids"] = np.array([s if k == 0 else f"{s}@{k}" for s, k in zip(trace.session_ids[rows], copy)],
                                         dtype=object)
    if trace.tenants is not None:
        extras["tenants"] = trace.tenants[rows]
    return Requests(arrival_s=arrival_s, input_tokens=trace.input_tokens[rows],
                    output_tokens=trace.output_tokens[rows], **extras)


def workload_summary(req: Requests) -> dict:
    """Plain numbers for printing: count, span (first to last arrival), mean rate, token stats."""
    n = len(req)
    span_s = float(req.arrival_s[-1] - req.arrival_s[0]) if n else 0.0
    summary = {"count": n, "span_s": span_s, "mean_rate_per_s": n / span_s if span_s > 0 else None}
    for name in ("input_tokens", "output_tokens"):
        values = getattr(req, name)
        summary[f"{name}_mean"] = float(values.mean()) if n else None
        summary[f"{name}_median"] = float(np.median(values)) if n else None
        summary[f"{name}_max"] = int(values.max()) if n else None
    return summary
