"""A fleet of replicas behind routers, and the admission checks in front of them.

Every fleet is a list of pools, each described by one `PoolEngine` (engine, step-time model, KV
cache) with its own replicas, routable list and router. A scenario's fleet is one pool of
identical replicas; a disaggregated pair, whose prefill pool (role "prefill") hands each request
to the decode pool (role "decode") once its KV has crossed the KV link; or the pools of
fleet.pools. Requests enter at the entry pools (all but a decode pool). With fleet.pools a pool
router (simcost.cluster.routers.POOL_ROUTERS, key fleet.pool_router) first picks the pool among those
that serve the request's workload, admit it and have a ready replica; with no pool router there
is one entry pool. The pool's own router (fleet.router) then picks the replica.

Routers (scenario key fleet.router): round_robin, random, join_shortest_queue, power_of_two,
least_outstanding_tokens and prefix_affinity pick a replica at arrival (simcost.cluster.routers); a
decode pool is routed the same way (prefix_affinity: by join_shortest_queue).
- shared_queue (one pool only): one central queue (FIFO, or in engine.queue's order); a request
  is dispatched only to a replica with fewer than max_num_seqs outstanding requests (the least
  loaded). With max_num_seqs = 1 this is exactly the M/M/c queue of queueing theory.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from simcost.cluster.routers import DECODE_ROUTER, ROUTERS, PoolRouter, RoutingContext, TokenLoad
from simcost.cost.roster import ON_DEMAND, Life, Roster
from simcost.cost.step_log import StepLog
from simcost.engine.kv.blocks import blocks_for
from simcost.engine.kv.reuse import PrefixSpec
from simcost.engine.options import ReplicaOptions, SwapLink
from simcost.engine.replica import Replica
from simcost.engine.request_level import BatchReplica
from simcost.engine.speculation import Speculation
from simcost.engine.waiting import WaitingQueue
from simcost.perf.startup import StartPhases
from simcost.scenario.deployment import ITERATION_POLICIES, REQUEST_LEVEL_POLICIES, EngineConfig
from simcost.workload.request_table import RequestTable

# engine.policy -> the replica class that runs it. Every class takes (env, index, ReplicaOptions).
# A new iteration-level policy is a scheduler (simcost.engine.schedulers); a new kind of replica
# is one class and one entry here.
REPLICA_CLASSES: dict[str, type] = {**dict.fromkeys(ITERATION_POLICIES, Replica),
                                    **dict.fromkeys(REQUEST_LEVEL_POLICIES, BatchReplica)}


@dataclass(frozen=True)
class FleetStart:
    """The replicas a run starts with: how many in each pool, and per replica (in pool order) its
    start-up phases (None: all ready at t = 0) and capacity (None: all on demand)."""

    num_replicas: list[int]
    phases: list[StartPhases] | None = None
    capacity: list[str] | None = None


@dataclass(frozen=True)
class FleetRouting:
    """How a request finds its replica: the router (fleet.router) and its random stream, the
    affinity key and load bound of prefix-affinity routing, and for fleet.pools the pools that
    serve each workload entry."""

    router: str
    rng: np.random.Generator
    affinity_key: Callable[[int], int | None] | None = None
    affinity_load_bound: float = 1.25
    pool_serves: list[list[int]] | None = None


@dataclass(frozen=True)
class PoolEngine:
    """Engine inputs of one pool (simcost.simulation.simulation builds them from its scenario)."""

    engine: EngineConfig
    step_params: np.ndarray
    num_kv_blocks: int
    block_size: int
    max_num_batched_tokens: int
    max_model_len: int
    swap: SwapLink | None = None
    item_work: tuple[np.ndarray, np.ndarray] | None = None
    queue_key: Callable[[int], tuple] | None = None
    # disaggregation: "prefill" (hands each request to the decode pool after its first token) or
    # "decode" (takes only handed-over requests); None: the pool serves requests whole
    role: str | None = None
    kv_transfer_s_per_token: float = 0.0  # prefill role: the KV link's seconds per token
    speculation: Speculation | None = None  # engine.speculative (simcost.engine.speculation)

    @property
    def chunked(self) -> bool:
        return self.engine.policy == "chunked"


class Fleet:
    """The pools of replicas, the routers in front of them, and the replicas' lifecycle.

    A request is routed only to a replica that is ready and not draining (a Kubernetes endpoint);
    while its pools have none (all still starting, or scaled to zero) it waits in `held`, and
    goes out in arrival order as soon as one is ready. `add_replica`, `drain`, `cancel` and
    `kill` change the fleet during a run (simcost.cluster.control calls them); `roster` keeps every
    replica's timeline for the bill."""

    def __init__(self, env: simpy.Environment, table: RequestTable, pools: list[PoolEngine], start: FleetStart,
                 routing: FleetRouting, log: StepLog, max_span_steps: int = 1 << 30,
                 on_done: Callable[[int], None] | None = None, prefix: PrefixSpec | None = None):
        router, rng = routing.router, routing.rng
        self.env = env
        self.on_done = on_done  # called with a request id when it completes or is rejected
        # per pool: called when a request it could serve found no ready replica (fleet_control)
        self.starved_hooks: dict[int, Callable[[], None]] = {}
        self.table = table
        self.router = router
        self.rng = rng
        self.pool_engines = pools
        self.pool_serves = routing.pool_serves  # fleet.pools, per workload entry: the pools that serve it
        self.forced_pool: dict[int, int] = {}  # request -> the one pool it may go to (fleet.cascade's stages)
        # fleet.pools: picks the pool (simcost.cluster.routers.POOL_ROUTERS); set once the fleet exists,
        # since it reads the fleet's routable lists
        self.pool_router: PoolRouter | None = None
        roles = [pe.role for pe in pools]
        self._entry = [k for k, role in enumerate(roles) if role != "decode"]  # where requests arrive
        self._decode = roles.index("decode") if "decode" in roles else None
        self._builds = [self._build(pe, log, max_span_steps, prefix) for pe in pools]
        self.roster = Roster()
        self.replicas: list = []  # every replica the run had, by index (gone ones too)
        # index -> replica, in index order: requested and not gone (draining too); and of those, not
        # draining. Kept as they change, so autoscaler ticks and samples cost the fleet of now, not
        # every replica a long autoscaled run ever had (a month of scale events took minutes)
        self._present: dict[int, Any] = {}
        self._live: dict[int, Any] = {}
        # each pool's routable replicas (ready, not draining); its router holds this very list
        self.routable: list[list] = [[] for _ in pools]
        self.held: deque[int] = deque()
        self._draining: dict[int, str] = {}  # replica index -> why, until its last request ends
        self.central = WaitingQueue(pools[0].queue_key)  # shared_queue only
        # least_outstanding_tokens' view of each replica's work; other routers skip its bookkeeping
        self.tokens = TokenLoad(table, []) if router == "least_outstanding_tokens" else None
        context = RoutingContext(rng, self.tokens, routing.affinity_key, routing.affinity_load_bound)
        names = [DECODE_ROUTER.get(router, router) if role == "decode" else router for role in roles]
        self.routers = [ROUTERS[name](ready, context) if name in ROUTERS else None
                        for name, ready in zip(names, self.routable)]
        pool_of = [k for k, n in enumerate(start.num_replicas) for _ in range(n)]
        phases = start.phases or [StartPhases(0.0, 0.0)] * len(pool_of)
        capacity = start.capacity or [ON_DEMAND] * len(pool_of)
        if not len(phases) == len(capacity) == len(pool_of):
            raise ValueError(f"{len(pool_of)} replicas but {len(phases)} start phases and {len(capacity)} capacities")
        for k, phase, cap in zip(pool_of, phases, capacity):
            self.add_replica(k, phase, cap)
        # the most KV blocks one request may hold on each pool (its first replica tells: every
        # replica of a pool has the same KV cache)
        first = {self.roster.lives[r.index].pool: r for r in reversed(self.replicas)}
        self._max_blocks = [first[k].max_blocks_admissible() for k in range(len(pools))]
        self.num_completed = 0

    def _build(self, pe: PoolEngine, log: StepLog, max_span_steps: int, prefix: PrefixSpec | None) -> ReplicaOptions:
        """The options every replica of pool pe is built from (one object, shared)."""
        engine = pe.engine
        prefill = pe.role == "prefill"
        return ReplicaOptions(
            table=self.table, step_params=pe.step_params, num_kv_blocks=pe.num_kv_blocks, block_size=pe.block_size,
            max_num_seqs=engine.max_num_seqs, max_num_batched_tokens=pe.max_num_batched_tokens,
            kv_watermark=engine.kv_watermark, log=log, on_finish=self._on_finish, policy=engine.policy,
            max_span_steps=max_span_steps, item_work=pe.item_work, queue_key=pe.queue_key, swap=pe.swap,
            role=pe.role or "both", handoff=self._to_decode if prefill else None,
            kv_transfer_s_per_token=pe.kv_transfer_s_per_token if prefill else 0.0,
            # only iteration-level replicas cache prefixes (the config refuses it elsewhere)
            prefix=prefix if engine.prefix_caching else None,
            batch_timeout_s=engine.batch_timeout_s, preferred_batch_sizes=engine.preferred_batch_sizes,
            max_queue_delay_s=engine.max_queue_delay_s, speculation=pe.speculation)

    # the first pool's engine limits (the only pool's, where callers read them)
    max_num_seqs = property(lambda self: self.pool_engines[0].engine.max_num_seqs)
    max_waiting = property(lambda self: self.pool_engines[0].engine.max_waiting)
    max_model_len = property(lambda self: self.pool_engines[0].max_model_len)
    max_num_batched_tokens = property(lambda self: self.pool_engines[0].max_num_batched_tokens)
    block_size = property(lambda self: self.pool_engines[0].block_size)
    chunked = property(lambda self: self.pool_engines[0].chunked)

    @property
    def pooled(self) -> bool:
        """The scenario has fleet.pools."""
        return self.pool_serves is not None

    @property
    def entry_pool(self) -> list:
        """The routable replicas of every pool but a decode pool (with one such pool, the very
        list its router holds)."""
        lists = [self.routable[k] for k in self._entry]
        return lists[0] if len(lists) == 1 else [r for ready in lists for r in ready]

    @property
    def entry_router(self):
        """The router of the first entry pool (the only one but with fleet.pools)."""
        return self.routers[self._entry[0]]

    # --- lifecycle ---------------------------------------------------------------------------

    def add_replica(self, pool: int = 0, phase: StartPhases = StartPhases(0.0, 0.0), capacity: str = ON_DEMAND):
        """Request a replica of `pool` now; it serves once `phase` (its cold start) is over."""
        options = self._builds[pool]
        replica = REPLICA_CLASSES[options.policy](self.env, len(self.replicas), options)
        now = self.env.now
        self.replicas.append(replica)
        self.roster.lives.append(Life(pool, capacity, now, now + phase.provisioned_s, now + phase.ready_s))
        self._present[replica.index] = self._live[replica.index] = replica
        if self.tokens is not None:
            self.tokens.add_replica(replica)
        if phase.ready_s > 0:
            self.env.process(self._start(replica, phase.ready_s))
        else:
            self._serve(replica)
        return replica

    def _start(self, replica, ready_in_s: float):
        yield self.env.timeout(ready_in_s)
        life = self.roster.lives[replica.index]
        if life.gone_s == math.inf and life.drain_s == math.inf:  # not cancelled or lost meanwhile
            self._serve(replica)

    def _serve(self, replica) -> None:
        """The replica is ready: it joins its pool's routable list; an entry replica takes the
        held requests."""
        k = self.roster.lives[replica.index].pool
        self.routable[k].append(replica)
        self._resized(k)
        if k == self._decode:  # takes handed-over requests only
            return
        held, self.held = self.held, deque()
        for rid in held:  # in arrival order; those whose pools are still not ready are held again
            self._place(rid)
        if self.central:
            self._dispatch_central()

    @property
    def _decode_pool(self) -> int:
        """The decode pool of a disaggregated fleet (only its prefill side asks)."""
        if self._decode is None:
            raise RuntimeError("fleet: a prefill pool without a decode pool")
        return self._decode

    def _resized(self, pool: int) -> None:
        resized = getattr(self.routers[pool], "resized", None)  # routers that cache their pool's size
        if resized is not None:
            resized()

    def _unroute(self, replica) -> None:
        k = self.roster.lives[replica.index].pool
        if replica in self.routable[k]:
            self.routable[k].remove(replica)
            self._resized(k)

    def is_ready(self, replica) -> bool:
        return replica in self.routable[self.roster.lives[replica.index].pool]

    def num_in_pool(self, pool: int) -> int:
        """Requests on pool `pool`'s replicas plus those on none yet (all of them with one pool)."""
        lives = self.roster.lives
        on_pool = sum(r.num_outstanding for r in self._present.values() if lives[r.index].pool == pool)
        return len(self.central) + len(self.held) + on_pool

    def _starved(self, pools=(0,)) -> None:
        for k in pools:
            hook = self.starved_hooks.get(k)
            if hook is not None:
                hook()

    def live(self) -> list:
        """Replicas requested and neither draining nor gone (ready or starting), by index."""
        return list(self._live.values())

    def present(self) -> list:
        """Replicas requested and not gone (starting, serving or draining), by index."""
        return list(self._present.values())

    def drain(self, replica, why: str = "scale_down") -> None:
        """Stop sending work to a ready replica; its queue moves elsewhere, what runs there
        finishes, and then it is gone."""
        life = self.roster.lives[replica.index]
        if life.drain_s != math.inf or life.gone_s != math.inf:
            return
        life.drain_s = self.env.now
        self._live.pop(replica.index, None)
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
        self._live.pop(replica.index, None)
        self._present.pop(replica.index, None)
        replica.retire()

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

    # --- requests ----------------------------------------------------------------------------

    def num_in_system(self) -> int:
        return len(self.central) + len(self.held) + sum(r.num_outstanding for r in self._present.values())

    def arrive(self, rid: int) -> None:
        """A request arrives: reject it if no pool serving it can ever serve it, else route it."""
        admitting = self._admitting(rid)
        if not admitting:
            self._reject(rid, self._inadmissible(rid, self._serving(rid)[0]))
            return
        if self.router == "shared_queue":
            if self.max_waiting is not None and len(self.central) >= self.max_waiting:
                self._reject(rid, "queue_full")
                return
            self.central.push(rid)
            self._dispatch_central()
            if self.central and not self.routable[0]:
                self._starved()
            return
        self._place(rid, admitting, arriving=True)

    def _place(self, rid: int, admitting: list[int] | None = None, arriving: bool = False) -> None:
        """Route request rid to a ready replica of a pool that admits it, or hold it (and wake
        those pools' control loops). An arrival that finds the replica's queue full (its pool's
        engine.max_waiting) is rejected; a re-routed or held request never is."""
        admitting = self._admitting(rid) if admitting is None else admitting
        ready = [k for k in admitting if self.routable[k]]
        if not ready:
            self.held.append(rid)
            self._starved(admitting)
            return
        k, replica = self._pick(rid, ready)
        max_waiting = self.pool_engines[k].engine.max_waiting
        if arriving and max_waiting is not None and len(replica.waiting) >= max_waiting:
            self._reject(rid, "queue_full")
            return
        self._submit(replica, rid)

    def _pick(self, rid: int, ready: list[int]):
        """(pool, replica) for request rid among the `ready` pools: the pool router picks the
        pool (and may pick the replica); without one there is a single entry pool."""
        if self.pool_router is None:
            (k,) = ready
            return k, self._route(self.routers[k], rid)
        k, replica = self.pool_router.pick(rid, ready)
        return k, replica if replica is not None else self._route(self.routers[k], rid)

    def has_ready_for(self, rid: int) -> bool:
        """A ready replica of a pool serving request rid's workload exists (api failover asks)."""
        return any(self.routable[k] for k in self._serving(rid))

    def waiting_ids(self) -> list[int]:
        """Requests on no replica's batch yet: held, in the shared queue, or queued on an entry
        replica (api overflow asks)."""
        queued = [rid for k in self._entry for r in self.routable[k] for rid in r.waiting]
        return [*self.held, *self.central, *queued]

    def _serving(self, rid: int) -> list[int]:
        """The entry pools that serve request rid's workload (or the pool a cascade sent it to)."""
        if rid in self.forced_pool:
            return [self.forced_pool[rid]]
        return self._entry if self.pool_serves is None else self.pool_serves[int(self.table.workload[rid])]

    def _admitting(self, rid: int) -> list[int]:
        return [k for k in self._serving(rid) if not self._inadmissible(rid, k)]

    def _reject(self, rid: int, reason: str) -> None:
        self.table.reject(rid, reason)
        if self.on_done is not None:
            self.on_done(rid)

    def _inadmissible(self, rid: int, pool: int) -> str:
        """Why entry pool `pool` can never serve request rid, or ""."""
        t, pe = self.table, self.pool_engines[pool]
        n_in, n_out = int(t.input_tokens[rid]), int(t.output_tokens[rid])
        if n_in + n_out > pe.max_model_len:
            return "exceeds_max_model_len"
        if n_in > pe.max_num_batched_tokens and not pe.chunked:  # chunks split long prompts
            return "exceeds_batch_tokens"
        # at its longest, a request holds the KV of its prompt and all but its last output token:
        # its prompt where it is prefilled, all of it where it ends (a prefill pool's decode pool)
        whole, prompt = self._max_blocks[self._decode_pool if pe.role == "prefill" else pool], self._max_blocks[pool]
        if blocks_for(n_in + n_out - 1, pe.block_size) > whole or blocks_for(n_in, pe.block_size) > prompt:
            return "exceeds_kv_capacity"
        return ""

    def _route(self, router, rid: int):
        """The replica `router` (a pool's) picks for request rid: the one place routing
        decisions are made."""
        return router.pick(rid)

    def _submit(self, replica, rid: int) -> None:
        if self.tokens is not None:
            self.tokens.add(replica.index, rid)
        replica.submit(rid)

    def _to_decode(self, rid: int) -> None:
        """A prefill replica's request whose KV has arrived joins a decode replica (never
        rejected there: its prefill is already paid for)."""
        if self.tokens is not None:
            self.tokens.remove(int(self.table.replica[rid]), rid)  # it has left its prefill replica
        self._submit(self._route(self.routers[self._decode_pool], rid), rid)

    def _dispatch_central(self) -> None:
        ready = self.routable[0]  # shared_queue: one pool
        while self.central and ready:
            replica = min(ready, key=lambda r: r.num_outstanding)
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
