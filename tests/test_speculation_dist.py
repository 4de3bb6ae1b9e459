"""Speculative decoding with a per-request acceptance rate (acceptance_concentration): the rates
are Beta of the workload's mean, tokens per step follow the Beta moments, and runs stay exact."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.engine.speculation import Speculation, SpeculationState, request_acceptance
from simcost.errors import InputError
from simcost.simulation.simulation import Simulation

LONG = {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
        "input_tokens": {"dist": "uniform", "low": 50, "high": 400},
        "output_tokens": {"dist": "fixed", "value": 600}}


def test_request_rates_are_beta_with_the_given_mean_and_concentration():
    rates = np.array([request_acceptance(11, rid, 0.7, 20.0) for rid in range(20_000)])
    # Beta(14, 6): mean 0.7, variance m (1 - m) / (c + 1) = 0.21 / 21 = 0.01
    assert abs(rates.mean() - 0.7) < 4 * 0.1 / np.sqrt(len(rates))
    assert rates.var() == pytest.approx(0.01, rel=0.05)
    assert request_acceptance(11, 5, 0.7, 20.0) == request_acceptance(11, 5, 0.7, 20.0)  # fixed per (seed, request)
    assert request_acceptance(12, 5, 0.7, 20.0) != request_acceptance(11, 5, 0.7, 20.0)


def test_tokens_per_step_average_the_beta_moments():
    k, n_req, steps = 3, 4000, 50
    spec = Speculation(k, np.array([0.7]), 3, concentration_by_workload=np.array([4.0]))
    state = SpeculationState(spec)
    ids = np.arange(n_req, dtype=np.int64)
    total = 0.0
    for _ in range(steps):
        tokens = state.tokens(ids, np.zeros(n_req, dtype=np.int64), np.full(n_req, 10**6))
        total += tokens.sum()
        state.advance(ids, np.zeros(n_req, dtype=bool))
    # E[sum_{j<=k} a^j] with a ~ Beta(alpha, beta): E[a^j] = prod_{i<j} (alpha + i) / (alpha + beta + i)
    alpha, beta = 0.7 * 4.0, 0.3 * 4.0
    moments = [np.prod([(alpha + i) / (alpha + beta + i) for i in range(j)]) for j in range(k + 1)]
    fixed = sum(0.7 ** j for j in range(k + 1))
    assert sum(moments) > fixed  # convex in a: spread raises the mean tokens per step
    # (the per-request rates dominate the noise: 4000 requests of sd ~1 token-per-step each)
    assert total / (n_req * steps) == pytest.approx(sum(moments), abs=4 * 1.0 / np.sqrt(n_req))


def test_a_run_with_per_request_rates_produces_every_token_once():
    spec = {"method": "eagle", "num_speculative_tokens": 3, "acceptance_rate": 0.7, "acceptance_concentration": 5.0}
    sim = Simulation(scenario(engine={"policy": "chunked", "speculative": spec}, workload=LONG, duration_s=60.0))
    result = sim.run()
    t = sim.table
    assert (t.generated == t.output_tokens).all()
    assert int((~np.isnan(t.token_time_s)).sum()) == int(t.generated.sum())
    assert result.summary["requests"]["completed"] == len(t.output_tokens)


def test_a_bad_concentration_names_the_key():
    spec = {"method": "eagle", "num_speculative_tokens": 3, "acceptance_rate": 0.7, "acceptance_concentration": 0}
    with pytest.raises(InputError) as err:
        scenario(engine={"speculative": spec})
    assert str(err.value).startswith("engine.speculative.acceptance_concentration")


def test_mixed_chunked_steps_speculate_and_lose_no_token():
    spec = {"method": "eagle", "num_speculative_tokens": 3, "acceptance_rate": 0.7, "in_mixed_steps": True}
    busy = {**LONG, "arrivals": {"process": "poisson", "rate_per_s": 6.0}}
    engine = {"policy": "chunked", "max_num_batched_tokens": 512}
    sim = Simulation(scenario(engine={**engine, "speculative": spec}, workload=busy, duration_s=40.0))
    result = sim.run()
    t, steps = sim.table, sim.log.arrays()
    assert (t.generated == t.output_tokens).all() and result.summary["requests"]["completed"] == len(t.generated)
    for rid in range(len(t.output_tokens)):  # each token one time, in order
        times = t.token_time_s[t.token_offset[rid]:t.token_offset[rid] + t.output_tokens[rid]]
        assert np.isfinite(times).all() and (np.diff(times) >= 0).all()
    # decoders inside steps that carry prompt chunks emitted more than one token some of the time
    in_mixed = _decoders_in_mixed_steps(steps)
    assert in_mixed.any() and steps.member_tokens[in_mixed].mean() > 1.5
    assert steps.member_tokens[~steps.member_prefill].sum() + len(t.output_tokens) == t.generated.sum()
    # without the option those decoders get one token each
    plain = Simulation(scenario(engine={**engine, "speculative": {**spec, "in_mixed_steps": False}}, workload=busy,
                                duration_s=40.0))
    plain.run()
    p = plain.log.arrays()
    mixed_plain = _decoders_in_mixed_steps(p)
    assert mixed_plain.any() and (p.member_tokens[mixed_plain] == 1).all()


def _decoders_in_mixed_steps(steps) -> np.ndarray:
    """Members that decode in a record that also carries prompt chunks."""
    record = np.repeat(np.arange(len(steps.record_prefill)), np.diff(steps.record_member_offset))
    mixed = np.zeros(len(steps.record_prefill), dtype=bool)
    mixed[record[steps.member_prefill]] = True
    return mixed[record] & ~steps.member_prefill & steps.record_prefill[record]


def test_a_mixed_step_costs_the_chunks_and_the_verification_in_one_target_step_plus_drafting():
    from simcost.engine.speculation import mixed_step_s
    from simcost.perf.step_model import step_time_s

    s = scenario()
    p = step_params_of(s)
    spec = Speculation(3, np.array([0.7]), 1, draft_step_fraction=0.05)
    kv = np.array([100.0, 300.0])
    chunk_pairs = 256 * 257 / 2
    verify = step_time_s(p, 256, 2 * 4, chunk_pairs + (100 + 300) * 4 + 2 * 4 * 5 / 2, 400.0, 1)
    drafting = 3 * 0.05 * step_time_s(p, 0, 2, 402.0, 400.0, 0)
    assert mixed_step_s(p, spec, 256, chunk_pairs, 0.0, 1, kv) == pytest.approx(verify + drafting, rel=1e-12)


def step_params_of(s):
    from simcost.perf.deployment import plan_deployment
    from simcost.perf.step_model import step_params
    return step_params(s, plan_deployment(s))
