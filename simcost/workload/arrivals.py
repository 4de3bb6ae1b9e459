"""Arrival processes on [0, duration_s): renewal (Poisson, Gamma, Weibull), on-off bursts (a
two-state Markov-modulated Poisson process), time-varying rates (an inline table, a rate file or a
sinusoid) sampled exactly by thinning, and Alibaba ServeGen per-client windows (simcost.workload.servegen).

Every generator is vectorised (gaps drawn in chunks and cumsum'd; thinning in chunks) and takes
one `numpy.random.Generator`, the run's `arrivals` stream, so arrivals never shift the draws of
other streams. All processes start stationary: a renewal process's first arrival comes after a
forward-recurrence time, and the MMPP starts in its stationary state, so the mean rate holds from
t=0 and no warm-up transient is hidden in the arrivals themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

import simcost.portable_math as pmath
from simcost.errors import InputError, required
from simcost.scenario.arrivals import (
    ArrivalSpec,
    MmppArrivals,
    PiecewiseArrivals,
    PoissonArrivals,
    RenewalArrivals,
    ServegenArrivals,
    SinusoidalArrivals,
    check_rate_rows,
)
from simcost.workload.servegen import read_csv_columns, servegen_arrivals_with_clients
from simcost.workload.trace_formats import _numbers
from simcost.workload.traces import at_file_lines

RATE_FILE_COLUMNS = ("start_s", "rate_per_s")
GapSampler = Callable[[np.random.Generator, int], np.ndarray]


def arrivals(spec: ArrivalSpec, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times (float64 seconds, sorted) of `spec` on [0, duration_s)."""
    match spec:
        case PoissonArrivals():
            return poisson_arrivals(spec.rate_per_s, duration_s, rng)
        case RenewalArrivals():
            gap, first_gap = renewal_samplers(spec.process, spec.rate_per_s, spec.cv)
            return renewal_arrivals(gap, first_gap, spec.rate_per_s, duration_s, rng)
        case MmppArrivals():
            return mmpp_arrivals(spec.rate_on_per_s, spec.rate_off_per_s, spec.mean_on_s, spec.mean_off_s,
                                 duration_s, rng)
        case ServegenArrivals():
            return servegen_arrivals_with_clients(spec, duration_s, rng).arrival_s
    rate_fn, rate_max = rate_function(spec)
    return thinned_arrivals(rate_fn, rate_max, duration_s, rng)


def poisson_arrivals(rate_per_s: float, duration_s: float, rng: np.random.Generator,
                     *, chunk_size: int | None = None) -> np.ndarray:
    """Arrival times (float64 seconds, sorted) of a Poisson process on [0, duration_s).

    Exact: the cumulative sum of Exponential(1/rate) gaps, stopped at the first arrival at or past
    duration_s. Gaps are drawn in vectorised chunks; adding the running time into each chunk's
    first gap before its cumsum makes the result bit-identical to one long cumsum, so the chunk
    size (`chunk_size`, for tests; default ~ expected count + 6 sd) never changes the output.
    """
    if not rate_per_s > 0 or not duration_s > 0:
        raise ValueError(f"rate_per_s={rate_per_s} and duration_s={duration_s} must be > 0")
    expected = rate_per_s * duration_s
    if chunk_size is None:
        # One chunk suffices unless the count lands ~6 sd above its mean; the cap bounds the
        # memory of a single draw for huge runs.
        chunk_size = min(int(expected + 6 * math.sqrt(expected)) + 16, 1 << 22)
    scale_s = 1.0 / rate_per_s
    chunks = []
    now_s = 0.0
    while True:
        gaps_s = rng.exponential(scale_s, size=chunk_size)
        gaps_s[0] += now_s
        times_s = np.cumsum(gaps_s)
        if times_s[-1] >= duration_s:
            chunks.append(times_s[:np.searchsorted(times_s, duration_s, side="left")])
            break
        chunks.append(times_s)
        now_s = float(times_s[-1])
    return np.concatenate(chunks)


# --- renewal processes ----------------------------------------------------------------------

def gamma_params(rate_per_s: float, cv: float) -> tuple[float, float]:
    """(shape k, scale) of Gamma gaps with mean 1/rate and the given CV: k = 1/cv^2."""
    shape = 1.0 / cv ** 2
    return shape, 1.0 / (rate_per_s * shape)


def weibull_cv(shape: float) -> float:
    """CV of a Weibull(shape c): sqrt(Gamma(1+2/c) / Gamma(1+1/c)^2 - 1), in logs to avoid overflow."""
    from scipy import special  # here, not at the top: scipy costs 0.4 s of every run's start-up
    return math.sqrt(math.expm1(special.gammaln(1 + 2 / shape) - 2 * special.gammaln(1 + 1 / shape)))


def weibull_params(rate_per_s: float, cv: float) -> tuple[float, float]:
    """(shape c, scale) of Weibull gaps with mean 1/rate and the given CV. The CV falls
    monotonically in c, so c is the root of weibull_cv(c) = cv (solved in log c)."""
    from scipy import optimize  # only Weibull arrivals need it

    lo, hi = math.log(0.02), math.log(2000.0)  # CV ~ 1e14 .. 6e-4: covers the accepted 0.01..100
    try:
        log_shape = optimize.brentq(lambda x: math.log(weibull_cv(math.exp(x))) - math.log(cv), lo, hi, xtol=1e-14)
    except ValueError:
        raise InputError("workload.arrivals.cv", f"{cv}: no Weibull shape gives this CV") from None
    shape = math.exp(log_shape)
    return shape, 1.0 / (rate_per_s * math.gamma(1 + 1 / shape))


def renewal_samplers(process: str, rate_per_s: float, cv: float) -> tuple[GapSampler, GapSampler]:
    """(gap sampler, first-gap sampler). The first gap is the forward-recurrence time: U times a
    length-biased gap. Length-biased Gamma(k) is Gamma(k+1); length-biased Weibull(c, s) is
    s * G^(1/c) with G ~ Gamma(1+1/c). Both exact, so the process is stationary from t=0."""
    if process == "gamma":
        shape, scale = gamma_params(rate_per_s, cv)
        return (lambda rng, n: rng.gamma(shape, scale, size=n),
                lambda rng, n: rng.uniform(size=n) * rng.gamma(shape + 1, scale, size=n))
    if process == "weibull":
        shape, scale = weibull_params(rate_per_s, cv)
        return (lambda rng, n: scale * rng.weibull(shape, size=n),
                lambda rng, n: rng.uniform(size=n) * scale * pmath.power(rng.gamma(1 + 1 / shape, size=n), 1 / shape))
    raise ValueError(f"unknown renewal process {process!r}")


def renewal_arrivals(gap: GapSampler, first_gap: GapSampler, rate_per_s: float, duration_s: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Cumulative sums of gaps in chunks (each about the expected count + 6 sd) until duration_s."""
    expected = rate_per_s * duration_s
    chunk_size = min(int(expected + 6 * math.sqrt(expected)) + 16, 1 << 22)
    now_s = float(first_gap(rng, 1)[0])
    chunks = [np.array([now_s])]
    while now_s < duration_s:
        times_s = now_s + np.cumsum(gap(rng, chunk_size))
        chunks.append(times_s)
        now_s = float(times_s[-1])
    times_s = np.concatenate(chunks)
    return times_s[:np.searchsorted(times_s, duration_s, side="left")]


# --- on-off bursts: two-state MMPP ----------------------------------------------------------

def mmpp_arrivals(rate_on_per_s: float, rate_off_per_s: float, mean_on_s: float, mean_off_s: float,
                  duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Alternating exponential on/off sojourns (means mean_on_s, mean_off_s), the first state drawn
    from the stationary law; within each sojourn a Poisson process at that state's rate, placed
    exactly as a Poisson count of uniform points."""
    cycle_s = mean_on_s + mean_off_s
    starts_on = rng.uniform() < mean_on_s / cycle_s
    n_cycles = int(duration_s / cycle_s + 6 * math.sqrt(duration_s / cycle_s)) + 2
    pieces: list[np.ndarray] = []
    start_s = 0.0
    while start_s < duration_s:  # usually one pass; sojourns are memoryless, so appending is exact
        means = np.tile([mean_on_s, mean_off_s] if starts_on else [mean_off_s, mean_on_s], n_cycles)
        ends = start_s + np.cumsum(rng.exponential(means))
        pieces.append(ends)
        start_s = float(ends[-1])
    ends_s = np.minimum(np.concatenate(pieces), duration_s)
    starts_s = np.concatenate([[0.0], ends_s[:-1]])
    lengths_s = ends_s - starts_s
    on = (np.arange(len(ends_s)) % 2 == 0) == starts_on
    counts = rng.poisson(np.where(on, rate_on_per_s, rate_off_per_s) * lengths_s)
    times_s = np.repeat(starts_s, counts) + rng.uniform(size=counts.sum()) * np.repeat(lengths_s, counts)
    times_s.sort()
    return times_s[times_s < duration_s]


def mmpp_mean_rate_per_s(rate_on_per_s: float, rate_off_per_s: float, mean_on_s: float, mean_off_s: float) -> float:
    return (rate_on_per_s * mean_on_s + rate_off_per_s * mean_off_s) / (mean_on_s + mean_off_s)


# --- time-varying rates by thinning ---------------------------------------------------------

RateFn = Callable[[np.ndarray], np.ndarray]


def rate_function(spec: ArrivalSpec) -> tuple[RateFn, float]:
    """(rate(t) vectorised over t in seconds, an upper bound on it) for piecewise / sinusoidal."""
    if isinstance(spec, PiecewiseArrivals):
        table = np.asarray(rate_table(spec), dtype=np.float64)
        starts_s, rates = table[:, 0], table[:, 1]
        return (lambda t: rates[np.searchsorted(starts_s, t, side="right") - 1]), float(rates.max())
    if isinstance(spec, SinusoidalArrivals):
        amplitude, period_s, peak_at_s = sinusoid_params(spec)
        mean = spec.mean_rate_per_s
        return (lambda t: mean * (1 + amplitude * pmath.cos(2 * np.pi * (t - peak_at_s) / period_s))), mean * (1 + amplitude)
    raise ValueError(f"process {spec.process!r} has no rate function")


def rate_table(spec: PiecewiseArrivals) -> tuple[tuple[float, ...], ...]:
    """A piecewise spec's [[start_s, rate_per_s], ...]: inline, or read from rate_file (a CSV with
    header start_s,rate_per_s), checked like the inline table with errors at `file:line`."""
    if spec.rate_file is None:
        return required(spec.rate_table, "workload.arrivals.rate_table")  # validation: one of the two
    where, cells, numbers = read_csv_columns(Path(spec.rate_file), RATE_FILE_COLUMNS, "rate rows",
                                             "workload.arrivals.rate_file")
    with at_file_lines(where, numbers):
        starts_s, rates = (_numbers(where, cells[name], name, 2).tolist() for name in RATE_FILE_COLUMNS)
        table = tuple(zip(starts_s, rates))
        check_rate_rows(table, lambda i: f"{where}:{i + 2}", where)
    return table


def sinusoid_params(spec: SinusoidalArrivals) -> tuple[float, float, float]:
    """(relative amplitude a, period_s, peak_at_s): rate = mean (1 + a cos(2 pi (t - peak)/period)),
    so peak/trough = (1 + a)/(1 - a), i.e. a = (r - 1)/(r + 1)."""
    ratio = spec.peak_to_trough
    return (ratio - 1) / (ratio + 1), spec.period_s, spec.peak_at_s


def thinned_arrivals(rate_fn: RateFn, rate_max_per_s: float, duration_s: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Lewis-Shedler thinning: a Poisson process at rate_max, each point kept with probability
    rate(t)/rate_max. Exact for any rate <= rate_max; vectorised over all candidates at once."""
    candidates_s = poisson_arrivals(rate_max_per_s, duration_s, rng)
    keep = rng.uniform(size=len(candidates_s)) * rate_max_per_s < rate_fn(candidates_s)
    return candidates_s[keep]
