"""`simcost size`: the replica search against an exhaustive sweep, headroom, redundancy, infeasible
options. Short windows (30 s of Poisson arrivals at 25 req/s) keep each run well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest
from scenarios import BASE, merge

from simcost.analysis.forecast import scale_load, with_replicas
from simcost.analysis.sizing import (
    HEADROOM_CHECK_FACTOR,
    Evaluator,
    candidate_options,
    multiplier_search,
    replica_search,
    run_point,
    size,
    with_option,
)
from simcost.analysis.sizing_outputs import format_sizing
from simcost.catalog.specs import get_device
from simcost.errors import InputError
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.schema import to_dict

DEVICES = ["a100-80gb", "l40s"]
MAX_REPLICAS = 6

RAW = merge(BASE, {
    "duration_s": 30.0, "warmup_s": 5.0,
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 25.0},
                 "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
                 "output_tokens": {"dist": "uniform", "low": 1, "high": 200}},
    "engine": {"max_model_len": 8192},  # an 8B model's 128k context does not fit l40s's KV cache
    "slo": {"ttft_s": 0.5, "tpot_s": 0.05, "attainment": 0.95},
})


def base_raw() -> dict:
    return to_dict(scenario_from_dict(RAW))


@pytest.fixture(scope="module")
def sized():
    return size(scenario_from_dict(RAW), candidate_options(DEVICES), max_replicas=MAX_REPLICAS)


@pytest.fixture(scope="module")
def exhaustive():
    """Every (device, replicas) point of the grid, run once: {(device, replicas): run}."""
    raw, seed = base_raw(), RAW["seed"]
    return {(device, n): run_point(with_replicas(with_option(raw, {"hardware.device": device}), n), seed)
            for device in DEVICES for n in range(1, MAX_REPLICAS + 1)}


def test_size_finds_the_exhaustive_sweeps_cheapest_option_with_fewer_runs(sized, exhaustive):
    feasible = sorted((run["usd_per_hour"], device, n) for (device, n), run in exhaustive.items() if run["meets_slo"])
    usd_per_hour, device, replicas = feasible[0]
    chosen = sized.chosen
    assert (chosen.option["hardware.device"], chosen.replicas) == (device, replicas)
    assert chosen.usd_per_hour == pytest.approx(usd_per_hour)
    print(f"\nsize: {sized.simulations} simulations; exhaustive sweep: {len(exhaustive)}")
    assert sized.simulations < len(exhaustive)
    # the runner-up is the other device at its own cheapest feasible fleet
    runner_up = sized.options[1]
    other = min((u, n) for u, d, n in feasible if d == runner_up.option["hardware.device"])
    assert (runner_up.usd_per_hour, runner_up.replicas) == (pytest.approx(other[0]), other[1])
    assert runner_up.usd_per_hour >= chosen.usd_per_hour


def test_the_search_finds_the_minimal_replicas(sized, exhaustive):
    for option in sized.options:
        device, n = option.option["hardware.device"], option.replicas
        assert exhaustive[(device, n)]["meets_slo"]
        assert n == 1 or not exhaustive[(device, n - 1)]["meets_slo"]


def test_no_point_is_simulated_twice(sized):
    tried = sum(len(o.tried) for o in sized.options)
    assert sized.simulations == tried
    for option in sized.options:
        counts = [n for n, _ in option.tried]
        assert len(counts) == len(set(counts))


def test_headroom_meets_the_slo_and_ten_percent_more_does_not(sized):
    h, chosen = sized.headroom, sized.chosen
    fleet = with_replicas(with_option(base_raw(), chosen.option), chosen.replicas)
    assert h.multiplier >= 1.0 and h.failing_multiplier / h.multiplier <= 1.02 + 1e-9
    assert run_point(scale_load(fleet, h.multiplier), RAW["seed"])["meets_slo"]
    assert not run_point(scale_load(fleet, h.multiplier * HEADROOM_CHECK_FACTOR), RAW["seed"])["meets_slo"]
    assert h.check_fails is True and h.note is None


def test_redundancy_is_priced_from_runs(sized):
    chosen = sized.chosen
    assert [(r.extra, r.replicas) for r in sized.redundancy] == [(1, chosen.replicas + 1), (2, chosen.replicas + 2)]
    per_replica_usd_per_hour = chosen.usd_per_hour / chosen.replicas  # a static on-demand fleet bills linearly
    for r in sized.redundancy:
        assert r.usd_per_hour == pytest.approx(r.replicas * per_replica_usd_per_hour)
        assert r.meets_slo


def test_a_device_the_model_does_not_fit_is_reported_with_its_reason():
    result = size(scenario_from_dict(RAW), candidate_options(["t4", "a100-80gb"]), max_replicas=MAX_REPLICAS,
                  with_headroom=False, with_redundancy=False)
    t4 = result.options[-1]
    assert t4.option["hardware.device"] == "t4" and t4.replicas is None and t4.tried == ()
    assert t4.reason.startswith("does not fit:") and "t4" in t4.reason
    assert result.chosen.option["hardware.device"] == "a100-80gb"
    assert "does not fit" in format_sizing(result)


def test_an_option_that_misses_at_max_replicas_is_infeasible():
    # vLLM v0's engine: 2 x L40S miss the SLO with whole-prompt prefill steps (chunked prefill meets it)
    v0 = merge(RAW, {"engine": {"preset": "vllm-v0"}})
    result = size(scenario_from_dict(v0), candidate_options(["l40s"]), max_replicas=2,
                  with_headroom=False, with_redundancy=False)
    assert result.chosen is None
    assert "max_replicas=2" in result.options[0].reason
    assert [n for n, _ in result.options[0].tried] == [1, 2]
    assert "no option meets the SLO" in format_sizing(result)


def test_sizing_is_reproducible(sized):
    again = size(scenario_from_dict(RAW), candidate_options(DEVICES), max_replicas=MAX_REPLICAS)
    assert again.options == sized.options and again.headroom == sized.headroom
    assert format_sizing(again) == format_sizing(sized)


def test_more_seeds_never_need_fewer_replicas(sized):
    three = size(scenario_from_dict(RAW), candidate_options(["a100-80gb"]), max_replicas=MAX_REPLICAS, seeds=3,
                 with_headroom=False, with_redundancy=False)
    one = next(o for o in sized.options if o.option["hardware.device"] == "a100-80gb")
    assert three.chosen.replicas >= one.replicas
    assert three.simulations == 3 * len(three.options[0].tried)


def test_replica_search_on_a_known_threshold():
    def drive(threshold, cap):
        search, tried = replica_search(cap), []
        count = next(search)
        try:
            while True:
                tried.append(count)
                count = search.send(count >= threshold)
        except StopIteration as done:
            return done.value, tried
    for threshold in range(1, 17):
        found, tried = drive(threshold, 16)
        assert found == threshold and len(tried) == len(set(tried)) and len(tried) <= 8
    assert drive(17, 16) == (None, [1, 2, 4, 8, 16])


def test_multiplier_search_on_a_known_threshold():
    for threshold in (1.0, 1.3, 3.7, 10.0):
        search = multiplier_search(64.0, 0.02)
        m = next(search)
        try:
            while True:
                m = search.send(m <= threshold)
        except StopIteration as done:
            passing, failing = done.value
        assert passing <= threshold < failing and failing / passing <= 1.02 + 1e-12
    search = multiplier_search(8.0, 0.02)
    m = next(search)
    with pytest.raises(StopIteration) as done:
        while True:
            m = search.send(True)
    assert done.value.value == (8.0, None)


def test_candidate_options_take_the_cross_product():
    spot = {"model": "spot", "spot_usd_per_device_hour": 2.0}
    options = candidate_options(["h100-sxm", "l40s"], [1, 2], ["chunked"], [None, spot])
    assert len(options) == 8
    assert options[1] == {"hardware.device": "h100-sxm", "hardware.tensor_parallel": 1, "engine.policy": "chunked",
                          "fleet.pricing": spot}
    assert candidate_options(["l40s"]) == [{"hardware.device": "l40s"}]


def test_a_pricing_option_is_costed_from_the_bill():
    spot = {"model": "spot", "spot_usd_per_device_hour": 1.0}
    evaluator = Evaluator(None, [RAW["seed"]])
    raw = with_replicas(with_option(base_raw(), {"hardware.device": "a100-80gb", "fleet.pricing": spot}), 2)
    assert evaluator.evaluate([raw])[0].usd_per_hour == pytest.approx(2.0)
    evaluator.evaluate([raw])
    assert evaluator.simulations == 1


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="unknown device"):
        size(scenario_from_dict(RAW), candidate_options(["h100"]))
    with pytest.raises(InputError, match="--seeds"):
        size(scenario_from_dict(RAW), candidate_options(["l40s"]), seeds=0)


def test_a_cut_trace_bounds_the_load_multiplier():
    from simcost.analysis.sizing import covers
    from simcost.scenario.scenario import load_scenario

    raw = to_dict(load_scenario(Path(__file__).parents[1] / "configs" / "example.yaml"))  # 10 min of a 1-hour trace at 4x its rate
    assert covers(raw, 1.2) and not covers(raw, 2.0)


# --- one pool of a fleet of pools --------------------------------------------------------------

# Two workloads, each served by its own pool: "fixed" (1 x H100, light chat) stays as written;
# "sized" serves the heavy load, so its device and count decide the SLO.
POOLED = merge(RAW, {
    "workload": {"mix": [
        {"name": "chat", "arrivals": {"process": "poisson", "rate_per_s": 5.0},
         "input_tokens": {"dist": "uniform", "low": 50, "high": 400}, "output_tokens": {"dist": "uniform", "low": 1, "high": 100}},
        {"name": "bulk", "arrivals": {"process": "poisson", "rate_per_s": 40.0},
         "input_tokens": {"dist": "uniform", "low": 50, "high": 800}, "output_tokens": {"dist": "uniform", "low": 1, "high": 200}},
    ]},
    "fleet": {"router": "join_shortest_queue", "pools": [
        {"name": "fixed", "hardware": {"device": "h100-sxm"}, "replicas": 1, "serves": ["chat"]},
        {"name": "sized", "hardware": {"device": "a100-80gb"}, "replicas": 1, "serves": ["bulk"]},
    ]}})
POOL_MAX = 4


def test_sizing_one_pool_matches_the_exhaustive_sweep_of_that_pool():
    """The fixed pool stays at 1 x L40S; the sized pool's device and count are searched, and the
    whole fleet's bill is its price. Checked against every (device, count) of the sized pool."""
    raw, seed = to_dict(scenario_from_dict(POOLED)), RAW["seed"]
    result = size(scenario_from_dict(POOLED), candidate_options(DEVICES), max_replicas=POOL_MAX, pool="sized",
                  with_headroom=False)
    grid = {(d, n): run_point(with_replicas(with_option(raw, {"hardware.device": d}, pool=1), n, pool=1), seed)
            for d in DEVICES for n in range(1, POOL_MAX + 1)}
    for o in result.options:
        device = o.option["hardware.device"]
        meeting = [n for n in range(1, POOL_MAX + 1) if grid[(device, n)]["meets_slo"]]
        assert o.replicas == (min(meeting) if meeting else None)
        if o.replicas is not None:
            assert o.usd_per_hour == pytest.approx(grid[(device, o.replicas)]["usd_per_hour"])
    assert result.chosen is not None and result.pool == "sized"
    # the price is the whole fleet's: the chosen pool's replicas plus the fixed pool's H100
    chosen = result.chosen
    price = get_device(chosen.option["hardware.device"]).price_usd_per_hour
    assert chosen.usd_per_hour == pytest.approx(chosen.replicas * price + get_device("h100-sxm").price_usd_per_hour)
    assert "of pool sized (the other pools as written)" in format_sizing(result)


def test_a_pool_option_changes_only_that_pool():
    raw = to_dict(scenario_from_dict(POOLED))
    changed = with_replicas(with_option(raw, {"hardware.device": "h100-sxm", "fleet.pricing": {"model": "spot"}},
                                        pool=1), 3, pool=1)
    assert changed["fleet"]["pools"][0] == raw["fleet"]["pools"][0]
    sized = changed["fleet"]["pools"][1]
    assert (sized["hardware"]["device"], sized["pricing"], sized["replicas"]) == ("h100-sxm", {"model": "spot"}, 3)
    assert changed["hardware"] == raw["hardware"] and changed["fleet"]["replicas"] == raw["fleet"]["replicas"]


@pytest.mark.parametrize("raw, pool, where, problem", [
    (POOLED, None, "fleet.pools", "name it with --pool (one of fixed, sized)"),
    (POOLED, "sizd", "--pool", "unknown pool 'sizd' (closest: sized"),
    (RAW, "sized", "--pool", "the scenario has no fleet.pools"),
    (merge(POOLED, {"fleet": {"pools": [POOLED["fleet"]["pools"][0],
                                        {**POOLED["fleet"]["pools"][1], "autoscaler": {"policy": "hpa", "target": 8}}]}}),
     "sized", "fleet.pools[1].autoscaler", "scales itself"),
])
def test_sizing_a_pool_refuses_what_it_cannot_search(raw, pool, where, problem):
    with pytest.raises(InputError) as err:
        size(scenario_from_dict(raw), candidate_options(DEVICES), max_replicas=2, pool=pool)
    assert err.value.where == where and problem in err.value.problem
