"""The cheapest fleet that meets the SLOs at a given load: `simcost size`.

* **Options.** The cross product of the devices (and optional tensor-parallel degrees, engine
  policies and pricing models) given, each an override of the scenario (`hardware.device`,
  `hardware.tensor_parallel`, `engine.policy`, `fleet.pricing`). An option whose model does not
  fit on its devices (`plan_deployment` refuses it) is reported with that reason and never run.
* **Replicas.** For each option, the smallest `fleet.replicas` in 1..`max_replicas` meeting the
  SLO (the scenario's percentile limits and minimum attainment), by exponential search (1, 2, 4,
  ...) and then bisection between the last failing and first passing counts: about 2 log2(N)
  runs instead of N. This assumes monotonicity: more replicas of the same option never make the
  SLO worse (true of the router's load spreading in expectation; with one seed a count next to
  the threshold can be noisy, which `seeds` guards against). An option that misses at
  `max_replicas` is infeasible, with its best attainment as the reason.
* **Seeds.** Each point runs on K seeds (the scenario's seed + 0..K-1) and meets the SLO only if
  every seed does. Every (option, replicas, load, seed) point runs once (results are cached).
* **Cost.** An option's price is its fleet's $/hour from the run's bill (so spot, reserved,
  savings-plan and owned pricing count), less the per-start minimum charge (a fleet that runs for
  months starts once; a short window would scale the minimum up), mean over seeds; $/month is
  $/hour x 730. Options are ranked by $/hour: the cheapest is chosen, the rest are runner-ups.
* **Headroom.** The largest load multiplier m (`forecast.scale_load`) at which the chosen fleet
  still meets the SLO: exponential search from 1 (2, 4, ... up to `max_load_multiplier`), then
  geometric bisection until the failing and passing multipliers are within 2 % of each other.
  The result is checked by running m x 1.1, which should fail; when it does not (noise, or the
  bound was hit) the report says so. A trace cut at `duration_s` without `loop` cannot be
  sped up past the point where it no longer covers the window: such multipliers are not run
  and count as the bound.
* **Redundancy.** The chosen option with N+1 and N+2 replicas, run at the given load: their
  $/hour from the bill (for a static on-demand fleet this is (N+k) x the per-replica price).
* **A fleet of pools** (fleet.pools) is sized one pool at a time (`pool`, by name): the options
  and the replica count apply to that pool, the other pools stay as written (an edge pool's
  boards, say, while the cloud pool behind them is sized), and $/hour is the whole fleet's bill.
  The sized pool must be static: with an autoscaler its replica count is only where it starts.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from simcost.analysis.backends import RunCache, progress_bar, worker_pool
from simcost.analysis.forecast import check_trace_covers, scale_load, with_replicas
from simcost.errors import InputError, closest
from simcost.scenario.deployment import REQUEST_LEVEL_POLICIES, free_device_defaults
from simcost.scenario.scenario import Scenario, scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR

DEFAULT_MAX_REPLICAS = 16
HEADROOM_TOLERANCE = 0.02  # relative gap between the last passing and first failing multiplier
HEADROOM_CHECK_FACTOR = 1.1  # m x 1.1 should miss the SLO
DEFAULT_MAX_LOAD_MULTIPLIER = 64.0
REDUNDANCY_EXTRA = (1, 2)


# --- options --------------------------------------------------------------------------------

def candidate_options(devices, tensor_parallel=(None,), policies=(None,), pricing=(None,)) -> list[dict]:
    """The cross product as override dicts; None in a list means 'keep the scenario's value'.
    `pricing` entries are `fleet.pricing` mappings, e.g. {"model": "spot", "spot_usd_per_device_hour": 2}."""
    keys = ("hardware.device", "hardware.tensor_parallel", "engine.policy", "fleet.pricing")
    combos = itertools.product(devices, tensor_parallel or (None,), policies or (None,), pricing or (None,))
    return [{k: v for k, v in zip(keys, combo) if v is not None} for combo in combos]


def option_label(option: dict) -> str:
    """'h100-sxm tp2 chunked spot': the option's values, short."""
    parts = []
    for key, value in option.items():
        if key == "hardware.tensor_parallel":
            parts.append(f"tp{value}")
        elif key == "fleet.pricing":
            parts.append(value.get("model", "on_demand") if isinstance(value, dict) else str(value))
        else:
            parts.append(str(value))
    return " ".join(parts) or "as written"


# An option's keys inside a pool of fleet.pools (a pool's own `pricing` is fleet.pricing's).
POOL_KEYS = {"hardware.device": "hardware.device", "hardware.tensor_parallel": "hardware.tensor_parallel",
             "engine.policy": "engine.policy", "fleet.pricing": "pricing"}


def with_option(raw: dict, option: dict, pool: int | None = None) -> dict:
    """A copy of a scenario (plain data) with each dotted key of `option` set to its value (in
    fleet.pools[pool] when given)."""
    raw = copy.deepcopy(raw)
    for key, value in option.items():
        node = raw if pool is None else raw["fleet"]["pools"][pool]
        *parents, last = (key if pool is None else POOL_KEYS[key]).split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}  # to_dict writes an unset section as None
            node = node[part]
        node[last] = copy.deepcopy(value)
        if key == "engine.policy" and value in REQUEST_LEVEL_POLICIES:
            node["prefix_caching"] = False  # the preset turned it on for the base's policy; batches share no cache
    return raw


def fit_problem(raw: dict) -> str | None:
    """Why this option's model cannot be placed on its devices (any pool's), or None when it fits."""
    from simcost.perf.deployment import fleet_pools

    try:
        fleet_pools(scenario_from_dict(raw))  # plans every pool
    except InputError as exc:
        return str(exc)
    return None


# --- runs -----------------------------------------------------------------------------------

def run_point(raw: dict, seed: int) -> dict:
    """One run: SLO verdict and $/hour. Top-level, so worker processes can pickle it."""
    from simcost.simulation.simulation import Simulation

    result = Simulation(scenario_from_dict(raw, seed=seed), timeseries=False).run()
    s = result.summary
    # the per-start minimum charge is left out: a sized fleet runs for months, it starts once
    usd = result.bill.total_usd - result.bill.minimum_usd
    return {"meets_slo": bool(s["meets_slo"]), "slo_attainment": s["slo_attainment"],
            "usd_per_hour": usd / result.horizon_s * S_PER_HOUR}


@dataclass(frozen=True)
class Point:
    """One scenario evaluated on every seed."""
    meets_slo: bool  # on every seed
    slo_attainment: float | None  # the lowest seed's
    usd_per_hour: float  # mean over seeds


class Evaluator:
    """Runs scenarios on K seeds, each distinct (scenario, seed) once, in a pool when given."""

    def __init__(self, pool, seeds: list[int], bar=None):
        self.seeds, self.runs = seeds, RunCache(pool, run_point, bar=bar)

    def evaluate(self, raws: list[dict]) -> list[Point]:
        results = self.runs.run([(raw, seed) for raw in raws for seed in self.seeds])
        k = len(self.seeds)
        return [_combine(results[i * k:(i + 1) * k]) for i in range(len(raws))]

    @property
    def simulations(self) -> int:
        return self.runs.runs


def _combine(runs: list[dict]) -> Point:
    attainments = [r["slo_attainment"] for r in runs if r["slo_attainment"] is not None]
    return Point(all(r["meets_slo"] for r in runs), min(attainments) if attainments else None,
                 sum(r["usd_per_hour"] for r in runs) / len(runs))


# --- replica search -------------------------------------------------------------------------

def replica_search(max_replicas: int):
    """A generator: yields replica counts to try, is sent whether each met the SLO, and returns
    the smallest count that does (None if even max_replicas misses). Exponential, then bisection."""
    failing, count = 0, 1
    while True:
        if (yield count):
            break
        failing = count
        if count >= max_replicas:
            return None
        count = min(2 * count, max_replicas)
    passing = count
    while passing - failing > 1:
        mid = (failing + passing) // 2
        if (yield mid):
            passing = mid
        else:
            failing = mid
    return passing


@dataclass(frozen=True)
class OptionResult:
    option: dict
    label: str
    replicas: int | None  # the smallest meeting the SLO; None: infeasible
    usd_per_hour: float | None
    slo_attainment: float | None  # at `replicas` (infeasible: at the largest count tried)
    reason: str | None  # why infeasible
    tried: tuple[tuple[int, bool], ...] = ()  # (replicas, met the SLO) in search order

    @property
    def usd_per_month(self) -> float | None:
        return None if self.usd_per_hour is None else self.usd_per_hour * HOURS_PER_MONTH


def search_options(evaluator: Evaluator, raw: dict, options: list[dict], max_replicas: int,
                   pool: int | None = None) -> list[OptionResult]:
    """Every option's smallest fleet (of fleet.pools[pool] when given); the searches advance
    together, so each round's runs go to the worker pool as one batch."""
    results: dict[int, Any] = {}
    searches: dict[int, tuple] = {}  # option index -> (raw, search generator, count to try, tried)
    for i, option in enumerate(options):
        option_raw = with_option(raw, option, pool)
        problem = fit_problem(option_raw)
        if problem:
            results[i] = OptionResult(option, option_label(option), None, None, None, f"does not fit: {problem}")
        else:
            search = replica_search(max_replicas)
            searches[i] = (option_raw, search, next(search), [])
    while searches:
        points = evaluator.evaluate([with_replicas(r, count, pool) for r, _, count, _ in searches.values()])
        for (i, (option_raw, search, count, tried)), point in zip(list(searches.items()), points):
            tried.append((count, point))
            try:
                searches[i] = (option_raw, search, search.send(point.meets_slo), tried)
            except StopIteration as done:
                del searches[i]
                results[i] = _option_result(options[i], done.value, tried, max_replicas)
    return [results[i] for i in range(len(options))]


def _option_result(option: dict, replicas: int | None, tried: list[tuple[int, Point]], max_replicas: int) -> OptionResult:
    trail = tuple((count, point.meets_slo) for count, point in tried)
    if replicas is None:
        last = tried[-1][1]
        att = "n/a" if last.slo_attainment is None else f"{last.slo_attainment:.1%}"
        return OptionResult(option, option_label(option), None, None, last.slo_attainment,
                            f"misses the SLO at max_replicas={max_replicas} (attainment {att})", trail)
    point = dict(tried)[replicas]
    return OptionResult(option, option_label(option), replicas, point.usd_per_hour, point.slo_attainment, None, trail)


def rank(results: list[OptionResult]) -> list[OptionResult]:
    """Feasible options cheapest first (ties: fewer replicas, then the given order), then infeasible."""
    feasible = sorted((r for r in results if r.replicas is not None), key=lambda r: (r.usd_per_hour, r.replicas))
    return feasible + [r for r in results if r.replicas is None]


# --- headroom and redundancy ----------------------------------------------------------------

def multiplier_search(max_multiplier: float, tolerance: float):
    """A generator: yields load multipliers > 1 to try, is sent whether each met the SLO (1 is
    known to), and returns (largest passing, smallest failing or None if the bound was hit)."""
    passing, multiplier = 1.0, 2.0
    while True:
        if multiplier > max_multiplier:
            return passing, None
        if not (yield multiplier):
            break
        passing, multiplier = multiplier, multiplier * 2.0
    failing = multiplier
    while failing / passing > 1.0 + tolerance:
        mid = math.sqrt(passing * failing)  # geometric: the tolerance is relative
        if (yield mid):
            passing = mid
        else:
            failing = mid
    return passing, failing


@dataclass(frozen=True)
class Headroom:
    multiplier: float  # the largest load multiplier found meeting the SLO
    failing_multiplier: float | None  # the smallest found missing it (None: bound hit)
    check_multiplier: float  # multiplier x 1.1
    check_fails: bool | None  # None: not run (the trace does not cover that load)
    note: str | None
    simulations: int


def covers(raw: dict, multiplier: float) -> bool:
    """Whether the workload can be scaled by `multiplier` (a cut trace must still fill duration_s)."""
    try:
        check_trace_covers(scenario_from_dict(scale_load(raw, multiplier)), 1, multiplier)
    except InputError:
        return False
    return True


def headroom(evaluator: Evaluator, fleet_raw: dict, max_multiplier: float = DEFAULT_MAX_LOAD_MULTIPLIER,
             tolerance: float = HEADROOM_TOLERANCE) -> Headroom:
    """The chosen fleet's headroom (see the module docstring); `fleet_raw` meets the SLO at x1."""
    before = evaluator.simulations
    uncovered = []

    def meets(multiplier: float) -> bool | None:
        if not covers(fleet_raw, multiplier):
            uncovered.append(multiplier)
            return None
        return evaluator.evaluate([scale_load(fleet_raw, multiplier)])[0].meets_slo

    search = multiplier_search(max_multiplier, tolerance)
    try:
        multiplier = next(search)
        while True:
            multiplier = search.send(bool(meets(multiplier)))  # an uncovered load counts as the bound
    except StopIteration as done:
        passing, failing = done.value
    check = passing * HEADROOM_CHECK_FACTOR
    check_met = meets(check)
    notes = []
    if failing is None:
        notes.append(f"bound hit: meets the SLO up to the max load multiplier {max_multiplier:g}")
    if failing in uncovered or check_met is None:  # the bound is the trace's, not a measured SLO miss
        notes.append(f"the trace does not cover the window at x{min(uncovered):.3g} (set workload.trace.loop=true): "
                     "the headroom found is bounded by the trace, not the SLO")
    if check_met:
        notes.append(f"x{check:.3g} still meets the SLO (not monotone on these seeds)")
    return Headroom(passing, failing, check, None if check_met is None else not check_met,
                    "; ".join(notes) or None, evaluator.simulations - before)


@dataclass(frozen=True)
class Redundancy:
    replicas: int
    extra: int  # N + extra
    usd_per_hour: float
    meets_slo: bool


def redundancy(evaluator: Evaluator, option_raw: dict, replicas: int, pool: int | None = None) -> list[Redundancy]:
    """N+1 and N+2 (of the sized pool) at the given load, priced from their runs."""
    counts = [replicas + k for k in REDUNDANCY_EXTRA]
    points = evaluator.evaluate([with_replicas(option_raw, n, pool) for n in counts])
    return [Redundancy(n, k, p.usd_per_hour, p.meets_slo) for n, k, p in zip(counts, REDUNDANCY_EXTRA, points)]


# --- the whole sizing -----------------------------------------------------------------------

@dataclass(frozen=True)
class Sizing:
    scenario: str
    seeds: int
    max_replicas: int
    slo_target: float
    options: list[OptionResult]  # ranked: the chosen first
    simulations: int  # distinct runs of the replica search (points x seeds)
    total_simulations: int  # with the headroom and redundancy runs (points the search ran are reused)
    headroom: Headroom | None = None
    redundancy: list[Redundancy] = field(default_factory=list)
    pool: str | None = None  # the pool of fleet.pools sized, by name

    @property
    def chosen(self) -> OptionResult | None:
        first = self.options[0] if self.options else None
        return first if first is not None and first.replicas is not None else None


def size(base: Scenario, options: list[dict], max_replicas: int = DEFAULT_MAX_REPLICAS, seeds: int = 1,
         jobs: int = 1, with_headroom: bool = True, with_redundancy: bool = True,
         max_load_multiplier: float = DEFAULT_MAX_LOAD_MULTIPLIER, pool: str | None = None,
         progress: bool = False) -> Sizing:
    """The cheapest option meeting the SLO, its runner-ups, and the chosen fleet's headroom and
    N+1 / N+2 prices; see the module docstring. `pool` names the pool of fleet.pools to size;
    `progress` shows one bar counting simulations (their number is found as the search goes)."""
    k = _check(base, options, max_replicas, seeds, jobs, pool)
    raw = to_dict(base)
    # options change the device or policy: the preset's max_num_seqs is decided again for each
    free_device_defaults(raw.get("engine"), base.engine)
    for raw_pool, p in zip((raw.get("fleet") or {}).get("pools") or (), base.fleet.pools or ()):
        if p.engine is not None:
            free_device_defaults(raw_pool.get("engine"), p.engine)
    seed_list = [base.seed + i for i in range(seeds)]
    with worker_pool(jobs) as workers, progress_bar(progress, "size") as bar:
        evaluator = Evaluator(workers, seed_list, bar)
        ranked = rank(search_options(evaluator, raw, options, max_replicas, k))
        searched = evaluator.simulations
        chosen = ranked[0] if ranked and ranked[0].replicas is not None else None
        room, spares = None, []
        if chosen is not None and chosen.replicas is not None:
            option_raw = with_option(raw, chosen.option, k)
            if with_headroom:
                room = headroom(evaluator, with_replicas(option_raw, chosen.replicas, k), max_load_multiplier)
            if with_redundancy:
                spares = redundancy(evaluator, option_raw, chosen.replicas, k)
        total = evaluator.simulations
    return Sizing(base.name, seeds, max_replicas, base.slo.attainment, ranked, searched, total, room, spares, pool)


def _check(base: Scenario, options: list[dict], max_replicas: int, seeds: int, jobs: int,
           pool: str | None) -> int | None:
    """Refuse what size cannot search; the index of the pool to size (None: fleet.replicas)."""
    from simcost.perf.deployment import check_rentable

    if base.fleet.disaggregation is not None:
        raise InputError("fleet.disaggregation", "size searches fleet.replicas; a disaggregated fleet's pools are not sized")
    k = _pool_index(base, pool)
    if not options:
        raise InputError("--devices", "no options to size; give at least one device")
    for name, value in (("--max-replicas", max_replicas), ("--seeds", seeds), ("--jobs", jobs)):
        if not (isinstance(value, int) and value >= 1):
            raise InputError(name, f"{value}; expected a whole number >= 1")
    for option in options:
        if "hardware.device" in option:
            device = base.specs.device(option["hardware.device"], "--devices")  # a typo is an error, not an infeasible option
            tp = option.get("hardware.tensor_parallel") or base.hardware.tensor_parallel
            check_rentable(device, tp, base.hardware.pipeline_parallel, "--tensor-parallel")
    return k


def _pool_index(base: Scenario, pool: str | None) -> int | None:
    pools = base.fleet.pools
    if pools is None:
        if pool is not None:
            raise InputError("--pool", f"'{pool}': the scenario has no fleet.pools; leave --pool out")
        return None
    names = [p.name for p in pools]
    if pool is None:
        raise InputError("fleet.pools", f"size searches one pool of a fleet of pools at a time; name it with "
                                        f"--pool (one of {', '.join(names)})")
    if pool not in names:
        raise InputError("--pool", f"unknown pool '{pool}'{closest(pool, names)}")
    k = names.index(pool)
    if pools[k].autoscaler is not None:
        raise InputError(f"fleet.pools[{k}].autoscaler", f"pool '{pool}' scales itself; size searches a static "
                                                        "pool's replicas (leave its autoscaler out to size it)")
    return k
