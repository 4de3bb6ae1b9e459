"""Requests that depend on completions: the next turn of a multi-turn session, and the next
request of a closed-loop user. Open-loop arrivals are known before the run (simcost.workload.requests);
these are created while it runs, when the request they wait for ends.

- Session turn k+1 arrives think_time after turn k finished. Its prompt is turn k's prompt plus
  turn k's output plus new tokens, so `shared_prefix_tokens` (what a prefix cache could reuse) is
  turn k's prompt + output. A rejected turn ends its session (the user sees an error).
- A closed-loop user, once its request (or session) has ended, completed or rejected, thinks for
  clients.think_time and sends the next (or starts a new session).
- Nothing is sent at or after duration_s: such turns and requests are counted as cut, so that
  sessions started = completed + ended by a rejection + cut + still open when the run stopped.

Draws come from the workload's own streams, in event order, so a run stays reproducible from its
seed: think times, turn counts and follow-up prompt lengths from `sessions`, closed-loop think
times from `arrivals`, other lengths from `input_tokens` / `output_tokens`, items from `items`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from simcost.errors import InputError, required
from simcost.rng import Streams
from simcost.scenario.scenario import Scenario
from simcost.scenario.workload import WorkloadConfig
from simcost.workload.request_table import COMPLETED, REJECT_REASONS, RequestTable
from simcost.workload.requests import sample_delays_s, sample_lengths, sample_request_lengths

# a user's requests rejected in a row at one instant before the run is refused as a livelock
MAX_INSTANT_RESENDS = 1000


class SessionDriver:
    def __init__(self, env: simpy.Environment, table: RequestTable, scenario: Scenario, streams: list[Streams],
                 arrive: Callable[[int], None]):
        self.env = env
        self.table = table
        self.workload = scenario.workload
        self.entries = scenario.workload.entries()
        self.streams = streams
        self.arrive = arrive
        self.end_s = scenario.duration_s if scenario.duration_s is not None else np.inf
        self.pending = 0  # turns and user requests waiting out a think time
        self._instant_rejections: dict[int, int] = {}  # user -> requests rejected in a row with no time passing
        self.counts = {"turns_sent": 0, "ended_by_rejection": 0, "turns_cut": 0, "user_requests_sent": 0,
                       "user_requests_cut": 0}

    @property
    def active(self) -> bool:
        return any(e.session is not None or e.clients is not None for e in self.entries)

    def on_done(self, rid: int) -> None:
        """Request `rid` completed or was rejected: send what waits for it."""
        t = self.table
        entry, completed = self.entries[int(t.workload[rid])], t.status[rid] == COMPLETED
        in_session = t.session[rid] >= 0 and entry.session is not None
        if in_session and t.turn[rid] + 1 < t.turns[rid]:
            if completed:
                self._schedule_turn(rid, entry)
                return
            self.counts["ended_by_rejection"] += 1
        if t.user[rid] >= 0:
            self._schedule_user_request(rid, entry)

    # --- the next turn of a session -------------------------------------------------------------

    def _schedule_turn(self, rid: int, entry: WorkloadConfig) -> None:
        s = self.streams[int(self.table.workload[rid])]
        session = required(entry.session, "workload.session")  # rid opened a session of this entry
        think_s = float(sample_delays_s(session.think_time, 1, s.sessions)[0])
        if self.env.now + think_s >= self.end_s:
            self.counts["turns_cut"] += 1
            if self.table.user[rid] >= 0:  # the user's session ends with the run
                self.counts["user_requests_cut"] += 1
            return
        self.pending += 1
        self.env.process(self._send_turn(rid, entry, s, think_s))

    def _send_turn(self, prev: int, entry: WorkloadConfig, s: Streams, think_s: float):
        yield self.env.timeout(think_s)
        self.pending -= 1
        t = self.table
        shared = int(t.input_tokens[prev] + t.output_tokens[prev])
        new_tokens, output_tokens = self._followup_lengths(entry, s)
        items = self._items(entry, s)
        rid = t.add(self.env.now, shared + new_tokens + items * _prompt_tokens_per_item(entry), output_tokens,
                    workload=t.workload[prev], tenant=t.tenant[prev], session=t.session[prev],
                    turn=t.turn[prev] + 1, turns=t.turns[prev], user=t.user[prev], items=items,
                    shared_prefix_tokens=shared)
        self.counts["turns_sent"] += 1
        self.arrive(rid)

    @staticmethod
    def _followup_lengths(entry: WorkloadConfig, s: Streams) -> tuple[int, int]:
        followup = required(entry.session, "workload.session").followup_input_tokens
        if followup is None:
            new_tokens, output_tokens = sample_request_lengths(entry, 1, s)
            return int(new_tokens[0]), int(output_tokens[0])
        new_tokens = sample_lengths(followup, 1, s.sessions, key="session.followup_input_tokens")
        if entry.output_tokens is None:  # validation sets it on every synthetic entry
            raise RuntimeError("workload.output_tokens is not set")
        output_tokens = sample_lengths(entry.output_tokens, 1, s.output_tokens, column="output_tokens")
        return int(new_tokens[0]), int(output_tokens[0])

    # --- a closed-loop user's next request ------------------------------------------------------

    def _schedule_user_request(self, rid: int, entry: WorkloadConfig) -> None:
        s = self.streams[int(self.table.workload[rid])]
        clients = required(entry.clients, "workload.clients")  # rid came from a closed-loop user
        think_s = float(sample_delays_s(clients.think_time, 1, s.arrivals)[0])
        self._check_progress(rid, think_s)
        if self.env.now + think_s >= self.end_s:
            self.counts["user_requests_cut"] += 1
            return
        self.pending += 1
        self.env.process(self._send_user_request(rid, entry, s, think_s))

    def _check_progress(self, rid: int, think_s: float) -> None:
        """A user whose requests are rejected the instant they arrive, with no think time, would
        re-send at the same simulated instant forever: refuse that instead of hanging."""
        t = self.table
        instant = think_s == 0 and t.status[rid] != COMPLETED and t.arrival_s[rid] == self.env.now
        user = int(t.user[rid])
        self._instant_rejections[user] = self._instant_rejections.get(user, 0) + 1 if instant else 0
        if self._instant_rejections[user] > MAX_INSTANT_RESENDS:
            reason = REJECT_REASONS[int(t.reject_reason[rid])] or "rejected"
            raise InputError("workload.clients.think_time", f"0 s, and every request is rejected at once ({reason}), "
                             "so users re-send forever without time passing; fix the rejection or give a think time > 0")

    def _send_user_request(self, prev: int, entry: WorkloadConfig, s: Streams, think_s: float):
        yield self.env.timeout(think_s)
        self.pending -= 1
        t = self.table
        input_tokens, output_tokens = (int(v[0]) for v in sample_request_lengths(entry, 1, s))
        items = self._items(entry, s)
        values = {}
        if entry.session is not None:  # the user starts a new session
            name = self.workload.entry_name(int(t.workload[prev]))
            t.session_names.append(f"{name}:u{int(t.user[prev])}:{len(t.session_names)}")
            values = {"session": len(t.session_names) - 1,
                      "turns": int(sample_lengths(entry.session.turns, 1, s.sessions, key="session.turns")[0])}
        rid = t.add(self.env.now, input_tokens + items * _prompt_tokens_per_item(entry), output_tokens,
                    workload=t.workload[prev], tenant=t.tenant[prev], user=t.user[prev], items=items, **values)
        self.counts["user_requests_sent"] += 1
        self.arrive(rid)

    @staticmethod
    def _items(entry: WorkloadConfig, s: Streams) -> int:
        if entry.items is None:
            return 0
        return int(sample_lengths(entry.items.per_request, 1, s.items, key="items.per_request")[0])


def _prompt_tokens_per_item(entry: WorkloadConfig) -> int:
    return entry.items.prompt_tokens_per_item if entry.items is not None else 0
