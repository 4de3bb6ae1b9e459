"""The Python API (simcost.api) gives the CLI's answers: the same summary for the same scenario
and seed, whatever form the scenario takes, with overrides applied as --set applies them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml
from scenarios import BASE, scenario

import simcost
from simcost.cli.main import main
from simcost.errors import InputError


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    return path


@pytest.fixture(scope="module")
def base_run(scenario_file):
    return simcost.run(scenario_file, seed=3, progress=False)


def plain(data):
    return json.loads(json.dumps(data))


def test_run_summary_equals_the_cli_summary_json(scenario_file, base_run, tmp_path, capsys):
    assert main(["run", str(scenario_file), "--seed", "3", "--out", str(tmp_path / "cli"), "-q"]) == 0
    capsys.readouterr()
    assert plain(base_run.summary) == json.loads((tmp_path / "cli" / "summary.json").read_text())
    # .write gives the CLI's folder: the same files, the same summary
    base_run.write(tmp_path / "api")
    assert {p.name for p in (tmp_path / "api").iterdir()} == {p.name for p in (tmp_path / "cli").iterdir()}
    assert (tmp_path / "api" / "summary.json").read_text() == (tmp_path / "cli" / "summary.json").read_text()


def test_path_dict_and_object_give_the_same_run(scenario_file, base_run):
    from_dict = simcost.run(dict(BASE), seed=3, progress=False)
    from_object = simcost.run(scenario(), seed=3, progress=False)
    assert plain(from_dict.summary) == plain(base_run.summary) == plain(from_object.summary)


def test_overrides_are_set_as_the_cli_sets_them(scenario_file, tmp_path, capsys):
    api = simcost.run(scenario_file, overrides={"fleet.replicas": 2, "engine.max_num_seqs": 8}, progress=False)
    assert api.summary["replicas"] == 2 and api.scenario.engine.max_num_seqs == 8
    assert main(["run", str(scenario_file), "--set", "fleet.replicas=2", "--set", "engine.max_num_seqs=8",
                 "--out", str(tmp_path / "cli"), "-q"]) == 0
    capsys.readouterr()
    assert plain(api.summary) == json.loads((tmp_path / "cli" / "summary.json").read_text())
    # a float override stays a float (written and read back as YAML, like a sweep point's)
    assert simcost.load(scenario_file, overrides={"workload.arrivals.rate_per_s": 1e-05}).workload.arrivals.rate_per_s == 1e-05


@pytest.mark.parametrize("kwargs, key", [
    ({"overrides": {"engine.max_num_seq": 3}}, r"engine\.max_num_seq"),
    ({"overrides": {"fleet.replicas": -1}}, r"fleet\.replicas"),
    ({"overrides": ["fleet.replicas=2"]}, "overrides"),
])
def test_bad_input_raises_input_error_naming_the_key(scenario_file, kwargs, key):
    with pytest.raises(InputError, match=key):
        simcost.load(scenario_file, **kwargs)
    with pytest.raises(InputError, match=key):
        simcost.load(dict(BASE), **kwargs)


def test_a_scenario_of_another_type_is_refused():
    with pytest.raises(InputError, match="scenario"):
        simcost.run(42, progress=False)  # type: ignore[arg-type]


def test_tables_add_up_to_the_summary(base_run):
    s = base_run.summary
    requests = base_run.to_pandas("requests")
    assert len(requests) == s["requests"]["arrived"]
    assert requests["cost_usd"].sum() == pytest.approx(s["cost"]["allocated_usd"], rel=1e-9)
    steps = base_run.to_pandas("steps")
    assert len(steps) == s["num_steps"]
    assert steps["cost_usd"].sum() == pytest.approx(s["cost"]["busy_usd"], rel=1e-9)  # no dollar lost
    assert (steps["duration_s"] == steps["end_s"] - steps["start_s"]).all()
    series = base_run.to_pandas("timeseries")
    ts = base_run.result.timeseries
    assert len(series) == len(ts.t_s) * len(ts.pools)
    assert np.allclose(series["t_s"].unique(), ts.t_s)
    costs = base_run.to_pandas("costs")
    assert costs["EffectiveCost"].astype(float).sum() == pytest.approx(s["cost"]["total_usd"], rel=1e-9)
    with pytest.raises(InputError, match="unknown table 'nope'"):
        base_run.to_pandas("nope")


def test_to_pandas_without_pandas_names_the_extra(base_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'simcost\[notebook\]'"):
        base_run.to_pandas("requests")


def test_repr_is_one_line_with_the_headline(base_run):
    text = repr(base_run)
    s = base_run.summary
    assert "\n" not in text and f"{s['requests']['arrived']:,} requests" in text
    assert "TTFT p50/p99" in text and "$6.88/hour" in text and ("SLO met" in text or "SLO NOT met" in text)
    html = base_run._repr_html_()
    assert html.startswith("<table>") and "TTFT p50 / p90 / p99" in html


def test_sweep_rows_match_single_runs(scenario_file):
    result = simcost.sweep(dict(BASE), {"fleet.replicas": [1, 2]}, seed=3, progress=False)
    assert [r["fleet.replicas"] for r in result.rows] == [1, 2] and result.summary["failed"] == 0
    single = simcost.run(scenario_file, seed=3, overrides={"fleet.replicas": 2}, progress=False)
    assert result.rows[1]["p99_ttft_s"] == pytest.approx(single.summary["ttft_s"]["p99"])
    from_path = simcost.sweep(scenario_file, {"fleet.replicas": [1, 2]}, seed=3, progress=False)
    assert from_path.rows == result.rows
    assert list(result.to_pandas()["fleet.replicas"]) == [1, 2]
    with pytest.raises(InputError, match="grid: fleet.replicas"):
        simcost.sweep(scenario_file, {"fleet.replicas": []})


def test_size_with_an_unreachable_slo_chooses_nothing_and_says_so():
    sizing = simcost.size(dict(BASE), devices="h100-sxm", slo={"ttft_s": 1e-6}, max_replicas=2, progress=False)
    assert sizing.scenario.slo.ttft_s == 1e-6
    assert sizing.chosen is None and sizing.summary["chosen"] is None
    assert "no option meets the SLO within 2 replicas" in repr(sizing)
    assert sizing.to_pandas()["feasible"].tolist() == [False]
    with pytest.raises(InputError, match=r"slo\.ttft_sec"):
        simcost.size(dict(BASE), devices="h100-sxm", slo={"ttft_sec": 1.0})
