"""`simcost levers`: each lever does what it says, the response cache (the scenario component) conserves
requests and hits at its rate, ROI ranking follows its formula, a lever that cannot
apply is skipped with its reason, and the baseline row is a plain run of the baseline.
Short windows (20-30 s of Poisson arrivals) keep each run well under a second."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scenarios import BASE, merge

from simcost.analysis.forecast import with_replicas
from simcost.analysis.lever_plans import plan_levers, with_overrides
from simcost.analysis.levers import rank_rows, roi, run_lever, served_metrics, study, trim_prompts
from simcost.analysis.levers_config import LeversConfig, load_levers
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.rng import streams
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.simulation.simulation import Simulation
from simcost.units import HOURS_PER_MONTH
from simcost.workload.request_table import COMPLETED
from simcost.workload.requests import Requests, generate

RAW = merge(BASE, {
    "duration_s": 30.0, "warmup_s": 5.0,
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 20.0},
                 "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
                 "output_tokens": {"dist": "uniform", "low": 2, "high": 100}},
    # vLLM v0's engine: the hand-checked replica counts below were found with it, and its baseline
    # leaves prefix caching (a lever) off
    "engine": {"preset": "vllm-v0", "max_model_len": 8192},
    "fleet": {"replicas": 2, "router": "join_shortest_queue"},
    "slo": {"ttft_s": 0.5, "tpot_s": 0.05, "attainment": 0.95},
})


def base():
    return scenario_from_dict(RAW)


def plan_of(scenario, lever, cfg=None):
    (plan,) = plan_levers(scenario, cfg or LeversConfig(), only=(lever,))
    return plan


# --- transforms -------------------------------------------------------------------------------

def test_int4_halves_the_deployments_weight_bytes_against_int8():
    scenario, raw = base(), to_dict(base())
    deps = {}
    for fmt in ("int8", "int4"):
        plan = plan_of(scenario, fmt)
        assert plan.skip_reason is None and plan.overrides == {"model.weight_format": fmt}
        deps[fmt] = plan_deployment(scenario_from_dict(with_overrides(raw, plan.overrides)))
    assert deps["int4"].weight_bytes == deps["int8"].weight_bytes / 2
    assert deps["int8"].weight_bytes == plan_deployment(scenario).weight_bytes / 2  # bf16 -> int8
    assert deps["int4"].num_kv_blocks > deps["int8"].num_kv_blocks  # the freed memory holds KV


def test_smaller_model_maps_to_its_sibling_on_the_fewest_devices_it_fits():
    big = scenario_from_dict(merge(RAW, {"model": {"name": "llama-3.1-70b"}, "hardware": {"tensor_parallel": 4}}))
    plan = plan_of(big, "smaller_model")
    assert plan.overrides == {"model.name": "llama-3.1-8b", "model.weight_format": None, "hardware.tensor_parallel": 1}


def test_trimmed_prompts_keep_p_percent_off_and_at_least_one_token():
    requests = Requests(arrival_s=np.arange(5.0), input_tokens=np.array([1, 2, 10, 999, 1000]),
                        output_tokens=np.ones(5, dtype=np.int64))
    trimmed = trim_prompts(requests, 0.2)
    assert trimmed.input_tokens.tolist() == [1, 1, 8, 799, 800]  # floor(x * 0.8), at least 1
    assert trimmed.output_tokens.tolist() == requests.output_tokens.tolist()
    assert trimmed.arrival_s.tolist() == requests.arrival_s.tolist()
    plan = plan_of(base(), "prompt_trim", load_levers(None, {"prompt_trim": {"fraction": 0.3}}))
    assert plan.transform == {"kind": "prompt_trim", "fraction": 0.3}


def test_the_response_cache_lever_is_the_scenarios_cache_component():
    plan = plan_of(base(), "response_cache", load_levers(None, {"response_cache": {"hit_rate": 0.3}}))
    cache = plan.overrides["fleet.response_cache"]
    assert cache["mode"] == "semantic" and cache["hit_rate"] == 0.3 and plan.transform is None


def test_response_cache_conserves_requests_in_the_run():
    scenario = base()
    requests = generate(scenario, streams(scenario.seed))
    plan = plan_of(scenario, "response_cache", load_levers(None, {"response_cache": {"hit_rate": 0.3}}))
    row = run_lever(with_overrides(to_dict(scenario), plan.overrides), None, scenario.seed)
    assert row["simulated_requests"] + row["cache_served_requests"] == len(requests)
    n = len(requests)
    assert abs(row["cache_served_requests"] - 0.3 * n) < 4 * np.sqrt(n * 0.21) + 1  # each arrival hits with p = 0.3


@pytest.mark.parametrize("cache_latency_s", [0.002, 0.05])  # within and beyond the 0.02 s TTFT limit
def test_cache_served_requests_join_the_percentiles_attainment_and_token_count(cache_latency_s):
    """The lever's row by hand: the cache's hits among the run's requests, at their latency."""
    scenario = scenario_from_dict(merge(RAW, {"slo": {"ttft_s": 0.02, "tpot_s": 0.05}}))
    plan = plan_of(scenario, "response_cache", load_levers(None, {"response_cache": {
        "hit_rate": 0.5, "cache_latency_s": cache_latency_s, "cache_usd_per_hour": 1.5}}))
    sim = Simulation(scenario_from_dict(with_overrides(to_dict(scenario), plan.overrides)), timeseries=False)
    result = sim.run()
    row = served_metrics(scenario, result)
    t = result.table
    hits = np.array(sorted(sim.cache.hit))
    np.testing.assert_allclose(t.first_token_s[hits] - t.arrival_s[hits], cache_latency_s)  # whole answer at once
    assert (t.replica[hits] == -1).all() and row["cache_served_requests"] == len(hits) > 0
    ttft = t.first_token_s - t.arrival_s
    ok = (t.arrival_s >= scenario.warmup_s) & (t.status == COMPLETED)
    assert row["p99_ttft_s"] == pytest.approx(np.percentile(ttft[ok], 99))
    hit_share = np.isin(np.flatnonzero(ok), hits).mean()
    if cache_latency_s <= 0.02:  # every hit meets the 20 ms TTFT; some simulated requests miss it
        assert hit_share <= row["slo_attainment"] < 1
    else:  # no hit does
        assert row["slo_attainment"] <= 1 - hit_share
    tokens = t.generated.sum()  # hits deliver their whole answers
    assert t.generated[hits].sum() == t.output_tokens[hits].sum()
    total_usd = result.bill.total_usd
    assert result.bill.cache_store_usd == pytest.approx(1.5 * result.horizon_s / 3600)
    assert row["usd_per_1m_output_tokens"] == pytest.approx(total_usd / tokens * 1e6)


# --- ROI and ranking ----------------------------------------------------------------------------

def test_roi_formula_on_hand_numbers():
    # $1,000/month for a year, risk 0.25, 2 weeks at $4,000: 12,000 x 0.75 / 8,000
    assert roi(12_000.0, 0.25, 2.0, 4000.0) == pytest.approx(1.125)
    assert roi(-1200.0, 0.0, 1.0, 4000.0) == pytest.approx(-0.3)
    with pytest.raises(InputError):
        roi(100.0, 0.0, 0.0, 4000.0)


def test_ranking_follows_roi_with_slo_breakers_after_and_skipped_last():
    def row(lever, saving_per_month, risk, effort, meets=True, status="ok"):
        return {"lever": lever, "status": status, "meets_slo": meets, "rank": None,
                "roi": roi(saving_per_month * 12, risk, effort, 4000.0) if status == "ok" else None}

    rows = [row("baseline", 0, 0, 1), row("a", 1000, 0.5, 1), row("b", 500, 0.0, 0.5), row("c", 3000, 0.9, 2),
            row("d", 9000, 0.0, 1, meets=False), row("e", 0, 0, 1, status="skipped"), row("f", 2000, 0.2, 4)]
    # ROI: a 1.5, b 3.0, c 0.45, d 27 (breaks the SLO), f 1.2
    ranked = rank_rows(rows)
    assert [r["lever"] for r in ranked] == ["baseline", "b", "a", "f", "c", "d", "e"]
    assert [r["rank"] for r in ranked] == [None, 1, 2, 3, 4, 5, None]


def test_levers_file_is_validated_and_overrides_defaults(tmp_path):
    path = tmp_path / "levers.yaml"
    path.write_text("usd_per_engineer_week: 5000\nint4: {effort_weeks: 3, quality_risk: 0.4}\nspot: {share: 0.8}\n")
    cfg = load_levers(path)
    assert cfg.usd_per_engineer_week == 5000 and cfg.effort_risk("int4") == (3.0, 0.4)
    assert cfg.effort_risk("int8") == (1.0, 0.10) and cfg.spot.share == 0.8
    for text, where in (("int5: {}\n", "int5"), ("int4: {quality_risk: 1.5}\n", "int4.quality_risk"),
                        ("response_cache: {hit_rate: 1.0}\n", "response_cache.hit_rate")):
        path.write_text(text)
        with pytest.raises(InputError) as info:
            load_levers(path)
        assert info.value.where == f"{path}: {where}"


# --- skipped levers ---------------------------------------------------------------------------------

def test_a_lever_that_cannot_apply_is_skipped_with_its_reason():
    a100 = scenario_from_dict(merge(RAW, {"hardware": {"device": "a100-80gb"}}))
    assert "fp8" in plan_of(a100, "fp8").skip_reason  # Ampere has no fp8
    assert plan_of(a100, "int8").skip_reason is None
    short = load_levers(None, {"smaller_model": {"model": "llama-2-7b"}})  # a 4,096-token context
    assert "exceeds llama-2-7b's context length" in plan_of(base(), "smaller_model", short).skip_reason
    bigger = load_levers(None, {"smaller_model": {"model": "llama-3.1-70b"}})
    assert "not smaller" in plan_of(base(), "smaller_model", bigger).skip_reason
    assert "prefix blocks" in plan_of(base(), "prefix_caching").skip_reason
    too_big = load_levers(None, {"edge_offload": {"device": "jetson-orin-nano", "weight_format": "bf16"}})
    assert "fleet.pools[1]" in plan_of(base(), "edge_offload", too_big).skip_reason  # 16 GB of weights, 8 GB board
    moving = scenario_from_dict(merge(RAW, {"fleet": {**RAW["fleet"], "spot": {"usd_per_device_hour": 2.0}}}))
    assert "moves" in plan_of(moving, "edge_offload").skip_reason
    result = study(a100, too_big, only=("fp8", "edge_offload"), resize=False)
    assert [(r["lever"], r["status"]) for r in result.rows] == [("baseline", "ok"), ("fp8", "skipped"),
                                                                 ("edge_offload", "skipped")]
    assert result.simulations == 1  # only the baseline ran


def test_spot_price_defaults_to_the_price_catalogs_midpoint_and_without_one_the_lever_is_skipped():
    from simcost.catalog import specs as catalog

    if not hasattr(catalog, "load_prices"):
        pytest.skip("this tree has no price catalog (configs/prices.yaml)")
    offer = next(o for o in catalog.load_prices() if o.device == "h100-sxm" and o.spot_usd_per_hour is not None)
    spot = offer.spot_usd_per_hour / offer.devices_per_instance
    plan = plan_of(base(), "spot", load_levers(None, {"spot": {"share": 0.25}}))
    assert plan.overrides["fleet.spot"]["share"] == 0.25
    assert plan.overrides["fleet.spot"]["usd_per_device_hour"] == pytest.approx(spot)
    assert "reclaims at the 5-10 % monthly band" in plan.note
    no_spot = [d for d in catalog.load_devices() if not any(o.device == d and o.spot_usd_per_hour is not None
                                                            for o in catalog.load_prices())]
    scenario = scenario_from_dict(merge(RAW, {"hardware": {"device": no_spot[0]}}))
    assert "no spot price" in plan_of(scenario, "spot").skip_reason


def test_sessions_skip_request_transforms():
    chat = scenario_from_dict(merge(RAW, {"workload": {**RAW["workload"], "session": {
        "turns": {"dist": "fixed", "value": 2}, "think_time": {"dist": "fixed", "value_s": 1.0}}}}))
    assert plan_of(chat, "response_cache").skip_reason is None  # the cache component looks each turn up
    assert "during the run" in plan_of(chat, "prompt_trim").skip_reason
    assert plan_of(chat, "prefix_caching").overrides == {"engine.prefix_caching": True}  # sessions share prefixes


# --- whole studies ------------------------------------------------------------------------------------

def test_baseline_row_equals_a_plain_run_and_spot_saves_its_price_difference():
    scenario = base()
    cfg = load_levers(None, {"spot": {"share": 0.5, "spot_usd_per_device_hour": 2.0}})
    result = study(scenario, cfg, only=("spot",), resize=False)
    baseline, spot = result.rows
    plain = Simulation(scenario).run()
    s = plain.summary
    assert baseline["p99_ttft_s"] == s["ttft_s"]["p99"] and baseline["p99_tpot_s"] == s["tpot_s"]["p99"]
    assert baseline["slo_attainment"] == s["slo_attainment"] and baseline["meets_slo"] == s["meets_slo"]
    assert baseline["usd_per_1m_output_tokens"] == s["cost"]["usd_per_1m_output_tokens"]
    assert baseline["requests_per_s"] == pytest.approx(s["throughput"]["requests_per_s"])
    # the lever's rate leaves out per-start minimum charges (a month-long fleet pays them once); the
    # summary's is the whole bill of this short run, per hour
    c = s["cost"]
    assert baseline["usd_per_hour"] == pytest.approx((c["total_usd"] - c["minimum_charge_usd"]) / s["horizon_s"] * 3600)
    # spot: one of the two replicas on spot at $2 instead of $6.88; a reclaim in 30 s at the
    # 5-10 % monthly band has odds of about 1e-6, so the runs are the same
    assert spot["p99_ttft_s"] == baseline["p99_ttft_s"]
    saving = 2 * 0.5 * (6.88 - 2.0) * HOURS_PER_MONTH
    assert spot["saving_usd_per_month"] == pytest.approx(saving)
    assert spot["roi"] == pytest.approx(saving * 12 / (2.0 * 4000.0))  # effort 2 weeks, risk 0 by default


def test_resized_rows_run_at_the_smallest_fleet_meeting_the_slo():
    """At 50 req/s one H100 misses the SLO in bf16 and meets it with fp8 weights (checked below
    against every replica count): the fp8 row saves one replica's $/month."""
    busy = merge(RAW, {"workload": {**RAW["workload"], "arrivals": {"process": "poisson", "rate_per_s": 50.0}}})
    scenario = scenario_from_dict(busy)
    result = study(scenario, LeversConfig(), only=("fp8",), resize=True, max_replicas=4)
    baseline, fp8 = result.rows
    for row, overrides in ((baseline, {}), (fp8, {"model.weight_format": "fp8"})):
        raw = with_overrides(to_dict(scenario), overrides)
        runs = {n: Simulation(scenario_from_dict(with_replicas(raw, n))).run().summary for n in range(1, 5)}
        smallest = min(n for n, s in runs.items() if s["meets_slo"])
        assert row["replicas"] == smallest and row["meets_slo"]
        assert row["p99_ttft_s"] == runs[smallest]["ttft_s"]["p99"]  # each row is a plain run at its fleet
    assert (baseline["replicas"], fp8["replicas"]) == (2, 1)
    assert fp8["saving_usd_per_month"] == pytest.approx(6.88 * HOURS_PER_MONTH)
    assert fp8["roi"] == pytest.approx(6.88 * HOURS_PER_MONTH * 12 * (1 - 0.05) / (1.0 * 4000.0))


def test_a_baseline_that_no_fleet_makes_meet_the_slo_is_an_input_error_saying_why():
    rejecting = scenario_from_dict(merge(RAW, {"engine": {"max_model_len": 400}}))  # longer prompts are rejected
    with pytest.raises(InputError) as info:
        study(rejecting, LeversConfig(), only=("int8",), resize=True, max_replicas=2)
    assert info.value.where == "--max-replicas" and "at 2 replicas" in info.value.problem
    assert "requests rejected" in info.value.problem and "--fixed-fleet" in info.value.problem


def test_cli_writes_the_ranked_table_csv_json_and_plot(tmp_path, capsys):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(RAW))
    out = tmp_path / "out"
    code = main(["levers", str(path), "--fixed-fleet", "--only", "int8,spot,prefix_caching", "--jobs", "1",
                 "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "ROI" in text and "prefix caching: skipped" in text
    data = json.loads((out / "result.json").read_text())
    assert [r["lever"] for r in data["rows"]][0] == "baseline"
    assert (out / "levers.csv").read_text().splitlines()[0].startswith("rank,lever,label,status")
    assert (out / "levers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["levers", str(path), "--only", "int9"]) == 2  # unknown lever: one line, exit 2
    assert "unknown lever 'int9'" in capsys.readouterr().err


def test_edge_offload_puts_owned_boards_in_front_of_the_cloud_and_resize_shrinks_the_cloud_pool():
    from simcost.analysis.forecast import with_replicas
    from simcost.analysis.lever_plans import with_overrides

    plan = plan_of(base(), "edge_offload")
    assert plan.skip_reason is None
    raw = with_overrides(to_dict(base()), plan.overrides)
    pools = raw["fleet"]["pools"]
    assert [p["name"] for p in pools] == ["cloud", "edge"] and raw["fleet"]["pool_router"] == "edge_first"
    assert pools[1]["pricing"]["model"] == "owned" and pools[1]["replicas"] == 2
    assert with_replicas(raw, 5, pool=0)["fleet"]["pools"][0]["replicas"] == 5  # the cloud pool is what resize moves
    res = Simulation(scenario_from_dict(raw)).run()
    routed = res.summary["pool_routing"]["requests_by_pool"]
    assert routed["edge"] > 0 and routed["edge"] + routed["cloud"] == res.summary["requests"]["arrived"]
    # the boards cost their amortised capital and power; the cloud pool its on-demand hours
    by_pool = {p["name"]: p for p in res.summary["pools"]}
    assert by_pool["edge"]["pricing_model"] == "owned" and by_pool["cloud"]["pricing_model"] == "on_demand"
    assert res.bill.request_usd.sum() + res.bill.unallocated_usd == pytest.approx(res.bill.total_usd, rel=1e-9)
