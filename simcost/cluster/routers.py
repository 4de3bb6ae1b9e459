"""Routers: which replica of a pool takes an arriving request (scenario key fleet.router).

- round_robin: replica i gets every n-th request.
- random: uniform over the pool.
- join_shortest_queue: the fewest outstanding (waiting + running) requests.
- power_of_two: two distinct replicas at random, the one with fewer outstanding requests
  (Mitzenmacher's "power of two choices": most of JSQ's gain over random, from two looks).
- least_outstanding_tokens: the fewest tokens still to process (`TokenLoad`): prompt tokens not
  yet prefilled plus output tokens not yet generated, over waiting and running requests.
- prefix_affinity: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
  SODA 2018) on the request's prefix key (`affinity_key_fn`), so requests sharing a prefix meet
  the replica that caches it. A ring holds VIRTUAL_NODES points per replica, placed once by a
  fixed hash; a request goes to the first replica clockwise from its key's point that is under
  the load bound (`capacity`): pure consistent hashing would send a popular prefix's every
  request to one replica. Requests without a key go to the least loaded replica.
Ties between equally loaded replicas are broken at random. Every random choice draws from the
run's routing stream, so a run is reproducible from its seed; the ring uses a fixed 64-bit mix,
never Python's salted hash(). shared_queue is not a router of this kind (nothing is picked at
arrival; see simcost.cluster.fleet). A new router is one class with `pick(rid)` and one ROUTERS entry.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np

from simcost.workload.request_table import RequestTable

VIRTUAL_NODES = 64  # ring points per replica: a replica's share of the ring is off by ~1/sqrt(64) = 12 %
# A trace request's prefix key is its first AFFINITY_KEY_BLOCKS trace blocks (Mooncake: 2 x 512
# tokens). One block is not enough: every Mooncake conversation request starts with the same
# 512-token block (a shared system prompt), so it would send them all to one ring point.
AFFINITY_KEY_BLOCKS = 2
_MASK64 = (1 << 64) - 1
_SESSION_TAG = 0x5E55_1000_0000_0000  # keeps session keys apart from trace-block keys


def mix64(x: int) -> int:
    """SplitMix64's finalizer: a fixed bijection of 64-bit integers that scatters nearby inputs
    (trace hash ids are small consecutive integers) over the whole ring."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def affinity_key_fn(table: RequestTable, block_ids: list[np.ndarray] | None,
                    session_prefix: np.ndarray) -> Callable[[int], int | None]:
    """rid -> its prefix key, or None. The same sources as the prefix cache's keys
    (simcost.kv_reuse.prefix_spec): a trace's prefix-block hash ids (their first
    AFFINITY_KEY_BLOCKS), else the session of a synthetic session (`session_prefix`, per workload
    entry: turn k+1 extends turn k's prompt). Other requests share nothing known: None."""
    blocks: list[np.ndarray] = block_ids if block_ids is not None else []

    def key(rid: int) -> int | None:
        if rid < len(blocks) and len(blocks[rid]):
            h = 0
            for block in blocks[rid][:AFFINITY_KEY_BLOCKS].tolist():
                h = mix64(h ^ block)
            return h
        session = int(table.session[rid])
        if session >= 0 and session_prefix[table.workload[rid]]:
            return mix64(_SESSION_TAG ^ session)
        return None

    return key


class TokenLoad:
    """Tokens still to process per replica, for least_outstanding_tokens.

    Per request: prompt tokens not yet prefilled (0 when its KV came from a prefill replica) plus
    output tokens not yet generated (0 on a prefill replica: the decode pool makes them).
    Summing that over every waiting request at every arrival would cost O(queue); instead each
    replica keeps the sum of its requests' counts at submission (`add`; `remove` on finish or
    hand-off), and only its running requests, the ones that can have moved on, are corrected
    from the table at each look: O(running) <= max_num_seqs per replica. A waiting request has
    made no progress since submission, except three kinds, which keep their submission count:
    one preempted by recompute (exact on an entry replica: it redoes its prompt and the output so
    far; under on a decode replica, where it now also redoes the prompt), one swapped out to host
    memory (over by its prompt: its KV is kept), and a prompt whose KV is still on the link to a
    decode replica (over for the few milliseconds of the transfer).
    """

    def __init__(self, table: RequestTable, replicas: list):
        self.table = table
        self.prompt_only = [r.role == "prefill" for r in replicas]
        self.counted = [0] * len(replicas)  # per replica: sum of its requests' counts at submission
        self.at_submit = np.zeros(max(1, table.num_requests), dtype=np.int64)  # per request (0: none held)

    def add_replica(self, replica) -> None:
        """A replica joined the fleet during the run (replica indices only grow)."""
        self.prompt_only.append(replica.role == "prefill")
        self.counted.append(0)

    def add(self, replica_index: int, rid: int) -> None:
        t = self.table
        if rid >= len(self.at_submit):  # session turns and closed-loop requests are added during the run
            grown = np.zeros(max(rid + 1, 2 * len(self.at_submit)), dtype=np.int64)
            grown[:len(self.at_submit)] = self.at_submit
            self.at_submit = grown
        prompt = 0 if t.remote_kv_tokens[rid] else int(t.input_tokens[rid] + t.generated[rid])
        output = 0 if self.prompt_only[replica_index] else int(t.output_tokens[rid] - t.generated[rid])
        self.at_submit[rid] = prompt + output
        self.counted[replica_index] += prompt + output

    def remove(self, replica_index: int, rid: int) -> None:
        self.counted[replica_index] -= int(self.at_submit[rid])
        self.at_submit[rid] = 0

    def tokens(self, pool: list) -> list[int]:
        """Each replica of `pool`'s tokens still to process (the replicas of a pool share one
        role). One vectorised pass over the pool's running requests: numpy calls per replica
        would cost more than their arithmetic."""
        counts = [len(r.running) for r in pool]
        total = sum(counts)
        if not total:
            return [self.counted[r.index] for r in pool]
        t = self.table
        ids = np.fromiter(chain.from_iterable(r.running for r in pool), dtype=np.int64, count=total)
        held = self.at_submit[ids]
        now = np.maximum(t.prefill_target[ids] - t.kv_tokens[ids], 0)
        if not self.prompt_only[pool[0].index]:
            now += t.output_tokens[ids] - t.generated[ids]
        # request-level batches keep finished members in `running` (held 0 once removed)
        progress = np.where(held > 0, held - now, 0)
        done = np.bincount(np.repeat(np.arange(len(pool)), counts), weights=progress, minlength=len(pool))
        return [self.counted[r.index] - int(d) for r, d in zip(pool, done.tolist())]


@dataclass
class RoutingContext:
    """What routers may use besides the replicas: the run's routing stream and shared state."""

    rng: np.random.Generator
    tokens: TokenLoad | None  # kept only for least_outstanding_tokens
    affinity_key: Callable[[int], int | None] | None = None  # prefix_affinity; None: no keys
    load_bound: float = 1.25  # prefix_affinity's c


def least_loaded(pool: list, loads: list[int], rng: np.random.Generator):
    """The replica with the smallest load, ties at random (one draw only when there is a tie)."""
    least = min(loads)
    ties = [i for i, load in enumerate(loads) if load == least]
    return pool[ties[0] if len(ties) == 1 else ties[int(rng.integers(len(ties)))]]


def capacity(outstanding: int, num_replicas: int, c: float) -> int:
    """prefix_affinity's load bound (Mirrokni et al., with one request of slack so that a lightly
    loaded fleet still keeps a prefix together): a replica may take a request if it then holds at
    most ceil(c L / n + 1), L the pool's outstanding requests before it. Some replica always can
    for c >= 1: if every one held more than ceil(c L / n + 1) - 1 >= c L / n >= L / n, the pool
    would hold more than L."""
    return math.ceil(c * outstanding / num_replicas + 1)


class RoundRobin:
    def __init__(self, pool: list, ctx: RoutingContext):
        self.pool = pool
        self.next = 0

    def pick(self, rid: int):
        self.next %= len(self.pool)  # the pool may have shrunk (simcost.cluster.control)
        replica = self.pool[self.next]
        self.next += 1
        return replica


class Random:
    def __init__(self, pool: list, ctx: RoutingContext):
        self.pool, self.rng = pool, ctx.rng

    def pick(self, rid: int):
        return self.pool[int(self.rng.integers(len(self.pool)))]


class JoinShortestQueue:
    def __init__(self, pool: list, ctx: RoutingContext):
        self.pool, self.rng = pool, ctx.rng

    def pick(self, rid: int):
        return least_loaded(self.pool, [r.num_outstanding for r in self.pool], self.rng)


class PowerOfTwo:
    def __init__(self, pool: list, ctx: RoutingContext):
        self.pool, self.rng = pool, ctx.rng

    def pick(self, rid: int):
        n = len(self.pool)
        if n == 1:
            return self.pool[0]
        first, second = self.rng.integers((n, n - 1)).tolist()
        a, b = self.pool[first], self.pool[second + (second >= first)]  # two distinct replicas
        return b if b.num_outstanding < a.num_outstanding else a


class LeastOutstandingTokens:
    def __init__(self, pool: list, ctx: RoutingContext):
        if ctx.tokens is None:
            raise ValueError("least_outstanding_tokens needs the fleet's TokenLoad in its RoutingContext")
        self.pool, self.rng, self.load = pool, ctx.rng, ctx.tokens

    def pick(self, rid: int):
        return least_loaded(self.pool, self.load.tokens(self.pool), self.rng)


class PrefixAffinity:
    def __init__(self, pool: list, ctx: RoutingContext):
        self.pool, self.rng, self.key, self.c = pool, ctx.rng, ctx.affinity_key, ctx.load_bound
        self.resized()

    def resized(self) -> None:
        """(Re)build the ring over the pool's replicas. Points hash the replica's index, not its
        place in the pool, so a replica joining or leaving moves only the keys it owns."""
        ring = sorted((mix64(r.index << 32 | v), i) for i, r in enumerate(self.pool) for v in range(VIRTUAL_NODES))
        self.points = [point for point, _ in ring]
        self.owners = [owner for _, owner in ring]

    def pick(self, rid: int):
        loads = [r.num_outstanding for r in self.pool]
        key = self.key(rid) if self.key is not None else None
        if key is None:
            return least_loaded(self.pool, loads, self.rng)
        cap = capacity(sum(loads), len(self.pool), self.c)
        start = bisect_left(self.points, mix64(key))
        for step in range(len(self.points)):  # clockwise; `capacity` says some owner is under cap
            owner = self.owners[(start + step) % len(self.points)]
            if loads[owner] + 1 <= cap:
                return self.pool[owner]
        raise AssertionError("no replica under the load bound")  # impossible for c >= 1


ROUTERS: dict[str, type] = {
    "round_robin": RoundRobin,
    "random": Random,
    "join_shortest_queue": JoinShortestQueue,
    "power_of_two": PowerOfTwo,
    "least_outstanding_tokens": LeastOutstandingTokens,
    "prefix_affinity": PrefixAffinity,
}

# Disaggregation: the decode pool's router. Handed-over requests bring their whole KV, so a
# decode replica's prefix cache saves them nothing: affinity there would only unbalance.
DECODE_ROUTER = {"prefix_affinity": "join_shortest_queue"}


# --- pool routers (fleet.pools): which pool takes a request ---------------------------------
#
# A request may go to the pools that serve its workload, admit it and have a ready replica
# (simcost.cluster.fleet); of those, a pool router picks one, and the pool's router above picks the
# replica. Both TTFT-aware routers use one predictor, from the state at arrival:
#   predicted TTFT on pool k = (prompt tokens waiting on k's ready replicas) / (its ready
#       replicas) x k's prefill seconds per token at a full prefill step
#     + the time of this prompt's own prefill step on k (the step model, alone in the step)
#     + k's site client_rtt_s (the user's round trip, simcost.metrics.summary `network`).
# It counts the prompt work queued ahead of the request, spread evenly over the pool; it does
# not count a wait for a batch slot when every replica is at max_num_seqs (edge_first bounds
# that separately) nor decode steps interleaved with the prefill (chunked prefill).
# TPOT is observed, not predicted: a pool's TPOT is the mean over its ready replicas of the
# inter-token latency their decoding requests have seen lately (simcost.engine.replica `itl_ewma_s`,
# prefill stalls included; 0 for a replica with nothing running). A pool whose TPOT is over the
# request's TPOT SLO does not meet the SLO, and `fastest` passes it over while another pool
# meets it: without this a fast pool takes nearly every request and its decodes slow past the
# SLO while the other pools idle.
# Cost: a pool's $ per output token at full load = its $ per replica-hour (at its pricing model:
# simcost.pricing.usd_per_replica_hour) / (3600 x the tokens per second of one decode step of
# max_num_seqs requests at DECODE_CONTEXT_TOKENS of context each, fewer if its KV cache holds fewer).

DECODE_CONTEXT_TOKENS = 1024  # assumption: the context of a typical running request for the $/token ranking


@dataclass
class PoolView:
    """What a pool router knows of pool k (simcost.simulation.simulation builds them)."""

    ready: list  # the pool's routable replicas (the very list the cluster keeps)
    prefill_s: Callable[[int], float]  # seconds of a prefill step of n prompt tokens, alone
    s_per_queued_token: float  # prefill seconds per prompt token at a full prefill step
    usd_per_token: float  # $ per output token at full load (cost_aware's ranking)
    rtt_s: float  # the site's client round trip
    edge: bool  # an edge site, or an edge device
    max_outstanding: int  # edge_first: requests a ready replica may hold


class PoolRouter:
    """Shared parts: the predictor and the decision counts (summary `pool_routing`). Subclasses
    set POLICY and implement choose()."""

    POLICY: str

    def __init__(self, views: list[PoolView], table: RequestTable, ttft_slo_s: np.ndarray, names: list[str],
                 tpot_slo_s: np.ndarray | None = None):
        self.views, self.table, self.ttft_slo_s, self.names = views, table, ttft_slo_s, names
        self.tpot_slo_s = tpot_slo_s if tpot_slo_s is not None else np.full(len(ttft_slo_s), np.nan)
        self.picked = [0] * len(views)  # routing decisions per pool (re-routed requests count again)
        self.spilled = 0  # edge_first: sent to the cloud while an edge pool could have taken it
        self.slo_missed = 0  # cost_aware: no pool's prediction met the SLO (went to the fastest)

    def predicted_ttft_s(self, k: int, rid: int) -> float:
        v, t = self.views[k], self.table
        queued = sum(int(t.input_tokens[w]) for r in v.ready for w in r.waiting)
        return queued / len(v.ready) * v.s_per_queued_token + v.prefill_s(int(t.input_tokens[rid])) + v.rtt_s

    def observed_tpot_s(self, k: int) -> float:
        ready = self.views[k].ready
        return sum(r.itl_ewma_s for r in ready if r.running) / len(ready)

    def tpot_ok(self, k: int, rid: int) -> bool:
        limit = self.tpot_slo_s[int(self.table.workload[rid])]
        return bool(np.isnan(limit) or self.observed_tpot_s(k) <= limit)

    def meets_slo(self, k: int, rid: int) -> bool:
        limit = self.ttft_slo_s[int(self.table.workload[rid])]
        return bool((np.isnan(limit) or self.predicted_ttft_s(k, rid) <= limit) and self.tpot_ok(k, rid))

    def fastest(self, rid: int, pools: list[int]) -> int:
        """The lowest predicted TTFT among the pools whose TPOT meets the SLO (all, if none does)."""
        within = [k for k in pools if self.tpot_ok(k, rid)] or pools
        return min(within, key=lambda k: self.predicted_ttft_s(k, rid))  # ties: the first listed

    def choose(self, rid: int, pools: list[int]) -> tuple[int, int | None]:
        raise NotImplementedError

    def pick(self, rid: int, pools: list[int]):
        """(pool, replica or None: the pool's router picks)"""
        k, replica = self.choose(rid, pools)
        self.picked[k] += 1
        return k, replica

    def counts(self) -> dict:
        return {"policy": self.POLICY, "requests_by_pool": dict(zip(self.names, self.picked)),
                "spilled_to_cloud": self.spilled, "slo_predicted_missed": self.slo_missed}


class Fastest(PoolRouter):
    """The pool with the lowest predicted TTFT, among those whose observed TPOT meets the SLO."""

    POLICY = "fastest"

    def choose(self, rid: int, pools: list[int]):
        return self.fastest(rid, pools), None


class CostAware(PoolRouter):
    """The cheapest pool ($ per output token at full load) whose predicted TTFT and observed TPOT
    meet the request's SLO (its workload's, else the scenario's; no SLO: every pool meets it);
    when none does, the fastest."""

    POLICY = "cost_aware"

    def choose(self, rid: int, pools: list[int]):
        meeting = [k for k in pools if self.meets_slo(k, rid)]
        if not meeting:
            self.slo_missed += 1
            return self.fastest(rid, pools), None
        return min(meeting, key=lambda k: (self.views[k].usd_per_token, self.predicted_ttft_s(k, rid))), None


class EdgeFirst(PoolRouter):
    """An edge pool (in fleet order) while one of its ready replicas holds fewer than its bound
    of outstanding requests (default max_num_seqs: never more than it can batch) and its
    predicted TTFT and observed TPOT meet the SLO; the request goes to that replica (the least loaded, so the
    bound holds per replica whatever fleet.router is). Else it spills to the fastest cloud pool;
    with no cloud pool to take it, to the fastest edge pool (where it waits in a queue)."""

    POLICY = "edge_first"

    def choose(self, rid: int, pools: list[int]):
        edge = [k for k in pools if self.views[k].edge]
        for k in edge:
            ready = self.views[k].ready
            replica = min(ready, key=lambda r: r.num_outstanding)  # ties: the first
            if replica.num_outstanding < self.views[k].max_outstanding and self.meets_slo(k, rid):
                return k, replica
        cloud = [k for k in pools if not self.views[k].edge]
        if not cloud:
            return self.fastest(rid, edge), None
        self.spilled += bool(edge)
        return self.fastest(rid, cloud), None


POOL_ROUTERS: dict[str, type] = {"fastest": Fastest, "cost_aware": CostAware, "edge_first": EdgeFirst}
