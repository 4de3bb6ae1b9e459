"""Cold start: replicas provision and load before they serve; requests wait for them; the two
phases are billed as their own cost categories and the bill still adds up."""

from __future__ import annotations

import pytest
from scenarios import scenario

from simcost.errors import InputError
from simcost.perf.startup import loading_s, start_phases
from simcost.scenario.fleet import ColdStartConfig
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

COLD = {"provisioning_s": 40.0, "image_gb": 5.0, "registry_gb_per_s": 1.0, "weights_gb_per_s": 4.0,
        "engine_start_s": 10.0}


def test_loading_time_is_image_plus_slowest_weight_path_plus_engine_start():
    sim = Simulation(scenario(fleet={"cold_start": COLD}))
    dep = sim.deployment
    weights_s = max(dep.weight_bytes / 4e9, dep.weight_bytes / dep.device.host_link_bytes_per_s)
    assert loading_s(ColdStartConfig(**COLD), sim.pools[0]) == pytest.approx(5.0 + weights_s + 10.0)
    assert start_phases(None, sim.pools)[0].ready_s == 0.0


def test_no_request_is_served_before_its_replica_is_ready():
    res = Simulation(scenario(fleet={"replicas": 2, "cold_start": COLD})).run()
    ready_s = start_phases(ColdStartConfig(**COLD), res.pools)[0].ready_s
    t = res.table
    assert (t.status == COMPLETED).all()
    assert t.first_scheduled_s.min() == pytest.approx(ready_s)
    assert res.steps.step_start_s.min() >= ready_s
    early = t.arrival_s < ready_s
    assert early.any() and (t.first_token_s[early] > ready_s).all()


def test_start_phases_are_billed_as_their_own_categories():
    warm = Simulation(scenario(fleet={"replicas": 2})).run()
    cold = Simulation(scenario(fleet={"replicas": 2, "cold_start": COLD})).run()
    phase = start_phases(ColdStartConfig(**COLD), cold.pools)[0]
    per_s = cold.deployment.price_usd_per_hour / 3600
    cat = cold.summary["cost"]["by_category"]
    assert cat["provisioning"] == pytest.approx(2 * phase.provisioned_s * per_s, rel=1e-9)
    assert cat["loading"] == pytest.approx(2 * phase.loading_s * per_s, rel=1e-9)
    assert warm.summary["cost"]["by_category"]["provisioning"] == 0.0
    b = cold.bill
    assert sum(cat.values()) == pytest.approx(b.total_usd, rel=1e-9)
    assert b.busy_usd + b.unallocated_usd == pytest.approx(b.total_usd, rel=1e-9)
    assert cold.summary["ttft_s"]["p99"] > warm.summary["ttft_s"]["p99"]


@pytest.mark.parametrize("engine", [{"policy": "chunked"}, {"policy": "static", "max_num_seqs": 8}])
def test_cold_start_works_for_every_engine(engine):
    res = Simulation(scenario(fleet={"cold_start": COLD}, engine=engine)).run()
    assert (res.table.status == COMPLETED).all()
    assert res.steps.step_start_s.min() >= COLD["provisioning_s"]


def test_bad_cold_start_names_the_key():
    with pytest.raises(InputError) as exc:
        scenario(fleet={"cold_start": {"registry_gb_per_s": 0}})
    assert exc.value.where == "fleet.cold_start.registry_gb_per_s"
