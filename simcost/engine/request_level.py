"""One replica under a request-level batching policy, as a SimPy process.

Before continuous batching (Orca, vLLM), servers such as FasterTransformer and NVIDIA Triton
formed a batch from the waiting queue and ran it to completion: nothing joins a running batch.
Policies (engine.policy), FIFO from the head of the queue:
- one_at_a_time: batches of one request, run as soon as the replica is idle.
- static: batches of max_num_seqs. An idle replica with waiting requests waits for the batch to
  fill, at most batch_timeout_s counted from the later of (the moment the head of the queue
  became the head, the moment the replica became idle), then runs what it has (never nothing).
  Counting from the head's arrival alone would let a request that waited through a busy batch
  skip the fill window entirely; counting from idleness alone would restart it for every batch.
- dynamic (Triton's dynamic batcher): when idle, as soon as the queue allows any
  preferred_batch_sizes entry (None: max_num_seqs alone), the largest such size leaves at once
  (Triton prefers the largest); otherwise it waits until one is reached or the oldest request has
  waited max_queue_delay_s since its arrival, then runs as many as the queue holds, up to
  max_num_seqs. A request that arrives while a batch runs waits for that batch in any case.
Under every policy a batch the memory has filled (the next request in line does not fit) leaves
at once: waiting could not make it larger.

A batch, step by step:
- Memory: each member reserves its peak KV up front, blocks for prompt + output - 1 tokens (the
  last token's KV is never written; the Fleet's exceeds_kv_capacity check uses the same count, so
  a request it admits always fits an idle replica alone). A batch takes requests while their
  summed reservations leave the pool's watermark free.
- Prefill budget: the members' prompts, summed, must fit max_num_batched_tokens, since the
  deployment's activation memory is sized for one forward pass of that many tokens (a lone
  prompt over it is rejected by the Fleet as exceeds_batch_tokens, as under prefill_first).
- One prefill step over all prompts (tokens summed, causal attention pairs per prompt), which
  emits every member's first token.
- Decode steps until the batch's longest request has all its tokens. Finished members are
  padded, as early systems did: the decode batch size stays the batch size at every step, so a
  finished member's slot still costs compute and its KV is still read (each slot's context grows
  by one entry per step, a rectangular cache), and it holds its memory and its slot until the
  batch ends. Each record of the step log splits its cost over the slots, padding included
  (tokens per member = steps its slot ran), so a short request pays for the padding it forced.
- A request is completed (finish_s, status, on_finish) at its own last token, although its
  memory and slot stay held until the batch ends; routers still count it as running till then.

Per-item models (an encoder, an image classifier; simcost.step_model.per_item_params) run here
with no KV cache: the replica is given 0 KV blocks (the planner's count for such a model), which
turns memory admission off (`NoKVCache`). A request is its items as its "prompt" (input_tokens =
items, simcost.simulation.simulation) and one result as its single output "token": a batch is one forward pass,
step_time_s(p, items in the batch, 0, 0, 0, requests), whose end is every member's first token and finish
(TTFT = E2EL), logged as one prefill record whose members weigh by their items. The batch limits
are max_num_seqs requests and max_num_batched_tokens items.

Speed: all decode step times of a batch come from one `decode_span` call; the process
wakes only at the distinct finish times of members (on_finish must see the true time: sessions
and closed-loop users schedule their next request from it), and each stretch between two wakes is
one step-log record. Nothing joins a running batch, so no interrupts are needed.

SimPy cannot cancel a timeout: a formation timer cut short by an early batch stays queued and
fires as a no-op later; `Simulation.result` ends an undrained run at its last step or arrival, so
such a timer never extends the bill.
"""

from __future__ import annotations

import sys
from itertools import islice

import numpy as np
import simpy

from simcost.engine.base import ReplicaBase
from simcost.engine.kv.blocks import BlockPool, KVPool
from simcost.engine.options import ReplicaOptions
from simcost.engine.waiting import FifoQueue, RunningBatch
from simcost.perf.step_model import count_decode_steps, decode_span, step_time_s
from simcost.scenario.deployment import REQUEST_LEVEL_POLICIES
from simcost.workload.request_table import COMPLETED


class NoKVCache:
    """The block pool of a replica serving a per-item model: it holds nothing and refuses
    nothing, so a batch is bounded only by its request and item limits."""

    num_blocks = num_free = num_used = watermark_blocks = 0

    def allocate(self, num_blocks: int) -> None:
        if num_blocks:
            raise RuntimeError(f"a per-item replica has no KV cache to hold {num_blocks} blocks")

    free = allocate

    def can_admit(self, num_blocks: int, reserve_blocks: int = 0) -> bool:
        return True


class BatchReplica(ReplicaBase):
    waiting: FifoQueue  # request-level batching serves FIFO

    def __init__(self, env: simpy.Environment, index: int, options: ReplicaOptions):
        # options.max_span_steps is the iteration-level Replica's: a batch's decode is always one
        # exact span here, and prompts are never chunked
        if options.policy not in REQUEST_LEVEL_POLICIES:
            raise ValueError(f"BatchReplica runs {', '.join(REQUEST_LEVEL_POLICIES)}, not {options.policy}")
        if options.queue_key is not None or options.swap is not None:  # EngineConfig refuses these keys for batch policies
            raise ValueError("request-level batching serves FIFO and never preempts: no queue_key or swap")
        self.per_item = options.num_kv_blocks == 0  # a per-item model: no KV cache (see the module docstring)
        super().__init__(env, index, options)
        self.policy = options.policy
        self.max_batch_size = 1 if self.policy == "one_at_a_time" else self.max_num_seqs
        self.batch_timeout_s = options.batch_timeout_s
        self.preferred_batch_sizes = tuple(sorted(options.preferred_batch_sizes or (self.max_num_seqs,)))
        self.max_queue_delay_s = options.max_queue_delay_s
        # self.running: the batch's members, finished ones included, until it ends
        self._idle_since_s = env.now
        self._head_since_s = env.now  # when the head of the queue became the head
        self._start()

    def _make_pool(self, options: ReplicaOptions) -> KVPool:
        if self.per_item:
            return NoKVCache()
        return BlockPool(options.num_kv_blocks, watermark_blocks=options.watermark_blocks)

    # --- the router's side -------------------------------------------------------------------

    def max_blocks_admissible(self) -> int:
        """Blocks one request may ever hold here (the Fleet's admission check): none are needed
        per item, so no request is refused for memory."""
        return sys.maxsize if self.per_item else super().max_blocks_admissible()

    def _abandon(self) -> list[int]:
        """A retried request's batch starts it over: its tokens are emitted again and their
        times overwritten (nothing joins a batch half way). Members that finished stay done."""
        t = self.table
        held = [rid for rid in self.running if t.status[rid] != COMPLETED] + list(self.waiting)
        self.kv.forget(self.running.ids())
        self._wake = None
        return held

    def _enqueue(self, rid: int) -> None:
        if not self.waiting:
            self._head_since_s = self.env.now
        self.waiting.push(rid)

    # --- forming batches ---------------------------------------------------------------------

    def _serve(self):
        expired = False  # the formation timer just fired
        while True:
            if not self.waiting:
                self._wake = self.env.event()
                yield self._wake
                continue
            size, deadline_s = self._formation(expired)
            if size:
                yield from self._run_batch(self._take(size))
                expired = False
                continue
            # wait for the deadline or an arrival, whichever comes first
            self._wake = wake = self.env.event()
            timer = self.env.timeout(max(0.0, deadline_s - self.env.now))
            yield self.env.any_of([timer, wake])
            self._wake = None
            # the timer's firing, not a float comparison, ends the wait: now may sit an ulp short
            expired = timer.processed

    def _formation(self, expired: bool) -> tuple[int, float]:
        """(size of the batch to run now, 0 to wait; when the wait ends at the latest)."""
        size = self._fit()
        full = size == self.max_batch_size or size < len(self.waiting)
        if self.policy == "one_at_a_time":
            return size, self.env.now
        if self.policy == "dynamic":
            preferred = [b for b in self.preferred_batch_sizes if b <= size]
            if preferred:
                return preferred[-1], self.env.now
            deadline_s = float(self.table.arrival_s[self.waiting[0]]) + self.max_queue_delay_s
        else:
            deadline_s = max(self._head_since_s, self._idle_since_s) + self.batch_timeout_s
        ready = full or expired or self.env.now >= deadline_s
        return (size if ready else 0), deadline_s

    def _fit(self) -> int:
        """How many requests from the head of the queue one batch can take: up to the policy's
        batch size, while their reservations fit the pool and their prompts the prefill budget."""
        n = min(len(self.waiting), self.max_batch_size)
        ids = np.fromiter(islice(self.waiting, n), dtype=np.int64, count=n)
        blocks = np.cumsum(self._reserved_blocks(ids))
        tokens = np.cumsum(self.table.input_tokens[ids])
        fits = tokens <= self.max_num_batched_tokens
        if not self.per_item:
            fits &= self.pool.num_free - blocks >= self.pool.watermark_blocks
        size = int(fits.sum())  # cumulative sums grow, so the fitting members are a prefix
        if size == 0:
            raise RuntimeError(f"replica {self.index}: request {self.waiting[0]} can never be admitted")
        return size

    def _reserved_blocks(self, ids: np.ndarray) -> np.ndarray:
        """Each request's peak KV, reserved up front: prompt + output - 1 tokens, in blocks."""
        t, size = self.table, self.block_size
        if self.per_item:
            return np.zeros(len(ids), dtype=np.int64)
        return (t.input_tokens[ids] + t.output_tokens[ids] - 1 + size - 1) // size

    def _take(self, size: int) -> np.ndarray:
        ids = np.array([self.waiting.popleft() for _ in range(size)], dtype=np.int64)
        if self.waiting:
            self._head_since_s = self.env.now
        t = self.table
        self.kv.reserve(ids, self._reserved_blocks(ids))
        t.prefill_target[ids] = t.input_tokens[ids]
        self.running = RunningBatch(ids.tolist())
        return ids

    # --- running a batch ---------------------------------------------------------------------

    def _run_batch(self, ids: np.ndarray):
        t = self.table
        prompt = t.input_tokens[ids]
        num_tokens = int(prompt.sum())
        # causal attention within each prompt; items attend to nothing (their attention, if any,
        # is in the catalog's flops_per_item)
        attn_pairs = 0.0 if self.per_item else float((prompt * (prompt + 1) // 2).sum())
        start_s = self.env.now
        t.first_scheduled_s[ids] = start_s
        items_s = self._items_s(ids, np.ones(len(ids), dtype=bool))
        num_requests = int((prompt > 0).sum())  # per-item params price no request term (step_model)
        yield self.env.timeout(step_time_s(self.params, num_tokens, 0, attn_pairs, 0.0, num_requests) + items_s)
        end_s = self.env.now
        t = self.table  # columns may have grown during the wait
        if not self.per_item:
            self.kv.written(ids, prompt)
        t.generated[ids] = 0  # a batch restarted after its replica was lost emits every token again
        t.emit_tokens(ids, np.array([end_s]))  # the prefill emits every member's first token
        t.generated[ids] = 1
        t.first_token_s[ids] = end_s
        self.log.add_step(self.index, start_s, end_s, num_tokens, ids, prompt)
        yield from self._run_decode(ids, end_s)

    def _run_decode(self, ids: np.ndarray, start_s: float):
        t = self.table
        steps_left = t.output_tokens[ids] - 1  # decode steps each member needs
        num_steps = int(steps_left.max())
        self._complete(ids[steps_left == 0], start_s, batch_over=num_steps == 0)
        if num_steps == 0:
            return
        n = len(ids)
        span = decode_span(self.params, n, float(t.kv_tokens[ids].sum()), num_steps)
        step_end_s = start_s + np.cumsum(span[0])
        done = 0
        for stop in np.unique(steps_left[steps_left > 0]).tolist():  # wake where members finish
            yield self.env.timeout(step_end_s[stop - 1] - self.env.now)
            count_decode_steps(self.params, span, done, stop)  # (a lost node's batch stops counting here)
            self._emit_tokens(ids[steps_left > done], step_end_s[done:stop], done)
            record_start_s = start_s if done == 0 else float(step_end_s[done - 1])
            self.log.add(self.index, record_start_s, step_end_s[done:stop], np.full(stop - done, n, dtype=np.int64),
                         ids, np.full(n, stop - done, dtype=np.int64), prefill=False)
            done = stop
            self._complete(ids[steps_left == stop], float(step_end_s[stop - 1]), batch_over=stop == num_steps)

    def _emit_tokens(self, active: np.ndarray, step_end_s: np.ndarray, steps_before: int) -> None:
        """The members still generating get one token per step, timed at the step's end."""
        t, m = self.table, len(step_end_s)
        t.emit_tokens(active, step_end_s)
        t.generated[active] += m
        self.kv.written(active, t.kv_tokens[active] + m)

    def _complete(self, rids: np.ndarray, finish_s: float, batch_over: bool) -> None:
        """Members done at finish_s; when the batch ends with them, it is released first, so that
        a router reacting to on_finish sees the replica idle."""
        t = self.table
        t.status[rids] = COMPLETED
        t.finish_s[rids] = finish_s
        if batch_over:
            self._release()
        for rid in rids.tolist():
            self.on_finish(self.index, rid)

    def _release(self) -> None:
        self.kv.free(self.running.ids(), finished=True)
        self.running = RunningBatch()
        self._idle_since_s = self.env.now
