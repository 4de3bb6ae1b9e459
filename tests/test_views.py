"""Views of a run that must agree with the bill and with the requests that arrived: the fleet's
$/hour is what its pricing model charged, and SLO attainment does not leave requests out."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scenarios import scenario

from simcost.simulation.simulation import Simulation
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED

CONSTANT = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.002}
PRICING = {
    "on_demand_short_run": {"model": "on_demand", "min_charge_s": 120.0},  # the minimum exceeds the run
    "spot": {"model": "spot", "spot_usd_per_device_hour": 1.1},
    "reserved": {"model": "reserved", "upfront_usd_per_device": 10000, "recurring_usd_per_device_hour": 1.5,
                 "term_years": 3},
    "savings_plan": {"model": "savings_plan", "commitment_usd_per_hour": 30.0, "discount": 0.4},
    "owned": {"model": "owned", "capex_usd_per_device": 30000, "usd_per_kwh": 0.1},
}


def run(**extra):
    return Simulation(scenario(perf=CONSTANT, duration_s=30.0, **extra), timeseries=False).run()


@pytest.mark.parametrize("name", PRICING)
def test_fleet_usd_per_hour_is_the_bill_per_hour(name):
    """A static one-pool fleet: $/hour is the bill over the run, not the on-demand list price."""
    result = run(fleet={"replicas": 2, "price_usd_per_device_hour": 4.0, "pricing": PRICING[name]})
    cost = result.summary["cost"]
    assert cost["usd_per_hour"] * result.horizon_s / S_PER_HOUR == pytest.approx(cost["total_usd"])
    assert cost["usd_per_hour"] != pytest.approx(2 * 4.0)  # every one of these differs from the list price


def test_owned_board_needs_no_list_price():
    """An owned board without a catalog price is billed from its capital and power: no list
    price to give, and the headline rate is that bill, not $0."""
    result = run(model={"name": "llama-3.1-8b", "weight_format": "int4"}, hardware={"device": "jetson-agx-orin"},
                 fleet={"pricing": PRICING["owned"]}, workload={
                     "arrivals": {"process": "poisson", "rate_per_s": 0.5},
                     "input_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 20}})
    assert result.summary["cost"]["usd_per_hour"] > 0
    assert result.summary["cost"]["usd_per_hour"] * result.horizon_s / S_PER_HOUR == pytest.approx(result.bill.total_usd)


def test_attainment_counts_requests_left_in_flight():
    """drain_s cuts an overloaded run: the requests still in flight are measured and not met, so
    attainment is at most the completed-within-SLO share of every measured arrival."""
    result = run(drain_s=2.0, workload={"arrivals": {"process": "poisson", "rate_per_s": 40.0},
                                        "input_tokens": {"dist": "fixed", "value": 500},
                                        "output_tokens": {"dist": "fixed", "value": 200}})
    s, table = result.summary, result.table
    assert s["requests"]["in_flight"] > 0
    outcomes = s["slo_outcomes"]
    assert outcomes["of"] == s["requests"]["arrived"]  # no warm-up: every arrival is measured
    assert outcomes["met"] + outcomes["missed"] + outcomes["open"] == outcomes["of"]
    completed = int((table.status == COMPLETED).sum())
    assert s["slo_attainment"] == pytest.approx(completed / s["requests"]["arrived"])  # no limits: completed = met
    assert not s["meets_slo"]
    assert s["latency_covers"] == {"requests": "completed, arrived at or after warmup_s", "count": completed,
                                   "of": s["requests"]["arrived"]}


def test_late_in_flight_requests_are_missed_not_open():
    """A request with no first token past its TTFT limit at the end cannot meet the SLO."""
    result = run(drain_s=2.0, slo={"ttft_s": 0.5}, workload={"arrivals": {"process": "poisson", "rate_per_s": 40.0},
                                                             "input_tokens": {"dist": "fixed", "value": 500},
                                                             "output_tokens": {"dist": "fixed", "value": 200}})
    outcomes = result.summary["slo_outcomes"]
    assert outcomes["missed"] > 0
    assert outcomes["attainment_upper_bound"] < 1.0


COLD = {"provisioning_s": 5.0, "image_gb": 1.0, "registry_gb_per_s": 1.0, "weights_gb_per_s": 16.0, "engine_start_s": 2.0}
BUSY = {"arrivals": {"process": "poisson", "rate_per_s": 8.0},
        "input_tokens": {"dist": "uniform", "low": 200, "high": 2000},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 200}}
MOVING = {  # fleets whose replicas start and stop within the run, so minimums and partial hours bite
    "hpa_minimums": {"replicas": 1, "cold_start": COLD, "pricing": {"model": "on_demand", "min_charge_s": 60.0},
                     "autoscaler": {"policy": "hpa", "target": 2, "max_replicas": 4}},
    "spot_failures": {"replicas": 3, "cold_start": COLD,
                      "spot": {"share": 0.5, "usd_per_device_hour": 1.5, "monthly_interruption": 0.9, "notice_s": 5.0},
                      "failures": {"mtbf_h": 0.01, "mttr_s": 10.0}},
    "warm_pool": {"replicas": 1, "cold_start": COLD, "warm_pool": {"size": 2},
                  "autoscaler": {"policy": "hpa", "target": 2, "max_replicas": 4}},
}


def integrated_usd(result) -> float:
    ts = result.timeseries
    return float((ts.usd_per_hour * ts.width_s).sum() / S_PER_HOUR)


@pytest.mark.parametrize("name", PRICING)
def test_timeseries_integrates_to_the_bill_for_every_pricing_model(name):
    """sum(usd_per_hour x interval) is the bill: minimum charges and unused commitment included."""
    scn = scenario(perf=CONSTANT, duration_s=30.0, fleet={"replicas": 2, "price_usd_per_device_hour": 4.0,
                                                          "pricing": PRICING[name]})
    result = Simulation(scn, sample_interval_s=0.7).run()  # intervals that do not divide the run
    assert integrated_usd(result) == pytest.approx(result.bill.total_usd, rel=1e-9)


@pytest.mark.parametrize("name", MOVING)
def test_timeseries_integrates_to_the_bill_for_a_fleet_that_moves(name):
    scn = scenario(perf=CONSTANT, duration_s=90.0, workload=BUSY, fleet=MOVING[name])
    result = Simulation(scn).run()
    assert integrated_usd(result) == pytest.approx(result.bill.total_usd, rel=1e-9)


@pytest.mark.parametrize(("replicas", "on_spot"), [(1, 1), (2, 1), (3, 2), (5, 3), (4, 2)])
def test_spot_share_rounds_half_up(replicas, on_spot):
    from simcost.scenario.fleet import SpotConfig

    assert SpotConfig(share=0.5).num_spot(replicas) == on_spot


def test_overloaded_run_is_flagged_and_printed():
    from simcost.results.writer import format_summary

    result = run(drain_s=2.0, workload={"arrivals": {"process": "poisson", "rate_per_s": 40.0},
                                        "input_tokens": {"dist": "fixed", "value": 500},
                                        "output_tokens": {"dist": "fixed", "value": 200}})
    overload = result.summary["overload"]
    assert overload["arrivals_outpaced_completions"]
    assert overload["arrivals_per_s"] > overload["departures_per_s"]
    assert "WARNING: arrivals outpaced the fleet" in format_summary(result.summary)
    calm = run(workload={"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                         "input_tokens": {"dist": "fixed", "value": 100}, "output_tokens": {"dist": "fixed", "value": 20}})
    assert not calm.summary["overload"]["arrivals_outpaced_completions"]
    assert "WARNING" not in format_summary(calm.summary)


def test_console_latency_columns_stay_apart_above_a_million_ms():
    from simcost.results.writer import format_summary

    s = run().summary
    s["ttft_s"] = {**s["ttft_s"], "p99": 12_345.678, "p95": 2_000.0}  # 12,345,678.0 ms
    table = format_summary(s).splitlines()
    ttft = next(line for line in table if line.startswith("TTFT"))
    cells = re.split(r" {2,}", ttft.strip())  # every column two spaces apart at least
    assert cells[0] == "TTFT" and cells[-2:] == ["2,000,000.0", "12,345,678.0"]
    header = next(line for line in table if line.startswith("latency (ms)"))
    assert len(header) == len(ttft)  # the header widens with the values


def test_nodes_are_not_billed_while_their_site_is_down():
    """A replica requested during an outage cannot be provisioned: billing starts when the site
    is back, so its provisioning is its cold start, not the outage."""
    scn = scenario(perf=CONSTANT, workload=BUSY, duration_s=200.0, fleet={
        "replicas": 2, "cold_start": COLD, "autoscaler": {"policy": "hpa", "target": 4, "max_replicas": 4},
        "failures": {"outages": [{"at_s": 30.0, "duration_s": 120.0}]}})
    result = Simulation(scn, timeseries=False).run()
    ra = result.bill.roster
    after = ra.requested_s > 30.0
    assert after.any()
    assert (ra.requested_s[after] >= 150.0 - 1e-9).all()
    rate_usd_per_s = result.deployment.price_usd_per_hour / S_PER_HOUR
    provisioning_s = ra.provisioned_s - ra.requested_s  # every node: its own cold start, no outage in it
    assert (provisioning_s <= COLD["provisioning_s"] + 1e-9).all()
    assert result.bill.provisioning_usd == pytest.approx(provisioning_s.sum() * rate_usd_per_s, rel=1e-9)


def test_pool_rows_rate_follows_the_pricing_model():
    """A pool row's $/hour is its pricing model's rate (here spot), not the on-demand list price."""
    result = run(fleet={"replicas": 2, "price_usd_per_device_hour": 4.0, "pricing": PRICING["spot"]})
    (pool,) = result.summary["pools"]
    assert pool["usd_per_hour"] == pytest.approx(2 * 1.1 * result.deployment.num_devices)


def test_a_minimum_charge_of_a_replica_billed_for_no_time_lands_whole_in_one_interval():
    """A replica reclaimed the instant it was requested still pays its minimum charge; the time
    series puts it in the interval of the request, and it integrates to exactly that charge
    (it used to integrate to 1/3600 of it, which a property test found)."""
    from simcost.metrics.timeseries import add_minimum_usd_per_hour
    from simcost.units import S_PER_HOUR

    edges_s = np.array([0.0, 10.0, 30.0, 60.0])
    lo, hi, width_s = edges_s[:-1], edges_s[1:], np.diff(edges_s)
    per_hour = S_PER_HOUR / width_s

    minimum_usd = np.array([0.5, 0.25, 0.125])
    start_s = np.array([15.0, 20.0, 5.0])
    end_s = np.array([15.0, 20.0 + 1e-12, 45.0])  # no time, a picosecond, 40 s
    rates = np.zeros((3, len(lo)))  # each replica in a pool of its own
    add_minimum_usd_per_hour(rates, np.arange(3), minimum_usd, start_s, end_s, lo, hi, width_s, per_hour)
    integral_usd = (rates * width_s).sum(axis=1) / S_PER_HOUR
    np.testing.assert_allclose(integral_usd, minimum_usd, rtol=1e-12)
    assert rates[0, 1] > 0 and rates[0, [0, 2]].sum() == 0  # in the interval the request fell in
