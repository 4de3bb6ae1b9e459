"""`simcost forecast`: load scaling for every kind of workload, the growth path, monthly spend of a
static on-demand fleet (flat, while the SLO falls), --resize, budget crossing, and the command."""

from __future__ import annotations

import copy

import pytest

from simcost.analysis.forecast import (
    Forecast,
    GrowthPath,
    MonthForecast,
    check_trace_covers,
    first_month,
    forecast,
    parse_step,
    scale_load,
)
from simcost.analysis.forecast_outputs import budget_line
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.rng import streams
from simcost.scenario.scenario import scenario_from_dict
from simcost.workload.requests import generate

PRICE_USD_PER_HOUR = 2.0
# One replica serving one request at a time with a constant step time: 100-token prompts take
# 0.1 s, 10 output tokens 0.09 s more, so it saturates near 5 req/s; a short window runs in ms.
TINY = {
    "name": "tiny", "seed": 3, "duration_s": 30.0, "warmup_s": 2.0,
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
                 "input_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 10}},
    "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"},
    "perf": {"model": "constant", "prefill_s_per_token": 0.001, "decode_step_s": 0.01},
    "engine": {"max_num_seqs": 1},
    "fleet": {"replicas": 1, "price_usd_per_device_hour": PRICE_USD_PER_HOUR},
    "slo": {"ttft_s": 1.0},
}
LENGTHS = {"input_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 10}}


def tiny(**changes) -> dict:
    raw = copy.deepcopy(TINY)
    raw.update(changes)
    return raw


def with_workload(workload: dict, duration_s: float = 600.0) -> dict:
    return tiny(workload=workload, duration_s=duration_s, warmup_s=0.0)


# --- scale_load: every kind of load, scaled by 2 ---------------------------------------------

ARRIVALS = {  # arrivals -> what they must become at x2
    "poisson": ({"process": "poisson", "rate_per_s": 4.0}, {"rate_per_s": 8.0}),
    "gamma": ({"process": "gamma", "rate_per_s": 4.0, "cv": 2.0}, {"rate_per_s": 8.0, "cv": 2.0}),
    "weibull": ({"process": "weibull", "rate_per_s": 4.0, "cv": 1.5}, {"rate_per_s": 8.0, "cv": 1.5}),
    "mmpp": ({"process": "mmpp", "rate_on_per_s": 20.0, "rate_off_per_s": 1.0, "mean_on_s": 5.0, "mean_off_s": 20.0},
             {"rate_on_per_s": 40.0, "rate_off_per_s": 2.0, "mean_on_s": 5.0, "mean_off_s": 20.0}),
    "piecewise": ({"process": "piecewise", "rate_table": [[0, 2.0], [300, 6.0]]}, {"rate_table": [[0, 4.0], [300, 12.0]]}),
    "sinusoidal": ({"process": "sinusoidal", "mean_rate_per_s": 5.0, "peak_to_trough": 4.0, "period_s": 600.0},
                   {"mean_rate_per_s": 10.0, "peak_to_trough": 4.0, "period_s": 600.0}),
    "servegen": ({"process": "servegen", "servegen_file": "servegen_mm_image", "time_compression": 60.0,
                  "rate_multiplier": 0.5}, {"rate_multiplier": 1.0, "time_compression": 60.0}),
    "servegen_default": ({"process": "servegen", "servegen_file": "servegen_mm_image", "time_compression": 60.0},
                         {"rate_multiplier": 2.0}),
}


def count(raw: dict) -> int:
    scenario = scenario_from_dict(raw)
    return len(generate(scenario, streams(scenario.seed)))


@pytest.mark.parametrize("kind", list(ARRIVALS))
def test_scale_load_multiplies_each_arrival_process(kind):
    arrivals, expected = ARRIVALS[kind]
    raw = with_workload({"arrivals": arrivals, **LENGTHS})
    before = copy.deepcopy(raw)
    scaled = scale_load(raw, 2.0)
    assert raw == before  # the input is left alone
    for key, value in expected.items():
        assert scaled["workload"]["arrivals"][key] == value, key
    # the level doubles: about twice the requests in the same window (mmpp's on/off cycle is noisier)
    tolerance = 0.3 if kind == "mmpp" else 0.12
    assert count(scaled) == pytest.approx(2 * count(raw), rel=tolerance)


def test_scale_load_reads_a_rate_file_and_writes_it_back_inline(tmp_path):
    rate_file = tmp_path / "rates.csv"
    rate_file.write_text("start_s,rate_per_s\n0,2\n300,6\n")
    raw = with_workload({"arrivals": {"process": "piecewise", "rate_file": str(rate_file)}, **LENGTHS})
    arrivals = scale_load(raw, 1.5)["workload"]["arrivals"]
    assert arrivals["rate_table"] == [[0.0, 3.0], [300.0, 9.0]] and arrivals["rate_file"] is None


@pytest.mark.parametrize("users, factor, expected", [(4, 2.0, 8), (3, 1.5, 5), (1, 1.08, 1), (2, 0.1, 1)])
def test_scale_load_rounds_closed_loop_users_half_up(users, factor, expected):
    raw = with_workload({"clients": {"users": users, "think_time": {"dist": "fixed", "value_s": 1.0}}, **LENGTHS})
    assert scale_load(raw, factor)["workload"]["clients"]["users"] == expected


@pytest.mark.parametrize("trace, expected", [({"name": "azure_code"}, 2.0), ({"name": "azure_code", "rate_multiplier": 4.0}, 8.0)])
def test_scale_load_speeds_up_a_trace(trace, expected):
    raw = with_workload({"trace": trace}, duration_s=300.0)
    scaled = scale_load(raw, 2.0)
    assert scaled["workload"]["trace"]["rate_multiplier"] == expected
    assert count(scaled) == pytest.approx(2 * count(raw), rel=0.15)


def test_scale_load_scales_every_mix_entry():
    mix = [{"name": "chat", "arrivals": {"process": "poisson", "rate_per_s": 1.0}, **LENGTHS},
           {"name": "code", "trace": {"name": "azure_code"}},
           {"name": "batch", "clients": {"users": 4, "think_time": {"dist": "fixed", "value_s": 0.0}}, **LENGTHS}]
    scaled = scale_load(with_workload({"mix": mix}), 3.0)["workload"]["mix"]
    assert scaled[0]["arrivals"]["rate_per_s"] == 3.0
    assert scaled[1]["trace"]["rate_multiplier"] == 3.0
    assert scaled[2]["clients"]["users"] == 12
    scenario_from_dict(with_workload({"mix": scaled}))  # still a valid scenario


def test_a_trace_that_runs_out_at_a_later_months_load_is_refused():
    raw = with_workload({"trace": {"name": "azure_conv", "rate_multiplier": 4.0}}, duration_s=600.0)
    check_trace_covers(scenario_from_dict(scale_load(raw, 1.2)), 3, 1.2)  # 3,502 s / 4.8 covers 600 s
    with pytest.raises(InputError, match=r"workload.trace: at month 7's load .* set workload.trace.loop=true"):
        check_trace_covers(scenario_from_dict(scale_load(raw, 1.6)), 7, 1.6)
    raw["workload"]["trace"]["loop"] = True
    check_trace_covers(scenario_from_dict(scale_load(raw, 1.6)), 7, 1.6)


# --- growth path ----------------------------------------------------------------------------

def test_growth_compounds_and_steps_multiply_from_their_month_on():
    path = GrowthPath(6, 1.1, ((3, 2.0), (5, 0.5)))
    assert [path.load_factor(m) for m in range(1, 7)] == pytest.approx([1, 1.1, 2.42, 2.662, 1.4641, 1.61051])
    assert parse_step("4:2") == (4, 2.0)


# --- monthly spend --------------------------------------------------------------------------

def test_flat_load_costs_the_same_every_month():
    one = forecast(scenario_from_dict(tiny()), GrowthPath(4, 1.0), seeds=1)
    assert one.runs == 1  # the same scenario and seed every month: run once
    assert len({(m.usd_per_month_mean, m.slo_attainment_mean, m.offered_requests_per_s) for m in one.months}) == 1
    two = forecast(scenario_from_dict(tiny()), GrowthPath(3, 1.0), seeds=2)
    assert len({(m.usd_per_month_low, m.usd_per_month_high, m.slo_attainment_min) for m in two.months}) == 1


def test_static_on_demand_fleet_bills_every_hour_while_the_slo_falls():
    hours = 730.0
    result = forecast(scenario_from_dict(tiny()), GrowthPath(5, 1.6), seeds=2, hours_per_month=hours)
    for m in result.months:  # on demand: the fleet's price x hours, whatever the load
        for usd in (m.usd_per_month_mean, m.usd_per_month_low, m.usd_per_month_high):
            assert usd == pytest.approx(PRICE_USD_PER_HOUR * hours, rel=1e-9)
    attainment = [m.slo_attainment_mean for m in result.months]
    assert result.months[0].meets_slo and not result.months[-1].meets_slo
    assert attainment[0] > 0.99 and attainment[-1] < 0.5  # 2 x 1.6^4 = 13 req/s on a 5 req/s replica
    assert all(b <= a + 0.01 for a, b in zip(attainment, attainment[1:]))


def test_resize_grows_the_fleet_to_keep_the_slo_and_shrinks_an_oversized_one():
    result = forecast(scenario_from_dict(tiny(fleet={"replicas": 2, "price_usd_per_device_hour": PRICE_USD_PER_HOUR})),
                      GrowthPath(4, 1.8), seeds=2, resize=True)
    replicas = [m.replicas for m in result.months]
    assert replicas[0] == 1  # month 1: 2 replicas were more than 2 req/s needs
    assert replicas == sorted(replicas) and replicas[-1] >= 3  # 2 x 1.8^3 = 11.7 req/s
    assert all(m.meets_slo for m in result.months)
    for m in result.months:
        if m.replicas == m.replicas_min:
            assert m.usd_per_month_mean == pytest.approx(m.replicas * PRICE_USD_PER_HOUR * 730.0)


def test_resize_refuses_a_disaggregated_fleet():
    fleet = {"disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}}
    with pytest.raises(InputError, match="--resize"):
        forecast(scenario_from_dict(tiny(fleet=fleet)), GrowthPath(2, 1.1), resize=True)


def month(number: int, mean: float, high: float, budget: float) -> MonthForecast:
    return MonthForecast(month=number, load_factor=1.0, replicas=1, replicas_min=1, offered_requests_per_s=1.0,
                         usd_per_month_mean=mean, usd_per_month_low=mean, usd_per_month_high=high,
                         slo_attainment_mean=1.0, slo_attainment_min=1.0, meets_slo=True, over_budget=mean > budget)


def constructed(means, highs, budget) -> Forecast:
    months = [month(i + 1, m, h, budget) for i, (m, h) in enumerate(zip(means, highs))]
    return Forecast("x", GrowthPath(len(months)), 3, 730.0, budget, False, 4, 0.99, months, 0)


def test_budget_crossing_month():
    result = constructed([100, 200, 300, 250], [110, 230, 320, 260], budget=220)
    assert first_month(result.months, lambda m: m.over_budget).month == 3
    assert budget_line(result) == ("budget of $220/month first crossed in month 3 ($300 mean); "
                                   "the band's top crosses it from month 2")
    result = constructed([100, 200], [110, 210], budget=220)
    assert budget_line(result) == "budget of $220/month not crossed within 2 months"


# --- the command ----------------------------------------------------------------------------

def write_tiny(tmp_path):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    return path


def test_command_writes_table_csv_and_plot(tmp_path, capsys):
    scenario = write_tiny(tmp_path)
    args = ["forecast", str(scenario), "--months", "3", "--growth", "1.5", "--step", "3:2", "--seeds", "2",
            "--budget-usd-per-month", "2000", "--resize"]
    assert main([*args, "--out", str(tmp_path / "a"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "budget of $2,000/month first crossed in month 3" in out and "$/month" in out
    lines = (tmp_path / "a" / "forecast.csv").read_text().splitlines()
    assert lines[0].startswith("month,load_factor,replicas,") and len(lines) == 4
    assert (tmp_path / "a" / "forecast.png").stat().st_size > 1000
    assert main([*args, "--out", str(tmp_path / "b"), "--jobs", "2"]) == 0  # worker processes: the same numbers
    assert (tmp_path / "b" / "forecast.csv").read_text() == (tmp_path / "a" / "forecast.csv").read_text()


@pytest.mark.parametrize("args, where", [
    (["--step", "0:2"], "--step"), (["--step", "13:2"], "--step"), (["--step", "4"], "--step"),
    (["--step", "4:-1"], "--step"), (["--growth", "-1"], "--growth"), (["--months", "0"], "--months"),
    (["--seeds", "0"], "--seeds"), (["--budget-usd-per-month", "0"], "--budget-usd-per-month"),
    (["--max-replicas", "3"], "--max-replicas"), (["--resize", "--max-replicas", "0"], "--max-replicas"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, args, where):
    out = tmp_path / "out"
    assert main(["forecast", str(write_tiny(tmp_path)), "--out", str(out), "--jobs", "1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"simcost: error: {where}: "), err
    assert not out.exists()
