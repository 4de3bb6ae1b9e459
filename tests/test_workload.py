"""Synthetic workloads: distributions checked against their targets with tests that can fail
(each goodness-of-fit test has a twin showing a wrong parameter is rejected)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from simcost.rng import streams
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.workload import ExponentialLength, FixedLength, LengthSpec, LognormalLength, UniformLength
from simcost.workload.arrivals import poisson_arrivals
from simcost.workload.requests import Requests, generate, sample_lengths, workload_summary

P_MIN = 0.001  # fixed seeds, so a pass is deterministic; the threshold only documents the margin


def scenario(seed=0, duration_s=100.0, rate_per_s=5.0, input_tokens=None, output_tokens=None):
    return scenario_from_dict({
        "seed": seed, "duration_s": duration_s,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": rate_per_s},
                     "input_tokens": input_tokens or {"dist": "fixed", "value": 100},
                     "output_tokens": output_tokens or {"dist": "fixed", "value": 10}},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"}})


# --- Poisson arrivals -----------------------------------------------------------------------

RATE_PER_S, DURATION_S = 5.0, 2000.0


@pytest.fixture(scope="module")
def arrivals_s():
    return poisson_arrivals(RATE_PER_S, DURATION_S, np.random.default_rng(12345))


def gaps_s(arrivals):
    return np.diff(arrivals, prepend=0.0)  # the first gap is from t=0, also Exponential


def test_poisson_gaps_are_exponential_at_the_rate(arrivals_s):
    p = stats.kstest(gaps_s(arrivals_s), stats.expon(scale=1 / RATE_PER_S).cdf).pvalue
    assert p > P_MIN


def test_poisson_ks_rejects_a_wrong_rate(arrivals_s):
    p = stats.kstest(gaps_s(arrivals_s), stats.expon(scale=1 / (RATE_PER_S * 1.1)).cdf).pvalue
    assert p < P_MIN


def test_poisson_count_within_sampling_error(arrivals_s):
    expected = RATE_PER_S * DURATION_S
    assert abs(len(arrivals_s) - expected) < 4 * math.sqrt(expected)


def test_poisson_times_sorted_inside_window(arrivals_s):
    assert arrivals_s.dtype == np.float64
    assert np.all(np.diff(arrivals_s) >= 0)
    assert arrivals_s[0] > 0 and arrivals_s[-1] < DURATION_S


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_poisson_chunking_does_not_change_the_result(arrivals_s, chunk_size):
    chunked = poisson_arrivals(RATE_PER_S, DURATION_S, np.random.default_rng(12345), chunk_size=chunk_size)
    np.testing.assert_array_equal(chunked, arrivals_s)


def test_poisson_counts_over_many_short_runs_are_poisson():
    # Many short windows: the count distribution itself, not just its mean.
    rng = np.random.default_rng(7)
    rate, duration, runs = 2.0, 3.0, 4000
    counts = np.array([len(poisson_arrivals(rate, duration, rng)) for _ in range(runs)])
    mean = rate * duration
    observed = np.bincount(np.minimum(counts, 14), minlength=15)  # bins {0}, {1}, ..., {13}, {14+}
    expected_p = np.append(stats.poisson.pmf(np.arange(14), mean), stats.poisson.sf(13, mean))
    assert stats.chisquare(observed, expected_p * runs).pvalue > P_MIN


# --- length distributions -------------------------------------------------------------------

N = 20_000


def chi2_integer_cdf(samples, cdf, quantiles) -> float:
    """Chi-square p-value of integer samples (all >= 1) against an exact integer CDF, on bins
    (k_i, k_{i+1}] with k_0 = 0 and an open last bin. Edges 1 and 2 are always present so that
    a distribution concentrated on 1 still gets several bins."""
    edges = np.unique(np.concatenate([[0, 1, 2], quantiles]).astype(np.int64))
    p = np.diff(np.append(cdf(edges), 1.0))  # P(k_i < X <= k_{i+1}); the last is P(X > k_last)
    observed = np.bincount(np.searchsorted(edges, samples, side="left"), minlength=len(edges) + 1)[1:]
    return stats.chisquare(observed, p * len(samples)).pvalue


def lognormal_cdf(mean, sigma):
    dist = stats.lognorm(s=sigma, scale=math.exp(math.log(mean) - sigma ** 2 / 2))
    return dist, dist.cdf  # P(ceil(X) <= k) == P(X <= k) for integer k


def exponential_cdf(mean):
    dist = stats.expon(scale=mean)
    return dist, dist.cdf


def integer_mean_and_sd(cdf, upper):
    """Exact mean and sd of ceil(X) from P(X > k), summed to a far tail."""
    k = np.arange(0, upper)
    sf = 1 - cdf(k)
    mean = sf.sum()  # E[Y] = sum_{k>=0} P(Y > k)
    second = ((2 * k + 1) * sf).sum()  # E[Y^2] = sum_{k>=0} (2k+1) P(Y > k)
    return mean, math.sqrt(second - mean ** 2)


@pytest.mark.parametrize("mean, sigma", [(500.0, 0.8), (3.0, 1.2), (1200.0, 0.3)])
def test_lognormal_lengths_match_ceiled_lognormal(mean, sigma):
    samples = sample_lengths(LognormalLength(mean=mean, sigma=sigma), N, np.random.default_rng(1))
    assert samples.dtype == np.int64 and samples.min() >= 1
    dist, cdf = lognormal_cdf(mean, sigma)
    assert chi2_integer_cdf(samples, cdf, dist.ppf(np.linspace(0.05, 0.95, 19))) > P_MIN
    exact_mean, sd = integer_mean_and_sd(cdf, int(dist.ppf(1 - 1e-12)) + 2)
    assert abs(samples.mean() - exact_mean) < 4 * sd / math.sqrt(N)
    assert exact_mean == pytest.approx(mean + 0.5, abs=0.1)  # documented: about mean + 0.5


def test_lognormal_fit_rejects_a_wrong_sigma():
    samples = sample_lengths(LognormalLength(mean=500.0, sigma=0.8), N, np.random.default_rng(1))
    dist, cdf = lognormal_cdf(500.0, 0.88)
    assert chi2_integer_cdf(samples, cdf, dist.ppf(np.linspace(0.05, 0.95, 19))) < P_MIN


@pytest.mark.parametrize("mean", [50.0, 2.0, 0.3])
def test_exponential_lengths_are_geometric(mean):
    samples = sample_lengths(ExponentialLength(mean=mean), N, np.random.default_rng(2))
    assert samples.dtype == np.int64 and samples.min() >= 1
    dist, cdf = exponential_cdf(mean)
    assert chi2_integer_cdf(samples, cdf, dist.ppf(np.linspace(0.05, 0.95, 19))) > P_MIN
    exact_mean = 1 / (1 - math.exp(-1 / mean))  # geometric on 1, 2, ...
    sd = math.sqrt(math.exp(-1 / mean)) * exact_mean
    assert abs(samples.mean() - exact_mean) < 4 * sd / math.sqrt(N)


def test_exponential_fit_rejects_a_wrong_mean():
    samples = sample_lengths(ExponentialLength(mean=50.0), N, np.random.default_rng(2))
    dist, cdf = exponential_cdf(55.0)
    assert chi2_integer_cdf(samples, cdf, dist.ppf(np.linspace(0.05, 0.95, 19))) < P_MIN


def test_uniform_lengths_cover_both_ends_evenly():
    samples = sample_lengths(UniformLength(low=3, high=9), N, np.random.default_rng(3))
    assert samples.dtype == np.int64 and samples.min() == 3 and samples.max() == 9
    observed = np.bincount(samples - 3, minlength=7)
    assert stats.chisquare(observed).pvalue > P_MIN
    sd = math.sqrt((7 ** 2 - 1) / 12)
    assert abs(samples.mean() - 6.0) < 4 * sd / math.sqrt(N)
    # and the check can fail: the same counts are rejected as uniform on 3..10
    assert stats.chisquare(np.append(observed, 0), np.full(8, N / 8)).pvalue < P_MIN


def test_fixed_lengths_and_empty_draws():
    rng = np.random.default_rng(4)
    assert np.array_equal(sample_lengths(FixedLength(value=17), 5, rng), np.full(5, 17))
    for spec in (FixedLength(value=17), ExponentialLength(mean=3.0)):
        empty = sample_lengths(spec, 0, rng)
        assert empty.shape == (0,) and empty.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(dist=st.sampled_from(["lognormal", "exponential"]),
       mean=st.floats(min_value=1e-3, max_value=1e5), sigma=st.floats(min_value=0.05, max_value=4.0),
       seed=st.integers(0, 2 ** 32))
def test_lengths_always_at_least_one(dist, mean, sigma, seed):
    spec = LognormalLength(mean=mean, sigma=sigma) if dist == "lognormal" else ExponentialLength(mean=mean)
    samples = sample_lengths(spec, 500, np.random.default_rng(seed))
    assert samples.dtype == np.int64 and samples.min() >= 1


# --- generate(): seeds and stream independence ----------------------------------------------

LOGNORMAL = {"dist": "lognormal", "mean": 300, "sigma": 1.0}


def run(sc) -> Requests:
    return generate(sc, streams(sc.seed))


def test_same_seed_identical_different_seed_differs():
    a, b = run(scenario(seed=1, input_tokens=LOGNORMAL)), run(scenario(seed=1, input_tokens=LOGNORMAL))
    c = run(scenario(seed=2, input_tokens=LOGNORMAL))
    for name in ("arrival_s", "input_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert len(a) != len(c) or not np.array_equal(a.arrival_s, c.arrival_s)
    assert not np.array_equal(a.input_tokens[:50], c.input_tokens[:50])


def test_output_spec_does_not_move_arrivals_or_inputs():
    a = run(scenario(seed=3, input_tokens=LOGNORMAL, output_tokens={"dist": "fixed", "value": 10}))
    b = run(scenario(seed=3, input_tokens=LOGNORMAL, output_tokens={"dist": "exponential", "mean": 200}))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.output_tokens, b.output_tokens)


def test_input_spec_does_not_move_arrivals_or_outputs():
    out = {"dist": "uniform", "low": 1, "high": 500}
    a = run(scenario(seed=4, input_tokens={"dist": "fixed", "value": 10}, output_tokens=out))
    b = run(scenario(seed=4, input_tokens=LOGNORMAL, output_tokens=out))
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.output_tokens, b.output_tokens)


def test_generate_synthetic_shapes_and_window():
    req = run(scenario(seed=5, duration_s=50.0, rate_per_s=3.0, input_tokens=LOGNORMAL))
    assert len(req.input_tokens) == len(req.output_tokens) == len(req)
    assert req.arrival_s.dtype == np.float64 and req.input_tokens.dtype == np.int64
    assert np.all(np.diff(req.arrival_s) >= 0) and req.arrival_s[-1] < 50.0
    assert req.input_tokens.min() >= 1 and req.output_tokens.min() >= 1


def test_generate_with_no_arrivals_is_empty():
    req = run(scenario(seed=0, duration_s=1e-6, rate_per_s=1e-3))
    assert len(req) == 0 and req.arrival_s.dtype == np.float64 and req.input_tokens.dtype == np.int64
    summary = workload_summary(req)
    assert summary["count"] == 0 and summary["mean_rate_per_s"] is None


def test_workload_summary_numbers():
    req = Requests(arrival_s=np.array([1.0, 2.0, 5.0]), input_tokens=np.array([10, 20, 60]),
                   output_tokens=np.array([1, 2, 3]))
    s = workload_summary(req)
    assert s["count"] == 3 and s["span_s"] == 4.0 and s["mean_rate_per_s"] == 0.75
    assert s["input_tokens_mean"] == 30.0 and s["input_tokens_median"] == 20.0 and s["input_tokens_max"] == 60
    assert s["output_tokens_max"] == 3


# --- empirical lengths ----------------------------------------------------------------------

EMPIRICAL = {"dist": "empirical", "trace": "azure_conv"}


def log_corr(a, b) -> float:
    return float(np.corrcoef(np.log(a), np.log(b))[0, 1])


def test_empirical_pairs_keep_the_trace_correlation():
    from simcost.workload.traces import load_trace
    trace = load_trace("azure_conv")
    target = log_corr(trace.input_tokens, trace.output_tokens)
    req = run(scenario(seed=8, duration_s=4000.0, rate_per_s=10.0, input_tokens=EMPIRICAL, output_tokens=EMPIRICAL))
    assert len(req) > 30_000
    # sampling error of the correlation from 20 batches of the resample
    batches = [log_corr(i, o) for i, o in zip(np.array_split(req.input_tokens, 20), np.array_split(req.output_tokens, 20))]
    se = np.std(batches, ddof=1) / math.sqrt(20)
    assert abs(log_corr(req.input_tokens, req.output_tokens) - target) < 4 * se
    assert abs(target) > 10 * se  # the trace's correlation is real, so losing it would fail above
    for name in ("input_tokens", "output_tokens"):
        assert stats.ks_2samp(getattr(req, name), getattr(trace, name)).pvalue > P_MIN
        assert np.isin(getattr(req, name), getattr(trace, name)).all()


def test_empirical_marginal_alone_is_independent_of_the_other_length():
    req = run(scenario(seed=9, duration_s=2000.0, rate_per_s=10.0, input_tokens=EMPIRICAL,
                       output_tokens={"dist": "empirical", "trace": "azure_code"}))
    r = log_corr(req.input_tokens, req.output_tokens)
    assert abs(r) < 4 / math.sqrt(len(req))  # different traces: drawn independently, no correlation


def test_empirical_needs_a_trace_and_takes_nothing_else():
    from simcost.errors import InputError
    with pytest.raises(InputError, match="input_tokens.trace: missing"):
        scenario(input_tokens={"dist": "empirical"})
    with pytest.raises(InputError, match="input_tokens.mean: not used"):
        scenario(input_tokens={"dist": "empirical", "trace": "azure_conv", "mean": 3.0})
    with pytest.raises(InputError, match="workload.input_tokens.trace: 'azure_cnv'.*azure_conv"):
        run(scenario(input_tokens={"dist": "empirical", "trace": "azure_cnv"}))


def test_length_and_delay_distributions_are_classes_picked_by_dist():
    from simcost.errors import InputError
    from simcost.scenario.schema import build, to_dict
    from simcost.scenario.workload import DelaySpec, EmpiricalLength, UniformDelay

    assert build(LengthSpec, {"dist": "empirical", "trace": "azure_conv"}, "x") == EmpiricalLength(trace="azure_conv")
    delay = build(DelaySpec, {"dist": "uniform", "low_s": 1, "high_s": 2}, "x")
    assert isinstance(delay, UniformDelay) and to_dict(delay) == {"dist": "uniform", "low_s": 1.0, "high_s": 2.0}
    with pytest.raises(InputError, match="x.value: not used by dist 'uniform'"):
        build(LengthSpec, {"dist": "uniform", "low": 1, "high": 2, "value": 3}, "x")
