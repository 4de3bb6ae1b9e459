"""The inter-token latency kernels against the numpy forms they replaced (their plain twins): the
gaps bit for bit, their standard deviation to rounding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from simcost.metrics.token_gaps import gap_std_s, token_gaps


def numpy_gaps(token_time_s: np.ndarray, output_tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    owner = np.repeat(np.arange(len(output_tokens)), output_tokens)
    gaps = np.diff(token_time_s)
    same_request = owner[1:] == owner[:-1]
    return gaps[same_request & mask[owner[1:]]]


def test_gaps_match_the_numpy_form_with_masks_one_token_requests_and_nan():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(0, 40))
        output_tokens = rng.integers(0, 6, n) if rng.random() < 0.3 else rng.integers(1, 50, n)
        times = np.cumsum(rng.exponential(0.02, int(output_tokens.sum())))
        times[rng.random(len(times)) < 0.05] = np.nan  # tokens not yet emitted
        mask = rng.random(n) < 0.7
        got, want = token_gaps(times, output_tokens, mask), numpy_gaps(times, output_tokens, mask)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_gaps_by_hand():
    # request 0: tokens at 1, 3, 6; request 1 (masked out): 7, 8; request 2: one token; request 3: 10, 10.5
    times = np.array([1.0, 3.0, 6.0, 7.0, 8.0, 9.0, 10.0, 10.5])
    got = token_gaps(times, np.array([3, 2, 1, 2]), np.array([True, False, True, True]))
    assert got.tolist() == [2.0, 3.0, 0.5]


def _table(times: np.ndarray, output_tokens: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(token_time_s=times, output_tokens=output_tokens, num_requests=len(output_tokens))


def test_gap_std_matches_numpys_std_of_the_gaps_without_making_them():
    """vllm_bench.json's std_itl_ms: the kernel's two compensated passes against numpy's std of
    the twin's gaps (NaN gaps left out), to rounding; None when no request has a gap."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(0, 40))
        output_tokens = rng.integers(0, 6, n) if rng.random() < 0.3 else rng.integers(1, 50, n)
        times = np.cumsum(rng.exponential(0.02, int(output_tokens.sum()))) + rng.choice([0.0, 3.6e4])
        times[rng.random(len(times)) < 0.05] = np.nan
        mask = rng.random(n) < 0.7
        want = numpy_gaps(times, output_tokens, mask)
        want = want[~np.isnan(want)]
        got = gap_std_s(_table(times, output_tokens), mask)
        if not len(want):
            assert got is None
        else:
            assert got == pytest.approx(float(want.std()), rel=1e-12, abs=1e-15)


def test_gap_std_by_hand_and_over_a_million_gaps():
    # the gaps of test_gaps_by_hand, 2, 3 and 0.5: mean 11/6, squared deviations 1/36 + 49/36 + 64/36
    times = np.array([1.0, 3.0, 6.0, 7.0, 8.0, 9.0, 10.0, 10.5])
    assert gap_std_s(_table(times, np.array([3, 2, 1, 2])), np.array([True, False, True, True])) == pytest.approx(
        np.sqrt(114 / 36 / 3), rel=1e-15)
    # a long run's scale: a million gaps an hour into the run, whose plain sums would drift
    rng = np.random.default_rng(8)
    output_tokens = np.full(10_000, 101)
    times = 3600.0 + np.cumsum(rng.gamma(4.0, 0.005, int(output_tokens.sum())))
    mask = np.ones(len(output_tokens), dtype=bool)
    assert gap_std_s(_table(times, output_tokens), mask) == pytest.approx(
        float(numpy_gaps(times, output_tokens, mask).std()), rel=1e-12)
