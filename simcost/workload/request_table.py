"""Per-request state kept in columns (numpy arrays indexed by request id).

One object per request would cost a Python attribute lookup per token per step; columns let the
decode kernels update a whole batch at once and make the results table a free by-product.
Request ids start with the requests known before the run (sorted by arrival); follow-up session
turns and closed-loop requests are appended during the run (`add`), so ids restart every run and
are in arrival order only within the initial part. Columns grow by doubling; code must read them
through the table (`table.finish_s[rid]`), never keep an array across a SimPy yield, and `trim`
cuts them to the requests that exist once the run is over.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from simcost.workload.requests import Requests
from simcost.workload.token_stats import EXACT_TOKEN_LIMIT, TokenTimes

# status codes
IN_FLIGHT, COMPLETED, REJECTED = 0, 1, 2
STATUS_NAMES = ("in_flight", "completed", "rejected")

# why a request was rejected (one code each; 0 = not rejected)
REJECT_REASONS = ("", "exceeds_max_model_len", "exceeds_batch_tokens", "exceeds_kv_capacity", "queue_full",
                  "api_rate_limited")  # an api pool's 429s past the client's retries (simcost.cluster.api_pool)
REASON_CODE = {name: code for code, name in enumerate(REJECT_REASONS)}

# per-request columns: dtype and the value of a request that has not run yet
_COLUMNS = {
    "arrival_s": (np.float64, np.nan), "input_tokens": (np.int64, 0), "output_tokens": (np.int64, 0),
    "workload": (np.int64, 0), "tenant": (np.int64, 0), "session": (np.int64, -1), "turn": (np.int64, 0),
    "turns": (np.int64, 1), "user": (np.int64, -1), "items": (np.int64, 0),
    "shared_prefix_tokens": (np.int64, 0),  # prompt tokens equal to the previous turn's prompt + output
    "replica": (np.int64, -1), "status": (np.int8, IN_FLIGHT), "reject_reason": (np.int8, 0),
    "generated": (np.int64, 0),  # output tokens emitted so far
    "kv_tokens": (np.int64, 0),  # tokens whose KV is in the cache now
    "kv_blocks": (np.int64, 0),  # blocks held now
    # tokens to compute before the next token is emitted: prompt (+ output so far, when a
    # preempted request is recomputed); a request is prefilling while kv_tokens < this
    "prefill_target": (np.int64, 0),
    "num_preemptions": (np.int64, 0),
    "num_swaps": (np.int64, 0),  # preemptions by swap (the rest were by recompute)
    "num_retries": (np.int64, 0),  # times its replica was lost under it (spot reclaim, failure)
    "swapped_tokens": (np.int64, 0),  # KV tokens in host memory now (swapped out)
    "remote_kv_tokens": (np.int64, 0),  # disaggregation: KV tokens arrived from a prefill replica, not yet loaded
    "predicted_output_tokens": (np.float64, np.nan),  # engine.queue sjf: the scheduler's estimate
    "first_scheduled_s": (np.float64, np.nan), "first_token_s": (np.float64, np.nan), "finish_s": (np.float64, np.nan),
}


class RequestTable:
    # The columns are created from _COLUMNS in __init__ (and regrown by _grow_rows); these
    # declarations only tell type checkers what they are. Keep them in step with _COLUMNS.
    arrival_s: npt.NDArray[np.float64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    workload: npt.NDArray[np.int64]
    tenant: npt.NDArray[np.int64]
    session: npt.NDArray[np.int64]
    turn: npt.NDArray[np.int64]
    turns: npt.NDArray[np.int64]
    user: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    shared_prefix_tokens: npt.NDArray[np.int64]
    replica: npt.NDArray[np.int64]
    status: npt.NDArray[np.int8]
    reject_reason: npt.NDArray[np.int8]
    generated: npt.NDArray[np.int64]
    kv_tokens: npt.NDArray[np.int64]
    kv_blocks: npt.NDArray[np.int64]
    prefill_target: npt.NDArray[np.int64]
    num_preemptions: npt.NDArray[np.int64]
    num_swaps: npt.NDArray[np.int64]
    num_retries: npt.NDArray[np.int64]
    swapped_tokens: npt.NDArray[np.int64]
    remote_kv_tokens: npt.NDArray[np.int64]
    predicted_output_tokens: npt.NDArray[np.float64]
    first_scheduled_s: npt.NDArray[np.float64]
    first_token_s: npt.NDArray[np.float64]
    finish_s: npt.NDArray[np.float64]
    # not per-request columns: request i's token times are token_time_s[token_offset[i]:][:output_tokens[i]]
    # (exact_token_times only; otherwise token_time_s is empty and `streamed` keeps the ITL histogram)
    token_offset: npt.NDArray[np.int64]
    token_time_s: npt.NDArray[np.float64]
    streamed: TokenTimes | None
    tenant_names: list[str]
    session_names: list[str]

    def __init__(self, requests: Requests, warmup_s: float = 0.0, exact_token_times: bool | None = None,
                 interval_s: float | None = None):
        """exact_token_times: keep every output token's time (None: when the requests plan at most
        EXACT_TOKEN_LIMIT output tokens); otherwise only the streaming ITL histogram of requests
        arriving at or after warmup_s, and tokens per interval_s (simcost.workload.token_stats)."""
        n = len(requests)
        self.num_requests = n
        for name, (dtype, fill) in _COLUMNS.items():
            setattr(self, name, _filled(n, fill, dtype))
        self.arrival_s[:] = requests.arrival_s
        self.input_tokens[:] = requests.input_tokens
        self.output_tokens[:] = requests.output_tokens
        for name in ("workload", "turns", "user", "items"):
            if getattr(requests, name) is not None:
                self._set(name, getattr(requests, name))
        self.tenant_names, tenant = _codes(requests.tenants, n, "default")
        self.session_names, session = _codes(requests.session_ids, n, None)
        self._set("tenant", tenant)
        self._set("session", session)
        # time of every output token, flat: request i's tokens are token_time_s[token_offset[i]:][:output_tokens[i]]
        self.token_offset = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.output_tokens, out=self.token_offset[1:])
        if exact_token_times is None:
            exact_token_times = int(self.token_offset[-1]) <= EXACT_TOKEN_LIMIT
        self.streamed = None if exact_token_times else TokenTimes(n, warmup_s, interval_s)
        self.token_time_s = np.full(int(self.token_offset[-1]) if exact_token_times else 0, np.nan)

    def _set(self, name: str, values: np.ndarray) -> None:
        """Fill a column, leaving it untouched (unwritten zero pages: `_filled`) where every
        value is its default already."""
        if (values != _COLUMNS[name][1]).any():
            getattr(self, name)[:] = values

    @property
    def exact_token_times(self) -> bool:
        return self.streamed is None

    def emit_tokens(self, ids: np.ndarray, step_end_s: np.ndarray) -> None:
        """ids each emit one output token at every time in step_end_s (call before counting them
        in `generated`)."""
        if self.streamed is not None:
            self.streamed.emit(ids, self.generated, self.arrival_s, self.replica, step_end_s)
        elif len(step_end_s) == 1:
            self.token_time_s[self.token_offset[ids] + self.generated[ids]] = step_end_s[0]
        else:
            self.token_time_s[(self.token_offset[ids] + self.generated[ids])[:, None] + np.arange(len(step_end_s))] = step_end_s

    def emit_request(self, rid: int, token_s: np.ndarray, source: tuple[str, int], usd: float = 0.0) -> None:
        """Request rid's output tokens all at once, at times token_s (a hosted-API pool or the
        response cache answered it; `source` names which, `usd` is its price, for the time series)."""
        if self.streamed is not None:
            measured = bool(self.arrival_s[rid] >= self.streamed.warmup_s)
            self.streamed.emit_request(rid, token_s, measured, source, usd)
        else:
            self.token_time_s[int(self.token_offset[rid]):int(self.token_offset[rid]) + len(token_s)] = token_s

    def reject(self, rid: int, reason: str) -> None:
        self.status[rid] = REJECTED
        self.reject_reason[rid] = REASON_CODE[reason]

    def add(self, arrival_s: float, input_tokens: int, output_tokens: int, **values: int) -> int:
        """Append a request created during the run (a follow-up turn, a closed-loop request) and
        return its id; `values` sets other integer columns (workload, session, turn, ...)."""
        rid = self.num_requests
        if rid == len(self.arrival_s):
            self._grow_rows(max(16, 2 * rid))
        self.num_requests = rid + 1
        self.arrival_s[rid], self.input_tokens[rid], self.output_tokens[rid] = arrival_s, input_tokens, output_tokens
        for name, value in values.items():
            getattr(self, name)[rid] = value
        end = int(self.token_offset[rid]) + output_tokens
        if self.streamed is None and end > len(self.token_time_s):
            self.token_time_s = _grown(self.token_time_s, max(end, 2 * len(self.token_time_s)), np.nan)
        self.token_offset[rid + 1] = end
        return rid

    def _grow_rows(self, capacity: int) -> None:
        for name, (_, fill) in _COLUMNS.items():
            setattr(self, name, _grown(getattr(self, name), capacity, fill))
        self.token_offset = _grown(self.token_offset, capacity + 1, 0)
        if self.streamed is not None:
            self.streamed.grow(capacity)

    def trim(self) -> None:
        """Cut the columns to the requests that exist (after the run; idempotent)."""
        n = self.num_requests
        for name in _COLUMNS:
            setattr(self, name, getattr(self, name)[:n])
        self.token_offset = self.token_offset[:n + 1]
        if self.streamed is None:
            self.token_time_s = self.token_time_s[:int(self.token_offset[-1])]


def _filled(n: int, fill, dtype) -> np.ndarray:
    """np.full, but a column of zeros comes from np.zeros: the system hands out zeroed pages that
    cost no memory until written, and most runs never write most such columns (swaps, retries,
    items, KV transfers...): ~80 B per request of a long run."""
    return np.zeros(n, dtype=dtype) if fill == 0 else np.full(n, fill, dtype=dtype)


def _grown(values: np.ndarray, capacity: int, fill) -> np.ndarray:
    out = _filled(capacity, fill, values.dtype)
    out[:len(values)] = values
    return out


def _codes(names: np.ndarray | None, n: int, default: str | None) -> tuple[list, np.ndarray]:
    """(distinct names in first-seen order, one code per request). Without names every request
    gets `default` (code 0), or code -1 (none) when there is no default; so do None entries."""
    codes = np.full(n, 0 if default is not None else -1, dtype=np.int64)
    if names is None:
        return ([default] if default is not None else []), codes
    present = np.array([name is not None for name in names], dtype=bool)
    unique, first, inverse = np.unique(names[present].astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first)  # first-seen order reads better than sorted in reports
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes[present] = rank[inverse]
    return [str(unique[i]) for i in order], codes
