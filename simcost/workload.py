"""Request streams: synthetic (an arrival process from simcost.arrivals, parametric token lengths)
or from a trace.

Each kind of randomness comes from its own stream (see simcost.rng): arrivals from
`streams.arrivals`, prompt lengths from `streams.input_tokens`, output lengths from
`streams.output_tokens`. So changing, say, the output-length distribution leaves arrival times
and prompt lengths of the same seed untouched, and comparisons between scenarios stay paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcost.config import LengthSpec, Scenario
from simcost.rng import Streams
from simcost.arrivals import arrivals, poisson_arrivals  # noqa: F401 (poisson_arrivals re-exported)
from simcost.traces import load_trace


@dataclass(frozen=True)
class Requests:
    """All requests of a run, in arrival order."""

    arrival_s: np.ndarray  # float64, sorted, seconds from the start of the run
    input_tokens: np.ndarray  # int64 >= 1, prompt length
    output_tokens: np.ndarray  # int64 >= 1, tokens to generate (including the first)

    def __post_init__(self) -> None:
        # A developer error (a generator bug), not bad user input, so a plain ValueError.
        n = len(self.arrival_s)
        if len(self.input_tokens) != n or len(self.output_tokens) != n:
            raise ValueError(f"Requests arrays differ in length: {n}, {len(self.input_tokens)}, {len(self.output_tokens)}")

    def __len__(self) -> int:
        return len(self.arrival_s)


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` token counts (int64 >= 1) from `spec`.

    fixed: `value` every time (draws nothing from `rng`).
    uniform: integers `low`..`high`, both inclusive.
    lognormal: `mean` is the mean of the continuous distribution in tokens and `sigma` the sd of
        ln(x), so mu = ln(mean) - sigma^2/2; each draw is rounded up, P(X <= k) = lognorm.cdf(k).
        The integer mean is therefore about mean + 0.5.
    exponential: ceil(Exponential(mean)), i.e. geometric on 1, 2, ... with
        P(X <= k) = 1 - exp(-k/mean) and mean 1/(1 - exp(-1/mean)) ~= mean + 0.5.
    """
    if spec.dist == "fixed":
        return np.full(n, spec.value, dtype=np.int64)
    if spec.dist == "uniform":
        return rng.integers(spec.low, spec.high, size=n, dtype=np.int64, endpoint=True)
    if spec.dist == "lognormal":
        mu = math.log(spec.mean) - spec.sigma ** 2 / 2
        draws = rng.lognormal(mu, spec.sigma, size=n)
    elif spec.dist == "exponential":
        draws = rng.exponential(spec.mean, size=n)
    else:
        raise ValueError(f"unknown length dist {spec.dist!r}")  # config validation makes this unreachable
    # ceil maps (0, 1] to 1; the maximum only catches draws that underflowed to exactly 0.0, which
    # belong to (0, 1] too, so it does not change the distribution (it is not a clip of outliers).
    return np.maximum(np.ceil(draws), 1).astype(np.int64)


def generate(scenario: Scenario, streams: Streams) -> Requests:
    """The scenario's requests: synthetic on [0, duration_s), or a trace whose arrival times are
    divided by `rate_multiplier` (2 = gaps halved = twice the rate) and, when duration_s is set,
    cut to arrivals < duration_s. No arrivals gives empty arrays."""
    workload = scenario.workload
    if workload.trace is not None:
        trace = load_trace(workload.trace.name)
        arrival_s = trace.arrival_s / workload.trace.rate_multiplier
        n = len(arrival_s)
        if scenario.duration_s is not None:
            n = int(np.searchsorted(arrival_s, scenario.duration_s, side="left"))
        # Copies: the trace's cached arrays are shared and read-only.
        return Requests(arrival_s=arrival_s[:n].copy(), input_tokens=trace.input_tokens[:n].copy(),
                        output_tokens=trace.output_tokens[:n].copy())
    arrival_s = arrivals(workload.arrivals, scenario.duration_s, streams.arrivals)
    n = len(arrival_s)
    return Requests(arrival_s=arrival_s,
                    input_tokens=sample_lengths(workload.input_tokens, n, streams.input_tokens),
                    output_tokens=sample_lengths(workload.output_tokens, n, streams.output_tokens))


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
