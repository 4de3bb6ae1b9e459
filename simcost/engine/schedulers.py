"""Iteration-level schedulers: each plans a replica's next step as one `StepPlan`.

A plan maps request id -> tokens the step computes for it: 1 for a decoding request, a prompt
(or the next chunk of one) for a prefilling request. The replica (simcost.engine.replica) runs
every plan along one path; an empty plan means the step would only decode, and the replica runs
a multi-step decode span instead. A new batching policy is one Scheduler subclass plus one
SCHEDULERS entry (engine.policy names it).

- prefill_first, vLLM v0 without chunked prefill: waiting requests are admitted first (in queue
  order, within max_num_seqs, max_num_batched_tokens and free KV blocks above the watermark) and
  run as one prefill step; when none can be admitted, every running request decodes.
- chunked, vLLM v1 / Sarathi-Serve: one token budget per step, spent first on a token for every
  decoding request, then on the next chunk of prompts already being prefilled, then on chunks
  of newly admitted prompts. A prompt's first output token comes with its last chunk. Under KV
  pressure it preempts as vLLM V1 does (ChunkedScheduler).

Both first resume requests whose KV is held outside the pool (swapped out, or handed over by a
prefill replica): vLLM v0 serves its swapped queue before new prompts.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simcost.engine.kv.blocks import KVPool, blocks_for
from simcost.engine.kv.request_kv import RequestKV
from simcost.engine.waiting import FifoQueue, KeyedQueue, RunningBatch
from simcost.workload.request_table import RequestTable


class Engine(Protocol):
    """What a scheduler sees of its replica (simcost.engine.replica.Replica), named here so the
    scheduler module does not import the replica that imports it."""

    table: RequestTable
    kv: RequestKV
    pool: KVPool
    waiting: FifoQueue | KeyedQueue
    running: RunningBatch
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int

    def prefilling(self, rid: int) -> bool: ...
    def start_running(self, rids) -> None: ...
    def preempt_last(self) -> int: ...
    def swap_in(self, rid: int, reserve_blocks: int) -> bool: ...


class StepPlan(dict):
    """{request id: tokens computed this step}, in the order the step's members are logged."""

    _arrays: tuple[np.ndarray, np.ndarray] | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, tokens) as int64 arrays in plan order, built once: ask only for a final plan."""
        if self._arrays is None:
            self._arrays = (np.fromiter(self, dtype=np.int64, count=len(self)),
                            np.fromiter(self.values(), dtype=np.int64, count=len(self)))
        return self._arrays


class Scheduler:
    def __init__(self, replica: Engine):
        self.replica = replica

    def schedule(self) -> StepPlan:
        """Admit, preempt and claim KV blocks for the next step; empty when it would only decode."""
        raise NotImplementedError

    def encodes_items(self, ids: np.ndarray, start_s: float) -> np.ndarray:
        """Which members of a step starting at start_s start their prompt here now: their items
        are encoded in it."""
        raise NotImplementedError

    def resume_outside_kv(self) -> None:
        """Requests whose KV is held outside the pool come in first, while their blocks fit next
        to the running batch's next step."""
        r = self.replica
        t = r.table
        while r.waiting and len(r.running) < r.max_num_seqs:
            head = r.waiting.head()
            if not (t.swapped_tokens[head] or t.remote_kv_tokens[head]):
                return
            if not r.swap_in(head, r.kv.decode_blocks(r.running.ids())):
                return


class PrefillFirstScheduler(Scheduler):
    def schedule(self) -> StepPlan:
        """Admit waiting requests in queue order while sequence slots, the token budget and KV
        blocks allow; they prefill their whole prompt in one step."""
        self.resume_outside_kv()
        r = self.replica
        if not r.waiting:  # nothing to admit (most calls: before every decode span); skip the reserve
            return StepPlan()
        t, kv, size = r.table, r.kv, r.block_size
        plan = StepPlan()
        num_tokens = 0
        # keep room for the running batch's next decode step, so a re-admitted request does not
        # immediately force another preemption
        reserve_blocks = kv.decode_blocks(r.running.ids())
        num_running = len(r.running)
        while r.waiting and num_running + len(plan) < r.max_num_seqs:
            rid = r.waiting.head()
            if t.swapped_tokens[rid] or t.remote_kv_tokens[rid]:
                break  # resumed by resume_outside_kv at the next step boundary
            n = int(t.input_tokens[rid] + t.generated[rid])  # prompt, plus output when recomputing
            keys, hit = kv.lookup(rid, n)
            cached_blocks = hit.num_blocks if hit else 0
            new_tokens = n - cached_blocks * size
            if plan and num_tokens + new_tokens > r.max_num_batched_tokens:
                break  # (a lone request over the budget still runs: only a recompute can be)
            blocks = blocks_for(n, size) - cached_blocks
            if not r.pool.can_admit(blocks + (hit.num_free_blocks_needed if hit else 0), reserve_blocks):
                break
            # claimed at once: with prefix caching, claiming may evict what the next lookup finds
            cached_tokens = kv.admit(rid, keys, hit, n, hold_tokens=n)
            t.prefill_target[rid] = n
            r.waiting.pop()
            plan[rid] = n - cached_tokens
            num_tokens += new_tokens
        if plan:  # most calls admit nothing: skip the call on this hot path
            r.start_running(plan)
        return plan

    def encodes_items(self, ids: np.ndarray, start_s: float) -> np.ndarray:
        return self.replica.table.generated[ids] == 0


class ChunkedScheduler(Scheduler):
    """vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py, v0.11): running requests first, then
    waiting ones, in one token budget. A running request that cannot get the blocks of its next
    token or chunk preempts the newest running request, possibly itself; a step that preempted
    admits no waiting request (V1: `if not preempted_reqs`), so a preempted request is never
    taken back, and then preempted again, in the same breath. A chunk is never cut to the free
    blocks: it gets all its blocks or preempts. (Decodes get their token before the chunks of
    running prompts; V1 goes by running order, where the prompts being prefilled are last.)"""

    def schedule(self) -> StepPlan:
        self.resume_outside_kv()
        r = self.replica
        while True:
            preempted, decode_blocks, prefilling = self._make_room_for_decodes()
            if not prefilling and not r.waiting:
                return StepPlan()  # only decodes: what _plan would find (without side effects), minus its loops
            plan, has_prefill, preempted = self._plan(preempted, decode_blocks)
            if plan or r.running or not preempted:
                break
            # every running request was preempted: the next step starts afresh (and admits)
        if not has_prefill and not (preempted and r.waiting):
            return StepPlan()  # a decode span: nothing could be admitted
        # (a decode-only step that preempted runs alone: the next one may admit, as in V1)
        r.kv.grow(*plan.arrays())  # claim the blocks the step writes into
        return plan

    def encodes_items(self, ids: np.ndarray, start_s: float) -> np.ndarray:
        t = self.replica.table  # a prompt's first chunk is in the step that admitted it
        return (t.first_scheduled_s[ids] == start_s) & (t.generated[ids] == 0)

    def _make_room_for_decodes(self) -> tuple[bool, int, int]:
        """Preempt the newest requests until every decoding request can get its next slot (what
        V1's running loop does for them, decode by decode); returns (whether any was preempted,
        the blocks the decoding requests' next tokens need, how many running requests are still
        prefilling)."""
        r = self.replica
        preempted = False
        while r.running:
            needed, prefilling = r.kv.decode_needs(r.running.ids())
            if needed <= r.pool.num_free:
                return preempted, needed, prefilling
            r.preempt_last()
            preempted = True
        return preempted, 0, 0

    def _plan(self, preempted: bool, decode_blocks: int) -> tuple[StepPlan, bool, bool]:
        """(the step's plan, whether it prefills, whether this step preempted); decode_blocks:
        what every decoding running request's next token needs (_make_room_for_decodes')."""
        r = self.replica
        t, kv, size = r.table, r.kv, r.block_size
        budget_tokens = r.max_num_batched_tokens
        plan = StepPlan()
        prompts: list[int] = []  # the running requests still prefilling, in running order
        kv_tokens_of, prefill_target_of = t.kv_tokens, t.prefill_target  # (r.prefilling, inline: ~10^5 calls a run)
        for rid in r.running:  # a token for every decoding request first: decodes never starve
            if kv_tokens_of[rid] < prefill_target_of[rid]:
                prompts.append(rid)
            elif budget_tokens > 0:
                plan[rid] = 1
                budget_tokens -= 1
        claimed: dict[int, int] = {}  # prompt chunk -> blocks it claims
        if budget_tokens <= 0:  # (the budget ran out before every decode got its token: count those that did)
            decode_blocks = kv.decode_blocks(plan)
        free_blocks = r.pool.num_free - decode_blocks
        has_prefill = False
        gone: set[int] = set()  # preempted in this loop
        for rid in prompts:  # then the next chunk of prompts started
            if budget_tokens <= 0:
                break
            if rid in gone:
                continue  # (a newer prompt preempted for an older one's chunk: back in the queue)
            kv_tokens = int(t.kv_tokens[rid])
            n = min(int(t.prefill_target[rid]) - kv_tokens, budget_tokens)
            blocks = blocks_for(kv_tokens + n, size) - int(t.kv_blocks[rid])
            victim = -1
            while blocks > free_blocks and victim != rid:  # preempt the newest, maybe rid itself
                victim = r.preempt_last()
                gone.add(victim)
                preempted = True
                if victim in plan:  # a decode after rid in running order (or, under priority, anyone) was planned
                    budget_tokens += plan.pop(victim)
                    claimed.pop(victim, None)
                free_blocks = r.pool.num_free - kv.decode_blocks(plan) - sum(claimed.values())
            if victim == rid:
                break  # V1: the running requests after it are not scheduled
            plan[rid] = n
            claimed[rid] = blocks
            budget_tokens -= n
            free_blocks -= blocks
            has_prefill = True
        while not preempted and r.waiting and budget_tokens > 0 and len(r.running) < r.max_num_seqs:
            rid = r.waiting.head()  # then chunks of newly admitted prompts, in queue order
            if t.swapped_tokens[rid] or t.remote_kv_tokens[rid]:
                break  # resumed by resume_outside_kv at the next step boundary
            target = int(t.input_tokens[rid] + t.generated[rid])
            keys, hit = kv.lookup(rid, target)
            cached_blocks = hit.num_blocks if hit else 0
            n = min(target - cached_blocks * size, budget_tokens)
            blocks = blocks_for(cached_blocks * size + n, size) - cached_blocks  # claimed by schedule()
            needed = blocks + (hit.num_free_blocks_needed if hit else 0)
            if free_blocks - needed < r.pool.watermark_blocks:
                break
            r.waiting.pop()
            t.prefill_target[rid] = target
            kv.admit(rid, keys, hit, target)
            r.start_running((rid,))
            plan[rid] = n
            budget_tokens -= n
            free_blocks -= needed
            has_prefill = True
        return plan, has_prefill, preempted


SCHEDULERS: dict[str, type[Scheduler]] = {
    "prefill_first": PrefillFirstScheduler,
    "chunked": ChunkedScheduler,
}
