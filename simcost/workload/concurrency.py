"""A trace replayed under a concurrency limit (`workload.trace.max_concurrency`): at most N
requests in flight, the next one in trace order sent the moment one ends. This is how a
benchmark client with a semaphore sends (vLLM's `vllm bench serve --max-concurrency`: each
request task waits on an asyncio.Semaphore, whose waiters are woken first come, first served,
and times its TTFT from after the wait), so a trace with every arrival at 0 under a limit N is
N closed-loop users with no think time working through the trace in order.
"""

from __future__ import annotations

import simpy


class ConcurrencyLimit:
    """Slots for the requests the arrival process sends; `release` frees one when a request it
    sent ends (completed or rejected). Requests sent by others (session turns, a cascade's
    escalations) hold no slot."""

    def __init__(self, env: simpy.Environment, limit: int):
        self.env = env
        self.limit = limit
        self.in_flight = 0
        self.most_in_flight = 0  # the largest number in flight at once, for tests and reports
        self._holders: set[int] = set()
        self._freed: simpy.Event | None = None

    def wait(self) -> simpy.Event | None:
        """An event that fires when a slot frees, or None when one is free now."""
        if self.in_flight < self.limit:
            return None
        self._freed = self.env.event()
        return self._freed

    def take(self, rid: int) -> None:
        self._holders.add(rid)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def release(self, rid: int) -> None:
        if rid not in self._holders:
            return
        self._holders.remove(rid)
        self.in_flight -= 1
        if self._freed is not None and not self._freed.triggered:
            self._freed.succeed()
