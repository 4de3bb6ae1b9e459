"""API pools (fleet.api_pools): requests answered by a hosted model, billed per token.

An api pool names a model of the bundled price list (configs/api_prices.yaml, by `provider` and
`model`) or gives its own prices (provider `custom`); any price it gives overrides the list's.
Its `role` says which requests it takes (simcost.cluster.api_pool runs it):
- route: every request of the workloads in `serves` (default: all);
- overflow: a request of its workloads when the self-hosted fleet is saturated at its arrival
  (`overflow.waiting_requests` requests waiting for a replica, or the oldest waiting
  `overflow.wait_s` seconds);
- failover: a request of its workloads that finds no ready self-hosted replica (an outage, a
  fleet still starting or scaled to zero), instead of waiting for one;
- cascade: none on its own; fleet.cascade sends it its first-stage or escalated requests.
`budget_usd` caps the pool's spend over the run: a request whose price would pass it stays with
the self-hosted fleet. The pools are tried in the order listed; the first that takes a request
keeps it.
Rate limits: at most `requests_per_min` requests and `tokens_per_min` tokens (prompt + output)
accepted in any 60 s; an over-limit call gets a 429 and the client retries after a backoff drawn
uniformly from [0, min(max_backoff_s, initial_backoff_s x 2^attempt)] ("full jitter"), at most
`max_retries` times, then the request has failed (rejected, reason api_rate_limited). Defaults
follow the OpenAI and Anthropic Python SDKs (2 retries, 0.5 s initial, 8 s cap).
Latency: TTFT and output speed are lognormal around their medians (`latency`; default: the
price list's medians, assumptions) with log-sd ttft_sigma and speed_sigma; token i arrives at
TTFT + i / speed. Neither depends on the prompt's length or the provider's load (not modelled). A batch pool (`batch: true`) pays the provider's batch discount; set
latency.ttft_s to the turnaround you expect (batch APIs promise completion within 24 h).
Price of a completed request, exactly: (uncached prompt x input + cached prompt x cached_input +
output x output) / 1e6, x (1 - batch discount) on a batch pool. Cached prompt tokens: the
larger of the request's shared_prefix_tokens (a session's previous turn, which a provider's
prompt cache holds) and cached_input_fraction x its prompt, where the model has a cached price.
Failed and rejected requests are not billed (providers do not bill 429s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from simcost.catalog.api_prices import CUSTOM, ApiModel, get_api_model
from simcost.errors import InputError
from simcost.scenario.schema import bounds


@dataclass(frozen=True, kw_only=True)
class ApiRateLimits:
    requests_per_min: float | None = field(default=None, metadata=bounds(gt=0))  # None: the price list's
    tokens_per_min: float | None = field(default=None, metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class ApiRetryConfig:
    max_retries: int = field(default=2, metadata=bounds("retries past a few dozen only stretch the run", ge=0, le=100))
    initial_backoff_s: float = field(default=0.5, metadata=bounds(gt=0))
    max_backoff_s: float = field(default=8.0, metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class ApiLatencyConfig:
    ttft_s: float | None = field(default=None, metadata=bounds(gt=0))  # median; None: the price list's
    output_tokens_per_s: float | None = field(default=None, metadata=bounds(gt=0))  # median
    # log-sd of the lognormals: 0.5 puts TTFT's p95 at 2.3 x its median (an assumption)
    ttft_sigma: float = field(default=0.5, metadata=bounds(ge=0, le=5))
    speed_sigma: float = field(default=0.25, metadata=bounds(ge=0, le=5))


@dataclass(frozen=True, kw_only=True)
class ApiOverflowConfig:
    waiting_requests: int | None = field(default=None, metadata=bounds(ge=1))
    wait_s: float | None = field(default=None, metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if self.waiting_requests is None and self.wait_s is None:
            raise InputError(path, "give waiting_requests, wait_s or both (when the fleet counts as saturated)")


@dataclass(frozen=True)
class ApiTerms:
    """An api pool's resolved terms: the scenario's keys over the price list's."""

    provider_name: str
    publisher_name: str
    model: str
    input_usd_per_1m: float
    output_usd_per_1m: float
    cached_input_usd_per_1m: float | None
    discount: float  # off both prices (batch API); 0 otherwise
    context_tokens: int | None
    ttft_s: float
    output_tokens_per_s: float
    requests_per_min: float
    tokens_per_min: float

    def usd(self, input_tokens, cached_tokens, output_tokens):
        """$ for tokens (scalars or numpy arrays): the pool's price formula."""
        cached_price = self.cached_input_usd_per_1m or 0.0
        return ((input_tokens - cached_tokens) * self.input_usd_per_1m + cached_tokens * cached_price
                + output_tokens * self.output_usd_per_1m) / 1e6 * (1.0 - self.discount)


@dataclass(frozen=True, kw_only=True)
class ApiPoolConfig:
    name: str
    provider: str  # a provider of the price list, or "custom" (give every price and latency median)
    model: str
    role: Literal["route", "overflow", "failover", "cascade"] = "route"
    serves: tuple[str, ...] | None = None  # workload names; None: all
    input_usd_per_1m: float | None = field(default=None, metadata=bounds(ge=0))  # None: the price list's
    output_usd_per_1m: float | None = field(default=None, metadata=bounds(ge=0))
    cached_input_usd_per_1m: float | None = field(default=None, metadata=bounds(ge=0))
    cached_input_fraction: float = field(default=0.0, metadata=bounds(ge=0, le=1))
    batch: bool = False
    rate_limits: ApiRateLimits = ApiRateLimits()
    latency: ApiLatencyConfig = ApiLatencyConfig()
    retry: ApiRetryConfig = ApiRetryConfig()
    overflow: ApiOverflowConfig | None = None  # role overflow: when the fleet counts as saturated
    budget_usd: float | None = field(default=None, metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if self.serves is not None and not self.serves:
            raise InputError(f"{path}.serves", "empty; list workload names, or leave serves out for all of them")
        if (self.role == "overflow") != (self.overflow is not None):
            raise InputError(f"{path}.overflow", "needed by role overflow (when the fleet counts as saturated)"
                             if self.role == "overflow" else f"only used by role overflow, not {self.role}")
        self.terms(path)  # unknown provider or model, a missing price: refused now

    def listed(self, path: str) -> ApiModel | None:
        return None if self.provider == CUSTOM else get_api_model(self.provider, self.model, path)

    def terms(self, path: str) -> ApiTerms:
        """The prices, limits and latency medians this pool runs with (InputError naming the key
        when one is missing)."""
        m = self.listed(path)

        def pick(own, key: str, section: str = ""):
            value = own if own is not None else (getattr(m, key) if m is not None else None)
            if value is None:
                where = f"{path}.{section}{key}"
                raise InputError(where, "missing; provider custom (or a model the price list gives none for) "
                                 "needs it" if m is None else f"missing; the price list gives no {key} for "
                                 f"{self.provider} {self.model}")
            return value

        cached = self.cached_input_usd_per_1m if self.cached_input_usd_per_1m is not None else (
            m.cached_input_usd_per_1m if m is not None else None)
        if self.cached_input_fraction > 0 and cached is None:
            raise InputError(f"{path}.cached_input_fraction", f"{self.cached_input_fraction:g}, but there is no cached "
                             "input price for this model; give cached_input_usd_per_1m or set 0")
        discount = 0.0
        if self.batch:
            if m is None or m.batch_discount is None:
                raise InputError(f"{path}.batch", f"{self.provider} publishes no batch discount in the price list; "
                                 "set batch: false (or lower the prices yourself)")
            discount = m.batch_discount
        return ApiTerms(provider_name=m.provider_name if m is not None else self.name,
                        publisher_name=m.publisher_name if m is not None else self.name, model=self.model,
                        input_usd_per_1m=float(pick(self.input_usd_per_1m, "input_usd_per_1m")),
                        output_usd_per_1m=float(pick(self.output_usd_per_1m, "output_usd_per_1m")),
                        cached_input_usd_per_1m=cached, discount=discount,
                        context_tokens=m.context_tokens if m is not None else None,
                        ttft_s=float(pick(self.latency.ttft_s, "ttft_s", "latency.")),
                        output_tokens_per_s=float(pick(self.latency.output_tokens_per_s, "output_tokens_per_s",
                                                       "latency.")),
                        requests_per_min=float(pick(self.rate_limits.requests_per_min, "requests_per_min",
                                                    "rate_limits.") if m is not None or
                                               self.rate_limits.requests_per_min is not None else math.inf),
                        tokens_per_min=float(pick(self.rate_limits.tokens_per_min, "tokens_per_min", "rate_limits.")
                                             if m is not None or self.rate_limits.tokens_per_min is not None
                                             else math.inf))
