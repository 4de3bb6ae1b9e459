"""A replica's waiting queue, in the order its scheduler admits requests (engine.queue).

- fcfs: arrival order; a preempted request goes back to the head (vLLM), so it is resumed first.
- keyed (priority, sjf): the smallest key first, ties by arrival then request id; a preempted
  request goes back in by its key, which keeps it ahead of later arrivals of its class. Keys are
  fixed when a request is queued, so the order never changes behind the scheduler's back.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from simcost.config import EngineConfig
from simcost.request_table import RequestTable


class WaitingQueue:
    def __init__(self, key: Callable[[int], tuple] | None = None):
        self.key = key  # None: fcfs
        self._fifo: deque[int] = deque()
        self._heap: list[tuple[tuple, int]] = []

    def __len__(self) -> int:
        return len(self._fifo) if self.key is None else len(self._heap)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[int]:
        """Requests in admission order (a copy: for tests and reports, not the hot path)."""
        if self.key is None:
            return iter(list(self._fifo))
        return iter([rid for _, rid in sorted(self._heap)])

    def head(self) -> int:
        return self._fifo[0] if self.key is None else self._heap[0][1]

    def push(self, rid: int) -> None:
        if self.key is None:
            self._fifo.append(rid)
        else:
            heapq.heappush(self._heap, (self.key(rid), rid))

    def push_preempted(self, rid: int) -> None:
        if self.key is None:
            self._fifo.appendleft(rid)
        else:
            heapq.heappush(self._heap, (self.key(rid), rid))

    def pop(self) -> int:
        return self._fifo.popleft() if self.key is None else heapq.heappop(self._heap)[1]


def queue_key(engine: EngineConfig, table: RequestTable, priority_by_workload: np.ndarray,
              rng: np.random.Generator) -> Callable[[int], tuple] | None:
    """The sort key of `engine.queue` (None for fcfs). sjf predicts each request's output length
    once, when it is first queued, as the true length times exp(N(0, sjf_prediction_sigma)) from
    `rng` (the run's predictions stream), and keeps it in table.predicted_output_tokens."""
    if engine.queue == "fcfs":
        return None
    if engine.queue == "priority":
        return lambda rid: (int(priority_by_workload[table.workload[rid]]), float(table.arrival_s[rid]), rid)
    sigma = engine.sjf_prediction_sigma

    def sjf_key(rid: int) -> tuple:
        predicted = table.predicted_output_tokens[rid]
        if np.isnan(predicted):
            noise = float(np.exp(sigma * rng.standard_normal())) if sigma > 0 else 1.0
            predicted = table.predicted_output_tokens[rid] = float(table.output_tokens[rid]) * noise
        return (float(predicted), float(table.arrival_s[rid]), rid)

    return sjf_key
