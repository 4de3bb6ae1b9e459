"""Property tests: small fleets with faults (spot reclaims, node failures, outages, an
autoscaler, warm nodes, runs cut by drain_s) must lose and invent nothing, and every view of the
run must add up to the same bill."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import scenario

from simcost.metrics.latency import latencies, meets_slo, slo_limits
from simcost.results.focus import focus_rows
from simcost.simulation.simulation import Simulation
from simcost.units import S_PER_HOUR
from simcost.workload.request_table import COMPLETED, IN_FLIGHT, REJECTED

CONSTANT = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.002}
COLD = {"provisioning_s": 4.0, "image_gb": 1.0, "registry_gb_per_s": 1.0, "weights_gb_per_s": 16.0, "engine_start_s": 2.0}
PRICING = [{"model": "on_demand", "min_charge_s": 60.0},
           {"model": "savings_plan", "commitment_usd_per_hour": 5.0, "discount": 0.3}]


@st.composite
def faulty_fleets(draw):
    fleet: dict = {"replicas": draw(st.integers(1, 3)), "cold_start": COLD, "pricing": draw(st.sampled_from(PRICING))}
    if draw(st.booleans()):
        fleet["spot"] = {"share": draw(st.sampled_from([0.5, 1.0])), "usd_per_device_hour": 1.2,
                         "monthly_interruption": 0.99, "notice_s": 3.0}
    failures: dict = {}
    if draw(st.booleans()):
        failures.update(mtbf_h=draw(st.sampled_from([0.005, 0.02])), mttr_s=10.0)
    if draw(st.booleans()):
        failures["outages"] = [{"at_s": draw(st.floats(0.0, 30.0)), "duration_s": draw(st.floats(1.0, 20.0))}]
    if failures:
        fleet["failures"] = failures
    if draw(st.booleans()):
        fleet["autoscaler"] = {"policy": "hpa", "target": 3, "max_replicas": 4}
        if draw(st.booleans()):
            fleet["warm_pool"] = {"size": 1}
    rate_per_s = draw(st.floats(1.0, 12.0))
    return scenario(
        seed=draw(st.integers(0, 10_000)), perf=CONSTANT, duration_s=40.0, warmup_s=draw(st.sampled_from([0.0, 5.0])),
        drain_s=draw(st.sampled_from([None, 0.0, 5.0])), slo={"ttft_s": 1.0, "e2el_s": 6.0}, fleet=fleet,
        workload={"arrivals": {"process": "poisson", "rate_per_s": rate_per_s},
                  "input_tokens": {"dist": "uniform", "low": 50, "high": 1500},
                  "output_tokens": {"dist": "uniform", "low": 1, "high": 150}})


PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(faulty_fleets())
def test_every_request_and_token_is_accounted_for(scn):
    result = Simulation(scn, timeseries=False).run()
    t, s = result.table, result.summary
    status = t.status[:t.num_requests]
    assert np.isin(status, [COMPLETED, REJECTED, IN_FLIGHT]).all()
    r = s["requests"]
    assert r["completed"] + r["rejected"] + r["in_flight"] == r["arrived"] == t.num_requests
    assert (t.generated <= t.output_tokens).all()
    assert (t.generated[status == COMPLETED] == t.output_tokens[status == COMPLETED]).all()
    emitted = ~np.isnan(t.token_time_s[:t.token_offset[t.num_requests]])
    assert int(emitted.sum()) == int(t.generated.sum())  # every token made once, with its time


@PROPERTY
@given(faulty_fleets())
def test_attainment_is_bounded_by_the_completed_requests_within_their_slo(scn):
    result = Simulation(scn, timeseries=False).run()
    t, s = result.table, result.summary
    measured = t.arrival_s >= scn.warmup_s
    met = (t.status == COMPLETED) & meets_slo(slo_limits(scn, t.workload), latencies(t)) & measured
    o = s["slo_outcomes"]
    assert o["of"] == int(measured.sum())
    assert o["met"] + o["missed"] + o["open"] == o["of"]
    assert o["open"] <= s["requests"]["in_flight"]
    if o["of"]:
        assert s["slo_attainment"] <= met.sum() / measured.sum() + 1e-12
        assert s["slo_attainment"] <= o["attainment_upper_bound"]
    if s["meets_slo"]:
        assert s["requests"]["rejected"] == 0


@PROPERTY
@given(faulty_fleets())
def test_every_view_adds_up_to_the_bill(scn):
    result = Simulation(scn).run()
    b, s = result.bill, result.summary
    total = b.total_usd
    assert sum(s["cost"]["by_category"].values()) == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert b.request_usd.sum() + b.unallocated_usd == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert b.charged_usd.sum() + b.unallocated_left_usd == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert sum(row["BilledCost"] for row in focus_rows(result)) == pytest.approx(total, rel=1e-9, abs=1e-12)
    ts = result.timeseries
    assert float((ts.usd_per_hour * ts.width_s).sum()) / S_PER_HOUR == pytest.approx(total, rel=1e-9, abs=1e-12)
    assert s["cost"]["usd_per_hour"] * result.horizon_s / S_PER_HOUR == pytest.approx(total, rel=1e-9, abs=1e-12)
