"""simcost.analysis.frontier: the O(n log n) Pareto mask equals an O(n^2) one written from the definition
(random points with ties, duplicates, NaNs and infinities), the frontier of a hand-built sweep,
and the figure."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.analysis.frontier import frontier, pareto_mask, plot_frontier
from simcost.errors import InputError


def brute_force(latency, spend) -> np.ndarray:
    """The definition: kept unless some other point is <= in both and < in one; NaN never kept
    and never dominates."""
    n = len(latency)
    defined = [not (math.isnan(latency[i]) or math.isnan(spend[i])) for i in range(n)]
    keep = np.zeros(n, dtype=bool)
    for i in range(n):
        if not defined[i]:
            continue
        keep[i] = not any(
            defined[j] and latency[j] <= latency[i] and spend[j] <= spend[i]
            and (latency[j] < latency[i] or spend[j] < spend[i])
            for j in range(n))
    return keep


# a small alphabet of values forces many ties and exact duplicates
VALUES = st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, math.inf, math.nan])
POINTS = st.lists(st.tuples(VALUES | st.floats(0, 10, allow_nan=False), VALUES), max_size=40)


@settings(max_examples=200, deadline=None)
@given(POINTS)
def test_pareto_mask_equals_brute_force(points):
    lat = [p[0] for p in points]
    sp = [p[1] for p in points]
    np.testing.assert_array_equal(pareto_mask(np.array(lat, float), np.array(sp, float)), brute_force(lat, sp))


def test_pareto_mask_equals_brute_force_on_seeded_integer_grids():
    rng = np.random.default_rng(8)
    for _ in range(500):
        n = int(rng.integers(0, 60))
        lat = rng.integers(0, 6, n).astype(float)
        sp = rng.integers(0, 6, n).astype(float)
        lat[rng.random(n) < 0.1] = np.nan
        sp[rng.random(n) < 0.05] = np.nan
        np.testing.assert_array_equal(pareto_mask(lat, sp), brute_force(lat, sp))


def test_tie_conventions():
    # exact duplicates both kept; equal spend keeps only the lower latency; equal latency only the cheaper
    lat = np.array([1.0, 1.0, 2.0, 1.0, np.nan, 0.5])
    sp = np.array([1.0, 1.0, 1.0, 2.0, 0.1, 3.0])
    assert pareto_mask(lat, sp).tolist() == [True, True, False, False, False, True]
    assert pareto_mask([np.inf], [1.0]).tolist() == [True]  # a lone point is never dominated
    assert pareto_mask([], []).tolist() == []
    with pytest.raises(ValueError):
        pareto_mask([1.0, 2.0], [1.0])


def sweep_rows():
    """A tiny replica-count sweep by hand: more replicas cost more and cut queueing; 8 replicas
    buy nothing over 4 (dominated); 1 replica never finishes a request (latency undefined)."""
    def r(replicas, p99_ttft, usd_per_hour, per_1m, meets):
        return {"replicas": replicas, "p50_ttft_s": None if p99_ttft is None else p99_ttft / 3,
                "p99_ttft_s": p99_ttft, "p99_tpot_s": 0.02, "p99_e2el_s": None if p99_ttft is None else p99_ttft + 5,
                "usd_per_hour": usd_per_hour, "usd_per_1m_output_tokens": per_1m, "meets_slo": meets}
    return [r(1, None, 3.44, None, False), r(2, 12.0, 6.88, 2.9, False), r(3, 0.9, 10.32, 3.1, False),
            r(4, 0.35, 13.76, 3.9, True), r(8, 0.35, 27.52, 7.6, True), r(6, 0.5, 20.64, 5.8, True)]


def test_frontier_of_a_hand_built_sweep():
    rows = sweep_rows()
    assert [r["replicas"] for r in frontier(rows)] == [2, 3, 4]
    assert [r["replicas"] for r in frontier(rows, "p99_ttft_s", "usd_per_month")] == [2, 3, 4]
    assert [r["replicas"] for r in frontier(rows, "p99_tpot_s", "usd_per_1m_output_tokens")] == [2]
    assert [r["replicas"] for r in frontier(rows, "p99_e2el_s", "usd_per_1m_output_tokens")] == [2, 3, 4]


def test_frontier_reads_csv_strings(tmp_path):
    # sweep.csv gives every value as a string, an undefined one as ''
    path = tmp_path / "sweep.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(sweep_rows()[0]))
        writer.writeheader()
        writer.writerows(sweep_rows())
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["replicas"] for r in frontier(rows)] == ["2", "3", "4"]
    assert float(frontier(rows, spend_key="usd_per_month")[0]["usd_per_hour"]) * 730 == pytest.approx(5022.4)


def test_unknown_key_names_the_closest():
    with pytest.raises(InputError, match="p99_ttft_s"):
        frontier(sweep_rows(), latency_key="p99_ttft")
    assert frontier([]) == []


def test_plot_writes_a_png(tmp_path):
    rows = sweep_rows()
    path = plot_frontier(rows, "p99_ttft_s", "usd_per_hour", 1.0, tmp_path / "frontier.png", label_key="replicas")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no SLO, nothing defined: still a figure, not an error
    empty = [{"p99_ttft_s": None, "usd_per_hour": 1.0}]
    assert plot_frontier(empty, "p99_ttft_s", "usd_per_hour", None, tmp_path / "empty.png").exists()
