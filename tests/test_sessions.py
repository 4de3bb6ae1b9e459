"""Multi-turn sessions, closed-loop users, workload mixes with tenants and per-workload SLOs, and
non-token items: the rules each must keep, checked on the request table of real runs."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scenarios import scenario

from simcost.errors import InputError
from simcost.perf.step_model import item_time_s, step_params
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED, REJECTED

LENGTHS = {"input_tokens": {"dist": "uniform", "low": 50, "high": 400},
           "output_tokens": {"dist": "uniform", "low": 5, "high": 150}}
CHAT = {"arrivals": {"process": "poisson", "rate_per_s": 1.5}, **LENGTHS,
        "session": {"turns": {"dist": "uniform", "low": 1, "high": 8},
                    "think_time": {"dist": "exponential", "mean_s": 4.0}}}


def run(workload, **extra):
    sim = Simulation(scenario(workload=workload, **extra))
    return sim, sim.run()


def session_rows(t):
    """Rows of each session in turn order: {session code: array of request ids}."""
    rows = np.flatnonzero(t.session >= 0)
    order = np.lexsort((t.turn[rows], t.session[rows]))
    rows = rows[order]
    cuts = np.flatnonzero(np.diff(t.session[rows])) + 1
    return np.split(rows, cuts)


# --- sessions --------------------------------------------------------------------------------

def test_turn_waits_for_the_previous_answer_and_carries_its_context():
    _, res = run(CHAT)
    t = res.table
    sessions = session_rows(t)
    assert len(sessions) > 50 and max(len(s) for s in sessions) >= 5
    for rows in sessions:
        assert list(t.turn[rows]) == list(range(len(rows)))  # no turn skipped or repeated
        assert len(rows) <= t.turns[rows[0]]
        for prev, nxt in zip(rows[:-1], rows[1:]):
            assert t.status[prev] == COMPLETED
            assert t.arrival_s[nxt] >= t.finish_s[prev]  # never before the previous answer ends
            assert t.input_tokens[nxt] > t.input_tokens[prev] + t.output_tokens[prev]  # plus new tokens
            assert t.shared_prefix_tokens[nxt] == t.input_tokens[prev] + t.output_tokens[prev]
        assert t.shared_prefix_tokens[rows[0]] == 0


def test_fixed_think_time_is_exact():
    workload = dict(CHAT, session={"turns": {"dist": "fixed", "value": 3},
                                   "think_time": {"dist": "fixed", "value_s": 2.5}})
    _, res = run(workload)
    t = res.table
    for rows in session_rows(t):
        gaps = t.arrival_s[rows[1:]] - t.finish_s[rows[:-1]]
        np.testing.assert_allclose(gaps, 2.5, rtol=0, atol=1e-9)


def test_session_accounting_adds_up():
    """started = completed + ended by a rejection + unfinished, and what the driver cut at
    duration_s is exactly what the table shows unfinished once every request has drained."""
    sim, res = run(CHAT, engine={"max_model_len": 1200})  # long chats outgrow the context
    s = res.summary["sessions"]
    assert s["ended_by_rejection"] > 0 and s["turns_cut_at_end"] > 0 and s["completed"] > 0
    assert s["started"] == s["completed"] + s["ended_by_rejection"] + s["unfinished"]
    assert s["unfinished"] == s["turns_cut_at_end"] == sim.sessions.counts["turns_cut"]
    assert s["ended_by_rejection"] == sim.sessions.counts["ended_by_rejection"] + _rejected_last_turns(res.table)
    assert s["turns_sent"] == res.summary["requests"]["arrived"]
    # nothing follows a rejected turn
    t = res.table
    for rows in session_rows(t):
        rejected = np.flatnonzero(t.status[rows] == REJECTED)
        assert len(rejected) == 0 or rejected[0] == len(rows) - 1


def _rejected_last_turns(t) -> int:
    """Rejections of a session's final turn end it too but send nothing more (driver does not count them)."""
    return int(((t.status == REJECTED) & (t.session >= 0) & (t.turn == t.turns - 1)).sum())


def test_runs_with_sessions_reproduce_from_the_seed():
    a = run(CHAT)[1].table
    b = run(CHAT)[1].table
    c = Simulation(scenario(workload=CHAT, seed=2)).run().table
    for name in ("arrival_s", "input_tokens", "output_tokens", "finish_s", "session", "turn"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.num_requests != c.num_requests or not np.array_equal(a.arrival_s, c.arrival_s)


# --- closed loop -----------------------------------------------------------------------------

CLOSED = {"clients": {"users": 24, "think_time": {"dist": "exponential", "mean_s": 3.0}}, **LENGTHS}


def test_closed_loop_users_wait_for_their_answer():
    _, res = run(CLOSED)
    t = res.table
    assert set(np.unique(t.user)) <= set(range(24))
    for user in range(24):
        rows = np.flatnonzero(t.user == user)
        rows = rows[np.argsort(t.arrival_s[rows])]
        assert (t.arrival_s[rows[1:]] >= t.finish_s[rows[:-1]]).all()  # one request at a time


def test_closed_loop_obeys_the_interactive_response_time_law():
    """N = X (R + Z): users = throughput x (mean response time + mean think time), measured over
    the whole run (every request drained, so the cycle of each user is fully accounted)."""
    users, think_s = 24, 3.0
    _, res = run(CLOSED, duration_s=600.0)
    t = res.table
    done = t.status == COMPLETED
    response_s = float((t.finish_s[done] - t.arrival_s[done]).mean())
    throughput = done.sum() / 600.0
    assert throughput * (response_s + think_s) == pytest.approx(users, rel=0.05)


def test_more_users_more_load_until_the_replica_saturates():
    rates = [run(dict(CLOSED, clients={"users": n, "think_time": {"dist": "fixed", "value_s": 1.0}}))[1]
             .summary["throughput"]["requests_per_s"] for n in (2, 8, 32)]
    assert rates[0] < rates[1] < rates[2]


def test_a_frontend_delay_adds_to_each_ttft_and_slows_a_closed_loop_by_the_law():
    """engine.frontend_s: open-loop arrivals reach the engine that much later, so every TTFT and
    E2E grows by exactly it and the engine's work is unchanged; closed-loop users wait for it too,
    so the response-time law N = X (R + Z) still holds with R including it, at a lower X."""
    open_loop = {"arrivals": {"process": "poisson", "rate_per_s": 3.0}, **LENGTHS}
    (_, a), (_, b) = run(open_loop), run(open_loop, engine={"frontend_s": 0.05})
    ta, tb = a.table, b.table
    np.testing.assert_array_equal(ta.arrival_s, tb.arrival_s)
    np.testing.assert_allclose(tb.first_token_s - ta.first_token_s, 0.05, atol=1e-9)
    np.testing.assert_allclose(tb.finish_s - ta.finish_s, 0.05, atol=1e-9)

    users, think_s = 24, 3.0
    rates = []
    for frontend_s in (0.0, 0.5):
        _, res = run(CLOSED, duration_s=600.0, engine={"frontend_s": frontend_s})
        t = res.table
        done = t.status == COMPLETED
        response_s = float((t.finish_s[done] - t.arrival_s[done]).mean())
        throughput = done.sum() / 600.0
        assert throughput * (response_s + think_s) == pytest.approx(users, rel=0.05)
        assert (t.first_token_s[done] - t.arrival_s[done]).min() >= frontend_s
        rates.append(throughput)
    assert rates[1] < rates[0]


def test_a_pool_cannot_set_its_own_frontend_delay():
    pools = {"pools": [{"name": "a", "replicas": 1, "hardware": {"device": "h100-sxm"}, "engine": {"frontend_s": 0.1}}]}
    with pytest.raises(InputError, match=r"fleet.pools\[0\].engine.frontend_s"):
        scenario(workload=CLOSED, fleet=pools)


# --- mixes, tenants, per-workload SLOs -------------------------------------------------------

CODE = {"name": "code", "tenant": "acme", "priority": 1, "slo": {"ttft_s": 0.001},
        "arrivals": {"process": "gamma", "rate_per_s": 2.0, "cv": 2.0},
        "input_tokens": {"dist": "lognormal", "mean": 1500, "sigma": 0.5},
        "output_tokens": {"dist": "fixed", "value": 20}}


def test_mix_tags_requests_and_adds_up():
    chat = dict(CHAT, name="chat", tenant="globex")
    _, res = run({"mix": [chat, CODE]}, slo={"ttft_s": 10.0})
    t, s = res.table, res.summary
    by = s["by_workload"]
    assert set(by) == {"chat", "code"} and by["code"]["tenant"] == "acme" and by["code"]["priority"] == 1
    assert sum(w["arrived"] for w in by.values()) == s["requests"]["arrived"]
    assert sum(w["completed"] for w in by.values()) == s["requests"]["completed"]
    assert sum(w["allocated_usd"] for w in by.values()) == pytest.approx(s["cost"]["allocated_usd"], rel=1e-12)
    assert set(s["by_tenant"]) == {"globex", "acme"}
    # each workload is judged by its own SLO: code's 1 ms TTFT is never met, chat's 10 s always
    assert by["code"]["slo_attainment"] == 0.0 and by["chat"]["slo_attainment"] == 1.0
    assert (np.asarray(t.tenant_names)[t.tenant[t.workload == 1]] == "acme").all()


def test_adding_a_workload_leaves_the_first_ones_requests_unchanged():
    alone = Simulation(scenario(workload=dict(CODE))).requests
    mixed = Simulation(scenario(workload={"mix": [dict(CODE), dict(CHAT, name="chat")]})).requests
    first = mixed.workload == 0
    np.testing.assert_array_equal(alone.arrival_s, mixed.arrival_s[first])
    np.testing.assert_array_equal(alone.input_tokens, mixed.input_tokens[first])
    assert (mixed.workload == 1).sum() > 0


def test_mixed_run_reproduces_from_its_written_scenario(tmp_path):
    scn = scenario(workload={"mix": [dict(CHAT, name="chat"), CODE]})
    again = scenario_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(scn), sort_keys=False)))
    a, b = Simulation(scn).run(), Simulation(again).run()
    np.testing.assert_array_equal(a.table.finish_s, b.table.finish_s)
    assert a.summary["by_workload"] == b.summary["by_workload"]


@pytest.mark.parametrize("workload, where", [
    (dict(CHAT, clients=CLOSED["clients"]), "workload.arrivals"),
    ({**LENGTHS}, "workload.arrivals"),
    ({"mix": [CHAT], "tenant": "x"}, "workload.tenant"),
    ({"mix": []}, "workload.mix"),
    ({"mix": [dict(CHAT, name="a"), dict(CODE, name="a")]}, "workload.mix[1].name"),
    ({"mix": [{"mix": [CHAT]}]}, "workload.mix[0].mix"),
    (dict(CHAT, session={"turns": {"dist": "empirical", "trace": "azure_conv"},
                         "think_time": {"dist": "fixed", "value_s": 1}}), "workload.session.turns.dist"),
    (dict(CHAT, session={"turns": {"dist": "fixed", "value": 2},
                         "think_time": {"dist": "uniform", "low_s": 5, "high_s": 1}}), "workload.session.think_time.low_s"),
])
def test_bad_workloads_name_the_key(workload, where):
    with pytest.raises(InputError) as exc:
        scenario(workload=workload)
    assert exc.value.where == where


# --- items that are not tokens ---------------------------------------------------------------

def test_items_add_their_roofline_time_to_the_first_prefill():
    """One request alone: the TTFT with two images is the TTFT without them plus the roofline
    time of the images' work, exactly (prompt_tokens_per_item 0 keeps the token work equal)."""
    base = {"arrivals": {"process": "poisson", "rate_per_s": 0.01},
            "input_tokens": {"dist": "fixed", "value": 300}, "output_tokens": {"dist": "fixed", "value": 4}}
    items = dict(base, items={"kind": "image", "per_request": {"dist": "fixed", "value": 2},
                              "flops_per_item": 3e12, "bytes_per_item": 4e8})
    kw = {"duration_s": 1000.0, "seed": 3, "hardware": {"device": "h100-sxm", "tensor_parallel": 2}}
    sim_a, sim_b = Simulation(scenario(workload=base, **kw)), Simulation(scenario(workload=items, **kw))
    a, b = sim_a.run().table, sim_b.run().table
    assert a.num_requests == b.num_requests >= 1
    first = 0
    extra_s = item_time_s(step_params(sim_b.scenario, sim_b.deployment), 2 * 3e12 / 2, 2 * 4e8 / 2)
    assert extra_s > 0
    ttft = lambda t: t.first_token_s[first] - t.arrival_s[first]  # noqa: E731
    assert ttft(b) - ttft(a) == pytest.approx(extra_s, rel=1e-9)
    assert (b.items == 2).all() and (a.items == 0).all()


def test_items_add_prompt_tokens_and_need_a_roofline():
    workload = dict(CHAT, items={"kind": "image", "per_request": {"dist": "uniform", "low": 1, "high": 3},
                                 "flops_per_item": 1e11, "prompt_tokens_per_item": 576})
    plain = Simulation(scenario(workload=CHAT)).requests
    with_items = Simulation(scenario(workload=workload)).requests
    np.testing.assert_array_equal(with_items.input_tokens - 576 * with_items.items, plain.input_tokens)
    with pytest.raises(InputError, match="constant"):
        Simulation(scenario(workload=workload, perf={"model": "constant", "prefill_s_per_token": 1e-4}))


def test_tags_must_be_key_value():
    with pytest.raises(InputError) as exc:
        scenario(workload=dict(CHAT, tags=["team"]))
    assert exc.value.where == "workload.tags[0]"
