"""One replica: vLLM-style continuous batching over a paged KV cache, as a SimPy process.

An iteration-level scheduler (simcost.engine.schedulers, chosen by engine.policy; the
request-level policies are in simcost.engine.request_level) plans each step; this class runs the
plan and keeps the books: token times, the step log, finishes, preemption and swap. The waiting
queue's order is engine.queue (simcost.engine.waiting). When a decode step cannot get the KV
blocks it needs, a running request is preempted (the newest; under priority, the least urgent):
by recompute (its blocks are freed and its prompt plus the tokens it produced are prefilled
again) or by swap (its KV goes to host memory over the PCIe link and comes back before new
prompts; both transfers are added to the next step's time).

With prefix caching (simcost.engine.kv.reuse) admission reuses the cached leading blocks of a prompt
and prefills only the rest. In a disaggregated fleet a replica has a role: a prefill replica
hands each request to the fleet once its first token is out and its KV has crossed the KV link;
a decode replica loads that KV and generates the rest.

Speed: while nothing can change the batch, decode steps are run as one *span*: the number of
steps until the first request finishes or the KV cache runs out is computed up front, their
times come from a numba kernel, and the process waits once. An arrival that could be admitted
interrupts the span; then only the steps finished by then, plus the one in progress, are
applied, exactly as a step-by-step loop would have done.
"""

from __future__ import annotations

import math

import numpy as np
import simpy

from simcost.engine.base import STOP, ReplicaBase, wake_after
from simcost.engine.decode_kernels import count_emitted, finish_members, step_shape
from simcost.engine.kv.array_pool import ArrayPrefixBlockPool
from simcost.engine.kv.blocks import BlockPool, KVPool
from simcost.engine.kv.reuse import PrefixReuse
from simcost.engine.options import ReplicaOptions
from simcost.engine.schedulers import SCHEDULERS, StepPlan
from simcost.engine.speculation import (
    SpeculationState,
    apply_mixed_extra,
    mixed_step_s,
    mixed_step_tokens,
    run_step,
)
from simcost.engine.waiting import RunningBatch
from simcost.perf.step_model import count_decode_steps, decode_span_ends, step_time_s
from simcost.workload.request_table import COMPLETED

ITL_EWMA_WEIGHT = 0.1  # per decode step: itl_ewma_s follows roughly the last 10 steps


class Replica(ReplicaBase):
    def __init__(self, env: simpy.Environment, index: int, options: ReplicaOptions):
        super().__init__(env, index, options)
        self.max_span_steps = options.max_span_steps
        self.swap = options.swap
        self.swapped_tokens = 0  # KV tokens of this replica's requests now in host memory
        self._transfer_s = 0.0  # swap transfers not yet charged; the next step takes this much longer
        self.transfer_s_total = 0.0  # swap transfer time charged to steps so far
        self.handoff = options.handoff
        self.kv_transfer_s_per_token = options.kv_transfer_s_per_token
        self._outbound = 0  # KV transfers leaving this replica now (their blocks are still held)
        self._in_span = False
        self._span_end_s = np.zeros(0)  # the running span's step end times (while _in_span)
        self._span_steps = 0  # of them, the steps the span applies
        # the inter-token latency decoding requests see here (decode steps plus the prefill steps
        # that stall them), averaged over recent decode steps: pool routers read it as the pool's
        # TPOT; 0.0 until the first decode step
        self.itl_ewma_s = 0.0
        self._stalled_s = 0.0  # prefill steps since the last decode step that decoding requests waited through
        self.scheduler = SCHEDULERS[options.policy](self)
        # speculative decoding: decode-only steps verify drafts (simcost.engine.speculation)
        self.speculation = SpeculationState(options.speculation) if options.speculation is not None else None
        self.speculate_mixed = self.speculation is not None and self.speculation.spec.in_mixed_steps
        self._start()

    def _make_pool(self, options: ReplicaOptions) -> KVPool:
        # prefix caching: content-keyed blocks kept after use (simcost.engine.kv.reuse); else counted blocks
        if options.prefix is None:
            return BlockPool(options.num_kv_blocks, watermark_blocks=options.watermark_blocks)
        pool = ArrayPrefixBlockPool(options.num_kv_blocks, options.watermark_blocks, options.prefix.host_blocks)
        self.reuse = PrefixReuse(options.prefix, pool, self.table, self.block_size)
        return pool

    # --- the router's side -------------------------------------------------------------------

    def _arrived_while_busy(self, rid: int) -> None:
        if self._in_span and self.waiting.head() == rid and len(self.running) < self.max_num_seqs:
            # only a request that is now the head of the queue, with a free sequence slot, can
            # change the next step; anything else waits for the span's end (a finish) anyway
            self._in_span = False
            self._cut_span()

    def _cut_span(self) -> None:
        """End the running decode span with the step in progress: the loop wakes at that
        step's end instead of the span's, as a step-by-step loop would admit there (an arrival
        at exactly a step's end interrupts it instead, to go on at once)."""
        now_s = self.env.now
        step_end_s = self._span_end_s
        num_done = min(len(step_end_s), int(step_end_s.searchsorted(now_s, side="right")) + 1)
        wait_s = step_end_s[num_done - 1] - now_s
        if wait_s > 0 and wake_after(self.process, wait_s):
            self._span_steps = num_done
        else:  # (the interrupt's handler finds the same steps done)
            self.process.interrupt()

    def _abandon(self) -> list[int]:
        held = self.running + list(self.waiting)  # their prompt and output so far are recomputed
        self.kv.forget(np.asarray(held, dtype=np.int64))
        return held

    # --- the scheduler's side ----------------------------------------------------------------

    def prefilling(self, rid: int) -> bool:
        return self.table.kv_tokens[rid] < self.table.prefill_target[rid]

    def start_running(self, rids) -> None:
        """Admitted requests join the batch (routers count them as running from now, as in vLLM)."""
        self.running.extend(rids)
        first_scheduled_s = self.table.first_scheduled_s
        for rid in rids:
            if math.isnan(first_scheduled_s[rid]):
                first_scheduled_s[rid] = self.env.now

    def preempt_last(self) -> int:
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
        swap, to_host = self.swap, False
        if swap is not None and kv_tokens and self.swapped_tokens + kv_tokens <= swap.capacity_tokens:
            to_host = True
            t.num_swaps[rid] += 1
            self.swapped_tokens += kv_tokens
            self._transfer_s += kv_tokens * swap.s_per_token
        self.kv.preempt(rid, to_host)
        t.num_preemptions[rid] += 1
        self.waiting.push_preempted(rid)
        return rid

    def swap_in(self, rid: int, reserve_blocks: int) -> bool:
        """Load the KV of the head of the queue into the pool and make it running again (False:
        no room). Swapped KV is copied back over the host link (charged to the next step);
        handed-over KV has already arrived over the KV link."""
        swapped_tokens = int(self.table.swapped_tokens[rid])
        if not self.kv.load(rid, reserve_blocks):
            return False
        self.waiting.pop()
        if swapped_tokens and self.swap is not None:  # (only a swap link swaps out)
            self.swapped_tokens -= swapped_tokens
            self._transfer_s += swapped_tokens * self.swap.s_per_token
        self.running.append(rid)
        return True

    # --- the engine loop ---------------------------------------------------------------------

    def _serve(self):
        # a replica gets requests only once it is ready (the fleet routes to ready replicas only)
        while True:
            if not self.waiting and not self.running:
                self._wake = self.env.event()
                yield self._wake
                continue
            plan = self.scheduler.schedule()
            if plan:
                yield from self._run_step(plan)
            elif self.running:
                yield from self._run_decode_span()
            elif self._outbound:  # blocks come back when a KV transfer ends
                self._wake = self.env.event()
                yield self._wake
            else:
                raise RuntimeError(f"replica {self.index}: request {self.waiting.head()} can never be admitted")

    def _run_step(self, plan: StepPlan):
        """One step of the plan: prompt chunks and single decode tokens side by side."""
        t = self.table
        ids, tokens = plan.arrays()
        kv_before = t.kv_tokens[ids]
        decoding = np.empty(len(ids), dtype=np.bool_)
        num_decoding, num_chunk_tokens, num_chunks, attn_pairs, kv_sum = step_shape(ids, tokens, t.kv_tokens,
                                                                                   t.prefill_target, decoding)
        start_s = self.env.now
        items_s = self._items_s(ids, self.scheduler.encodes_items(ids, start_s)) if self.item_work is not None else 0.0
        stalls_decodes = not num_decoding and self._decodes_left_out(plan)
        spec_tokens = None  # speculation.in_mixed_steps: the decoders' 1 + accepted drafts
        if num_decoding and self.speculate_mixed and num_chunks:
            spec_tokens = mixed_step_tokens(self, ids[decoding])
        if spec_tokens is not None:
            assert self.speculation is not None
            decode_kv = kv_before[decoding]
            chunk_pairs = float(attn_pairs) - float((decode_kv + 1).sum())  # the chunks' own attention pairs
            model_s = mixed_step_s(self.params, self.speculation.spec, int(num_chunk_tokens), chunk_pairs,
                                   float(kv_before[~decoding].sum()), int(num_chunks), decode_kv)
        else:
            model_s = step_time_s(self.params, int(num_chunk_tokens), int(num_decoding), float(attn_pairs),
                                  float(kv_sum), int(num_chunks))  # planned chunks are > 0
        yield self.env.timeout(model_s + items_s + self._take_transfer_s())
        end_s = self.env.now
        if num_decoding:
            self._record_itl(end_s - start_s, 1)
        elif stalls_decodes:
            self._stalled_s += end_s - start_s
        if spec_tokens is None and t.exact_token_times:  # most steps: one kernel, from the KV written to the finishes
            prompt_done, done = self.kv.end_step(ids, kv_before, tokens, end_s)
        else:
            prompt_done = self.kv.write_step(ids, kv_before, tokens)  # (decoding members too: past their prompt)
            emits = ids[prompt_done]  # the decoders, and each prompt whose last chunk this was (its first token)
            t.emit_tokens(emits, np.array([end_s]))
            count_emitted(emits, t.generated, t.first_token_s, end_s)  # generated + 1, a first token's time
            if spec_tokens is not None:
                apply_mixed_extra(self, ids[decoding], spec_tokens, end_s)
                tokens[decoding] = spec_tokens
                num_decoding = int(spec_tokens.sum())
            done = finish_members(emits, t.generated, t.output_tokens, t.status, t.finish_s, COMPLETED, end_s)
        if self.reuse is not None:  # (without prefix caching nothing happens when a prompt is done)
            self.kv.prefilled(ids, prompt_done & ~decoding if num_decoding else prompt_done)
        self.log.add_step(self.index, start_s, end_s, num_chunk_tokens + num_decoding, ids, tokens,
                          ~decoding if num_decoding else None)
        self._retire(done)
        if self.role == "prefill":
            self._hand_off(ids[prompt_done])

    def _decodes_left_out(self, plan: StepPlan) -> bool:
        """Whether decoding requests sit out this step (prefill_first's prompt steps): their
        next token waits for it, which counts in their inter-token latency."""
        if len(self.running) <= len(plan):
            return False
        return any(rid not in plan and not self.prefilling(rid) for rid in self.running)

    def _run_decode_span(self):
        if self.speculation is not None:  # one verification step at a time: tokens per step vary
            yield from run_step(self)
            return
        while True:
            ids = self.running.ids()
            k, kv_tokens = self.kv.plan_decode_span(ids, self.max_span_steps)
            if k > 0:
                break
            self.preempt_last()
            if not self.running:
                return
        n = len(ids)
        start_s = self.env.now
        span, step_end_s = decode_span_ends(self.params, n, float(kv_tokens), k, start_s, self._take_transfer_s())
        self._span_end_s, self._span_steps = step_end_s, k  # (_cut_span may end it sooner)
        self._in_span = True
        try:
            yield self.env.timeout(step_end_s[-1] - start_s)
        except simpy.Interrupt as interrupt:
            if interrupt.cause is STOP:
                raise
            # apply the steps finished by now plus the one in progress
            self._span_steps = min(k, int(step_end_s.searchsorted(self.env.now, side="right")) + 1)
            wait_s = step_end_s[self._span_steps - 1] - self.env.now
            if wait_s > 0:
                yield self.env.timeout(wait_s)
        self._in_span = False
        num_done = self._span_steps
        ends = step_end_s[:num_done]
        count_decode_steps(self.params, span, 0, num_done)  # (a lost node's span never gets here)
        self._record_itl(float(ends[-1]) - start_s, num_done)
        finished = self.kv.end_span(ids, ends, num_done)
        self.log.add_span(self.index, start_s, ends, ids)
        self._retire(finished)

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
        self._retire(finish_members(ids, t.generated, t.output_tokens, t.status, t.finish_s, COMPLETED, now_s))

    def _retire(self, done: np.ndarray) -> None:
        """The requests just marked finished leave the batch and give back their KV."""
        if not len(done):  # most steps and spans finish nobody
            return
        self.kv.free(done, finished=True)
        finished = done.tolist()
        if len(finished) <= 4:  # (most calls: one) list.remove scans in C, in place; the order stays
            for rid in finished:
                self.running.remove(rid)
        else:
            gone = set(finished)
            self.running = RunningBatch(rid for rid in self.running if rid not in gone)
        for rid in finished:
            self.on_finish(self.index, rid)

    def _hand_off(self, ids: np.ndarray) -> None:
        """Prefill role: requests whose prompt is done (and that want more tokens) leave the
        batch; each one's KV goes out over the KV link, its blocks held until it has left."""
        t = self.table
        moving = [rid for rid in ids.tolist() if t.status[rid] != COMPLETED and t.kv_tokens[rid] >= t.prefill_target[rid]]
        if not moving:
            return
        gone = set(moving)
        self.running = RunningBatch(rid for rid in self.running if rid not in gone)
        for rid in moving:
            self._outbound += 1
            self.env.process(self._send_kv(rid))

    def _send_kv(self, rid: int):
        yield self.env.timeout(int(self.table.kv_tokens[rid]) * self.kv_transfer_s_per_token)
        self.kv.hand_off(rid)
        self._outbound -= 1
        if self._wake is not None:  # blocks came back: an idle loop may admit now
            self._wake_up()
        assert self.handoff is not None  # the fleet gives every prefill replica one
        self.handoff(rid)

    def _take_transfer_s(self) -> float:
        if self.reuse is not None and self.reuse.load_s:  # prefix blocks loaded from the host tier
            self._transfer_s += self.reuse.load_s
            self.reuse.load_s = 0.0
        transfer_s, self._transfer_s = self._transfer_s, 0.0
        self.transfer_s_total += transfer_s
        return transfer_s
