"""simcost breakeven: the crossing of a step-function fleet cost and a linear API cost, checked
against hand computations, and end to end on a scenario whose numbers can be worked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scenarios import scenario

from simcost.analysis.breakeven import breakeven, crossing_volume, fleet_usd_per_month
from simcost.cli.main import main
from simcost.units import HOURS_PER_MONTH


@pytest.mark.parametrize(("a", "redundancy", "expected"), [
    (0.02, 0, 500.0),  # 10 / 0.02: cheaper from the middle of the first step on, and at every step after
    # 0.011: each step n is costlier below 10 n / 0.011 while that is past its start 1000 (n - 1):
    # n < 11, so the last costlier volume is 10 x 10 / 0.011 on the tenth step
    (0.011, 0, 100 / 0.011),
    (0.02, 1, 1500.0),  # N+1: 20 / 0.02 = 1000 (the whole first step), then 30 / 0.02 = 1500 on the second
    (0.01, 0, None),  # the API costs a fully used replica's price per request: never cheaper to self-host
    (0.005, 0, None),
])
def test_crossing_matches_the_hand_computation(a, redundancy, expected):
    capacity, usd_per_replica = 1000.0, 10.0
    got = crossing_volume(capacity, usd_per_replica, a, 1, redundancy)
    if expected is None:
        assert got is None
        return
    assert got == pytest.approx(expected, rel=1e-12)
    # and by brute force: from the crossing on the fleet never costs more, just before it it does
    grid = np.linspace(got, 40 * capacity, 40_001)
    assert all(fleet_usd_per_month(v, capacity, usd_per_replica, 1, redundancy) <= a * v * (1 + 1e-12) for v in grid)
    assert fleet_usd_per_month(got * (1 - 1e-9), capacity, usd_per_replica, 1, redundancy) > a * got * (1 - 1e-9)


def test_a_simulated_breakeven_matches_the_price_formulas():
    # fixed lengths so the API price per request is exact: (1000 x 0.15 + 200 x 0.60) / 1e6
    sc = scenario(duration_s=120.0, slo={"ttft_s": 1.0, "tpot_s": 0.05},
                  workload={"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                            "input_tokens": {"dist": "fixed", "value": 1000},
                            "output_tokens": {"dist": "fixed", "value": 200}},
                  fleet={"price_usd_per_device_hour": 2.0})
    r = breakeven(sc, ["openai:gpt-4o-mini"])
    a = (1000 * 0.15 + 200 * 0.60) / 1e6
    (option,) = r.options
    assert option.usd_per_request == pytest.approx(a, rel=1e-12)
    # one static on-demand replica at $2/hour, billed all month
    assert r.replica_usd_per_month == pytest.approx(2.0 * HOURS_PER_MONTH, rel=1e-9)
    assert r.replica_capacity_requests_per_month > 2.0 * HOURS_PER_MONTH / a  # the crossing is on the first step
    assert option.crossing_requests_per_month == pytest.approx(2.0 * HOURS_PER_MONTH / a, rel=1e-9)
    assert option.replicas_at_crossing == 1
    assert 0.7 < r.base_requests_per_month / (1.0 * 3600 * HOURS_PER_MONTH) < 1.3  # 1 req/s, Poisson over 120 s
    assert math.isclose(r.mean_input_tokens, 1000) and math.isclose(r.mean_output_tokens, 200)


def test_the_cli_writes_the_curve_and_prints_the_crossing(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("""name: be
seed: 3
duration_s: 60
workload:
  arrivals: {process: poisson, rate_per_s: 1.0}
  input_tokens: {dist: fixed, value: 500}
  output_tokens: {dist: fixed, value: 100}
model: {name: llama-3.1-8b}
hardware: {device: h100-sxm}
slo: {ttft_s: 1.0}
""")
    out = tmp_path / "out"
    assert main(["breakeven", str(path), "--api", "anthropic:claude-haiku-4.5", "--jobs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "breakeven.json").read_text())
    cross = data["options"][0]["crossing_requests_per_month"]
    assert f"{cross:,.0f}" in printed
    rows = np.loadtxt(out / "breakeven.csv", delimiter=",", skiprows=1)
    volume, fleet, api = rows[:, 0], rows[:, 1], rows[:, 2]
    after = volume >= cross
    assert (fleet[after] <= api[after] * (1 + 1e-12)).all() and (fleet[~after & (volume > 0)] > api[~after & (volume > 0)]).any()
    assert (out / "breakeven.png").stat().st_size > 0
    assert main(["breakeven", str(path), "--api", "openai:gpt-9", "--out", str(out)]) == 2
    assert "--api.model" in capsys.readouterr().err
