"""Disaggregated prefill and decode (Splitwise, DistServe): KV moves at link bandwidth, the two
pools do only their own phase, nothing is lost, and both pools are paid for."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.errors import InputError
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

CONSTANT = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.002}


def workload(rate=8.0):
    return {"arrivals": {"process": "poisson", "rate_per_s": rate},
            "input_tokens": {"dist": "uniform", "low": 200, "high": 3000},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 300}}


def disaggregated(prefill=1, decode=2, link=10.0, policy="prefill_first", rate=8.0, fleet_extra=None, engine=None,
                  **extra):
    fleet_extra = dict(fleet_extra or {})
    pricing = fleet_extra.pop("pricing", None)
    fleet = {"router": "join_shortest_queue",
             "disaggregation": {"prefill_replicas": prefill, "decode_replicas": decode, "kv_link_gb_per_s": link,
                                **fleet_extra}}
    if pricing:
        fleet["pricing"] = pricing
    return scenario(fleet=fleet, engine={"policy": policy, **(engine or {})}, workload=workload(rate), **extra)


def test_kv_transfer_takes_bytes_over_bandwidth():
    """Alone in the system, a request's second token comes exactly one KV transfer plus one
    decode step after its first (constant step model; tensor parallel 2 halves the transfer)."""
    scn = disaggregated(rate=0.02, duration_s=2000.0, perf=CONSTANT, hardware={"device": "h100-sxm", "tensor_parallel": 2})
    sim = Simulation(scn)
    t = sim.run().table
    alone = np.flatnonzero((t.output_tokens > 1) & (np.diff(np.r_[t.arrival_s, np.inf]) > 50)
                           & (np.diff(np.r_[-np.inf, t.arrival_s]) > 50))
    assert len(alone) >= 5
    transfer_s = t.input_tokens[alone] * sim.deployment.kv_bytes_per_token / (10e9 * 2)
    second_s = t.token_time_s[t.token_offset[alone] + 1]
    np.testing.assert_allclose(second_s - t.first_token_s[alone], transfer_s + CONSTANT["decode_step_s"]
                               + CONSTANT["step_overhead_s"], rtol=1e-9)


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_pools_do_their_own_phase_and_lose_nothing(policy):
    res = Simulation(disaggregated(policy=policy)).run()
    t, steps = res.table, res.steps
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()
    assert (t.remote_kv_tokens == 0).all() and (t.kv_blocks == 0).all()
    record_replica = steps.step_replica[steps.record_step_offset[:-1]]
    prefill_pool = record_replica < 1
    assert steps.record_prefill[prefill_pool].all()  # the prefill replica never decodes
    assert t.num_preemptions.sum() > 0 or not steps.record_prefill[~prefill_pool].any()  # decode pool: only recomputes
    # every request's first token is from the prefill pool, the rest from the decode pool
    assert set(np.unique(t.replica[t.output_tokens > 1])) <= {1, 2}


def test_both_pools_are_paid_for():
    res = Simulation(disaggregated(prefill=2, decode=3)).run()
    s, bill = res.summary, res.bill
    assert s["replicas"] == 5 and len(bill.replica_busy_s) == 5
    price = res.deployment.price_usd_per_hour
    assert s["cost"]["usd_per_hour"] == pytest.approx(5 * price)
    assert bill.total_usd == pytest.approx(5 * price * res.horizon_s / 3600, rel=1e-12)
    assert bill.busy_usd + bill.unallocated_usd == pytest.approx(bill.total_usd, rel=1e-9)
    assert (bill.replica_busy_s > 0).all()


def test_disaggregation_removes_prefill_interference_from_decoding():
    """The point of splitting: decode steps never wait behind whole prompts (vLLM v0's scheduler on
    both sides), so p99 TPOT drops."""
    shared = scenario(fleet={"replicas": 3, "router": "join_shortest_queue"},
                      workload=workload(), engine={"preset": "vllm-v0"})
    split = disaggregated(prefill=1, decode=2, engine={"preset": "vllm-v0"})
    assert Simulation(split).run().summary["tpot_s"]["p99"] < Simulation(shared).run().summary["tpot_s"]["p99"]


@pytest.mark.parametrize("fleet, engine, where", [
    ({"replicas": 3, "disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}}, {}, "fleet.replicas"),
    ({"router": "shared_queue", "disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}}, {}, "fleet.router"),
    ({"disaggregation": {"prefill_replicas": 1, "decode_replicas": 1}}, {"policy": "static"}, "fleet.disaggregation"),
])
def test_bad_disaggregation_names_the_key(fleet, engine, where):
    with pytest.raises(InputError) as exc:
        scenario(fleet=fleet, engine=engine)
    assert exc.value.where == where


def test_pools_of_different_devices_are_each_priced_and_timed_as_themselves():
    """Splitwise's idea: prompts on the fast GPU, tokens on a cheaper one (here H100 and L40S).
    Each pool is billed at its own catalog price, the decode pool's KV capacity is the L40S's,
    and the bill still adds up."""
    scn = disaggregated(prefill=1, decode=2, fleet_extra={"decode_hardware": {"device": "l40s"}},
                        engine={"max_model_len": 32768})
    sim = Simulation(scn)
    res = sim.run()
    prefill, decode = sim.pools
    assert (prefill.deployment.device.key, decode.deployment.device.key) == ("h100-sxm", "l40s")
    assert decode.deployment.num_kv_blocks < prefill.deployment.num_kv_blocks
    assert [r.pool.num_blocks for r in sim.fleet.replicas] == [prefill.deployment.num_kv_blocks] + [decode.deployment.num_kv_blocks] * 2
    usd_per_hour = prefill.deployment.price_usd_per_hour + 2 * decode.deployment.price_usd_per_hour
    assert res.summary["cost"]["usd_per_hour"] == pytest.approx(usd_per_hour)
    assert res.bill.total_usd == pytest.approx(usd_per_hour * res.horizon_s / 3600, rel=1e-12)
    assert res.bill.busy_usd + res.bill.unallocated_usd == pytest.approx(res.bill.total_usd, rel=1e-9)
    assert res.summary["device"] == "h100-sxm+l40s"
    assert not np.array_equal(sim.fleet.replicas[0].params, sim.fleet.replicas[1].params)
    t = res.table
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()


def test_pools_of_different_devices_refuse_a_single_price():
    with pytest.raises(InputError) as exc:
        disaggregated(fleet_extra={"decode_hardware": {"device": "a100-80gb"}, "pricing": {"model": "reserved",
                      "upfront_usd_per_device": 1, "recurring_usd_per_device_hour": 1, "term_years": 1}})
    assert exc.value.where == "fleet.pricing.model"
    with pytest.raises(InputError) as exc:
        Simulation(disaggregated(fleet_extra={"decode_hardware": {"device": "h101"}}))
    assert exc.value.where == "fleet.disaggregation.decode_hardware.device"
