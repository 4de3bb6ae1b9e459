"""Sweeps: the three designs (grid size, Latin-hypercube strata, random
bounds and log scale, reproducible from the seed), the t confidence interval on hand-computed
numbers, the result cache (hits, misses on a changed trace, resume counts), failure isolation,
and the Ray backend giving the local backend's rows. Scenarios are tiny (constant step times,
a few dozen requests) so each sweep takes about a second; Ray starts once for the module."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
import yaml
from scenarios import BASE, merge
from scipy import stats

from simcost.analysis import backends
from simcost.analysis import sweep as sweep_mod
from simcost.analysis.sweep import mean_ci, metrics, point_overrides, sweep
from simcost.analysis.sweep_cache import data_files, run_key
from simcost.analysis.sweep_space import Axis, Space, points, space_from_dict, space_from_flags
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.scenario.scenario import scenario_from_dict
from simcost.simulation.simulation import run

TINY = merge(BASE, {
    "duration_s": 10.0,
    "perf": {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02},
    "workload": {"arrivals": {"process": "poisson", "rate_per_s": 4.0},
                 "input_tokens": {"dist": "uniform", "low": 50, "high": 400},
                 "output_tokens": {"dist": "uniform", "low": 1, "high": 20}},
    "slo": {"ttft_s": 0.5},
})
REPLICAS_X_RATE = Space((Axis("fleet.replicas", values=(1, 2)), Axis("workload.arrivals.rate_per_s", values=(2.0, 6.0))))


@pytest.fixture
def scenario_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def counted(monkeypatch):
    """Counts the simulations that really run (jobs=1 runs them in this process)."""
    calls = []

    def counting_run(scenario):
        calls.append(scenario)
        return run(scenario)

    monkeypatch.setattr(sweep_mod, "run", counting_run)
    return calls


# --- designs --------------------------------------------------------------------------------

def test_grid_is_every_combination_once():
    space = Space((Axis("a", values=(1, 2, 3)), Axis("b", values=("x", "y")), Axis("c", values=(None, 0.5))))
    pts = points(space)
    assert len(pts) == 3 * 2 * 2
    assert {tuple(p.values()) for p in pts} == {(a, b, c) for a in (1, 2, 3) for b in "xy" for c in (None, 0.5)}


def test_latin_hypercube_puts_one_point_in_each_stratum_of_every_key():
    n = 12
    space = space_from_dict({"design": "lhs", "points": n, "seed": 3, "keys": {
        "lin": {"low": 2, "high": 20}, "log": {"low": 1, "high": 1000, "log": True},
        "pick": [10, 20, 30, 40]}})
    pts = points(space)
    lin = np.array([p["lin"] for p in pts])
    log = np.array([p["log"] for p in pts])
    assert sorted(np.floor((lin - 2) / 18 * n).astype(int)) == list(range(n))
    assert sorted(np.floor(np.log(log) / np.log(1000) * n).astype(int)) == list(range(n))  # strata on the log scale
    # 12 strata pooled into 4 values: 3 points each
    assert sorted(p["pick"] for p in pts) == [10] * 3 + [20] * 3 + [30] * 3 + [40] * 3


def test_random_design_stays_in_bounds_and_draws_log_ranges_on_the_log_scale():
    n = 4000
    space = space_from_dict({"design": "random", "points": n, "seed": 11, "keys": {
        "lin": {"low": 5, "high": 7}, "log": {"low": 0.01, "high": 100, "log": True},
        "int": {"low": 1, "high": 4, "integer": True}}})
    pts = points(space)
    lin, log, whole = (np.array([p[k] for p in pts]) for k in ("lin", "log", "int"))
    assert lin.min() >= 5 and lin.max() < 7 and log.min() >= 0.01 and log.max() < 100
    assert stats.kstest((lin - 5) / 2, "uniform").pvalue > 1e-3
    u = (np.log10(log) + 2) / 4  # uniform on [0, 1) when log-uniform
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert np.mean(log < 1) == pytest.approx(0.5, abs=0.04)  # half below the geometric midpoint, not 1 %
    assert all(type(p["int"]) is int for p in pts) and set(whole) == {1, 2, 3, 4}  # ints, for integer keys
    assert stats.chisquare(np.bincount(whole)[1:]).pvalue > 1e-3


@pytest.mark.parametrize("design", ["random", "lhs"])
def test_designs_are_reproducible_from_their_seed(design):
    def draw(seed):
        return points(space_from_dict({"design": design, "points": 8, "seed": seed,
                                       "keys": {"x": {"low": 0, "high": 1}, "y": [1, 2, 3]}}))

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


@pytest.mark.parametrize("raw, where", [
    ({"design": "grid", "keys": {"x": {"low": 0, "high": 1}}}, "keys.x"),
    ({"design": "lhs", "keys": {"x": [1, 2]}}, "points"),
    ({"design": "random", "points": 4, "keys": {"x": {"low": 0, "high": 1, "log": True}}}, "keys.x.low"),
    ({"design": "random", "points": 4, "keys": {"x": {"low": 3, "high": 1}}}, "keys.x"),
    ({"design": "cube", "keys": {"x": [1]}}, "design"),
    ({"design": "grid", "keys": {"x": {"values": [1], "low": 0}}}, "keys.x"),
])
def test_bad_space_is_an_input_error_naming_the_key(raw, where):
    with pytest.raises(InputError, match=f"space: {where}"):
        space_from_dict(raw)


def test_flags_need_one_values_per_param():
    assert points(space_from_flags(["a", "b"], [[1, 2], [3]])) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    with pytest.raises(InputError, match="--values"):
        space_from_flags(["a", "b"], [[1, 2]])
    with pytest.raises(InputError, match="--param a: given twice"):
        space_from_flags(["a", "a"], [[1], [2]])


def test_point_values_reach_the_scenario_with_their_types():
    # a float YAML would read as a string (1e-05) and a string that looks like a number
    texts = point_overrides({"a": 1e-05, "b": "1", "c": {"process": "poisson", "rate_per_s": 2.5e-7}})
    assert [yaml.safe_load(t.split("=", 1)[1]) for t in texts] == [1e-05, "1", {"process": "poisson", "rate_per_s": 2.5e-7}]


# --- confidence intervals -------------------------------------------------------------------

def test_confidence_interval_on_known_numbers():
    # 1..5: mean 3, s = sqrt(2.5); t(0.975, 4) = 2.776445 (tables): half-width 2.776445 * sqrt(2.5 / 5)
    mean, low, high = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3 and (high - mean) == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-6)
    assert mean - low == pytest.approx(high - mean)
    # two values 10 and 12: s = sqrt(2), t(0.975, 1) = 12.706205; half = 12.706205 * sqrt(2) / sqrt(2)
    assert mean_ci([10, 12])[1:] == pytest.approx((11 - 12.706205, 11 + 12.706205))
    assert mean_ci([7.0]) == (7.0, None, None)
    assert mean_ci([None, 4.0, None, 6.0])[0] == 5.0  # undefined values (no requests) are left out
    assert mean_ci([None]) == (None, None, None)


def test_seeds_give_the_mean_and_interval_of_the_single_seed_runs(scenario_file, tmp_path):
    result = sweep(scenario_file, Space((Axis("fleet.replicas", values=(1,)),)), tmp_path / "out", seeds=3,
                   run_folders=False)
    (r,) = result.rows
    single = [metrics(run(scenario_from_dict(TINY, seed=TINY["seed"] + k)).summary) for k in range(3)]
    for m in ("p99_ttft_s", "usd_per_1m_output_tokens", "requests_per_s"):
        mean, low, high = mean_ci([s[m] for s in single])
        assert (r[m], r[f"{m}_ci95_low"], r[f"{m}_ci95_high"]) == pytest.approx((mean, low, high))
    assert r["seeds"] == 3 and r["meets_slo"] == all(s["meets_slo"] for s in single)
    assert len({s["p99_ttft_s"] for s in single}) == 3  # the seeds are different runs


# --- cache ----------------------------------------------------------------------------------

def test_run_key_follows_the_resolved_scenario_and_seed():
    raw = scenario_from_dict(TINY)
    from simcost.scenario.schema import to_dict

    a = to_dict(raw)
    assert run_key(a) == run_key(json.loads(json.dumps(a)))
    assert run_key(a) != run_key({**a, "seed": a["seed"] + 1})
    assert run_key(a) != run_key(to_dict(scenario_from_dict(TINY, ("engine.max_num_seqs=8",))))


def test_a_sweep_resumes_without_rerunning_finished_runs(scenario_file, tmp_path, counted):
    out = tmp_path / "out"
    first = sweep(scenario_file, REPLICAS_X_RATE, out, run_folders=False)
    assert (first.executed, first.cached, len(counted)) == (4, 0, 4)
    again = sweep(scenario_file, REPLICAS_X_RATE, out, run_folders=False)
    assert (again.executed, again.cached, len(counted)) == (0, 4, 4)
    assert again.rows == first.rows
    for entry in sorted((out / "cache").glob("*.json"))[:2]:  # as if the sweep had stopped early
        entry.unlink()
    resumed = sweep(scenario_file, REPLICAS_X_RATE, out, run_folders=False)
    assert (resumed.executed, resumed.cached, len(counted)) == (2, 2, 6)
    assert resumed.rows == first.rows
    # an extended sweep runs only its new points
    wider = Space((REPLICAS_X_RATE.axes[0], Axis("workload.arrivals.rate_per_s", values=(2.0, 6.0, 9.0))))
    extended = sweep(scenario_file, wider, out, run_folders=False)
    assert (extended.executed, extended.cached, len(counted)) == (2, 4, 8)


def test_a_changed_trace_file_is_a_cache_miss(tmp_path, counted):
    trace = tmp_path / "trace.csv"
    trace.write_text("t,i,o\n" + "".join(f"{k * 0.5},{100 + k},{5 + k % 3}\n" for k in range(20)))
    raw = merge(TINY, {"workload": {"trace": {"name": str(trace), "columns": {
        "arrival": "t", "input_tokens": "i", "output_tokens": "o"}}}})
    path = tmp_path / "traced.yaml"
    path.write_text(yaml.safe_dump(raw))
    space = Space((Axis("fleet.replicas", values=(1, 2)),))
    assert sweep(path, space, tmp_path / "out", run_folders=False).executed == 2
    assert sweep(path, space, tmp_path / "out", run_folders=False).executed == 0
    trace.write_text(trace.read_text().replace(",100,", ",900,"))  # one request's prompt changes
    changed = sweep(path, space, tmp_path / "out", run_folders=False)
    assert (changed.executed, changed.cached, len(counted)) == (2, 0, 4)
    assert list(data_files({"workload": {"trace": {"name": str(trace)}}})) == [str(trace)]
    assert data_files({"workload": {"trace": {"name": "azure_conv"}}})  # bundled names resolve to their files


# --- failures -------------------------------------------------------------------------------

def test_a_failing_point_does_not_stop_the_sweep(scenario_file, tmp_path, counted):
    # the 70B model's weights do not fit one H100: found only when the run plans its deployment
    space = Space((Axis("model.name", values=("llama-3.1-8b", "llama-3.1-70b")), Axis("fleet.replicas", values=(1, 2))))
    result = sweep(scenario_file, space, tmp_path / "out", run_folders=False)
    status = {(r["model.name"], r["fleet.replicas"]): r["status"] for r in result.rows}
    assert status == {("llama-3.1-8b", 1): "ok", ("llama-3.1-8b", 2): "ok",
                      ("llama-3.1-70b", 1): "error", ("llama-3.1-70b", 2): "error"}
    bad = [r for r in result.rows if r["status"] == "error"]
    assert all("weights" in r["error"] and r["p99_ttft_s"] is None for r in bad)
    assert result.failed == 2 and len(counted) == 4
    assert len(list((tmp_path / "out" / "cache").glob("*.json"))) == 2  # only the good runs are stored
    written = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["status"] for r in written] == [r["status"] for r in result.rows]
    assert "error" in (tmp_path / "out" / "sweep.csv").read_text().splitlines()[0].split(",")


def test_any_exception_in_a_run_is_reported_and_retried_next_time(scenario_file, tmp_path, monkeypatch):
    def flaky(scenario):
        if scenario.fleet.replicas == 2:
            raise RuntimeError("worker lost its GPU")
        return run(scenario)

    monkeypatch.setattr(sweep_mod, "run", flaky)
    space = Space((Axis("fleet.replicas", values=(1, 2, 3)),))
    result = sweep(scenario_file, space, tmp_path / "out", run_folders=False)
    assert [r["status"] for r in result.rows] == ["ok", "error", "ok"]
    assert result.rows[1]["error"] == "RuntimeError: worker lost its GPU"
    monkeypatch.setattr(sweep_mod, "run", run)
    retried = sweep(scenario_file, space, tmp_path / "out", run_folders=False)
    assert (retried.executed, retried.cached, retried.failed) == (1, 2, 0)  # failures are not cached


def test_a_point_with_bad_values_is_reported_without_running(scenario_file, tmp_path, counted):
    result = sweep(scenario_file, Space((Axis("engine.max_num_seqs", values=(0, 8)),)), tmp_path / "out", run_folders=False)
    assert [r["status"] for r in result.rows] == ["error", "ok"]
    assert result.rows[0]["error"].startswith("engine.max_num_seqs") and len(counted) == 1
    with pytest.raises(InputError, match="every point failed to resolve.*fleet.replicas"):
        sweep(scenario_file, Space((Axis("fleet.replicas", values=(0, -1)),)), tmp_path / "out2")


def test_cli_exit_status_is_non_zero_only_when_every_point_fails(scenario_file, tmp_path, capsys):
    common = [str(scenario_file), "--jobs", "1", "--no-run-folders"]
    ok = main(["sweep", *common, "--param", "model.name", "--values", "llama-3.1-8b,llama-3.1-70b",
               "--out", str(tmp_path / "a")])
    assert ok == 0 and "failed: hardware.tensor_parallel" in capsys.readouterr().out
    bad = main(["sweep", *common, "--param", "model.name", "--values", "llama-3.1-70b", "--out", str(tmp_path / "b")])
    assert bad == 1 and "every point failed" in capsys.readouterr().err


# --- outputs and the command ----------------------------------------------------------------

def test_cli_space_file_lhs_with_seeds_writes_table_and_frontier(scenario_file, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(sort_keys=False, data={"design": "lhs", "points": 2, "seed": 1, "keys": {
        "workload.arrivals.rate_per_s": {"low": 1, "high": 8, "log": True}, "fleet.replicas": [1, 2, 3]}}))
    out = tmp_path / "out"
    assert main(["sweep", str(scenario_file), "--space", str(space), "--seeds", "2", "--jobs", "1",
                 "--out", str(out)]) == 0
    header = (out / "sweep.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["workload.arrivals.rate_per_s", "fleet.replicas", "p50_ttft_s"]
    assert {"p99_ttft_s_ci95_low", "p99_ttft_s_ci95_high", "seeds", "status", "error"} <= set(header)
    rows = json.loads((out / "sweep.json").read_text())
    assert len(rows) == 2 and all(1 <= r["workload.arrivals.rate_per_s"] < 8 for r in rows)
    assert (out / "frontier.png").stat().st_size > 1000 and not (out / "sweep.png").exists()  # two keys
    assert (out / rows[0]["run_dir"] / f"seed={TINY['seed'] + 1}" / "summary.json").exists()


def test_progress_bar_knows_its_total_so_it_can_estimate_time_left():
    bar = backends.progress_items((i for i in range(3)), True, "sweep", total=3)
    assert list(bar) == [0, 1, 2] and bar.total == 3  # a generator has no len(): without total, no ETA


# --- backends -------------------------------------------------------------------------------

def test_ray_missing_is_one_clear_line(scenario_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(InputError, match=r"pip install 'simcost\[ray\]'"):
        sweep(scenario_file, REPLICAS_X_RATE, tmp_path / "out", backend="ray")


def test_two_local_workers_write_what_one_process_writes(scenario_file, tmp_path):
    """--jobs 2 runs the points and then draws the sweep's figures in its worker processes: the
    table, the run folders and both figures are those of --jobs 1."""
    serial = sweep(scenario_file, REPLICAS_X_RATE, tmp_path / "one", jobs=1)
    parallel = sweep(scenario_file, REPLICAS_X_RATE, tmp_path / "two", jobs=2)
    assert parallel.executed == serial.executed == 4 and parallel.rows == serial.rows
    for name in ("sweep.csv", "sweep.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    assert set(parallel.paths) == set(serial.paths) == {"csv", "json", "frontier"}  # two keys: no sweep.png
    assert parallel.paths["frontier"].stat().st_size > 1000
    for row in parallel.rows:
        for name in ("summary.json", "requests.csv"):
            one, two = (tmp_path / side / row["run_dir"] / name for side in ("one", "two"))
            assert two.read_bytes() == one.read_bytes()


def test_a_figure_that_fails_in_a_worker_fails_the_sweep(scenario_file, tmp_path, monkeypatch):
    """With --jobs 2 the sweep's figures draw in a worker process, and one that fails there raises
    in the parent, as it would drawn there: no sweep folder claims a figure it does not have."""
    monkeypatch.setattr(sweep_mod, "plot_frontier", _broken_figure)
    with pytest.raises(RuntimeError, match="no frontier") as failure:
        sweep(scenario_file, REPLICAS_X_RATE, tmp_path / "out", jobs=2, run_folders=False)
    assert int(str(failure.value).split()[-1]) != os.getpid()  # drawn in a worker
    assert not (tmp_path / "out" / "sweep.csv").exists()


def _broken_figure(*args):
    raise RuntimeError(f"no frontier in process {os.getpid()}")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (it takes several seconds to start)."""
    pytest.importorskip("ray", reason="Ray is the optional extra simcost[ray]; pip install 'simcost[ray]'")
    with backends.ray_session(None, num_cpus=2) as ray:
        yield ray


def test_ray_and_local_backends_give_identical_rows(scenario_file, tmp_path, local_ray):
    space = Space((Axis("model.name", values=("llama-3.1-8b", "llama-3.1-70b")), REPLICAS_X_RATE.axes[1]))
    local = sweep(scenario_file, space, tmp_path / "local", jobs=2, seeds=2, run_folders=False)
    on_ray = sweep(scenario_file, space, tmp_path / "ray", jobs=2, seeds=2, backend="ray", run_folders=False)
    assert on_ray.executed == local.executed == 4 * 2 and on_ray.cached == 0
    assert on_ray.rows == local.rows
    assert [r["status"] for r in on_ray.rows] == ["ok", "ok", "error", "error"]  # failures stay per point
    assert on_ray.rows[0]["p99_ttft_s_ci95_low"] < on_ray.rows[0]["p99_ttft_s"]  # real runs, not empty rows
    assert local_ray.is_initialized()  # a session the sweep did not start is left running
