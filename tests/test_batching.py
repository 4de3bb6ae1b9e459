"""Request-level batching (simcost.engine.request_level): one_at_a_time, static and dynamic (Triton) batch
formation, padding to the longest member, KV reserved up front, and the same conservation rules
as continuous batching."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import BASE, scenario
from test_conservation import test_bill_adds_up as check_bill_adds_up
from test_conservation import test_completed_requests_got_exactly_their_tokens as check_tokens
from test_conservation import test_every_request_ends_somewhere as check_every_request_ends
from test_engine import check_request_invariants

from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED
from simcost.workload.requests import Requests

PREFILL_S_PER_TOKEN, DECODE_STEP_S = 0.01, 0.1
CONSTANT = {"model": "constant", "prefill_s_per_token": PREFILL_S_PER_TOKEN, "decode_step_s": DECODE_STEP_S,
            "step_overhead_s": 0.0}
EPS = 1e-9


def run(scn, reqs=None):
    sim = Simulation(scn, requests=reqs)
    return sim, sim.run()


def requests(arrival_s, input_tokens, output_tokens) -> Requests:
    return Requests(arrival_s=np.asarray(arrival_s, dtype=float), input_tokens=np.asarray(input_tokens),
                    output_tokens=np.asarray(output_tokens))


def batches(res):
    """Per batch (a prefill record), in order: (replica, start_s, prefill end_s, member ids)."""
    s = res.steps
    out = []
    for r in np.flatnonzero(s.record_prefill):
        j = s.record_step_offset[r]
        members = s.member_request[s.record_member_offset[r]:s.record_member_offset[r + 1]]
        out.append((int(s.step_replica[j]), float(s.step_start_s[j]), float(s.step_end_s[j]), members))
    return out


# --- static batching, by hand ----------------------------------------------------------------

def test_static_batching_by_hand():
    """Batch size 2, timeout 0.5 s, prefill 0.01 s/token, decode 0.1 s/step.
    A (t=0, 100 in, 3 out) waits for a partner; B (t=0.2, 50 in, 1 out) fills the batch, which
    starts at once at 0.2: prefill of 150 tokens, 1.5 s -> 1.7, the first token of A and B (B is
    done). Then 2 decode steps for A, with B padded: 1.8, 1.9 (A done, batch over).
    C (t=0.3, 100 in, 2 out) arrived during that batch; the fill window runs from the later of
    its becoming head (0.3) and the replica becoming idle (1.9): it starts alone at 2.4, prefill
    1.0 s -> 3.4, one decode step -> 3.5. D (t=3.0, 100 in, 2 out) waits through C's batch, then
    the window from 3.5: starts at 4.0, first token 5.0, finish 5.1."""
    scn = scenario(engine={"policy": "static", "max_num_seqs": 2, "batch_timeout_s": 0.5}, perf=CONSTANT)
    sim = Simulation(scn, requests=requests([0.0, 0.2, 0.3, 3.0], [100, 50, 100, 100], [3, 1, 2, 2]))
    held = []

    def audit(env):  # B is done at 1.7 but holds its memory and slot until its batch ends at 1.9
        yield env.timeout(1.8)
        held.append((int(sim.table.status[1]), int(sim.table.kv_blocks[1]), len(sim.fleet.replicas[0].running)))

    sim.env.process(audit(sim.env))
    res = sim.run()
    t = res.table
    np.testing.assert_allclose(t.first_scheduled_s, [0.2, 0.2, 2.4, 4.0], atol=EPS)
    np.testing.assert_allclose(t.first_token_s, [1.7, 1.7, 3.4, 5.0], atol=EPS)
    np.testing.assert_allclose(t.finish_s, [1.9, 1.7, 3.5, 5.1], atol=EPS)
    np.testing.assert_allclose(t.token_time_s, [1.7, 1.8, 1.9, 1.7, 3.4, 3.5, 5.0, 5.1], atol=EPS)
    assert held == [(COMPLETED, 4, 2)]  # B reserved 50 + 1 - 1 tokens: 4 blocks of 16
    s = res.steps
    # every step once, with its true duration and the padded batch size
    np.testing.assert_allclose(s.step_start_s, [0.2, 1.7, 1.8, 2.4, 3.4, 4.0, 5.0], atol=EPS)
    np.testing.assert_allclose(s.step_end_s, [1.7, 1.8, 1.9, 3.4, 3.5, 5.0, 5.1], atol=EPS)
    assert s.step_tokens.tolist() == [150, 2, 2, 100, 1, 100, 1]
    assert [b[3].tolist() for b in batches(res)] == [[0, 1], [2], [3]]


def test_memory_fills_a_batch_and_never_overbooks():
    """A pool of 10 blocks of 16 tokens; each request reserves 60 + 5 - 1 = 64 tokens = 4 blocks,
    so two fit and three do not. A (t=0) and B (t=0.1) wait for the batch of 4 to fill; C's
    arrival at 0.2 makes the memory the limit, so A+B leave at once (not at the 0.5 s timeout):
    prefill 1.2 s -> 1.4, 4 decode steps -> 1.8. C then waits the window from 1.8: 2.3 -> 2.9 ->
    3.3. D (200 tokens, 13 blocks) could never fit alone: rejected on arrival."""
    scn = scenario(engine={"policy": "static", "max_num_seqs": 4, "batch_timeout_s": 0.5, "num_kv_blocks": 10,
                           "block_size": 16}, perf=CONSTANT)
    _, res = run(scn, requests([0.0, 0.1, 0.2, 0.3], [60, 60, 60, 200], [5, 5, 5, 1]))
    t = res.table
    assert res.summary["requests"]["rejected_by_reason"] == {"exceeds_kv_capacity": 1}
    np.testing.assert_allclose(t.first_scheduled_s[:3], [0.2, 0.2, 2.3], atol=EPS)
    np.testing.assert_allclose(t.finish_s[:3], [1.8, 1.8, 3.3], atol=EPS)


# --- one at a time: a FIFO single server ------------------------------------------------------

def test_one_at_a_time_is_a_fifo_single_server():
    """Each request starts when it arrives or when the previous one finishes (Lindley), then
    takes exactly prefill + (out - 1) decode steps: E2EL = wait + prefill + (out - 1) x decode."""
    scn = scenario(engine={"policy": "one_at_a_time"}, perf=CONSTANT, duration_s=120.0,
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 0.25},
                             "input_tokens": {"dist": "uniform", "low": 10, "high": 200},
                             "output_tokens": {"dist": "uniform", "low": 1, "high": 40}})
    _, res = run(scn)
    t = res.table
    assert (t.status == COMPLETED).all()
    prev_finish_s = np.concatenate([[0.0], t.finish_s[:-1]])
    np.testing.assert_allclose(t.first_scheduled_s, np.maximum(t.arrival_s, prev_finish_s), rtol=0, atol=EPS)
    wait_s = t.first_scheduled_s - t.arrival_s
    assert (wait_s > 0).sum() > 3  # the queue did form
    service_s = PREFILL_S_PER_TOKEN * t.input_tokens + (t.output_tokens - 1) * DECODE_STEP_S
    np.testing.assert_allclose(t.finish_s - t.arrival_s, wait_s + service_s, rtol=0, atol=1e-8)
    assert (np.diff(res.steps.record_member_offset) == 1).all()  # every batch is one request


# --- dynamic batching: Triton's rules ----------------------------------------------------------

@pytest.mark.parametrize("preferred,max_seqs", [((3, 5), 8), (None, 4)])
def test_dynamic_batches_leave_by_triton_rules(preferred, max_seqs):
    delay_s = 0.3
    engine = {"policy": "dynamic", "max_num_seqs": max_seqs, "max_queue_delay_s": delay_s}
    if preferred:
        engine["preferred_batch_sizes"] = list(preferred)
    scn = scenario(engine=engine, perf=CONSTANT, duration_s=120.0, seed=3,
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                             "input_tokens": {"dist": "uniform", "low": 5, "high": 60},
                             "output_tokens": {"dist": "uniform", "low": 1, "high": 12}})
    _, res = run(scn)
    t = res.table
    assert (t.status == COMPLETED).all()
    sizes = preferred or (max_seqs,)
    found = {"preferred": 0, "delay": 0}
    prev_end_s = 0.0
    for _, start_s, _, members in batches(res):
        oldest_s = float(t.arrival_s[members].min())
        queued = int(((t.arrival_s <= start_s + EPS) & (t.first_scheduled_s >= start_s - EPS)).sum())
        allowed = [b for b in sizes if b <= min(queued, max_seqs)]
        if allowed:  # a preferred size was reachable: the largest one left
            assert len(members) == max(allowed)
            found["preferred"] += 1
        else:  # none reachable: it left at the delay expiry with all it had
            assert len(members) == min(queued, max_seqs)
            assert start_s >= oldest_s + delay_s - EPS
            found["delay"] += 1
        # it left at an event: an arrival, the previous batch's end, or a delay expiry
        events = [prev_end_s, oldest_s + delay_s, *t.arrival_s[members]]
        assert min(abs(start_s - e) for e in events) < EPS
        prev_end_s = float(t.finish_s[members].max())
    assert found["preferred"] >= 3 and found["delay"] >= 3  # both rules were exercised
    # a request that found the replica idle waits at most the delay
    busy = [(b[1], float(t.finish_s[b[3]].max())) for b in batches(res)]
    idle_on_arrival = np.array([not any(s <= a < e for s, e in busy) for a in t.arrival_s])
    assert idle_on_arrival.sum() > 10
    wait_s = (t.first_scheduled_s - t.arrival_s)[idle_on_arrival]
    assert wait_s.max() <= delay_s + EPS


# --- conservation ----------------------------------------------------------------------------

CASES = {
    "one_at_a_time": {"engine": {"policy": "one_at_a_time"}},
    "static jsq x2 tight kv": {"engine": {"policy": "static", "max_num_seqs": 16, "batch_timeout_s": 0.2,
                                          "num_kv_blocks": 200},
                               "fleet": {"replicas": 2, "router": "join_shortest_queue"}},
    "dynamic shared queue x2": {"engine": {"policy": "dynamic", "max_num_seqs": 8, "preferred_batch_sizes": [2, 4],
                                           "max_queue_delay_s": 0.05},
                                "fleet": {"replicas": 2, "router": "shared_queue"}},
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    sim = Simulation(scenario(**CASES[request.param]))
    return sim, sim.run()


def test_request_level_runs_conserve_requests_tokens_and_dollars(case):
    sim, res = case
    check_every_request_ends(res)
    check_tokens(res)
    check_bill_adds_up(res)
    check_request_invariants(res)
    for replica in sim.fleet.replicas:
        assert replica.pool.num_free == replica.pool.num_blocks and not replica.running


def test_every_step_of_every_batch_is_logged_once(case):
    """Each batch is one prefill step, then max(out) - 1 decode steps over all its members at the
    batch size (padding), back to back; its members' reservations fit the pool."""
    sim, res = case
    s, t = res.steps, res.table
    pool, block_size = sim.fleet.replicas[0].pool, sim.deployment.block_size
    record_replica = s.step_replica[s.record_step_offset[:-1]]
    num_batches = 0
    for replica in range(len(sim.fleet.replicas)):
        records = np.flatnonzero(record_replica == replica)
        starts = [i for i, r in enumerate(records) if s.record_prefill[r]] + [len(records)]
        assert starts[0] == 0
        for a, b in zip(starts[:-1], starts[1:]):
            prefill, decodes = records[a], records[a + 1:b]
            members = s.member_request[s.record_member_offset[prefill]:s.record_member_offset[prefill + 1]]
            steps = np.concatenate([np.arange(s.record_step_offset[r], s.record_step_offset[r + 1])
                                    for r in records[a:b]])
            assert s.step_tokens[steps[0]] == t.input_tokens[members].sum()
            assert len(steps) - 1 == t.output_tokens[members].max() - 1  # no decode step missing or extra
            assert (s.step_tokens[steps[1:]] == len(members)).all()  # finished members padded
            np.testing.assert_allclose(s.step_start_s[steps[1:]], s.step_end_s[steps[:-1]], rtol=0, atol=EPS)
            for r in decodes:
                np.testing.assert_array_equal(s.member_request[s.record_member_offset[r]:s.record_member_offset[r + 1]],
                                              members)
            reserved = (-(-(t.input_tokens[members] + t.output_tokens[members] - 1) // block_size)).sum()
            assert reserved <= pool.num_blocks - pool.watermark_blocks
            num_batches += 1
    assert num_batches == int(s.record_prefill.sum())
    busy_s = np.bincount(s.step_replica, weights=s.step_duration_s, minlength=len(sim.fleet.replicas))
    np.testing.assert_allclose(res.bill.replica_busy_s, busy_s, rtol=1e-12)
    assert res.bill.step_usd.sum() == pytest.approx(res.bill.request_usd.sum(), rel=1e-12)


def test_next_turn_follows_its_own_finish_not_the_batch_end():
    """A member finishing early is complete at its own last token: a session's next turn is sent
    think_time after that, while the rest of its batch still runs."""
    workload = {"arrivals": {"process": "poisson", "rate_per_s": 1.5},
                "input_tokens": {"dist": "uniform", "low": 50, "high": 400},
                "output_tokens": {"dist": "uniform", "low": 5, "high": 150},
                "session": {"turns": {"dist": "fixed", "value": 3}, "think_time": {"dist": "fixed", "value_s": 2.5}}}
    _, res = run(scenario(workload=workload, engine={"policy": "static", "max_num_seqs": 8, "batch_timeout_s": 0.3}))
    t = res.table
    nxt = np.flatnonzero(t.turn > 0)
    prev = np.array([np.flatnonzero((t.session == t.session[i]) & (t.turn == t.turn[i] - 1))[0] for i in nxt])
    np.testing.assert_allclose(t.arrival_s[nxt] - t.finish_s[prev], 2.5, atol=1e-9)
    # and some of those finishes were early: the batch ran on after them
    batch_end = {int(m): float(t.finish_s[b[3]].max()) for b in batches(res) for m in b[3]}
    assert sum(t.finish_s[p] < batch_end[int(p)] - EPS for p in prev) > 10


# --- against continuous batching ---------------------------------------------------------------

FAR_APART = requests(np.arange(8) * 100.0, [17, 300, 1, 800, 64, 5, 2000, 128], [1, 90, 7, 250, 1, 33, 12, 400])
POLICIES = {"one_at_a_time": {}, "static": {"batch_timeout_s": 0.0}, "dynamic": {"max_queue_delay_s": 0.0},
            "prefill_first": {}, "chunked": {}}
IMAGES = {"kind": "image", "per_request": {"dist": "fixed", "value": 2}, "flops_per_item": 3e12,
          "bytes_per_item": 4e8}


@pytest.mark.parametrize("perf", ["constant", "roofline with items"])
def test_low_load_every_policy_serves_like_one_at_a_time(perf):
    """Requests far apart: every policy runs each alone, with the same steps, so token times are
    identical; a formation delay only shifts them by the delay, once."""
    if perf == "constant":
        base, reqs = {"perf": CONSTANT}, FAR_APART
    else:  # items are timed by the rule the iteration-level engine uses
        base = {"workload": dict(BASE["workload"], items=IMAGES)}
        reqs = Requests(FAR_APART.arrival_s, FAR_APART.input_tokens, FAR_APART.output_tokens,
                        items=np.full(len(FAR_APART), 2))
    reference = run(scenario(engine={"policy": "one_at_a_time"}, **base), reqs)[1].table
    for policy, keys in POLICIES.items():
        t = run(scenario(engine={"policy": policy, "max_num_seqs": 8, **keys}, **base), reqs)[1].table
        np.testing.assert_allclose(t.token_time_s, reference.token_time_s, rtol=1e-12, atol=1e-12, err_msg=policy)
    for policy, keys in {"static": {"batch_timeout_s": 0.25}, "dynamic": {"max_queue_delay_s": 0.25}}.items():
        t = run(scenario(engine={"policy": policy, "max_num_seqs": 8, **keys}, **base), reqs)[1].table
        np.testing.assert_allclose(t.token_time_s, reference.token_time_s + 0.25, rtol=0, atol=1e-9, err_msg=policy)


def throughput(policy: str, **engine):
    scn = scenario(engine={"policy": policy, "max_num_seqs": 32, **engine}, duration_s=30.0,
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 40.0},
                             "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
                             "output_tokens": {"dist": "uniform", "low": 1, "high": 300}})
    res = run(scn)[1]
    t = res.table
    makespan_s = float(t.finish_s.max() - t.arrival_s.min())
    return {"output_tok_per_s": float(t.generated.sum()) / makespan_s, "makespan_s": makespan_s,
            "e2el_p50_s": res.summary["e2el_s"]["p50"], "usd_per_request": float(res.bill.request_usd.mean())}


def test_continuous_batching_outruns_static_at_high_load():
    continuous = throughput("prefill_first")
    static = throughput("static", batch_timeout_s=0.05)
    print(f"\nprefill_first {continuous}\nstatic        {static}")
    assert continuous["output_tok_per_s"] > 1.3 * static["output_tok_per_s"]
    assert continuous["usd_per_request"] < static["usd_per_request"]
