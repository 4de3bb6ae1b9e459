"""Hosted-model API pools at run time (scenario section: simcost.scenario.api).

`ApiPools.take(rid)` is asked at every arrival, before the self-hosted fleet: the first api
pool whose role and workloads claim the request (and whose budget still covers its price) gets
it, and a SimPy process then calls the API: rate-limit check (429, backoff with full jitter
from the run's `api` stream, bounded retries), then TTFT and output speed drawn from the pool's
lognormals, tokens written to the request table as the engine writes them. Each request ends
completed, failed (rate-limited past its retries) or rejected (over the model's context), and
only completed ones are billed: `request_usd` holds their exact price.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np
import simpy

import simcost.portable_math as pmath
from simcost.scenario.api import ApiPoolConfig, ApiTerms
from simcost.workload.request_table import COMPLETED, RequestTable

WINDOW_S = 60.0  # rate limits are per minute


class RateLimiter:
    """Requests and tokens accepted in the last WINDOW_S seconds, against per-minute limits."""

    def __init__(self, requests_per_min: float, tokens_per_min: float):
        self.rpm, self.tpm = requests_per_min, tokens_per_min
        self.accepted: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def admit(self, now_s: float, tokens: int) -> bool:
        while self.accepted and self.accepted[0][0] <= now_s - WINDOW_S:
            self.tokens -= self.accepted.popleft()[1]
        if len(self.accepted) + 1 > self.rpm or self.tokens + tokens > self.tpm:
            return False
        self.accepted.append((now_s, tokens))
        self.tokens += tokens
        return True


class ApiPool:
    """One api pool: its terms, rate limiter and counts."""

    def __init__(self, cfg: ApiPoolConfig, terms: ApiTerms, serves: set[int] | None):
        self.cfg, self.terms, self.serves = cfg, terms, serves
        self.limiter = RateLimiter(terms.requests_per_min, terms.tokens_per_min)
        self.spent_usd = 0.0  # committed at acceptance: the budget check reads it
        self.counts = {"sent": 0, "completed": 0, "failed": 0, "rejected": 0, "in_flight": 0,
                       "throttled_429": 0, "retries": 0, "budget_declined": 0}

    def claims(self, workload: int) -> bool:
        return self.serves is None or workload in self.serves


class ApiPools:
    def __init__(self, env: simpy.Environment, table: RequestTable, configs: tuple[ApiPoolConfig, ...],
                 workload_names: list[str], rng: np.random.Generator, fleet, on_done: Callable[[int], None]):
        self.env, self.table, self.rng, self.fleet, self.on_done = env, table, rng, fleet, on_done
        self.pools = [ApiPool(cfg, cfg.terms(f"fleet.api_pools[{k}]"),
                              None if cfg.serves is None else {workload_names.index(w) for w in cfg.serves})
                      for k, cfg in enumerate(configs)]
        n = len(table.arrival_s)
        self.pool_of = np.full(n, -1, dtype=np.int64)  # per request: the api pool that took it (-1: none)
        self.request_usd = np.zeros(n)
        self.cached_tokens = np.zeros(n, dtype=np.int64)
        self.last_finish_s = 0.0

    @property
    def in_flight(self) -> int:
        return sum(p.counts["in_flight"] for p in self.pools)

    def _grow(self, rid: int) -> None:
        if rid >= len(self.pool_of):  # session turns are added during the run
            size = max(rid + 1, 2 * len(self.pool_of))
            self.pool_of = np.concatenate([self.pool_of, np.full(size - len(self.pool_of), -1, dtype=np.int64)])
            self.request_usd = np.concatenate([self.request_usd, np.zeros(size - len(self.request_usd))])
            self.cached_tokens = np.concatenate([self.cached_tokens,
                                                 np.zeros(size - len(self.cached_tokens), dtype=np.int64)])

    def _saturated(self, pool: ApiPool) -> bool:
        over = pool.cfg.overflow
        if over is None:
            return False
        waiting = self.fleet.waiting_ids()
        if over.waiting_requests is not None and len(waiting) >= over.waiting_requests:
            return True
        if over.wait_s is not None and waiting:
            return self.env.now - float(self.table.arrival_s[waiting].min()) >= over.wait_s
        return False

    def price_usd(self, pool: ApiPool, rid: int) -> tuple[float, int]:
        """(the request's price if completed, its cached prompt tokens)."""
        t, terms = self.table, pool.terms
        n_in = int(t.input_tokens[rid])
        cached = 0
        if terms.cached_input_usd_per_1m is not None:
            cached = min(n_in, max(int(t.shared_prefix_tokens[rid]), math.floor(pool.cfg.cached_input_fraction * n_in)))
        return float(terms.usd(n_in, cached, int(t.output_tokens[rid]))), cached

    def take(self, rid: int) -> bool:
        """Whether an api pool takes arriving request rid (and starts serving it)."""
        workload = int(self.table.workload[rid])
        for k, pool in enumerate(self.pools):
            role = pool.cfg.role
            if role == "cascade" or not pool.claims(workload):
                continue
            if role == "overflow" and not self._saturated(pool):
                continue
            if role == "failover" and self.fleet.has_ready_for(rid):
                continue
            usd, _ = self.price_usd(pool, rid)
            budget = pool.cfg.budget_usd
            if budget is not None and pool.spent_usd + usd > budget:
                pool.counts["budget_declined"] += 1
                continue
            self.start(rid, k)
            return True
        return False

    def start(self, rid: int, k: int) -> None:
        """Send request rid to api pool k now, whatever its role (a cascade's stage names it)."""
        pool = self.pools[k]
        usd, cached = self.price_usd(pool, rid)
        self._grow(rid)
        self.pool_of[rid], self.cached_tokens[rid] = k, cached
        pool.counts["sent"] += 1
        pool.counts["in_flight"] += 1
        self.env.process(self._call(pool, rid, usd))

    def index(self, name: str) -> int | None:
        names = [p.cfg.name for p in self.pools]
        return names.index(name) if name in names else None

    def _call(self, pool: ApiPool, rid: int, usd: float):
        t, terms, retry = self.table, pool.terms, pool.cfg.retry
        n_in, n_out = int(t.input_tokens[rid]), int(t.output_tokens[rid])
        if terms.context_tokens is not None and n_in + n_out > terms.context_tokens:
            self._end(pool, rid, "rejected", "exceeds_max_model_len")
            return
        pool.spent_usd += usd  # reserved now so concurrent arrivals see the budget it takes
        attempt = 0
        while not pool.limiter.admit(self.env.now, n_in + n_out):
            pool.counts["throttled_429"] += 1
            if attempt >= retry.max_retries:
                pool.spent_usd -= usd
                self._end(pool, rid, "failed", "api_rate_limited")
                return
            cap_s = min(retry.max_backoff_s, retry.initial_backoff_s * 2.0 ** attempt)
            attempt += 1
            pool.counts["retries"] += 1
            yield self.env.timeout(float(self.rng.uniform(0.0, cap_s)))
        start_s = self.env.now
        ttft_s = terms.ttft_s * float(pmath.exp(self.rng.normal(0.0, pool.cfg.latency.ttft_sigma)))
        speed = terms.output_tokens_per_s * float(pmath.exp(self.rng.normal(0.0, pool.cfg.latency.speed_sigma)))
        token_s = start_s + ttft_s + np.arange(n_out) / speed
        t.first_scheduled_s[rid] = start_s
        yield self.env.timeout(float(token_s[-1] - start_s) if n_out else ttft_s)
        t.emit_request(rid, token_s, ("api", int(self.pool_of[rid])), usd)
        t.first_token_s[rid] = token_s[0] if n_out else self.env.now
        t.finish_s[rid] = self.env.now
        t.generated[rid] = n_out
        t.status[rid] = COMPLETED
        self.request_usd[rid] = usd
        self._end(pool, rid, "completed", None)

    def _end(self, pool: ApiPool, rid: int, outcome: str, reason: str | None) -> None:
        if reason is not None:
            self.table.reject(rid, reason)
        pool.counts[outcome] += 1
        pool.counts["in_flight"] -= 1
        self.last_finish_s = max(self.last_finish_s, self.env.now)
        self.on_done(rid)

    def trim(self, n: int) -> None:
        """Cut the per-request arrays to the run's n requests (after the run)."""
        self._grow(max(n - 1, 0))
        self.pool_of, self.request_usd, self.cached_tokens = self.pool_of[:n], self.request_usd[:n], self.cached_tokens[:n]

    def summary(self) -> dict:
        """summary.json `api`: per api pool its terms, request outcomes (sent = completed + failed +
        rejected + in_flight), tokens, dollars and TTFT."""
        t, out = self.table, {}
        n = t.num_requests
        for k, pool in enumerate(self.pools):
            mine = self.pool_of[:n] == k
            done = mine & (t.status[:n] == COMPLETED)
            n_in, n_cached = int(t.input_tokens[:n][done].sum()), int(self.cached_tokens[:n][done].sum())
            ttft = (t.first_token_s[:n] - t.arrival_s[:n])[done]
            terms = pool.terms
            out[pool.cfg.name] = {
                "provider": terms.provider_name, "publisher": terms.publisher_name, "model": terms.model,
                "role": pool.cfg.role, "batch": pool.cfg.batch,
                "usd_per_1m": {"input": terms.input_usd_per_1m, "cached_input": terms.cached_input_usd_per_1m,
                               "output": terms.output_usd_per_1m, "discount": terms.discount},
                "requests": dict(pool.counts),
                "input_tokens": n_in, "cached_input_tokens": n_cached,
                "output_tokens": int(t.generated[:n][done].sum()),
                "usd": float(self.request_usd[:n][done].sum()),
                "ttft_s_p50": float(np.percentile(ttft, 50)) if len(ttft) else None,
                "ttft_s_p95": float(np.percentile(ttft, 95)) if len(ttft) else None,
            }
        return out
