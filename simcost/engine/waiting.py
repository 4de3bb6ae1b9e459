"""A replica's waiting queue, in the order its scheduler admits requests (engine.queue), and
its running batch (`RunningBatch`).

- fcfs: arrival order; a preempted request goes back to the head (vLLM), so it is resumed first.
- keyed (priority, sjf): the smallest key first, ties by arrival then request id; a preempted
  request goes back in by its key, which keeps it ahead of later arrivals of its class. Keys are
  fixed when a request is queued, so the order never changes behind the scheduler's back.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import SupportsIndex

import numpy as np

import simcost.portable_math as pmath
from simcost.scenario.deployment import EngineConfig
from simcost.workload.request_table import RequestTable


class RunningBatch(list):
    """The running requests in batch order: a list of ids that also keeps them as an int64 array
    (`ids()`), built at its first use after a change. The kernels take the batch as an array
    before most steps and every decode span, and the batch changes far less often (admissions,
    finishes, preemptions): a 70-request batch cost ~5 us to convert each time. Every mutator
    drops the array instead of editing it, so an array handed out stays the batch as it was."""

    __slots__ = ("_ids",)

    def __init__(self, rids=()) -> None:
        super().__init__(rids)
        self._ids: np.ndarray | None = None

    def ids(self) -> np.ndarray:
        """The batch as an int64 array (shared until the batch changes: read it, never write it)."""
        if self._ids is None:
            self._ids = np.fromiter(self, dtype=np.int64, count=len(self))
        return self._ids

    # every mutator of a list drops the array (slice assignments and deletions come through
    # __setitem__ and __delitem__)
    def append(self, rid: int) -> None:
        self._ids = None
        super().append(rid)

    def extend(self, rids) -> None:
        self._ids = None
        super().extend(rids)

    def remove(self, rid: int) -> None:
        self._ids = None
        super().remove(rid)

    def pop(self, index: SupportsIndex = -1) -> int:
        self._ids = None
        return super().pop(index)

    def insert(self, index: SupportsIndex, rid: int) -> None:
        self._ids = None
        super().insert(index, rid)

    def clear(self) -> None:
        self._ids = None
        super().clear()

    def sort(self, *args, **kwargs) -> None:
        self._ids = None
        super().sort(*args, **kwargs)

    def reverse(self) -> None:
        self._ids = None
        super().reverse()

    def __setitem__(self, index, value) -> None:
        self._ids = None
        super().__setitem__(index, value)

    def __delitem__(self, index) -> None:
        self._ids = None
        super().__delitem__(index)

    def __iadd__(self, rids):  # type: ignore[misc]
        self._ids = None
        return super().__iadd__(rids)

    def __imul__(self, count):  # type: ignore[misc]
        self._ids = None
        return super().__imul__(count)


class FifoQueue(deque):
    """fcfs: a deque (len and truth at C speed: the engine asks at every step boundary)."""

    push = deque.append
    push_preempted = deque.appendleft  # back to the head
    pop = deque.popleft

    def head(self) -> int:
        return self[0]


class KeyedQueue:
    """priority / sjf: a heap of (key, request id)."""

    def __init__(self, key: Callable[[int], tuple]):
        self.key = key
        self._heap: list[tuple[tuple, int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __iter__(self) -> Iterator[int]:
        """Requests in admission order (a copy: for tests and reports, not the hot path)."""
        return iter([rid for _, rid in sorted(self._heap)])

    def head(self) -> int:
        return self._heap[0][1]

    def push(self, rid: int) -> None:
        heapq.heappush(self._heap, (self.key(rid), rid))

    push_preempted = push  # by its key: ahead of later arrivals of its class

    def pop(self) -> int:
        return heapq.heappop(self._heap)[1]


def WaitingQueue(key: Callable[[int], tuple] | None = None) -> FifoQueue | KeyedQueue:  # noqa: N802 (a factory)
    """The queue for `key` (None: fcfs)."""
    return FifoQueue() if key is None else KeyedQueue(key)


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
            noise = float(pmath.exp(sigma * rng.standard_normal())) if sigma > 0 else 1.0
            predicted = table.predicted_output_tokens[rid] = float(table.output_tokens[rid]) * noise
        return (float(predicted), float(table.arrival_s[rid]), rid)

    return sjf_key
