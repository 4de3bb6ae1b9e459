"""The workload sections of a scenario: token-length and delay distributions, traces, sessions,
closed-loop clients, non-token items, service-level objectives, and the workload (or mix) itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from simcost.errors import InputError
from simcost.scenario.arrivals import ArrivalSpec
from simcost.scenario.limits import (
    MAX_ITEMS_PER_REQUEST,
    MAX_LOGNORMAL_SIGMA,
    MAX_TOKENS_PER_REQUEST,
    MAX_TURNS,
    MAX_USERS,
)
from simcost.scenario.schema import bounds, tag

TOKENS_WHY = "a bound against typos; no model's context is longer"


def check_mean_tokens(mean: float, path: str) -> None:
    """Draws are whole counts >= 1, so a mean below 1 would run as ~1 while the scenario says less."""
    if mean < 1:
        raise InputError(f"{path}.mean", f"{mean:g}; draws are whole counts >= 1, so the run's mean would be about 1, "
                         "not this; expected mean >= 1")


def check_sigma(sigma: float, mean: float, path: str) -> None:
    """A lognormal's draws must average near its mean in a run-sized sample (see MAX_LOGNORMAL_SIGMA)."""
    if sigma > MAX_LOGNORMAL_SIGMA:
        median = mean * math.exp(-sigma ** 2 / 2)
        raise InputError(f"{path}.sigma", f"{sigma}: so wide that a run's draws average far below mean {mean:g} "
                         f"(the median draw is {median:.3g}); expected sigma <= {MAX_LOGNORMAL_SIGMA:g}")

# Token-length distributions, picked by the `dist` key. Draws are integers >= 1 (lognormal and
# exponential are rounded up, which is part of the distribution, not a clip of a few outliers).

@dataclass(frozen=True, kw_only=True)
class FixedLength:
    dist: Literal["fixed"] = field(default="fixed", metadata=tag("dist"))
    value: int = field(metadata=bounds(TOKENS_WHY, ge=1, le=MAX_TOKENS_PER_REQUEST))

    def smallest(self) -> int:
        return self.value

    def largest(self) -> float:
        return self.value


@dataclass(frozen=True, kw_only=True)
class UniformLength:
    """Integers low..high, both inclusive."""

    dist: Literal["uniform"] = field(default="uniform", metadata=tag("dist"))
    low: int = field(metadata=bounds(TOKENS_WHY, ge=1, le=MAX_TOKENS_PER_REQUEST))
    high: int = field(metadata=bounds(TOKENS_WHY, ge=1, le=MAX_TOKENS_PER_REQUEST))

    def smallest(self) -> int:
        return self.low

    def largest(self) -> float:
        return self.high

    def _check(self, path: str) -> None:
        if self.low > self.high:
            raise InputError(f"{path}.low", f"{self.low} is above high={self.high}; expected low <= high")


@dataclass(frozen=True, kw_only=True)
class LognormalLength:
    """`mean` of the continuous distribution in tokens, `sigma` the sd of ln(x)."""

    dist: Literal["lognormal"] = field(default="lognormal", metadata=tag("dist"))
    mean: float = field(metadata=bounds(TOKENS_WHY, gt=0, le=MAX_TOKENS_PER_REQUEST))
    sigma: float = field(metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        check_mean_tokens(self.mean, path)
        check_sigma(self.sigma, self.mean, path)

    def smallest(self) -> int:  # draws are rounded up to >= 1
        return 1

    def largest(self) -> float:  # the mean: a bound on typos, not on the tail
        return self.mean


@dataclass(frozen=True, kw_only=True)
class ExponentialLength:
    dist: Literal["exponential"] = field(default="exponential", metadata=tag("dist"))
    mean: float = field(metadata=bounds(TOKENS_WHY, gt=0, le=MAX_TOKENS_PER_REQUEST))

    def _check(self, path: str) -> None:
        check_mean_tokens(self.mean, path)

    def smallest(self) -> int:  # draws are rounded up to >= 1
        return 1

    def largest(self) -> float:  # the mean: a bound on typos, not on the tail
        return self.mean


@dataclass(frozen=True, kw_only=True)
class EmpiricalLength:
    """Resample this trace's lengths (a bundled name or a file); when input and output name the
    same trace, whole (input, output) rows are resampled, keeping their correlation."""

    dist: Literal["empirical"] = field(default="empirical", metadata=tag("dist"))
    trace: str


LengthSpec = FixedLength | UniformLength | LognormalLength | ExponentialLength | EmpiricalLength


@dataclass(frozen=True, kw_only=True)
class TraceColumns:
    """Column (CSV header or JSONL key) names of a generic trace file. Arrival times are read in
    `arrival_unit` and made relative to the first row."""

    arrival: str
    arrival_unit: Literal["s", "ms", "us"] = "s"
    input_tokens: str
    output_tokens: str
    session: str | None = None
    tenant: str | None = None


@dataclass(frozen=True, kw_only=True)
class TraceSpec:
    """A request trace: a bundled name (see `simcost.workload.traces.BUNDLED`) or a file path: Azure 2023
    CSV layout (TIMESTAMP, ContextTokens, GeneratedTokens), Mooncake JSONL (*.jsonl), or any
    CSV/JSONL with `columns`. Applied in order: window [start_s, end_s) of the trace's own
    time (shifted to start at 0), rate_multiplier (divides gaps), loop (repeat to fill duration_s),
    cut at duration_s, then sample_fraction (each request kept with that probability, seeded).
    With `max_concurrency` N the trace is replayed as N closed-loop users, as a benchmark client
    with a concurrency limit sends it (`vllm bench serve --max-concurrency`): a request is sent
    at its arrival time or, when N are in flight, the moment one of them ends (completed or
    rejected), in trace order; its TTFT counts from that send. Requests held at the limit are
    sent even after duration_s (the trace was cut by its own arrival times)."""

    name: str
    rate_multiplier: float = field(default=1.0, metadata=bounds(gt=0))
    columns: TraceColumns | None = None
    start_s: float = field(default=0.0, metadata=bounds(ge=0))
    end_s: float | None = field(default=None, metadata=bounds(gt=0))
    sample_fraction: float = field(default=1.0, metadata=bounds(gt=0, le=1))
    loop: bool = False
    # at most this many requests in flight; the next waits for one to end (None: open loop)
    max_concurrency: int | None = field(default=None, metadata=bounds("each slot is a simulated user; a bound "
                                                                      "against typos", ge=1, le=MAX_USERS))

    def _check(self, path: str) -> None:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise InputError(f"{path}.end_s", f"{self.end_s} is not after start_s={self.start_s}")


# Duration distributions in seconds (think times), picked by the `dist` key; continuous, >= 0.

@dataclass(frozen=True, kw_only=True)
class FixedDelay:
    dist: Literal["fixed"] = field(default="fixed", metadata=tag("dist"))
    value_s: float = field(metadata=bounds(ge=0))


@dataclass(frozen=True, kw_only=True)
class UniformDelay:
    dist: Literal["uniform"] = field(default="uniform", metadata=tag("dist"))
    low_s: float = field(metadata=bounds(ge=0))
    high_s: float = field(metadata=bounds(ge=0))

    def _check(self, path: str) -> None:
        if self.low_s > self.high_s:
            raise InputError(f"{path}.low_s", f"{self.low_s} is above high_s={self.high_s}; expected low_s <= high_s")


@dataclass(frozen=True, kw_only=True)
class ExponentialDelay:
    dist: Literal["exponential"] = field(default="exponential", metadata=tag("dist"))
    mean_s: float = field(metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class LognormalDelay:
    """`mean_s` of the distribution, `sigma` the sd of ln(x)."""

    dist: Literal["lognormal"] = field(default="lognormal", metadata=tag("dist"))
    mean_s: float = field(metadata=bounds(gt=0))
    sigma: float = field(metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        check_sigma(self.sigma, self.mean_s, path)


DelaySpec = FixedDelay | UniformDelay | ExponentialDelay | LognormalDelay


@dataclass(frozen=True, kw_only=True)
class SessionSpec:
    """Multi-turn sessions (chats, agents): the workload's arrivals (or clients) start sessions of
    `turns` turns. Turn k+1 is sent `think_time` after turn k's answer finished; its prompt is turn
    k's prompt plus turn k's output plus new tokens (followup_input_tokens, default input_tokens),
    so the shared prefix grows. A rejected turn ends its session; turns that would start at or
    after duration_s are not sent (both are counted in the summary)."""

    turns: LengthSpec
    think_time: DelaySpec
    followup_input_tokens: LengthSpec | None = None

    def _check(self, path: str) -> None:
        if isinstance(self.turns, EmpiricalLength):
            raise InputError(f"{path}.turns.dist", "empirical resamples token lengths; give turns as fixed, uniform, lognormal or exponential")
        if self.turns.largest() > MAX_TURNS:
            raise InputError(f"{path}.turns", f"up to {self.turns.largest():g} turns; expected at most {MAX_TURNS:,} "
                             "(a bound against typos)")


@dataclass(frozen=True, kw_only=True)
class ClientsSpec:
    """Closed loop: `users` users, each sending a request (or running a session), waiting for its
    answer (or a rejection), thinking for `think_time` and sending the next, until duration_s.
    Each user's first request comes one think time after t=0, so users do not start in lockstep."""

    users: int = field(metadata=bounds("each user is a simulated process; a bound against typos", ge=1,
                                       le=MAX_USERS))
    think_time: DelaySpec


@dataclass(frozen=True, kw_only=True)
class ItemSpec:
    """Work that is not LLM tokens, carried by each request: images, audio seconds, embedding
    calls. Each item costs `flops_per_item` and `bytes_per_item` of memory traffic in the request's
    prefill step (roofline: the step takes the longer of the items' compute and memory time on top
    of its token work) and adds `prompt_tokens_per_item` tokens to the prompt (e.g. 576 for a
    LLaVA-1.5 image; 0 for an encoder-only call)."""

    kind: str  # a label for reports: image, audio_s, embedding_call
    per_request: LengthSpec  # items per request (>= 1)
    flops_per_item: float = field(metadata=bounds(ge=0))
    bytes_per_item: float = field(default=0.0, metadata=bounds(ge=0))
    prompt_tokens_per_item: int = field(default=0, metadata=bounds(TOKENS_WHY, ge=0, le=MAX_TOKENS_PER_REQUEST))

    def _check(self, path: str) -> None:
        if isinstance(self.per_request, EmpiricalLength):
            raise InputError(f"{path}.per_request.dist", "empirical resamples token lengths; give items per request as fixed, uniform, lognormal or exponential")
        if self.per_request.largest() > MAX_ITEMS_PER_REQUEST:
            raise InputError(f"{path}.per_request", f"up to {self.per_request.largest():g} items; expected at most "
                             f"{MAX_ITEMS_PER_REQUEST:,} per request (a bound against typos)")


@dataclass(frozen=True, kw_only=True)
class WorkloadConfig:
    """Requests: synthetic open-loop `arrivals` or closed-loop `clients`, with two length
    distributions (optionally multi-turn `session`s and non-token `items`); or a `trace`; or a
    `mix` of such workloads, each with its own arrivals, streams, tenant, priority and SLO."""

    name: str | None = None  # default: "default", or w<i> inside a mix
    tenant: str | None = None  # who the requests belong to (default: the trace's tenant column, else name)
    priority: int = 0  # scheduling class; lower is more urgent (vLLM's convention)
    slo: SloConfig | None = None  # this workload's limits; unset limits fall back to the scenario's slo
    tags: tuple[str, ...] = ()  # "key=value" labels for cost reports (summary by_tag), e.g. ["team=search"]
    arrivals: ArrivalSpec | None = None
    clients: ClientsSpec | None = None
    input_tokens: LengthSpec | None = None
    output_tokens: LengthSpec | None = None
    session: SessionSpec | None = None
    items: ItemSpec | None = None
    trace: TraceSpec | None = None
    mix: tuple[WorkloadConfig, ...] | None = None

    def _check(self, path: str) -> None:
        for i, label in enumerate(self.tags):
            key, sep, value = label.partition("=")
            if not (sep and key.strip() and value.strip()):
                raise InputError(f"{path}.tags[{i}]", f"{label!r}; expected key=value, e.g. team=search")
        if self.mix is not None:
            self._check_mix(path)
            return
        if self.trace is not None:
            for name in ("arrivals", "clients", "input_tokens", "output_tokens", "session"):
                if getattr(self, name) is not None:
                    raise InputError(f"{path}.{name}", "not used with workload.trace (the trace gives arrivals, lengths and sessions)")
            return
        if (self.arrivals is None) == (self.clients is None):
            raise InputError(f"{path}.arrivals", "give either arrivals (open loop) or clients (closed loop), not both"
                             if self.arrivals else "missing; a workload needs arrivals or clients, lengths, or a trace")
        for name in ("input_tokens", "output_tokens"):
            if getattr(self, name) is None:
                raise InputError(f"{path}.{name}", "missing; a synthetic workload needs input_tokens and output_tokens")

    def _check_mix(self, path: str) -> None:
        if self.tags:
            raise InputError(f"{path}.tags", "not used next to mix; give tags inside each mix entry")
        for name in ("arrivals", "clients", "input_tokens", "output_tokens", "session", "items", "trace", "slo",
                     "tenant"):
            if getattr(self, name) is not None:
                raise InputError(f"{path}.{name}", "not used next to mix; give it inside each mix entry")
        if not self.mix:
            raise InputError(f"{path}.mix", "empty; expected a list of workloads")
        names = [entry.name or f"w{i}" for i, entry in enumerate(self.mix)]
        for i, entry in enumerate(self.mix):
            if entry.mix is not None:
                raise InputError(f"{path}.mix[{i}].mix", "a mix cannot nest another mix")
            if names.index(names[i]) != i:
                raise InputError(f"{path}.mix[{i}].name", f"'{names[i]}' is used twice; mix entries need distinct names")
            if entry.trace is not None and entry.trace.max_concurrency is not None:
                # one arrival process sends every entry's requests: holding one entry's would hold all
                raise InputError(f"{path}.mix[{i}].trace.max_concurrency", "not supported inside a mix; give it on a "
                                 "workload that is a single trace")

    def entries(self) -> tuple[WorkloadConfig, ...]:
        """The workloads this one stands for: the mix entries, or itself."""
        return self.mix if self.mix is not None else (self,)

    def entry_name(self, index: int) -> str:
        entry = self.entries()[index]
        return entry.name or (f"w{index}" if self.mix is not None else "default")


@dataclass(frozen=True, kw_only=True)
class SloConfig:
    ttft_s: float | None = field(default=None, metadata=bounds(gt=0))
    tpot_s: float | None = field(default=None, metadata=bounds(gt=0))
    e2el_s: float | None = field(default=None, metadata=bounds(gt=0))
    # a run meets its SLOs when at least this fraction of measured requests meets every limit
    # and no request was rejected
    attainment: float = field(default=0.99, metadata=bounds(gt=0, le=1))
