"""simcost from Python, the FinOps commands: `levers`, `forecast` and `commitments`, the library
form of the commands of the same name (simcost.api has `run`, `sweep` and `size`).

    >>> import simcost
    >>> study = simcost.levers("configs/example.yaml", only=["fp8", "spot"], jobs=2)   # doctest: +SKIP
    >>> study.to_pandas()[["label", "usd_per_month", "roi"]]                             # doctest: +SKIP

Each returns an object with `.summary` (the dict its result.json holds), `.to_pandas()` (its CSV's
rows; needs pandas: pip install 'simcost[notebook]'), a one-line `repr`, the console table in
Jupyter, and `.write(folder)`, which writes the folder the command writes, whole or not at all.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from simcost.api import Run, ScenarioLike, load, pandas_module
from simcost.errors import InputError

# --- levers ---------------------------------------------------------------------------------


def levers(scenario: ScenarioLike, *, levers: str | Path | dict | None = None, only: list[str] | None = None,
           resize: bool = True, max_replicas: int = 16, seeds: int = 1, jobs: int = 1, seed: int | None = None,
           overrides: dict | None = None, out: str | Path | None = None, progress: bool = True) -> Levers:
    """`simcost levers`: each optimisation lever alone on the baseline, ranked by ROI. `levers` is
    a levers YAML's path or a dict of the same keys (effort, risk and knobs per lever); `only`
    names the levers to try; `resize=False` is the CLI's --fixed-fleet."""
    from simcost.analysis.levers import study
    from simcost.analysis.levers_config import LeversConfig, load_levers
    from simcost.scenario.schema import build

    cfg = build(LeversConfig, levers, "levers") if isinstance(levers, dict) else load_levers(levers)
    base = load(scenario, seed=seed, overrides=overrides)
    outcome = Levers(study(base, cfg, tuple(only) if only else None, resize, max_replicas, seeds, jobs,
                           progress=progress))
    if out is not None:
        outcome.write(out)
    return outcome


class Levers:
    """A lever study: `.rows` ranked, the baseline first. `.result` is the LeverStudy."""

    def __init__(self, result: Any):
        self.result = result
        self.paths: dict[str, Path] = {}

    @property
    def rows(self) -> list[dict]:
        return self.result.rows

    @property
    def summary(self) -> dict:
        from simcost.analysis.levers_outputs import json_default, study_json

        return json.loads(json.dumps(study_json(self.result), default=json_default))

    def to_pandas(self, table: str = "levers"):
        from simcost.analysis.levers_outputs import CSV_COLUMNS

        _one_table(table, "levers")
        return pandas_module().DataFrame([{k: row.get(k) for k in CSV_COLUMNS} for row in self.rows])

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """The folder `simcost levers --out out_dir` writes; {name: path} of its files."""
        from simcost.analysis.levers_outputs import write_outputs

        self.paths = _staged(Path(out_dir), lambda tmp: write_outputs(self.result, tmp))
        return self.paths

    def __repr__(self) -> str:
        best = next((r for r in self.rows if r["lever"] != "baseline" and r["status"] == "ok" and r["rank"] == 1), None)
        saving = (best or {}).get("saving_usd_per_month") or 0.0
        top = f"; best {best['label']} saves ${saving:,.0f}/month" if best and saving > 0 else "; none saves money"
        return f"<simcost.Levers {self.result.scenario}: {len(self.rows) - 1} levers{top}>"

    def _repr_html_(self) -> str:
        from simcost.analysis.levers_outputs import format_study

        return f"<pre>{html.escape(format_study(self.result))}</pre>"


# --- forecast -------------------------------------------------------------------------------

def forecast(scenario: ScenarioLike, *, months: int = 12, growth: float = 1.0, steps: dict[int, float] | None = None,
             seeds: int = 3, hours_per_month: float = 730.0, budget_usd_per_month: float | None = None,
             resize: bool = False, max_replicas: int | None = None, jobs: int = 1, seed: int | None = None,
             overrides: dict | None = None, out: str | Path | None = None, progress: bool = True) -> Forecast:
    """`simcost forecast`: monthly spend and SLO under load growing by `growth` a month
    (compounding), with `steps` {month: factor} jumps from that month on."""
    from simcost.analysis.forecast import GrowthPath
    from simcost.analysis.forecast import forecast as run_forecast

    if steps is not None and not isinstance(steps, dict):
        raise InputError("steps", f"a {type(steps).__name__}; expected a dict of month -> load factor, e.g. {{6: 2.0}}")
    path = GrowthPath(months, growth, tuple(sorted((steps or {}).items())))
    base = load(scenario, seed=seed, overrides=overrides)
    outcome = Forecast(run_forecast(base, path, seeds, hours_per_month, budget_usd_per_month, jobs, resize,
                                    max_replicas, progress=progress))
    if out is not None:
        outcome.write(out)
    return outcome


class Forecast:
    """A forecast: `.months`, one row per month. `.result` is the analysis' Forecast."""

    def __init__(self, result: Any):
        self.result = result
        self.paths: dict[str, Path] = {}

    @property
    def months(self) -> list:
        return self.result.months

    @property
    def summary(self) -> dict:
        from simcost.analysis.forecast_outputs import forecast_json

        return json.loads(json.dumps(forecast_json(self.result), default=str))

    def to_pandas(self, table: str = "months"):
        from dataclasses import asdict

        _one_table(table, "months")
        return pandas_module().DataFrame([asdict(m) for m in self.months])

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """The folder `simcost forecast --out out_dir` writes; {name: path} of its files."""
        from simcost.analysis.forecast_outputs import write_outputs

        self.paths = _staged(Path(out_dir), lambda tmp: list(write_outputs(self.result, tmp)))
        return self.paths

    def __repr__(self) -> str:
        last = self.months[-1]
        return (f"<simcost.Forecast {self.result.scenario}: {self.result.path.describe()}; month {last.month} "
                f"${last.usd_per_month_mean:,.0f}/month on {last.fleet} replicas, SLO "
                f"{'met' if last.meets_slo else 'NOT met'}>")

    def _repr_html_(self) -> str:
        from simcost.analysis.forecast_outputs import format_report

        return f"<pre>{html.escape(format_report(self.result))}</pre>"


# --- commitments ----------------------------------------------------------------------------

def commitments(run_or_scenario: Run | ScenarioLike, *, reserved_usd_per_device_hour: float | None = None,
                discount: float | None = None, basis: str = "provisioned", period_s: float = 3600.0,
                week: bool = True, seed: int | None = None, overrides: dict | None = None,
                out: str | Path | None = None, progress: bool = True) -> Commitments:
    """`simcost commitments`: the reserved and savings-plan commitments for a run's demand. Give
    a `simcost.run(...)` result, or a scenario to run first."""
    from simcost.analysis.commitments import plan_from_run

    if basis not in ("provisioned", "busy"):
        raise InputError("basis", f"'{basis}'; expected provisioned or busy")
    if discount is not None and not 0 <= discount < 1:
        raise InputError("discount", f"{discount}; expected 0 <= discount < 1")
    if isinstance(run_or_scenario, Run):
        if seed is not None or overrides:
            raise InputError("run_or_scenario", "a finished run cannot take seed or overrides; pass its scenario instead")
        result = run_or_scenario.result
    else:
        from simcost.simulation.simulation import Simulation

        result = Simulation(load(run_or_scenario, seed=seed, overrides=overrides)).run(progress=progress)
    plan = plan_from_run(result, reserved_usd_per_device_hour, discount, basis, period_s, week=week)
    outcome = Commitments(plan, result.scenario.name)
    if out is not None:
        outcome.write(out)
    return outcome


class Commitments:
    """Both commitment plans for a run's demand and the cheaper one. `.plan` is the CommitmentPlan."""

    def __init__(self, plan: Any, scenario: str):
        self.plan, self.scenario = plan, scenario
        self.paths: dict[str, Path] = {}

    @property
    def best(self) -> str:
        return self.plan.best

    @property
    def summary(self) -> dict:
        from simcost.analysis.commitments_outputs import plan_json

        return plan_json(self.plan, self.scenario)

    def to_pandas(self, table: str = "hours"):
        from simcost.analysis.commitments_outputs import hourly_rows

        _one_table(table, "hours")
        return pandas_module().DataFrame(hourly_rows(self.plan))

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """The folder `simcost commitments --out out_dir` writes; {name: path} of its files."""
        from simcost.analysis.commitments_outputs import write_commitments

        self.paths = write_commitments(self.plan, self.scenario, Path(out_dir))
        return self.paths

    def __repr__(self) -> str:
        s = self.summary
        choice = s[self.best] if self.best != "on_demand" else None
        saving = f", saves ${choice['saving_usd']:,.0f} ({choice['saving_fraction']:.1%})" if choice else ""
        return f"<simcost.Commitments {self.scenario}: best {self.best} over {s['hours']} hours{saving}>"

    def _repr_html_(self) -> str:
        from simcost.analysis.commitments import format_plan

        return f"<pre>{html.escape(format_plan(self.plan))}</pre>"


# --- shared ---------------------------------------------------------------------------------

def _one_table(table: str, name: str) -> None:
    if table != name:
        raise InputError("to_pandas", f"unknown table '{table}'; this result has one: {name}")


def _staged(out_dir: Path, write) -> dict[str, Path]:
    """Write into a staging folder and publish it whole, as the CLI does; {file name: final path}."""
    from simcost.results.folder import staged_folder

    with staged_folder(out_dir, ()) as tmp:
        written = write(tmp)
    return {p.name: out_dir / p.name for p in written}
