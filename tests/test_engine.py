"""The replica engine: continuous batching limits, KV accounting, preemption, and the exactness
of multi-step decode spans against a plain step-by-step loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import scenario

from simcost.engine.kv.blocks import BlockPool
from simcost.results.writer import format_summary
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED, IN_FLIGHT, REJECTED


def run(scn, **kw):
    sim = Simulation(scn, **kw)
    return sim, sim.run()


def tight_kv(policy="prefill_first", **extra):
    """A pool far too small for the load, so decode runs out of blocks and preempts."""
    return scenario(engine={"num_kv_blocks": 120, "block_size": 16, "max_num_seqs": 32, "policy": policy}, **extra)


def check_request_invariants(res):
    t = res.table
    done = t.status == COMPLETED
    assert (t.generated[done] == t.output_tokens[done]).all()
    assert (t.generated <= t.output_tokens).all()
    for i in np.flatnonzero(done):
        times = t.token_time_s[t.token_offset[i]:t.token_offset[i + 1]]
        assert not np.isnan(times).any()
        assert (np.diff(times) >= 0).all()
        assert times[0] == t.first_token_s[i] and times[-1] == t.finish_s[i]
        assert t.first_token_s[i] > t.arrival_s[i]
    # tokens never produced are never timestamped (nothing invented)
    assert int((~np.isnan(t.token_time_s)).sum()) == int(t.generated.sum())


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_decode_spans_equal_step_by_step(policy):
    scn = tight_kv(policy)
    _, fast = run(scn)
    _, slow = run(scn, max_span_steps=1)
    assert fast.summary["preemptions"] > 0  # the comparison covers preemption too
    assert len(fast.steps.step_end_s) == len(slow.steps.step_end_s)
    np.testing.assert_array_equal(fast.table.status, slow.table.status)
    np.testing.assert_array_equal(fast.table.num_preemptions, slow.table.num_preemptions)
    np.testing.assert_allclose(fast.table.token_time_s, slow.table.token_time_s, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast.bill.request_usd, slow.bill.request_usd, rtol=1e-9)


def test_batches_respect_engine_limits():
    scn = scenario(engine={"max_num_seqs": 8, "max_num_batched_tokens": 1000},
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 20.0},
                             "input_tokens": {"dist": "uniform", "low": 10, "high": 900},
                             "output_tokens": {"dist": "uniform", "low": 1, "high": 50}})
    _, res = run(scn)
    s = res.steps
    members = np.diff(s.record_member_offset)
    assert members.max() == 8  # the limit is reached under this load, and never passed
    prefill_tokens = s.step_tokens[s.record_step_offset[:-1][s.record_prefill]]
    assert prefill_tokens.max() <= 1000  # prefill steps stay within the token budget...
    assert prefill_tokens.max() > 900  # ...which this load reaches
    decode = ~s.record_prefill
    assert (np.diff(s.record_step_offset)[s.record_prefill] == 1).all()  # a prefill is one step
    # every decode step has one token per running request
    for r in np.flatnonzero(decode)[:200]:
        steps = s.step_tokens[s.record_step_offset[r]:s.record_step_offset[r + 1]]
        assert (steps == members[r]).all()
    check_request_invariants(res)


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_preemption_loses_no_request_or_token(policy):
    _, res = run(tight_kv(policy))
    t = res.table
    assert res.summary["preemptions"] > 0
    assert (t.status == COMPLETED).all()
    check_request_invariants(res)


def test_requests_that_can_never_fit_are_rejected_with_reason():
    scn = scenario(engine={"num_kv_blocks": 20, "block_size": 16, "max_model_len": 600})
    _, res = run(scn)
    t = res.table
    reasons = res.summary["requests"]["rejected_by_reason"]
    assert set(reasons) <= {"exceeds_max_model_len", "exceeds_kv_capacity"} and sum(reasons.values()) > 0
    too_long = t.input_tokens + t.output_tokens > 600
    assert (t.status[too_long] == REJECTED).all()
    assert (t.status[~(t.status == REJECTED)] == COMPLETED).all()
    # a rejected request fails the SLO however well the served ones did, and the summary says why
    assert not res.summary["meets_slo"]
    assert f"NOT met: {int((t.status == REJECTED).sum()):,} rejected)" in format_summary(res.summary)


def test_bounded_queue_rejects_when_full():
    scn = scenario(engine={"max_waiting": 1, "max_num_seqs": 1},
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 5.0},
                             "input_tokens": {"dist": "fixed", "value": 4000},
                             "output_tokens": {"dist": "fixed", "value": 300}})
    _, res = run(scn)
    assert res.summary["requests"]["rejected_by_reason"].get("queue_full", 0) > 0


def test_drain_limit_leaves_requests_in_flight():
    scn = scenario(drain_s=0.0, duration_s=20.0,
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 50.0},
                             "input_tokens": {"dist": "fixed", "value": 3000},
                             "output_tokens": {"dist": "fixed", "value": 500}})
    _, res = run(scn)
    req = res.summary["requests"]
    assert req["in_flight"] > 0
    assert req["arrived"] == req["completed"] + req["rejected"] + req["in_flight"]
    assert res.horizon_s == pytest.approx(20.0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_blocks=st.integers(40, 400), block_size=st.sampled_from([1, 8, 16, 32]),
       max_seqs=st.integers(1, 64), rate=st.floats(1.0, 40.0), seed=st.integers(0, 2**16),
       policy=st.sampled_from(["prefill_first", "chunked"]), budget=st.integers(64, 1024))
def test_kv_pool_accounting_holds_for_any_load(num_blocks, block_size, max_seqs, rate, seed, policy, budget):
    scn = scenario(seed=seed, duration_s=10.0,
                   engine={"num_kv_blocks": num_blocks, "block_size": block_size, "max_num_seqs": max_seqs,
                           "policy": policy, "max_num_batched_tokens": max(budget, max_seqs) if policy == "chunked" else None},
                   workload={"arrivals": {"process": "poisson", "rate_per_s": rate},
                             "input_tokens": {"dist": "uniform", "low": 1, "high": 600},
                             "output_tokens": {"dist": "uniform", "low": 1, "high": 120}})
    sim = Simulation(scn)
    seen = []

    def audit(env):  # the pool seen from outside, at every step boundary and between
        while sim.fleet.num_completed + int((sim.table.status == REJECTED).sum()) < len(sim.requests):
            for r in sim.fleet.replicas:
                held = int(sim.table.kv_blocks[sim.table.replica == r.index].sum())
                seen.append((r.pool.num_free, held, r.pool.num_blocks, len(r.running)))
            yield env.timeout(0.05)

    sim.env.process(audit(sim.env))
    res = sim.run()
    for free, held, total, running in seen:
        assert 0 <= free <= total
        assert free + held == total  # every block is free or held by exactly one request
        assert running <= max_seqs
    for r in sim.fleet.replicas:
        assert r.pool.num_free == r.pool.num_blocks  # finished and preempted blocks all returned
    assert not (res.table.status == IN_FLIGHT).any()
    check_request_invariants(res)


@given(ops=st.lists(st.tuples(st.sampled_from(["alloc", "free"]), st.integers(0, 50)), max_size=60))
def test_block_pool_never_negative_nor_over_capacity(ops):
    pool = BlockPool(100)
    held = 0
    for op, n in ops:
        if op == "alloc":
            if n <= pool.num_free:
                pool.allocate(n)
                held += n
            else:
                with pytest.raises(RuntimeError):
                    pool.allocate(n)
        elif n <= held:
            pool.free(n)
            held -= n
        else:  # freeing more than is held would push the pool over capacity
            with pytest.raises(RuntimeError):
                pool.free(n)
        assert 0 <= pool.num_free <= pool.num_blocks
        assert pool.num_free + held == pool.num_blocks


def test_chunked_prefill_keeps_its_budget_and_never_starves_decodes():
    """Sarathi-Serve's promise: every step fits the token budget, and a decoding request gets a
    token in every step it is running, so each inter-token gap is exactly one step."""
    budget = 512
    scn = scenario(engine={"policy": "chunked", "max_num_batched_tokens": budget, "max_num_seqs": 64},
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 6.0},
                             "input_tokens": {"dist": "uniform", "low": 100, "high": 3000},
                             "output_tokens": {"dist": "uniform", "low": 2, "high": 200}})
    _, res = run(scn)
    s, t = res.steps, res.table
    assert s.step_tokens.max() == budget  # the budget binds under this load...
    assert (s.step_tokens <= budget).all()  # ...and is never exceeded
    assert t.input_tokens.max() > budget  # prompts longer than the budget were split into chunks
    assert res.summary["preemptions"] == 0
    step_start = dict(zip(zip(s.step_replica.tolist(), s.step_end_s.tolist()), s.step_start_s.tolist()))
    for i in np.flatnonzero(t.status == COMPLETED):
        times = t.token_time_s[t.token_offset[i]:t.token_offset[i + 1]]
        for prev, cur in zip(times[:-1], times[1:]):
            assert step_start[(int(t.replica[i]), float(cur))] == pytest.approx(prev, abs=1e-12)
    check_request_invariants(res)


def test_chunked_prefill_trades_ttft_for_smoother_decode():
    """Against prefill-first at the same load: long prompts no longer stall running decodes, so
    the worst inter-token gap shrinks."""
    common = dict(workload={"arrivals": {"process": "poisson", "rate_per_s": 6.0},
                            "input_tokens": {"dist": "fixed", "value": 4000},
                            "output_tokens": {"dist": "fixed", "value": 200}}, duration_s=120.0)
    _, first = run(scenario(**common))
    _, chunked = run(scenario(engine={"policy": "chunked", "max_num_batched_tokens": 1024}, **common))
    assert chunked.summary["itl_s"]["p99"] < 0.5 * first.summary["itl_s"]["p99"]


@pytest.mark.parametrize("engine", [{"policy": "prefill_first"}, {"policy": "chunked"},
                                    {"policy": "static", "max_num_seqs": 2, "batch_timeout_s": 0.5}])
def test_prefill_request_cost_lengthens_a_two_prompt_step_by_two_costs(engine):
    """Two prompts arriving together are prefilled in one roofline step, which pays
    perf.prefill_request_s once per prompt; decode steps pay nothing, so every later token
    moves by the same 2 r."""
    from simcost.workload.requests import Requests
    r = 0.0173
    reqs = Requests(arrival_s=np.array([0.0, 0.0]), input_tokens=np.array([300, 500]),
                    output_tokens=np.array([4, 6]))
    base = {"engine": engine, "duration_s": 10.0}
    _, plain = run(scenario(**base), requests=reqs)
    _, costly = run(scenario(**base, perf={"prefill_request_s": r}), requests=reqs)
    prefill = plain.steps.record_prefill
    assert prefill.sum() == 1 and costly.steps.record_prefill.sum() == 1  # one step prefilled both
    first_plain, first_costly = plain.table.first_token_s, costly.table.first_token_s
    assert first_plain[0] == first_plain[1]
    np.testing.assert_allclose(first_costly - first_plain, [2 * r, 2 * r], rtol=1e-9)
    np.testing.assert_allclose(costly.table.finish_s - plain.table.finish_s, [2 * r, 2 * r], rtol=1e-9)


def test_every_batching_policy_has_exactly_one_engine():
    """The scenario names the policies once; the engine has a scheduler for each iteration-level
    one and a replica class for every one, and nothing the scenario does not name."""
    from typing import get_args

    from simcost.cluster.fleet import REPLICA_CLASSES
    from simcost.engine.schedulers import SCHEDULERS
    from simcost.scenario.deployment import ITERATION_POLICIES, REQUEST_LEVEL_POLICIES, BatchingPolicy

    assert set(SCHEDULERS) == set(ITERATION_POLICIES)
    assert set(REPLICA_CLASSES) == set(ITERATION_POLICIES) | set(REQUEST_LEVEL_POLICIES) == set(get_args(BatchingPolicy))
    assert not set(ITERATION_POLICIES) & set(REQUEST_LEVEL_POLICIES)


def test_wake_after_moves_a_waiting_process_and_interrupts_still_reach_it():
    """simcost.engine.base.wake_after leans on SimPy 4's Process internals (what Interruption
    uses): the process resumes at the new time only, once, and a later interrupt finds it."""
    import simpy

    from simcost.engine.base import wake_after

    env = simpy.Environment()
    seen: list[tuple[str, float]] = []

    def waiter():
        yield env.timeout(10.0)
        seen.append(("woke", env.now))
        try:
            yield env.timeout(10.0)
        except simpy.Interrupt as stop:
            seen.append((stop.cause, env.now))

    process = env.process(waiter())

    def mover():
        yield env.timeout(1.0)
        assert wake_after(process, 2.0)  # wait until 3.0 instead of 10.0
        yield env.timeout(3.0)
        assert wake_after(process, 1.0)  # the second wait (until 13.0) moved to 5.0 ...
        yield env.timeout(0.5)
        process.interrupt("stop")  # ... and interrupted at 4.5 while on the moved event

    env.process(mover())
    env.run(until=30.0)
    assert seen == [("woke", 3.0), ("stop", 4.5)]
    assert not process.is_alive


def test_without_simpys_internals_a_span_cut_falls_back_to_the_interrupt(monkeypatch):
    """A SimPy whose Process lacks `_target` gets Process.interrupt: the same run, bit for bit."""
    import simcost.engine.replica as replica_module

    scn = tight_kv("chunked")
    _, moved = run(scn)
    calls = []

    def no_internals(process, delay_s):
        calls.append(delay_s)
        return False

    monkeypatch.setattr(replica_module, "wake_after", no_internals)
    _, interrupted = run(scn)
    assert calls  # spans were cut, each by the interrupt
    np.testing.assert_array_equal(moved.table.token_time_s, interrupted.table.token_time_s)
    np.testing.assert_array_equal(moved.steps.step_end_s, interrupted.steps.step_end_s)
    assert moved.summary == interrupted.summary
