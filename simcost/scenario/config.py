"""Scenario files: the sections of a scenario as frozen, keyword-only dataclasses, and loading.

Each section is one dataclass; `simcost.schema.build` maps YAML onto them with unknown-key, type
and bound checks, and each class's `_check(path)` holds its own cross-field rules. Every failure
is an `InputError` naming the key path, the value and what was expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from simcost.errors import InputError
from simcost.scenario.schema import apply_overrides, bounds, build, check_variant_keys, tag


# --- workload -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LengthSpec:
    """A token-length distribution. Draws are integers >= 1 (lognormal/exponential are rounded
    up, which is documented as part of the distribution, not a clip of a few outliers)."""

    dist: Literal["fixed", "uniform", "lognormal", "exponential", "empirical"]
    value: int | None = field(default=None, metadata=bounds(ge=1))  # fixed
    low: int | None = field(default=None, metadata=bounds(ge=1))  # uniform, inclusive
    high: int | None = field(default=None, metadata=bounds(ge=1))  # uniform, inclusive
    mean: float | None = field(default=None, metadata=bounds(gt=0))  # lognormal, exponential
    sigma: float | None = field(default=None, metadata=bounds(gt=0))  # lognormal: sd of ln(x)
    # empirical: resample this trace's lengths (a bundled name or a file); when input and output
    # name the same trace, whole (input, output) rows are resampled, keeping their correlation
    trace: str | None = None

    _NEEDS = {"fixed": ("value",), "uniform": ("low", "high"),
              "lognormal": ("mean", "sigma"), "exponential": ("mean",), "empirical": ("trace",)}

    def _check(self, path: str) -> None:
        check_variant_keys(self, path, "dist", "dist", self._NEEDS)
        if self.dist == "uniform" and self.low > self.high:
            raise InputError(f"{path}.low", f"{self.low} is above high={self.high}; expected low <= high")


@dataclass(frozen=True, kw_only=True)
class PoissonArrivals:
    """Poisson arrivals at rate_per_s."""

    process: Literal["poisson"] = field(default="poisson", metadata=tag("process"))
    rate_per_s: float = field(metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class RenewalArrivals:
    """A renewal process (gamma or weibull inter-arrival times) at rate_per_s whose gaps have
    coefficient of variation cv (1 is Poisson; above 1 is burstier)."""

    process: Literal["gamma", "weibull"] = field(metadata=tag("process"))
    rate_per_s: float = field(metadata=bounds(gt=0))
    cv: float = field(metadata=bounds(ge=0.01, le=100))


@dataclass(frozen=True, kw_only=True)
class MmppArrivals:
    """On-off bursts: a two-state Markov-modulated Poisson process with exponential sojourns."""

    process: Literal["mmpp"] = field(default="mmpp", metadata=tag("process"))
    rate_on_per_s: float = field(metadata=bounds(ge=0))
    rate_off_per_s: float = field(metadata=bounds(ge=0))
    mean_on_s: float = field(metadata=bounds(gt=0))
    mean_off_s: float = field(metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if self.rate_on_per_s + self.rate_off_per_s == 0:
            raise InputError(f"{path}.rate_on_per_s", "0 with rate_off_per_s 0; at least one rate must be > 0")


@dataclass(frozen=True, kw_only=True)
class PiecewiseArrivals:
    """A rate that steps: rate_table [[start_s, rate_per_s], ...] or rate_file (a CSV with header
    start_s,rate_per_s, relative to the scenario file), first start 0, the last rate holds on."""

    process: Literal["piecewise"] = field(default="piecewise", metadata=tag("process"))
    rate_table: tuple[tuple[float, ...], ...] | None = None
    rate_file: str | None = None

    def _check(self, path: str) -> None:
        if (self.rate_table is None) == (self.rate_file is None):
            raise InputError(f"{path}.rate_file" if self.rate_file else f"{path}.rate_table",
                             "given with rate_table; give one of them" if self.rate_file
                             else "missing; process 'piecewise' needs rate_table or rate_file")
        if self.rate_table is not None:
            check_rate_rows(self.rate_table, lambda i: f"{path}.rate_table[{i}]", f"{path}.rate_table")


@dataclass(frozen=True, kw_only=True)
class SinusoidalArrivals:
    """A daily (or any period_s) cycle around mean_rate_per_s, peak_to_trough times higher at
    peak_at_s than half a period later."""

    process: Literal["sinusoidal"] = field(default="sinusoidal", metadata=tag("process"))
    mean_rate_per_s: float = field(metadata=bounds(gt=0))
    peak_to_trough: float = field(metadata=bounds(ge=1))
    period_s: float = field(default=86400.0, metadata=bounds(gt=0))
    peak_at_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ServegenArrivals:
    """Alibaba ServeGen per-client windows (see `simcost.workload.servegen`): servegen_file (a
    bundled name, simcost.workload.servegen.SERVEGEN_BUNDLED, or a path); clients (ids) or
    top_clients (the K busiest), else every client of the file; start_s in trace time (0 = local
    midnight); time_compression (60 plays a day in 24 min) and rate_multiplier."""

    process: Literal["servegen"] = field(default="servegen", metadata=tag("process"))
    servegen_file: str
    clients: tuple[int, ...] | None = None
    top_clients: int | None = field(default=None, metadata=bounds(ge=1))
    start_s: float = field(default=0.0, metadata=bounds(ge=0))
    time_compression: float = field(default=1.0, metadata=bounds(ge=1))
    rate_multiplier: float = field(default=1.0, metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if self.clients is not None and self.top_clients is not None:
            raise InputError(f"{path}.top_clients", "given with clients; give one of them")
        if self.clients is not None and not self.clients:
            raise InputError(f"{path}.clients", "empty; list client ids, or leave clients out for all of them")
        for i, client in enumerate(self.clients or ()):
            if client in self.clients[:i]:
                raise InputError(f"{path}.clients[{i}]", f"client {client} is listed twice")


# An arrival process (see `simcost.workload.arrivals`), picked by the `process` key; each takes
# only its own keys.
ArrivalSpec = (PoissonArrivals | RenewalArrivals | MmppArrivals | PiecewiseArrivals | SinusoidalArrivals
               | ServegenArrivals)


def check_rate_rows(table, where_row, where_table: str) -> None:
    """Checks of a piecewise table [[start_s, rate_per_s], ...]; `where_row(i)` names row i
    (a key path inline, `file:line` for rate_file)."""
    if not table:
        raise InputError(where_table, "empty; expected rows [start_s, rate_per_s] starting at 0")
    for i, row in enumerate(table):
        if len(row) != 2:
            raise InputError(where_row(i), f"{list(row)} has {len(row)} numbers; expected [start_s, rate_per_s]")
        if row[1] < 0:
            raise InputError(where_row(i), f"rate {row[1]} is negative; expected >= 0")
        if i == 0 and row[0] != 0:
            raise InputError(where_row(0), f"starts at {row[0]} s; the first row must start at 0")
        if i and row[0] <= table[i - 1][0]:
            raise InputError(where_row(i), f"start {row[0]} s is not after the previous row's {table[i - 1][0]} s")
    if max(row[1] for row in table) == 0:
        raise InputError(where_table, "every rate is 0; at least one must be > 0")


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
    cut at duration_s, then sample_fraction (each request kept with that probability, seeded)."""

    name: str
    rate_multiplier: float = field(default=1.0, metadata=bounds(gt=0))
    columns: TraceColumns | None = None
    start_s: float = field(default=0.0, metadata=bounds(ge=0))
    end_s: float | None = field(default=None, metadata=bounds(gt=0))
    sample_fraction: float = field(default=1.0, metadata=bounds(gt=0, le=1))
    loop: bool = False

    def _check(self, path: str) -> None:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise InputError(f"{path}.end_s", f"{self.end_s} is not after start_s={self.start_s}")


@dataclass(frozen=True, kw_only=True)
class DelaySpec:
    """A duration distribution in seconds (think times): fixed value_s, uniform [low_s, high_s],
    exponential with mean_s, or lognormal with mean_s and sigma (sd of ln x). Continuous, >= 0."""

    dist: Literal["fixed", "uniform", "exponential", "lognormal"]
    value_s: float | None = field(default=None, metadata=bounds(ge=0))
    low_s: float | None = field(default=None, metadata=bounds(ge=0))
    high_s: float | None = field(default=None, metadata=bounds(ge=0))
    mean_s: float | None = field(default=None, metadata=bounds(gt=0))
    sigma: float | None = field(default=None, metadata=bounds(gt=0))

    _NEEDS = {"fixed": ("value_s",), "uniform": ("low_s", "high_s"), "exponential": ("mean_s",),
              "lognormal": ("mean_s", "sigma")}

    def _check(self, path: str) -> None:
        check_variant_keys(self, path, "dist", "dist", self._NEEDS)
        if self.dist == "uniform" and self.low_s > self.high_s:
            raise InputError(f"{path}.low_s", f"{self.low_s} is above high_s={self.high_s}; expected low_s <= high_s")


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
        if self.turns.dist == "empirical":
            raise InputError(f"{path}.turns.dist", "empirical resamples token lengths; give turns as fixed, uniform, lognormal or exponential")


@dataclass(frozen=True, kw_only=True)
class ClientsSpec:
    """Closed loop: `users` users, each sending a request (or running a session), waiting for its
    answer (or a rejection), thinking for `think_time` and sending the next, until duration_s.
    Each user's first request comes one think time after t=0, so users do not start in lockstep."""

    users: int = field(metadata=bounds(ge=1))
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
    prompt_tokens_per_item: int = field(default=0, metadata=bounds(ge=0))

    def _check(self, path: str) -> None:
        if self.per_request.dist == "empirical":
            raise InputError(f"{path}.per_request.dist", "empirical resamples token lengths; give items per request as fixed, uniform, lognormal or exponential")


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
        for i, tag in enumerate(self.tags):
            key, sep, value = tag.partition("=")
            if not (sep and key.strip() and value.strip()):
                raise InputError(f"{path}.tags[{i}]", f"{tag!r}; expected key=value, e.g. team=search")
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

    def entries(self) -> tuple[WorkloadConfig, ...]:
        """The workloads this one stands for: the mix entries, or itself."""
        return self.mix if self.mix is not None else (self,)

    def entry_name(self, index: int) -> str:
        entry = self.entries()[index]
        return entry.name or (f"w{index}" if self.mix is not None else "default")


# --- deployment -----------------------------------------------------------------------------

WeightFormat = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str
    weight_format: WeightFormat | None = None  # None: the catalog's native format
    kv_cache_format: Literal["fp32", "bf16", "fp16", "fp8", "int8"] | None = None  # None: bf16


@dataclass(frozen=True, kw_only=True)
class HardwareConfig:
    device: str
    tensor_parallel: int = field(default=1, metadata=bounds(ge=1))
    # stages of tensor_parallel devices each; a replica spans tensor_parallel * pipeline_parallel devices
    pipeline_parallel: int = field(default=1, metadata=bounds(ge=1))
    memory_utilization: float = field(default=0.9, metadata=bounds(gt=0, le=1))
    devices_per_node: int | None = field(default=None, metadata=bounds(ge=1))  # None: catalog, else 8 GPUs/TPUs, 2 CPUs, 1 edge
    pipeline_link_gb_per_s: float | None = field(default=None, metadata=bounds(gt=0))  # None: the device's scale-up link


@dataclass(frozen=True, kw_only=True)
class PerfConfig:
    """Step-time model. `roofline` (DESIGN.md section 4) takes its efficiency factors from the
    device catalog unless overridden here; `constant` is for tests and theory checks:
    prefill step = step_overhead_s + prefill_s_per_token * tokens, decode step = decode_step_s;
    `table` interpolates the measured step times of `table` (simcost.perf.step_table)."""

    model: Literal["roofline", "constant", "table"] = "roofline"
    mfu: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    mbu: float | None = field(default=None, metadata=bounds(gt=0, le=1))
    step_overhead_s: float | None = field(default=None, metadata=bounds(ge=0))
    prefill_overhead_s: float | None = field(default=None, metadata=bounds(ge=0))  # roofline: extra per step with prefill
    prefill_request_s: float | None = field(default=None, metadata=bounds(ge=0))  # roofline: extra per request prefilled in a step
    attention_efficiency: float | None = field(default=None, metadata=bounds(gt=0, le=1))  # roofline: attention rate / GEMM rate
    prefill_s_per_token: float = field(default=0.0, metadata=bounds(ge=0))
    decode_step_s: float = field(default=0.0, metadata=bounds(ge=0))
    # A calibrated profile written by `simcost calibrate` (a path, relative to the scenario file):
    # its fitted factors replace the device catalog's; mfu/mbu/step_overhead_s set here still win.
    profile: str | None = None
    # model "table": measured step times (a CSV in a layout `simcost calibrate` reads), interpolated
    table: str | None = None

    def _check(self, path: str) -> None:
        if (self.model == "table") != (self.table is not None):
            raise InputError(f"{path}.table", "missing; model 'table' needs a measurements CSV" if self.table is None
                             else f"given with model '{self.model}'; set model: table")
        if self.model == "constant" and self.prefill_s_per_token == 0 and (self.step_overhead_s or 0) == 0:
            raise InputError(f"{path}.prefill_s_per_token", "0 with no step_overhead_s; a constant model needs a positive prefill time")
        if self.model == "roofline" and (self.prefill_s_per_token or self.decode_step_s):
            raise InputError(f"{path}.model", "roofline does not take prefill_s_per_token/decode_step_s; use model: constant")


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Batching, scheduling and KV-cache knobs (names and defaults as vLLM's where vLLM has them).

    Iteration-level policies (simcost.engine.replica), a new batch at every step:
      prefill_first: vLLM v0 without chunked prefill (whole prompts, prefill steps before decodes);
      chunked: vLLM v1 / Sarathi-Serve (running decodes first, prompts in chunks sharing the budget).
    Request-level policies (simcost.engine.request_level), a batch runs until its longest request ends:
      one_at_a_time: batches of one request;
      static: batches of max_num_seqs, waiting up to batch_timeout_s for the batch to fill;
      dynamic: NVIDIA Triton's dynamic batcher: a batch leaves as soon as it reaches the largest
        preferred_batch_sizes entry the queue allows, or when its oldest request has waited
        max_queue_delay_s (then as large as the queue allows, up to max_num_seqs).
    `queue` orders waiting requests for the iteration-level policies: fcfs; priority (the
    workload's priority, lower first, then arrival); sjf (shortest predicted output first:
    an oracle when sjf_prediction_sigma is 0, else the true length times a lognormal error)."""

    policy: Literal["prefill_first", "chunked", "one_at_a_time", "static", "dynamic"] = "prefill_first"
    max_num_seqs: int = field(default=256, metadata=bounds(ge=1))
    # None: max(max_model_len, 2048) for prefill_first, 2048 for chunked
    max_num_batched_tokens: int | None = field(default=None, metadata=bounds(ge=1))
    block_size: int = field(default=16, metadata=bounds(ge=1))
    max_model_len: int | None = field(default=None, metadata=bounds(ge=1))  # None: the model's context length
    kv_watermark: float = field(default=0.01, metadata=bounds(ge=0, le=0.5))
    max_waiting: int | None = field(default=None, metadata=bounds(ge=0))  # None: unbounded queue
    num_kv_blocks: int | None = field(default=None, metadata=bounds(ge=1))  # None: from memory (vLLM's num_gpu_blocks_override)
    queue: Literal["fcfs", "priority", "sjf"] = "fcfs"
    sjf_prediction_sigma: float = field(default=0.0, metadata=bounds(ge=0))  # sd of ln(predicted / true)
    batch_timeout_s: float = field(default=0.0, metadata=bounds(ge=0))  # static
    preferred_batch_sizes: tuple[int, ...] | None = None  # dynamic; None: max_num_seqs only
    max_queue_delay_s: float = field(default=0.0, metadata=bounds(ge=0))  # dynamic
    # KV cache
    preemption: Literal["recompute", "swap"] = "recompute"  # swap: KV to host memory and back over host_link
    swap_space_gb: float = field(default=4.0, metadata=bounds(ge=0))  # host memory for swapped KV per device (vLLM's swap_space, GiB)
    prefix_caching: bool = False  # vLLM's enable_prefix_caching (automatic, content-hashed full blocks)
    host_cache_blocks: int = field(default=0, metadata=bounds(ge=0))  # host-memory tier for evicted prefix blocks
    host_link_gb_per_s: float | None = field(default=None, metadata=bounds(gt=0))  # None: the device's PCIe link

    _ITERATION = ("prefill_first", "chunked")

    def _check(self, path: str) -> None:
        if self.policy not in self._ITERATION:
            for key, default in (("queue", "fcfs"), ("preemption", "recompute"), ("prefix_caching", False)):
                if getattr(self, key) != default:
                    raise InputError(f"{path}.{key}", f"{getattr(self, key)!r} needs an iteration-level policy "
                                     f"(prefill_first or chunked); {self.policy} runs each batch to completion")
        if self.preferred_batch_sizes is not None:
            if self.policy != "dynamic":
                raise InputError(f"{path}.preferred_batch_sizes", f"only used by policy dynamic, not {self.policy}")
            bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_num_seqs]
            if bad or not self.preferred_batch_sizes:
                raise InputError(f"{path}.preferred_batch_sizes", f"{list(self.preferred_batch_sizes)}: expected sizes "
                                 f"between 1 and max_num_seqs={self.max_num_seqs}")
        if self.prefix_caching and self.preemption == "swap":
            raise InputError(f"{path}.preemption", "swap with prefix_caching is not modelled (vLLM v1 recomputes); use recompute")
        if self.host_cache_blocks and not self.prefix_caching:
            raise InputError(f"{path}.host_cache_blocks", "a host tier for prefix blocks needs prefix_caching: true")


@dataclass(frozen=True, kw_only=True)
class PricingConfig:
    """How the fleet is paid for (math in `simcost.cost.pricing`, DESIGN.md section 4). The on-demand
    rate is fleet.price_usd_per_device_hour (or the catalog's); each model takes only its keys:
    on_demand: min_charge_s. spot: spot_usd_per_device_hour, min_charge_s.
    reserved: upfront_usd_per_device, recurring_usd_per_device_hour, term_years.
    savings_plan: commitment_usd_per_hour (whole fleet), discount.
    owned: capex_usd_per_device, usd_per_kwh, lifetime_years."""

    model: Literal["on_demand", "reserved", "savings_plan", "spot", "owned"] = "on_demand"
    min_charge_s: float | None = field(default=None, metadata=bounds(ge=0))  # None: 60 s (AWS, GCP)
    spot_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))
    upfront_usd_per_device: float | None = field(default=None, metadata=bounds(ge=0))
    recurring_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))
    term_years: float | None = field(default=None, metadata=bounds(gt=0))
    commitment_usd_per_hour: float | None = field(default=None, metadata=bounds(ge=0))
    discount: float | None = field(default=None, metadata=bounds(ge=0, le=0.99))
    capex_usd_per_device: float | None = field(default=None, metadata=bounds(ge=0))
    usd_per_kwh: float | None = field(default=None, metadata=bounds(ge=0))
    lifetime_years: float | None = field(default=None, metadata=bounds(gt=0))  # owned; None: 5

    _NEEDS = {"on_demand": (), "spot": ("spot_usd_per_device_hour",),
              "reserved": ("upfront_usd_per_device", "recurring_usd_per_device_hour", "term_years"),
              "savings_plan": ("commitment_usd_per_hour", "discount"),
              "owned": ("capex_usd_per_device", "usd_per_kwh")}
    _OPTIONAL = {"on_demand": ("min_charge_s",), "spot": ("min_charge_s",), "owned": ("lifetime_years",)}

    def _check(self, path: str) -> None:
        check_variant_keys(self, path, "model", "pricing model", self._NEEDS, self._OPTIONAL)


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """Where the fleet runs. PUE default 1.2: an assumption for a modern cloud data centre (large
    operators report about 1.1-1.2; the industry-wide average is higher, about 1.5). Grid intensity
    default 400 gCO2/kWh: an assumption near the world-average grid; set your region's figure.
    provider (aws, gcp, coreweave, purchase, ...: a provider of configs/prices.yaml): the on-demand
    price per device is that provider's offer for the device in `region` (a provider-wide "any"
    offer matches every region); None: the device catalog's price.

    Sites of a fleet of pools (fleet.sites) also carry: `name` (what a pool's `site` names),
    `edge` (edge_first sends work here first), `client_rtt_s` (the network round trip between the
    site and its clients, added once to the TTFT and E2EL its clients see: summary `network`) and
    `egress_usd_per_gb` (the price of bytes leaving the site; None: 0.09 $/GB, AWS internet egress
    in its first 10 TB tier, DESIGN.md section 4, for a site of fleet.sites, and 0 for the one-site
    shorthand fleet.site, whose bills predate egress)."""

    name: str = "default"
    region: str = "us-east-1"
    provider: str | None = None
    pue: float = field(default=1.2, metadata=bounds(ge=1))
    grid_gco2_per_kwh: float = field(default=400.0, metadata=bounds(ge=0))
    edge: bool = False
    client_rtt_s: float = field(default=0.0, metadata=bounds(ge=0))
    egress_usd_per_gb: float | None = field(default=None, metadata=bounds(ge=0))


DEFAULT_EGRESS_USD_PER_GB = 0.09  # AWS data transfer out to the internet, first 10 TB/month tier (DESIGN.md s4)


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """One pool of a fleet (fleet.pools): `replicas` replicas of `model` (default: the scenario's)
    on `hardware`, with `engine` keys merged over the scenario's engine section, priced by its own
    `pricing` (default: fleet.pricing; a savings-plan commitment is then this pool's), at its own
    `price_usd_per_device_hour` (default: the catalog's at its site's provider and region), at
    `site` (a name of fleet.sites; default: fleet.site), serving the workloads named in `serves`
    (mix entry names; default: all). `autoscaler`, `spot`, `failures` and `cold_start` move this
    pool alone (simcost.cluster.control runs one control loop per pool)."""

    name: str
    hardware: HardwareConfig
    model: ModelConfig | None = None
    engine: EngineConfig | None = None  # the scenario's engine section with this pool's keys over it
    replicas: int = field(default=1, metadata=bounds(ge=1))
    price_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))
    pricing: PricingConfig | None = None
    site: str | None = None
    serves: tuple[str, ...] | None = None
    cold_start: ColdStartConfig | None = None  # None: fleet.cold_start
    warm_pool: WarmPoolConfig | None = None  # None: fleet.warm_pool
    autoscaler: AutoscalerConfig | None = None
    spot: SpotConfig | None = None
    failures: FailureConfig | None = None

    def _check(self, path: str) -> None:
        pricing = self.pricing
        moving = [key for key in ("autoscaler", "spot", "failures") if getattr(self, key) is not None]
        if moving and pricing is not None and pricing.model in ("reserved", "owned"):
            raise InputError(f"{path}.{moving[0]}", f"a pool that changes size cannot be priced as {pricing.model} "
                             "capacity (paid for whether used or not); use on_demand, spot or savings_plan")
        if self.serves is not None and not self.serves:
            raise InputError(f"{path}.serves", "empty; list workload names, or leave serves out for all of them")


@dataclass(frozen=True, kw_only=True)
class ColdStartConfig:
    """Node lifecycle at the start of a run (simcost.lifecycle): every replica is requested at
    t = 0, provisioned, then loads (image pull + weight load + engine start) before it serves;
    both phases are billed and reported as their own cost categories. Every default is a simcost
    assumption (DESIGN.md: "GPU nodes often take minutes"; published cold starts run from tens
    of seconds for 7B models to minutes for 70B): set your platform's figures."""

    provisioning_s: float = field(default=90.0, metadata=bounds(ge=0))  # VM boot and node join
    image_gb: float = field(default=10.0, metadata=bounds(ge=0))  # a CUDA + vLLM serving image
    registry_gb_per_s: float = field(default=0.5, metadata=bounds(gt=0))  # image pull bandwidth
    weights_gb_per_s: float = field(default=2.0, metadata=bounds(gt=0))  # min(network, disk) to the node
    engine_start_s: float = field(default=30.0, metadata=bounds(ge=0))  # KV allocation, CUDA graph capture


# EBS gp3 in us-east-1: $0.08 per GB-month (aws.amazon.com/ebs/pricing, checked 2026-11) for a
# 100 GB volume holding the image and weights, over 730 hours a month: what a stopped node costs
STOPPED_NODE_USD_PER_HOUR = 100 * 0.08 / 730


WARM_POOL_STATIC = ("needs a fleet that moves (an autoscaler, spot capacity or failures): a static fleet never "
                    "takes a warm node")


@dataclass(frozen=True, kw_only=True)
class WarmPoolConfig:
    """Nodes kept prepared beside a fleet that moves (simcost.cluster.control), as an EC2 Auto
    Scaling warm pool (its MinSize) or Kubernetes over-provisioning. A replica added on demand
    while a warm node is in the pool takes it and skips part of its cold start (simcost.lifecycle
    `warm_start`): `stopped` (EBS keeps the image and weights on disk) skips provisioning and the
    image pull; `running` (image pulled, weights staged in host memory) also skips the weights'
    network or disk read, leaving their copy over the host link and the engine start. The slot is
    refilled at once: a new node provisions for cold_start.provisioning_s and then joins the pool.
    Warm nodes are on-demand capacity; their time in the pool is its own cost category
    (`warm_pool`): running at the on-demand price, stopped at `stopped_usd_per_hour` a node (default
    STOPPED_NODE_USD_PER_HOUR, an assumption: 100 GB of gp3)."""

    size: int = field(default=1, metadata=bounds(ge=0))
    state: Literal["stopped", "running"] = "stopped"
    stopped_usd_per_hour: float = field(default=STOPPED_NODE_USD_PER_HOUR, metadata=bounds(ge=0))


@dataclass(frozen=True, kw_only=True)
class DisaggregationConfig:
    """Prefill and decode on separate replicas (Splitwise, DistServe): requests enter a prefill
    replica, which emits the first token; the prompt's KV then moves to a decode replica over
    the KV link (each tensor-parallel device sends its shard over its own link), and the decode
    replica generates the rest. kv_link_gb_per_s default 50: one InfiniBand NDR 400 Gb/s port per
    GPU, as in a DGX H100 (an assumption; set 450 for NVLink within a node). When the pools'
    tensor parallelism differs, min(tp) links carry the KV in parallel."""

    prefill_replicas: int = field(metadata=bounds(ge=1))
    decode_replicas: int = field(metadata=bounds(ge=1))
    kv_link_gb_per_s: float = field(default=50.0, metadata=bounds(gt=0))
    # the decode pool's devices (Splitwise: prompts on H100, tokens on A100); None: the scenario's
    # hardware. Pools of different devices are priced on demand from the catalog.
    decode_hardware: HardwareConfig | None = None


@dataclass(frozen=True, kw_only=True)
class ScheduleEntry:
    """From at_s seconds into each period on, keep `replicas` replicas (autoscaler policy schedule)."""

    at_s: float = field(metadata=bounds(ge=0))
    replicas: int = field(metadata=bounds(ge=0))


ScalingMetric = Literal["concurrency", "queue_depth", "kv_cache", "utilization", "ttft_p95"]
POLICY = "autoscaler policy"  # how errors name the `policy` key


def _default_of(cls, name: str):
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _check_replica_bounds(cfg, path: str) -> None:
    if cfg.min_replicas > cfg.max_replicas:
        default = (" (the policy's default; give max_replicas)"
                   if cfg.max_replicas == _default_of(type(cfg), "max_replicas") else "")
        raise InputError(f"{path}.min_replicas", f"{cfg.min_replicas} is above max_replicas {cfg.max_replicas}{default}")
    if cfg.sample_s > cfg.tick_s:
        raise InputError(f"{path}.sample_s", f"{cfg.sample_s} is longer than tick_s {cfg.tick_s}; "
                                             "the metric must be sampled at least once per decision")


# Defaults are the systems' own as they ship (checked 2026-11 against kubernetes.io HPA docs,
# knative.dev "Configuring the autoscaler" / config-autoscaler, keda.sh ScaledObject spec);
# max_replicas, which an HPA must be given, is simcost's cap.

@dataclass(frozen=True, kw_only=True)
class _HpaKeys:
    """The HPA's algorithm and its default behavior (autoscaling/v2 "Default Behavior"), shared by
    hpa, predictive and keda. metric: what is measured, summed over ready replicas (concurrency =
    requests in the system, queue_depth = waiting requests, kv_cache = KV blocks in use / blocks,
    utilization = busy share of the last sample interval) or fleet-wide (ttft_p95, seconds, over
    the last window). target: per replica for the summed metrics, the value itself for ttft_p95."""

    policy: str = field(metadata=tag(POLICY))  # each policy narrows it to its own name
    target: float = field(metadata=bounds(gt=0))
    metric: ScalingMetric = "concurrency"
    min_replicas: int = field(default=1, metadata=bounds(ge=0))  # HPA minReplicas
    max_replicas: int = field(default=10, metadata=bounds(ge=1))
    tick_s: float = field(default=15.0, metadata=bounds(gt=0))  # --horizontal-pod-autoscaler-sync-period
    sample_s: float = field(default=1.0, metadata=bounds(gt=0))  # observe() every sample_s
    tolerance: float = field(default=0.1, metadata=bounds(ge=0, le=1))  # --horizontal-pod-autoscaler-tolerance
    scale_up_stabilization_s: float = field(default=0.0, metadata=bounds(ge=0))
    scale_down_stabilization_s: float = field(default=300.0, metadata=bounds(ge=0))
    scale_up_max_pods: int = field(default=4, metadata=bounds(ge=1))  # per policy period
    scale_up_max_percent: float = field(default=100.0, metadata=bounds(gt=0))  # per policy period
    scale_down_max_percent: float = field(default=100.0, metadata=bounds(gt=0, le=100))
    policy_period_s: float = field(default=15.0, metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        _check_replica_bounds(self, path)


@dataclass(frozen=True, kw_only=True)
class HpaAutoscaler(_HpaKeys):
    """Kubernetes HPA v2 on a Pods metric."""

    policy: Literal["hpa"] = field(default="hpa", metadata=tag(POLICY))

    def _check(self, path: str) -> None:
        if self.min_replicas == 0:
            raise InputError(f"{path}.min_replicas", "0: the HPA cannot scale to zero; use policy kpa or keda")
        super()._check(path)


@dataclass(frozen=True, kw_only=True)
class PredictiveAutoscaler(_HpaKeys):
    """An HPA that also provisions ahead of a forecast of the metric."""

    policy: Literal["predictive"] = field(default="predictive", metadata=tag(POLICY))

    def _check(self, path: str) -> None:
        if self.metric == "ttft_p95":
            raise InputError(f"{path}.metric", "ttft_p95 does not scale with load per replica, so a forecast "
                                               "cannot size the fleet; use concurrency, queue_depth, kv_cache or utilization")
        if self.min_replicas == 0:
            raise InputError(f"{path}.min_replicas", "0: the HPA cannot scale to zero; use policy kpa or keda")
        super()._check(path)


@dataclass(frozen=True, kw_only=True)
class KedaAutoscaler(_HpaKeys):
    """KEDA: an HPA on an external metric driving 1..N (tick_s is that HPA's sync period), plus
    activation and scale to zero by polling."""

    policy: Literal["keda"] = field(default="keda", metadata=tag(POLICY))
    min_replicas: int = field(default=0, metadata=bounds(ge=0))  # minReplicaCount
    max_replicas: int = field(default=100, metadata=bounds(ge=1))  # maxReplicaCount
    polling_s: float = field(default=30.0, metadata=bounds(gt=0))
    cooldown_s: float = field(default=300.0, metadata=bounds(ge=0))
    initial_cooldown_s: float = field(default=0.0, metadata=bounds(ge=0))
    activation_threshold: float = field(default=0.0, metadata=bounds(ge=0))


@dataclass(frozen=True, kw_only=True)
class KpaAutoscaler:
    """Knative's KPA on concurrency. The per-replica target is `target` when given, else
    container_concurrency x target_utilization (100 x 0.7 = 70)."""

    policy: Literal["kpa"] = field(default="kpa", metadata=tag(POLICY))
    metric: ScalingMetric = "concurrency"  # only concurrency; other values are refused with a reason
    target: float | None = field(default=None, metadata=bounds(gt=0))
    container_concurrency: float | None = field(default=None, metadata=bounds(gt=0))  # None: 100
    target_utilization: float | None = field(default=None, metadata=bounds(gt=0, le=1))  # None: 0.7
    min_replicas: int = field(default=0, metadata=bounds(ge=0))  # min-scale
    max_replicas: int = field(default=10, metadata=bounds(ge=1))
    tick_s: float = field(default=2.0, metadata=bounds(gt=0))  # tick-interval
    sample_s: float = field(default=1.0, metadata=bounds(gt=0))  # the queue-proxy stats are scraped every second
    stable_window_s: float = field(default=60.0, metadata=bounds(gt=0))
    panic_window_fraction: float = field(default=0.1, metadata=bounds(gt=0, le=1))  # panic-window-percentage 10
    panic_threshold: float = field(default=2.0, metadata=bounds(gt=1))  # panic desired / ready; 200 %
    max_scale_up_rate: float = field(default=1000.0, metadata=bounds(gt=1))
    max_scale_down_rate: float = field(default=2.0, metadata=bounds(gt=1))
    scale_to_zero_grace_s: float = field(default=30.0, metadata=bounds(ge=0))

    # container-concurrency-target-default and -percentage, used when target is not given; left
    # as None fields so that a given target can be told apart from the two factors
    DEFAULT_CONTAINER_CONCURRENCY = 100.0
    DEFAULT_TARGET_UTILIZATION = 0.7

    @property
    def target_per_replica(self) -> float:
        if self.target is not None:
            return self.target
        concurrency = self.container_concurrency or self.DEFAULT_CONTAINER_CONCURRENCY
        return concurrency * (self.target_utilization or self.DEFAULT_TARGET_UTILIZATION)

    def _check(self, path: str) -> None:
        if self.metric != "concurrency":
            raise InputError(f"{path}.metric", f"'{self.metric}' is not used by policy kpa, which scales on concurrency")
        if self.target is not None and (self.container_concurrency is not None or self.target_utilization is not None):
            raise InputError(f"{path}.target", "give target (per replica) or container_concurrency and "
                                               "target_utilization (target = their product), not both")
        _check_replica_bounds(self, path)
        panic_window_s = self.stable_window_s * self.panic_window_fraction
        if self.sample_s > panic_window_s:
            raise InputError(f"{path}.sample_s", f"{self.sample_s} is longer than the panic window ({panic_window_s:g} s)")


@dataclass(frozen=True, kw_only=True)
class ScheduleAutoscaler:
    """Replicas by time of day: from each entry's at_s into every period_s on, its replicas."""

    policy: Literal["schedule"] = field(default="schedule", metadata=tag(POLICY))
    schedule: tuple[ScheduleEntry, ...]  # by increasing at_s < period_s
    period_s: float = field(default=86400.0, metadata=bounds(gt=0))
    tick_s: float = field(default=60.0, metadata=bounds(gt=0))  # cron's one-minute granularity

    # the control loop's view: no metric, bounds from the schedule itself
    metric = None
    min_replicas = 0

    @property
    def max_replicas(self) -> int:
        return max([1, *(e.replicas for e in self.schedule)])

    @property
    def sample_s(self) -> float:
        return self.tick_s

    def _check(self, path: str) -> None:
        if not self.schedule:
            raise InputError(f"{path}.schedule", "empty; give at least one {at_s, replicas} entry")
        for i, entry in enumerate(self.schedule):
            if entry.at_s >= self.period_s:
                raise InputError(f"{path}.schedule[{i}].at_s", f"{entry.at_s} is not within the period ({self.period_s:g} s)")
            if i and entry.at_s <= self.schedule[i - 1].at_s:
                raise InputError(f"{path}.schedule[{i}].at_s", f"{entry.at_s}; entries must come in increasing at_s")


# How the fleet's replica count follows load (simcost.cluster.autoscalers), picked by `policy`;
# each policy takes only its own keys, and a key left out takes the real system's default.
AutoscalerConfig = (HpaAutoscaler | PredictiveAutoscaler | KedaAutoscaler | KpaAutoscaler
                    | ScheduleAutoscaler)


@dataclass(frozen=True, kw_only=True)
class SpotConfig:
    """Spot capacity (simcost.cluster.control; DESIGN.md section 4). A share of the replicas runs on
    spot at a lower price and can be reclaimed: each spot replica gets a notice at a Poisson
    hazard of -ln(1 - monthly_interruption) / 730 per hour (AWS publishes bands: <5 %, 5-10,
    10-15, 15-20, >20 % a month; default 0.075, the 5-10 % band's middle), stops taking work,
    and is gone notice_s later (AWS 120 s; GCP and Azure 30 s), its unfinished requests retried
    elsewhere. A replacement is requested at the notice, on `replace_with` capacity."""

    share: float = field(default=1.0, metadata=bounds(ge=0, le=1))  # of the replicas, rounded to whole ones
    usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))  # None: pricing.spot_usd_per_device_hour
    monthly_interruption: float = field(default=0.075, metadata=bounds(ge=0, le=0.99))
    notice_s: float = field(default=120.0, metadata=bounds(ge=0))
    replace_with: Literal["spot", "on_demand"] = "spot"


@dataclass(frozen=True, kw_only=True)
class OutageSpec:
    """Every replica of the site lost at at_s; none can start before at_s + duration_s."""

    at_s: float = field(metadata=bounds(ge=0))
    duration_s: float = field(metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class FailureConfig:
    """Node failures (simcost.cluster.control): each replica fails after an exponential time with
    mean mtbf_h hours of service; its requests are retried elsewhere at once, and a replacement is
    requested that serves mttr_s after the failure (detection, a new node, its cold start).
    Whole-site outages are listed explicitly."""

    mtbf_h: float | None = field(default=None, metadata=bounds(gt=0))  # None: no node failures
    mttr_s: float = field(default=600.0, metadata=bounds(ge=0))
    outages: tuple[OutageSpec, ...] = ()


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    replicas: int = field(default=1, metadata=bounds(ge=1))
    router: Literal["round_robin", "random", "join_shortest_queue", "power_of_two", "least_outstanding_tokens",
                    "prefix_affinity", "shared_queue"] = "round_robin"
    # prefix_affinity's c: a replica takes a request only if it then holds at most ceil(c L / n + 1)
    # requests, L the outstanding requests of its n-replica pool before it (simcost.cluster.routers)
    affinity_load_bound: float = field(default=1.25, metadata=bounds(ge=1))
    price_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))  # None: catalog on-demand
    pricing: PricingConfig = PricingConfig()
    site: SiteConfig = SiteConfig()
    # prefill and decode pools (replaces replicas: the fleet has prefill + decode replicas)
    disaggregation: DisaggregationConfig | None = None
    # None: replicas serve from t = 0 (warm); else they provision and load first (simcost.lifecycle)
    cold_start: ColdStartConfig | None = None
    # None: no warm pool; else nodes kept prepared beside a fleet that moves (WarmPoolConfig)
    warm_pool: WarmPoolConfig | None = None
    # None: a static fleet of `replicas`; else the replica count follows load (simcost.cluster.autoscalers),
    # starting from `replicas`
    autoscaler: AutoscalerConfig | None = None
    spot: SpotConfig | None = None  # a share of the replicas on spot capacity, with reclaims
    failures: FailureConfig | None = None  # node failures and site outages
    redundancy: int = field(default=0, metadata=bounds(ge=0))  # N+k: k replicas beyond replicas or the autoscaler's count
    # A fleet of several pools (replaces hardware/replicas as the fleet's shape; see PoolConfig),
    # the sites they run at, and how a request's pool is chosen (simcost.cluster.routers.POOL_ROUTERS)
    pools: tuple[PoolConfig, ...] | None = None
    sites: tuple[SiteConfig, ...] = ()
    pool_router: Literal["fastest", "cost_aware", "edge_first"] = "fastest"
    # edge_first: an edge pool takes a request while its outstanding requests stay below this many
    # per ready replica (None: engine max_num_seqs, its batch capacity)
    edge_max_outstanding_per_replica: int | None = field(default=None, metadata=bounds(ge=1))
    # bytes a token takes on the wire: ~4 for English UTF-8 text with Llama-3's tokenizer (an
    # assumption: its 128k vocabulary averages about 4 characters per token on English prose)
    bytes_per_token: float = field(default=4.0, metadata=bounds(gt=0))

    @property
    def moves(self) -> bool:
        """Replicas come and go during the run (simcost.cluster.control)."""
        if self.pools is not None:
            return any(self.pool_fleet(k).moves for k in range(len(self.pools)))
        return bool(self.autoscaler or self.spot or self.failures or self.pricing.model == "spot")

    def pool_fleet(self, k: int) -> "FleetConfig":
        """Pool k of fleet.pools as a one-pool fleet section (what its control loop and its bill
        read); the fleet's own section without pools."""
        if self.pools is None:
            return self
        p = self.pools[k]
        return FleetConfig(replicas=p.replicas, router=self.router, affinity_load_bound=self.affinity_load_bound,
                           price_usd_per_device_hour=p.price_usd_per_device_hour,
                           pricing=p.pricing or self.pricing, site=self.site_of(k),
                           cold_start=p.cold_start or self.cold_start, warm_pool=p.warm_pool or self.warm_pool,
                           autoscaler=p.autoscaler, spot=p.spot,
                           failures=p.failures)

    def site_of(self, k: int) -> SiteConfig:
        """Pool k's site (fleet.site when it names none, or without pools)."""
        name = self.pools[k].site if self.pools is not None else None
        return self.site if name is None else next(s for s in self.sites if s.name == name)

    def _check(self, path: str) -> None:
        if self.pools is not None:
            self._check_pools(path)
            return
        if self.sites:
            raise InputError(f"{path}.sites", "needs fleet.pools (each pool names its site); use fleet.site for one site")
        if self.warm_pool is not None and not self.moves:
            raise InputError(f"{path}.warm_pool", WARM_POOL_STATIC)
        self._check_moving(path)
        if self.disaggregation is None:
            return
        if self.replicas != 1:
            raise InputError(f"{path}.replicas", "not used with disaggregation; give prefill_replicas and decode_replicas")
        if self.router == "shared_queue":
            raise InputError(f"{path}.router", "shared_queue is not available with disaggregation; choose another router")
        if self.disaggregation.decode_hardware is not None:
            if self.pricing.model != "on_demand":
                raise InputError(f"{path}.pricing.model", f"{self.pricing.model} for pools of different devices is not "
                                 "modelled yet; use on_demand, or leave out disaggregation.decode_hardware")
            if self.price_usd_per_device_hour is not None:
                raise InputError(f"{path}.price_usd_per_device_hour", "one price cannot cover two device types; "
                                 "leave it out to use each device's catalog price")

    def _check_moving(self, path: str) -> None:
        moving = [key for key in ("autoscaler", "spot", "failures") if getattr(self, key) is not None]
        if not moving and not self.redundancy:
            return
        key = f"{path}.{moving[0] if moving else 'redundancy'}"
        if self.disaggregation is not None:
            raise InputError(key, "is not modelled with disaggregation yet; leave one of them out")
        if self.pricing.model in ("reserved", "owned"):
            raise InputError(key, f"a fleet that changes size cannot be priced as {self.pricing.model} capacity "
                             "(paid for whether used or not); use on_demand, spot or savings_plan")
        if self.spot is not None and self.spot.usd_per_device_hour is None and self.pricing.spot_usd_per_device_hour is None:
            raise InputError(f"{path}.spot.usd_per_device_hour", "missing; give the spot price per device-hour")

    def _check_pools(self, path: str) -> None:
        for key, value, default in (("disaggregation", self.disaggregation, None), ("redundancy", self.redundancy, 0),
                                    ("autoscaler", self.autoscaler, None), ("spot", self.spot, None),
                                    ("failures", self.failures, None), ("replicas", self.replicas, 1),
                                    ("price_usd_per_device_hour", self.price_usd_per_device_hour, None)):
            if value != default:
                raise InputError(f"{path}.{key}", "not used with fleet.pools; give it inside each pool"
                                 if key != "disaggregation" and key != "redundancy"
                                 else "is not modelled with fleet.pools yet; leave one of them out")
        if self.router == "shared_queue":
            raise InputError(f"{path}.router", "shared_queue is not available with fleet.pools; choose another router")
        if not self.pools:
            raise InputError(f"{path}.pools", "empty; list at least one pool")
        site_names = [s.name for s in self.sites]
        for i, site in enumerate(self.sites):
            if site_names.index(site.name) != i:
                raise InputError(f"{path}.sites[{i}].name", f"'{site.name}' is used twice; sites need distinct names")
        names = [p.name for p in self.pools]
        for i, pool in enumerate(self.pools):
            if names.index(pool.name) != i:
                raise InputError(f"{path}.pools[{i}].name", f"'{pool.name}' is used twice; pools need distinct names")
            if pool.site is not None and pool.site not in site_names:
                raise InputError(f"{path}.pools[{i}].site", f"'{pool.site}' is not a site of fleet.sites "
                                 f"(known: {', '.join(site_names) or 'none'})")
            if pool.warm_pool is not None and not self.pool_fleet(i).moves:
                raise InputError(f"{path}.pools[{i}].warm_pool", WARM_POOL_STATIC)
            self.pool_fleet(i)._check_moving(f"{path}.pools[{i}]")

    @property
    def num_replicas(self) -> int:
        """All replicas paid for at the start: every pool's, the prefill and decode pools, or
        `replicas` (plus any redundancy)."""
        if self.pools is not None:
            return sum(p.replicas for p in self.pools)
        d = self.disaggregation
        return self.replicas + self.redundancy if d is None else d.prefill_replicas + d.decode_replicas


@dataclass(frozen=True, kw_only=True)
class SloConfig:
    ttft_s: float | None = field(default=None, metadata=bounds(gt=0))
    tpot_s: float | None = field(default=None, metadata=bounds(gt=0))
    e2el_s: float | None = field(default=None, metadata=bounds(gt=0))
    # a run meets its SLOs when at least this fraction of measured requests meets every limit
    # and no request was rejected
    attainment: float = field(default=0.99, metadata=bounds(gt=0, le=1))


@dataclass(frozen=True, kw_only=True)
class CostConfig:
    """How the bill is handed to requests (`simcost.cost.ledger`). Each record's cost (a prefill step or
    a span of decode steps) is split over its members: `tokens` in proportion to tokens x the
    weight of their kind (prompt or output), `equal` in equal shares; a record whose weights are
    all 0 is split equally, so no dollar is lost. Unallocated cost (idle time, minimum charges,
    unused commitment) stays its own line (`showback`) or is spread over requests in proportion
    to their allocated cost (`chargeback`)."""

    allocation: Literal["tokens", "equal"] = "tokens"
    prefill_weight: float = field(default=1.0, metadata=bounds(ge=0))
    decode_weight: float = field(default=1.0, metadata=bounds(ge=0))
    unallocated: Literal["showback", "chargeback"] = "showback"

    def _check(self, path: str) -> None:
        if self.allocation == "equal" and (self.prefill_weight, self.decode_weight) != (1.0, 1.0):
            raise InputError(f"{path}.allocation", "equal does not use prefill_weight/decode_weight; use allocation: tokens")


@dataclass(frozen=True, kw_only=True)
class Scenario:
    workload: WorkloadConfig
    model: ModelConfig
    hardware: HardwareConfig
    name: str = "scenario"
    seed: int = field(default=0, metadata=bounds(ge=0))
    duration_s: float | None = field(default=None, metadata=bounds(gt=0))  # arrivals in [0, duration_s)
    warmup_s: float = field(default=0.0, metadata=bounds(ge=0))
    drain_s: float | None = field(default=None, metadata=bounds(ge=0))  # None: run until every request ends
    perf: PerfConfig = PerfConfig()
    engine: EngineConfig = EngineConfig()
    fleet: FleetConfig = FleetConfig()
    slo: SloConfig = SloConfig()
    cost: CostConfig = CostConfig()

    def _check(self, path: str) -> None:
        if self.duration_s is None and any(entry.trace is None for entry in self.workload.entries()):
            raise InputError("duration_s", "missing; synthetic arrivals need a duration in seconds")
        if self.fleet.disaggregation is not None and self.engine.policy not in EngineConfig._ITERATION:
            raise InputError("fleet.disaggregation", f"needs an iteration-level engine.policy (prefill_first or chunked), not {self.engine.policy}")
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise InputError("warmup_s", f"{self.warmup_s} is not below duration_s={self.duration_s}")
        if self.fleet.pools is not None:
            self._check_serves()

    def _check_serves(self) -> None:
        """Every pool serves known workloads, and every workload has a pool."""
        names = [self.workload.entry_name(i) for i in range(len(self.workload.entries()))]
        for k, pool in enumerate(self.fleet.pools):
            for j, name in enumerate(pool.serves or ()):
                if name not in names:
                    raise InputError(f"fleet.pools[{k}].serves[{j}]", f"'{name}' is not a workload of this scenario "
                                     f"(known: {', '.join(names)})")
        for name in names:
            if not any(pool.serves is None or name in pool.serves for pool in self.fleet.pools):
                raise InputError("fleet.pools", f"no pool serves workload '{name}'; add it to a pool's serves")


# --- loading --------------------------------------------------------------------------------

def load_scenario(path: str | Path, overrides: tuple[str, ...] | list[str] = (), seed: int | None = None) -> Scenario:
    """Read a YAML scenario, apply `key.path=value` overrides and an optional seed, validate."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(str(path), f"cannot read scenario file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise InputError(str(path), f"expected a mapping of sections at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    _resolve_paths(raw, path.parent)
    return scenario_from_dict(raw, (), seed)


# keys whose value may be a file; relative paths in a scenario file mean relative to that file
FILE_KEYS = (("workload", "trace", "name"), ("workload", "input_tokens", "trace"),
             ("workload", "output_tokens", "trace"), ("workload", "arrivals", "rate_file"),
             ("workload", "arrivals", "servegen_file"), ("perf", "profile"))


def _resolve_paths(raw: dict, scenario_dir: Path) -> None:
    """Make relative file paths relative to the scenario's folder, when the file is there (bundled
    names such as azure_conv are never files there and stay as they are). Workload keys apply to
    each entry of a workload mix too."""
    workload = raw.get("workload")
    mix = workload.get("mix") if isinstance(workload, dict) else None
    entries = [entry for entry in mix if isinstance(entry, dict)] if isinstance(mix, list) else []
    for keys in FILE_KEYS:
        roots = [raw] + ([{"workload": entry} for entry in entries] if keys[0] == "workload" else [])
        for root in roots:
            _resolve_one(root, keys, scenario_dir)


def _resolve_one(root: dict, keys: tuple[str, ...], scenario_dir: Path) -> None:
    node = root
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    value = node.get(keys[-1])
    if isinstance(value, str) and not Path(value).is_absolute() and (scenario_dir / value).is_file():
        node[keys[-1]] = str(scenario_dir / value)


def scenario_from_dict(raw: dict, overrides=(), seed: int | None = None) -> Scenario:
    raw = apply_overrides(raw, overrides)
    if seed is not None:
        raw["seed"] = seed
    _merge_pool_engines(raw)
    return build(Scenario, raw, "")


def _merge_pool_engines(raw: dict) -> None:
    """A pool's engine section holds only the keys it changes: lay them over the scenario's."""
    fleet = raw.get("fleet")
    pools = fleet.get("pools") if isinstance(fleet, dict) else None
    engine = raw.get("engine") if isinstance(raw.get("engine"), dict) else {}
    first = pools[0] if isinstance(pools, list) and pools and isinstance(pools[0], dict) else None
    if first is not None and "hardware" not in raw and "hardware" in first:
        raw["hardware"] = first["hardware"]  # the scenario's own hardware: the first pool's
    for pool in pools if isinstance(pools, list) else ():
        if isinstance(pool, dict) and isinstance(pool.get("engine"), dict):
            pool["engine"] = {**engine, **pool["engine"]}
