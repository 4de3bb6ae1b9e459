"""Inter-token latencies from the request table's token times: every gap between consecutive
tokens of the same request, for the requests a mask selects, pooled in request order.

One numba pass over the token times (a Mooncake run has ~4M): the numpy form (a request id per
token by np.repeat, np.diff over all the times, two masks) made three passes and three arrays
of that size, and the run's summary and vllm_bench.json each ask for the gaps. The numpy form is
the plain-Python twin tests/test_token_gaps.py compares with, bit for bit.
"""

from __future__ import annotations

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
