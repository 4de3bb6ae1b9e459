"""The simulator against queueing theory (DESIGN.md section 5).

Each configuration runs over several seeds; the per-seed mean wait after a warm-up is one
observation, and the theory value must fall inside the 99 % Student-t confidence interval of
those observations. Service times are exactly `tokens x s_per_token`, so the exact moments of
the (geometric) token distribution give the exact Pollaczek-Khinchine value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy
from scipy import stats

from scenarios import queue_scenario
from simcost.request_table import COMPLETED
from simcost.sim import Simulation

SEEDS = range(8)
MEAN_TOKENS = 2000.0


def geometric_moments(mean_tokens: float) -> tuple[float, float]:
    """E[N], E[N^2] of N = ceil(Exp(mean)): geometric on 1, 2, ... with p = 1 - exp(-1/mean)."""
    p = 1.0 - math.exp(-1.0 / mean_tokens)
    return 1.0 / p, (2.0 - p) / p**2


def waits(scn) -> tuple[np.ndarray, Simulation, object]:
    sim = Simulation(scn)
    res = sim.run()
    t = res.table
    measured = (t.status == COMPLETED) & (t.arrival_s >= scn.warmup_s)
    return (t.first_scheduled_s - t.arrival_s)[measured], sim, res


def ci99(samples) -> tuple[float, float]:
    samples = np.asarray(samples)
    half = stats.t.ppf(0.995, len(samples) - 1) * samples.std(ddof=1) / math.sqrt(len(samples))
    return samples.mean() - half, samples.mean() + half


def erlang_c(servers: int, offered: float) -> float:
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    return servers * b / (servers - offered * (1 - b))


def per_seed_mean_wait(**kw) -> list[float]:
    return [float(waits(queue_scenario(seed=s, **kw))[0].mean()) for s in SEEDS]


@pytest.mark.parametrize("dist", ["exponential", "fixed"])
def test_single_server_matches_pollaczek_khinchine(dist):
    lam, s_mean = 0.7, 1.0
    a = s_mean / MEAN_TOKENS  # seconds per token
    if dist == "exponential":
        en, en2 = geometric_moments(MEAN_TOKENS)
    else:
        en, en2 = MEAN_TOKENS, MEAN_TOKENS**2
    es, es2 = a * en, a * a * en2
    rho = lam * es
    wq_theory = lam * es2 / (2 * (1 - rho))  # M/M/1 gives rho/(mu-lam); M/D/1 half of it
    lo, hi = ci99(per_seed_mean_wait(rate_per_s=lam, service_mean_s=s_mean, dist=dist, servers=1,
                                     router="round_robin", duration_s=12000, warmup_s=500))
    assert lo <= wq_theory <= hi, (dist, wq_theory, lo, hi)


def test_shared_queue_matches_erlang_c():
    c, lam, s_mean = 3, 2.1, 1.0
    en, _ = geometric_moments(MEAN_TOKENS)
    mu = 1.0 / (s_mean / MEAN_TOKENS * en)
    prob_wait = erlang_c(c, lam / mu)
    wq_theory = prob_wait / (c * mu - lam)
    means, waited = [], []
    for s in SEEDS:
        w = waits(queue_scenario(seed=s, rate_per_s=lam, service_mean_s=s_mean, dist="exponential", servers=c,
                                 router="shared_queue", duration_s=6000, warmup_s=300))[0]
        means.append(w.mean())
        waited.append((w > 0).mean())
    lo, hi = ci99(means)
    assert lo <= wq_theory <= hi, (wq_theory, lo, hi)
    lo, hi = ci99(waited)
    assert lo <= prob_wait <= hi, (prob_wait, lo, hi)


def test_join_shortest_queue_between_erlang_c_and_random_split():
    """JSQ without jockeying waits longer than a shared queue and shorter than a random split."""
    c, lam, s_mean = 3, 2.1, 1.0
    en, en2 = geometric_moments(MEAN_TOKENS)
    a = s_mean / MEAN_TOKENS
    mu = 1.0 / (a * en)
    shared = erlang_c(c, lam / mu) / (c * mu - lam)
    split_rho = lam / c / mu
    random_split = (lam / c) * a * a * en2 / (2 * (1 - split_rho))
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
