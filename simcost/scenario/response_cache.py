"""A response cache in front of the fleet and its api pools (fleet.response_cache).

Every arrival of a cached workload is looked up first (`lookup_s`, plus `embedding_s` in
semantic mode); a hit is answered from the cache at once (TTFT = E2EL = the lookup time, the
whole answer in one piece) and never reaches a pool; a miss goes on as usual, and its answer is
stored when it completes. Entries expire `ttl_s` after they are stored; past `capacity_entries`
the least recently used entry is evicted.
- exact: the key is the prompt's content hash, from a trace's prompt block hashes (Mooncake's
  hash_ids) with the workload and prompt length: a hit needs the same prompt stored and fresh.
  Requests with no hashes (synthetic ones, follow-up turns) always miss.
- semantic: each lookup finds a similar enough stored answer with probability `hit_rate` (or
  its workload's in `rates`), if the cache holds a fresh entry of that workload (the match is
  then one of them, chosen at random, and counts as used for LRU); `false_hit_rate` of hits
  return a wrong answer (reported, and charged against the quality proxy). Every lookup embeds
  the prompt at `embedding_usd_per_1m_tokens` (default $0.02: OpenAI text-embedding-3-small,
  platform.openai.com/docs/pricing, read on a secondary page 2026-12-06).
Costs: the embedding calls, allocated to the requests looked up, and the store's hosting at
`store_usd_per_hour` over the whole run (unallocated: a cost of having the cache). Defaults for
latency (5 ms lookup, 20 ms embedding) are assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simcost.errors import InputError
from simcost.scenario.cascade import WorkloadRate
from simcost.scenario.schema import bounds

EMBEDDING_USD_PER_1M = 0.02  # text-embedding-3-small list price (see the module docstring)


@dataclass(frozen=True, kw_only=True)
class ResponseCacheConfig:
    mode: Literal["exact", "semantic"]
    workloads: tuple[str, ...] | None = None  # the cached workloads; None: all
    hit_rate: float | None = field(default=None, metadata=bounds(ge=0, le=1))  # semantic
    rates: tuple[WorkloadRate, ...] | None = None  # semantic, per workload (others: 0)
    false_hit_rate: float = field(default=0.0, metadata=bounds(ge=0, le=1))  # semantic
    ttl_s: float | None = field(default=None, metadata=bounds(gt=0))  # None: entries never expire
    capacity_entries: int | None = field(default=None, metadata=bounds(ge=1, le=10**9))  # None: unbounded
    lookup_s: float = field(default=0.005, metadata=bounds(ge=0))
    embedding_s: float = field(default=0.02, metadata=bounds(ge=0))  # semantic
    embedding_usd_per_1m_tokens: float = field(default=EMBEDDING_USD_PER_1M, metadata=bounds(ge=0))  # semantic
    store_usd_per_hour: float = field(default=0.0, metadata=bounds(ge=0))

    def _check(self, path: str) -> None:
        if self.mode == "semantic" and (self.hit_rate is None) == (self.rates is None):
            raise InputError(path, "semantic mode needs exactly one of hit_rate and rates")
        if self.mode == "exact":
            for key in ("hit_rate", "rates"):
                if getattr(self, key) is not None:
                    raise InputError(f"{path}.{key}", "not used by mode exact (hits come from the prompts' hashes)")
            if self.false_hit_rate:
                raise InputError(f"{path}.false_hit_rate", "not used by mode exact (an exact match is never wrong)")
        if self.workloads is not None and not self.workloads:
            raise InputError(f"{path}.workloads", "empty; list workload names, or leave it out for all of them")
