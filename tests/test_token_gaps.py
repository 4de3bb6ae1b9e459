"""The inter-token latency kernel against the numpy form it replaced (its plain twin), bit for bit."""

from __future__ import annotations

import numpy as np

from simcost.metrics.token_gaps import token_gaps


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
