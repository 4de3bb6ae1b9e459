"""Warm pools (fleet.warm_pool): a replica added on a warm node skips provisioning and the image
pull, the slot refills after provisioning_s, and the nodes' time is billed as its own category
(`warm_pool`) that the bill from the pricing formulas includes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scenarios import scenario
from test_fleet_dynamics import (
    COLD,
    CONSTANT,
    assert_bill_adds_up,
    assert_nothing_lost,
    billed_by_hand_usd,
    requests_at,
)
from test_pools import cloud_pool, edge_pool, pooled

from simcost.cost.pricing import fleet_bill_usd, pools_bill_usd, warm_node_hour_usd
from simcost.cost.roster import WarmArrays
from simcost.errors import InputError
from simcost.perf.startup import RUNNING, STOPPED, cold_start, warm_start
from simcost.scenario.fleet import STOPPED_NODE_USD_PER_HOUR, ColdStartConfig
from simcost.simulation.simulation import Simulation

HPA = {"policy": "hpa", "target": 4, "max_replicas": 6}
STOPPED_RATE = 0.05  # $/node-hour in the pool (stopped), set by hand


def simulate(warm_pool=None, requests=None, duration_s=60.0, **fleet) -> Simulation:
    fleet = {"cold_start": COLD, **fleet}
    if warm_pool is not None:
        fleet["warm_pool"] = warm_pool
    return Simulation(scenario(perf=CONSTANT, duration_s=duration_s, fleet=fleet), requests=requests)


def run(warm_pool=None, requests=None, duration_s=60.0, **fleet):
    return simulate(warm_pool, requests, duration_s, **fleet).run()


def warm_by_hand_usd(res, state: str) -> tuple[float, float]:
    """(provisioning, in the pool) of every warm node from its timeline: on-demand while it
    provisions, its state's rate while in the pool."""
    w, od = res.bill.roster.warm, res.deployment.price_usd_per_hour
    rate = od if state == RUNNING else STOPPED_RATE
    prov = sum((min(s, g) - r) * od / 3600 for r, s, g in zip(w.requested_s, w.standby_s, w.gone_s))
    standby = sum((g - min(s, g)) * rate / 3600 for s, g in zip(w.standby_s, w.gone_s))
    return prov, standby


def test_warm_start_is_the_cold_start_less_provisioning_and_image_pull_and_running_skips_the_disk():
    sim = Simulation(scenario(perf=CONSTANT, fleet={"cold_start": COLD, "autoscaler": HPA}))
    pool, dep, cfg = sim.pools[0], sim.deployment, ColdStartConfig(**COLD)
    disk_s = dep.weight_bytes / 16e9
    link_s = dep.weight_bytes / dep.tensor_parallel / dep.device.host_link_bytes_per_s
    assert cold_start(cfg, pool).ready_s == pytest.approx(20.0 + 1.0 + max(disk_s, link_s) + 5.0)
    stopped, running = warm_start(cfg, pool, STOPPED), warm_start(cfg, pool, RUNNING)
    assert stopped.provisioned_s == running.provisioned_s == 0.0
    assert stopped.ready_s == pytest.approx(max(disk_s, link_s) + 5.0)
    assert running.ready_s == pytest.approx(link_s + 5.0)
    assert running.ready_s <= stopped.ready_s < cold_start(cfg, pool).ready_s


@pytest.mark.parametrize("state", [None, STOPPED, RUNNING])
def test_the_activators_replica_on_a_warm_node_is_ready_after_exactly_the_warm_start(state):
    """Scaled to zero, the next request waits for one replica: warm_start on a warm node, the
    full cold start without a pool; the taken slot is back in the pool provisioning_s later."""
    times = list(np.linspace(0, 5, 10)) + [400.0]
    kpa = {"policy": "kpa", "target": 4, "min_replicas": 0}
    sim = simulate(None if state is None else {"size": 1, "state": state, "stopped_usd_per_hour": STOPPED_RATE},
                   requests_at(times), duration_s=401.0, replicas=1, autoscaler=kpa)
    res = sim.run()
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    ra, t = res.bill.roster, res.table
    assert ra.requested_s[-1] == pytest.approx(400.0)
    cfg = ColdStartConfig(**COLD)
    phase = cold_start(cfg, res.pools[0]) if state is None else warm_start(cfg, res.pools[0], state)
    assert t.first_scheduled_s[-1] - t.arrival_s[-1] == pytest.approx(phase.ready_s)
    assert ra.provisioned_s[-1] == pytest.approx(400.0 + phase.provisioned_s)
    if state is None:
        assert "warm_pool" not in res.summary["fleet"] and "warm_pool" not in res.summary["cost"]["by_category"]
        return
    assert ra.warm_hit[-1]
    w = ra.warm
    taken = [i for i, why in enumerate(w.end) if why == "taken"]
    assert w.gone_s[taken[-1]] == pytest.approx(400.0)  # the node the last replica took
    refill = sim.fleet.roster.warm[int(np.flatnonzero(w.requested_s == 400.0)[0])]  # its timeline, uncut
    assert refill.standby_s == pytest.approx(400.0 + COLD["provisioning_s"])
    assert w.end.count("") == 1  # the pool is back to its size (its new node still provisioning at the end)
    summary = res.summary["fleet"]["warm_pool"]
    assert summary["hits"] == int(ra.warm_hit.sum()) == len(taken) >= 1
    assert summary["pools"] == [{"pool": 0, "size": 1, "state": state}]


@pytest.mark.parametrize("state", [STOPPED, RUNNING])
def test_an_idle_warm_pool_costs_size_x_seconds_x_its_rate_and_the_bill_adds_up(state):
    """One replica that never scales (max 1): three warm nodes provision from t = 0 (the fleet
    starts cold) and then wait to the end. Their cost is 3 x (provisioning_s x on-demand + the
    rest of the run x the pool rate), in the bill from the pricing formulas too."""
    res = run({"size": 3, "state": state, "stopped_usd_per_hour": STOPPED_RATE}, replicas=1,
              autoscaler={"policy": "hpa", "target": 4, "max_replicas": 1})
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    b, horizon_s, od = res.bill, res.horizon_s, res.deployment.price_usd_per_hour
    rate = od if state == RUNNING else STOPPED_RATE
    standby_usd = 3 * (horizon_s - COLD["provisioning_s"]) * rate / 3600
    provisioning_usd = 3 * COLD["provisioning_s"] * od / 3600
    assert b.warm_standby_usd == pytest.approx(standby_usd, rel=1e-12)
    assert b.warm_pool_usd == pytest.approx(standby_usd + provisioning_usd, rel=1e-12)
    assert res.summary["cost"]["by_category"]["warm_pool"] == b.warm_pool_usd
    assert b.total_usd == pytest.approx(billed_by_hand_usd(res) + b.warm_pool_usd, rel=1e-12)
    s = res.summary["fleet"]["warm_pool"]
    assert s["hits"] == s["misses"] == 0 and s["standby_node_hours"] == pytest.approx(3 * (horizon_s - 20.0) / 3600)


@pytest.mark.parametrize("unallocated", ["showback", "chargeback"])
@pytest.mark.parametrize("state", [STOPPED, RUNNING])
def test_under_load_hits_skip_the_cold_start_nothing_is_lost_and_every_dollar_is_accounted(state, unallocated):
    wp = {"size": 2, "state": state, "stopped_usd_per_hour": STOPPED_RATE}
    fleet = {"cold_start": COLD, "replicas": 1, "autoscaler": HPA, "warm_pool": wp}
    sim = Simulation(scenario(perf=CONSTANT, fleet=fleet, cost={"unallocated": unallocated}))
    res = sim.run()
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    b, ra = res.bill, res.bill.roster
    for node in sim.fleet.roster.warm[2:]:  # each refill joins the pool provisioning_s after its request
        assert node.standby_s - node.requested_s == pytest.approx(COLD["provisioning_s"])
    assert len(sim.fleet.roster.warm) == 2 + int(ra.warm_hit.sum())  # one refill per node taken
    s = res.summary["fleet"]["warm_pool"]
    assert s["hits"] >= 2 and s["hits"] == ra.warm_hit.sum()
    # the replicas the autoscaler added: hits first (the pool's two nodes), then misses until refills land
    added = ra.requested_s > 0
    assert s["hits"] + s["misses"] == added.sum()
    phase = warm_start(ColdStartConfig(**COLD), res.pools[0], state)
    cold = cold_start(ColdStartConfig(**COLD), res.pools[0])
    for r in np.flatnonzero(added):
        expect = phase if ra.warm_hit[r] else cold
        assert ra.ready_s[r] - ra.requested_s[r] == pytest.approx(expect.ready_s)
        mine = res.steps.step_replica == r
        assert (res.steps.step_start_s[mine] >= ra.ready_s[r] - 1e-9).all()
    assert not ra.spot.any()
    prov, standby = warm_by_hand_usd(res, state)
    assert b.warm_standby_usd == pytest.approx(standby, rel=1e-12)
    assert b.warm_pool_usd == pytest.approx(prov + standby, rel=1e-12)
    assert b.total_usd == pytest.approx(billed_by_hand_usd(res) + prov + standby, rel=1e-12)
    from_formulas_usd = fleet_bill_usd(sim.scenario.fleet.pricing, res.pools, res.horizon_s, b.energy, ra)
    assert from_formulas_usd == pytest.approx(b.total_usd, rel=1e-12)
    windows, usd = warm_node_hour_usd(ra.warm, 3)  # hour 0 (the run), and two more that must stay empty
    by_hour = windows.dense(usd)
    assert by_hour.sum() == pytest.approx(b.warm_pool_usd, rel=1e-12) and not by_hour[:, 1:].any()
    if unallocated == "chargeback":
        assert b.charged_usd.sum() == pytest.approx(b.total_usd, rel=1e-9)


def test_a_warm_pool_of_size_zero_changes_nothing_but_counts_misses():
    base = run(None, replicas=1, autoscaler=HPA)
    empty = run({"size": 0}, replicas=1, autoscaler=HPA)
    for key in ("first_token_s", "finish_s", "replica"):
        assert np.array_equal(getattr(base.table, key), getattr(empty.table, key), equal_nan=True)
    assert empty.bill.total_usd == base.bill.total_usd and empty.bill.warm_pool_usd == 0.0
    s = empty.summary["fleet"]["warm_pool"]
    assert s["hits"] == 0 and s["misses"] == len(base.bill.roster.pool) - 1 > 0


def test_spot_replicas_never_take_a_warm_node_but_on_demand_replacements_do():
    """Two spot replicas, both reclaimed at t = 30 and replaced on demand: the replacements may
    take warm nodes (one is in the pool: one hit, one miss); the spot ones never do."""
    spot = {"share": 1.0, "usd_per_device_hour": 1.0, "monthly_interruption": 0.0, "notice_s": 5.0,
            "replace_with": "on_demand"}
    sim = Simulation(scenario(perf=CONSTANT, fleet={"cold_start": COLD, "replicas": 2, "spot": spot,
                                                    "warm_pool": {"size": 1, "state": RUNNING}}))
    control = sim.controls[0]
    for replica in list(sim.fleet.replicas):
        sim.env.process(_reclaim_at(sim.env, control, replica, 30.0))
    res = sim.run()
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    ra = res.bill.roster
    assert ra.spot[:2].all() and not ra.warm_hit[:2].any() and ra.end[:2] == ["reclaim", "reclaim"]
    replacements = np.flatnonzero(np.isclose(ra.requested_s, 30.0))
    assert len(replacements) == 2 and not ra.spot[replacements].any()
    assert ra.warm_hit[replacements].tolist() == [True, False]
    s = res.summary["fleet"]["warm_pool"]
    assert (s["hits"], s["misses"]) == (1, 1)


def _reclaim_at(env, control, replica, at_s):
    yield env.timeout(at_s)
    yield from control.reclaim(replica)


def test_an_outage_loses_the_warm_nodes_and_they_are_requested_again_when_the_site_is_back():
    res = run({"size": 2, "state": STOPPED}, replicas=1,
              failures={"outages": [{"at_s": 20.0, "duration_s": 30.0}]})
    assert_nothing_lost(res)
    assert_bill_adds_up(res)
    w = res.bill.roster.warm
    assert w.end[:2] == ["outage", "outage"] and (w.gone_s[:2] == 20.0).all()
    assert (w.requested_s[2:] == 50.0).all() and len(w.pool) == 4
    assert (w.standby_s[2:] == 50.0 + COLD["provisioning_s"]).all()


def test_a_warm_pool_inside_a_pool_of_fleet_pools_is_billed_in_that_pools_bill():
    cloud = cloud_pool(replicas=1, autoscaler={"policy": "hpa", "metric": "concurrency", "target": 2.0,
                                               "min_replicas": 1, "max_replicas": 4},
                       cold_start={"provisioning_s": 10.0, "image_gb": 0.0, "engine_start_s": 2.0},
                       warm_pool={"size": 2, "state": "running"})
    res = Simulation(pooled([edge_pool(engine={"max_num_seqs": 4}), cloud], "edge_first", rate=4.0)).run()
    assert_nothing_lost(res)
    b, ra = res.bill, res.bill.roster
    assert b.request_usd.sum() + b.unallocated_usd == pytest.approx(b.total_usd, rel=1e-9)
    assert sum(res.summary["cost"]["by_category"].values()) == pytest.approx(b.total_usd, rel=1e-9)
    assert (ra.warm.pool == 1).all() and b.warm_pool_usd > 0
    assert ra.warm_hit.sum() >= 1 and (ra.pool[ra.warm_hit] == 1).all()
    without = pools_bill_usd(res.pools, res.horizon_s, b.energy, _no_warm(ra))
    assert b.total_usd - b.egress_usd - without == pytest.approx(b.warm_pool_usd, rel=1e-9)


def _no_warm(ra):
    return replace(ra, warm=WarmArrays.empty())


def test_warm_pool_input_errors():
    with pytest.raises(InputError, match=r"fleet.warm_pool.*needs a fleet that moves"):
        scenario(fleet={"warm_pool": {"size": 2}})
    with pytest.raises(InputError, match=r"fleet.warm_pool.state"):
        scenario(fleet={"autoscaler": HPA, "warm_pool": {"state": "hibernated"}})
    with pytest.raises(InputError, match=r"fleet.warm_pool.size"):
        scenario(fleet={"autoscaler": HPA, "warm_pool": {"size": -1}})
    with pytest.raises(InputError, match=r"fleet.pools\[0\].warm_pool"):
        pooled([cloud_pool(warm_pool={"size": 1})])


def test_the_default_stopped_rate_is_100_gb_of_gp3():
    assert STOPPED_NODE_USD_PER_HOUR == pytest.approx(100 * 0.08 / 730)
    assert math.isclose(STOPPED_NODE_USD_PER_HOUR, 0.01096, rel_tol=1e-3)


def test_focus_rows_and_the_dollar_per_hour_series_include_the_warm_nodes():
    from simcost.results.focus import focus_rows

    for state in ("stopped", "running"):
        res = _hpa_run_for_exports(state)
        assert res.bill.warm_pool_usd > 0
        rows = focus_rows(res)
        assert sum(r["BilledCost"] for r in rows) == pytest.approx(res.bill.total_usd, rel=1e-9)
        assert any(r["ResourceType"] == "Warm pool node" for r in rows)
        ts = res.timeseries
        integral = float((ts.usd_per_hour.sum(axis=0) * ts.width_s).sum() / 3600)
        assert integral == pytest.approx(res.bill.total_usd, rel=1e-9)  # minimum charges included


def _hpa_run_for_exports(state: str):
    wp = {"size": 2, "state": state, "stopped_usd_per_hour": STOPPED_RATE}
    return run(replicas=1, autoscaler=HPA, warm_pool=wp)
