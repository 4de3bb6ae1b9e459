"""Inter-token latencies from the request table's token times: every gap between consecutive
tokens of the same request, for the requests a mask selects, pooled in request order.

One numba pass over the token times (a Mooncake run has ~4M): the numpy form (a request id per
token by np.repeat, np.diff over all the times, two masks) made three passes and three arrays
of that size. The numpy form is the plain-Python twin tests/test_token_gaps.py compares with, bit
for bit. vllm_bench.json's standard deviation of the gaps comes from `gap_std_s`, which makes none.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from simcost.workload.request_table import RequestTable


def inter_token_latencies(table: RequestTable, mask: np.ndarray) -> np.ndarray:
    """All gaps between consecutive tokens of the requests in mask, pooled."""
    return token_gaps(table.token_time_s, table.output_tokens[:table.num_requests], mask)


def token_gaps(token_time_s: np.ndarray, output_tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Request i's tokens are the next output_tokens[i] entries of token_time_s; the gaps within
    each request with mask[i], in order."""
    output_tokens = np.ascontiguousarray(output_tokens, dtype=np.int64)
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    out = np.empty(int((np.maximum(output_tokens - 1, 0) * mask).sum()), dtype=np.float64)
    _gaps(np.ascontiguousarray(token_time_s, dtype=np.float64), output_tokens, mask, out)
    return out


@njit(cache=True)
def _gaps(token_time_s, output_tokens, mask, out):
    at = 0
    m = 0
    for i in range(output_tokens.shape[0]):
        k = output_tokens[i]
        if mask[i]:
            for j in range(at + 1, at + k):
                out[m] = token_time_s[j] - token_time_s[j - 1]
                m += 1
        at += k


def gap_std_s(table: RequestTable, mask: np.ndarray) -> float | None:
    """The population standard deviation of `inter_token_latencies(table, mask)` without its NaN
    gaps (numpy's std, as vLLM's benchmark takes it), without making the gaps (~30 MB on the
    Mooncake run, and as much again for numpy's deviations); None when there are none. Two
    passes over the token times, the mean and then the squared deviations from it, each a
    compensated (Neumaier) sum: within a few ulps of numpy's pairwise sums."""
    output_tokens = np.ascontiguousarray(table.output_tokens[:table.num_requests], dtype=np.int64)
    count, std_s = _gap_std(np.ascontiguousarray(table.token_time_s, dtype=np.float64), output_tokens,
                            np.ascontiguousarray(mask, dtype=np.bool_))
    return std_s if count else None


@njit(cache=True)
def _gap_sum(token_time_s, output_tokens, mask, mean):
    """(number of non-NaN gaps, sum of (gap - mean)^power) with power 1 when mean is NaN (the
    gaps' plain sum), else 2."""
    total = 0.0
    carry = 0.0  # Neumaier's running compensation
    count = 0
    plain = math.isnan(mean)
    at = 0
    for i in range(output_tokens.shape[0]):
        k = output_tokens[i]
        if mask[i]:
            for j in range(at + 1, at + k):
                gap = token_time_s[j] - token_time_s[j - 1]
                if math.isnan(gap):
                    continue
                term = gap if plain else (gap - mean) * (gap - mean)
                t = total + term
                if abs(total) >= abs(term):
                    carry += (total - t) + term
                else:
                    carry += (term - t) + total
                total = t
                count += 1
        at += k
    return count, total + carry


@njit(cache=True)
def _gap_std(token_time_s, output_tokens, mask):
    count, total = _gap_sum(token_time_s, output_tokens, mask, math.nan)
    if count == 0:
        return 0, 0.0
    _, squares = _gap_sum(token_time_s, output_tokens, mask, total / count)
    return count, math.sqrt(squares / count)
