"""Autoscaler decisions (simcost.cluster.autoscalers) driven by synthetic metric sequences on a clock:
HPA v2, Knative KPA, KEDA, schedule and predictive against hand-computed counts, and the
config's refusals of keys a policy does not use."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.cluster.autoscalers import make_autoscaler
from simcost.errors import InputError
from simcost.scenario.autoscalers import AutoscalerConfig, KedaAutoscaler, KpaAutoscaler, ScheduleAutoscaler
from simcost.scenario.schema import build


def scaler(forecast=None, lead_s=0.0, **keys):
    return make_autoscaler(build(AutoscalerConfig, keys, "fleet.autoscaler"), forecast, lead_s)


class Fleet:
    """Replicas for the drive loop: a requested replica is ready delay_s later; a scale-down
    cancels starting replicas first, then removes ready ones at once."""

    def __init__(self, ready: int, delay_s: float = 0.0):
        self.ready, self.delay_s, self.pending = ready, delay_s, []

    @property
    def starting(self) -> int:
        return len(self.pending)

    def advance(self, now_s: float) -> None:
        self.ready += sum(1 for t in self.pending if t <= now_s)
        self.pending = [t for t in self.pending if t > now_s]

    def apply(self, now_s: float, desired: int) -> None:
        extra = desired - self.ready - self.starting
        if extra > 0:
            self.pending += [now_s + self.delay_s] * extra
        else:
            cancel = min(-extra, self.starting)
            self.pending = self.pending[:self.starting - cancel]
            self.ready -= -extra - cancel
        self.advance(now_s)


def drive(a, load, until_s, fleet, trace=None):
    """Observe load(t) every sample_s and decide every tick_s from t = 0; returns {t: desired}."""
    per_tick = round(a.tick_s / a.sample_s)
    out = {}
    for k in range(int(round(until_s / a.sample_s)) + 1):
        t = k * a.sample_s
        fleet.advance(t)
        a.observe(t, load(t))
        if k % per_tick == 0:
            out[t] = a.decide(t, fleet.ready, fleet.starting)
            fleet.apply(t, out[t])
            if trace is not None:
                trace.append((t, out[t], fleet.ready, fleet.starting, getattr(a, "panicking", None)))
    return out


def ticks(out, t0, t1):
    return [d for t, d in out.items() if t0 <= t <= t1]


# --- HPA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("load, expected", [(99, 1), (250, 3), (1000, 10), (1730, 18), (2000, 20)])
def test_hpa_constant_load_converges_to_ceil_load_over_target(load, expected):
    a = scaler(policy="hpa", target=100, max_replicas=50)
    out = drive(a, lambda t: load, 900, Fleet(1, delay_s=30))
    assert out[900] == expected == math.ceil(load / 100)
    assert set(ticks(out, 450, 900)) == {expected}


@settings(max_examples=40, deadline=None)
@given(load=st.integers(1, 3000), n0=st.integers(1, 40))
def test_hpa_settles_on_a_fixed_point_of_its_rule(load, n0):
    """The HPA's fixed points under constant load L are ceil(L / T) and the counts within
    tolerance of L / T; it reaches one and stays, and one it starts at it keeps."""
    a = scaler(policy="hpa", target=100, max_replicas=50)
    out = drive(a, lambda t: float(load), 900, Fleet(n0, delay_s=30))
    final = out[900]
    assert set(ticks(out, 600, 900)) == {final}
    assert final == math.ceil(load / 100) or abs(1.0 - load / final / 100) <= 0.1
    if abs(1.0 - load / n0 / 100) <= 0.1:
        assert set(out.values()) == {n0}


def test_hpa_scale_down_waits_for_the_stabilisation_window():
    a = scaler(policy="hpa", target=100)
    out = drive(a, lambda t: 400.0 if t < 600 else 100.0, 1200, Fleet(4))
    # tick 600 averages 14 samples of 400 and one of 100: ratio 0.95, within tolerance, keeps 4;
    # from 615 the recommendation is 1, but the window holds 4 until that tick leaves it at 900
    assert set(ticks(out, 0, 885)) == {4}
    assert set(ticks(out, 900, 1200)) == {1}
    fast = drive(scaler(policy="hpa", target=100, scale_down_stabilization_s=0), lambda t: 400.0 if t < 600 else 100.0,
                 700, Fleet(4))
    assert fast[600] == 4 and fast[615] == 1


def test_hpa_scale_up_doubles_or_adds_four_per_period_from_the_period_start():
    a = scaler(policy="hpa", target=100, max_replicas=100)
    out = drive(a, lambda t: 10_000.0, 90, Fleet(1))
    assert [out[t] for t in (0, 15, 30, 45, 60, 75, 90)] == [5, 10, 20, 40, 80, 100, 100]
    b = scaler(policy="hpa", target=100, max_replicas=100)
    b.observe(0.0, 10_000.0)
    assert b.decide(0.0, 1, 0) == 5
    b.observe(5.0, 10_000.0)
    assert b.decide(5.0, 5, 0) == 5  # within the same 15 s period the base is still 1
    b.observe(15.0, 10_000.0)
    assert b.decide(15.0, 5, 0) == 10


def test_hpa_scale_down_rate_policy():
    a = scaler(policy="hpa", target=100, scale_down_stabilization_s=0, scale_down_max_percent=50)
    out = drive(a, lambda t: 0.0, 45, Fleet(8))
    assert [out[t] for t in (0, 15, 30, 45)] == [4, 2, 1, 1]


@pytest.mark.parametrize("load, expected", [(1080, 10), (920, 10), (1120, 12), (880, 9)])
def test_hpa_tolerance_band_keeps_the_count(load, expected):
    a = scaler(policy="hpa", target=100, max_replicas=20, scale_down_stabilization_s=0)
    a.observe(0.0, float(load))
    assert a.decide(0.0, 10, 0) == expected


def test_hpa_clamps_to_min_and_max():
    hi = drive(scaler(policy="hpa", target=100, min_replicas=2, max_replicas=5), lambda t: 10_000.0, 120, Fleet(2))
    assert max(hi.values()) == 5 and hi[120] == 5
    lo = drive(scaler(policy="hpa", target=100, min_replicas=2, max_replicas=5, scale_down_stabilization_s=0),
               lambda t: 0.0, 30, Fleet(5))
    assert lo[0] == 2
    a = scaler(policy="hpa", target=100, min_replicas=2, max_replicas=5)
    a.observe(0.0, 300.0)
    assert a.decide(0.0, 8, 0) == 5  # above max: to max at once
    assert a.decide(15.0, 1, 0) == 2  # below min: to min at once


def test_hpa_starting_replicas_damp_scale_up_and_scale_down():
    def decide(value, ready, starting):
        a = scaler(policy="hpa", target=100, max_replicas=20, scale_down_stabilization_s=0)
        a.observe(0.0, value)
        return a.decide(0.0, ready, starting)

    # 640 over 4 ready is 1.6 x target; with 2 starting pods counted at 0 it is 1.07: keep 6
    assert decide(640.0, 4, 2) == 6 and decide(640.0, 4, 0) == 7
    # 300 over 2 ready is 1.5 x; counted with 2 starting at 0 it is 0.75, the direction flips: keep
    assert decide(300.0, 2, 2) == 4
    # scale-down: 200 over 4 ready is 0.5 x; 2 starting counted at the target make it 4 of 6
    assert decide(200.0, 4, 2) == 4 and decide(200.0, 4, 0) == 2
    # nothing ready: no metric, keep the count
    assert decide(5000.0, 0, 3) == 3


def test_hpa_on_ttft_value_metric():
    a = scaler(policy="hpa", metric="ttft_p95", target=0.5, max_replicas=20, scale_down_stabilization_s=0)
    a.observe(0.0, 1.5)  # 3 x the target TTFT: three times the ready replicas
    assert a.decide(0.0, 2, 0) == 6
    a.observe(15.0, 0.52)
    assert a.decide(15.0, 6, 0) == 6
    a.observe(30.0, 5.0)
    assert a.decide(30.0, 0, 3) == 3  # nothing ready: no measurement, keep the count


# --- KPA ----------------------------------------------------------------------------------------

def test_kpa_target_defaults_to_70_percent_of_container_concurrency():
    assert build(AutoscalerConfig, {"policy": "kpa"}, "a").target_per_replica == pytest.approx(70.0)
    assert build(AutoscalerConfig, {"policy": "kpa", "container_concurrency": 10}, "a").target_per_replica == pytest.approx(7.0)
    assert build(AutoscalerConfig, {"policy": "kpa", "target": 25}, "a").target_per_replica == 25.0


def test_kpa_stable_mode_averages_the_stable_window():
    a = scaler(policy="kpa")
    loads = {}
    out = {}
    for k in range(0, 221):
        t = float(k)
        loads[t] = 280.0 if t < 100 else 140.0
        a.observe(t, loads[t])
        if k % 2 == 0:
            out[t] = a.decide(t, 4, 0)
            window = [v for s, v in loads.items() if s > t - 60]
            assert out[t] == max(2, math.ceil(sum(window) / len(window) / 70 - 1e-9))  # floor(4 / 2) = 2
            assert not a.panicking
    # the 60 s mean reaches 210 (3 x 70) 29 s after the drop, and 140 after 59 s
    assert out[128] == 4 and out[130] == 3 and out[158] == 3 and out[160] == 2


def test_kpa_rate_limits_halve_at_most_and_let_zero_reach_its_count():
    a = scaler(policy="kpa")
    for k in range(0, 61):
        a.observe(float(k), 0.0)
    assert a.decide(60.0, 8, 0) == 4  # the stable mean is 0, but at most halving: floor(8 / 2)
    for ready, expected in ((3, 6), (0, 2)):  # 10 wanted; ceil(2 x ready) allowed, ready 0 counted as 1
        b = scaler(policy="kpa", max_scale_up_rate=2.0, max_replicas=50)
        for k in range(0, 7):
            b.observe(float(k), 700.0)
        assert b.decide(6.0, ready, 0) == expected


def test_kpa_burst_panics_scales_up_and_holds_until_panic_ends():
    trace = []
    out = drive(scaler(policy="kpa", max_replicas=50), lambda t: 560.0 if 120 <= t < 150 else 140.0, 240,
                Fleet(2, delay_s=20), trace)  # 4 x the load for 30 s; new replicas ready 20 s later
    panicking = {t: p for t, _, _, _, p in trace}
    ready = {t: r for t, _, r, _, _ in trace}
    assert not any(p for t, p in panicking.items() if t < 122)
    # 122: the 6 s mean is (3 x 560 + 3 x 140) / 6 = 350, 5 pods for 2 ready: panic, at 5
    assert panicking[122] and out[122] == 5
    in_panic = [t for t, p in panicking.items() if p]
    counts = [out[t] for t in in_panic]
    assert counts == sorted(counts) and max(counts) == 8 == math.ceil(560 / 70)
    # the burst ends at 150 and the 6 s mean wants 2 pods from 156, yet the count holds at 8
    assert all(out[t] == 8 for t in in_panic if t >= 126)
    # last tick over the threshold: 140, 8 wanted for 3 ready (the one asked for at 120);
    # at 142, 5 ready: 1.6. Panic ends at the first tick more than 60 s after 140
    assert (ready[140], ready[142]) == (3, 5)
    assert in_panic[-1] == 200 and not panicking[202] and out[202] < 8


def test_kpa_scales_to_zero_after_the_stable_window_and_grace():
    out = drive(scaler(policy="kpa"), lambda t: 10.0 if t < 100 else 0.0, 240, Fleet(1))
    # the stable mean is 0 from t = 159 (first tick 160); then 30 s of grace
    assert set(ticks(out, 0, 188)) == {1}
    assert out[190] == 0
    kept = drive(scaler(policy="kpa", min_replicas=1), lambda t: 10.0 if t < 100 else 0.0, 240, Fleet(1))
    assert set(kept.values()) == {1}


def test_kpa_from_zero_one_request_gives_one_replica_and_a_burst_its_count():
    for held, expected in ((1.0, 1), (700.0, 10)):
        a = scaler(policy="kpa", max_replicas=50)
        for k in range(0, 101):
            a.observe(float(k), 0.0)
            if k % 2 == 0:
                assert a.decide(float(k), 0, 0) == 0
        ready, starting, got = 0, 1, []  # the activator has asked for one replica
        for k in range(101, 111):
            a.observe(float(k), held)
            if k % 2 == 0:
                got.append(a.decide(float(k), ready, starting))
                starting = got[-1]
        assert max(got) == expected and got[-1] == expected


def test_kpa_idle_start_and_activation_keep_a_replica_a_stable_window_plus_grace():
    a = scaler(policy="kpa")
    fleet = Fleet(1)
    out = drive(a, lambda t: 0.0, 100, fleet)  # starts with one replica and no traffic
    assert set(ticks(out, 0, 88)) == {1} and set(ticks(out, 90, 100)) == {0}
    # the activator brings one replica back before any sample shows the request: kept 60 + 30 s
    got = {}
    for k in range(101, 201):
        a.observe(float(k), 0.0)
        if k % 2 == 0:
            got[k] = a.decide(float(k), 0 if k == 102 else 1, 1 if k == 102 else 0)
    assert set(v for k, v in got.items() if k < 192) == {1} and got[192] == 0


# --- KEDA ---------------------------------------------------------------------------------------

def test_keda_activates_from_zero_at_the_next_poll():
    a = scaler(policy="keda", target=100)
    out = drive(a, lambda t: 3.0 if t >= 40 else 0.0, 75, Fleet(0))
    assert [out[t] for t in (0, 15, 30, 45, 60, 75)] == [0, 0, 0, 0, 1, 1]


def test_keda_waits_for_the_cooldown_before_zero():
    out = drive(scaler(policy="keda", target=100), lambda t: 50.0 if t < 130 else 0.0, 600, Fleet(1))
    # last active poll at 120; zero at the first poll more than 300 s later (450, not 420)
    assert set(ticks(out, 0, 435)) == {1} and out[450] == 0
    kept = drive(scaler(policy="keda", target=100, min_replicas=1), lambda t: 50.0 if t < 130 else 0.0, 600, Fleet(1))
    assert set(kept.values()) == {1}
    # never active: zero at the first poll after initial_cooldown_s from the first decision
    never = drive(scaler(policy="keda", target=100), lambda t: 0.0, 60, Fleet(2))
    assert (never[0], never[15], never[30]) == (2, 2, 0)
    late = drive(scaler(policy="keda", target=100, initial_cooldown_s=120), lambda t: 0.0, 200, Fleet(2))
    assert set(ticks(late, 0, 135)) == {2} and late[150] == 0


def test_keda_scales_1_to_n_as_an_hpa_on_average_value():
    out = drive(scaler(policy="keda", target=100), lambda t: 10_000.0, 90, Fleet(1))
    assert [out[t] for t in (0, 15, 30, 45, 60, 75, 90)] == [5, 10, 20, 40, 80, 100, 100]
    a = scaler(policy="keda", target=100, scale_down_stabilization_s=0)
    a.observe(0.0, 420.0)
    assert a.decide(0.0, 2, 2) == 4  # 420 over 4 replicas (ready or not) is 1.05 x: keep
    a.observe(15.0, 250.0)
    assert a.decide(15.0, 4, 0) == 3


# --- schedule and predictive --------------------------------------------------------------------

def test_schedule_follows_its_entries_and_wraps():
    day = [{"at_s": 0, "replicas": 2}, {"at_s": 28800, "replicas": 6}, {"at_s": 72000, "replicas": 3}]
    a = scaler(policy="schedule", schedule=day)
    assert a.tick_s == 60.0
    got = {t: a.decide(t, 0, 0) for t in (0.0, 28799.0, 28800.0, 72000.0, 86399.0, 86400.0 + 30000.0)}
    assert got == {0.0: 2, 28799.0: 2, 28800.0: 6, 72000.0: 3, 86399.0: 3, 116400.0: 6}
    late = scaler(policy="schedule", period_s=3600, schedule=[{"at_s": 600, "replicas": 4}, {"at_s": 1800, "replicas": 1}])
    assert [late.decide(t, 0, 0) for t in (0.0, 600.0, 1799.0, 1800.0, 3600.0 + 100)] == [1, 4, 4, 1, 1]


def test_predictive_leads_a_rising_forecast_by_lead_s():
    rate = lambda t: 10.0 * t  # noqa: E731  concurrency rising 10 per second
    a = scaler(rate, 120.0, policy="predictive", target=100, max_replicas=200)
    out = drive(a, rate, 600, Fleet(12))
    assert all(out[t] == math.ceil((t + 120) / 10) for t in out)  # the load of t + lead at 100 per replica
    hpa = drive(scaler(policy="hpa", target=100, max_replicas=200), rate, 600, Fleet(12))
    assert all(out[t] >= hpa[t] + 10 for t in out if t >= 150)


def test_predictive_scale_down_waits_the_window_after_the_last_high_forecast():
    fc = lambda t: 400.0 if t < 600 else 100.0  # noqa: E731
    out = drive(scaler(fc, 60.0, policy="predictive", target=100), lambda t: 100.0, 1000, Fleet(4))
    # the forecast part is 4 while [t, t + 60] reaches before 600 (last at 585), then 1
    assert set(ticks(out, 0, 870)) == {4} and out[885] == 1


def test_predictive_never_below_its_reactive_recommendation():
    rng = np.random.default_rng(7)
    load = rng.gamma(2.0, 150.0, size=1201)
    fc_values = rng.gamma(2.0, 150.0, size=1500)
    a = scaler(lambda t: fc_values[int(t)], 90.0, policy="predictive", target=100, max_replicas=40)
    fleet = Fleet(3, delay_s=45)
    for k in range(1201):
        t = float(k)
        fleet.advance(t)
        a.observe(t, load[k])
        if k % 15 == 0:
            reactive = copy.deepcopy(a)
            reactive.forecast = lambda s: 0.0  # the same HPA state, without the forecast
            r = reactive.decide(t, fleet.ready, fleet.starting)
            d = a.decide(t, fleet.ready, fleet.starting)
            assert d >= r
            fleet.apply(t, d)


def test_predictive_with_a_zero_forecast_is_the_hpa():
    rng = np.random.default_rng(3)
    load = rng.gamma(2.0, 150.0, size=1201)
    p = drive(scaler(lambda t: 0.0, 120.0, policy="predictive", target=100), lambda t: load[int(t)], 1200, Fleet(2, 40))
    h = drive(scaler(policy="hpa", target=100), lambda t: load[int(t)], 1200, Fleet(2, 40))
    assert p == h and len(set(h.values())) > 2


def test_predictive_needs_a_forecast():
    with pytest.raises(InputError, match="fleet.autoscaler.policy"):
        scaler(policy="predictive", target=100)


# --- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("keys, where", [
    ({"policy": "hpa", "target": 5, "cooldown_s": 60}, "cooldown_s"),
    ({"policy": "hpa", "target": 5, "stable_window_s": 60}, "stable_window_s"),
    ({"policy": "kpa", "polling_s": 10}, "polling_s"),
    ({"policy": "hpa", "target": 5, "schedule": [{"at_s": 0, "replicas": 1}]}, "schedule"),
    ({"policy": "schedule", "schedule": [{"at_s": 0, "replicas": 1}], "target": 5}, "target"),
    ({"policy": "schedule", "schedule": [{"at_s": 0, "replicas": 1}], "metric": "concurrency"}, "metric"),
    ({"policy": "schedule", "schedule": [{"at_s": 0, "replicas": 1}], "min_replicas": 1}, "min_replicas"),
    ({"policy": "hpa"}, "target"),
    ({"policy": "keda"}, "target"),
    ({"policy": "predictive"}, "target"),
    ({"policy": "schedule"}, "schedule"),
    ({"policy": "hpa", "target": 5, "min_replicas": 6, "max_replicas": 3}, "min_replicas"),
    ({"policy": "hpa", "target": 5, "min_replicas": 12}, "min_replicas"),  # above the default max 10
    ({"policy": "hpa", "target": 5, "min_replicas": 0}, "min_replicas"),
    ({"policy": "hpa", "target": 5, "sample_s": 30}, "sample_s"),
    ({"policy": "kpa", "sample_s": 8, "tick_s": 10}, "sample_s"),  # longer than the 6 s panic window
    ({"policy": "kpa", "metric": "queue_depth"}, "metric"),
    ({"policy": "kpa", "target": 10, "target_utilization": 0.5}, "target"),
    ({"policy": "predictive", "target": 1.0, "metric": "ttft_p95"}, "metric"),
    ({"policy": "schedule", "schedule": [{"at_s": 10, "replicas": 1}, {"at_s": 5, "replicas": 2}]}, "schedule[1].at_s"),
    ({"policy": "schedule", "period_s": 3600, "schedule": [{"at_s": 3600, "replicas": 1}]}, "schedule[0].at_s"),
    ({"policy": "schedule", "schedule": []}, "schedule"),
    ({"policy": "kpa", "max_scale_down_rate": 1.0}, "max_scale_down_rate"),
])
def test_config_refuses_bad_input_naming_the_key(keys, where):
    with pytest.raises(InputError) as err:
        build(AutoscalerConfig, keys, "fleet.autoscaler")
    assert err.value.where == f"fleet.autoscaler.{where}"


def test_config_defaults_per_policy():
    hpa = build(AutoscalerConfig, {"policy": "hpa", "target": 5}, "a")
    assert (hpa.tick_s, hpa.tolerance, hpa.scale_down_stabilization_s, hpa.min_replicas) == (15.0, 0.1, 300.0, 1)
    keda = build(AutoscalerConfig, {"policy": "keda", "target": 5}, "a")
    assert (keda.polling_s, keda.cooldown_s, keda.min_replicas, keda.max_replicas) == (30.0, 300.0, 0, 100)
    kpa = build(AutoscalerConfig, {"policy": "kpa"}, "a")
    assert (kpa.tick_s, kpa.stable_window_s, kpa.scale_to_zero_grace_s, kpa.min_replicas) == (2.0, 60.0, 30.0, 0)
    assert build(AutoscalerConfig, {"policy": "kpa", "min_replicas": 2, "max_replicas": 2}, "a").min_replicas == 2


def test_each_policy_is_its_own_class_and_round_trips():
    from simcost.scenario.schema import to_dict

    keda = build(AutoscalerConfig, {"policy": "keda", "target": 5}, "a")
    assert isinstance(keda, KedaAutoscaler) and to_dict(keda)["policy"] == "keda"
    assert build(AutoscalerConfig, to_dict(keda), "a") == keda
    kpa = build(AutoscalerConfig, {"policy": "kpa", "target": 25}, "a")
    assert isinstance(kpa, KpaAutoscaler) and "polling_s" not in to_dict(kpa)
    sched = build(AutoscalerConfig, {"policy": "schedule", "schedule": [{"at_s": 0, "replicas": 3}]}, "a")
    assert isinstance(sched, ScheduleAutoscaler) and (sched.min_replicas, sched.max_replicas, sched.sample_s) == (0, 3, 60.0)
    assert set(to_dict(sched)) == {"policy", "schedule", "period_s", "tick_s"}


def test_a_key_of_another_policy_names_the_policy():
    with pytest.raises(InputError) as err:
        build(AutoscalerConfig, {"policy": "hpa", "target": 5, "cooldown_s": 60}, "fleet.autoscaler")
    assert "not used by autoscaler policy 'hpa'" in err.value.problem
