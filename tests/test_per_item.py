"""Per-item models (serving: per_item; BERT-base, ResNet-50) on the request-level batcher: a batch
is one forward pass over its members' items, timed by the roofline of simcost.perf.step_model's
per_item_params, with no KV cache; TTFT = E2EL = the batch's end - arrival."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario
from test_conservation import test_bill_adds_up as check_bill_adds_up
from test_engine import check_request_invariants

from simcost.catalog.specs import get_device, get_model
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.perf.step_model import per_item_params, step_params
from simcost.perf.step_reference import step_time_s_py
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED, REJECTED
from simcost.workload.requests import Requests

EPS = 1e-12
GRAVITON_USD_PER_HOUR = 0.29  # the catalog has no Graviton price; any price will do for these tests
ONE_IMAGE = {"kind": "image", "per_request": {"dist": "fixed", "value": 1}, "flops_per_item": 0}
ONE = {"dist": "fixed", "value": 1}


def resnet_on_graviton(engine: dict, rate_per_s: float = 50.0, items: dict = ONE_IMAGE, replicas: int = 1, **extra):
    workload = {"arrivals": {"process": "poisson", "rate_per_s": rate_per_s}, "input_tokens": ONE,
                "output_tokens": ONE, "items": items}
    return scenario(model={"name": "resnet-50"}, hardware={"device": "graviton3"}, engine=engine, workload=workload,
                    fleet={"price_usd_per_device_hour": GRAVITON_USD_PER_HOUR, "replicas": replicas}, **extra)


def batch_s(num_images: int) -> float:
    """ResNet-50 (fp32) on one Graviton3, by hand from the two catalogs: the roofline of
    num_images x 2 x 4.089 G multiply-adds against the fp32 weights read once, plus the step overhead."""
    g, m = get_device("graviton3"), get_model("resnet-50")
    compute_s = num_images * m.flops_per_item / (g.peak_flops["fp32"] * g.mfu)
    memory_s = m.num_params * 4 / (g.mem_bw_bytes_per_s * g.mbu)
    return max(compute_s, memory_s) + g.step_overhead_s


def images(arrival_s, items) -> Requests:
    return Requests(arrival_s=np.asarray(arrival_s, dtype=float), input_tokens=np.ones(len(items), dtype=np.int64),
                    output_tokens=np.ones(len(items), dtype=np.int64), items=np.asarray(items, dtype=np.int64))


def run(scn, reqs=None):
    return Simulation(scn, requests=reqs).run()


# --- one batch, by hand ------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 4, 32])
def test_a_batch_of_k_images_on_graviton3_takes_the_roofline_time(k):
    """k requests of one image at t=0 leave as one static batch of k: each finishes at exactly
    the hand roofline time of k images, its first (only) token then too."""
    scn = resnet_on_graviton({"policy": "static", "max_num_seqs": k, "batch_timeout_s": 1.0})
    res = run(scn, images(np.zeros(k), np.ones(k)))
    t = res.table
    assert (t.status == COMPLETED).all()
    np.testing.assert_allclose(t.finish_s, batch_s(k), rtol=EPS)
    np.testing.assert_array_equal(t.first_token_s, t.finish_s)  # TTFT = E2EL
    assert res.steps.step_tokens.tolist() == [k]  # one forward pass of k items, nothing else
    # compute-bound from one image: the catalog's numbers, not a constant the test shares with the code
    assert batch_s(1) - 0.005 == pytest.approx(8.178e9 / (5.3248e12 * 0.35), rel=EPS)


def test_items_of_one_request_are_one_batch_and_weigh_its_cost():
    """One request of 6 images and one of 2 in the same batch: 8 items timed together; the
    batch's cost is split 6:2 (members weigh by their items)."""
    scn = resnet_on_graviton({"policy": "static", "max_num_seqs": 2, "max_num_batched_tokens": 8,
                              "batch_timeout_s": 1.0})
    res = run(scn, images([0.0, 0.0], [6, 2]))
    np.testing.assert_allclose(res.table.finish_s, batch_s(8), rtol=EPS)
    assert res.table.input_tokens.tolist() == [6, 2]  # a per-item request's "prompt" is its items
    assert res.bill.request_usd[0] == pytest.approx(3 * res.bill.request_usd[1], rel=1e-9)
    assert res.summary["per_item"]["items_completed"] == 8


def test_step_params_of_a_per_item_model_are_the_per_item_roofline():
    scn = resnet_on_graviton({"policy": "dynamic"})
    p = step_params(scn, plan_deployment(scn))
    for k in (1, 7, 64):
        assert step_time_s_py(p, k, 0, 0, 0, k) == pytest.approx(batch_s(k), rel=EPS)
    # the workload's bytes_per_item (a 224x224x3 fp32 image) is what each item moves besides the weights
    image = {**ONE_IMAGE, "bytes_per_item": 224 * 224 * 3 * 4}
    scn = resnet_on_graviton({"policy": "dynamic"}, items=image)
    dep = plan_deployment(scn)
    np.testing.assert_array_equal(step_params(scn, dep), per_item_params(scn, dep, 224 * 224 * 3 * 4))


def test_per_item_batches_pay_no_prefill_request_cost():
    """prefill_request_s prices token engines' per-prompt work; a batch of items stays the roofline
    of its items, however many requests they come from, even with the factor set."""
    engine = {"policy": "static", "max_num_seqs": 2, "max_num_batched_tokens": 8, "batch_timeout_s": 1.0}
    scn = resnet_on_graviton(engine, perf={"prefill_request_s": 0.05})
    p = step_params(scn, plan_deployment(scn))
    assert step_time_s_py(p, 8, 0, 0, 0, 2) == step_time_s_py(p, 8, 0, 0, 0, 0)
    res = run(scn, images([0.0, 0.0], [6, 2]))
    np.testing.assert_allclose(res.table.finish_s, batch_s(8), rtol=EPS)


# --- dynamic batching, by hand -----------------------------------------------------------------

def test_dynamic_batching_of_images_by_hand():
    """preferred_batch_sizes [2, 4], max_num_seqs 4, at most 8 images a batch, max_queue_delay 10 ms.
    A (t=0, 1 image) waits; B (2 ms) makes 2, a preferred size: [A, B] leaves at 2 ms.
    C (3 ms, 2 images) and D (4 ms) wait through it; at its end they are 2 requests: [C, D], 3 images.
    E (100 ms) is alone: it leaves when it has waited 10 ms, at 110 ms.
    F (200 ms, 5 images) waits; G (200.1 ms, 4 images) would make 9 images: F leaves alone at once
    (waiting cannot make its batch larger); G, alone and already 10 ms old when F ends, follows.
    H (300 ms, 9 images) can never fit a batch: rejected, as Triton rejects a request over its
    max batch size."""
    scn = resnet_on_graviton({"policy": "dynamic", "max_num_seqs": 4, "preferred_batch_sizes": [2, 4],
                              "max_queue_delay_s": 0.010, "max_num_batched_tokens": 8})
    res = run(scn, images([0.0, 0.002, 0.003, 0.004, 0.100, 0.200, 0.2001, 0.300], [1, 1, 2, 1, 1, 5, 4, 9]))
    t = res.table
    ab = 0.002 + batch_s(2)
    cd = ab + batch_s(3)
    e = 0.110 + batch_s(1)
    f = 0.2001 + batch_s(5)
    g = f + batch_s(4)
    assert f > 0.2101  # G's delay is over when F ends: it leaves at once
    np.testing.assert_allclose(t.finish_s[:7], [ab, ab, cd, cd, e, f, g], rtol=EPS)
    np.testing.assert_allclose(t.first_scheduled_s[:7], [0.002, 0.002, ab, ab, 0.110, 0.2001, f], rtol=EPS)
    assert t.status[7] == REJECTED and res.summary["requests"]["rejected_by_reason"] == {"exceeds_batch_tokens": 1}
    assert res.steps.step_tokens.tolist() == [2, 3, 1, 5, 4]


# --- queueing: saturation ----------------------------------------------------------------------

def test_a_backlog_is_served_in_full_batches_at_max_batch_over_batch_time():
    """400 one-image requests within 0.1 s (4,000/s, 20x what the replica serves) on batches of 8:
    the first batch leaves with the 8th arrival; from then on the queue never empties, so 50 full
    batches run back to back: the last ends 50 T(8) later, a throughput of 8 / T(8)."""
    rng = np.random.default_rng(3)
    arrival_s = np.sort(rng.uniform(0.0, 0.1, 400))
    scn = resnet_on_graviton({"policy": "dynamic", "max_num_seqs": 8, "max_queue_delay_s": 1.0})
    res = run(scn, images(arrival_s, np.ones(400)))
    assert res.steps.step_tokens.tolist() == [8] * 50
    assert res.table.finish_s.max() == pytest.approx(arrival_s[7] + 50 * batch_s(8), rel=1e-12)
    busy_s = float((res.steps.step_end_s - res.steps.step_start_s).sum())
    assert busy_s == pytest.approx(res.table.finish_s.max() - arrival_s[7], rel=1e-12)  # never idle once started


def test_poisson_overload_saturates_at_max_batch_over_batch_time():
    """Poisson arrivals at 1.5x the capacity 8 / T(8): the replica is busy all the time and
    completes 8 / T(8) images per second (within 1 %); the queue grows at the rest."""
    capacity_per_s = 8 / batch_s(8)
    scn = resnet_on_graviton({"policy": "dynamic", "max_num_seqs": 8, "max_queue_delay_s": 0.05},
                             rate_per_s=1.5 * capacity_per_s, duration_s=60.0, warmup_s=0.0, drain_s=0.0)
    res = run(scn)
    t = res.table
    done = t.status == COMPLETED
    assert res.summary["utilization"] > 0.99
    served_per_s = done.sum() / 60.0
    assert served_per_s == pytest.approx(capacity_per_s, rel=0.01)
    assert (t.status != COMPLETED).sum() > 0.25 * len(t.status)  # the excess 1/3 is still queued


# --- conservation ------------------------------------------------------------------------------

def test_every_request_is_served_once_and_the_bill_adds_up():
    items = {**ONE_IMAGE, "per_request": {"dist": "uniform", "low": 1, "high": 4}}
    scn = resnet_on_graviton({"policy": "dynamic", "max_num_seqs": 8, "preferred_batch_sizes": [4, 8],
                              "max_queue_delay_s": 0.02}, rate_per_s=40.0, items=items)
    res = run(scn)
    t, s = res.table, res.steps
    assert (t.status == COMPLETED).all()
    check_request_invariants(res)
    check_bill_adds_up(res)
    np.testing.assert_array_equal(t.first_token_s, t.finish_s)
    assert (t.items >= 1).all() and (t.items <= 4).all() and len(np.unique(t.items)) == 4
    np.testing.assert_array_equal(t.input_tokens, t.items)
    # every request in exactly one batch, with its items; batch sizes are the members' items
    assert sorted(s.member_request.tolist()) == list(range(len(t.items)))
    np.testing.assert_array_equal(s.member_tokens, t.items[s.member_request])
    assert int(s.step_tokens.sum()) == int(t.items.sum())
    # requests and images within each batch's limits, and each batch's time the roofline of its items
    sizes = np.diff(s.record_member_offset)
    assert sizes.max() <= 8 and s.step_tokens.max() <= 8  # max_num_batched_tokens unset: max_num_seqs images
    np.testing.assert_allclose(s.step_end_s - s.step_start_s, [batch_s(k) for k in s.step_tokens], rtol=1e-9)
    per = res.summary["per_item"]
    assert per["items_completed"] == int(t.items.sum())
    assert per["usd_per_1m_items"] == pytest.approx(res.bill.total_usd / t.items.sum() * 1e6, rel=1e-12)


def test_bert_base_serves_embeddings_on_graviton4_in_fp32():
    workload = {"clients": {"users": 4, "think_time": {"dist": "exponential", "mean_s": 0.5}},
                "input_tokens": ONE, "output_tokens": ONE,
                "items": {"kind": "sequence", "per_request": {"dist": "uniform", "low": 1, "high": 16},
                          "flops_per_item": 0}}
    scn = scenario(model={"name": "bert-base"}, hardware={"device": "graviton4"},
                   engine={"policy": "dynamic", "max_num_seqs": 4, "max_num_batched_tokens": 64,
                           "max_queue_delay_s": 0.01},
                   workload=workload, fleet={"price_usd_per_device_hour": 0.4})
    res = run(scn)
    t = res.table
    assert res.deployment.compute_format == "fp32" and (t.status == COMPLETED).all()
    assert t.num_requests > 4  # closed-loop requests created during the run
    np.testing.assert_array_equal(t.input_tokens, t.items)  # those too carry their items as the prompt
    check_bill_adds_up(res)


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["chunked", "prefill_first"])
def test_a_token_level_policy_is_refused_naming_engine_policy(policy):
    with pytest.raises(InputError, match=rf"^engine\.policy: {policy} .*resnet-50 is served per item; "
                                         r"use one_at_a_time, static or dynamic"):
        Simulation(resnet_on_graviton({"policy": policy}))


def test_fp32_checkpoint_on_a_device_without_fp32_names_the_format_to_set():
    scn = scenario(model={"name": "resnet-50"}, hardware={"device": "jetson-orin-nano-super"})
    with pytest.raises(InputError, match=r"^model\.weight_format: fp32 .*resnet-50's checkpoint is fp32; "
                                         r"set model\.weight_format: fp16 "):
        plan_deployment(scn)
    dep = plan_deployment(scenario(model={"name": "resnet-50", "weight_format": "fp16"},
                                   hardware={"device": "jetson-orin-nano-super"},
                                   fleet={"site": {"provider": "purchase", "region": "any"}}))
    assert dep.compute_format == "fp16" and dep.weight_bytes == 25_557_032 * 2


@pytest.mark.parametrize("change, match", [
    ({"workload.output_tokens": {"dist": "fixed", "value": 4}}, r"^workload\.output_tokens: .*one result"),
    ({"workload.input_tokens": {"dist": "fixed", "value": 128}}, r"^workload\.input_tokens: .*items\.per_request"),
    ({"workload.items": {**ONE_IMAGE, "flops_per_item": 8e9}}, r"^workload\.items\.flops_per_item: .*model catalog"),
    ({"workload.items": {**ONE_IMAGE, "prompt_tokens_per_item": 576}}, r"^workload\.items\.prompt_tokens_per_item"),
    ({"perf": {"model": "constant", "prefill_s_per_token": 0.01}}, r"^perf\.model: constant"),
    ({"fleet.autoscaler": {"policy": "hpa", "metric": "kv_cache", "target": 0.5}},
     r"^fleet\.autoscaler\.metric: kv_cache, but resnet-50 is served per item"),
])
def test_per_item_workload_mistakes_are_refused_by_key(change, match):
    raw = to_dict(resnet_on_graviton({"policy": "dynamic"}))
    for key, value in change.items():
        section, _, name = key.partition(".")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    with pytest.raises(InputError, match=match):
        Simulation(scenario_from_dict(raw))


# --- a fleet that moves: request-level replicas drained and lost ------------------------------

def kill_at(sim, at_s: float, replica: int):
    def lose(env):
        yield env.timeout(at_s)
        sim.fleet.kill(sim.fleet.replicas[replica], "failure")
    sim.env.process(lose(sim.env))


def test_a_replica_lost_mid_batch_hands_its_requests_to_another_whole():
    """Two replicas, round robin, static batches of 2 with no wait: A, B (t=0) go to replicas 0
    and 1, C, D (t=1 ms) queue behind them. Replica 0 is lost at 5 ms, in A's batch: A and C are
    retried on replica 1, whose B ends at T(1) and then runs [D, A] (FIFO: D was there first),
    then [C]. Nothing is lost, the lost batch is never logged, and every request is billed."""
    scn = resnet_on_graviton({"policy": "static", "max_num_seqs": 2}, replicas=2)
    sim = Simulation(scn, requests=images([0.0, 0.0, 0.001, 0.001], [1, 1, 1, 1]))
    kill_at(sim, 0.005, 0)
    res = sim.run()
    t = res.table
    b = batch_s(1)
    np.testing.assert_allclose(t.finish_s, [b + batch_s(2), b, b + batch_s(2) + batch_s(1), b + batch_s(2)], rtol=EPS)
    assert t.num_retries.tolist() == [1, 0, 1, 0] and (t.replica == 1).all()
    assert res.steps.step_replica.tolist() == [1, 1, 1]  # replica 0's batch was lost with it
    check_request_invariants(res)
    assert (res.bill.request_usd > 0).all()


def test_token_requests_lost_mid_decode_restart_on_a_request_level_replica():
    """The same on a token model: a batch lost half way through its decode starts over on the
    other replica, every output token emitted (again) and timed, no request lost."""
    scn = scenario(engine={"policy": "static", "max_num_seqs": 4}, fleet={"replicas": 2},
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 4.0},
                             "input_tokens": {"dist": "fixed", "value": 200},
                             "output_tokens": {"dist": "fixed", "value": 400}}, duration_s=5.0, warmup_s=0.0)
    sim = Simulation(scn)
    kill_at(sim, 2.0, 0)
    res = sim.run()
    t = res.table
    assert (t.status == COMPLETED).all() and t.num_retries.sum() > 0
    assert (t.replica[t.num_retries > 0] == 1).all()
    check_request_invariants(res)


def test_draining_a_request_level_replica_moves_its_queue_and_finishes_its_batch():
    scn = resnet_on_graviton({"policy": "static", "max_num_seqs": 1}, replicas=2)
    sim = Simulation(scn, requests=images([0.0, 0.0, 0.001, 0.001], [1, 1, 1, 1]))

    def drain(env):
        yield env.timeout(0.002)
        sim.fleet.drain(sim.fleet.replicas[0])
    sim.env.process(drain(sim.env))
    res = sim.run()
    t = res.table
    b = batch_s(1)
    # A finishes where it runs; C leaves replica 0's queue for replica 1, behind D
    np.testing.assert_allclose(t.finish_s, [b, b, 3 * b, 2 * b], rtol=EPS)
    assert t.replica.tolist() == [0, 1, 1, 1] and t.num_retries.sum() == 0
    assert sim.fleet.roster.lives[0].gone_s == pytest.approx(b, rel=EPS)
