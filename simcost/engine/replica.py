"""One replica: vLLM-style continuous batching over a paged KV cache, as a SimPy process.

Two iteration-level scheduling policies (engine.policy; the request-level ones are in
simcost.engine.request_level):
- prefill_first, vLLM v0 without chunked prefill: at every step boundary, waiting requests are
  admitted first (in queue order, within max_num_seqs, max_num_batched_tokens and free KV blocks
  above the watermark) and run as one prefill step; when none can be admitted, every running
  request decodes one token.
- chunked, vLLM v1 / Sarathi-Serve: one token budget per step, spent first on a token for every
  decoding request, then on the next chunk of prompts already being prefilled, then on chunks of
  newly admitted prompts. A prompt's first output token comes with its last chunk.
The waiting queue's order is engine.queue (simcost.engine.waiting). When a decode step cannot get the
KV blocks it needs, a running request is preempted (the newest; under priority, the least
urgent): by recompute (its blocks are freed and its prompt plus the tokens it produced are
prefilled again) or by swap (its KV goes to host memory over the PCIe link and comes back
before new prompts; both transfers are added to the next step's time).

With prefix caching (simcost.engine.kv.reuse) admission reuses the cached leading blocks of a prompt
and prefills only the rest. In a disaggregated fleet a replica has a role: a prefill replica
hands each request to the fleet once its first token is out and its KV has crossed the KV link;
a decode replica loads that KV and generates the rest.

Speed (DESIGN.md section 3): while nothing can change the batch, decode steps are run as one
*span*: the number of steps until the first request finishes or the KV cache runs out is
computed up front, their times come from a numba kernel, and the process waits once. An
arrival that could be admitted interrupts the span; then only the steps finished by then, plus
the one in progress, are applied, exactly as a step-by-step loop would have done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from simcost.engine.decode_kernels import apply_decode_steps, max_feasible_steps
from simcost.engine.kv.reuse import PrefixReuse, PrefixSpec
from simcost.engine.kv.blocks import BlockPool, blocks_for
from simcost.engine.kv.prefix_cache import PrefixBlockPool
from simcost.cost.ledger import StepLog
from simcost.perf.deployment import Deployment
from simcost.perf.step_model import decode_span_times_s, item_time_s, step_time_s
from simcost.scenario.deployment import EngineConfig
from simcost.errors import InputError
from simcost.workload.request_table import COMPLETED, RequestTable
from simcost.engine.waiting import WaitingQueue

STOP = "stop"  # the interrupt cause that ends a replica's loop (its node is gone)
ITL_EWMA_WEIGHT = 0.1  # per decode step: itl_ewma_s follows roughly the last 10 steps


class Replica:
    def __init__(self, env: simpy.Environment, index: int, table: RequestTable, step_params: np.ndarray,
                 num_kv_blocks: int, block_size: int, max_num_seqs: int, max_num_batched_tokens: int,
                 kv_watermark: float, log: StepLog, on_finish: Callable[[int, int], None],
                 max_span_steps: int = 1 << 30, chunked: bool = False,
                 item_work: tuple[np.ndarray, np.ndarray] | None = None,
                 queue_key: Callable[[int], tuple] | None = None, swap: SwapLink | None = None,
                 role: str = "both", handoff: Callable[[int], None] | None = None,
                 kv_transfer_s_per_token: float = 0.0, prefix: PrefixSpec | None = None):
        self.env = env
        # per workload entry: (FLOPs, bytes) one item costs one device; None when no workload has items
        self.item_work = item_work
        self.index = index
        self.table = table
        self.params = step_params
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        watermark_blocks = int(kv_watermark * num_kv_blocks)
        # prefix caching: content-keyed blocks kept after use (simcost.engine.kv.reuse); else counted blocks
        self.reuse = None
        if prefix is None:
            self.pool = BlockPool(num_kv_blocks, watermark_blocks=watermark_blocks)
        else:
            self.pool = PrefixBlockPool(num_kv_blocks, watermark_blocks, prefix.host_blocks)
            self.reuse = PrefixReuse(prefix, self.pool, table, block_size)
        self.log = log
        self.on_finish = on_finish  # called with (replica index, request id) when a request ends
        self.max_span_steps = max_span_steps  # 1 turns spans off (tests compare both ways)
        self.chunked = chunked
        self.queue_key = queue_key  # None: fcfs; else the waiting order (simcost.engine.waiting) and preemption victim
        self.waiting = WaitingQueue(queue_key)
        self.swap = swap  # None: preemption by recompute
        self.swapped_tokens = 0  # KV tokens of this replica's requests now in host memory
        self._transfer_s = 0.0  # swap transfers not yet charged; the next step takes this much longer
        self.transfer_s_total = 0.0  # swap transfer time charged to steps so far
        # disaggregation: "prefill" replicas hand requests to the fleet after their first token
        # (`handoff`), once the KV has left over the KV link; "decode" replicas receive them
        self.role = role
        self.handoff = handoff
        self.kv_transfer_s_per_token = kv_transfer_s_per_token
        self._outbound = 0  # KV transfers leaving this replica now (their blocks are still held)
        self.running: list[int] = []  # in admission order; the last is preempted first
        self._wake: simpy.Event | None = None
        self._in_span = False
        # the inter-token latency decoding requests see here (decode steps plus the prefill steps
        # that stall them), averaged over recent decode steps: pool routers read it as the pool's
        # TPOT; 0.0 until the first decode step
        self.itl_ewma_s = 0.0
        self._stalled_s = 0.0  # prefill steps since the last decode step that decoding requests waited through
        self.process = env.process(self._loop())

    # --- the router's side -------------------------------------------------------------------

    @property
    def num_outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def max_blocks_admissible(self) -> int:
        """Blocks one request may ever hold here: the whole pool less the admission watermark."""
        return self.pool.num_blocks - self.pool.watermark_blocks

    def submit(self, rid: int) -> None:
        self.table.replica[rid] = self.index
        self.waiting.push(rid)
        if self._wake is not None:
            wake, self._wake = self._wake, None
            wake.succeed()
        elif self._in_span and self.waiting.head() == rid and len(self.running) < self.max_num_seqs:
            # only a request that is now the head of the queue, with a free sequence slot, can
            # change the next step; anything else waits for the span's end (a finish) anyway
            self._in_span = False
            self.process.interrupt()

    # --- the engine loop ---------------------------------------------------------------------

    def stop(self) -> list[int]:
        """The node is lost (spot reclaim, failure): end the loop, the step in progress with it
        (its work is lost and never logged), and hand back every request held here, their KV
        gone, to be retried elsewhere (they recompute their prompt and the output so far)."""
        if self.process.is_alive:
            self.process.interrupt(STOP)
        t = self.table
        held = self.running + list(self.waiting)
        ids = np.asarray(held, dtype=np.int64)
        t.kv_blocks[ids] = 0
        t.kv_tokens[ids] = 0
        t.swapped_tokens[ids] = 0
        t.num_retries[ids] += 1
        self.running, self.waiting = [], WaitingQueue(self.queue_key)
        return held

    def take_waiting(self) -> list[int]:
        """Draining: give up the requests not yet started here (a swapped-out request stays: its
        KV is in this node's host memory), for the fleet to route elsewhere."""
        t = self.table
        keep, moved = WaitingQueue(self.queue_key), []
        while self.waiting:
            rid = self.waiting.pop()
            (keep.push if t.swapped_tokens[rid] else moved.append)(rid)
        self.waiting = keep
        return moved

    def _loop(self):
        try:
            yield from self._serve()
        except simpy.Interrupt as stop:
            if stop.cause is not STOP:
                raise

    def _serve(self):
        # a replica gets requests only once it is ready (the fleet routes to ready replicas only)
        while True:
            if not self.waiting and not self.running:
                self._wake = self.env.event()
                yield self._wake
                continue
            if self.chunked:
                plan = self._schedule_chunked()
                if plan:
                    yield from self._run_chunked_step(plan)
                    continue
            else:
                admitted = self._schedule_prefill()
                if admitted:
                    yield from self._run_prefill(admitted)
                    continue
            if self.running:
                yield from self._run_decode_span()
            elif self._outbound:  # blocks come back when a KV transfer ends
                self._wake = self.env.event()
                yield self._wake
            else:
                raise RuntimeError(f"replica {self.index}: request {self.waiting.head()} can never be admitted")

    def _schedule_prefill(self) -> list[int]:
        """Admit waiting requests FIFO while sequence slots, the token budget and KV blocks allow."""
        self._resume_swapped()
        t = self.table
        admitted: list[int] = []
        num_tokens = 0
        # keep room for the running batch's next decode step, so a re-admitted request does not
        # immediately force another preemption
        reserve = self._decode_blocks(self.running)
        while self.waiting and len(self.running) + len(admitted) < self.max_num_seqs:
            rid = self.waiting.head()
            if t.swapped_tokens[rid] or t.remote_kv_tokens[rid]:
                break  # resumed by _resume_swapped at the next step boundary
            n = int(t.input_tokens[rid] + t.generated[rid])  # prompt, plus output when recomputing
            keys, hit = self.reuse.lookup(rid, n) if self.reuse else ((), None)
            cached_blocks = hit.num_blocks if hit else 0
            new_tokens = n - cached_blocks * self.block_size
            if admitted and num_tokens + new_tokens > self.max_num_batched_tokens:
                break  # (a lone request over the budget still runs: only a recompute can be)
            blocks = blocks_for(n, self.block_size) - cached_blocks
            if not self.pool.can_admit(blocks + (hit.num_free_blocks_needed if hit else 0), reserve):
                break
            t.kv_tokens[rid] = self.reuse.take(rid, keys, hit, n) if self.reuse else 0
            self.pool.allocate(blocks)
            t.kv_blocks[rid] = blocks + cached_blocks
            t.prefill_target[rid] = n
            self.waiting.pop()
            admitted.append(rid)
            num_tokens += new_tokens
        return admitted

    def _run_prefill(self, admitted: list[int]):
        t = self.table
        cached = t.kv_tokens[admitted]  # prompt tokens found in the prefix cache (0 without one)
        tokens = t.prefill_target[admitted] - cached  # tokens to compute
        num_tokens = int(tokens.sum())
        # causal attention within each prompt; computed tokens also attend to the cached prefix
        attn_pairs = float((tokens * cached + tokens * (tokens + 1) // 2).sum())
        start_s = self.env.now
        first = np.isnan(t.first_scheduled_s[admitted])
        t.first_scheduled_s[np.asarray(admitted)[first]] = start_s
        self.running.extend(admitted)  # running from admission on, as in vLLM (routers count them)
        items_s = self._items_s(np.asarray(admitted, dtype=np.int64), t.generated[admitted] == 0)
        stalls_decodes = len(self.running) > len(admitted)
        # every admitted prompt computes at least one token (a prefix-cache hit covers at most
        # all but the last), so each pays the per-request cost; len() keeps this hot path O(1)
        yield self.env.timeout(step_time_s(self.params, num_tokens, 0, attn_pairs, float(cached.sum()), len(admitted))
                               + items_s + self._take_transfer_s())
        end_s = self.env.now
        if stalls_decodes:
            self._stalled_s += end_s - start_s
        ids = np.asarray(admitted, dtype=np.int64)
        t.kv_tokens[ids] = t.prefill_target[ids]
        if self.reuse:
            for rid in admitted:
                self.reuse.prefilled(rid)
        t.token_time_s[t.token_offset[ids] + t.generated[ids]] = end_s  # a prefill emits one token
        t.generated[ids] += 1
        fresh = np.isnan(t.first_token_s[ids])
        t.first_token_s[ids[fresh]] = end_s
        self.log.add(self.index, start_s, np.array([end_s]), np.array([num_tokens]), ids, tokens, prefill=True)
        self._retire_finished(ids, end_s)
        if self.role == "prefill":
            self._hand_off(ids)

    def _items_s(self, ids: np.ndarray, fresh: np.ndarray) -> float:
        """Time for the items of the requests starting their first prefill (`fresh`): items are
        encoded once; a recompute after preemption never re-encodes them."""
        if self.item_work is None:
            return 0.0
        t = self.table
        ids = ids[fresh & (t.num_preemptions[ids] == 0)]
        flops_per_item, bytes_per_item = self.item_work
        workload, items = t.workload[ids], t.items[ids]
        return item_time_s(self.params, float((items * flops_per_item[workload]).sum()),
                           float((items * bytes_per_item[workload]).sum()))

    def _schedule_chunked(self) -> dict[int, int]:
        """One step's plan {request id: tokens} under the shared token budget; empty when the step
        would only decode (then a decode span runs instead)."""
        self._resume_swapped()
        while True:
            self._make_room_for_decodes()
            plan, has_prefill = self._plan_chunked()
            stuck = not has_prefill and any(self._prefilling(rid) for rid in self.running)
            if not stuck:
                break
            self._preempt_last()  # prompts holding the pool without room to go on: free one
        if not has_prefill:
            return {}
        t = self.table
        for rid, n in plan.items():  # claim the blocks the step writes into
            blocks = blocks_for(int(t.kv_tokens[rid]) + n, self.block_size)
            self.pool.allocate(int(blocks - t.kv_blocks[rid]))
            t.kv_blocks[rid] = blocks
        return plan

    def _plan_chunked(self) -> tuple[dict[int, int], bool]:
        t, size = self.table, self.block_size
        budget = self.max_num_batched_tokens
        plan: dict[int, int] = {}
        for rid in self.running:  # a token for every decoding request first: decodes never starve
            if budget > 0 and not self._prefilling(rid):
                plan[rid] = 1
                budget -= 1
        free = self.pool.num_free - self._decode_blocks(plan)
        has_prefill = False
        for rid in self.running:  # then the next chunk of prompts already started
            if budget > 0 and self._prefilling(rid):
                fit = (int(t.kv_blocks[rid]) + free) * size - int(t.kv_tokens[rid])
                n = min(int(t.prefill_target[rid] - t.kv_tokens[rid]), budget, fit)
                if n > 0:
                    plan[rid] = n
                    budget -= n
                    free -= blocks_for(int(t.kv_tokens[rid]) + n, size) - int(t.kv_blocks[rid])
                    has_prefill = True
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            rid = self.waiting.head()  # then chunks of newly admitted prompts, in queue order
            if t.swapped_tokens[rid] or t.remote_kv_tokens[rid]:
                break  # resumed by _resume_swapped at the next step boundary
            target = int(t.input_tokens[rid] + t.generated[rid])
            keys, hit = self.reuse.lookup(rid, target) if self.reuse else ((), None)
            cached_blocks = hit.num_blocks if hit else 0
            n = min(target - cached_blocks * size, budget)
            blocks = blocks_for(cached_blocks * size + n, size) - cached_blocks  # claimed by _schedule_chunked
            needed = blocks + (hit.num_free_blocks_needed if hit else 0)
            if free - needed < self.pool.watermark_blocks:
                break
            self.waiting.pop()
            self.running.append(rid)
            t.prefill_target[rid] = target
            if self.reuse:
                t.kv_tokens[rid] = self.reuse.take(rid, keys, hit, target)
                t.kv_blocks[rid] = cached_blocks
            if np.isnan(t.first_scheduled_s[rid]):
                t.first_scheduled_s[rid] = self.env.now
            plan[rid] = n
            budget -= n
            free -= needed
            has_prefill = True
        return plan, has_prefill

    def _prefilling(self, rid: int) -> bool:
        return self.table.kv_tokens[rid] < self.table.prefill_target[rid]

    def _make_room_for_decodes(self) -> None:
        """Preempt the newest requests until every decoding request can get its next slot."""
        while self.running and self._decode_blocks(self.running) > self.pool.num_free:
            self._preempt_last()

    def _decode_blocks(self, rids) -> int:
        """Blocks the decoding requests among rids (a list or a plan) need for one more token."""
        if not rids:
            return 0
        t, size = self.table, self.block_size
        ids = np.fromiter(rids, dtype=np.int64, count=len(rids))
        kv = t.kv_tokens[ids]
        decoding = kv >= t.prefill_target[ids]
        # blocks_for(kv + 1) - blocks held, vectorised: this runs at every step boundary
        return int(((kv[decoding] + size) // size - t.kv_blocks[ids][decoding]).sum())

    def _run_chunked_step(self, plan: dict[int, int]):
        t = self.table
        ids = np.fromiter(plan, dtype=np.int64, count=len(plan))
        tokens = np.fromiter(plan.values(), dtype=np.int64, count=len(plan))
        kv_before = t.kv_tokens[ids]
        decoding = kv_before >= t.prefill_target[ids]
        chunk = tokens[~decoding]
        # decode tokens attend to their context plus themselves; a chunk to what precedes it
        # plus itself, causally
        attn_pairs = float((kv_before[decoding] + 1).sum() + (chunk * kv_before[~decoding] + chunk * (chunk + 1) // 2).sum())
        start_s = self.env.now
        items_s = self._items_s(ids, (t.first_scheduled_s[ids] == start_s) & (t.generated[ids] == 0))
        num_decoding = int(decoding.sum())
        yield self.env.timeout(step_time_s(self.params, int(chunk.sum()), num_decoding, attn_pairs,
                                           float(kv_before.sum()), len(chunk))  # planned chunks are > 0
                               + items_s + self._take_transfer_s())
        end_s = self.env.now
        if num_decoding:
            self._record_itl(end_s - start_s, 1)
        t.kv_tokens[ids] = kv_before + tokens
        if self.reuse:
            for rid in ids[~decoding & (t.kv_tokens[ids] >= t.prefill_target[ids])].tolist():
                self.reuse.prefilled(rid)
        emits = ids[decoding | (t.kv_tokens[ids] >= t.prefill_target[ids])]
        t.token_time_s[t.token_offset[emits] + t.generated[emits]] = end_s
        t.generated[emits] += 1
        fresh = emits[np.isnan(t.first_token_s[emits])]
        t.first_token_s[fresh] = end_s
        self.log.add(self.index, start_s, np.array([end_s]), np.array([int(tokens.sum())]), ids, tokens,
                     prefill=True, member_prefill=~decoding)
        self._retire_finished(emits, end_s)
        if self.role == "prefill":
            self._hand_off(emits)

    def _run_decode_span(self):
        t = self.table
        while True:
            ids = np.asarray(self.running, dtype=np.int64)
            max_steps = min(int((t.output_tokens[ids] - t.generated[ids]).min()), self.max_span_steps)
            k = max_feasible_steps(t.kv_tokens[ids], t.kv_blocks[ids], self.pool.num_free, self.block_size, max_steps)
            if k > 0:
                break
            self._preempt_last()
            if not self.running:
                return
        n = len(ids)
        start_s = self.env.now
        step_s = decode_span_times_s(self.params, n, float(t.kv_tokens[ids].sum()), k)
        step_s[0] += self._take_transfer_s()
        step_end_s = start_s + np.cumsum(step_s)
        num_done = k
        self._in_span = True
        try:
            yield self.env.timeout(step_end_s[-1] - start_s)
        except simpy.Interrupt as interrupt:
            if interrupt.cause is STOP:
                raise
            # apply the steps finished by now plus the one in progress
            num_done = min(k, int(np.searchsorted(step_end_s, self.env.now, side="right")) + 1)
            wait_s = step_end_s[num_done - 1] - self.env.now
            if wait_s > 0:
                yield self.env.timeout(wait_s)
        self._in_span = False
        ends = step_end_s[:num_done]
        self._record_itl(float(ends[-1]) - start_s, num_done)
        new_blocks = apply_decode_steps(ids, t.generated, t.kv_tokens, t.kv_blocks, t.token_offset, t.token_time_s,
                                        ends, num_done, self.block_size)
        self.pool.allocate(int(new_blocks))
        self.log.add(self.index, start_s, ends, np.full(num_done, n, dtype=np.int64), ids,
                     np.full(n, num_done, dtype=np.int64), prefill=False)
        self._retire_finished(ids, float(ends[-1]))

    def _record_itl(self, decode_s: float, num_steps: int) -> None:
        """num_steps decode steps took decode_s: fold their mean gap (with the prefill stalls
        before them) into the average, weighted as num_steps samples. O(1): this runs per span."""
        gap_s = (decode_s + self._stalled_s) / num_steps
        self._stalled_s = 0.0
        if self.itl_ewma_s == 0.0:  # the first sample is the average
            self.itl_ewma_s = gap_s
        else:
            self.itl_ewma_s += (1.0 - (1.0 - ITL_EWMA_WEIGHT) ** num_steps) * (gap_s - self.itl_ewma_s)

    def _retire_finished(self, ids: np.ndarray, now_s: float) -> None:
        t = self.table
        done = ids[t.generated[ids] >= t.output_tokens[ids]]
        if not len(done):
            return
        t.status[done] = COMPLETED
        t.finish_s[done] = now_s
        self._release_kv(done, finished=True)
        t.kv_blocks[done] = 0
        t.kv_tokens[done] = 0
        finished = set(done.tolist())
        self.running = [rid for rid in self.running if rid not in finished]
        for rid in done.tolist():
            self.on_finish(self.index, rid)

    def _preempt_last(self) -> None:
        """Preempt the newest running request (fcfs) or the one the queue order puts last
        (priority: the least urgent, vLLM's rule), and requeue it. By swap (when configured and
        the host swap space has room) its KV goes to host memory and comes back later, the
        transfers charged to the steps they precede; otherwise by recompute: its KV is dropped
        and its prompt plus the output so far are prefilled again."""
        t = self.table
        if self.queue_key is None:
            rid = self.running.pop()
        else:
            rid = max(self.running, key=self.queue_key)
            self.running.remove(rid)
        kv_tokens = int(t.kv_tokens[rid])
        if self.swap is not None and kv_tokens and self.swapped_tokens + kv_tokens <= self.swap.capacity_tokens:
            t.swapped_tokens[rid] = kv_tokens
            t.num_swaps[rid] += 1
            self.swapped_tokens += kv_tokens
            self._transfer_s += kv_tokens * self.swap.s_per_token
        self._release_kv(np.array([rid]), finished=False)
        t.kv_blocks[rid] = 0
        t.kv_tokens[rid] = 0
        t.num_preemptions[rid] += 1
        self.waiting.push_preempted(rid)

    def _resume_swapped(self) -> None:
        """Requests whose KV is held outside the pool come in first, while their blocks fit next
        to the running batch's next step: swapped-out ones (vLLM v0 serves its swapped queue
        before new prompts) and, on a decode replica, requests handed over by a prefill replica."""
        t = self.table
        while self.waiting and len(self.running) < self.max_num_seqs:
            head = self.waiting.head()
            if not (t.swapped_tokens[head] or t.remote_kv_tokens[head]):
                return
            if not self._swap_in(head, self._decode_blocks(self.running)):
                return

    def _swap_in(self, rid: int, reserve_blocks: int) -> bool:
        """Load a request's KV into the pool and make it running again (False: no room). Swapped
        KV is copied back over the host link (charged to the next step); handed-over KV has
        already arrived over the KV link."""
        t = self.table
        swapped = int(t.swapped_tokens[rid])
        tokens = swapped or int(t.remote_kv_tokens[rid])
        blocks = blocks_for(tokens, self.block_size)
        if not self.pool.can_admit(blocks, reserve_blocks):
            return False
        self.pool.allocate(blocks)
        self.waiting.pop()
        t.kv_blocks[rid], t.kv_tokens[rid], t.swapped_tokens[rid], t.remote_kv_tokens[rid] = blocks, tokens, 0, 0
        if swapped:
            self.swapped_tokens -= swapped
            self._transfer_s += swapped * self.swap.s_per_token
        self.running.append(rid)
        return True

    def _hand_off(self, ids: np.ndarray) -> None:
        """Prefill role: requests whose prompt is done (and that want more tokens) leave the
        batch; each one's KV goes out over the KV link, its blocks held until it has left."""
        t = self.table
        moving = [rid for rid in ids.tolist() if t.status[rid] != COMPLETED and t.kv_tokens[rid] >= t.prefill_target[rid]]
        if not moving:
            return
        gone = set(moving)
        self.running = [rid for rid in self.running if rid not in gone]
        for rid in moving:
            self._outbound += 1
            self.env.process(self._send_kv(rid))

    def _send_kv(self, rid: int):
        t = self.table
        yield self.env.timeout(int(t.kv_tokens[rid]) * self.kv_transfer_s_per_token)
        self._release_kv(np.array([rid]), finished=False)
        t.remote_kv_tokens[rid] = t.kv_tokens[rid]
        t.kv_blocks[rid] = 0
        t.kv_tokens[rid] = 0
        self._outbound -= 1
        if self._wake is not None:  # blocks came back: an idle loop may admit now
            wake, self._wake = self._wake, None
            wake.succeed()
        self.handoff(rid)

    def _release_kv(self, ids: np.ndarray, finished: bool) -> None:
        """Give back the blocks of requests that finished, were preempted or handed off (the
        caller zeroes their kv_blocks). With prefix caching, their named blocks stay cached."""
        if self.reuse is None:
            self.pool.free(int(self.table.kv_blocks[ids].sum()))
            return
        for rid in ids.tolist():
            self.reuse.release(rid, finished)

    def _take_transfer_s(self) -> float:
        if self.reuse is not None and self.reuse.load_s:  # prefix blocks loaded from the host tier
            self._transfer_s += self.reuse.load_s
            self.reuse.load_s = 0.0
        transfer_s, self._transfer_s = self._transfer_s, 0.0
        self.transfer_s_total += transfer_s
        return transfer_s


@dataclass(frozen=True)
class SwapLink:
    """KV swap to host memory: seconds per token moved (each device moves its shard of the KV
    over its own host link, in parallel) and the host swap space, in tokens, per replica."""

    s_per_token: float
    capacity_tokens: int


def swap_link(engine: EngineConfig, dep: Deployment) -> SwapLink | None:
    """The swap path of `engine.preemption: swap` for deployment `dep` (None for recompute)."""
    if engine.preemption != "swap":
        return None
    capacity_tokens = int(engine.swap_space_gb * 2 ** 30 * dep.tensor_parallel / dep.kv_bytes_per_token)
    return SwapLink(host_kv_s_per_token(engine, dep, "engine.preemption"), capacity_tokens)


def host_kv_s_per_token(engine: EngineConfig, dep: Deployment, key: str) -> float:
    """Seconds to move one token's KV between a replica and host memory (swap, host prefix
    tier): each tensor-parallel device moves its shard over its own host link, in parallel.
    `key` names the setting that needs the link, for the error when there is none."""
    link_bytes_per_s = (engine.host_link_gb_per_s * 1e9 if engine.host_link_gb_per_s is not None
                        else dep.device.host_link_bytes_per_s)
    if link_bytes_per_s is None:
        raise InputError(key, f"needs a host link; the catalog gives none for {dep.device.key} (its KV already "
                              "lives in host memory, or the link is not published): set engine.host_link_gb_per_s")
    return dep.kv_bytes_per_token / dep.tensor_parallel / link_bytes_per_s
