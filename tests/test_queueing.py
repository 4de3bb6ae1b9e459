"""The simulator against queueing theory (docs/design.md section 5).

Each configuration runs over several seeds; the per-seed mean wait after a warm-up is one
observation, and the theory value must fall inside the 99 % Student-t confidence interval of
those observations. Service times are exactly `tokens x s_per_token`, so the exact moments of
the (geometric) token distribution give the exact Pollaczek-Khinchine value.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from simcost.analysis.queueing import (
    QUEUE_MEAN_TOKENS,
    ceil_exponential_moments,
    confidence_interval,
    erlang_b,
    erlang_c,
    measured_waits_s,
    mg1_mean_wait_s,
    mmc_mean_wait_s,
    queue_scenario,
)
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

SEEDS = range(8)
MEAN_TOKENS = QUEUE_MEAN_TOKENS


def ci99(samples) -> tuple[float, float]:
    return confidence_interval(samples, 0.99)


def per_seed_mean_wait(**kw) -> list[float]:
    return [float(measured_waits_s(queue_scenario(seed=s, **kw)).mean()) for s in SEEDS]


@pytest.mark.parametrize("dist", ["exponential", "fixed"])
def test_single_server_matches_pollaczek_khinchine(dist):
    lam, s_mean = 0.7, 1.0
    a = s_mean / MEAN_TOKENS  # seconds per token
    if dist == "exponential":
        en, en2 = ceil_exponential_moments(MEAN_TOKENS)
    else:
        en, en2 = MEAN_TOKENS, MEAN_TOKENS**2
    wq_theory = mg1_mean_wait_s(lam, a * en, a * a * en2)  # M/M/1: rho/(mu-lam); M/D/1: half of it
    lo, hi = ci99(per_seed_mean_wait(rate_per_s=lam, service_mean_s=s_mean, dist=dist, servers=1,
                                     router="round_robin", duration_s=12000, warmup_s=500))
    assert lo <= wq_theory <= hi, (dist, wq_theory, lo, hi)


def test_shared_queue_matches_erlang_c():
    c, lam, s_mean = 3, 2.1, 1.0
    en, _ = ceil_exponential_moments(MEAN_TOKENS)
    mu = 1.0 / (s_mean / MEAN_TOKENS * en)
    prob_wait = erlang_c(c, lam / mu)
    wq_theory = mmc_mean_wait_s(c, lam, mu)
    means, waited = [], []
    for s in SEEDS:
        w = measured_waits_s(queue_scenario(seed=s, rate_per_s=lam, service_mean_s=s_mean, dist="exponential", servers=c,
                                 router="shared_queue", duration_s=6000, warmup_s=300))
        means.append(w.mean())
        waited.append((w > 0).mean())
    lo, hi = ci99(means)
    assert lo <= wq_theory <= hi, (wq_theory, lo, hi)
    lo, hi = ci99(waited)
    assert lo <= prob_wait <= hi, (prob_wait, lo, hi)


def test_join_shortest_queue_between_erlang_c_and_random_split():
    """JSQ without jockeying waits longer than a shared queue and shorter than a random split."""
    c, lam, s_mean = 3, 2.1, 1.0
    en, en2 = ceil_exponential_moments(MEAN_TOKENS)
    a = s_mean / MEAN_TOKENS
    mu = 1.0 / (a * en)
    shared = mmc_mean_wait_s(c, lam, mu)
    random_split = mg1_mean_wait_s(lam / c, a * en, a * a * en2)
    lo, hi = ci99(per_seed_mean_wait(rate_per_s=lam, service_mean_s=s_mean, dist="exponential", servers=c,
                                     router="join_shortest_queue", duration_s=6000, warmup_s=300))
    assert shared < lo and hi < random_split, (shared, lo, hi, random_split)


def test_littles_law():
    """Time-average number in system = arrival rate x mean time in system, over a run that starts
    and ends empty. The sampler's grid (10 ms against ~1 s sojourns) bounds the difference."""
    scn = queue_scenario(seed=3, rate_per_s=2.1, service_mean_s=1.0, dist="exponential", servers=3,
                         router="shared_queue", duration_s=3000, warmup_s=0)
    sim = Simulation(scn)
    dt = 0.01
    samples = []

    def sampler(env: simpy.Environment):
        while sim.fleet.num_completed < len(sim.requests):  # stop with the last request
            samples.append(sim.fleet.num_in_system())
            yield env.timeout(dt)

    sim.env.process(sampler(sim.env))
    t = sim.run().table
    assert (t.status == COMPLETED).all()
    end_s = float(t.finish_s.max())
    area = float(np.sum(samples[: int(end_s / dt)]) * dt)  # integral of N(t) over [0, end]
    sojourn_sum = float((t.finish_s - t.arrival_s).sum())
    assert area == pytest.approx(sojourn_sum, rel=0.01)


def test_formulas_against_known_values():
    """The formulas themselves, against textbook values (so a wrong formula cannot hide behind
    a simulator with the same mistake)."""
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert mmc_mean_wait_s(1, 0.7, 1.0) == pytest.approx(0.7 / 0.3)
    assert mg1_mean_wait_s(0.5, 1.0, 1.0) == pytest.approx(0.5)  # M/D/1: rho / (2 mu (1 - rho))
    en, en2 = ceil_exponential_moments(3.0)
    n = np.arange(1, 400)
    pmf = np.exp(-(n - 1) / 3.0) - np.exp(-n / 3.0)
    assert en == pytest.approx((n * pmf).sum()) and en2 == pytest.approx((n * n * pmf).sum())
