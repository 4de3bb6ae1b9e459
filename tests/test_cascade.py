"""Cascades (fleet.cascade): the share escalated follows the configured rate, per-workload rates
or confidence threshold; each escalation is a second, paid call with the same prompt; the
summary's added latency, user-visible latency, stage dollars and quality proxy match hand
computations from the request table."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario
from test_api_pools import check_bill_adds_up

from simcost.errors import InputError
from simcost.metrics.pool_summary import served_pool
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

BIG = {"name": "big", "provider": "openai", "model": "gpt-4o", "role": "cascade",
       "rate_limits": {"requests_per_min": 10_000, "tokens_per_min": 1e8}}
WORKLOAD = {"arrivals": {"process": "poisson", "rate_per_s": 5.0},
            "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 200}}


@pytest.fixture
def fixed():
    sim = Simulation(scenario(duration_s=80.0, workload=WORKLOAD, fleet={
        "replicas": 1, "api_pools": [BIG], "cascade": {"escalate_to": "big", "escalation_rate": 0.3}}))
    result = sim.run()
    return sim, result


def test_a_fixed_rate_escalates_that_share_and_pays_both_calls(fixed):
    sim, r = fixed
    c, t = r.summary["cascade"], r.table
    first = np.array(sorted(sim.cascade.escalated_to), dtype=np.int64)
    second = np.array([sim.cascade.escalated_to[x] for x in first], dtype=np.int64)
    n = c["first_answers"]
    assert c["escalated"] == len(first) and abs(len(first) - 0.3 * n) < 4 * np.sqrt(n * 0.3 * 0.7)
    # the second call resends the prompt, asks for as long an answer, and leaves when the first answered
    np.testing.assert_array_equal(t.input_tokens[second], t.input_tokens[first])
    np.testing.assert_array_equal(t.output_tokens[second], t.output_tokens[first])
    np.testing.assert_array_equal(t.arrival_s[second], t.finish_s[first])
    assert (r.api.pool_of[second] == 0).all() and (r.api.pool_of[first] == -1).all()  # big answered only escalations
    assert r.summary["api"]["big"]["requests"]["sent"] == len(second)
    # dollars: the escalations are the API's bill; the first stage is the fleet's allocated cost
    assert c["escalation_usd"] == pytest.approx(r.bill.api_usd, rel=1e-12)
    assert c["first_stage_usd"] == pytest.approx(r.bill.request_usd.sum() - r.bill.api_usd, rel=1e-9)
    check_bill_adds_up(r)
    # latency: what an escalation adds, and the final answer as the user sees it
    added = t.finish_s[second] - t.arrival_s[second]
    assert c["added_latency_s"]["mean"] == pytest.approx(added.mean())
    answered = np.array(sorted(sim.cascade.first_stage), dtype=np.int64)
    final = t.finish_s[answered].copy()
    final[np.isin(answered, first)] = t.finish_s[second]
    assert c["user_e2el_s"]["p95"] == pytest.approx(np.percentile(final - t.arrival_s[answered], 95))
    kept = n - len(first)
    assert c["quality_proxy"] == pytest.approx((0.8 * kept + 1.0 * len(first)) / n)


def test_confidence_escalates_answers_below_the_threshold():
    sim = Simulation(scenario(duration_s=80.0, workload=WORKLOAD, fleet={
        "replicas": 1, "api_pools": [BIG], "cascade": {"escalate_to": "big",
                                                       "confidence": {"alpha": 2, "beta": 2, "threshold": 0.5}}}))
    r = sim.run()
    conf = sim.cascade.confidence
    escalated = set(sim.cascade.escalated_to)
    assert all((conf[x] < 0.5) == (x in escalated) for x in conf)
    n = len(conf)
    assert abs(len(escalated) - 0.5 * n) < 4 * np.sqrt(n * 0.25)  # Beta(2, 2)'s CDF at 0.5 is 1/2
    kept = [conf[x] for x in conf if x not in escalated]
    assert r.summary["cascade"]["quality_proxy"] == pytest.approx((sum(kept) + len(escalated)) / n)


def test_rates_per_workload_and_two_self_hosted_pools():
    mix = {"mix": [{"name": "chat", **WORKLOAD}, {"name": "code", **WORKLOAD}]}
    pools = [{"name": "small", "hardware": {"device": "h100-sxm"}}, {"name": "large", "hardware": {"device": "h100-sxm"}}]
    sim = Simulation(scenario(duration_s=40.0, workload=mix, fleet={
        "pools": pools, "cascade": {"first": "small", "escalate_to": "large",
                                    "rates": [{"workload": "chat", "rate": 1.0}]}}))
    r = sim.run()
    t = r.table
    pool = served_pool(t, np.array([life.pool for life in sim.fleet.roster.lives], dtype=np.int64))
    first = np.array(sorted(sim.cascade.first_stage), dtype=np.int64)
    done = first[t.status[first] == COMPLETED]
    chat, code = done[t.workload[done] == 0], done[t.workload[done] == 1]
    assert set(sim.cascade.escalated_to) == set(chat.tolist()) and len(code) > 0  # all chat, no code
    assert (pool[first] == 0).all()  # every first answer came from the small pool
    assert (pool[list(sim.cascade.escalated_to.values())] == 1).all()  # every escalation from the large one
    assert r.summary["cascade"]["escalation_rate"] == pytest.approx(len(chat) / len(done))


@pytest.mark.parametrize(("cascade", "where"), [
    ({"escalate_to": "nope", "escalation_rate": 0.1}, "fleet.cascade.escalate_to"),
    ({"escalate_to": "big"}, "fleet.cascade"),
    ({"escalate_to": "big", "escalation_rate": 0.1, "confidence": {"alpha": 1, "beta": 1, "threshold": 0.5}},
     "fleet.cascade"),
    ({"escalate_to": "big", "escalation_rate": 1.5}, "fleet.cascade.escalation_rate"),
    ({"escalate_to": "big", "rates": [{"workload": "nope", "rate": 0.1}]}, "fleet.cascade"),
])
def test_bad_cascades_name_their_key(cascade, where):
    with pytest.raises(InputError) as e:
        scenario(fleet={"api_pools": [BIG], "cascade": cascade})
    assert str(e.value).startswith(where)
