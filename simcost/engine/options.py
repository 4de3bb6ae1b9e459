"""What a replica is built from: one frozen `ReplicaOptions` per pool (the Fleet builds it once
and every replica of the pool shares it), and the host link its swap and prefix tiers use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simcost.cost.step_log import StepLog
from simcost.engine.kv.reuse import PrefixSpec
from simcost.engine.speculation import Speculation
from simcost.errors import InputError
from simcost.perf.deployment import Deployment
from simcost.scenario.deployment import EngineConfig
from simcost.workload.request_table import RequestTable


@dataclass(frozen=True)
class SwapLink:
    """KV swap to host memory: seconds per token moved (each device moves its shard of the KV
    over its own host link, in parallel) and the host swap space, in tokens, per replica."""

    s_per_token: float
    capacity_tokens: int


# eq=False: the step parameters are an array, and options are compared by identity only
@dataclass(frozen=True, eq=False)
class ReplicaOptions:
    """Everything a replica of one pool needs besides its environment and index."""

    table: RequestTable
    step_params: np.ndarray
    num_kv_blocks: int
    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_watermark: float  # fraction of the pool kept free at admission
    log: StepLog
    on_finish: Callable[[int, int], None]  # called with (replica index, request id) when a request ends
    policy: str = "prefill_first"  # engine.policy
    max_span_steps: int = 1 << 30  # 1 turns decode spans off (tests compare both ways)
    # per workload entry: (FLOPs, bytes) one item costs one device; None when no workload has items
    item_work: tuple[np.ndarray, np.ndarray] | None = None
    queue_key: Callable[[int], tuple] | None = None  # None: fcfs (simcost.engine.waiting)
    swap: SwapLink | None = None  # None: preemption by recompute
    # disaggregation: "prefill" hands requests to `handoff` after their first token, once their
    # KV has crossed the KV link; "decode" takes only handed-over requests; "both": neither
    role: str = "both"
    handoff: Callable[[int], None] | None = None
    kv_transfer_s_per_token: float = 0.0
    prefix: PrefixSpec | None = None  # automatic prefix caching (iteration-level replicas only)
    # request-level policies (simcost.engine.request_level)
    batch_timeout_s: float = 0.0
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_s: float = 0.0
    speculation: Speculation | None = None  # engine.speculative (iteration-level replicas only)

    @property
    def watermark_blocks(self) -> int:
        return int(self.kv_watermark * self.num_kv_blocks)


def swap_link(engine: EngineConfig, dep: Deployment) -> SwapLink | None:
    """The swap path of `engine.preemption: swap` for deployment `dep` (None for recompute)."""
    if engine.preemption != "swap":
        return None
    capacity_tokens = int(engine.swap_space_gb * 2 ** 30 * dep.tensor_parallel / dep.kv_bytes_per_token)
    return SwapLink(host_kv_s_per_token(engine, dep, "engine.preemption"), capacity_tokens)


def host_kv_s_per_token(engine: EngineConfig, dep: Deployment, key: str) -> float:
    """Seconds to move one token's KV between a replica and host memory (swap, host prefix
    tier): each tensor-parallel device moves its shard over its own host link, in parallel.
    `key` names the setting that needs the link, for the error when there is none."""
    link_bytes_per_s = (engine.host_link_gb_per_s * 1e9 if engine.host_link_gb_per_s is not None
                        else dep.device.host_link_bytes_per_s)
    if link_bytes_per_s is None:
        raise InputError(key, f"needs a host link; the catalog gives none for {dep.device.key} (its KV already "
                              "lives in host memory, or the link is not published): set engine.host_link_gb_per_s")
    return dep.kv_bytes_per_token / dep.tensor_parallel / link_bytes_per_s
