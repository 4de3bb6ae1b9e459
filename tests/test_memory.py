"""Bounded memory: the streaming ITL histogram (against numpy.percentile within its stated error,
numba kernels against their Python twins), runs without per-token times against the same runs
with them, the request-records modes of `simcost run`, and start-ups too slow to simulate."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scenarios import scenario

from simcost.cli.main import main
from simcost.engine.decode_kernels import grow_decode_kv, grow_decode_kv_py
from simcost.results.vllm_bench import vllm_bench
from simcost.simulation.simulation import Simulation
from simcost.workload.token_stats import (
    ALPHA,
    LOG_GAMMA,
    MIN_S,
    LogHistogram,
    add_token_gaps,
    add_token_gaps_py,
    count_token_bins,
    count_token_bins_py,
    dense_bins,
    interval_of,
)

QS = [0, 1, 25, 50, 90, 95, 99, 99.9, 100]


@pytest.mark.parametrize("seed", range(4))
def test_histogram_percentiles_within_alpha_of_numpy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    # ITL-like: a mode of decode steps, a tail of prefill stalls, spanning six decades
    gaps = np.concatenate([rng.lognormal(np.log(0.02), 0.3, n), rng.lognormal(np.log(0.5), 2.0, n // 10 + 1)])
    h = LogHistogram()
    h.add(gaps)
    exact = np.percentile(gaps, QS)
    sketched = np.array(h.percentiles(QS))
    assert h.count == len(gaps)
    np.testing.assert_array_less(np.abs(sketched - exact), ALPHA * exact + 1e-15)
    assert h.totals[0] / h.totals[1] == pytest.approx(gaps.mean(), rel=1e-12)


def test_histogram_tiny_gaps_are_zero_and_one_value_is_every_percentile():
    h = LogHistogram()
    h.add(np.array([0.0, MIN_S / 2]))
    assert h.percentiles([50, 100]) == [0.0, 0.0]
    h = LogHistogram()
    h.add(np.array([0.125]))
    assert all(abs(v - 0.125) <= ALPHA * 0.125 for v in h.percentiles(QS))


@pytest.mark.parametrize("seed", range(5))
def test_streaming_kernels_match_their_python_twins(seed):
    rng = np.random.default_rng(seed)
    n_req, m = 30, int(rng.integers(1, 6))
    ids = rng.choice(n_req, size=int(rng.integers(1, n_req)), replace=False).astype(np.int64)
    generated = rng.integers(0, 3, n_req).astype(np.int64)
    arrival_s = rng.uniform(0, 10, n_req)
    last_a = np.where(generated > 0, rng.uniform(5, 10, n_req), np.nan)
    last_b = last_a.copy()
    step_end_s = 10 + np.cumsum(rng.uniform(0.001, 0.5, m))
    counts_a, counts_b = np.zeros(4200, dtype=np.int64), np.zeros(4200, dtype=np.int64)
    tot_a, tot_b = np.zeros(2), np.zeros(2)
    add_token_gaps(ids, generated, arrival_s, 5.0, last_a, step_end_s, counts_a, tot_a, MIN_S, LOG_GAMMA)
    add_token_gaps_py(ids, generated, arrival_s, 5.0, last_b, step_end_s, counts_b, tot_b, MIN_S, LOG_GAMMA)
    np.testing.assert_array_equal(counts_a, counts_b)
    np.testing.assert_array_equal(last_a, last_b)
    np.testing.assert_allclose(tot_a, tot_b, rtol=1e-12)
    # every measured request's gaps, counted by hand
    measured = ids[arrival_s[ids] >= 5.0]
    assert tot_b[1] == int((generated[measured] > 0).sum()) + len(measured) * (m - 1)

    replica = rng.integers(0, 4, n_req).astype(np.int64)
    entries, used, last_entry = np.zeros((3, 50 * n_req), dtype=np.int64), np.zeros(1, dtype=np.int64), np.full(4, -1)
    bins_b = np.zeros((4, 50), dtype=np.int64)
    edges_s = np.arange(51) * 0.3
    for half in (step_end_s[:m // 2], step_end_s[m // 2:]):  # two calls: the second continues the entries
        count_token_bins(ids, replica, half, 0.3, entries, used, last_entry)
        count_token_bins_py(ids, replica, half, 0.3, bins_b)
    bins_a = dense_bins(entries, int(used[0]), 4, 50)
    np.testing.assert_array_equal(bins_a, bins_b)
    # an entry per replica and interval it emitted in, no more
    intervals = len({interval_of(t, 0.3) for t in step_end_s.tolist()})
    assert used[0] == intervals * len(np.unique(replica[ids]))
    for r in range(4):  # the same intervals np.histogram puts the tokens in
        times = np.repeat(step_end_s, int((replica[ids] == r).sum()))
        np.testing.assert_array_equal(bins_a[r], np.histogram(times, bins=edges_s)[0])

    kv_tokens, kv_blocks = rng.integers(1, 500, n_req).astype(np.int64), np.zeros(n_req, dtype=np.int64)
    a = [generated.copy(), kv_tokens.copy(), kv_blocks.copy()]
    b = [generated.copy(), kv_tokens.copy(), kv_blocks.copy()]
    assert grow_decode_kv(ids, *a, m, 16) == grow_decode_kv_py(ids, *b, m, 16)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _without(summary: dict, key: str) -> dict:
    out = json.loads(json.dumps(summary))
    out.pop(key)
    return out


@pytest.mark.parametrize("extra", [
    {},  # one pool, every request completes
    {"warmup_s": 10.0, "drain_s": 5.0, "workload": {"arrivals": {"process": "poisson", "rate_per_s": 30.0},
                                                     "input_tokens": {"dist": "fixed", "value": 1500},
                                                     "output_tokens": {"dist": "uniform", "low": 1, "high": 400}}},
    {"engine": {"policy": "static", "max_num_seqs": 8}},  # the request-level engine emits its own way
    # speculative decoding: several tokens per step, at the same time
    {"engine": {"speculative": {"method": "eagle", "num_speculative_tokens": 3, "acceptance_rate": 0.7}}},
])
def test_run_without_token_times_matches_run_with_them(extra):
    """Everything but ITL is the same number; ITL's percentiles are within ALPHA. With a drain cut
    the streaming ITL also covers the requests cut in flight, so only the completed-run cases
    compare its count."""
    sc = scenario(**extra)
    exact = Simulation(sc, exact_token_times=True).run()
    streamed = Simulation(sc, exact_token_times=False).run()
    assert streamed.table.token_time_s.size == 0
    assert _without(exact.summary, "itl_s") == _without(streamed.summary, "itl_s")
    a, b = exact.summary["itl_s"], streamed.summary["itl_s"]
    assert b["relative_error"] == ALPHA and "relative_error" not in a
    cut = exact.summary["requests"]["in_flight"] > 0
    if not cut:
        assert a["count"] == b["count"]
        assert b["mean"] == pytest.approx(a["mean"], rel=1e-9)
        for q in ("p50", "p90", "p95", "p99"):
            assert abs(b[q] - a[q]) <= ALPHA * a[q]
    else:
        assert b["count"] >= a["count"]
    ts_a, ts_b = exact.timeseries, streamed.timeseries
    for name in ("output_tokens_per_s", "usd_per_hour", "arrivals_per_s", "completions_per_s"):
        np.testing.assert_array_equal(getattr(ts_a, name), getattr(ts_b, name), err_msg=name)
    # vllm_bench.json: the same keys and numbers but ITL's, which has no std without token times
    bench_a, bench_b = vllm_bench(exact), vllm_bench(streamed)
    assert bench_b["std_itl_ms"] is None and bench_a["std_itl_ms"] is not None
    assert {k: v for k, v in bench_a.items() if "itl" not in k} == {k: v for k, v in bench_b.items() if "itl" not in k}


@pytest.mark.parametrize("fleet", [
    # a hosted-API pool beside the replica, taking what it can; and one serving alone
    {"replicas": 1, "api_pools": [{"name": "oai", "provider": "openai", "model": "gpt-4o-mini",
                                   "rate_limits": {"requests_per_min": 120}, "retry": {"max_retries": 2}}]},
    {"replicas": 1, "response_cache": {"mode": "semantic", "hit_rate": 0.4, "false_hit_rate": 0.25,
                                       "capacity_entries": 20, "store_usd_per_hour": 0.5}},
])
def test_api_pools_and_response_cache_without_token_times_match_the_exact_run(fleet):
    """Whole requests written at once (api pools, the response cache) stream too: the same summary
    but ITL (within ALPHA, the same count and mean), the same token counts in every time-series
    row, and $/hour equal up to summation order, integrating to the same bill."""
    sc = scenario(duration_s=120.0, warmup_s=10.0, fleet=fleet)
    exact = Simulation(sc, exact_token_times=True).run()
    streamed = Simulation(sc, exact_token_times=False).run()
    assert streamed.table.token_time_s.size == 0
    assert _without(exact.summary, "itl_s") == _without(streamed.summary, "itl_s")
    a, b = exact.summary["itl_s"], streamed.summary["itl_s"]
    assert a["count"] == b["count"] > 0 and b["mean"] == pytest.approx(a["mean"], rel=1e-9)
    for q in ("p50", "p90", "p95", "p99"):
        assert abs(b[q] - a[q]) <= ALPHA * a[q]
    ts_a, ts_b = exact.timeseries, streamed.timeseries
    assert ts_a.pools == ts_b.pools and len(ts_a.pools) == 2
    for name in ("output_tokens_per_s", "arrivals_per_s", "completions_per_s"):
        np.testing.assert_array_equal(getattr(ts_a, name), getattr(ts_b, name), err_msg=name)
    np.testing.assert_allclose(ts_b.usd_per_hour, ts_a.usd_per_hour, rtol=1e-12, atol=1e-12)
    bill = streamed.bill.total_usd
    assert bill == exact.bill.total_usd
    assert (ts_b.usd_per_hour * ts_b.width_s).sum() / 3600 == pytest.approx(bill, rel=1e-9)
    assert (ts_b.output_tokens_per_s * ts_b.width_s).sum() == pytest.approx(streamed.table.generated.sum())


def _run(tmp_path, name, *args):
    out = tmp_path / name
    rc = main(["run", "configs/scenarios/poisson_8b_h100.yaml", "--set", "duration_s=100", "--set", "warmup_s=10",
               "--out", str(out), "--no-progress", *args])
    assert rc == 0
    return out


def test_request_records_modes(tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    full = _run(tmp_path, "full")
    sample = _run(tmp_path, "sample", "--request-records", "sample")
    again = _run(tmp_path, "again", "--request-records", "sample")
    none = _run(tmp_path, "none", "--request-records", "none")
    summaries = {p.name: (p / "summary.json").read_text() for p in (full, sample, none)}
    assert len(set(summaries.values())) == 1  # the summary does not depend on the records kept
    assert not (none / "requests.csv").exists() and (none / "summary.json").exists()
    rows = list(csv.DictReader((full / "requests.csv").open()))
    kept = list(csv.DictReader((sample / "requests.csv").open()))
    assert (sample / "requests.csv").read_text() == (again / "requests.csv").read_text()  # seeded
    by_id = {r["request_id"]: r for r in rows}
    assert 0 < len(kept) < len(rows) / 20
    assert all(by_id[r["request_id"]] == r for r in kept)  # sampled rows are full rows, unchanged


def test_request_records_scenario_key_and_the_flag_over_it(tmp_path, monkeypatch, capsys):
    """output.request_records sets the mode from the scenario; --request-records overrides it; a
    value outside full|sample|none is one line naming the key, exit 2."""
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    none = _run(tmp_path, "none", "--set", "output.request_records=none")
    assert not (none / "requests.csv").exists() and (none / "summary.json").exists()
    sample = _run(tmp_path, "sample", "--set", "output.request_records=none", "--request-records", "sample")
    full = _run(tmp_path, "full")
    assert 0 < len((sample / "requests.csv").read_text().splitlines()) < len((full / "requests.csv").read_text().splitlines()) / 20
    capsys.readouterr()
    rc = main(["run", "configs/scenarios/poisson_8b_h100.yaml", "--set", "output.request_records=some",
               "--out", str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "output.request_records" in err[0] and not (tmp_path / "bad").exists()
    rc = main(["run", "configs/scenarios/poisson_8b_h100.yaml", "--set", "output.records=none",
               "--out", str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "output.records" in err[0]


def test_start_up_over_a_link_too_slow_to_simulate_is_refused(capsys):
    rc = main(["run", "configs/scenarios/poisson_8b_h100.yaml", "--set", "duration_s=100",
               "--set", "fleet.cold_start.weights_gb_per_s=1.0e-9", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fleet.cold_start.weights_gb_per_s" in err[0]


@pytest.mark.parametrize("cost", [{"allocation": "tokens", "prefill_weight": 0.25, "decode_weight": 3.0},
                                  {"allocation": "equal"}, {"allocation": "tokens", "decode_weight": 0.0}])
def test_weights_computed_in_the_kernel_give_the_same_dollars(cost):
    """The ledger no longer holds a float weight per member: the arithmetic in place must give the
    dollars of the float weights (`member_weights`) through the plain-Python allocation, with int32
    member columns."""
    from simcost.cost.ledger import allocate_records_py, allocate_weighted_records, member_weights
    from simcost.scenario.pricing import CostConfig

    sc = scenario(engine={"policy": "chunked"})
    steps = Simulation(sc).run().steps
    cfg = CostConfig(**cost)
    step_usd = np.random.default_rng(0).uniform(0, 1e-3, len(steps.step_end_s))
    n = int(steps.member_request.max()) + 1
    want = allocate_records_py(step_usd, steps.record_step_offset, steps.record_member_offset,
                               steps.member_request.astype(np.int64), member_weights(steps, cfg), n)
    got = allocate_weighted_records(step_usd, steps.record_step_offset, steps.record_member_offset,
                                    steps.member_request, steps.member_tokens, steps.member_prefill,
                                    cfg.prefill_weight, cfg.decode_weight, cfg.allocation == "equal", n)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert steps.member_request.dtype == np.int32 and steps.member_tokens.dtype == np.int32


@pytest.mark.parametrize("seed", range(3))
def test_step_log_in_small_chunks_matches_a_plain_python_log(seed, monkeypatch):
    """Chunked columns (here 64-byte chunks, so every record crosses several) give the arrays a
    plain list of the same records gives (spans, steps and single steps with scalar ends); a span's members' tokens and prompt flags, never
    stored, come out as its steps and False; arrays() is the log's end."""
    from simcost.cost.step_log import StepLog, _Column

    monkeypatch.setattr(_Column, "CHUNK_BYTES", 64)
    rng = np.random.default_rng(seed)
    log, ref, t = StepLog(), [], 0.0
    for _ in range(int(rng.integers(1, 60))):
        replica, members = int(rng.integers(0, 4)), rng.choice(500, int(rng.integers(1, 30)), replace=False).astype(np.int32)
        ends = t + np.cumsum(rng.uniform(0.001, 0.05, int(rng.integers(1, 12))))
        if rng.random() < 0.6:
            log.add_span(replica, t, ends, members)
            ref.append((replica, t, ends, [len(members)] * len(ends), members, [len(ends)] * len(members), [False] * len(members)))
        elif rng.random() < 0.5:
            tokens, prefill = rng.integers(1, 900, len(members)), rng.random(len(members)) < 0.5
            step_tokens = rng.integers(1, 5000, len(ends))
            log.add(replica, t, ends, step_tokens, members, tokens, prefill=True, member_prefill=prefill)
            ref.append((replica, t, ends, list(step_tokens), members, list(tokens), list(prefill)))
        else:  # one step, its end and tokens as scalars; no prompt flags given: all prompt tokens
            tokens, step_tokens = rng.integers(1, 900, len(members)), int(rng.integers(1, 5000))
            given = rng.random(len(members)) < 0.5 if rng.random() < 0.5 else None
            log.add_step(replica, t, float(ends[0]), step_tokens, members, tokens, given)
            ends = ends[:1]
            ref.append((replica, t, ends, [step_tokens], members, list(tokens),
                        list(given) if given is not None else [True] * len(members)))
        t = float(ends[-1])
    steps = log.arrays()
    flat = lambda i: [v for r in ref for v in r[i]]  # noqa: E731
    np.testing.assert_array_equal(steps.step_end_s, flat(2))
    np.testing.assert_array_equal(steps.step_start_s, [s for r in ref for s in [r[1], *r[2][:-1]]])
    np.testing.assert_array_equal(steps.step_replica, [r[0] for r in ref for _ in r[2]])
    np.testing.assert_array_equal(steps.step_tokens, flat(3))
    np.testing.assert_array_equal(steps.member_request, flat(4))
    np.testing.assert_array_equal(steps.member_tokens, flat(5))
    np.testing.assert_array_equal(steps.member_prefill, flat(6))
    assert log.arrays() is steps and len(log) == len(ref)
    with pytest.raises(RuntimeError):
        log.add_span(0, t, np.array([t + 1.0]), np.array([1], dtype=np.int32))


def test_settle_allocates_spans_as_the_plain_python_twin_does():
    """settle's kernel reads a span's members' tokens from the record: the dollars per request are
    those of the plain-Python allocation over the spelled-out weights."""
    from simcost.cost.ledger import allocate_records_py, member_weights

    r = Simulation(scenario(cost={"allocation": "tokens", "prefill_weight": 0.5, "decode_weight": 2.0})).run()
    steps, bill = r.steps, r.bill
    assert steps.record_span.any()
    want = allocate_records_py(bill.step_usd, steps.record_step_offset, steps.record_member_offset,
                               steps.member_request.astype(np.int64), member_weights(steps, r.scenario.cost),
                               r.table.num_requests)
    np.testing.assert_allclose(bill.request_usd, want, rtol=1e-12, atol=1e-15)


def test_stream_tokens_refuses_bins_too_small_without_counting_anything():
    """The fused kernel checks the interval table's size before writing: the caller grows it and
    calls again, so no token is counted twice or lost."""
    from simcost.workload.request_table import RequestTable
    from simcost.workload.requests import Requests

    table = RequestTable(Requests(arrival_s=np.array([0.0, 0.5]), input_tokens=np.array([3, 4]),
                                  output_tokens=np.array([50, 50])), exact_token_times=False, interval_s=0.25)
    table.replica[:] = [0, 40]  # a replica beyond the initial rows
    ends = np.arange(1, 21) * 1.0  # and times beyond the initial intervals
    table.emit_tokens(np.array([0, 1]), ends)
    streamed = table.streamed
    bins = dense_bins(streamed.bins, int(streamed.used[0]), 41, 100)
    assert bins.sum() == 40 and bins[0].sum() == bins[40].sum() == 20
    assert [int(np.flatnonzero(bins[0])[k]) for k in (0, -1)] == [4, 80]  # t = 1 s and 20 s at 0.25 s
    assert table.streamed.itl.count == 2 * 19  # the first token of each has no gap before it


@pytest.mark.parametrize("seed", range(6))
def test_plan_decode_span_matches_its_twin(seed):
    from simcost.engine.decode_kernels import plan_decode_span, plan_decode_span_py

    rng = np.random.default_rng(seed)
    n_req = 40
    ids = rng.choice(n_req, size=int(rng.integers(1, 20)), replace=False).astype(np.int64)
    output = rng.integers(2, 300, n_req).astype(np.int64)
    generated = (output * rng.uniform(0, 0.99, n_req)).astype(np.int64)
    kv_tokens = rng.integers(1, 3000, n_req).astype(np.int64)
    kv_blocks = -(-kv_tokens // 16)
    args = (ids, output, generated, kv_tokens, kv_blocks, int(rng.integers(0, 40)), 16, int(rng.integers(1, 400)))
    k, kv_sum = plan_decode_span(*args)
    assert (int(k), int(kv_sum)) == plan_decode_span_py(*args)
    assert k <= (output[ids] - generated[ids]).min()


@pytest.mark.parametrize("seed", range(6))
def test_step_shape_matches_its_twin(seed):
    from simcost.engine.decode_kernels import step_shape, step_shape_py

    rng = np.random.default_rng(seed)
    n_req = 30
    ids = rng.choice(n_req, size=int(rng.integers(1, 12)), replace=False).astype(np.int64)
    target = rng.integers(1, 4000, n_req).astype(np.int64)
    kv = np.where(rng.random(n_req) < 0.5, target + rng.integers(0, 200, n_req), rng.integers(0, 4000, n_req) % target)
    tokens = np.where(kv[ids] >= target[ids], 1, np.maximum(1, target[ids] - kv[ids]))
    a, b = np.empty(len(ids), dtype=bool), np.empty(len(ids), dtype=bool)
    assert tuple(int(v) for v in step_shape(ids, tokens, kv, target, a)) == step_shape_py(ids, tokens, kv, target, b)
    np.testing.assert_array_equal(a, b)
