"""Autoscaler sections: one frozen, keyword-only class per policy (hpa, predictive, keda, kpa,
schedule), picked by the `policy` key, with the shipped systems' defaults as field defaults.
The decisions themselves are simcost.cluster.autoscalers'."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from simcost.errors import InputError
from simcost.scenario.limits import MAX_REPLICAS, REPLICAS_WHY
from simcost.scenario.schema import bounds, tag


@dataclass(frozen=True, kw_only=True)
class ScheduleEntry:
    """From at_s seconds into each period on, keep `replicas` replicas (autoscaler policy schedule)."""

    at_s: float = field(metadata=bounds(ge=0))
    replicas: int = field(metadata=bounds(REPLICAS_WHY, ge=0, le=MAX_REPLICAS))


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
class HpaKeys:
    """The HPA's algorithm and its default behavior (autoscaling/v2 "Default Behavior"), shared by
    hpa, predictive and keda. metric: what is measured, summed over ready replicas (concurrency =
    requests in the system, queue_depth = waiting requests, kv_cache = KV blocks in use / blocks,
    utilization = busy share of the last sample interval) or fleet-wide (ttft_p95, seconds, over
    the last window). target: per replica for the summed metrics, the value itself for ttft_p95."""

    policy: str = field(metadata=tag(POLICY))  # each policy narrows it to its own name
    target: float = field(metadata=bounds(gt=0))
    metric: ScalingMetric = "concurrency"
    min_replicas: int = field(default=1, metadata=bounds(REPLICAS_WHY, ge=0, le=MAX_REPLICAS))  # HPA minReplicas
    max_replicas: int = field(default=10, metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))
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
class HpaAutoscaler(HpaKeys):
    """Kubernetes HPA v2 on a Pods metric."""

    policy: Literal["hpa"] = field(default="hpa", metadata=tag(POLICY))

    def _check(self, path: str) -> None:
        if self.min_replicas == 0:
            raise InputError(f"{path}.min_replicas", "0: the HPA cannot scale to zero; use policy kpa or keda")
        super()._check(path)


@dataclass(frozen=True, kw_only=True)
class PredictiveAutoscaler(HpaKeys):
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
class KedaAutoscaler(HpaKeys):
    """KEDA: an HPA on an external metric driving 1..N (tick_s is that HPA's sync period), plus
    activation and scale to zero by polling."""

    policy: Literal["keda"] = field(default="keda", metadata=tag(POLICY))
    min_replicas: int = field(default=0, metadata=bounds(REPLICAS_WHY, ge=0, le=MAX_REPLICAS))  # minReplicaCount
    max_replicas: int = field(default=100, metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))  # maxReplicaCount
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
    min_replicas: int = field(default=0, metadata=bounds(REPLICAS_WHY, ge=0, le=MAX_REPLICAS))  # min-scale
    max_replicas: int = field(default=10, metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))
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
