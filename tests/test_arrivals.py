"""Arrival processes match their targets: KS tests against scipy.stats (each with a twin showing a
wrong parameter is rejected, so the test can fail), mean rate and CV within sampling error, and
thinning reproduces the integral of the rate over windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg, stats

from simcost.errors import InputError
from simcost.rng import streams
from simcost.scenario.arrivals import ArrivalSpec
from simcost.scenario.scenario import scenario_from_dict
from simcost.workload.arrivals import arrivals, gamma_params, mmpp_mean_rate_per_s, weibull_cv, weibull_params
from simcost.workload.requests import generate

P_MIN = 0.001  # fixed seeds: a pass is deterministic; the threshold documents the margin
RATE_PER_S = 4.0


def spec(**kw) -> ArrivalSpec:
    return scenario_from_dict({
        "duration_s": 10.0, "model": {"name": "m"}, "hardware": {"device": "d"},
        "workload": {"arrivals": kw, "input_tokens": {"dist": "fixed", "value": 1},
                     "output_tokens": {"dist": "fixed", "value": 1}}}).workload.arrivals


def within_sampling_error(samples: np.ndarray, statistic, truth: float, groups: int = 20) -> bool:
    """|statistic(all) - truth| < 4 standard errors, the error estimated from `groups` batches."""
    batches = np.array([statistic(b) for b in np.array_split(samples, groups)])
    return abs(statistic(samples) - truth) < 4 * batches.std(ddof=1) / math.sqrt(groups)


def many_runs(arrival_spec, duration_s, runs, seed=11):
    rng = np.random.default_rng(seed)
    return [arrivals(arrival_spec, duration_s, rng) for _ in range(runs)]


# --- renewal: gamma and weibull -------------------------------------------------------------

def target(process, rate_per_s, cv):
    if process == "gamma":
        shape, scale = gamma_params(rate_per_s, cv)
        return stats.gamma(a=shape, scale=scale)
    shape, scale = weibull_params(rate_per_s, cv)
    return stats.weibull_min(c=shape, scale=scale)


RENEWAL = [("gamma", 0.5), ("gamma", 2.5), ("weibull", 0.6), ("weibull", 1.8)]


@pytest.fixture(scope="module", params=RENEWAL, ids=lambda p: f"{p[0]}-cv{p[1]}")
def renewal_run(request):
    process, cv = request.param
    times_s = arrivals(spec(process=process, rate_per_s=RATE_PER_S, cv=cv), 5000.0, np.random.default_rng(3))
    return process, cv, times_s


# Arrival times are float64 seconds, so gaps recovered by diff() at t ~ 5000 s are rounded to
# ~1e-12 s. Gamma with cv 2.5 (shape 0.16) puts ~1 % of its mass below that, enough to skew a KS
# test over 20k gaps (mean p 0.07 over 30 seeds). Compare the law conditioned on gap > 1 ns instead.
RESOLUTION_S = 1e-9


def ks_above_resolution(gaps_s, dist) -> float:
    floor = dist.cdf(RESOLUTION_S)
    return stats.kstest(gaps_s[gaps_s > RESOLUTION_S], lambda x: (dist.cdf(x) - floor) / (1 - floor)).pvalue


def test_renewal_gaps_match_scipy_distribution(renewal_run):
    process, cv, times_s = renewal_run
    assert ks_above_resolution(np.diff(times_s), target(process, RATE_PER_S, cv)) > P_MIN


def test_renewal_ks_rejects_a_wrong_cv(renewal_run):
    process, cv, times_s = renewal_run
    assert ks_above_resolution(np.diff(times_s), target(process, RATE_PER_S, cv * 1.08)) < P_MIN


def test_renewal_rate_and_cv_within_sampling_error(renewal_run):
    process, cv, times_s = renewal_run
    gaps_s = np.diff(times_s)
    assert within_sampling_error(gaps_s, np.mean, 1 / RATE_PER_S)
    assert within_sampling_error(gaps_s, lambda g: g.std() / g.mean(), cv)


@pytest.mark.parametrize("process, cv", RENEWAL)
def test_renewal_is_stationary_from_zero(process, cv):
    # Counts over [0, T) average rate * T exactly (no start-up bias), and the first arrival follows
    # the forward-recurrence law F_e(x) = (1/mu) int_0^x S(u) du = x S(x)/mu + P(length-biased <= x).
    rate_per_s, duration_s = RATE_PER_S, 5.0
    runs = many_runs(spec(process=process, rate_per_s=rate_per_s, cv=cv), duration_s, 4000)
    counts = np.array([len(r) for r in runs], dtype=float)
    assert within_sampling_error(counts, np.mean, rate_per_s * duration_s)
    dist, mean_s = target(process, rate_per_s, cv), 1 / rate_per_s
    if process == "gamma":
        biased = stats.gamma(a=dist.kwds["a"] + 1, scale=dist.kwds["scale"]).cdf
    else:
        c, s = dist.kwds["c"], dist.kwds["scale"]
        biased = lambda x: stats.gamma(a=1 + 1 / c).cdf((np.asarray(x) / s) ** c)  # noqa: E731
    first = np.array([r[0] for r in runs if len(r)])
    assert len(first) > 3000
    # Censored at duration_s: compare on runs with an arrival, i.e. the law conditioned on <= T.
    cdf_e = lambda x: x * dist.sf(x) / mean_s + biased(x)  # noqa: E731
    conditional = lambda x: cdf_e(np.minimum(x, duration_s)) / cdf_e(duration_s)  # noqa: E731
    assert stats.kstest(first, conditional).pvalue > P_MIN
    assert stats.kstest(first, lambda x: dist.cdf(np.minimum(x, duration_s)) / dist.cdf(duration_s)).pvalue < P_MIN


@pytest.mark.parametrize("cv", [0.01, 0.3, 1.0, 2.0, 10.0, 100.0])
def test_weibull_shape_solves_the_cv(cv):
    shape, scale = weibull_params(2.0, cv)
    assert weibull_cv(shape) == pytest.approx(cv, rel=1e-9)
    dist = stats.weibull_min(c=shape, scale=scale)
    assert dist.mean() == pytest.approx(0.5, rel=1e-9)
    if cv == 1.0:
        assert shape == pytest.approx(1.0, rel=1e-9)  # Weibull(1) is the exponential


def test_gamma_parameterisation():
    shape, scale = gamma_params(5.0, 2.0)
    assert shape == 0.25 and scale == pytest.approx(0.8)


# --- on-off bursts (MMPP) -------------------------------------------------------------------

ON, OFF, MEAN_ON_S, MEAN_OFF_S = 20.0, 0.5, 2.0, 8.0


def mmpp_matrices(rate_on=ON, rate_off=OFF, mean_on_s=MEAN_ON_S, mean_off_s=MEAN_OFF_S):
    """(pi, D0, Lambda): stationary law, generator without arrivals, arrival rates."""
    q = np.array([[-1 / mean_on_s, 1 / mean_on_s], [1 / mean_off_s, -1 / mean_off_s]])
    lam = np.diag([rate_on, rate_off])
    pi = np.array([mean_on_s, mean_off_s]) / (mean_on_s + mean_off_s)
    return pi, q - lam, lam


def phase_type_cdf(alpha, d0):
    """P(T <= t) = 1 - alpha exp(D0 t) 1 (time to the next arrival from state law alpha)."""
    return lambda ts: np.array([1 - alpha @ linalg.expm(d0 * t) @ np.ones(2) for t in np.atleast_1d(ts)])


@pytest.fixture(scope="module")
def mmpp_runs():
    return many_runs(spec(process="mmpp", rate_on_per_s=ON, rate_off_per_s=OFF, mean_on_s=MEAN_ON_S,
                          mean_off_s=MEAN_OFF_S), 200.0, 2000)


def mmpp_first_gaps(runs):
    first = np.array([r[0] for r in runs])
    second = np.array([r[1] - r[0] for r in runs])
    return first, second


def test_mmpp_first_arrival_and_next_gap_match_phase_type(mmpp_runs):
    # From the stationary state law pi the first arrival is phase-type(pi, D0); the state at that
    # arrival is alpha = pi (-D0)^-1 Lambda, and the next gap is phase-type(alpha, D0). Both exact.
    pi, d0, lam = mmpp_matrices()
    alpha = pi @ np.linalg.inv(-d0) @ lam
    first, second = mmpp_first_gaps(mmpp_runs)
    assert stats.kstest(first, phase_type_cdf(pi, d0)).pvalue > P_MIN
    assert stats.kstest(second, phase_type_cdf(alpha, d0)).pvalue > P_MIN


def test_mmpp_ks_rejects_wrong_burst_parameters(mmpp_runs):
    pi, d0, lam = mmpp_matrices(mean_on_s=MEAN_ON_S * 1.5)
    first, _ = mmpp_first_gaps(mmpp_runs)
    assert stats.kstest(first, phase_type_cdf(pi, d0)).pvalue < P_MIN
    assert stats.kstest(first, stats.expon(scale=1 / mmpp_mean_rate_per_s(ON, OFF, MEAN_ON_S, MEAN_OFF_S)).cdf).pvalue < P_MIN


def test_mmpp_count_mean_and_variance(mmpp_runs):
    # Var N(T) = mean T + 2 p_on p_off (r_on - r_off)^2 (T/s - (1 - e^{-sT})/s^2), s = total switch rate.
    duration_s = 200.0
    counts = np.array([len(r) for r in mmpp_runs], dtype=float)
    mean_rate = mmpp_mean_rate_per_s(ON, OFF, MEAN_ON_S, MEAN_OFF_S)
    s = 1 / MEAN_ON_S + 1 / MEAN_OFF_S
    p_on, p_off = MEAN_ON_S / (MEAN_ON_S + MEAN_OFF_S), MEAN_OFF_S / (MEAN_ON_S + MEAN_OFF_S)
    variance = mean_rate * duration_s + 2 * p_on * p_off * (ON - OFF) ** 2 * (
        duration_s / s - (1 - math.exp(-s * duration_s)) / s ** 2)
    assert within_sampling_error(counts, np.mean, mean_rate * duration_s)
    assert within_sampling_error(counts, lambda c: c.var(ddof=1), variance)
    assert counts.var() > 5 * counts.mean()  # bursty: far above Poisson's variance = mean


def test_mmpp_with_silent_off_state_has_no_arrivals_off():
    times_s = arrivals(spec(process="mmpp", rate_on_per_s=50.0, rate_off_per_s=0.0, mean_on_s=1.0, mean_off_s=1.0),
                       100.0, np.random.default_rng(5))
    assert np.diff(times_s).max() > 1.0 and np.all(np.diff(times_s) >= 0) and times_s[-1] < 100.0


# --- time-varying rates by thinning ---------------------------------------------------------

TABLE = ((0.0, 2.0), (300.0, 12.0), (450.0, 0.0), (700.0, 5.0))
SINE = dict(mean_rate_per_s=6.0, peak_to_trough=5.0, period_s=600.0, peak_at_s=150.0)


def piecewise_integral(table, t):
    starts, rates = np.array(table).T
    t = np.asarray(t, dtype=float)
    seg = np.searchsorted(starts, t, side="right") - 1
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(starts) * rates[:-1])])
    return cumulative[seg] + rates[seg] * (t - starts[seg])


def sine_integral(t, mean_rate_per_s, peak_to_trough, period_s, peak_at_s):
    a = (peak_to_trough - 1) / (peak_to_trough + 1)
    w = 2 * np.pi / period_s
    t = np.asarray(t, dtype=float)
    return mean_rate_per_s * (t + a / w * (np.sin(w * (t - peak_at_s)) - np.sin(-w * peak_at_s)))


CASES = {"piecewise": (dict(process="piecewise", rate_table=TABLE), lambda t: piecewise_integral(TABLE, t)),
         "sinusoidal": (dict(process="sinusoidal", **SINE), lambda t: sine_integral(t, **SINE))}
WRONG = {"piecewise": lambda t: piecewise_integral(((0.0, 2.0), (300.0, 11.0), (450.0, 0.0), (700.0, 5.0)), t),
         "sinusoidal": lambda t: sine_integral(t, **{**SINE, "peak_at_s": 170.0})}
DURATION_S = 1200.0


@pytest.fixture(scope="module", params=sorted(CASES))
def thinned(request):
    kw, integral = CASES[request.param]
    runs = many_runs(spec(**kw), DURATION_S, 40, seed=21)
    return request.param, runs, integral


def window_chi2_pvalue(runs, integral, width_s=30.0) -> float:
    """Counts in disjoint windows are independent Poisson(integral of the rate over the window)."""
    edges = np.arange(0.0, DURATION_S + width_s / 2, width_s)
    expected = np.diff(integral(edges)) * len(runs)
    observed = np.histogram(np.concatenate(runs), bins=edges)[0]
    used = expected > 0
    assert observed[~used].sum() == 0  # nothing where the rate is 0
    chi2 = (((observed - expected) ** 2)[used] / expected[used]).sum()
    return stats.chi2.sf(chi2, used.sum())


def test_thinning_reproduces_rate_integral_over_windows(thinned):
    name, runs, integral = thinned
    assert window_chi2_pvalue(runs, integral) > P_MIN


def test_thinning_window_test_rejects_a_wrong_rate(thinned):
    name, runs, _ = thinned
    assert window_chi2_pvalue(runs, WRONG[name]) < P_MIN


def test_thinning_time_rescaled_gaps_are_unit_exponential(thinned):
    # Time-rescaling theorem: Lambda(t_i) is a unit-rate Poisson process.
    name, runs, integral = thinned
    gaps = np.concatenate([np.diff(integral(r), prepend=0.0) for r in runs])
    assert stats.kstest(gaps, stats.expon.cdf).pvalue > P_MIN
    # KS on pooled gaps is blind to small shifts (the window test catches those), not to a flat rate.
    flat = lambda t: integral(DURATION_S) / DURATION_S * np.asarray(t)  # noqa: E731
    wrong = np.concatenate([np.diff(flat(r), prepend=0.0) for r in runs])
    assert stats.kstest(wrong, stats.expon.cdf).pvalue < P_MIN


def test_sinusoid_peak_to_trough_and_peak_position():
    kw = dict(process="sinusoidal", mean_rate_per_s=50.0, peak_to_trough=4.0, period_s=100.0, peak_at_s=25.0)
    times_s = np.concatenate(many_runs(spec(**kw), 1000.0, 4, seed=2))
    phase = np.histogram(times_s % 100.0, bins=[20, 30, 70, 80])[0]  # around the peak 25, trough 75
    assert phase[0] / phase[2] == pytest.approx(4.0, rel=0.15)


# --- config and wiring ----------------------------------------------------------------------

@pytest.mark.parametrize("kw, where, problem", [
    (dict(process="gamma", rate_per_s=1.0), "cv", "missing"),
    (dict(process="poisson", rate_per_s=1.0, cv=2.0), "cv", "not used by process 'poisson'"),
    (dict(process="weibull", rate_per_s=1.0, cv=0.0), "cv", ">= 0.01"),
    (dict(process="mmpp", rate_on_per_s=0.0, rate_off_per_s=0.0, mean_on_s=1.0, mean_off_s=1.0), "rate_on_per_s", "at least one"),
    (dict(process="piecewise", rate_table=[[1, 2]]), "rate_table[0]", "must start at 0"),
    (dict(process="piecewise", rate_table=[[0, 2], [0, 3]]), "rate_table[1]", "not after"),
    (dict(process="piecewise", rate_table=[[0, 2], [5, -1]]), "rate_table[1]", "negative"),
    (dict(process="piecewise", rate_table=[[0, 2], [5]]), "rate_table[1]", "[start_s, rate_per_s]"),
    (dict(process="piecewise", rate_table=[[0, 2], [5, "x"]]), "rate_table[1][1]", "expected a number"),
    (dict(process="piecewise", rate_table=[[0, 0]]), "rate_table", "every rate is 0"),
    (dict(process="piecewise", rate_table=3), "rate_table", "expected a list"),
    (dict(process="sinusoidal", mean_rate_per_s=1.0, peak_to_trough=0.5), "peak_to_trough", ">= 1"),
    (dict(process="sinusoidal", mean_rate_per_s=1.0), "peak_to_trough", "missing"),
])
def test_bad_arrival_config_names_the_key(kw, where, problem):
    with pytest.raises(InputError) as err:
        spec(**kw)
    assert err.value.where == f"workload.arrivals.{where}" and problem in err.value.problem


@pytest.mark.parametrize("kw", [dict(process="gamma", rate_per_s=3.0, cv=2.0),
                                dict(process="mmpp", rate_on_per_s=9.0, rate_off_per_s=1.0, mean_on_s=3.0, mean_off_s=3.0),
                                dict(process="sinusoidal", mean_rate_per_s=3.0, peak_to_trough=3.0, period_s=60.0)])
def test_generate_uses_the_arrival_stream_and_is_reproducible(kw):
    def run(seed, output):
        sc = scenario_from_dict({"seed": seed, "duration_s": 120.0, "model": {"name": "m"}, "hardware": {"device": "d"},
                                 "workload": {"arrivals": kw, "input_tokens": {"dist": "fixed", "value": 5},
                                              "output_tokens": output}})
        return generate(sc, streams(seed))
    a, b = run(1, {"dist": "fixed", "value": 3}), run(1, {"dist": "exponential", "mean": 30.0})
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)  # other streams do not move arrivals
    c = run(2, {"dist": "fixed", "value": 3})
    assert len(a) > 100 and not np.array_equal(a.arrival_s[:50], c.arrival_s[:50])
    assert np.all(np.diff(a.arrival_s) >= 0) and a.arrival_s[-1] < 120.0


def test_empty_window_gives_empty_arrays():
    for kw in (dict(process="gamma", rate_per_s=1e-3, cv=3.0),
               dict(process="mmpp", rate_on_per_s=1e-3, rate_off_per_s=0.0, mean_on_s=1.0, mean_off_s=1.0),
               dict(process="piecewise", rate_table=[[0, 0], [10, 1]])):
        times_s = arrivals(spec(**kw), 1e-3, np.random.default_rng(0))
        assert times_s.dtype == np.float64 and len(times_s) == 0


# --- piecewise rates from a file ------------------------------------------------------------

def rate_csv(tmp_path, rows, name="rates.csv", header="start_s,rate_per_s"):
    path = tmp_path / name
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return str(path)


def test_rate_file_equals_inline_table(tmp_path):
    inline = arrivals(spec(process="piecewise", rate_table=TABLE), DURATION_S, np.random.default_rng(8))
    from_file = arrivals(spec(process="piecewise", rate_file=rate_csv(tmp_path, TABLE)), DURATION_S,
                         np.random.default_rng(8))
    assert len(inline) > 1000
    np.testing.assert_array_equal(from_file, inline)


def test_rate_file_skips_blank_lines_and_names_file_lines_after_them(tmp_path):
    path = tmp_path / "gappy.csv"
    body = ["start_s,rate_per_s", "", *(f"{t},{r}" for t, r in TABLE)]
    path.write_bytes(("\r\n".join(body) + "\r\n\r\n").encode())
    from_file = arrivals(spec(process="piecewise", rate_file=str(path)), DURATION_S, np.random.default_rng(8))
    inline = arrivals(spec(process="piecewise", rate_table=TABLE), DURATION_S, np.random.default_rng(8))
    np.testing.assert_array_equal(from_file, inline)
    path.write_text("start_s,rate_per_s\n\n0,1.0\n\n60,-2.0\n")
    with pytest.raises(InputError) as err:
        arrivals(spec(process="piecewise", rate_file=str(path)), 10.0, np.random.default_rng(0))
    assert err.value.where == f"{path}:5" and "rate -2.0 is negative" in err.value.problem


@pytest.mark.parametrize("rows, line, problem", [
    ([(5, 1.0)], 2, "the first row must start at 0"),
    ([(0, 1.0), (60, -2.0)], 3, "rate -2.0 is negative"),
    ([(0, 1.0), (60, 2.0), (60, 3.0)], 4, "not after the previous row's 60.0 s"),
    ([(0, 1.0), (60, "lots")], 3, "rate_per_s 'lots' is not a number"),
    ([(0, 1.0), (60,)], 3, "1 fields, expected 2"),
])
def test_bad_rate_file_row_names_file_and_line(tmp_path, rows, line, problem):
    path = rate_csv(tmp_path, rows)
    with pytest.raises(InputError) as err:
        arrivals(spec(process="piecewise", rate_file=path), 10.0, np.random.default_rng(0))
    assert err.value.where == f"{path}:{line}" and problem in err.value.problem


@pytest.mark.parametrize("rows, header, where_line, problem", [
    ([(0, 0.0), (9, 0.0)], "start_s,rate_per_s", None, "every rate is 0"),
    ([], "start_s,rate_per_s", 2, "header only"),
    ([(0, 1.0)], "start_s,rate", 1, "missing column rate_per_s"),
])
def test_bad_rate_file_as_a_whole(tmp_path, rows, header, where_line, problem):
    path = rate_csv(tmp_path, rows, header=header)
    with pytest.raises(InputError) as err:
        arrivals(spec(process="piecewise", rate_file=path), 10.0, np.random.default_rng(0))
    assert err.value.where == (path if where_line is None else f"{path}:{where_line}") and problem in err.value.problem


@pytest.mark.parametrize("kw, where, problem", [
    (dict(process="piecewise", rate_table=[[0, 1]], rate_file="r.csv"), "rate_file", "given with rate_table"),
    (dict(process="piecewise"), "rate_table", "needs rate_table or rate_file"),
    (dict(process="sinusoidal", mean_rate_per_s=1.0, peak_to_trough=2.0, rate_file="r.csv"), "rate_file", "not used"),
])
def test_rate_file_and_table_exclusive(kw, where, problem):
    with pytest.raises(InputError) as err:
        spec(**kw)
    assert err.value.where == f"workload.arrivals.{where}" and problem in err.value.problem


def test_missing_rate_file_names_the_key(tmp_path):
    with pytest.raises(InputError) as err:
        arrivals(spec(process="piecewise", rate_file=str(tmp_path / "nope.csv")), 10.0, np.random.default_rng(0))
    assert err.value.where == "workload.arrivals.rate_file" and "not a file" in err.value.problem


def test_rate_file_is_relative_to_the_scenario_file(tmp_path):
    from simcost.scenario.scenario import load_scenario
    folder = tmp_path / "scenarios"
    folder.mkdir()
    rate_csv(folder, TABLE)
    (folder / "s.yaml").write_text(
        "duration_s: 100\nmodel: {name: m}\nhardware: {device: d}\nworkload:\n"
        "  arrivals: {process: piecewise, rate_file: rates.csv}\n"
        "  input_tokens: {dist: fixed, value: 1}\n  output_tokens: {dist: fixed, value: 1}\n")
    assert load_scenario(folder / "s.yaml").workload.arrivals.rate_file == str(folder / "rates.csv")


def test_each_process_is_its_own_class_and_round_trips():
    from simcost.scenario.arrivals import PiecewiseArrivals, RenewalArrivals, SinusoidalArrivals
    from simcost.scenario.schema import to_dict

    sine = spec(process="sinusoidal", mean_rate_per_s=2.0, peak_to_trough=3.0)
    assert isinstance(sine, SinusoidalArrivals) and (sine.period_s, sine.peak_at_s) == (86400.0, 0.0)
    assert isinstance(spec(process="weibull", rate_per_s=1.0, cv=2.0), RenewalArrivals)
    table = spec(process="piecewise", rate_table=[[0, 2]])
    assert isinstance(table, PiecewiseArrivals) and set(to_dict(table)) == {"process", "rate_table", "rate_file"}
    raw = {"duration_s": 10.0, "model": {"name": "m"}, "hardware": {"device": "d"},
           "workload": {"arrivals": {"process": "gamma", "rate_per_s": 1.0, "cv": 2.0},
                        "input_tokens": {"dist": "fixed", "value": 1}, "output_tokens": {"dist": "fixed", "value": 1}}}
    sc = scenario_from_dict(raw)
    assert scenario_from_dict(to_dict(sc)) == sc


def test_arrival_keys_of_another_process_may_be_null_and_the_process_is_required():
    assert spec(process="poisson", rate_per_s=1.0, cv=None, mean_on_s=None).rate_per_s == 1.0
    with pytest.raises(InputError) as err:
        spec(rate_per_s=1.0)
    assert err.value.where == "workload.arrivals.process" and "missing" in err.value.problem
    with pytest.raises(InputError) as err:
        spec(process="poison", rate_per_s=1.0)
    assert err.value.where == "workload.arrivals.process" and "poisson" in err.value.problem
