"""Per-request state kept in columns (numpy arrays indexed by request id).

One object per request would cost a Python attribute lookup per token per step; columns let the
decode kernels update a whole batch at once and make the results table a free by-product.
Request ids are positions in the workload (sorted by arrival), so they restart every run.
"""

from __future__ import annotations

import numpy as np

from simcost.workload import Requests

# status codes
IN_FLIGHT, COMPLETED, REJECTED = 0, 1, 2
STATUS_NAMES = ("in_flight", "completed", "rejected")

# why a request was rejected (one code each; 0 = not rejected)
REJECT_REASONS = ("", "exceeds_max_model_len", "exceeds_batch_tokens", "exceeds_kv_capacity", "queue_full")
REASON_CODE = {name: code for code, name in enumerate(REJECT_REASONS)}


class RequestTable:
    def __init__(self, requests: Requests):
        n = len(requests)
        self.num_requests = n
        self.arrival_s = requests.arrival_s
        self.input_tokens = requests.input_tokens
        self.output_tokens = requests.output_tokens
        self.replica = np.full(n, -1, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.reject_reason = np.zeros(n, dtype=np.int8)
        self.generated = np.zeros(n, dtype=np.int64)  # output tokens emitted so far
        self.kv_tokens = np.zeros(n, dtype=np.int64)  # tokens whose KV is in the cache now
        self.kv_blocks = np.zeros(n, dtype=np.int64)  # blocks held now
        # tokens to compute before the next token is emitted: prompt (+ output so far, when a
        # preempted request is recomputed); a request is prefilling while kv_tokens < this
        self.prefill_target = np.zeros(n, dtype=np.int64)
        self.num_preemptions = np.zeros(n, dtype=np.int64)
        self.first_scheduled_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        # time of every output token, flat: request i's tokens are token_time_s[token_offset[i]:][:output_tokens[i]]
        self.token_offset = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.output_tokens, out=self.token_offset[1:])
        self.token_time_s = np.full(int(self.token_offset[-1]), np.nan)

    def reject(self, rid: int, reason: str) -> None:
        self.status[rid] = REJECTED
        self.reject_reason[rid] = REASON_CODE[reason]
