"""Small scenario builders shared by the tests (plain dicts, deep-merged, then validated)."""

from __future__ import annotations

from simcost.config import Scenario, scenario_from_dict

BASE = {
    "name": "test",
    "seed": 1,
    "duration_s": 60.0,
    "workload": {
        "arrivals": {"process": "poisson", "rate_per_s": 4.0},
        "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 200},
    },
    "model": {"name": "llama-3.1-8b"},
    "hardware": {"device": "h100-sxm"},
}


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "workload":
            out[key] = merge(out[key], value)
        else:
            out[key] = value  # a workload is replaced whole: its parts depend on each other
    return out


def scenario(**extra) -> Scenario:
    return scenario_from_dict(merge(BASE, extra))


def queue_scenario(*, rate_per_s: float, service_mean_s: float, dist: str, servers: int, router: str,
                   duration_s: float, seed: int, warmup_s: float) -> Scenario:
    """One request per batch, one output token, service time = tokens x s_per_token: a queue.

    Service tokens are 2,000 on average; `exponential` draws ceil(Exp(2000)) tokens (geometric),
    `fixed` exactly 2,000."""
    s_per_token = service_mean_s / 2000.0
    tokens = {"dist": "exponential", "mean": 2000.0} if dist == "exponential" else {"dist": "fixed", "value": 2000}
    return scenario_from_dict({
        "name": "queue", "seed": seed, "duration_s": duration_s, "warmup_s": warmup_s,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": rate_per_s},
                     "input_tokens": tokens, "output_tokens": {"dist": "fixed", "value": 1}},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"device": "h100-sxm"},
        "perf": {"model": "constant", "prefill_s_per_token": s_per_token},
        "engine": {"max_num_seqs": 1},
        "fleet": {"replicas": servers, "router": router},
    })
