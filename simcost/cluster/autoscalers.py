"""Autoscaler decisions: how many replicas a fleet wants, as the real controllers compute it.

Pure decision objects, no SimPy: a controller calls `observe(now_s, value)` every `sample_s`
with the metric (summed over ready replicas, or fleet-wide for ttft_p95) and
`decide(now_s, ready, starting)` every `tick_s`, and requests the count it returns (clamped to
[min_replicas, max_replicas]; ready + starting is the current count). `make_autoscaler` builds
one from a scenario's `fleet.autoscaler` (one of the policy classes of simcost.scenario.autoscalers,
whose field defaults are the real systems' defaults, with sources).

Kubernetes HPA v2 (`Hpa`; pkg/controller/podautoscaler; docs/design.md section 4):
- The metric is the mean of the samples of the last tick_s (a Prometheus `avg_over_time` over the
  sync period); ratio r = (value / ready) / target, per pod, as a Pods metric. |r - 1| <=
  tolerance keeps the current count, else desired = ceil(value / target).
- Starting replicas are pods without metrics yet ("missing" pods): k8s counts them at 0 on a
  scale-up and at the target on a scale-down, recomputes the ratio, and keeps the current count
  if that lands within tolerance or flips the direction. So pods still loading damp a scale-up.
- ttft_p95 is a "Value" metric: r = value / target, desired = ceil(r * ready), no per-pod fill-in.
- No ready replica means no metric: the count is kept (k8s reports FailedGetMetrics).
- Stabilisation keeps the raw recommendations: the result is the current count pulled up to the
  minimum of the last scale_up_stabilization_s (0 s) and down to the maximum of the last
  scale_down_stabilization_s (300 s). The first decision records the current count as a
  recommendation (k8s recordInitialRecommendation), so nothing scales down in the first window.
- Rate limits are the default behavior policies, measured from the count at the start of the
  period (current - added + removed by this autoscaler within policy_period_s): up to
  max(start + 4, ceil(start x 2)) (selectPolicy Max), down to floor(start x 0) (100 %).
  A current count outside [min, max] is moved to the bound at once, as k8s does.

Knative KPA (`Kpa`; pkg/autoscaler/scaling/autoscaler.go, config-autoscaler defaults):
- target T = container_concurrency 100 x target_utilization 0.7 = 70 unless `target` is given.
- Stable and panic values are the mean concurrency over the last stable_window_s (60 s) and
  panic window (10 % of it, 6 s); a partly filled window averages what it has (WindowAverage).
- desired per window = ceil(value / T), clamped to [floor(ready / 2), ceil(1000 x ready)] with
  ready taken as at least 1, so a fleet at zero can go straight to the count it needs.
- Panic starts when ceil(panic value / T) / ready >= 2 (each such tick restarts the panic clock)
  and ends once a full stable window passes without it. In panic the count is the largest
  max(stable, panic) seen since panic began, and never below the current count.
- Scale to zero (min_replicas 0) needs the decider to want 0, which takes a whole stable window
  of zero concurrency, and then scale_to_zero_grace_s (30 s) more of it: 90 s after the last
  request with the defaults; until then one replica stays. As in Knative, the grace only starts
  once the fleet has been up (above zero) for a stable window, so a fleet that starts idle, or
  one the controller's activator has just brought back from zero, keeps its replica for at
  least stable window + grace.
- Knative's max-scale default is unbounded; simcost caps max_replicas at 10 unless given.

KEDA (`Keda`; pkg/scaling/executor, ScaledObject defaults):
- Its HPA (tick_s 15 s, the HPA's sync period; min max(1, min_replicas)) drives 1..N on an
  External metric: AverageValue for summed metrics, r = value / (target x (ready + starting)),
  desired = ceil(value / target); Value for ttft_p95 (as above).
- Every polling_s (30 s) it polls the latest sample: active when value > activation_threshold.
  At 0 replicas an active poll gives max(1, min_replicas); with min_replicas 0, an inactive poll
  after more than cooldown_s (300 s) since the last active poll gives 0; one never active goes to
  0 at the first poll more than initial_cooldown_s (0 s) after its first decision, so a fleet
  that starts idle is at zero 30 s in (KEDA's initialCooldownPeriod, counted from creation).
  Polls fall on the first decide() at or after each polling_s.

schedule (`Schedule`): the replicas of the last entry with at_s <= now mod period_s; before the
first entry, the last one (the schedule wraps round).

predictive (`Predictive`): an HPA whose raw recommendation is max(the reactive one,
ceil(max over [now, now + lead_s] of forecast / target)), the forecast sampled every sample_s
over the lead window. It then goes through the HPA's stabilisation and rate limits, so it never
ends below the reactive decision and its scale-down waits the 300 s window after the last high
forecast. lead_s is the cold start, so replicas are ready when the forecast load arrives.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from simcost.errors import InputError
from simcost.scenario.autoscalers import (
    AutoscalerConfig,
    HpaAutoscaler,
    HpaKeys,
    KedaAutoscaler,
    KpaAutoscaler,
    PredictiveAutoscaler,
    ScheduleAutoscaler,
)

_EPS = 1e-9  # float slack on sample times and on ceil of exact ratios
C = TypeVar("C", bound=HpaKeys | KpaAutoscaler | ScheduleAutoscaler)  # the policy's section, as each class reads it


def _ceil(x: float) -> int:
    """ceil that takes 3.0000000001 (a float ratio of exact multiples) as 3."""
    return math.ceil(x - _EPS * abs(x))


class Autoscaler(Generic[C]):
    """Base: the clock, the samples and the bounds. Subclasses implement decide()."""

    def __init__(self, cfg: C, keep_s: float):
        self.cfg: C = cfg
        self.tick_s: float = cfg.tick_s
        self.sample_s: float = cfg.sample_s
        self.min_replicas: int = cfg.min_replicas
        self.max_replicas: int = cfg.max_replicas
        self._keep_s = keep_s
        self._samples: deque[tuple[float, float]] = deque()

    def observe(self, now_s: float, value: float) -> None:
        self._samples.append((now_s, value))
        while self._samples[0][0] <= now_s - self._keep_s - _EPS:
            self._samples.popleft()

    def decide(self, now_s: float, ready: int, starting: int) -> int:
        raise NotImplementedError

    def _mean_over(self, now_s: float, window_s: float) -> float | None:
        """Mean of the samples in (now - window, now]; None without any."""
        total, n, cutoff_s = 0.0, 0, now_s - window_s + _EPS
        for t, v in reversed(self._samples):  # newest first, in time order
            if t <= cutoff_s:
                break
            if t <= now_s + _EPS:
                total, n = total + v, n + 1
        return total / n if n else None

    def _latest(self) -> float | None:
        return self._samples[-1][1] if self._samples else None

    def _clamp(self, n: int) -> int:
        return min(max(n, self.min_replicas), self.max_replicas)


class Hpa(Autoscaler[HpaKeys]):
    """Kubernetes HPA v2 on a Pods metric (external=False) or an External metric (KEDA)."""

    def __init__(self, cfg: HpaKeys, external: bool = False):
        super().__init__(cfg, keep_s=cfg.tick_s)
        self.external = external
        self._recs: deque[tuple[float, int]] = deque()  # (time, raw recommendation)
        self._events: deque[tuple[float, int]] = deque()  # (time, replicas added (+) or removed (-))
        self._seeded = False

    def decide(self, now_s: float, ready: int, starting: int) -> int:
        current = ready + starting
        if not self._seeded:  # k8s recordInitialRecommendation
            self._recs.append((now_s, current))
            self._seeded = True
        if current > self.max_replicas or current < self.min_replicas:
            return self._scaled(now_s, current, self._clamp(current))
        raw = self._recommend(now_s, ready, starting)
        desired = self._rate_limited(now_s, current, self._stabilized(now_s, current, raw))
        return self._scaled(now_s, current, desired)

    def _recommend(self, now_s: float, ready: int, starting: int) -> int:
        """The metric's raw replica count (k8s replica_calculator); the current count without data."""
        current = ready + starting
        value = self._mean_over(now_s, self.tick_s)
        if value is None:
            return current
        if self.cfg.metric == "ttft_p95":
            return current if ready == 0 else self._value_replicas(value, ready, current)
        if self.external:
            return self._average_value_replicas(value, current)
        return current if ready == 0 else self._pods_replicas(value, ready, starting)

    def _value_replicas(self, value: float, ready: int, current: int) -> int:
        ratio = value / self.cfg.target
        return current if abs(1.0 - ratio) <= self.cfg.tolerance else _ceil(ratio * ready)

    def _average_value_replicas(self, value: float, current: int) -> int:
        ratio = value / (self.cfg.target * current)
        return current if abs(1.0 - ratio) <= self.cfg.tolerance else _ceil(value / self.cfg.target)

    def _pods_replicas(self, value: float, ready: int, starting: int) -> int:
        target, tol, current = self.cfg.target, self.cfg.tolerance, ready + starting
        ratio = value / ready / target
        if starting == 0:
            return current if abs(1.0 - ratio) <= tol else _ceil(value / target)
        # pods without metrics: 0 on a scale-up, the target on a scale-down
        filled = value + (starting * target if ratio < 1.0 else 0.0)
        new_ratio = filled / current / target
        if abs(1.0 - new_ratio) <= tol or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
            return current
        n = _ceil(filled / target)
        return current if (new_ratio < 1.0 and n > current) or (new_ratio > 1.0 and n < current) else n

    def _stabilized(self, now_s: float, current: int, raw: int) -> int:
        self._recs.append((now_s, raw))
        keep_s = max(self.cfg.scale_up_stabilization_s, self.cfg.scale_down_stabilization_s)
        while self._recs[0][0] <= now_s - keep_s - _EPS:
            self._recs.popleft()
        up = min([raw] + [n for t, n in self._recs if t > now_s - self.cfg.scale_up_stabilization_s + _EPS])
        down = max([raw] + [n for t, n in self._recs if t > now_s - self.cfg.scale_down_stabilization_s + _EPS])
        return min(max(current, up), down)

    def _period_start(self, now_s: float, current: int) -> int:
        """The count at the start of the policy period: current minus this period's changes."""
        while self._events and self._events[0][0] <= now_s - self.cfg.policy_period_s + _EPS:
            self._events.popleft()
        return current - sum(d for _, d in self._events)

    def _rate_limited(self, now_s: float, current: int, desired: int) -> int:
        start = self._period_start(now_s, current)
        if desired > current:
            limit = max(start + self.cfg.scale_up_max_pods, _ceil(start * (1 + self.cfg.scale_up_max_percent / 100)))
            return min(desired, self.max_replicas, max(limit, current))
        if desired < current:
            limit = math.floor(start * (1 - self.cfg.scale_down_max_percent / 100) + _EPS)
            return max(desired, self.min_replicas, min(limit, current))
        return self._clamp(desired)

    def _scaled(self, now_s: float, current: int, desired: int) -> int:
        if desired != current:
            self._events.append((now_s, desired - current))
        return desired


class Kpa(Autoscaler[KpaAutoscaler]):
    """Knative's KPA decider plus its scale-to-zero grace."""

    def __init__(self, cfg: KpaAutoscaler):
        super().__init__(cfg, keep_s=cfg.stable_window_s)
        self.panic_window_s = cfg.stable_window_s * cfg.panic_window_fraction
        self._panic_since_s: float | None = None  # Knative's panicTime: the last tick over threshold
        self._max_panic = 0
        self._up_since_s: float | None = None  # when the fleet last left zero (Knative: PA active)
        self._zero_since_s: float | None = None  # when the grace began

    @property
    def panicking(self) -> bool:
        return self._panic_since_s is not None

    def decide(self, now_s: float, ready: int, starting: int) -> int:
        current = ready + starting
        stable = self._mean_over(now_s, self.cfg.stable_window_s)
        if stable is None:  # Knative: no data yet, no decision
            return self._clamp(current)
        panic = self._mean_over(now_s, self.panic_window_s)
        want = self._decider(now_s, ready, current, stable, stable if panic is None else panic)
        return self._clamp(self._zero_grace(now_s, current, want))

    def _decider(self, now_s: float, ready: int, current: int, stable: float, panic: float) -> int:
        c = self.cfg
        ready_n = max(1, ready)
        lo, hi = math.floor(ready_n / c.max_scale_down_rate), _ceil(c.max_scale_up_rate * ready_n)
        dspc, dppc = _ceil(stable / c.target_per_replica), _ceil(panic / c.target_per_replica)
        stable_n, panic_n = min(max(dspc, lo), hi), min(max(dppc, lo), hi)
        if dppc / ready_n >= c.panic_threshold:
            self._panic_since_s = now_s
        elif self._panic_since_s is not None and now_s > self._panic_since_s + c.stable_window_s + _EPS:
            self._panic_since_s, self._max_panic = None, 0
        if not self.panicking:
            return stable_n
        self._max_panic = max(self._max_panic, stable_n, panic_n)  # only increases while panicking
        return max(self._max_panic, current)

    def _zero_grace(self, now_s: float, current: int, want: int) -> int:
        """Hold one replica until the fleet has been up a stable window and the decider has then
        wanted zero for the grace period (Knative's KPA scaler, handleScaleToZero)."""
        if current == 0:
            self._up_since_s = None
        elif self._up_since_s is None:
            self._up_since_s = now_s
        if want > 0 or self._up_since_s is None or self.min_replicas > 0:  # no replica up: nothing to hold
            self._zero_since_s = None
            return want
        if now_s - self._up_since_s < self.cfg.stable_window_s - _EPS:
            return 1
        if self._zero_since_s is None:
            self._zero_since_s = now_s
        return 0 if now_s - self._zero_since_s >= self.cfg.scale_to_zero_grace_s - _EPS else 1


class Keda(Autoscaler[KedaAutoscaler]):
    """KEDA: activation and scale to zero by polling; 1..N by an HPA on an External metric."""

    def __init__(self, cfg: KedaAutoscaler):
        super().__init__(cfg, keep_s=cfg.tick_s)
        self._hpa = Hpa(dataclasses.replace(cfg, min_replicas=max(1, cfg.min_replicas)), external=True)
        self._next_poll_s = -math.inf
        self._created_s: float | None = None  # the first decision: KEDA's CreationTimestamp
        self._last_active_s: float | None = None

    def observe(self, now_s: float, value: float) -> None:
        super().observe(now_s, value)
        self._hpa.observe(now_s, value)

    def decide(self, now_s: float, ready: int, starting: int) -> int:
        current = ready + starting
        if self._created_s is None:
            self._created_s = now_s
        polled = self._poll(now_s, current, self._created_s)
        if polled is not None:
            return polled
        return 0 if current == 0 else self._hpa.decide(now_s, ready, starting)

    def _poll(self, now_s: float, current: int, created_s: float) -> int | None:
        """KEDA's scale executor: a count for 0 -> 1 or 1 -> 0, else None (the HPA decides)."""
        value = self._latest()
        if value is None or now_s < self._next_poll_s - _EPS:
            return None
        self._next_poll_s = now_s + self.cfg.polling_s
        active = value > self.cfg.activation_threshold
        if active:
            self._last_active_s = now_s
            return max(1, self.min_replicas) if current == 0 else None
        if self._last_active_s is None:
            cooled = now_s > created_s + self.cfg.initial_cooldown_s + _EPS
        else:
            cooled = now_s > self._last_active_s + self.cfg.cooldown_s + _EPS
        return 0 if current > 0 and self.min_replicas == 0 and cooled else None


class Schedule(Autoscaler[ScheduleAutoscaler]):
    """Replicas by time of day (or of any period)."""

    def __init__(self, cfg: ScheduleAutoscaler):
        super().__init__(cfg, keep_s=0.0)
        self._entries = cfg.schedule

    def observe(self, now_s: float, value: float) -> None:
        pass  # the schedule needs no metric

    def decide(self, now_s: float, ready: int, starting: int) -> int:
        phase_s = now_s % self.cfg.period_s
        entry = self._entries[-1]  # before the first entry: the last one, from the previous period
        for e in self._entries:
            if e.at_s <= phase_s + _EPS:
                entry = e
        return entry.replicas


class Predictive(Hpa):
    """An HPA that also provisions for the forecast peak over the next lead_s."""

    def __init__(self, cfg: PredictiveAutoscaler, forecast: Callable[[float], float], lead_s: float):
        super().__init__(cfg)
        self.forecast, self.lead_s = forecast, lead_s

    def forecast_replicas(self, now_s: float) -> int:
        steps = max(1, _ceil(self.lead_s / self.sample_s))
        peak = max(self.forecast(now_s + self.lead_s * i / steps) for i in range(steps + 1))
        return _ceil(peak / self.cfg.target)

    def _recommend(self, now_s: float, ready: int, starting: int) -> int:
        return max(super()._recommend(now_s, ready, starting), self.forecast_replicas(now_s))


def make_autoscaler(cfg: AutoscalerConfig, forecast: Callable[[float], float] | None = None,
                    lead_s: float = 0.0) -> Autoscaler:
    """The autoscaler of `cfg` (a fleet.autoscaler section). forecast(t_s): the expected metric
    at t_s, in observe()'s units (predictive needs it); lead_s: how far ahead to provision."""
    match cfg:
        case PredictiveAutoscaler():
            if forecast is None:
                raise InputError("fleet.autoscaler.policy", "predictive needs a forecast of the load, and this "
                                 "workload has none (a trace); use hpa, kpa or keda")
            if lead_s < 0:
                raise ValueError(f"lead_s {lead_s} < 0")
            return Predictive(cfg, forecast, lead_s)
        case HpaAutoscaler():
            return Hpa(cfg)
        case KpaAutoscaler():
            return Kpa(cfg)
        case KedaAutoscaler():
            return Keda(cfg)
        case ScheduleAutoscaler():
            return Schedule(cfg)
    raise TypeError(f"not an autoscaler section: {cfg!r}")
