"""The run summary's shape is declared once (simcost.metrics.run_summary): every summary the golden
test pins (every bundled scenario and feature variant) has each required key, no undeclared one,
and latency statistics of the declared form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simcost.metrics.run_summary import LatencyStats, RunSummary

GOLDEN = json.loads((Path(__file__).parent / "golden" / "outputs.json").read_text())


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_summary_keys_are_the_declared_ones(case):
    summary = GOLDEN[case]["summary"]
    assert RunSummary.__required_keys__ <= set(summary), RunSummary.__required_keys__ - set(summary)
    assert set(summary) <= RunSummary.__required_keys__ | RunSummary.__optional_keys__
    for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        stats = set(summary[key])  # relative_error only where a streaming histogram answered
        assert LatencyStats.__required_keys__ <= stats <= LatencyStats.__required_keys__ | LatencyStats.__optional_keys__


def test_optional_sections_appear_where_the_scenario_has_them():
    assert "per_item" in GOLDEN["edge_resnet50_jetson"]["summary"]
    assert "prefix_cache" in GOLDEN["mooncake_conv_8b_h100"]["summary"]
    assert "by_site" in GOLDEN["cloud_edge_8b"]["summary"]
    assert "per_item" not in GOLDEN["poisson_8b_h100"]["summary"]
