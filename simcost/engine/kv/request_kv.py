"""Per-request KV accounting on one replica: the one writer of a request's KV columns.

A request's KV on a replica is its blocks (table.kv_blocks, drawn from the replica's block pool)
and the tokens written into them (table.kv_tokens); while it is out of the pool its KV may sit
in host memory (table.swapped_tokens) or on its way from a prefill replica
(table.remote_kv_tokens). Every change goes through one verb here, so the pool and the columns
never disagree: every block is free or held by exactly one request (shared prefix blocks are
counted by simcost.engine.kv.prefix_cache).
"""

from __future__ import annotations

import numpy as np

from simcost.engine.decode_kernels import (
    apply_decode_steps,
    decode_blocks_needed,
    decode_needs,
    end_span,
    end_step,
    finish_members,
    grow_decode_kv,
    grow_step_kv,
    plan_decode_span,
    write_step_kv,
)
from simcost.engine.kv.blocks import KVPool, blocks_for
from simcost.engine.kv.prefix_cache import PrefixHit
from simcost.engine.kv.reuse import PrefixReuse
from simcost.workload.request_table import COMPLETED, RequestTable

_NO_KEYS = np.zeros(0, dtype=np.int64)
_NOBODY = np.zeros(0, dtype=np.int64)  # no member finished (most steps and spans)


class RequestKV:
    def __init__(self, table: RequestTable, pool: KVPool, block_size: int, reuse: PrefixReuse | None = None):
        self.table = table  # its columns may be replaced as the table grows: always read through it
        self.pool = pool
        self.block_size = block_size
        self.reuse = reuse  # prefix caching: named blocks stay cached after use
        self._finished = np.empty(64, dtype=np.int64)  # where end_step and end_span write who finished

    # --- queries ----------------------------------------------------------------------------

    def lookup(self, rid: int, num_tokens: int) -> tuple[np.ndarray, PrefixHit | None]:
        """The cache keys of rid's first tokens and what the prefix cache holds of them."""
        return self.reuse.lookup(rid, num_tokens) if self.reuse else (_NO_KEYS, None)

    def decode_blocks(self, rids) -> int:
        """Blocks the decoding requests among rids (an int64 array, or a list or plan of ids) need
        for one more token."""
        if not len(rids):
            return 0
        t = self.table
        ids = rids if isinstance(rids, np.ndarray) else np.fromiter(rids, dtype=np.int64, count=len(rids))
        return int(decode_blocks_needed(ids, t.kv_tokens, t.prefill_target, t.kv_blocks, self.block_size))

    def decode_needs(self, ids: np.ndarray) -> tuple[int, int]:
        """(decode_blocks(ids), how many of ids are still prefilling), in one kernel call."""
        if not len(ids):
            return 0, 0
        t = self.table
        needed, prefilling = decode_needs(ids, t.kv_tokens, t.prefill_target, t.kv_blocks, self.block_size)
        return int(needed), int(prefilling)

    def plan_decode_span(self, ids: np.ndarray, max_span_steps: int) -> tuple[int, int]:
        """(decode steps ids can take: none outlives its output, the free blocks allow them;
        the batch's KV tokens), in one kernel call: this runs before every decode span."""
        t = self.table
        k, kv_sum = plan_decode_span(ids, t.output_tokens, t.generated, t.kv_tokens, t.kv_blocks, self.pool.num_free,
                                     self.block_size, max_span_steps)
        return int(k), int(kv_sum)

    # --- verbs ------------------------------------------------------------------------------

    def admit(self, rid: int, keys: np.ndarray, hit: PrefixHit | None, num_tokens: int, hold_tokens: int = 0) -> int:
        """rid starts a prompt of num_tokens: it references the cached leading blocks `lookup`
        found (the caller checked the pool has room) and holds the blocks for its first
        hold_tokens tokens (0: nothing else yet; one call, as admission is a hot path). Returns
        the tokens of KV it already has (its cached prefix)."""
        t = self.table
        if self.reuse:
            assert hit is not None  # lookup always gives a hit (maybe empty) with prefix caching
            cached_tokens = int(self.reuse.take(rid, keys, hit, num_tokens))
            held_blocks = hit.num_blocks
        else:
            cached_tokens = held_blocks = 0
        t.kv_tokens[rid] = cached_tokens
        if hold_tokens:
            blocks = blocks_for(hold_tokens, self.block_size)
            self.pool.allocate(blocks - held_blocks)
            held_blocks = blocks
        t.kv_blocks[rid] = held_blocks
        return cached_tokens

    def grow(self, ids: np.ndarray, tokens: np.ndarray) -> None:
        """Hold the blocks ids[n] needs for tokens[n] more tokens of KV (a step is about to write
        them), taken from the pool in one call: the same blocks, evictions included, as one
        call per request in order (the pool takes empty blocks first, then the LRU's oldest)."""
        t = self.table
        new_blocks = int(grow_step_kv(ids, tokens, t.kv_tokens, t.kv_blocks, self.block_size))
        if new_blocks < 0:
            raise RuntimeError("request KV: a step would shrink a request's blocks")
        self.pool.allocate(new_blocks)

    def reserve(self, ids: np.ndarray, blocks: np.ndarray) -> None:
        """Hold blocks[i] blocks for request ids[i] up front (request-level batches)."""
        self.pool.allocate(int(blocks.sum()))
        self.table.kv_blocks[ids] = blocks

    def written(self, ids: np.ndarray, num_tokens: np.ndarray) -> None:
        """A step wrote the KV of ids: they now hold num_tokens tokens each (within their blocks)."""
        self.table.kv_tokens[ids] = num_tokens

    def write_step(self, ids: np.ndarray, kv_before: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """A step wrote tokens[n] more tokens of KV for ids[n], which held kv_before[n]; returns
        which of them now hold their whole prompt (one kernel call: this runs every step)."""
        t = self.table
        prompt_done = np.empty(len(ids), dtype=np.bool_)
        write_step_kv(ids, tokens, kv_before, t.prefill_target, t.kv_tokens, prompt_done)
        return prompt_done

    def end_step(self, ids: np.ndarray, kv_before: np.ndarray, tokens: np.ndarray,
                 end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """`write_step`, then what the step's end means for its members, in one kernel call (the
        table keeps exact token times): each member whose prompt is done emits a token at end_s,
        and those that now have all their output are marked finished. Returns (prompt_done, the
        finished members)."""
        t = self.table
        prompt_done = np.empty(len(ids), dtype=np.bool_)
        count = end_step(ids, tokens, kv_before, t.prefill_target, t.kv_tokens, prompt_done, t.generated,
                         t.first_token_s, t.token_offset, t.token_time_s, t.output_tokens, t.status, t.finish_s,
                         COMPLETED, end_s, self._finished_buffer(len(ids)))
        return prompt_done, self._finished_of(count)

    def prefilled(self, ids: np.ndarray, done: np.ndarray) -> None:
        """ids[done] have computed their whole prompt: with prefix caching, its full blocks get
        names later requests can reuse."""
        if self.reuse:
            for rid in ids[done].tolist():
                self.reuse.prefilled(rid)

    def apply_decode_steps(self, ids: np.ndarray, step_end_s: np.ndarray, num_steps: int) -> None:
        """num_steps decode steps of ids: one kernel emits their tokens and grows their KV (a table
        without token times streams the tokens' gaps first, simcost.workload.token_stats)."""
        t = self.table
        if t.exact_token_times:
            new_blocks = apply_decode_steps(ids, t.generated, t.kv_tokens, t.kv_blocks, t.token_offset, t.token_time_s,
                                            step_end_s, num_steps, self.block_size)
        else:
            t.emit_tokens(ids, step_end_s[:num_steps])
            new_blocks = grow_decode_kv(ids, t.generated, t.kv_tokens, t.kv_blocks, num_steps, self.block_size)
        self.pool.allocate(int(new_blocks))

    def end_span(self, ids: np.ndarray, step_end_s: np.ndarray, num_steps: int) -> np.ndarray:
        """`apply_decode_steps`, then the members that now have all their output are marked
        finished at the last step's end and returned (one kernel call with exact token times)."""
        t = self.table
        if not t.exact_token_times:
            self.apply_decode_steps(ids, step_end_s, num_steps)
            return finish_members(ids, t.generated, t.output_tokens, t.status, t.finish_s, COMPLETED,
                                  float(step_end_s[num_steps - 1]))
        new_blocks, count = end_span(ids, t.generated, t.kv_tokens, t.kv_blocks, t.token_offset, t.token_time_s,
                                     step_end_s, num_steps, self.block_size, t.output_tokens, t.status,
                                     t.finish_s, COMPLETED, self._finished_buffer(len(ids)))
        self.pool.allocate(int(new_blocks))
        return self._finished_of(count)

    def _finished_buffer(self, num_members: int) -> np.ndarray:
        if len(self._finished) < num_members:
            self._finished = np.empty(max(num_members, 2 * len(self._finished)), dtype=np.int64)
        return self._finished

    def _finished_of(self, count: int) -> np.ndarray:
        """The members end_step or end_span found finished, as an array of their own (the buffer
        is written again at the next step)."""
        return self._finished[:count].copy() if count else _NOBODY

    def load(self, rid: int, reserve_blocks: int) -> bool:
        """Bring rid's KV held outside the pool (swapped out, or handed over by a prefill
        replica) into blocks, if they fit beside reserve_blocks; False: no room."""
        t = self.table
        tokens = int(t.swapped_tokens[rid]) or int(t.remote_kv_tokens[rid])
        blocks = blocks_for(tokens, self.block_size)
        if not self.pool.can_admit(blocks, reserve_blocks):
            return False
        self.pool.allocate(blocks)
        t.kv_blocks[rid], t.kv_tokens[rid], t.swapped_tokens[rid], t.remote_kv_tokens[rid] = blocks, tokens, 0, 0
        return True

    def free(self, ids: np.ndarray, finished: bool, preempted: bool = False) -> None:
        """ids give their blocks back (finished, preempted, or leaving this replica's batch). With
        prefix caching their named blocks stay cached, the full blocks a finished or preempted
        request has computed named too."""
        t = self.table
        if self.reuse is None:
            self.pool.free(int(t.kv_blocks[ids].sum()))
        else:
            for rid in ids.tolist():
                self.reuse.release(rid, finished, preempted)
        t.kv_blocks[ids] = 0
        t.kv_tokens[ids] = 0

    def preempt(self, rid: int, to_host: bool) -> None:
        """rid leaves the batch: its KV is dropped, or first copied to host memory (`to_host`)."""
        t = self.table
        if to_host:
            t.swapped_tokens[rid] = t.kv_tokens[rid]
        self.free(np.array([rid]), finished=False, preempted=True)

    def hand_off(self, rid: int) -> None:
        """rid's KV has crossed the KV link to a decode replica: it is remote now."""
        t = self.table
        t.remote_kv_tokens[rid] = t.kv_tokens[rid]
        self.free(np.array([rid]), finished=False)

    def forget(self, ids: np.ndarray) -> None:
        """The node is lost: ids hold no KV anywhere (the pool goes with the node)."""
        t = self.table
        t.kv_blocks[ids] = 0
        t.kv_tokens[ids] = 0
        t.swapped_tokens[ids] = 0
