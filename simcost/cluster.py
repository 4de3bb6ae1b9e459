"""A fleet of identical replicas behind a router, and the admission checks in front of them.

Routers (scenario key fleet.router): round_robin, random, join_shortest_queue, power_of_two,
least_outstanding_tokens and prefix_affinity pick a replica at arrival (simcost.routers); with
disaggregation the decode pool is routed the same way (prefix_affinity: by join_shortest_queue).
- shared_queue: one central queue (FIFO, or in engine.queue's order); a request is dispatched only to a replica with fewer than
  max_num_seqs outstanding requests (the least loaded). With max_num_seqs = 1 this is exactly
  the M/M/c queue of queueing theory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from simcost.batch_engine import BatchReplica
from simcost.config import EngineConfig
from simcost.engine import Replica, SwapLink
from simcost.kv_reuse import PrefixSpec
from simcost.kvcache import blocks_for
from simcost.ledger import StepLog
from simcost.request_table import RequestTable
from simcost.routers import DECODE_ROUTER, ROUTERS, RoutingContext, TokenLoad
from simcost.waiting import WaitingQueue

# engine.policy -> the replica class that runs it. Every class takes the same arguments, plus as
# keywords the EngineConfig keys named in its ENGINE_KEYS (if any). A new policy is one module
# and one entry here.
REPLICA_CLASSES: dict[str, type] = {
    "prefill_first": Replica,
    "chunked": Replica,
    "one_at_a_time": BatchReplica,
    "static": BatchReplica,
    "dynamic": BatchReplica,
}


@dataclass(frozen=True)
class Disaggregation:
    """The prefill pool is the first prefill_replicas replicas (the fleet's own deployment); the
    decode pool follows, with its own step-time model, KV blocks and swap link."""

    prefill_replicas: int
    decode_replicas: int
    kv_transfer_s_per_token: float
    decode_step_params: np.ndarray
    decode_kv_blocks: int
    decode_swap: SwapLink | None


class Fleet:
    def __init__(self, env: simpy.Environment, table: RequestTable, num_replicas: int, router: str,
                 rng: np.random.Generator, step_params: np.ndarray, num_kv_blocks: int, block_size: int,
                 max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, kv_watermark: float,
                 max_waiting: int | None, log: StepLog, max_span_steps: int = 1 << 30, chunked: bool = False,
                 on_done: Callable[[int], None] | None = None,
                 item_work: tuple[np.ndarray, np.ndarray] | None = None, engine: EngineConfig | None = None,
                 queue_key: Callable[[int], tuple] | None = None, swap: SwapLink | None = None,
                 disaggregation: Disaggregation | None = None, prefix: PrefixSpec | None = None,
                 ready_s: list[float] | None = None, affinity_key: Callable[[int], int | None] | None = None, affinity_load_bound: float = 1.25):
        self.env = env
        self.on_done = on_done  # called with a request id when it completes or is rejected
        self.table = table
        self.router = router
        self.rng = rng
        self.max_model_len = max_model_len
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.max_waiting = max_waiting
        self.block_size = block_size
        self.chunked = chunked
        engine = engine or EngineConfig(policy="chunked" if chunked else "prefill_first")
        replica_class = REPLICA_CLASSES[engine.policy]
        options = {key: getattr(engine, key) for key in getattr(replica_class, "ENGINE_KEYS", ())}
        if prefix is not None:  # only the iteration-level Replica caches prefixes (config checks it)
            options["prefix"] = prefix
        # per replica: (step-time model, KV blocks, swap link, role keywords)
        specs = [(step_params, num_kv_blocks, swap, {})] * num_replicas
        if disaggregation is not None:
            d = disaggregation
            prefill = {"role": "prefill", "handoff": self._to_decode, "kv_transfer_s_per_token": d.kv_transfer_s_per_token}
            specs = ([(step_params, num_kv_blocks, swap, prefill)] * d.prefill_replicas
                     + [(d.decode_step_params, d.decode_kv_blocks, d.decode_swap, {"role": "decode"})] * d.decode_replicas)
        ready_s = ready_s or [0.0] * len(specs)  # cold start (simcost.lifecycle): when each replica serves
        self.replicas = [
            replica_class(env, i, table, params, blocks, block_size, max_num_seqs, max_num_batched_tokens,
                          kv_watermark, log, self._on_finish, max_span_steps, chunked, item_work, queue_key, link,
                          **options, **role, **({"ready_s": ready_s[i]} if ready_s[i] else {}))
            for i, (params, blocks, link, role) in enumerate(specs)
        ]
        # where requests enter, and (disaggregated) where they go after their prefill
        self.entry_pool = [r for r in self.replicas if getattr(r, "role", "both") != "decode"]
        self.decode_pool = [r for r in self.replicas if getattr(r, "role", "both") == "decode"]
        # the most blocks one request may hold where it ends (decode pool, or the only pool) and
        # where its prompt is computed: pool sizes are fixed for the run
        self._max_blocks_whole = (self.decode_pool or self.entry_pool)[0].max_blocks_admissible()
        self._max_blocks_prompt = self.entry_pool[0].max_blocks_admissible()
        self.central = WaitingQueue(queue_key)  # shared_queue only
        # least_outstanding_tokens' view of each replica's work; other routers skip its bookkeeping
        self.tokens = TokenLoad(table, self.replicas) if router == "least_outstanding_tokens" else None
        routing = RoutingContext(rng, self.tokens, affinity_key, affinity_load_bound)
        self.entry_router = ROUTERS[router](self.entry_pool, routing) if router in ROUTERS else None
        self.decode_router = (ROUTERS[DECODE_ROUTER.get(router, router)](self.decode_pool, routing)
                              if self.decode_pool else None)
        self.num_completed = 0

    def num_in_system(self) -> int:
        return len(self.central) + sum(r.num_outstanding for r in self.replicas)

    def arrive(self, rid: int) -> None:
        """A request arrives: reject it if it can never be served, else route it."""
        reason = self._inadmissible(rid)
        if reason:
            self._reject(rid, reason)
            return
        if self.router == "shared_queue":
            if self.max_waiting is not None and len(self.central) >= self.max_waiting:
                self._reject(rid, "queue_full")
                return
            self.central.push(rid)
            self._dispatch_central()
            return
        replica = self._route(self.entry_router, rid)
        if self.max_waiting is not None and len(replica.waiting) >= self.max_waiting:
            self._reject(rid, "queue_full")
            return
        self._submit(replica, rid)

    def _reject(self, rid: int, reason: str) -> None:
        self.table.reject(rid, reason)
        if self.on_done is not None:
            self.on_done(rid)

    def _inadmissible(self, rid: int) -> str:
        t = self.table
        n_in, n_out = int(t.input_tokens[rid]), int(t.output_tokens[rid])
        if n_in + n_out > self.max_model_len:
            return "exceeds_max_model_len"
        if n_in > self.max_num_batched_tokens and not self.chunked:  # chunks split long prompts
            return "exceeds_batch_tokens"
        # at its longest, a request holds the KV of its prompt and all but its last output token
        # (disaggregated: its prompt on a prefill replica, all of it on a decode replica)
        if (blocks_for(n_in + n_out - 1, self.block_size) > self._max_blocks_whole
                or blocks_for(n_in, self.block_size) > self._max_blocks_prompt):
            return "exceeds_kv_capacity"
        return ""

    def _route(self, router, rid: int):
        """The replica `router` (the entry or the decode pool's) picks for request rid: the one
        place routing decisions are made."""
        return router.pick(rid)

    def _submit(self, replica, rid: int) -> None:
        if self.tokens is not None:
            self.tokens.add(replica.index, rid)
        replica.submit(rid)

    def _to_decode(self, rid: int) -> None:
        """Disaggregation: a request whose KV has arrived joins a decode replica (never
        rejected there: its prefill is already paid for)."""
        if self.tokens is not None:
            self.tokens.remove(int(self.table.replica[rid]), rid)  # it has left its prefill replica
        self._submit(self._route(self.decode_router, rid), rid)

    def _dispatch_central(self) -> None:
        while self.central:
            replica = min(self.replicas, key=lambda r: r.num_outstanding)
            if replica.num_outstanding >= self.max_num_seqs:
                return
            self._submit(replica, self.central.pop())

    def _on_finish(self, replica_index: int, rid: int) -> None:
        self.num_completed += 1
        if self.tokens is not None:
            self.tokens.remove(replica_index, rid)
        if self.central:
            self._dispatch_central()
        if self.on_done is not None:
            self.on_done(rid)
