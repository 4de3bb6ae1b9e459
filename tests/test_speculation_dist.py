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
