"""Print the queueing-theory checks of tests/test_queueing.py as a table: theory, the simulated
mean over seeds, and its 99 % confidence interval.

    python experiments/queueing_check.py [--seeds 8]
"""

from __future__ import annotations

import argparse

from simcost.analysis.queueing import (
    QUEUE_MEAN_TOKENS,
    ceil_exponential_moments,
    confidence_interval,
    erlang_c,
    measured_waits_s,
    mg1_mean_wait_s,
    mmc_mean_wait_s,
    queue_scenario,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=8)
    seeds = range(p.parse_args().seeds)
    en, en2 = ceil_exponential_moments(QUEUE_MEAN_TOKENS)
    a = 1.0 / QUEUE_MEAN_TOKENS  # seconds per token: mean service 1 s
    cases = [
        ("M/M/1 rho=0.7", dict(rate_per_s=0.7, dist="exponential", servers=1, router="round_robin",
                                duration_s=12000, warmup_s=500), mg1_mean_wait_s(0.7, a * en, a * a * en2)),
        ("M/D/1 rho=0.7", dict(rate_per_s=0.7, dist="fixed", servers=1, router="round_robin",
                                duration_s=12000, warmup_s=500), mg1_mean_wait_s(0.7, 1.0, 1.0)),
        ("M/M/3 shared queue rho=0.7", dict(rate_per_s=2.1, dist="exponential", servers=3, router="shared_queue",
                                             duration_s=6000, warmup_s=300), mmc_mean_wait_s(3, 2.1, 1 / (a * en))),
    ]
    print(f"{'queue':<30}{'theory Wq s':>12}{'sim mean':>10}{'99% CI':>20}{'inside':>8}")
    for name, kw, theory in cases:
        means = [float(measured_waits_s(queue_scenario(seed=s, service_mean_s=1.0, **kw)).mean()) for s in seeds]
        lo, hi = confidence_interval(means, 0.99)
        print(f"{name:<30}{theory:>12.4f}{sum(means) / len(means):>10.4f}{f'[{lo:.4f}, {hi:.4f}]':>20}"
              f"{'yes' if lo <= theory <= hi else 'NO':>8}")
    print(f"(Erlang C probability of waiting for M/M/3: {erlang_c(3, 2.1 * a * en):.4f})")


if __name__ == "__main__":
    main()
