"""Each arrival generator against its target, over SEEDS seeded runs: count against the
expected count (mean z-score), inter-arrival CV, and a Kolmogorov-Smirnov test of the gaps
against scipy.stats (renewal processes) or of the time-rescaled gaps against Exp(1)
(time-varying rates, where thinning is exact iff those are unit exponential). A correct
generator gives KS p-values uniform on [0, 1]: about 5 % below 0.05, and a uniformity test of
the p-values themselves that does not reject. ServeGen: the regenerated count against the file's
sum of rate x 600 over the day.

    python experiments/arrival_check.py

The same properties are asserted, with rejection checks, in tests/test_arrivals.py and
tests/test_servegen.py; this prints the numbers for a report.
"""

from __future__ import annotations

import numpy as np
from scipy import integrate, stats

from simcost.scenario.arrivals import ArrivalSpec
from simcost.scenario.schema import build
from simcost.workload.arrivals import arrivals, gamma_params, mmpp_mean_rate_per_s, rate_function, weibull_params
from simcost.workload.servegen import load_client_windows

SEED = 2026
SEEDS = 20
DURATION_S = 5_000.0


def spec(**kw) -> ArrivalSpec:
    return build(ArrivalSpec, kw, "arrivals")


def run_stats(s: ArrivalSpec, duration_s: float, expected: float, count_sd: float, gap_cdf, rescale=None) -> list:
    """Per seed: z of the count, gap CV, KS p-value; summarised over SEEDS seeds."""
    z, cv, p = [], [], []
    for seed in range(SEED, SEED + SEEDS):
        t = arrivals(s, duration_s, np.random.default_rng(seed))
        z.append((len(t) - expected) / count_sd)
        gaps = np.diff(t if rescale is None else rescale(t))
        cv.append(gaps.std() / gaps.mean())
        p.append(stats.kstest(gaps, gap_cdf).pvalue if gap_cdf is not None else np.nan)
    p = np.array(p)
    uniform_p = stats.kstest(p, "uniform").pvalue if gap_cdf is not None else np.nan
    return [float(np.mean(z)), float(np.mean(cv)), float(np.median(p)), float(np.mean(p < 0.05)), uniform_p]


def rescaler(s: ArrivalSpec, duration_s: float):
    """t -> Lambda(t), the integrated rate: a unit-rate Poisson process iff thinning is exact."""
    rate_fn, _ = rate_function(s)
    grid = np.linspace(0.0, duration_s, 200_001)
    cum = integrate.cumulative_trapezoid(rate_fn(grid), grid, initial=0.0)
    return (lambda t: np.interp(t, grid, cum)), float(cum[-1])


def main() -> None:
    d = DURATION_S
    rows = []
    poisson = spec(process="poisson", rate_per_s=8.0)
    rows.append(("poisson 8/s", 1.0, run_stats(poisson, d, 8 * d, np.sqrt(8 * d), stats.expon(scale=1 / 8).cdf)))
    k, scale = gamma_params(8.0, 2.0)
    rows.append(("gamma 8/s cv 2", 2.0, run_stats(spec(process="gamma", rate_per_s=8.0, cv=2.0), d, 8 * d,
                                                   2.0 * np.sqrt(8 * d), stats.gamma(k, scale=scale).cdf)))
    c, scale = weibull_params(8.0, 1.5)
    rows.append(("weibull 8/s cv 1.5", 1.5, run_stats(spec(process="weibull", rate_per_s=8.0, cv=1.5), d, 8 * d,
                                                       1.5 * np.sqrt(8 * d), stats.weibull_min(c, scale=scale).cdf)))
    mmpp = spec(process="mmpp", rate_on_per_s=40.0, rate_off_per_s=2.0, mean_on_s=5.0, mean_off_s=30.0)
    mean_rate = mmpp_mean_rate_per_s(40.0, 2.0, 5.0, 30.0)
    rows.append(("mmpp on/off", float("nan"), run_stats(mmpp, d, mean_rate * d, np.sqrt(mean_rate * d), None)))
    for name, s, dur in (("piecewise 2/12/4", spec(process="piecewise", rate_table=((0.0, 2.0), (600.0, 12.0), (1200.0, 4.0))), 3600.0),
                         ("sinusoidal x4, 1 h", spec(process="sinusoidal", mean_rate_per_s=10.0, peak_to_trough=4.0,
                                                     period_s=3600.0), 3600.0)):
        rescale, total = rescaler(s, dur)
        rows.append((name, 1.0, run_stats(s, dur, total, np.sqrt(total), stats.expon.cdf, rescale)))
    print(f"{SEEDS} seeds each\n{'process':<20}{'count z':>9}{'gap CV':>8}{'target':>8}{'KS p med':>10}{'p<0.05':>8}{'p unif.':>9}")
    for name, target, (z, cv, p_med, p_low, p_unif) in rows:
        print(f"{name:<20}{z:>9.2f}{cv:>8.3f}{target:>8.3f}{p_med:>10.3f}{p_low:>8.0%}{p_unif:>9.3f}")
    print(f"count z: mean over seeds of (count - expected) / sd, standard error {1 / np.sqrt(SEEDS):.2f} when correct")
    print("(sd = sqrt(n) cv for renewal, Poisson sd otherwise;")
    print("the MMPP's count variance is larger than Poisson's, see tests/test_arrivals.py for its exact check).")
    print("Piecewise and sinusoidal gaps are time-rescaled (Lambda(t_i+1) - Lambda(t_i)), target Exp(1).")
    servegen_check()


def servegen_check() -> None:
    for name in ("servegen_mm_image", "servegen_deepseek_r1"):
        windows = load_client_windows(name)
        s = spec(process="servegen", servegen_file=name)
        t = arrivals(s, 86_400.0, np.random.default_rng(SEED))
        expected = float((windows.rate_per_s * 600.0).sum())
        frac = windows.rate_per_s * 600.0 - np.floor(windows.rate_per_s * 600.0)
        sd = float(np.sqrt((frac * (1 - frac)).sum()))  # the only randomness in the count: the rounding
        print(f"{name}: {len(t):,} arrivals in one day; file's sum of rate x 600 = {expected:,.1f} "
              f"(rounding sd {sd:.1f}); z = {(len(t) - expected) / sd:+.2f}")


if __name__ == "__main__":
    main()
