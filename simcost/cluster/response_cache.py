"""The response cache at run time (scenario section: simcost.scenario.response_cache).

`lookup(rid)` is asked at every arrival of a cached workload before anything else: a hit is
answered after the lookup time (the whole answer at once) and never reaches a pool; a miss goes
on after the lookup time through `forward`, and `store(rid)` keeps its answer when it completes.
Every lookup is a hit or a miss (`counts`); every hit completes. Dollars: `request_usd` holds
each looked-up request's embedding call (semantic mode), `store_usd(horizon_s)` the hosting.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np
import simpy

from simcost.scenario.response_cache import ResponseCacheConfig
from simcost.workload.request_table import COMPLETED, RequestTable


class ResponseCache:
    def __init__(self, env: simpy.Environment, cfg: ResponseCacheConfig, table: RequestTable, workload_names: list[str],
                 block_ids: list[np.ndarray] | None, rng: np.random.Generator,
                 forward: Callable[[int], None], on_done: Callable[[int], None]):
        self.env, self.cfg, self.table, self.rng, self.forward, self.on_done = env, cfg, table, rng, forward, on_done
        self.block_ids = block_ids
        self.cached_workload = np.array([cfg.workloads is None or n in cfg.workloads for n in workload_names])
        self.rate = np.zeros(len(workload_names))
        if cfg.hit_rate is not None:
            self.rate[:] = cfg.hit_rate
        for r in cfg.rates or ():
            self.rate[workload_names.index(r.workload)] = r.rate
        self.semantic = cfg.mode == "semantic"
        self.lru: OrderedDict[Hashable, float] = OrderedDict()  # key -> stored at (least recently used first)
        self.by_workload: list[OrderedDict[Hashable, float]] = [OrderedDict() for _ in workload_names]  # in store order
        self.key_workload: dict[Hashable, int] = {}
        self.missed: set[int] = set()  # looked up, missed, not yet answered
        self.hit: set[int] = set()
        self.false_hits = 0
        self.counts = {"lookups": 0, "hits": 0, "misses": 0, "stored": 0, "evicted": 0, "expired": 0}
        self.request_usd = np.zeros(len(table.arrival_s))
        self.pending = 0  # looked up, neither answered nor passed on yet
        self.last_s = 0.0  # the last hit answered
        self.delay_s = cfg.lookup_s + (cfg.embedding_s if self.semantic else 0.0)

    def _key(self, rid: int) -> Hashable | None:
        if self.semantic:
            return ("answer", rid)
        ids = self.block_ids
        if ids is None or rid >= len(ids) or not len(ids[rid]):
            return None  # no content hash: never stored, always a miss
        t = self.table
        return (int(t.workload[rid]), int(t.input_tokens[rid]), ids[rid].tobytes())

    def _fresh(self, stored_s: float) -> bool:
        return self.cfg.ttl_s is None or self.env.now < stored_s + self.cfg.ttl_s

    def _drop(self, key: Hashable) -> None:
        self.lru.pop(key, None)
        self.by_workload[self.key_workload.pop(key)].pop(key, None)

    def lookup(self, rid: int) -> bool:
        """Whether rid's workload is cached (then the cache has it: a hit or a forwarded miss)."""
        t = self.table
        w = int(t.workload[rid])
        if not self.cached_workload[w]:
            return False
        if rid >= len(self.request_usd):
            self.request_usd = np.concatenate([self.request_usd, np.zeros(max(rid + 1, 2 * len(self.request_usd))
                                                                          - len(self.request_usd))])
        self.counts["lookups"] += 1
        if self.semantic:
            self.request_usd[rid] = int(t.input_tokens[rid]) * self.cfg.embedding_usd_per_1m_tokens / 1e6
        hit = self._match(rid, w)
        self.counts["hits" if hit else "misses"] += 1
        (self.hit if hit else self.missed).add(rid)
        self.pending += 1
        self.env.process(self._answer(rid) if hit else self._pass_on(rid))
        return True

    def _match(self, rid: int, w: int) -> bool:
        if self.semantic:
            stored = self.by_workload[w]
            while stored:  # the newest entry of the workload, if still fresh, stands for "a similar one"
                key, stored_s = next(reversed(stored.items()))
                if self._fresh(stored_s):
                    break
                self._drop(key)
                self.counts["expired"] += 1
            if not stored or not self.rng.random() < self.rate[w]:
                return False
            self.lru.move_to_end(key)
            self.false_hits += bool(self.rng.random() < self.cfg.false_hit_rate)
            return True
        key = self._key(rid)
        if key is None or key not in self.lru:
            return False
        if not self._fresh(self.lru[key]):
            self._drop(key)
            self.counts["expired"] += 1
            return False
        self.lru.move_to_end(key)
        return True

    def _answer(self, rid: int):
        yield self.env.timeout(self.delay_s)
        t, now = self.table, self.env.now
        n_out = int(t.output_tokens[rid])
        t.first_scheduled_s[rid] = t.first_token_s[rid] = t.finish_s[rid] = now
        t.emit_request(rid, np.full(n_out, now), ("cache", 0))
        t.generated[rid] = n_out
        t.status[rid] = COMPLETED
        self.pending -= 1
        self.last_s = now
        self.on_done(rid)

    def _pass_on(self, rid: int):
        if self.delay_s > 0:
            yield self.env.timeout(self.delay_s)
        self.pending -= 1
        self.forward(rid)

    def store(self, rid: int) -> None:
        """A request finished: a missed one that completed leaves its answer in the cache."""
        if rid not in self.missed:
            return
        self.missed.discard(rid)
        key = self._key(rid)
        if key is None or self.table.status[rid] != COMPLETED:
            return
        if key in self.lru:
            self._drop(key)
        self.lru[key] = self.env.now
        w = int(self.table.workload[rid])
        self.by_workload[w][key] = self.env.now
        self.key_workload[key] = w
        self.counts["stored"] += 1
        capacity = self.cfg.capacity_entries
        while capacity is not None and len(self.lru) > capacity:
            self._drop(next(iter(self.lru)))
            self.counts["evicted"] += 1

    def trim(self, n: int) -> np.ndarray:
        """Each of the run's n requests' embedding dollars (after the run)."""
        if len(self.request_usd) < n:
            self.request_usd = np.concatenate([self.request_usd, np.zeros(n - len(self.request_usd))])
        self.request_usd = self.request_usd[:n]
        return self.request_usd

    def store_usd(self, horizon_s: float) -> float:
        return float(self.cfg.store_usd_per_hour * horizon_s / 3600.0)

    def summary(self, horizon_s: float) -> dict:
        c, t = self.counts, self.table
        hits = np.array(sorted(self.hit), dtype=np.int64)
        latency = t.finish_s[hits] - t.arrival_s[hits]
        return {"mode": self.cfg.mode, **c, "hit_rate": c["hits"] / c["lookups"] if c["lookups"] else None,
                "false_hits": self.false_hits, "entries_at_end": len(self.lru),
                "hit_latency_s": float(latency.mean()) if len(latency) else None,
                "output_tokens_served": int(t.generated[hits].sum()),
                "embedding_usd": float(self.request_usd.sum()), "store_usd": self.store_usd(horizon_s)}
