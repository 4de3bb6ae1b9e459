"""Small scenario builders shared by the tests (plain dicts, deep-merged, then validated)."""

from __future__ import annotations

from simcost.scenario.scenario import Scenario, scenario_from_dict

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
    # the tests compute expected step times from the roofline's formulas; the default (auto, which
    # runs the kernel tables on this H100) is tested in tests/test_model_choice.py
    "perf": {"model": "roofline"},
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
