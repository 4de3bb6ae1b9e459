"""The shape of a run's summary (summary.json): typed dictionaries, so every key the summary
has is declared here, in one place, and mypy checks the code that builds and reads it.
`simcost.metrics.summary.summarize` builds it; nothing adds keys afterwards.

The nested sections that vary with the scenario (cost, fleet, energy, pools) stay plain
mappings of their own keys; their builders in summary.py document them."""

# no `from __future__ import annotations`: TypedDict reads NotRequired from evaluated annotations
from typing import Any, Literal, NotRequired, TypedDict

StatName = Literal["mean", "p50", "p90", "p95", "p99"]  # a LatencyStats key other than count
LatencyKey = Literal["ttft_s", "tpot_s", "itl_s", "e2el_s"]  # the RunSummary keys holding LatencyStats


class LatencyStats(TypedDict):
    """Mean and percentiles in seconds over the requests counted; None when there are none."""

    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    count: int
    # present when read from a streaming histogram: each percentile is within this fraction of
    # the exact one (simcost.workload.token_stats)
    relative_error: NotRequired[float]


class LatencyCovers(TypedDict):
    requests: str  # which requests the latency statistics cover
    count: int  # how many they are
    of: int  # of how many measured requests that arrived


class Throughput(TypedDict):
    requests_per_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None


class RequestCounts(TypedDict):
    arrived: int
    completed: int
    rejected: int
    in_flight: int
    measured: int
    rejected_by_reason: dict[str, int]


class PerItem(TypedDict):
    """Throughput and unit cost in items, for a model served per item."""

    kind: str
    item_input: str
    items_completed: int
    items_per_s: float | None
    mean_items_per_batch: float
    usd_per_1m_items: float | None


class RunSummary(TypedDict):
    scenario: str
    seed: int
    model: str
    device: str  # the devices of every pool, "+"-joined
    tensor_parallel: int
    replicas: int
    fleet: dict[str, Any]
    router: str
    kv_blocks_per_replica: int
    pools: list[dict[str, Any]]
    horizon_s: float
    measured_window_s: float | None
    latency_covers: LatencyCovers
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    itl_s: LatencyStats
    e2el_s: LatencyStats
    throughput: Throughput
    goodput_requests_per_s: float | None
    slo_attainment: float | None
    slo_outcomes: dict[str, Any]
    meets_slo: bool
    slo: dict[str, Any]
    utilization: float
    mean_batch_tokens: float
    num_steps: int
    preemptions: int
    cost: dict[str, Any]
    energy: dict[str, Any]
    overload: dict[str, Any]
    requests: RequestCounts
    # present when the scenario has them: a mix of workloads, tenants, tags, sessions, closed-loop
    # users (breakdowns); pools that requests choose between (pools_summary); prefix caching;
    # a model served per item
    by_workload: NotRequired[dict[str, Any]]
    by_tenant: NotRequired[dict[str, Any]]
    by_tag: NotRequired[dict[str, Any]]
    sessions: NotRequired[dict[str, Any]]
    closed_loop: NotRequired[dict[str, Any]]
    by_site: NotRequired[dict[str, Any]]
    network: NotRequired[dict[str, Any]]
    pool_routing: NotRequired[dict[str, Any] | None]
    bytes_per_token: NotRequired[float]
    prefix_cache: NotRequired[dict[str, Any]]
    per_item: NotRequired[PerItem]
    # the step-time model each pool ran and why (perf.model auto resolves per deployment:
    # simcost.perf.model_choice), e.g. "kernels (auto: own tables)"
    perf_model: NotRequired[str]
    # perf.model kernels: the share of simulated step seconds that came from measured kernel
    # latencies (the rest: roofline fallbacks, extrapolation, overheads); 0 on a device without tables
    step_time_measured_fraction: NotRequired[float]
    # perf.model kernels on a GPU without tables: the share that came from the nearest measured GPU's
    # kernel latencies scaled to this device by the spec ratios (simcost.perf.kernel_scaling)
    step_time_scaled_fraction: NotRequired[float]
    # hardware.pipeline_parallel > 1: the stages of tensor_parallel devices a replica spans
    pipeline_parallel: NotRequired[int]
    # hardware.expert_parallel > 1: the devices the routed experts split over, and the
    # data-parallel attention groups of tensor_parallel devices (a replica spans their product)
    expert_parallel: NotRequired[dict[str, int]]
    api: NotRequired[dict[str, Any]]  # hosted-API pools (fleet.api_pools), per pool
    cascade: NotRequired[dict[str, Any]]  # fleet.cascade: escalations, added latency, quality proxy
    response_cache: NotRequired[dict[str, Any]]  # fleet.response_cache: lookups, hits, evictions, dollars
    budget: NotRequired[dict[str, Any]]  # cost.budget: the burn-rate and actual alerts that would have fired
    unit_economics: NotRequired[dict[str, Any]]  # cost.outcomes: $ per outcome and per user, by workload


class Breakdowns(TypedDict, total=False):
    """The per-group sections of `RunSummary` (summary.breakdowns)."""

    by_workload: dict[str, Any]
    by_tenant: dict[str, Any]
    by_tag: dict[str, Any]
    sessions: dict[str, Any]
    closed_loop: dict[str, Any]


class PoolsSummary(TypedDict):
    """The sections of `RunSummary` for pools that requests choose between (summary.pools_summary)."""

    by_site: dict[str, Any]
    network: dict[str, Any]
    pool_routing: dict[str, Any] | None
    bytes_per_token: float
