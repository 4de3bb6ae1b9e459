"""Time series of a run (simcost.metrics.timeseries): sampling leaves the run as it was and ends with it;
the samples agree with the exact records (Little's law, counts, the bill); the CLI writes them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scenarios import scenario

from simcost.analysis.queueing import queue_scenario
from simcost.metrics.summary import records
from simcost.metrics.timeseries import RUNNING, WAITING, pool_histogram, token_histogram
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "default": {},
    "chunked_shared_queue": {"engine": {"policy": "chunked", "max_num_seqs": 8},
                             "fleet": {"replicas": 2, "router": "shared_queue"}},
    "static_batches": {"engine": {"policy": "static", "max_num_seqs": 4, "batch_timeout_s": 0.3}},
    "disaggregated": {"fleet": {"disaggregation": {"prefill_replicas": 1, "decode_replicas": 2}}},
    "drain": {"drain_s": 5.0},
}


def small(**extra):
    return scenario(**{"duration_s": 30.0, **extra})


def run(scn, **kw):
    sim = Simulation(scn, **kw)
    return sim, sim.run()


def integral(ts, values):
    """Sum over samples of value x the sample's interval: exact for the rate and $ columns."""
    return float((values * ts.width_s).sum())


@pytest.mark.parametrize("variant", VARIANTS)
def test_sampling_does_not_change_the_run(variant):
    scn = small(**VARIANTS[variant])
    _, plain = run(scn, timeseries=False)
    _, sampled = run(scn, sample_interval_s=0.01)
    assert plain.timeseries is None and sampled.timeseries is not None
    a = records(scn, plain.table, plain.bill.request_usd, plain.bill.unallocated_share_usd)
    b = records(scn, sampled.table, sampled.bill.request_usd, sampled.bill.unallocated_share_usd)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert sampled.horizon_s == plain.horizon_s
    assert sampled.bill.total_usd == plain.bill.total_usd
    np.testing.assert_array_equal(sampled.steps.step_end_s, plain.steps.step_end_s)


def test_run_without_drain_ends_with_its_last_event():
    """drain_s None: SimPy runs until no event is left; the sampler must not be one forever."""
    scn = small(duration_s=20.0)
    assert scn.drain_s is None
    plain_sim, plain = run(scn, timeseries=False)
    sim, res = run(scn, sample_interval_s=0.05)
    assert res.horizon_s == plain.horizon_s
    assert sim.env.now <= plain_sim.env.now + 0.05 + 1e-9  # at most one sample after the last event
    assert (res.table.status == COMPLETED).all()
    ts = res.timeseries
    assert len(ts.t_s) == int(np.ceil(res.horizon_s / 0.05 - 1e-9))
    assert ts.t_s[-1] < res.horizon_s and ts.width_s.sum() == pytest.approx(res.horizon_s)
    last = sim.sampler.rows[-1]  # the sample that found nothing left to do: the fleet is empty
    assert last[:, [WAITING, RUNNING]].sum() == 0 and len(sim.sampler.rows) >= len(ts.t_s)


def test_samples_after_the_last_event_repeat_the_final_state():
    """A sparse run finishes well before duration_s; the grid still covers the horizon."""
    scn = small(duration_s=60.0, workload={"arrivals": {"process": "poisson", "rate_per_s": 0.05},
                                           "input_tokens": {"dist": "fixed", "value": 100},
                                           "output_tokens": {"dist": "fixed", "value": 5}})
    sim, res = run(scn, sample_interval_s=1.0)
    assert res.horizon_s == 60.0 and len(res.timeseries.t_s) == 60
    assert len(sim.sampler.rows) < 60  # it stopped with the run
    assert (res.timeseries.running[:, -5:] == 0).all()


@pytest.mark.parametrize("kind", ["shared_queue", "static_batches"])
def test_littles_law(kind):
    """Time average of (waiting + running) x horizon = sum of sojourn times, over a run that starts
    and ends empty; the sampling grid (20 ms against ~1 s sojourns) bounds the difference."""
    if kind == "shared_queue":  # M/M/3: the shared queue counts as the pool's waiting
        scn = queue_scenario(seed=3, rate_per_s=2.1, service_mean_s=1.0, dist="exponential", servers=3,
                             router="shared_queue", duration_s=600, warmup_s=0)
    else:  # finished members stay in a static batch until it ends; they are out of the system
        scn = scenario(duration_s=300.0, **VARIANTS["static_batches"])
    _, res = run(scn, sample_interval_s=0.02)
    t, ts = res.table, res.timeseries
    assert (t.status == COMPLETED).all()
    in_system = (ts.waiting + ts.running).sum(axis=0)
    assert integral(ts, in_system) == pytest.approx(float((t.finish_s - t.arrival_s).sum()), rel=0.005)


@pytest.mark.parametrize("variant", ["default", "disaggregated"])
def test_counts_match_the_request_table(variant):
    _, res = run(small(**VARIANTS[variant]))
    t, ts = res.table, res.timeseries
    assert integral(ts, ts.arrivals_per_s) == pytest.approx(t.num_requests)
    assert integral(ts, ts.completions_per_s) == pytest.approx(int((t.status == COMPLETED).sum()))
    assert integral(ts, ts.output_tokens_per_s) == pytest.approx(int(t.generated.sum()))
    assert ts.arrivals_per_s[1:].sum() == 0  # arrivals enter the first pool only
    kv = ts.kv_used_fraction
    assert ((kv >= 0) & (kv <= 1)).all() and kv.max() > 0
    assert (ts.kv_total_blocks > 0).all()
    assert ts.pools == tuple(p.role for p in res.pools)
    np.testing.assert_array_equal(ts.replicas, np.array([[p.replicas] for p in res.pools]) * np.ones(len(ts.t_s)))


def test_on_demand_usd_per_hour_is_replicas_times_price():
    _, res = run(small(duration_s=90.0, fleet={"replicas": 3}))  # past the 60 s minimum charge
    ts = res.timeseries
    np.testing.assert_allclose(ts.usd_per_hour, 3 * res.deployment.price_usd_per_hour)
    assert integral(ts, ts.usd_per_hour.sum(axis=0)) / 3600 == pytest.approx(res.bill.total_usd)


def test_owned_usd_per_hour_follows_the_busy_time():
    """Owned hardware: power follows utilisation, so $/hour moves; its integral is the bill."""
    pricing = {"model": "owned", "capex_usd_per_device": 30000, "usd_per_kwh": 0.1}
    _, res = run(small(fleet={"replicas": 2, "pricing": pricing}))
    ts = res.timeseries
    assert ts.usd_per_hour.max() > ts.usd_per_hour.min()
    assert integral(ts, ts.usd_per_hour.sum(axis=0)) / 3600 == pytest.approx(res.bill.total_usd, rel=1e-9)


def test_cli_run_writes_timeseries(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "simcost.cli.main", "run", str(ROOT / "configs" / "example.yaml"),
                           "--out", str(out), "--set", "duration_s=30", "--set", "warmup_s=0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with (out / "timeseries.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["t_s", "pool", "replicas", "ready", "waiting", "running", "kv_used_fraction", "usd_per_hour",
                             "arrivals_per_s", "completions_per_s", "output_tokens_per_s"]
    assert len(rows) >= 300 and {r["pool"] for r in rows} == {"serve"}  # 30 s every 0.1 s
    assert all(0 <= float(r["kv_used_fraction"]) <= 1 for r in rows)
    assert (out / "timeseries.png").stat().st_size > 1000


def test_pool_histogram_counts_as_numpy_histogram_per_pool():
    """The one-pass binning behind the rate columns, against np.histogram per pool: values on
    every edge (the last bin is closed), outside the edges, and NaN (dropped)."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        edges_s = np.arange(rng.integers(2, 30)) * rng.uniform(0.01, 3.0)
        times_s = np.concatenate([rng.uniform(-1, edges_s[-1] + 1, 60), edges_s, rng.choice(edges_s, 5), [np.nan]])
        pool = rng.integers(0, 3, len(times_s))
        expected = [np.histogram(times_s[(pool == p) & ~np.isnan(times_s)], bins=edges_s)[0] for p in range(3)]
        assert np.array_equal(pool_histogram(times_s, pool, 3, edges_s), np.stack(expected))


def test_token_histogram_counts_as_a_pool_per_token():
    """Tokens binned at their request's pool (the first at pool 0 when a prefill pool emits it),
    against pool_histogram with the pool spelled out per token as the time series did; times on
    edges, outside, NaN, and in the order a run emits them (the kernel tries the previous
    token's interval first)."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        edges_s = np.arange(rng.integers(2, 30)) * rng.uniform(0.01, 3.0)
        per_request = rng.integers(0, 5, rng.integers(0, 30))
        offsets = np.concatenate([[0], np.cumsum(per_request)])
        times_s = rng.uniform(-1, edges_s[-1] + 1, offsets[-1])
        times_s[rng.random(len(times_s)) < 0.1] = np.nan
        times_s[rng.random(len(times_s)) < 0.1] = rng.choice(edges_s)
        if rng.random() < 0.5:  # as a run emits them: each request's tokens in time order
            times_s = np.concatenate([np.sort(times_s[a:b]) for a, b in zip(offsets[:-1], offsets[1:])] + [[]])
        request_pool = rng.integers(0, 3, len(per_request))
        for first_in_pool0 in (False, True):
            token_pool = np.repeat(request_pool, per_request)
            if first_in_pool0:
                token_pool[offsets[:-1][per_request > 0]] = 0
            assert np.array_equal(token_histogram(times_s, offsets, request_pool, first_in_pool0, 3, edges_s),
                                  pool_histogram(times_s, token_pool, 3, edges_s))


@pytest.mark.parametrize("span_s, expected_s", [(10.0, 0.1), (3600.0, 7.2), (86400.0, 60.0),
                                                 (14 * 86400.0, 60.48), (365 * 86400.0, 1576.8)])
def test_the_series_stays_bounded_however_long_the_run(span_s, expected_s):
    """~500 samples, at most a minute apart up to ~2 weeks, then longer intervals: a simulated
    year has MAX_SAMPLES samples, not 525,600."""
    from simcost.metrics.timeseries import MAX_SAMPLES, default_interval_s

    assert default_interval_s(span_s) == pytest.approx(expected_s)
    assert span_s / default_interval_s(span_s) <= MAX_SAMPLES * (1 + 1e-12)
