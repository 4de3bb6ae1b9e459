"""vLLM V1's scheduler under KV pressure (simcost.engine.schedulers.ChunkedScheduler): a burst of
long prompts on a replica whose KV holds two or three of them, with a token budget of a fraction
of a prompt. vLLM V1 schedules running requests first; one that cannot get the blocks of its next
token or chunk preempts the newest running request (maybe itself), and a step that preempted
admits no waiting request; with prefix caching a preempted request's computed blocks stay cached
and its next admission finds them. Before this, simcost admitted the preempted request again in
the same step, its work lost, and the case below preempted 397 times for 24 requests."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario
from test_engine import check_request_invariants

from simcost.engine.kv.reuse import request_block_keys
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED
from simcost.workload.requests import Requests

NUM_REQUESTS, PROMPT, OUTPUT = 24, 1000, 200  # a request: 1200 tokens, 75 blocks of 16 at its end
CONSTANT = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.002}


def burst(num_kv_blocks: int = 200, budget: int = 256, output: int = OUTPUT, **engine) -> Simulation:
    scn = scenario(perf=CONSTANT, duration_s=1e4,
                   engine={"policy": "chunked", "num_kv_blocks": num_kv_blocks, "block_size": 16,
                           "max_num_batched_tokens": budget, "max_num_seqs": 64, **engine})
    reqs = Requests(arrival_s=np.zeros(NUM_REQUESTS), input_tokens=np.full(NUM_REQUESTS, PROMPT),
                    output_tokens=np.full(NUM_REQUESTS, output))
    return Simulation(scn, requests=reqs)


def record_events(sim: Simulation) -> list[list[tuple]]:
    """Per scheduling step of the (only) replica, its events in order: ("preempt", rid, t) and
    ("admit", rid, t). A step starts where the scheduler first makes room for the decodes."""
    (replica,) = sim.fleet.replicas
    sched = replica.scheduler
    steps: list[list[tuple]] = []
    make_room, preempt, start = sched._make_room_for_decodes, replica.preempt_last, replica.start_running

    def new_step():
        steps.append([])
        return make_room()

    def preempt_last():
        rid = preempt()
        steps[-1].append(("preempt", rid, replica.env.now))
        return rid

    def start_running(rids):
        steps[-1].extend(("admit", rid, replica.env.now) for rid in rids)
        start(rids)

    schedule = sched.schedule

    def checked_schedule():
        plan = schedule()  # every member of a plan is running, and holds the blocks it writes into
        t = replica.table
        assert all(rid in replica.running for rid in plan)
        assert all(t.kv_blocks[rid] * 16 >= t.kv_tokens[rid] + n for rid, n in plan.items())
        return plan

    sched._make_room_for_decodes, replica.preempt_last, replica.start_running = new_step, preempt_last, start_running
    sched.schedule = checked_schedule
    return steps


@pytest.mark.parametrize("num_kv_blocks,budget", [(200, 256), (200, 512), (260, 512), (300, 256)])
def test_a_burst_under_kv_pressure_does_not_thrash(num_kv_blocks, budget):
    sim = burst(num_kv_blocks, budget)
    steps = record_events(sim)
    res = sim.run()
    t = res.table
    events = [e for step in steps for e in step]
    preempted = [e for e in events if e[0] == "preempt"]
    assert preempted  # the pool is tight enough to preempt...
    # ...but a step that preempted admitted no waiting request (vLLM V1's rule)
    for step in steps:
        kinds = [kind for kind, _, _ in step]
        assert not ("preempt" in kinds and "admit" in kinds[kinds.index("preempt"):]), step
    # A preemption leaves fewer free blocks than the victim's next chunk needs; taken back, it needs
    # at least as many beyond its own cached blocks, and decodes only use blocks up: so it is never
    # admitted again before blocks come back from a finish or another preemption.
    for n, (kind, rid, preempt_s) in enumerate(events):
        if kind != "preempt":
            continue
        back = next(m for m in range(n + 1, len(events)) if events[m][:2] == ("admit", rid))
        admit_s = events[back][2]
        others_preempted = any(k == "preempt" and r != rid for k, r, _ in events[n + 1:back])
        others_finished = bool(((t.finish_s >= preempt_s) & (t.finish_s <= admit_s)).any())
        assert others_preempted or others_finished, (rid, preempt_s, admit_s)
    # so preemptions stay of the order of the requests, not hundreds of re-admissions
    assert len(preempted) == int(t.num_preemptions.sum()) <= NUM_REQUESTS
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()
    check_request_invariants(res)


def prefill_tokens(res) -> int:
    """Tokens computed in steps that prefilled (prompt chunks, recomputation, and the decodes beside them)."""
    s = res.steps
    return sum(int(s.member_tokens[s.record_member_offset[r]:s.record_member_offset[r + 1]].sum())
               for r in np.flatnonzero(s.record_prefill))


def test_a_preempted_request_finds_its_own_blocks_with_prefix_caching():
    """The prompts share nothing, yet with prefix caching a request admitted again after a
    preemption takes back what it computed (as vLLM V1, which hashes every request's blocks),
    so the run prefills less than without; first admissions still find nothing."""
    with_cache, without = burst(budget=2048, output=64).run(), burst(budget=2048, output=64, prefix_caching=False).run()
    assert with_cache.summary["preemptions"] > 0 and without.summary["preemptions"] > 0
    cache = with_cache.summary["prefix_cache"]
    assert cache["blocks_hit"] == 0 and cache["prefill_tokens_saved"] == 0  # no prompt shares a block
    assert cache["prompt_tokens_admitted"] == NUM_REQUESTS * PROMPT  # first admissions only
    assert 0 < cache["resumed_blocks_hit"] <= cache["resumed_blocks_looked_up"]
    assert prefill_tokens(with_cache) < prefill_tokens(without)
    for res in (with_cache, without):
        assert (res.table.generated == res.table.output_tokens).all()
        check_request_invariants(res)


def test_request_keys_are_apart_from_shared_keys_and_from_each_other():
    a, b = request_block_keys(0, 0, 3), request_block_keys(1, 2, 4)
    assert a.tolist() == [-1, -2, -3]  # negative: trace and session keys are >= 0
    assert b.tolist() == [-(1 << 32) - 3, -(1 << 32) - 4]
    assert request_block_keys((1 << 31) - 1, (1 << 32) - 1, 1 << 32)[0] == -(1 << 63)  # the last one fits int64
    with pytest.raises(ValueError):
        request_block_keys(1 << 31, 0, 1)


@pytest.mark.parametrize("queue", ["fcfs", "priority", "sjf"])
def test_every_queue_order_conserves_requests_under_pressure(queue):
    """Under priority the least urgent running request is preempted, which may have been
    planned already in the step: its token goes back to the budget and its blocks to the pool."""
    sim = burst(queue=queue)
    record_events(sim)
    res = sim.run()
    assert res.summary["preemptions"] > 0
    assert (res.table.status == COMPLETED).all() and (res.table.generated == res.table.output_tokens).all()
    check_request_invariants(res)
