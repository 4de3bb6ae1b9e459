"""Queueing-theory results the simulator is tested against (docs/design.md section 5).

Also useful on their own for a first sizing guess: with one request per batch, a replica is a
server and these formulas give the mean wait.
"""

from __future__ import annotations

import math

import numpy as np

from simcost.scenario.scenario import Scenario, scenario_from_dict

QUEUE_MEAN_TOKENS = 2000.0


def erlang_b(servers: int, offered_load: float) -> float:
    """Blocking probability of M/M/c/c: B_0 = 1, B_k = a B_{k-1} / (k + a B_{k-1})."""
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    return b


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c (offered load a = lambda / mu < c)."""
    if offered_load >= servers:
        raise ValueError("Erlang C needs offered load below the number of servers")
    b = erlang_b(servers, offered_load)
    return servers * b / (servers - offered_load * (1 - b))


def mmc_mean_wait_s(servers: int, rate_per_s: float, service_rate_per_s: float) -> float:
    """Mean time in queue of M/M/c: C / (c mu - lambda)."""
    return erlang_c(servers, rate_per_s / service_rate_per_s) / (servers * service_rate_per_s - rate_per_s)


def mg1_mean_wait_s(rate_per_s: float, service_mean_s: float, service_second_moment_s2: float) -> float:
    """Pollaczek-Khinchine: Wq = lambda E[S^2] / (2 (1 - rho)); M/M/1 and M/D/1 are special cases."""
    rho = rate_per_s * service_mean_s
    if rho >= 1:
        raise ValueError("M/G/1 needs utilisation below 1")
    return rate_per_s * service_second_moment_s2 / (2 * (1 - rho))


def ceil_exponential_moments(mean: float) -> tuple[float, float]:
    """E[N], E[N^2] of N = ceil(Exponential(mean)), simcost's `exponential` length distribution:
    geometric on 1, 2, ... with p = 1 - exp(-1 / mean)."""
    p = 1.0 - math.exp(-1.0 / mean)
    return 1.0 / p, (2.0 - p) / p**2


def queue_scenario(*, rate_per_s: float, service_mean_s: float, dist: str, servers: int, router: str,
                   duration_s: float, seed: int, warmup_s: float) -> Scenario:
    """A scenario that is a textbook queue: Poisson arrivals, one request per batch, one output
    token, and a constant step-time model so that service time = prompt tokens x s_per_token.

    Prompts are QUEUE_MEAN_TOKENS long on average: `exponential` draws ceil(Exp(2000)) tokens
    (geometric; exact moments from ceil_exponential_moments), `fixed` exactly 2,000."""
    s_per_token = service_mean_s / QUEUE_MEAN_TOKENS
    if dist == "exponential":
        tokens = {"dist": "exponential", "mean": QUEUE_MEAN_TOKENS}
    else:
        tokens = {"dist": "fixed", "value": int(QUEUE_MEAN_TOKENS)}
    return scenario_from_dict({
        "name": f"queue-{dist}-{servers}-{router}", "seed": seed, "duration_s": duration_s, "warmup_s": warmup_s,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": rate_per_s},
                     "input_tokens": tokens, "output_tokens": {"dist": "fixed", "value": 1}},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"},
        "perf": {"model": "constant", "prefill_s_per_token": s_per_token},
        # vLLM v0's engine: each request is served as one whole-prompt step, the queue's service time
        "engine": {"preset": "vllm-v0", "max_num_seqs": 1},
        "fleet": {"replicas": servers, "router": router},
    })


def measured_waits_s(scenario: Scenario) -> np.ndarray:
    """Run a scenario; the queueing delay (first scheduled - arrival) of each measured request."""
    from simcost.simulation.simulation import run
    from simcost.workload.request_table import COMPLETED

    t = run(scenario).table
    measured = (t.status == COMPLETED) & (t.arrival_s >= scenario.warmup_s)
    return (t.first_scheduled_s - t.arrival_s)[measured]


def confidence_interval(samples, level: float = 0.99) -> tuple[float, float]:
    """Student-t interval for the mean of independent observations (e.g. one per seed)."""
    import numpy as np
    from scipy import stats

    samples = np.asarray(samples, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(samples) - 1) * samples.std(ddof=1) / math.sqrt(len(samples))
    return float(samples.mean() - half), float(samples.mean() + half)
