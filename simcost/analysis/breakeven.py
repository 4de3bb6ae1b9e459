"""Buy or build: the monthly volume above which a self-hosted fleet costs less than a hosted API
(`simcost breakeven`).

* **Workload and SLO.** The scenario's own: its request mix, lengths and SLO. One run of the
  scenario as written (api pools, node failures and outages left out) gives the base volume V0 (requests per month at its
  arrival rate) and the per-request tokens every API option is priced on.
* **Self-hosted fleet.** One replica of the scenario's deployment, under its pricing model
  (on-demand, reserved, savings plan, owned: idle and commitment costs included, as the bill
  has them), is loaded by a multiplier search (`replica_capacity`): the largest load at which it
  still meets the SLO is its capacity C requests per month, and its bill at that load (less the
  per-start minimum) its price P per month. A fleet for volume V then has
      N(V) = max(min_replicas, ceil(V / C)) + redundancy  replicas and costs N(V) x P,
  a step function of volume. Using C per replica at any N is conservative: N replicas behind a
  router take at least N times what one takes alone at the same SLO (each sees a thinned, less
  bursty share of the arrivals), so N(V) is an upper bound on the replicas needed.
* **API.** Each option costs a x V with a its price per request: the mean over the base run's
  requests of the api pool's price formula (simcost.scenario.api; cached and batch discounts
  included). Options are the scenario's fleet.api_pools and those named with --api; with
  neither, every model of the bundled price list. An option's rate limit caps the volume it can take:
  requests_per_min x 60 x 730 per month (reported, not enforced).
* **Crossing.** V* = the smallest volume with N(V) x P <= a x V for every V >= V* (after V*
  self-hosting stays cheaper, steps included): `crossing_volume`, exact. None when
  a x C <= P: the API costs no more per request than a fully used replica.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from simcost.analysis.backends import worker_pool
from simcost.analysis.forecast import scale_load, with_replicas
from simcost.analysis.sizing import Evaluator, Point
from simcost.catalog.api_prices import api_price_list
from simcost.errors import InputError
from simcost.scenario.api import ApiPoolConfig
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR

BREAKEVEN_FILES = ("breakeven.csv", "breakeven.json", "breakeven.png")
CAPACITY_TOLERANCE = 0.02  # relative gap between the last passing and first failing load multiplier
MIN_MULTIPLIER, MAX_MULTIPLIER = 1 / 1024, 1024.0


def fleet_usd_per_month(volume: float, capacity: float, usd_per_replica_month: float, min_replicas: int = 1,
                        redundancy: int = 0) -> float:
    """N(V) x P: the self-hosted fleet's $/month at `volume` requests/month."""
    return (max(min_replicas, math.ceil(volume / capacity)) + redundancy) * usd_per_replica_month


def crossing_volume(capacity: float, usd_per_replica_month: float, api_usd_per_request: float, min_replicas: int = 1,
                    redundancy: int = 0) -> float | None:
    """The smallest V* with fleet(V) <= api(V) for all V >= V*; None when there is none.

    On step n (volumes (lo, hi] with n replicas needed; the first step starts at 0) the fleet
    costs f = (n + redundancy) P, more than the API below f / a: the step's last costlier volume
    is min(hi, f / a) when f / a > lo. Past the first step with f / a <= lo none has any, since
    f / a grows by P / a < C per step while lo grows by C."""
    a, c, p = api_usd_per_request, capacity, usd_per_replica_month
    if not a * c > p:
        return None
    last_costlier, n, lo = 0.0, min_replicas, 0.0
    while True:
        hi, f = n * c, (n + redundancy) * p
        if f / a <= lo:
            return last_costlier
        last_costlier = max(last_costlier, min(hi, f / a))
        lo, n = hi, n + 1


@dataclass(frozen=True)
class ApiOption:
    name: str  # the api pool's name, or provider/model
    provider: str
    model: str
    usd_per_request: float  # mean over the base run's requests
    rate_limit_requests_per_month: float | None
    crossing_requests_per_month: float | None  # None: never cheaper to self-host
    replicas_at_crossing: int | None


@dataclass(frozen=True)
class Breakeven:
    scenario: str
    base_requests_per_month: float  # the scenario's arrival rate, as a month
    mean_input_tokens: float
    mean_output_tokens: float
    capacity_multiplier: float  # of the base load, one replica at the SLO
    capacity_note: str | None
    replica_capacity_requests_per_month: float  # C
    replica_usd_per_month: float  # P
    min_replicas: int
    redundancy: int
    options: list[ApiOption]
    simulations: int

    def fleet_usd_per_month(self, volume: float) -> float:
        return fleet_usd_per_month(volume, self.replica_capacity_requests_per_month, self.replica_usd_per_month,
                                   self.min_replicas, self.redundancy)


# --- inputs ------------------------------------------------------------------------------------

def api_options(scenario: Scenario, named: list[str]) -> list[tuple[str, ApiPoolConfig]]:
    """(where, option) for the scenario's api pools and each --api provider:model; when there are
    none, every model of the price list."""
    own = [(f"fleet.api_pools[{k}]", pool) for k, pool in enumerate(scenario.fleet.api_pools)]
    listed = api_price_list()
    pairs = []
    for text in named:
        provider, sep, model = text.partition(":")
        if not sep:
            raise InputError("--api", f"'{text}'; expected provider:model, e.g. openai:gpt-4o-mini")
        pairs.append((provider, model))
    if not pairs and not own:
        pairs = sorted(listed)
    out = []
    for provider, model in pairs:
        pool = ApiPoolConfig(name=f"{provider}/{model}", provider=provider, model=model)
        pool.terms("--api")  # an unknown provider or model: one line, now
        out.append(("--api", pool))
    return own + out


def _check(scenario: Scenario, min_replicas: int, redundancy: int, seeds: int, jobs: int) -> None:
    fleet = scenario.fleet
    for key, bad in (("fleet.pools", fleet.pools is not None), ("fleet.disaggregation", fleet.disaggregation is not None),
                     ("fleet.autoscaler", fleet.autoscaler is not None)):
        if bad:
            raise InputError(key, "breakeven prices a static fleet of fleet.replicas; leave it out")
    for name, value, low in (("--min-replicas", min_replicas, 1), ("--redundancy", redundancy, 0), ("--seeds", seeds, 1),
                             ("--jobs", jobs, 1)):
        if not (isinstance(value, int) and value >= low):
            raise InputError(name, f"{value}; expected a whole number >= {low}")


def self_hosted_raw(scenario: Scenario) -> dict:
    """The scenario as plain data without its api pools (the fleet alone) and without node
    failures or outages: the crossing compares steady monthly costs."""
    raw = to_dict(scenario)
    raw["fleet"]["api_pools"] = []
    raw["fleet"]["failures"] = None
    return raw


# --- the capacity of one replica -------------------------------------------------------------

def replica_capacity(evaluator: Evaluator, raw: dict, tolerance: float = CAPACITY_TOLERANCE
                     ) -> tuple[float, Point, str | None]:
    """(the largest multiplier of the base load one replica meets the SLO at, its point, a note):
    doubling (or halving) from x1 to bracket it, then geometric bisection."""
    one = with_replicas(raw, 1)
    points: dict[float, Point] = {}

    def meets(m: float) -> bool:
        points[m] = evaluator.evaluate([scale_load(one, m)])[0]
        return points[m].meets_slo

    note = None
    lo: float
    hi: float | None
    if meets(1.0):
        lo, hi = 1.0, None
        while lo * 2 <= MAX_MULTIPLIER:
            if not meets(lo * 2):
                hi = lo * 2
                break
            lo *= 2
        if hi is None:
            note = f"bound hit: one replica meets the SLO at x{lo:g} the load"
    else:
        found, failing = None, 1.0
        while failing / 2 >= MIN_MULTIPLIER:
            if meets(failing / 2):
                found = failing / 2
                break
            failing /= 2
        if found is None:
            raise InputError("slo", f"one replica misses the SLO even at x{MIN_MULTIPLIER:g} the scenario's load; "
                             "breakeven needs a deployment that can meet it")
        lo, hi = found, failing
    while hi is not None and hi / lo > 1 + tolerance:
        mid = math.sqrt(lo * hi)
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return lo, points[lo], note


# --- the study -------------------------------------------------------------------------------

def breakeven(scenario: Scenario, api_names: list[str] | None = None, min_replicas: int = 1, redundancy: int = 0,
              seeds: int = 1, jobs: int = 1) -> Breakeven:
    from simcost.simulation.simulation import Simulation

    _check(scenario, min_replicas, redundancy, seeds, jobs)
    options = api_options(scenario, api_names or [])
    raw = self_hosted_raw(scenario)
    base = Simulation(scenario_from_dict(copy.deepcopy(raw)), timeseries=False).run()  # the workload, as written
    t = base.table
    span_s = scenario.duration_s or base.horizon_s
    v0 = t.num_requests / span_s * S_PER_HOUR * HOURS_PER_MONTH
    with worker_pool(jobs) as workers:
        evaluator = Evaluator(workers, [scenario.seed + i for i in range(seeds)])
        multiplier, point, note = replica_capacity(evaluator, raw)
        sims = evaluator.simulations + 1
    capacity, p = multiplier * v0, point.usd_per_hour * HOURS_PER_MONTH
    shared = t.shared_prefix_tokens
    results = []
    for where, cfg in options:
        terms = cfg.terms(where)
        n_in = t.input_tokens
        cached = (np.minimum(n_in, np.maximum(shared, np.floor(cfg.cached_input_fraction * n_in).astype(np.int64)))
                  if terms.cached_input_usd_per_1m is not None else np.zeros_like(n_in))
        a = float(np.mean(terms.usd(n_in, cached, t.output_tokens))) if t.num_requests else 0.0
        cross = crossing_volume(capacity, p, a, min_replicas, redundancy) if a > 0 else None
        limit = terms.requests_per_min * 60 * HOURS_PER_MONTH if math.isfinite(terms.requests_per_min) else None
        replicas = None if cross is None else max(min_replicas, math.ceil(cross / capacity)) + redundancy
        name = cfg.name if where == "--api" else f"{cfg.name}: {cfg.provider}/{cfg.model}"
        results.append(ApiOption(name, cfg.provider, cfg.model, a, limit, cross, replicas))
    return Breakeven(scenario.name, v0, float(t.input_tokens.mean()) if t.num_requests else 0.0,
                     float(t.output_tokens.mean()) if t.num_requests else 0.0, multiplier, note, capacity, p,
                     min_replicas, redundancy, results, sims)


# --- outputs ---------------------------------------------------------------------------------

def curve(result: Breakeven, points: int = 200) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(volumes, the fleet's $/month, each option's $/month): an even grid to past the last
    crossing, plus both sides of each fleet step so the steps show."""
    c = result.replica_capacity_requests_per_month
    crossings = [o.crossing_requests_per_month for o in result.options if o.crossing_requests_per_month]
    top = max([2.0 * x for x in crossings] + [4.0 * c, 2.0 * result.base_requests_per_month])
    steps = np.arange(1, min(int(top // c), 2000) + 1) * c
    volumes = np.unique(np.concatenate([np.linspace(0.0, top, points + 1), steps, np.nextafter(steps, np.inf)]))
    fleet = np.array([result.fleet_usd_per_month(v) for v in volumes])
    return volumes, fleet, {o.name: volumes * o.usd_per_request for o in result.options}


def write_outputs(result: Breakeven, folder: Path) -> list[Path]:
    """breakeven.csv (the curve), breakeven.json (inputs and crossings) and breakeven.png."""
    volumes, fleet, api = curve(result)
    paths = [folder / name for name in BREAKEVEN_FILES]
    with paths[0].open("w") as fh:
        fh.write(",".join(["requests_per_month", "self_hosted_usd_per_month"] + [f"api:{n}" for n in api]) + "\n")
        for i, v in enumerate(volumes):
            fh.write(",".join(repr(float(x)) for x in [v, fleet[i], *(a[i] for a in api.values())]) + "\n")
    paths[1].write_text(json.dumps(asdict(result), indent=1) + "\n")
    _figure(result, volumes, fleet, api, paths[2])
    return paths


def _figure(result: Breakeven, volumes, fleet, api, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(volumes / 1e6, fleet, color="black", lw=2, label="self-hosted fleet")  # both sides of each step are points
    for o in result.options:
        line, = ax.plot(volumes / 1e6, api[o.name], lw=1, label=o.name)
        if o.crossing_requests_per_month is not None:
            x = o.crossing_requests_per_month
            ax.plot([x / 1e6], [x * o.usd_per_request], "o", color=line.get_color())
    ax.set_xlabel("volume (million requests / month)")
    ax.set_ylabel("$ / month")
    ax.set_ylim(0, max(fleet.max(), 1.0) * 1.5)
    ax.set_title(f"{result.scenario}: self-hosted vs API (dots: break-even)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_breakeven(result: Breakeven) -> str:
    r = result
    width = max([len(o.name) + 2 for o in r.options] + [12])
    lines = [f"{r.scenario}: base volume {r.base_requests_per_month:,.0f} requests/month "
             f"({r.mean_input_tokens:,.0f} in / {r.mean_output_tokens:,.0f} out tokens per request)",
             f"one replica meets the SLO up to x{r.capacity_multiplier:.3g} the load: "
             f"{r.replica_capacity_requests_per_month:,.0f} requests/month at ${r.replica_usd_per_month:,.0f}/month "
             f"(${r.replica_usd_per_month / r.replica_capacity_requests_per_month * 1e3:,.4f} per 1k requests at full use)"
             + (f"; {r.capacity_note}" if r.capacity_note else ""),
             f"fleet: max({r.min_replicas}, ceil(volume / capacity)) + {r.redundancy} replicas", "",
             f"{'API option':<{width}}{'$ / 1k req':>11}{'break-even req/month':>22}{'replicas':>9}  note"]
    for o in sorted(r.options, key=lambda o: o.usd_per_request):
        if o.crossing_requests_per_month is None:
            cross, reps, note = "never", "-", "cheaper per request than a fully used replica"
        else:
            cross, reps = f"{o.crossing_requests_per_month:,.0f}", str(o.replicas_at_crossing)
            limit = o.rate_limit_requests_per_month
            note = (f"above its rate limit ({limit:,.0f}/month)" if limit is not None
                    and o.crossing_requests_per_month > limit else "")
        lines.append(f"{o.name:<{width}}{o.usd_per_request * 1e3:>11.4f}{cross:>22}{reps:>9}  {note}")
    lines.append(f"\nsimulations: {r.simulations}")
    return "\n".join(lines)
