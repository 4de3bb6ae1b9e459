"""Cost allocation policies (`cost` section): conservation for every policy, on random step logs
and on real runs; showback and chargeback differ only in where the unallocated dollars go; hand-
built logs for token weights, equal shares and the zero-weight fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_cases import random_step_log, records_log, settle_with
from scenarios import scenario

from simcost.cost.ledger import member_weights
from simcost.errors import InputError
from simcost.metrics.summary import records
from simcost.results.writer import format_summary
from simcost.scenario.pricing import CostConfig
from simcost.simulation.simulation import run

POLICIES = {
    "tokens": {},
    "tokens, output x3": {"decode_weight": 3.0},
    "tokens, free prompts": {"prefill_weight": 0.0},
    "tokens, free output": {"decode_weight": 0.0},
    "tokens, all weights 0": {"prefill_weight": 0.0, "decode_weight": 0.0},
    "equal": {"allocation": "equal"},
}
FLEETS = {  # each leaves a different kind of unallocated dollar
    "on demand, 1 h minimum": {"pricing": {"min_charge_s": 3600}},
    "savings plan": {"pricing": {"model": "savings_plan", "commitment_usd_per_hour": 20.0, "discount": 0.3}},
    "owned": {"pricing": {"model": "owned", "capex_usd_per_device": 30000, "usd_per_kwh": 0.1}},
}


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def both(steps, num_requests, horizon_s, policy: dict, fleet: dict, completed=None):
    show = settle_with(steps, num_requests, horizon_s, policy, fleet, completed)
    charge = settle_with(steps, num_requests, horizon_s, {**policy, "unallocated": "chargeback"}, fleet, completed)
    return show, charge


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(list(POLICIES)), fleet=st.sampled_from(list(FLEETS)),
       num_records=st.integers(0, 30), num_requests=st.integers(1, 20), replicas=st.integers(1, 3))
def test_every_policy_conserves_the_bill(seed, policy, fleet, num_records, num_requests, replicas):
    rng = np.random.default_rng(seed)
    steps, horizon_s = random_step_log(rng, num_records, num_requests, replicas)
    show, charge = both(steps, num_requests, horizon_s, POLICIES[policy], {**FLEETS[fleet], "replicas": replicas})
    # showback: allocated + unallocated = the bill, the unallocated on its own line
    assert rel(show.request_usd.sum() + show.unallocated_usd, show.total_usd) < 1e-9
    assert show.spread_usd == 0 and not show.unallocated_share_usd.any()
    assert show.unallocated_left_usd == show.unallocated_usd
    # chargeback: the requests pay the whole bill (with no steps, in equal shares)
    assert rel(charge.charged_usd.sum(), charge.total_usd) < 1e-9
    assert charge.unallocated_left_usd == 0
    # the two differ only in where the unallocated dollars go
    np.testing.assert_array_equal(show.request_usd, charge.request_usd)
    assert (show.total_usd, show.unallocated_usd) == (charge.total_usd, charge.unallocated_usd)
    tenant = rng.integers(0, 3, num_requests)
    allocated = show.request_usd.sum()
    for t in range(3):
        rows = tenant == t
        share = show.request_usd[rows].sum() / allocated if allocated > 0 else rows.mean()
        moved = charge.charged_usd[rows].sum() - show.charged_usd[rows].sum()
        assert moved == pytest.approx(share * show.unallocated_usd, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(list(POLICIES)))
def test_member_weights_follow_the_rule(seed, policy):
    rng = np.random.default_rng(seed)
    steps, _ = random_step_log(rng, 20, 10, 2)
    cost = CostConfig(**POLICIES[policy])
    rule = [1.0 if cost.allocation == "equal" else tokens * (cost.prefill_weight if prefill else cost.decode_weight)
            for tokens, prefill in zip(steps.member_tokens, steps.member_prefill)]
    np.testing.assert_array_equal(member_weights(steps, cost), rule)


# --- hand-built logs: $3.60/h = $0.001 per step-second ----------------------------------------

# a chunked step (0-2 s): request 0 decodes 1 token while request 1 prefills 300; then a decode
# span (2-4 s) of both, one token each per step
CHUNKED = records_log([(0, 0.0, [2.0], [0, 1], [1, 300], [False, True]),
                       (0, 2.0, [3.0, 4.0], [0, 1], [2, 2], [False, False])])


def test_prefill_weight_zero_makes_prompts_free():
    b = settle_with(CHUNKED, 2, 4.0, {"prefill_weight": 0.0})
    np.testing.assert_allclose(b.request_usd, [0.002 + 0.001, 0.001])  # request 1 pays only its decode tokens
    tokens = settle_with(CHUNKED, 2, 4.0, {})
    np.testing.assert_allclose(tokens.request_usd, [0.002 / 301 + 0.001, 0.002 * 300 / 301 + 0.001])


def test_equal_split_ignores_tokens():
    b = settle_with(CHUNKED, 2, 4.0, {"allocation": "equal"})
    np.testing.assert_allclose(b.request_usd, [0.002, 0.002])
    three = records_log([(0, 0.0, [3.0], [0, 1, 2], [1, 10, 100], [True, True, True])])
    np.testing.assert_allclose(settle_with(three, 3, 3.0, {"allocation": "equal"}).request_usd, [0.001] * 3)


def test_a_record_weighing_nothing_is_split_equally():
    # decode_weight 0 on a decode-only span: no member has weight, so they share equally
    b = settle_with(CHUNKED, 2, 4.0, {"decode_weight": 0.0})
    np.testing.assert_allclose(b.request_usd, [0.0 + 0.001, 0.002 + 0.001])
    # prefill_weight 0 on a prefill-only step: the same (prompts are free only next to decode tokens)
    prompts = records_log([(0, 0.0, [2.0], [0, 1], [100, 300], [True, True])])
    np.testing.assert_allclose(settle_with(prompts, 2, 2.0, {"prefill_weight": 0.0}).request_usd, [0.001, 0.001])


def test_chargeback_with_nothing_allocated():
    empty = records_log([])
    # a 30 s run billed the 60 s minimum ($0.06: 30 s idle, 30 s minimum), equally over completed requests
    b = settle_with(empty, 3, 30.0, {"unallocated": "chargeback"}, completed=np.array([True, False, True]))
    np.testing.assert_allclose(b.charged_usd, [0.03, 0.0, 0.03])
    nobody = settle_with(empty, 3, 30.0, {"unallocated": "chargeback"}, completed=np.zeros(3, dtype=bool))
    assert not nobody.charged_usd.any() and nobody.unallocated_left_usd == pytest.approx(0.06)


def test_cost_section_is_validated():
    with pytest.raises(InputError, match="cost.prefill_weight"):
        scenario(cost={"prefill_weight": -1})
    with pytest.raises(InputError, match="cost.allocation"):
        scenario(cost={"allocation": "equal", "decode_weight": 2})
    with pytest.raises(InputError, match="cost.unallocated"):
        scenario(cost={"unallocated": "chargebak"})


# --- real runs: two tenants, one with sessions, on two replicas (idle time to place) ----------

MIX = {"mix": [
    {"name": "chat", "tenant": "consumer", "arrivals": {"process": "poisson", "rate_per_s": 1.0},
     "input_tokens": {"dist": "uniform", "low": 50, "high": 500}, "output_tokens": {"dist": "uniform", "low": 20, "high": 200},
     "session": {"turns": {"dist": "uniform", "low": 1, "high": 4}, "think_time": {"dist": "fixed", "value_s": 2.0}}},
    {"name": "code", "tenant": "devtools", "arrivals": {"process": "poisson", "rate_per_s": 3.0},
     "input_tokens": {"dist": "uniform", "low": 500, "high": 2000}, "output_tokens": {"dist": "fixed", "value": 20}},
]}
RUN_POLICIES = {"tokens": {}, "free prompts": {"prefill_weight": 0.0}, "equal": {"allocation": "equal"}}


@pytest.fixture(scope="module", params=[(p, e) for p in RUN_POLICIES for e in ("prefill_first", "chunked")])
def runs(request):
    policy, engine = request.param
    common = {"workload": MIX, "fleet": {"replicas": 2}, "engine": {"policy": engine}}
    return tuple(run(scenario(**common, cost={**RUN_POLICIES[policy], "unallocated": u}))
                 for u in ("showback", "chargeback"))


def test_runs_conserve_the_bill(runs):
    for r in runs:
        s, c, b = r.summary, r.summary["cost"], r.bill
        left = c["allocation"]["unallocated_left_usd"]
        assert rel(sum(g["total_usd"] for g in s["by_tenant"].values()) + left, c["total_usd"]) < 1e-9
        assert rel(sum(g["total_usd"] for g in s["by_workload"].values()) + left, c["total_usd"]) < 1e-9
        assert rel(sum(c["by_category"].values()), c["total_usd"]) < 1e-9
        csv = records(r.scenario, r.table, b.request_usd, b.unallocated_share_usd)
        assert rel(csv["total_usd"].sum() + left, c["total_usd"]) < 1e-9
        assert c["unallocated_usd"] > 0  # the second replica idles: there is something to place


def test_runs_differ_only_in_where_unallocated_goes(runs):
    show, charge = (r.summary for r in runs)
    np.testing.assert_array_equal(runs[0].bill.request_usd, runs[1].bill.request_usd)
    unallocated = show["cost"]["unallocated_usd"]
    assert show["cost"]["allocation"]["unallocated_left_usd"] == unallocated
    assert charge["cost"]["allocation"]["unallocated_left_usd"] == 0
    for name, g in show["by_tenant"].items():
        h = charge["by_tenant"][name]
        assert g["unallocated_share_usd"] == 0 and h["allocated_usd"] == g["allocated_usd"]
        share = g["allocated_usd"] / show["cost"]["allocated_usd"]
        assert h["total_usd"] - g["total_usd"] == pytest.approx(share * unallocated, rel=1e-9)


def test_unit_economics_in_the_summary(runs):
    s = runs[1].summary
    c = s["cost"]
    for key in ("usd_per_request", "usd_per_1m_input_tokens", "usd_per_1m_output_tokens", "usd_per_session"):
        assert c[key] > 0
    assert s["energy"]["kwh_per_1k_requests"] > 0 and s["energy"]["gco2_per_1k_requests"] > 0
    consumer, devtools = s["by_tenant"]["consumer"], s["by_tenant"]["devtools"]
    assert consumer["usd_per_session"] == pytest.approx(consumer["total_usd"] / consumer["sessions"])
    # the run's $ per session is fully loaded (the sessions' share of the whole bill): under
    # chargeback, what the one tenant with sessions pays per session
    assert c["usd_per_session"] == pytest.approx(consumer["usd_per_session"], rel=1e-9)
    assert "usd_per_session" not in devtools  # no sessions there
    assert devtools["usd_per_request"] == pytest.approx(devtools["total_usd"] / devtools["completed"])
    assert c["by_category"]["provisioning"] == c["by_category"]["loading"] == 0.0


def test_printed_tables(runs):
    show, charge = (format_summary(r.summary) for r in runs)
    assert "showback $" in show and "(unallocated)" in show and "left as its own line" in show
    assert "chargeback $" in charge and "(unallocated)" not in charge and "by allocated cost" in charge


def test_pools_and_tags_add_up():
    """Pool rows add up to the bill (no commitment here); tag groups hold their workloads' requests."""
    from scenarios import scenario as make

    from simcost.simulation.simulation import Simulation

    chat = {"name": "chat", "tags": ["team=assist", "env=prod"], "arrivals": {"process": "poisson", "rate_per_s": 2.0},
            "input_tokens": {"dist": "fixed", "value": 300}, "output_tokens": {"dist": "fixed", "value": 50}}
    code = dict(chat, name="code", tags=["team=devtools", "env=prod"])
    res = Simulation(make(workload={"mix": [chat, code]}, fleet={"router": "join_shortest_queue",
                          "disaggregation": {"prefill_replicas": 1, "decode_replicas": 2}})).run()
    s = res.summary
    assert sum(p["usd"] for p in s["pools"]) == pytest.approx(res.bill.total_usd, rel=1e-9)
    assert sum(p["allocated_usd"] for p in s["pools"]) == pytest.approx(res.bill.busy_usd, rel=1e-9)
    by_tag = s["by_tag"]
    assert by_tag["env=prod"]["arrived"] == s["requests"]["arrived"]
    assert by_tag["team=assist"]["arrived"] + by_tag["team=devtools"]["arrived"] == s["requests"]["arrived"]
    assert by_tag["team=assist"]["arrived"] == s["by_workload"]["chat"]["arrived"]
