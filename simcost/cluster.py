"""A fleet of replicas behind a router, and the admission checks in front of them.

A fleet is one pool of identical replicas, a disaggregated prefill + decode pair, or several
pools of fleet.pools (each its own deployment and engine): then a pool router
(simcost.routers.POOL_ROUTERS, key fleet.pool_router) first picks the pool among those that
serve the request's workload, admit it and have a ready replica, and the pool's own router
(fleet.router) picks the replica.

Routers (scenario key fleet.router): round_robin, random, join_shortest_queue, power_of_two,
least_outstanding_tokens and prefix_affinity pick a replica at arrival (simcost.routers); with
disaggregation the decode pool is routed the same way (prefix_affinity: by join_shortest_queue).
- shared_queue: one central queue (FIFO, or in engine.queue's order); a request is dispatched only to a replica with fewer than
  max_num_seqs outstanding requests (the least loaded). With max_num_seqs = 1 this is exactly
  the M/M/c queue of queueing theory.
"""

from __future__ import annotations

import math
from collections import deque
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
from simcost.lifecycle import ON_DEMAND, Life, Roster, StartPhases
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
class PoolEngine:
    """Engine inputs of one pool of fleet.pools (simcost.sim builds them from its scenario)."""

    engine: EngineConfig
    step_params: np.ndarray
    num_kv_blocks: int
    block_size: int
    max_num_batched_tokens: int
    max_model_len: int
    swap: SwapLink | None = None
    item_work: tuple[np.ndarray, np.ndarray] | None = None
    queue_key: Callable[[int], tuple] | None = None


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
    """The replicas, the routers in front of them, and the replicas' lifecycle.

    A request is routed only to a replica that is ready and not draining (a Kubernetes endpoint);
    while there is none (all still starting, or scaled to zero) requests wait in `held`, and go
    out in arrival order as soon as one is ready. `add_replica`, `drain`, `cancel` and `kill`
    change the fleet during a run (simcost.fleet_control calls them); `roster` keeps every
    replica's timeline for the bill."""

    def __init__(self, env: simpy.Environment, table: RequestTable, num_replicas: int | list[int], router: str,
                 rng: np.random.Generator, step_params: np.ndarray, num_kv_blocks: int, block_size: int,
                 max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, kv_watermark: float,
                 max_waiting: int | None, log: StepLog, max_span_steps: int = 1 << 30, chunked: bool = False,
                 on_done: Callable[[int], None] | None = None,
                 item_work: tuple[np.ndarray, np.ndarray] | None = None, engine: EngineConfig | None = None,
                 queue_key: Callable[[int], tuple] | None = None, swap: SwapLink | None = None,
                 disaggregation: Disaggregation | None = None, prefix: PrefixSpec | None = None,
                 phases: list[StartPhases] | None = None, affinity_key: Callable[[int], int | None] | None = None,
                 affinity_load_bound: float = 1.25, capacity: list[str] | None = None,
                 pools: list[PoolEngine] | None = None, pool_router=None, pool_serves: list[np.ndarray] | None = None):
        self.env = env
        self.on_done = on_done  # called with a request id when it completes or is rejected
        # per pool: called when a request it could serve found no ready replica (fleet_control)
        self.starved_hooks: dict[int, Callable[[], None]] = {}
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
        self._replica_class = REPLICA_CLASSES[engine.policy]
        self._options = {key: getattr(engine, key) for key in getattr(self._replica_class, "ENGINE_KEYS", ())}
        if prefix is not None:  # only the iteration-level Replica caches prefixes (config checks it)
            self._options["prefix"] = prefix
        self._engine_args = (table, block_size, max_num_seqs, max_num_batched_tokens, kv_watermark, log,
                             self._on_finish, max_span_steps, chunked, item_work, queue_key)
        # per pool (simcost.perf.Pool order): (step-time model, KV blocks, swap link, role keywords)
        self.pool_specs = [(step_params, num_kv_blocks, swap, {})]
        pool_of = [0] * num_replicas if pools is None else []  # fleet.pools: num_replicas is per pool
        self.pooled = pools is not None  # fleet.pools
        self.pool_router = pool_router  # fleet.pools: picks the pool (simcost.routers.POOL_ROUTERS)
        self._pool_engines = None  # fleet.pools: per pool (replica class, its keywords, engine args)
        if pools is not None:
            self.pool_specs = [(pe.step_params, pe.num_kv_blocks, pe.swap, {}) for pe in pools]
            self._pool_engines = [self._pool_engine(pe, table, log, max_span_steps, prefix) for pe in pools]
            self._pool_limits = [(pe.max_model_len, pe.max_num_batched_tokens, pe.engine.policy == "chunked",
                                  pe.block_size, pe.engine.max_waiting) for pe in pools]
            self._pool_serves = pool_serves  # per workload entry: the pools that serve it
            pool_of = [k for k, n in enumerate(num_replicas) for _ in range(n)]
        if disaggregation is not None:
            d = disaggregation
            prefill = {"role": "prefill", "handoff": self._to_decode, "kv_transfer_s_per_token": d.kv_transfer_s_per_token}
            self.pool_specs = [(step_params, num_kv_blocks, swap, prefill),
                               (d.decode_step_params, d.decode_kv_blocks, d.decode_swap, {"role": "decode"})]
            pool_of = [0] * d.prefill_replicas + [1] * d.decode_replicas
        self.roster = Roster()
        self.replicas: list = []  # every replica the run had, by index (gone ones too)
        # where requests enter, and (disaggregated) where they go after their prefill: the
        # routable replicas (ready, not draining); routers hold these very lists
        self.entry_pool: list = []
        self.decode_pool: list = []
        # fleet.pools: each pool's routable replicas (entry_pool is then all of them)
        self.routable: list[list] = [[] for _ in self.pool_specs] if pools is not None else [self.entry_pool]
        self.held: deque[int] = deque()
        self._draining: dict[int, str] = {}  # replica index -> why, until its last request ends
        self.central = WaitingQueue(queue_key)  # shared_queue only
        # least_outstanding_tokens' view of each replica's work; other routers skip its bookkeeping
        self.tokens = TokenLoad(table, []) if router == "least_outstanding_tokens" else None
        routing = RoutingContext(rng, self.tokens, affinity_key, affinity_load_bound)
        self.entry_router = ROUTERS[router](self.entry_pool, routing) if router in ROUTERS else None
        self.decode_router = (ROUTERS[DECODE_ROUTER.get(router, router)](self.decode_pool, routing)
                              if disaggregation is not None else None)
        self.pool_routers = ([ROUTERS[router](ready, routing) for ready in self.routable] if pools is not None
                             else [self.entry_router])
        phases = phases or [StartPhases(0.0, 0.0)] * len(pool_of)
        capacity = capacity or [ON_DEMAND] * len(pool_of)
        if not len(phases) == len(capacity) == len(pool_of):
            raise ValueError(f"{len(pool_of)} replicas but {len(phases)} start phases and {len(capacity)} capacities")
        for k, phase, cap in zip(pool_of, phases, capacity):
            self.add_replica(k, phase, cap)
        # the most blocks one request may hold where it ends (decode pool, or the only pool) and
        # where its prompt is computed (every replica of a pool has the same pool size)
        first_of = {getattr(r, "role", "both"): r for r in reversed(self.replicas)}
        entry = first_of.get("prefill", first_of.get("both"))
        self._max_blocks_whole = first_of.get("decode", entry).max_blocks_admissible()
        self._max_blocks_prompt = entry.max_blocks_admissible()
        if pools is not None:  # each pool's first replica tells its KV limit
            first = {self.roster.lives[r.index].pool: r for r in reversed(self.replicas)}
            self._pool_max_blocks = [first[k].max_blocks_admissible() for k in range(len(pools))]
        self.num_completed = 0

    def _pool_engine(self, pe: PoolEngine, table, log, max_span_steps, prefix):
        cls = REPLICA_CLASSES[pe.engine.policy]
        options = {key: getattr(pe.engine, key) for key in getattr(cls, "ENGINE_KEYS", ())}
        if prefix is not None and pe.engine.prefix_caching:
            options["prefix"] = prefix
        args = (table, pe.block_size, pe.engine.max_num_seqs, pe.max_num_batched_tokens, pe.engine.kv_watermark, log,
                self._on_finish, max_span_steps, pe.engine.policy == "chunked", pe.item_work, pe.queue_key)
        return cls, options, args

    # --- lifecycle ---------------------------------------------------------------------------

    def add_replica(self, pool: int = 0, phase: StartPhases = StartPhases(0.0, 0.0), capacity: str = ON_DEMAND):
        """Request a replica of `pool` now; it serves once `phase` (its cold start) is over."""
        params, blocks, link, role = self.pool_specs[pool]
        index = len(self.replicas)
        replica = self._new_replica(index, params, blocks, link, role, pool)
        now = self.env.now
        self.replicas.append(replica)
        self.roster.lives.append(Life(pool, capacity, now, now + phase.provisioned_s, now + phase.ready_s))
        if self.tokens is not None:
            self.tokens.add_replica(replica)
        if phase.ready_s > 0:
            self.env.process(self._start(replica, phase.ready_s))
        else:
            self._serve(replica)
        return replica

    def _new_replica(self, index, params, blocks, link, role, pool: int = 0):
        cls, options, args = ((self._replica_class, self._options, self._engine_args) if self._pool_engines is None
                              else self._pool_engines[pool])
        table, block_size, seqs, batched, watermark, log, on_finish, span, chunked, items, key = args
        return cls(self.env, index, table, params, blocks, block_size, seqs, batched, watermark,
                   log, on_finish, span, chunked, items, key, link, **options, **role)

    def _start(self, replica, ready_in_s: float):
        yield self.env.timeout(ready_in_s)
        life = self.roster.lives[replica.index]
        if life.gone_s == math.inf and life.drain_s == math.inf:  # not cancelled or lost meanwhile
            self._serve(replica)

    def _serve(self, replica) -> None:
        """The replica is ready: it joins its routable pool, and takes held requests."""
        if self.pooled:
            self._serve_pooled(replica)
            return
        pool = self.decode_pool if getattr(replica, "role", "both") == "decode" else self.entry_pool
        pool.append(replica)
        self._resized(pool)
        if pool is self.entry_pool:
            while self.held and self.entry_pool:
                self._place(self.held.popleft())
            if self.central:
                self._dispatch_central()

    def _serve_pooled(self, replica) -> None:
        k = self.roster.lives[replica.index].pool
        self.routable[k].append(replica)
        self.entry_pool.append(replica)
        self._resized(self.routable[k])
        held, self.held = self.held, deque()
        for rid in held:  # in arrival order; those whose pools are still not ready are held again
            self._place(rid)

    def _resized(self, pool: list) -> None:
        if self.pooled:
            router = self.pool_routers[next(k for k, ready in enumerate(self.routable) if ready is pool)]
        else:
            router = self.entry_router if pool is self.entry_pool else self.decode_router
        if hasattr(router, "resized"):
            router.resized()

    def _unroute(self, replica) -> None:
        if self.pooled:
            k = self.roster.lives[replica.index].pool
            if replica in self.routable[k]:
                self.routable[k].remove(replica)
                self.entry_pool.remove(replica)
                self._resized(self.routable[k])
            return
        for pool in (self.entry_pool, self.decode_pool):
            if replica in pool:
                pool.remove(replica)
                self._resized(pool)

    def is_ready(self, replica) -> bool:
        return replica in self.entry_pool or replica in self.decode_pool

    def num_in_pool(self, pool: int) -> int:
        """Requests in pool `pool` plus those not on any replica yet (all of them with one pool)."""
        if not self.pooled:
            return self.num_in_system()
        lives = self.roster.lives
        return len(self.held) + sum(r.num_outstanding for r in self.replicas if lives[r.index].pool == pool)

    def _starved(self, pools=(0,)) -> None:
        for k in pools:
            hook = self.starved_hooks.get(k)
            if hook is not None:
                hook()

    def live(self) -> list:
        """Replicas requested and neither draining nor gone (ready or starting)."""
        return [r for r, life in zip(self.replicas, self.roster.lives) if life.drain_s == math.inf and life.gone_s == math.inf]

    def drain(self, replica, why: str = "scale_down") -> None:
        """Stop sending work to a ready replica; its queue moves elsewhere, what runs there
        finishes, and then it is gone."""
        life = self.roster.lives[replica.index]
        if life.drain_s != math.inf or life.gone_s != math.inf:
            return
        life.drain_s = self.env.now
        self._unroute(replica)
        for rid in replica.take_waiting():
            self._reroute(replica, rid)
        if replica.num_outstanding == 0:
            self._gone(replica, why)
        else:
            self._draining[replica.index] = why

    def cancel(self, replica, why: str = "cancelled") -> None:
        """Give back a replica still starting (scale-down, or a spot notice, before it was ready)."""
        self._gone(replica, why)

    def kill(self, replica, why: str) -> None:
        """The node is lost now (spot reclaim, failure): what it held is retried elsewhere."""
        if self.roster.lives[replica.index].gone_s != math.inf:
            return
        self._unroute(replica)
        self._draining.pop(replica.index, None)
        for rid in replica.stop():
            self._reroute(replica, rid)
        self._gone(replica, why)

    def _gone(self, replica, why: str) -> None:
        life = self.roster.lives[replica.index]
        life.drain_s = min(life.drain_s, self.env.now)
        life.gone_s, life.end = self.env.now, why

    def _reroute(self, replica, rid: int) -> None:
        """A request leaves `replica` before it ended there: route it again (never rejected:
        it was admitted once), or hold it until a replica is ready."""
        if self.tokens is not None:
            self.tokens.remove(replica.index, rid)
        if self.router == "shared_queue":
            self.central.push_preempted(rid)
            self._dispatch_central()
        else:
            self._place(rid)

    def _place(self, rid: int) -> None:
        if self.pooled:
            self._place_pooled(rid, self._admitting_pools(rid))
            return
        if not self.entry_pool:
            self.held.append(rid)
            self._starved()
            return
        self._submit(self._route(self.entry_router, rid), rid)

    def _admitting_pools(self, rid: int) -> list[int]:
        return [k for k in self._pool_serves[int(self.table.workload[rid])] if not self._inadmissible(rid, k)]

    def _place_pooled(self, rid: int, admitting: list[int]):
        """Route to a pool with a ready replica, or hold the request (and wake its pools' control
        loops); returns the replica, or None when held."""
        ready = [k for k in admitting if self.routable[k]]
        if not ready:
            self.held.append(rid)
            self._starved(admitting)
            return None
        k, replica = self.pool_router.pick(rid, ready)
        replica = replica if replica is not None else self._route(self.pool_routers[k], rid)
        self._submit(replica, rid)
        return replica

    # --- requests ----------------------------------------------------------------------------

    def num_in_system(self) -> int:
        return len(self.central) + len(self.held) + sum(r.num_outstanding for r in self.replicas)

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
            if self.central and not self.entry_pool:
                self._starved()
            return
        if self.pooled:
            self._arrive_pooled(rid)
            return
        if not self.entry_pool:
            self._place(rid)
            return
        replica = self._route(self.entry_router, rid)
        if self.max_waiting is not None and len(replica.waiting) >= self.max_waiting:
            self._reject(rid, "queue_full")
            return
        self._submit(replica, rid)

    def _arrive_pooled(self, rid: int) -> None:
        """fleet.pools: reject a request no pool serving its workload admits, else route it. A
        full queue (engine.max_waiting of the chosen pool) rejects it, as on one pool."""
        admitting = self._admitting_pools(rid)
        if not admitting:
            self._reject(rid, self._inadmissible(rid, self._pool_serves[int(self.table.workload[rid])][0]))
            return
        ready = [k for k in admitting if self.routable[k]]
        if not ready:
            self._place_pooled(rid, admitting)
            return
        k, replica = self.pool_router.pick(rid, ready)
        replica = replica if replica is not None else self._route(self.pool_routers[k], rid)
        max_waiting = self._pool_limits[k][4]
        if max_waiting is not None and len(replica.waiting) >= max_waiting:
            self._reject(rid, "queue_full")
            return
        self._submit(replica, rid)

    def _reject(self, rid: int, reason: str) -> None:
        self.table.reject(rid, reason)
        if self.on_done is not None:
            self.on_done(rid)

    def _inadmissible(self, rid: int, pool: int | None = None) -> str:
        """Why request rid can never be served (on `pool` of fleet.pools), or ""."""
        t = self.table
        n_in, n_out = int(t.input_tokens[rid]), int(t.output_tokens[rid])
        if pool is None:
            max_len, batched, chunked, block = self.max_model_len, self.max_num_batched_tokens, self.chunked, self.block_size
            whole, prompt = self._max_blocks_whole, self._max_blocks_prompt
        else:
            max_len, batched, chunked, block, _ = self._pool_limits[pool]
            whole = prompt = self._pool_max_blocks[pool]
        if n_in + n_out > max_len:
            return "exceeds_max_model_len"
        if n_in > batched and not chunked:  # chunks split long prompts
            return "exceeds_batch_tokens"
        # at its longest, a request holds the KV of its prompt and all but its last output token
        # (disaggregated: its prompt on a prefill replica, all of it on a decode replica)
        if blocks_for(n_in + n_out - 1, block) > whole or blocks_for(n_in, block) > prompt:
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
        while self.central and self.entry_pool:
            replica = min(self.entry_pool, key=lambda r: r.num_outstanding)
            if replica.num_outstanding >= self.max_num_seqs:
                return
            self._submit(replica, self.central.pop())

    def _on_finish(self, replica_index: int, rid: int) -> None:
        self.num_completed += 1
        if self.tokens is not None:
            self.tokens.remove(replica_index, rid)
        if replica_index in self._draining and self.replicas[replica_index].num_outstanding == 0:
            self._gone(self.replicas[replica_index], self._draining.pop(replica_index))
        if self.central:
            self._dispatch_central()
        if self.on_done is not None:
            self.on_done(rid)
