"""The FinOps commands from Python (simcost.api_plans) give the CLI's answers: the same
result.json, the same CSV rows, the same folder, and the same one-line errors as exceptions."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from scenarios import BASE

import simcost
from simcost.cli.main import main
from simcost.errors import InputError

SHORT = {**BASE, "duration_s": 30}


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("api-plans") / "s.yaml"
    path.write_text(yaml.safe_dump(SHORT))
    return path


def cli(argv: list[str], capsys) -> None:
    assert main(argv) == 0
    capsys.readouterr()


def csv_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_levers_equal_the_cli_folder(scenario_file, tmp_path, capsys):
    study = simcost.levers(scenario_file, only=["fp8", "int8"], resize=False, levers={"usd_per_engineer_week": 5000},
                           progress=False)
    levers_file = tmp_path / "levers.yaml"
    levers_file.write_text("usd_per_engineer_week: 5000\n")
    cli(["levers", str(scenario_file), "--only", "fp8,int8", "--fixed-fleet", "--levers", str(levers_file),
         "--jobs", "1", "--out", str(tmp_path / "cli"), "-q"], capsys)
    assert study.summary == json.loads((tmp_path / "cli" / "result.json").read_text())
    assert study.summary["usd_per_engineer_week"] == 5000
    frame = study.to_pandas()
    assert list(frame["lever"]) == [r["lever"] for r in csv_rows(tmp_path / "cli" / "levers.csv")]
    paths = study.write(tmp_path / "api")
    assert set(paths) == {p.name for p in (tmp_path / "cli").iterdir()} == {"levers.csv", "levers.png", "result.json"}
    assert (tmp_path / "api" / "levers.csv").read_text() == (tmp_path / "cli" / "levers.csv").read_text()
    assert repr(study).startswith("<simcost.Levers ") and "\n" not in repr(study)


def test_forecast_equals_the_cli_and_grows_with_the_load(scenario_file, tmp_path, capsys):
    growth = simcost.forecast(scenario_file, months=3, growth=2.0, steps={3: 1.5}, seeds=1, progress=False)
    cli(["forecast", str(scenario_file), "--months", "3", "--growth", "2", "--step", "3:1.5", "--seeds", "1",
         "--jobs", "1", "--out", str(tmp_path / "cli"), "-q"], capsys)
    assert growth.summary == json.loads((tmp_path / "cli" / "result.json").read_text())
    frame = growth.to_pandas()
    assert list(frame["load_factor"]) == pytest.approx([1.0, 2.0, 6.0])
    assert [float(r["usd_per_month_mean"]) for r in csv_rows(tmp_path / "cli" / "forecast.csv")] == \
        pytest.approx(list(frame["usd_per_month_mean"]))
    assert set(growth.write(tmp_path / "api")) == {p.name for p in (tmp_path / "cli").iterdir()}


def test_commitments_from_a_run_or_a_scenario_equal_the_cli(scenario_file, tmp_path, capsys):
    run = simcost.run(scenario_file, progress=False)
    from_run = simcost.commitments(run, discount=0.25)
    from_scenario = simcost.commitments(scenario_file, discount=0.25, progress=False)
    cli(["commitments", str(scenario_file), "--discount", "0.25", "--out", str(tmp_path / "cli"), "-q"], capsys)
    expected = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert from_run.summary == from_scenario.summary == expected
    hours = from_run.to_pandas()
    assert len(hours) == expected["hours"] == len(csv_rows(tmp_path / "cli" / "commitments.csv"))
    # every hour's on-demand dollars are its devices at the on-demand price
    price = expected["reserved"]["on_demand_usd_per_device_hour"]
    assert (hours["on_demand_usd"] - hours["devices"] * price).abs().max() < 1e-9
    # the CSV and the figure share a stem: both are named
    assert set(from_run.write(tmp_path / "api")) == {"result.json", "commitments.csv", "commitments.png"}


@pytest.mark.parametrize("call, where", [
    (lambda s: simcost.levers(s, only=["nonsense"], progress=False), "--only"),
    (lambda s: simcost.levers(s, levers={"spot": {"share": 2}}, progress=False), "levers.spot.share"),
    (lambda s: simcost.forecast(s, months=0, progress=False), "--months"),
    (lambda s: simcost.forecast(s, steps=[(1, 2.0)], progress=False), "steps"),
    (lambda s: simcost.commitments(s, discount=1.5, progress=False), "discount"),
    (lambda s: simcost.commitments(s, basis="peak", progress=False), "basis"),
])
def test_bad_options_raise_input_error_naming_them(scenario_file, call, where):
    with pytest.raises(InputError) as error:
        call(scenario_file)
    assert str(error.value).startswith(where), str(error.value)


def test_one_table_each(scenario_file):
    plan = simcost.commitments(scenario_file, progress=False)
    with pytest.raises(InputError, match="this result has one: hours"):
        plan.to_pandas("requests")
