"""Monthly spend under a growth path: `simcost forecast`.

A scenario stands for one representative stretch of a month; the forecast replays it at each
month's load, on several seeds, and scales the bill up to a month.

* **Growth path.** Month m (1..N) runs at load factor g^(m-1) x the product of every step
  factor whose month is <= m (`--growth g`, compounding; `--step M:F` multiplies the load by F
  from month M on, e.g. a launch). Month 1 is the scenario as written.
* **Scaling the load** (`scale_load`, on the scenario as plain data): open-loop rates are
  multiplied (poisson/gamma/weibull `rate_per_s`, mmpp both rates, piecewise every table rate,
  sinusoidal `mean_rate_per_s`, servegen `rate_multiplier`); a piecewise `rate_file` is read and
  written back inline, scaled. Burstiness (cv, peak-to-trough, on/off times) and the time axis
  are kept, so only the level grows. Closed loop: `clients.users` x factor, rounded half up and
  at least 1 (so small populations grow in whole users, and the effective factor is
  users'/users). Traces: `trace.rate_multiplier` x factor (gaps shrink). A `mix` scales every
  entry. A trace cut at `duration_s` without `loop` must still cover `duration_s` at the
  highest month's rate, otherwise the month would silently get less load; that is refused.
* **Scaling up to a month.** The scenario's own window (`duration_s`, or the trace's span) is the
  representative stretch: $/month = the run's bill / its horizon (the fleet is paid until the last
  request ends) x 3600 x `--hours-per-month` (730 by default). The bill's per-start minimum
  charge is left out (a fleet that runs all month starts once; in a short window the minimum
  would be scaled up as if it started every window). Pick a window that holds the pattern the
  month should average over (a diurnal scenario needs its whole day).
* **Fleet.** Static by default: the scenario's fleet every month, so on-demand spend is flat (an
  on-demand fleet bills every hour whatever the load) and the signal is the SLO: the first month
  it is missed is when the fleet needs more replicas. `--resize` sizes the fleet each month, for
  each seed: from that seed's `fleet.replicas` of the previous month (month 1: the scenario's) it
  adds replicas one at a time until the run meets the SLO, up to `--max-replicas` (default 4x the
  scenario's); in month 1, and whenever the load falls, it first removes replicas while the SLO
  still holds. The `replicas` column is the largest seed's fleet (the one to provision: it meets
  the SLO on every seed), `replicas_min` the smallest. Disaggregated fleets are not resized.
* **Uncertainty.** K seeds (`--seeds`, the scenario's seed + 0..K-1, the same in every month, so
  months differ by load and not by luck) give the mean $/month and a band: min-max for K < 5,
  the 5th-95th percentiles for K >= 5. With a static on-demand fleet the band is flat (the bill
  does not depend on load); with `--resize` it is the spread of the fleet the seeds need (2 or 3
  replicas near a threshold), and with load-dependent pricing (owned hardware's energy, usage
  above a savings-plan commitment) that of the bill. A month meets the SLO when every seed does.
  Identical runs (same scenario, fleet and seed) run once.
* **Budget.** With `--budget-usd-per-month X`, a month is over budget when its mean exceeds X;
  the report names the first such month (and the first month whose band's top exceeds X).

Writes `forecast.csv` (one row per month) and `forecast.png` (spend with its band, budget line,
first month over budget marked; SLO attainment below): simcost.analysis.forecast_outputs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from simcost.analysis.backends import RunCache, job_key, progress_bar, worker_pool
from simcost.errors import InputError
from simcost.scenario.arrivals import PiecewiseArrivals
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import build, to_dict
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR

BAND_PERCENTILE_MIN_SEEDS = 5  # from this many seeds on, the band is the 5th-95th percentile
RESIZE_CAP_FACTOR = 4  # --resize tries up to this many times the scenario's replicas by default

# open-loop processes whose level is set by these keys (piecewise and servegen are special)
RATE_KEYS = {"poisson": ("rate_per_s",), "gamma": ("rate_per_s",), "weibull": ("rate_per_s",),
             "mmpp": ("rate_on_per_s", "rate_off_per_s"), "sinusoidal": ("mean_rate_per_s",)}


# --- growth path ----------------------------------------------------------------------------

MAX_MONTHS = 600
MAX_LOAD_FACTOR = 1e6  # the load grows a million-fold: past any fleet sizing question


@dataclass(frozen=True)
class GrowthPath:
    months: int
    growth_per_month: float = 1.0
    steps: tuple[tuple[int, float], ...] = ()  # (month, factor): load x factor from that month on

    def check(self) -> None:
        if self.months < 1:
            raise InputError("--months", f"{self.months}; expected a whole number of months >= 1")
        if not (math.isfinite(self.growth_per_month) and self.growth_per_month > 0):
            raise InputError("--growth", f"{self.growth_per_month}; expected a monthly load multiplier > 0 (1.08 is +8 %/month)")
        for month, factor in self.steps:
            if not 1 <= month <= self.months:
                raise InputError("--step", f"{month}:{factor:g}; the month must be between 1 and --months={self.months}")
        if self.months > MAX_MONTHS:
            raise InputError("--months", f"{self.months}; expected at most {MAX_MONTHS} (a load path beyond 50 years "
                             "is no forecast)")
        log_peak = math.log(self.growth_per_month) * (self.months - 1) + sum(math.log(f) for _, f in self.steps)
        if log_peak > math.log(MAX_LOAD_FACTOR):  # in logs: 1e300 ** 11 overflows
            raise InputError("--growth", f"{self.growth_per_month:g} per month (with --step) multiplies the load by "
                             f"more than {MAX_LOAD_FACTOR:.0e} by month {self.months}; expected a path the fleet "
                             "could follow")

    def load_factor(self, month: int) -> float:
        factor = self.growth_per_month ** (month - 1)
        for step_month, step_factor in self.steps:
            if step_month <= month:
                factor *= step_factor
        return factor

    def describe(self) -> str:
        steps = "".join(f", x{f:g} from month {m}" for m, f in sorted(self.steps))
        return f"{self.months} months, load x{self.growth_per_month:g}/month{steps}"


def parse_step(text: str) -> tuple[int, float]:
    """'4:2' -> (4, 2.0): the load doubles from month 4 on."""
    month_text, sep, factor_text = text.partition(":")
    bad = InputError("--step", f"'{text}'; expected MONTH:FACTOR with a whole month and a factor > 0, e.g. 4:2")
    try:
        month, factor = int(month_text), float(factor_text)
    except ValueError:
        raise bad from None
    if not sep or not (math.isfinite(factor) and factor > 0):
        raise bad
    return month, factor


# --- scaling the load -----------------------------------------------------------------------

def scale_load(raw: dict, factor: float) -> dict:
    """A copy of a scenario (plain data, file paths already resolved as `load_scenario` does)
    with its load multiplied by `factor`; see the module docstring for each kind of workload."""
    if not factor > 0:
        raise ValueError(f"load factor {factor} is not > 0")
    raw = copy.deepcopy(raw)
    workload = raw["workload"]
    for index, entry in enumerate(workload.get("mix") or [workload]):
        where = f"workload.mix[{index}]" if workload.get("mix") else "workload"
        _scale_entry(entry, factor, where)
    return raw


def _scale_entry(entry: dict, factor: float, where: str) -> None:
    if entry.get("trace"):
        trace = entry["trace"]
        trace["rate_multiplier"] = (trace.get("rate_multiplier") or 1.0) * factor
    elif entry.get("clients"):
        clients = entry["clients"]
        clients["users"] = max(1, math.floor(clients["users"] * factor + 0.5))  # half up, not to even
    elif entry.get("arrivals"):
        _scale_arrivals(entry["arrivals"], factor, f"{where}.arrivals")


def _scale_arrivals(arrivals: dict, factor: float, where: str) -> None:
    process = arrivals.get("process")
    if process in RATE_KEYS:
        for key in RATE_KEYS[process]:
            arrivals[key] *= factor
    elif process == "servegen":
        arrivals["rate_multiplier"] = (arrivals.get("rate_multiplier") or 1.0) * factor
    elif process == "piecewise":
        table = _rate_table(arrivals, where)
        arrivals["rate_table"] = [[start_s, rate * factor] for start_s, rate in table]
        arrivals["rate_file"] = None  # written back inline: each month is one self-contained scenario
    else:
        raise InputError(f"{where}.process", f"{process!r}: no rule to scale its load")


def _rate_table(arrivals: dict, where: str) -> list[tuple[float, ...]]:  # rows of (start_s, rate_per_s)
    from simcost.workload.arrivals import rate_table

    spec = build(PiecewiseArrivals, {k: v for k, v in arrivals.items() if v is not None}, where)
    return [tuple(row) for row in rate_table(spec)]


def check_trace_covers(scenario: Scenario, month: int, factor: float) -> None:
    """A trace cut at duration_s (no loop) must still reach duration_s at this month's rate."""
    from simcost.workload.traces import load_trace

    if scenario.duration_s is None:
        return  # the whole trace is replayed: more load means the same requests in less time
    for index, entry in enumerate(scenario.workload.entries()):
        spec = entry.trace
        if spec is None or spec.loop:
            continue
        arrival_s = load_trace(spec.name, spec.columns).arrival_s
        window_s = arrival_s[(arrival_s >= spec.start_s) & (arrival_s < (spec.end_s or np.inf))]
        covered_s = (float(window_s.max(initial=spec.start_s)) - spec.start_s) / spec.rate_multiplier
        if covered_s < scenario.duration_s * 0.99:
            where = f"workload.mix[{index}].trace" if scenario.workload.mix else "workload.trace"
            raise InputError(where, f"at month {month}'s load (x{factor:.3g}) the trace covers only {covered_s:,.0f} s "
                                    f"of duration_s={scenario.duration_s:g}; set {where}.loop=true, or a shorter duration_s")


def with_replicas(raw: dict, replicas: int, pool: int | None = None) -> dict:
    """A copy with `replicas` replicas: fleet.replicas, or fleet.pools[pool]'s when given."""
    raw = copy.deepcopy(raw)
    if pool is not None:
        raw["fleet"]["pools"][pool]["replicas"] = replicas
    else:
        raw["fleet"]["replicas"] = replicas
    return raw


# --- runs -----------------------------------------------------------------------------------

def run_cost(raw: dict, seed: int) -> dict:
    """One run of a month's scenario: what it costs per second and whether it meets the SLO.
    Top-level, so worker processes can pickle it."""
    from simcost.simulation.simulation import Simulation

    sim = Simulation(scenario_from_dict(raw, seed=seed))
    result = sim.run()
    s = result.summary
    window_s = sim.arrivals_end_s() or result.horizon_s
    # a fleet running all month starts once: a short window's per-start minimum charge is not scaled up
    usd = result.bill.total_usd - result.bill.minimum_usd
    return {"usd_per_s": usd / result.horizon_s, "slo_attainment": s["slo_attainment"],
            "meets_slo": s["meets_slo"], "offered_requests_per_s": s["requests"]["arrived"] / window_s}


# --- months ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonthForecast:
    month: int
    load_factor: float
    replicas: int  # the fleet meeting the SLO on every seed (--resize: the largest seed's own)
    replicas_min: int  # --resize: the smallest seed's own fleet; static: = replicas
    offered_requests_per_s: float
    usd_per_month_mean: float
    usd_per_month_low: float
    usd_per_month_high: float
    slo_attainment_mean: float | None
    slo_attainment_min: float | None
    meets_slo: bool
    over_budget: bool

    @property
    def fleet(self) -> str:
        """'3', or '2-3' when the seeds needed different fleets."""
        return str(self.replicas) if self.replicas == self.replicas_min else f"{self.replicas_min}-{self.replicas}"


@dataclass(frozen=True)
class Forecast:
    scenario: str
    path: GrowthPath
    seeds: int
    hours_per_month: float
    budget_usd_per_month: float | None
    resize: bool
    max_replicas: int
    slo_target: float
    months: list[MonthForecast]
    runs: int  # distinct simulations run

    @property
    def band(self) -> str:
        return "p5-p95" if self.seeds >= BAND_PERCENTILE_MIN_SEEDS else "min-max"


def forecast(base: Scenario, path: GrowthPath, seeds: int = 3, hours_per_month: float = HOURS_PER_MONTH,
             budget_usd_per_month: float | None = None, jobs: int = 1, resize: bool = False,
             max_replicas: int | None = None, progress: bool = False) -> Forecast:
    """Every month of `path` for a validated scenario; the options are the CLI's (see the module
    docstring). Every month's scenario is built and checked before any run starts."""
    if max_replicas is not None and not resize:
        raise InputError("--max-replicas", "only used with --resize")
    if max_replicas is None:
        max_replicas = RESIZE_CAP_FACTOR * base.fleet.replicas
    if resize and base.fleet.pools is not None:
        raise InputError("--resize", "resizes fleet.replicas; a fleet of pools is not resized yet (forecast it without --resize)")
    check_options(base, path, seeds, hours_per_month, budget_usd_per_month, jobs, resize, max_replicas)
    raw = to_dict(base)
    factors = [path.load_factor(m) for m in range(1, path.months + 1)]
    month_raws = [scale_load(raw, f) for f in factors]
    for month, (f, month_raw) in enumerate(zip(factors, month_raws), start=1):
        check_trace_covers(scenario_from_dict(month_raw), month, f)
    seed_list = [base.seed + k for k in range(seeds)]
    static_jobs = [(r, s) for r in month_raws for s in seed_list]
    # one bar counting simulations: distinct ones (months of equal load run once); with --resize
    # their number is found as the searches go
    total = None if resize else len({job_key(job) for job in static_jobs})
    with worker_pool(jobs) as pool, progress_bar(progress, "forecast", total) as bar:
        runner = RunCache(pool, run_cost, bar=bar)
        if resize:
            fleets = _resized_fleets(runner, month_raws, factors, seed_list, base.fleet.replicas, max_replicas)
        else:
            runs = runner.run(static_jobs)
            fleets = [([base.fleet.num_replicas] * seeds, runs[i * seeds:(i + 1) * seeds]) for i in range(path.months)]
    months = [month_row(m, f, replicas, runs, hours_per_month, budget_usd_per_month)
              for m, (f, (replicas, runs)) in enumerate(zip(factors, fleets), start=1)]
    return Forecast(base.name, path, seeds, hours_per_month, budget_usd_per_month, resize, max_replicas,
                    base.slo.attainment, months, runner.runs)


def check_options(base: Scenario, path: GrowthPath, seeds: int, hours_per_month: float,
                  budget_usd_per_month: float | None, jobs: int, resize: bool, max_replicas: int) -> None:
    path.check()
    if seeds < 1:
        raise InputError("--seeds", f"{seeds}; expected a whole number >= 1")
    if not (math.isfinite(hours_per_month) and hours_per_month > 0):
        raise InputError("--hours-per-month", f"{hours_per_month}; expected a number of hours > 0 (730 is a 12th of a year)")
    if budget_usd_per_month is not None and not (math.isfinite(budget_usd_per_month) and budget_usd_per_month > 0):
        raise InputError("--budget-usd-per-month", f"{budget_usd_per_month}; expected dollars > 0")
    if jobs < 1:
        raise InputError("--jobs", f"{jobs}; expected a whole number >= 1")
    if resize and base.fleet.disaggregation is not None:
        raise InputError("--resize", "resizes fleet.replicas; a disaggregated fleet's pools are not resized, leave --resize out")
    if resize and max_replicas < base.fleet.replicas:
        raise InputError("--max-replicas", f"{max_replicas} is below the scenario's fleet.replicas={base.fleet.replicas}")


def _resized_fleets(runner: RunCache, month_raws: list[dict], factors: list[float], seeds: list[int],
                    start_replicas: int, max_replicas: int) -> list[tuple[list[int], list[dict]]]:
    """Each month, each seed's smallest fleet meeting the SLO, searched from that seed's fleet of
    the previous month."""
    fleets, replicas = [], [start_replicas] * len(seeds)
    for i in range(len(month_raws)):
        load_fell = i == 0 or factors[i] < factors[i - 1]
        found = smallest_fleets(runner, month_raws[i], seeds, replicas, max_replicas, try_fewer=load_fell)
        replicas = [r for r, _ in found]
        fleets.append((replicas, [run for _, run in found]))
    return fleets


def smallest_fleets(runner: RunCache, raw: dict, seeds: list[int], starts: list[int], cap: int,
                    try_fewer: bool) -> list[tuple[int, dict]]:
    """For each seed, from its `starts` replicas: add one at a time until the run meets the SLO (at
    most `cap`; the cap is returned even when it fails), or, when `try_fewer` and the start meets
    it, remove one at a time while the SLO still holds. The seeds step together, so each round's
    runs go to the pool as one batch. Returns (replicas, run) per seed."""
    def run_round(replicas: dict[int, int]) -> dict[int, dict]:
        runs = runner.run([(with_replicas(raw, r), seeds[i]) for i, r in replicas.items()])
        return dict(zip(replicas, runs))

    first = run_round(dict(enumerate(starts)))
    found = {i: (starts[i], first[i]) for i in range(len(seeds))}
    direction = {i: (-1 if try_fewer else 0) if run["meets_slo"] else +1 for i, (_, run) in found.items()}
    active = {i: d for i, d in direction.items() if d and 1 <= found[i][0] + d <= cap}
    while active:
        tried = run_round({i: found[i][0] + d for i, d in active.items()})
        for i, run in tried.items():
            replicas, d = found[i][0] + active[i], active[i]
            if d < 0 and not run["meets_slo"]:
                del active[i]  # one fewer misses: keep the fleet found
                continue
            found[i] = (replicas, run)
            if (d > 0 and run["meets_slo"]) or not 1 <= replicas + d <= cap:
                del active[i]
    return [found[i] for i in range(len(seeds))]


def month_row(month: int, factor: float, replicas: list[int], runs: list[dict], hours_per_month: float,
              budget_usd_per_month: float | None) -> MonthForecast:
    """One month from its runs (one per seed) and each run's fleet size."""
    usd_per_month = np.array([r["usd_per_s"] for r in runs]) * S_PER_HOUR * hours_per_month
    low, high = spend_band(usd_per_month)
    attainment = [r["slo_attainment"] for r in runs if r["slo_attainment"] is not None]
    mean = float(usd_per_month.mean())
    return MonthForecast(
        month=month, load_factor=factor, replicas=max(replicas), replicas_min=min(replicas),
        offered_requests_per_s=float(np.mean([r["offered_requests_per_s"] for r in runs])),
        usd_per_month_mean=mean, usd_per_month_low=low, usd_per_month_high=high,
        slo_attainment_mean=float(np.mean(attainment)) if attainment else None,
        slo_attainment_min=min(attainment) if attainment else None,
        meets_slo=all(r["meets_slo"] for r in runs),
        over_budget=budget_usd_per_month is not None and mean > budget_usd_per_month)


def spend_band(usd: np.ndarray) -> tuple[float, float]:
    """min-max of a few seeds; the 5th-95th percentiles (a 90 % band) from 5 seeds on."""
    if len(usd) >= BAND_PERCENTILE_MIN_SEEDS:
        low, high = np.percentile(usd, [5, 95])
        return float(low), float(high)
    return float(usd.min()), float(usd.max())


def first_month(months: list[MonthForecast], test) -> MonthForecast | None:
    return next((m for m in months if test(m)), None)
