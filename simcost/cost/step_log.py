"""The step log: one record per batch an engine runs (a prefill step, or a span of decode steps
over the same requests), with its steps' end times and its members' tokens, kept in growable
columns while the run goes and turned into flat arrays (`StepArrays`) once it ends. The ledger
(simcost.cost.ledger) prices those steps and hands their cost to the requests in them."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np


class _Column:
    """A growable numpy column kept as chunks: appends cost a slice copy, not a Python object
    each, and growing never copies what is already there (a doubling array holds its old and new
    copies at once: twice the column, late in a long run). Chunks grow to CHUNK_BYTES, large
    enough that malloc maps each one on its own and freeing it returns it to the system;
    `array()` joins them once, freeing each as it is copied, so the join costs one chunk on top."""

    CHUNK_BYTES = 64 << 20

    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)
        self.chunk = self.CHUNK_BYTES // self.dtype.itemsize
        self.chunks: list[np.ndarray] = []
        # the chunk being filled, its first `at` values used, `end` long; `before`: the values
        # in the chunks before it (kept apart so that an append reads three attributes)
        self.last = np.empty(0, dtype=self.dtype)
        self.at = self.end = self.before = 0

    @property
    def size(self) -> int:
        return self.before + self.at

    def append(self, values: np.ndarray) -> None:
        at = self.at
        stop = at + len(values)
        if stop <= self.end:  # most appends: one slice of the last chunk (~140k per Mooncake run)
            self.last[at:stop] = values
            self.at = stop
        else:
            self._spill(values, len(values), False)

    def put(self, value) -> None:
        """Append one value (a step's end or tokens: no one-element array to make)."""
        at = self.at
        if at < self.end:
            self.last[at] = value
            self.at = at + 1
        else:
            self._spill(value, 1, True)

    def fill(self, value, count: int) -> None:
        """Append value count times."""
        at = self.at
        stop = at + count
        if stop <= self.end:
            self.last[at:stop] = value
            self.at = stop
        else:
            self._spill(value, count, True)

    def _spill(self, values, left: int, scalar: bool) -> None:
        """Append across the end of the last chunk, starting new chunks (the first 64 values,
        then as many as the column holds, up to CHUNK_BYTES)."""
        done = 0
        while left > 0:
            if self.at == self.end:
                self.before += self.at
                self.last = np.empty(min(max(64, self.before), self.chunk), dtype=self.dtype)
                self.chunks.append(self.last)
                self.at, self.end = 0, len(self.last)
            take = min(left, self.end - self.at)
            self.last[self.at:self.at + take] = values if scalar else values[done:done + take]
            self.at += take
            done += take
            left -= take

    def array(self) -> np.ndarray:
        size = self.size
        if len(self.chunks) == 1:
            return self.chunks[0][:size]
        if len(self.chunks) > 1:  # join: one array of exactly size values
            out = np.empty(size, dtype=self.dtype)
            at = 0
            while self.chunks:
                chunk = self.chunks.pop(0)
                take = min(len(chunk), size - at)
                out[at:at + take] = chunk[:take]
                at += take
                del chunk
            self.chunks, self.last, self.at, self.end, self.before = [out], out, size, size, 0
        return self.chunks[0] if self.chunks else np.zeros(0, dtype=self.dtype)


class StepLog:
    """Append-only log the engine writes during a run; `arrays()` returns it as StepArrays.

    A long run logs millions of records, so nothing is a Python object per record: per-record
    scalars go to stdlib arrays (4 or 8 bytes each), steps and members to numpy columns. A decode
    span (`add_span`, most records) stores only its step times and members: its per-step tokens
    (the members) are filled in by `arrays()`, its per-member tokens (the steps) by whoever
    needs them (StepArrays). `arrays()` ends the log: it frees the per-record arrays as it turns
    them into steps (the peak of a long run's memory is here) and returns the same StepArrays
    if called again; appending after it is an error."""

    def __init__(self) -> None:
        # replicas, steps and members per record are int32 (far below 2^31: simcost.scenario.limits)
        self._replica, self._start_s, self._prefill = array("i"), array("d"), array("b")
        self._num_steps, self._num_members, self._span = array("i"), array("i"), array("b")
        self._step_end_s, self._members = _Column(np.float64), _Column(np.int32)
        # other records only (in record order): their step tokens, member tokens and prompt flags.
        # Members are int32 (ids and tokens stay far below 2^31: simcost.scenario.limits)
        self._step_tokens, self._member_tokens, self._member_prefill = _Column(np.int32), _Column(np.int32), _Column(np.bool_)
        self._arrays: StepArrays | None = None

    def add(self, replica: int, start_s: float, step_end_s: np.ndarray, step_tokens: np.ndarray,
            members: np.ndarray, member_tokens: np.ndarray, prefill: bool,
            member_prefill: np.ndarray | None = None) -> None:
        """One record: a prefill step (prefill=True) or a span of decode steps. `member_prefill`
        says which members' tokens are prompt tokens (default: all of a prefill record, none of
        a decode span; a chunked step mixes both)."""
        self._record(replica, start_s, prefill, len(step_end_s), len(members), 0)
        self._step_end_s.append(step_end_s)
        self._step_tokens.append(step_tokens)
        self._add_members(members, member_tokens, prefill, member_prefill)

    def add_step(self, replica: int, start_s: float, end_s: float, step_tokens: int, members: np.ndarray,
                 member_tokens: np.ndarray, member_prefill: np.ndarray | None = None) -> None:
        """One prefill (or mixed) step ending at end_s: add() with step_end_s = [end_s] and
        step_tokens = [step_tokens], without making either array (~40k steps a Mooncake run)."""
        self._record(replica, start_s, True, 1, len(members), 0)
        self._step_end_s.put(end_s)
        self._step_tokens.put(step_tokens)
        self._add_members(members, member_tokens, True, member_prefill)

    def _add_members(self, members: np.ndarray, member_tokens: np.ndarray, prefill: bool,
                     member_prefill: np.ndarray | None) -> None:
        self._members.append(members)
        self._member_tokens.append(member_tokens)
        if member_prefill is None:
            self._member_prefill.fill(prefill, len(members))
        else:
            self._member_prefill.append(member_prefill)

    def add_span(self, replica: int, start_s: float, step_end_s: np.ndarray, members: np.ndarray) -> None:
        """A span of decode steps in which every member decodes one token per step: add() with
        step_tokens = len(members) per step and member_tokens = len(step_end_s) per member."""
        self._record(replica, start_s, False, len(step_end_s), len(members), 1)
        self._step_end_s.append(step_end_s)
        self._members.append(members)

    def _record(self, replica: int, start_s: float, prefill: bool, num_steps: int, num_members: int, span: int) -> None:
        if self._arrays is not None:
            raise RuntimeError("step log: a record appended after arrays() ended the log")
        self._replica.append(replica)
        self._start_s.append(start_s)
        self._prefill.append(prefill)
        self._num_steps.append(num_steps)
        self._num_members.append(num_members)
        self._span.append(span)

    def __len__(self) -> int:
        return len(self._replica) if self._arrays is None else len(self._arrays.record_prefill)

    def arrays(self) -> "StepArrays":
        """The log as StepArrays. A decode span's per-member tokens (its steps) and prompt flags
        (none) are not spelled out: StepArrays derives them on demand (`member_tokens`), the
        ledger's kernels from the record; at ~70 members per request they would be the largest
        arrays of a long run. Step replicas and tokens are int32 (both far below 2^31)."""
        if self._arrays is not None:
            return self._arrays

        def column(values: array, dtype: type) -> np.ndarray:
            return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype)

        num_records = len(self._replica)
        num_steps = column(self._num_steps, np.int32)
        record_step_offset = np.zeros(num_records + 1, dtype=np.int64)
        np.cumsum(num_steps, out=record_step_offset[1:])
        record_member_offset = np.zeros(num_records + 1, dtype=np.int64)
        np.cumsum(column(self._num_members, np.int32), out=record_member_offset[1:])
        prefill, span = column(self._prefill, np.int8).astype(bool), column(self._span, np.int8).astype(bool)
        self._prefill, self._span = array("b"), array("b")
        step_end_s = self._step_end_s.array()
        step_start_s = np.empty_like(step_end_s)
        if len(step_end_s):
            has_steps = num_steps > 0
            step_start_s[1:] = step_end_s[:-1]
            step_start_s[record_step_offset[:-1][has_steps]] = column(self._start_s, np.float64)[has_steps]  # first step of each record
            del has_steps
        self._start_s = array("d")
        # spans: tokens per step = their members; the rest as logged
        step_tokens = np.repeat(column(self._num_members, np.int32), num_steps)
        self._num_members = array("i")
        step_tokens[np.repeat(~span, num_steps)] = self._step_tokens.array()
        step_replica = np.repeat(column(self._replica, np.int32), num_steps)
        del num_steps
        self._replica, self._num_steps = array("i"), array("i")
        self._arrays = StepArrays(
            step_replica=step_replica,
            step_start_s=step_start_s,
            step_end_s=step_end_s,
            step_tokens=step_tokens,
            record_step_offset=record_step_offset,
            record_member_offset=record_member_offset,
            record_prefill=prefill,
            member_request=self._members.array(),
            record_span=span,
            logged_member_tokens=self._member_tokens.array(),
            logged_member_prefill=self._member_prefill.array(),
        )
        return self._arrays


@dataclass(frozen=True)
class StepArrays:
    step_replica: np.ndarray  # int32
    step_start_s: np.ndarray
    step_end_s: np.ndarray
    step_tokens: np.ndarray  # int32
    record_step_offset: np.ndarray  # steps of record r: [offset[r], offset[r+1])
    record_member_offset: np.ndarray  # members of record r: [offset[r], offset[r+1])
    record_prefill: np.ndarray  # True: a prefill step; False: a span of decode steps
    member_request: np.ndarray
    # True: a decode span, whose members each decode one token per step (tokens = its steps);
    # the other records' members' tokens and prompt flags are logged_member_*, in member order
    record_span: np.ndarray
    logged_member_tokens: np.ndarray
    logged_member_prefill: np.ndarray

    @property
    def step_duration_s(self) -> np.ndarray:
        return self.step_end_s - self.step_start_s

    @property
    def member_tokens(self) -> np.ndarray:
        """Tokens each member processed in its record (int32; built on each call)."""
        num_steps = np.diff(self.record_step_offset).astype(np.int32)
        tokens = np.repeat(num_steps, np.diff(self.record_member_offset))
        tokens[self._logged_members()] = self.logged_member_tokens
        return tokens

    @property
    def member_prefill(self) -> np.ndarray:
        """True where the member's tokens in that record were prompt tokens (built on each call)."""
        prefill = np.zeros(len(self.member_request), dtype=bool)  # a span's members decode
        prefill[self._logged_members()] = self.logged_member_prefill
        return prefill

    def _logged_members(self) -> np.ndarray:
        return np.repeat(~self.record_span, np.diff(self.record_member_offset))
