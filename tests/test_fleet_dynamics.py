"""A fleet that moves (simcost.cluster.control): autoscaling in a run, scale to zero and activation,
spot reclaims, node failures and outages. Whatever happens, no request or token is lost, every
replica is billed exactly from its request to when it is gone, and the bill adds up."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import scenario

from simcost.errors import InputError
from simcost.perf.startup import cold_start
from simcost.scenario.fleet import ColdStartConfig
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED
from simcost.workload.requests import Requests

CONSTANT = {"model": "constant", "step_overhead_s": 0.01, "prefill_s_per_token": 1e-5, "decode_step_s": 0.02}
COLD = {"provisioning_s": 20.0, "image_gb": 1.0, "registry_gb_per_s": 1.0, "weights_gb_per_s": 16.0,
        "engine_start_s": 5.0}


def moving(**fleet) -> Simulation:
    return Simulation(scenario(perf=CONSTANT, fleet={"cold_start": COLD, **fleet}))


def requests_at(times_s, input_tokens=100, output_tokens=20) -> Requests:
    n = len(times_s)
    return Requests(np.asarray(times_s, dtype=float), np.full(n, input_tokens), np.full(n, output_tokens))


def assert_nothing_lost(res) -> None:
    t = res.table
    assert (t.status == COMPLETED).all()
    assert (t.generated == t.output_tokens).all()  # every token made, none twice
    times = t.token_time_s[:t.token_offset[t.num_requests]]
    assert not np.isnan(times).any()
    for rid in range(t.num_requests):  # a request's tokens come in order
        own = t.token_time_s[t.token_offset[rid]:t.token_offset[rid + 1]]
        assert (np.diff(own) >= 0).all()


def assert_bill_adds_up(res) -> None:
    b = res.bill
    categories = res.summary["cost"]["by_category"]
    assert sum(categories.values()) == pytest.approx(b.total_usd, rel=1e-9)
    assert b.request_usd.sum() + b.unallocated_usd == pytest.approx(b.total_usd, rel=1e-9)
    assert min(categories.values()) >= -1e-9


def billed_by_hand_usd(res, spot_usd_per_device_hour: float | None = None, min_charge_s: float = 60.0) -> float:
    """Each replica: max(seconds from request to gone, the minimum) x its hourly rate; nothing
    for one gone the instant it was requested (never provisioned)."""
    ra, dep = res.bill.roster, res.deployment
    rate = np.where(ra.spot, (spot_usd_per_device_hour or 0.0) * dep.num_devices, dep.price_usd_per_hour)
    alive_s = ra.gone_s - ra.requested_s
    return float((np.where(alive_s > 0, np.maximum(alive_s, min_charge_s), 0.0) * rate).sum() / 3600.0)


# --- autoscaling in a run ------------------------------------------------------------------

def test_hpa_grows_the_fleet_under_load_and_the_bill_covers_each_replica_from_request_to_gone():
    res = moving(replicas=1, autoscaler={"policy": "hpa", "target": 4, "max_replicas": 6}).run()
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    ra = res.bill.roster
    assert len(ra.pool) > 1 and (ra.requested_s[1:] > 0).all()  # replicas added during the run
    assert res.bill.total_usd == pytest.approx(billed_by_hand_usd(res), rel=1e-9)
    assert res.summary["cost"]["by_category"]["provisioning"] > 0
    # a new replica serves nothing before its cold start is over
    phase = cold_start(ColdStartConfig(**COLD), res.pools[0])
    for r in range(1, len(ra.pool)):
        mine = res.steps.step_replica == r
        assert (res.steps.step_start_s[mine] >= ra.requested_s[r] + phase.ready_s - 1e-9).all()


def test_scale_down_drains_a_replica_its_requests_finish_there_and_draining_is_its_own_cost():
    # a burst, then a trickle: the HPA scales up, then (after its 300 s window) down again
    times = np.concatenate([np.linspace(0, 30, 600), np.linspace(31, 700, 60)])
    sim = Simulation(scenario(perf=CONSTANT, duration_s=float(max(times)) + 1, fleet={"cold_start": COLD, "replicas": 1,
                                                                     "autoscaler": {"policy": "hpa", "target": 4}}),
                     requests=requests_at(times, output_tokens=200))
    res = sim.run()
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    ra = res.bill.roster
    drained = [r for r, why in enumerate(ra.end) if why == "scale_down"]
    assert drained
    assert res.table.num_retries.sum() == 0  # draining never moves a request that started
    for r in drained:
        assert ra.drain_s[r] <= ra.gone_s[r]
        late = (res.steps.step_replica == r) & (res.steps.step_start_s >= ra.gone_s[r] - 1e-9)
        assert not late.any()  # nothing runs on a replica once it is gone


def test_kpa_scales_to_zero_after_the_grace_and_the_next_request_waits_exactly_the_cold_start():
    # ten requests, then silence well past the stable window and the grace, then one request
    times = list(np.linspace(0, 5, 10)) + [400.0]
    sim = Simulation(scenario(perf=CONSTANT, duration_s=float(max(times)) + 1,
                              fleet={"cold_start": COLD, "replicas": 1,
                                     "autoscaler": {"policy": "kpa", "target": 4, "min_replicas": 0}}),
                     requests=requests_at(times))
    res = sim.run()
    assert_nothing_lost(res)
    ra, t = res.bill.roster, res.table
    assert all(why == "scale_down" for why in ra.end[:-1]) and (ra.gone_s[:-1] < 400.0).all()  # at zero first
    assert ra.requested_s[-1] == pytest.approx(400.0)  # the activator's replica, for the last request
    phase = cold_start(ColdStartConfig(**COLD), res.pools[0])
    assert t.first_scheduled_s[-1] - t.arrival_s[-1] == pytest.approx(phase.ready_s)
    assert_bill_adds_up(res)


def test_the_autoscalers_start_size_must_be_within_its_bounds():
    with pytest.raises(InputError, match="fleet.replicas"):
        moving(replicas=8, autoscaler={"policy": "hpa", "target": 4, "max_replicas": 4})


@pytest.mark.parametrize("pricing", [{"model": "reserved", "upfront_usd_per_device": 1.0,
                                      "recurring_usd_per_device_hour": 1.0, "term_years": 1.0},
                                     {"model": "owned", "capex_usd_per_device": 1.0, "usd_per_kwh": 0.1}])
def test_a_fleet_that_moves_cannot_be_reserved_or_owned_capacity(pricing):
    with pytest.raises(InputError, match="fleet.autoscaler"):
        moving(autoscaler={"policy": "hpa", "target": 4}, pricing=pricing)


# --- spot, failures, outages ----------------------------------------------------------------

def run_with_loss_at(at_s: float, kind: str, replicas: int = 2):
    fleet = {"replicas": replicas, "spot": {"share": 1.0, "usd_per_device_hour": 2.0, "monthly_interruption": 0.0,
                                            "notice_s": 5.0}}
    sim = moving(**fleet)
    victim = sim.fleet.replicas[0]

    def strike():
        yield sim.env.timeout(at_s)
        if kind == "reclaim":
            yield from sim.control.reclaim(victim)
        else:
            sim.control._lose(victim, "failure", 30.0)

    sim.env.process(strike())
    return sim.run()


@settings(max_examples=12, deadline=None)
@given(at_s=st.floats(0.0, 70.0), kind=st.sampled_from(["reclaim", "failure"]))
def test_a_reclaim_or_failure_at_any_moment_loses_no_request_or_token_and_its_cost_stops_there(at_s, kind):
    res = run_with_loss_at(at_s, kind)
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    ra = res.bill.roster
    # a spot notice drains a serving replica for notice_s; one still starting is let go at once
    ready_s = cold_start(ColdStartConfig(**COLD), res.pools[0]).ready_s
    notice_s = 5.0 if kind == "reclaim" and at_s >= ready_s else 0.0
    if at_s < res.horizon_s:
        # gone at the reclaim, or sooner if its last request ended within the notice
        assert ra.end[0] == kind and at_s - 1e-9 <= ra.gone_s[0] <= at_s + notice_s + 1e-9
        assert len(ra.pool) == 3  # replaced
    # each replica billed from request to gone at the spot price, nothing after
    assert res.bill.total_usd == pytest.approx(billed_by_hand_usd(res, 2.0), rel=1e-9)
    hourly = res.bill.hours.row_sums(res.bill.hour_usd) + res.bill.tariff.minimum_usd
    charged_s = max(ra.gone_s[0], 60.0) if ra.gone_s[0] > 0 else 0.0  # reclaimed as requested: never provisioned
    assert hourly[0] == pytest.approx(charged_s * 2.0 * res.deployment.num_devices / 3600, rel=1e-9)


def test_requests_on_a_lost_node_are_retried_and_counted():
    res = run_with_loss_at(45.0, "failure")  # both replicas serving by then
    assert res.table.num_retries.sum() > 0
    assert res.summary["fleet"]["requests_retried"] == int((res.table.num_retries > 0).sum())
    assert res.summary["fleet"]["ended"] == {"failure": 1}


def test_mixed_spot_and_on_demand_each_pay_their_own_price():
    res = moving(replicas=4, spot={"share": 0.5, "usd_per_device_hour": 1.5, "monthly_interruption": 0.0}).run()
    ra = res.bill.roster
    assert list(ra.spot) == [False, False, True, True]
    assert res.bill.total_usd == pytest.approx(billed_by_hand_usd(res, 1.5), rel=1e-9)
    assert_bill_adds_up(res)


def test_node_failures_at_a_short_mtbf_lose_nothing_and_replacements_serve_mttr_later():
    res = moving(replicas=2, failures={"mtbf_h": 0.01, "mttr_s": 45.0}).run()
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    ra = res.bill.roster
    failed = [r for r, why in enumerate(ra.end) if why == "failure"]
    assert failed and len(ra.pool) == 2 + len(failed)
    # replacements are requested at a failure and ready mttr_s later
    replacement_ready = ra.ready_s[2:] - ra.requested_s[2:]
    assert np.allclose(replacement_ready[ra.ready_s[2:] < ra.gone_s[2:]], 45.0)


def test_the_fleets_kept_views_equal_the_roster_and_gone_replicas_free_their_kv_tables():
    """Fleet.live()/present() are kept as replicas come and go (autoscaler ticks and samples would
    otherwise scan every replica the run ever had): they must equal the roster's definitions at the
    end, and a gone replica's prefix-cache tables are freed while its stats stay for the summary."""
    import math

    sim = Simulation(scenario(perf=CONSTANT, engine={"prefix_caching": True},
                              fleet={"cold_start": COLD, "replicas": 2, "failures": {"mtbf_h": 0.01, "mttr_s": 45.0}}))
    res = sim.run()
    assert_nothing_lost(res)
    fleet, lives = sim.fleet, sim.fleet.roster.lives
    gone = [r for r, life in zip(fleet.replicas, lives) if life.gone_s != math.inf]
    assert gone
    assert fleet.present() == [r for r, life in zip(fleet.replicas, lives) if life.gone_s == math.inf]
    assert fleet.live() == [r for r, life in zip(fleet.replicas, lives)
                            if life.gone_s == math.inf and life.drain_s == math.inf]
    for replica in gone:
        assert not hasattr(replica.reuse.pool, "_nodes")
        replica.reuse.pool.stats  # noqa: B018 - still readable
    assert res.summary["prefix_cache"] is not None


def test_an_outage_loses_every_replica_and_none_starts_before_it_ends():
    res = moving(replicas=2, failures={"outages": [{"at_s": 20.0, "duration_s": 30.0}]}).run()
    assert_nothing_lost(res)
    ra = res.bill.roster
    assert ra.end[:2] == ["outage", "outage"] and (ra.gone_s[:2] == 20.0).all()
    phase = cold_start(ColdStartConfig(**COLD), res.pools[0])
    assert (ra.ready_s[2:] == pytest.approx(20.0 + 30.0 + phase.ready_s))
    served = res.steps.step_start_s
    assert not ((served > 20.0) & (served < 50.0 + phase.ready_s)).any()


def test_redundancy_adds_k_replicas_to_a_static_fleet():
    res = Simulation(scenario(perf=CONSTANT, fleet={"replicas": 2, "redundancy": 1})).run()
    assert len(res.bill.roster.pool) == 3 and res.summary["replicas"] == 3


def test_timeseries_follow_the_roster():
    res = moving(replicas=1, autoscaler={"policy": "hpa", "target": 4, "max_replicas": 6}).run()
    ts, ra = res.timeseries, res.bill.roster
    for k in range(0, len(ts.t_s), 25):
        t = ts.t_s[k]
        billed = int(((ra.requested_s <= t) & (t < ra.gone_s)).sum())
        assert ts.replicas[0, k] == billed
        assert ts.ready[0, k] <= billed
    integral = float((ts.usd_per_hour.sum(axis=0) * ts.width_s).sum() / 3600)
    assert integral == pytest.approx(res.bill.total_usd, rel=1e-9)  # minimum charges included


def test_focus_export_and_the_demand_curve_follow_the_replicas_that_existed():
    from simcost.analysis.commitments import demand_curve
    from simcost.results.focus import focus_rows

    res = moving(replicas=2, autoscaler={"policy": "hpa", "target": 4, "max_replicas": 6},
                 spot={"share": 0.5, "usd_per_device_hour": 1.5, "monthly_interruption": 0.0}).run()
    rows = focus_rows(res)
    assert sum(r["BilledCost"] for r in rows) == pytest.approx(res.bill.total_usd, rel=1e-9)
    ra = res.bill.roster
    assert {r["ResourceId"] for r in rows} == {f"{res.scenario.name}/replica-{i}" for i in range(len(ra.pool))}
    assert {r["PricingCategory"] for r in rows if r["ResourceId"].endswith("replica-2")} == \
        {"Dynamic" if ra.spot[2] else "Standard"}
    demand = demand_curve(res, "provisioned")
    devices = res.deployment.num_devices
    assert demand[0] * res.horizon_s == pytest.approx(ra.alive_s.sum() * devices, rel=1e-9)  # one partial hour
