"""Queue disciplines (fcfs, priority, shortest-job-first) and preemption by swap: orders the
waiting queue keeps, who gets preempted, and that swap never loses or recomputes a token while
charging exactly the modelled transfer time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scenarios import scenario

from simcost.engine.waiting import RunningBatch, WaitingQueue
from simcost.errors import InputError
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

# --- the waiting queue -----------------------------------------------------------------------


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40))
def test_keyed_queue_pops_in_key_order_whatever_the_push_kind(ops):
    keys = {rid: (cls, rid) for rid, (cls, _) in enumerate(ops)}
    q = WaitingQueue(key=keys.__getitem__)
    for rid, (_, preempted) in enumerate(ops):
        (q.push_preempted if preempted else q.push)(rid)
    popped = [q.pop() for _ in range(len(q))]
    assert popped == sorted(range(len(ops)), key=keys.__getitem__)


MUTATIONS = st.sampled_from(["append", "extend", "insert", "remove", "pop", "pop0", "clear", "sort", "reverse",
                             "setitem", "delitem", "iadd"])


@given(st.lists(st.tuples(MUTATIONS, st.integers(0, 50)), max_size=40))
def test_running_batch_ids_follow_every_change_and_old_arrays_stay(ops):
    """RunningBatch.ids() is the list as int64 after any sequence of changes; an array handed
    out earlier keeps the batch as it was then (nobody's copy changes under them)."""
    batch, handed = RunningBatch([3, 1]), []
    for op, value in ops:
        handed.append((batch.ids(), list(batch)))
        if op in ("remove", "pop", "pop0", "setitem", "delitem") and not batch:
            continue
        if op == "append":
            batch.append(value)
        elif op == "extend":
            batch.extend([value, value + 1])
        elif op == "insert":
            batch.insert(value % (len(batch) + 1), value)
        elif op == "remove":
            batch.remove(batch[value % len(batch)])
        elif op in ("pop", "pop0"):
            batch.pop() if op == "pop" else batch.pop(0)
        elif op == "clear":
            batch.clear()
        elif op in ("sort", "reverse"):
            getattr(batch, op)()
        elif op == "setitem":
            batch[value % len(batch)] = value
        elif op == "delitem":
            del batch[value % len(batch)]
        else:
            batch += [value]
        assert type(batch) is RunningBatch
        assert batch.ids().dtype == np.int64 and batch.ids().tolist() == list(batch)
    for ids, then in handed:
        assert ids.tolist() == then


def test_fcfs_queue_puts_preempted_requests_first():
    q = WaitingQueue()
    for rid in (1, 2, 3):
        q.push(rid)
    q.push_preempted(9)
    assert [q.pop() for _ in range(4)] == [9, 1, 2, 3]


# --- priority and SJF in the engine ----------------------------------------------------------

def _two_classes(queue: str):
    urgent = {"name": "urgent", "priority": 0, "arrivals": {"process": "poisson", "rate_per_s": 3.0},
              "input_tokens": {"dist": "uniform", "low": 200, "high": 1500},
              "output_tokens": {"dist": "uniform", "low": 50, "high": 300}}
    bulk = dict(urgent, name="bulk", priority=5)
    return scenario(workload={"mix": [urgent, bulk]}, duration_s=120.0,
                    engine={"queue": queue, "max_num_seqs": 8})


def test_priority_queue_serves_the_urgent_class_first():
    fcfs = Simulation(_two_classes("fcfs")).run().summary["by_workload"]
    prio = Simulation(_two_classes("priority")).run().summary["by_workload"]
    assert fcfs["urgent"]["ttft_s"]["mean"] > 1.0  # overloaded enough for order to matter
    assert prio["urgent"]["ttft_s"]["mean"] < 0.5 * fcfs["urgent"]["ttft_s"]["mean"]
    assert prio["bulk"]["ttft_s"]["mean"] > fcfs["bulk"]["ttft_s"]["mean"]


def _sjf_scenario(queue: str, sigma: float = 0.0):
    return scenario(workload={"arrivals": {"process": "poisson", "rate_per_s": 6.0},
                              "input_tokens": {"dist": "fixed", "value": 200},
                              "output_tokens": {"dist": "lognormal", "mean": 150, "sigma": 1.2}},
                    duration_s=120.0, engine={"queue": queue, "sjf_prediction_sigma": sigma, "max_num_seqs": 4})


def test_shortest_job_first_cuts_mean_latency_and_noise_erodes_it():
    def mean_e2el(scn):
        return Simulation(scn).run().summary["e2el_s"]["mean"]

    fcfs, oracle, noisy = (mean_e2el(_sjf_scenario("fcfs")), mean_e2el(_sjf_scenario("sjf")),
                           mean_e2el(_sjf_scenario("sjf", sigma=3.0)))
    assert oracle < 0.8 * fcfs
    assert oracle < noisy


def test_sjf_predictions_are_kept_and_match_the_truth_for_an_oracle():
    res = Simulation(_sjf_scenario("sjf")).run()
    t = res.table
    scheduled = ~np.isnan(t.predicted_output_tokens)
    assert scheduled.all()
    np.testing.assert_array_equal(t.predicted_output_tokens, t.output_tokens)


# --- swap preemption -------------------------------------------------------------------------

def _tight(preemption: str, **engine):
    return scenario(workload={"arrivals": {"process": "poisson", "rate_per_s": 6.0},
                              "input_tokens": {"dist": "uniform", "low": 100, "high": 600},
                              "output_tokens": {"dist": "uniform", "low": 100, "high": 400}},
                    duration_s=60.0, perf={"model": "constant", "prefill_s_per_token": 2e-5, "decode_step_s": 0.02,
                                           "step_overhead_s": 0.001},
                    # vLLM v0's engine: swap is a v0 feature (V1 recomputes), and these counts assume whole prompts
                    engine={"preset": "vllm-v0", "num_kv_blocks": 200, "block_size": 16, "max_num_seqs": 32,
                            "preemption": preemption, **engine})


def _modelled_step_s(steps, perf) -> float:
    """The constant model's time for every logged step (no transfers)."""
    total = 0.0
    for r in range(len(steps.record_prefill)):
        a, b = steps.record_step_offset[r], steps.record_step_offset[r + 1]
        if steps.record_prefill[r]:
            total += perf.step_overhead_s + perf.prefill_s_per_token * float(steps.step_tokens[a:b].sum())
        else:
            total += (b - a) * (perf.step_overhead_s + perf.decode_step_s)
    return total


def test_swap_loses_nothing_recomputes_nothing_and_charges_the_transfers():
    sim = Simulation(_tight("swap", host_link_gb_per_s=8.0))
    res = sim.run()
    t, steps = res.table, res.steps
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()
    assert t.num_swaps.sum() > 0 and (t.num_swaps == t.num_preemptions).all() and (t.swapped_tokens == 0).all()
    # no prompt token computed twice: prefill records hold exactly the prompts
    prefill_tokens = sum(int(steps.member_tokens[steps.record_member_offset[r]:steps.record_member_offset[r + 1]].sum())
                         for r in np.flatnonzero(steps.record_prefill))
    assert prefill_tokens == int(t.input_tokens.sum())
    # every swap moved its KV out and back; the steps took exactly that much longer than modelled
    transfer_s = sum(r.transfer_s_total for r in sim.fleet.replicas)
    assert transfer_s > 0
    assert float(steps.step_duration_s.sum()) - _modelled_step_s(steps, sim.scenario.perf) == pytest.approx(transfer_s, rel=1e-9)
    s_per_token = sim.fleet.replicas[0].swap.s_per_token
    assert s_per_token == pytest.approx(sim.deployment.kv_bytes_per_token / 8e9)


def test_recompute_prefills_again_where_swap_does_not():
    res = Simulation(_tight("recompute")).run()
    t, steps = res.table, res.steps
    assert t.num_preemptions.sum() > 0 and t.num_swaps.sum() == 0
    prefill_tokens = sum(int(steps.member_tokens[steps.record_member_offset[r]:steps.record_member_offset[r + 1]].sum())
                         for r in np.flatnonzero(steps.record_prefill))
    assert prefill_tokens > int(t.input_tokens.sum())


def test_swap_falls_back_to_recompute_when_the_host_space_is_full():
    res = Simulation(_tight("swap", swap_space_gb=0.0)).run()
    t = res.table
    assert t.num_preemptions.sum() > 0 and t.num_swaps.sum() == 0
    assert (t.status == COMPLETED).all()


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_swap_works_under_both_iteration_policies(policy):
    res = Simulation(_tight("swap", policy=policy)).run()
    t = res.table
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all() and t.num_swaps.sum() > 0


def test_swap_needs_a_host_link():
    with pytest.raises(InputError, match="host link"):
        Simulation(scenario(hardware={"device": "xeon-8480"}, engine={"preemption": "swap"}))
