"""Speculative decoding: the accepted-token distribution, token conservation, the step cost, and
its scenario checks."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.engine.speculation import (
    Speculation,
    accepted_drafts,
    expected_tokens_per_step,
    step_s,
    uniforms,
)
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.perf.step_model import step_params, step_time_s
from simcost.simulation.simulation import Simulation

EAGLE = {"method": "eagle", "num_speculative_tokens": 3, "acceptance_rate": 0.7}
LONG = {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
        "input_tokens": {"dist": "uniform", "low": 50, "high": 400},
        "output_tokens": {"dist": "fixed", "value": 600}}


@pytest.mark.parametrize("a, k", [(0.7, 3), (0.5, 1), (0.9, 5), (0.3, 4)])
def test_tokens_per_step_have_the_truncated_geometric_mean(a, k):
    n = 200_000
    u = uniforms(12345, np.arange(n, dtype=np.int64) % 997, np.arange(n, dtype=np.int64) // 997)
    tokens = 1 + accepted_drafts(u, np.full(n, a), k)
    expected = expected_tokens_per_step(a, k)
    assert expected == pytest.approx(sum(a ** j for j in range(k + 1)))  # (1 - a^(k+1)) / (1 - a)
    assert abs(tokens.mean() - expected) < 4 * tokens.std() / np.sqrt(n)
    # and the whole distribution: P(J = j) = a^j (1 - a) below k, a^k at k
    for j in range(k + 1):
        p = a ** j * (1 - a) if j < k else a ** k
        assert abs(np.mean(tokens == j + 1) - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-12


def test_draws_are_uniform_and_the_extremes_are_exact():
    u = uniforms(7, np.arange(100_000, dtype=np.int64), np.zeros(100_000, dtype=np.int64))
    assert 0 < u.min() and u.max() < 1
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 9_500  # 10,000 expected per bin
    assert (accepted_drafts(u, np.zeros(len(u)), 4) == 0).all()  # nothing accepted: one token per step
    assert (accepted_drafts(u, np.ones(len(u)), 4) == 4).all()  # all accepted: k + 1 tokens


def _run(speculative=None, policy="prefill_first", workload=LONG, **extra):
    engine = {"policy": policy, **({"speculative": speculative} if speculative else {})}
    sim = Simulation(scenario(engine=engine, workload=workload, duration_s=60.0, **extra))
    return sim, sim.run()


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_every_output_token_is_produced_exactly_once(policy):
    plain_sim, plain = _run(policy=policy)
    sim, spec = _run(EAGLE, policy=policy)
    t = sim.table
    assert spec.summary["requests"] == plain.summary["requests"]
    def output_tokens(summary):
        return summary["throughput"]["output_tokens_per_s"] * summary["measured_window_s"]
    assert output_tokens(spec.summary) == pytest.approx(output_tokens(plain.summary), rel=1e-12)
    assert (t.generated == t.output_tokens).all() and (plain_sim.table.generated == t.generated).all()
    for rid in range(len(t.output_tokens)):  # each token has one time, in order, none before the request
        times = t.token_time_s[t.token_offset[rid]:t.token_offset[rid] + t.output_tokens[rid]]
        assert np.isfinite(times).all() and (np.diff(times) >= 0).all() and times[0] >= t.arrival_s[rid]
    steps = sim.log.arrays()
    decode = ~steps.member_prefill
    # the step log carries every token once: prompt tokens plus one first token per request, and the rest in decode steps
    assert steps.member_tokens[decode].sum() + len(t.output_tokens) == t.generated.sum()


def test_speculation_emits_the_expected_tokens_per_step_and_cuts_tpot():
    sim, spec = _run(EAGLE)
    steps = sim.log.arrays()
    decode_members = ~steps.member_prefill
    per_sequence_step = steps.member_tokens[decode_members]
    # 600-token answers: the cap at the last step barely matters
    assert per_sequence_step.mean() == pytest.approx(expected_tokens_per_step(0.7, 3), rel=0.02)
    _, plain = _run()
    assert spec.summary["tpot_s"]["mean"] < 0.6 * plain.summary["tpot_s"]["mean"]


def test_the_same_seed_gives_the_same_run_and_a_request_keeps_its_draws():
    a, _ = _run(EAGLE)
    b, _ = _run(EAGLE)
    assert np.array_equal(a.table.token_time_s, b.table.token_time_s, equal_nan=True)
    # the draws depend on (request, step) only, not on the batch
    u = uniforms(99, np.array([5, 6, 7]), np.array([2, 2, 2]))
    assert u[0] == uniforms(99, np.array([5]), np.array([2]))[0]


def test_step_cost_is_verification_plus_drafting():
    s = scenario()
    dep = plan_deployment(s)
    p = step_params(s, dep)
    kv = np.array([500, 900, 1300])
    eagle = Speculation(3, np.array([0.7]), 1, None, 0.05)
    verify = step_time_s(p, 0, 3 * 4, float((kv * 4).sum() + 3 * 4 * 5 / 2), float(kv.sum()), 0)
    decode = step_time_s(p, 0, 3, float((kv + 1).sum()), float(kv.sum()), 0)
    assert step_s(p, eagle, kv) == pytest.approx(verify + 3 * 0.05 * decode)
    draft_s = scenario(model={"name": "llama-3.2-1b"})
    draft = Speculation(3, np.array([0.7]), 1, step_params(draft_s, plan_deployment(draft_s)))
    assert step_s(p, draft, kv) > verify
    # verifying 4 tokens per sequence costs less than 4 decode steps (weights are read once)
    assert verify < 4 * decode


def test_per_workload_acceptance_rates():
    mix = {"mix": [{"name": "chat", **LONG}, {"name": "code", **LONG}]}
    spec = {**EAGLE, "acceptance_rate": 0.0, "per_workload": [{"workload": "code", "acceptance_rate": 1.0}]}
    sim, _ = _run(spec, workload=mix)
    steps, t = sim.log.arrays(), sim.table
    decode = ~steps.member_prefill
    workload = t.workload[steps.member_request[decode]]
    tokens = steps.member_tokens[decode]
    assert (tokens[workload == 0] == 1).all()  # chat: every draft rejected
    assert (tokens[workload == 1] <= 4).all() and (tokens[workload == 1] == 4).mean() > 0.95  # code: all accepted


@pytest.mark.parametrize("speculative, where", [
    ({"method": "draft", "num_speculative_tokens": 3, "acceptance_rate": 0.7}, "engine.speculative.draft_model"),
    ({**EAGLE, "draft_model": "llama-3.2-1b"}, "engine.speculative.draft_model"),
    ({**EAGLE, "acceptance_rate": 1.5}, "engine.speculative.acceptance_rate"),
    ({**EAGLE, "method": "medusa"}, "engine.speculative.method"),
    ({**EAGLE, "per_workload": [{"workload": "nope", "acceptance_rate": 0.5}]},
     "engine.speculative.per_workload[0].workload"),
    ({"method": "draft", "num_speculative_tokens": 3, "acceptance_rate": 0.7, "draft_model": "llama-nope"},
     "engine.speculative.draft_model"),
])
def test_bad_speculative_settings_name_the_key(speculative, where):
    with pytest.raises(InputError) as err:
        Simulation(scenario(engine={"speculative": speculative}))
    assert err.value.where == where and "\n" not in str(err.value)


def test_request_level_policies_refuse_speculation():
    with pytest.raises(InputError) as err:
        scenario(engine={"policy": "static", "speculative": EAGLE})
    assert err.value.where == "engine.speculative"


# --- the lever ---------------------------------------------------------------------------------

def test_levers_offer_speculative_decoding_and_it_cuts_decode_time():
    from simcost.analysis.lever_plans import plan_levers, with_overrides
    from simcost.analysis.levers import run_lever
    from simcost.analysis.levers_config import LeversConfig
    from simcost.scenario.schema import to_dict

    base = scenario(workload=LONG, duration_s=30.0, slo={"ttft_s": 1.0, "tpot_s": 0.05, "attainment": 0.9})
    (plan,) = plan_levers(base, LeversConfig(), only=("speculative",))
    assert plan.skip_reason is None and plan.overrides["engine.speculative"]["method"] == "eagle"
    assert LeversConfig().effort_risk("speculative") == (2.0, 0.0)  # lossless: no quality risk
    raw = to_dict(base)
    plain = run_lever(raw, None, base.seed)
    fast = run_lever(with_overrides(raw, plan.overrides), None, base.seed)
    assert fast["p99_tpot_s"] < 0.6 * plain["p99_tpot_s"]
    # already speculating, or a request-level policy: skipped with the reason
    (again,) = plan_levers(scenario(engine={"speculative": EAGLE}), LeversConfig(), only=("speculative",))
    assert "already" in again.skip_reason
    (static,) = plan_levers(scenario(engine={"policy": "static"}), LeversConfig(), only=("speculative",))
    assert "iteration-level" in static.skip_reason


def test_a_draft_models_weights_come_out_of_the_kv_cache():
    plain = plan_deployment(scenario())
    draft = {"method": "draft", "num_speculative_tokens": 3, "acceptance_rate": 0.7, "draft_model": "llama-3.2-1b"}
    with_draft = plan_deployment(scenario(engine={"speculative": draft}))
    freed_tokens = plain.kv_capacity_tokens - with_draft.kv_capacity_tokens
    draft_bytes = 1_235_814_400 * 2  # Llama-3.2-1B's bf16 weights
    assert freed_tokens == pytest.approx(draft_bytes / plain.kv_bytes_per_token, abs=2 * plain.block_size)
    assert plan_deployment(scenario(engine={"speculative": EAGLE})).num_kv_blocks == plain.num_kv_blocks
