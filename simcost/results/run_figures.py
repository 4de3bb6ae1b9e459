"""What a run's background process makes (`simcost.results.background`): latency.png and
timeseries.png from small inputs (CDF points, the time series), and focus.parquet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from simcost.metrics.latency import latencies, slo_limits_by_entry
from simcost.results.background import Job
from simcost.results.focus import write_focus_parquet
from simcost.results.focus_table import FocusTable
from simcost.results.plots import fleet_events, latency_panels, plot_timeseries, save_latency
from simcost.simulation.simulation import RunResult
from simcost.workload.request_table import COMPLETED


def side_jobs(result: RunResult, paths: dict[str, Path], focus: FocusTable) -> list[Job]:
    """The figures (from small inputs: CDF points, the time series) and focus.parquet."""
    by_workload, slos = measured_by_workload(result)
    title = f"{result.scenario.name}: {result.summary['requests']['measured']} measured requests"
    jobs: list[Job] = [("latency.png", save_latency, (latency_panels(by_workload, slos), title, paths["plot"]))]
    if result.timeseries is not None:
        jobs.append(("timeseries.png", plot_timeseries,
                     (result.timeseries, paths["timeseries_plot"], f"{result.scenario.name}: fleet over time",
                      fleet_events(result.bill.roster), result.summary.get("per_item") is not None)))
    if importlib.util.find_spec("pyarrow") is not None:
        jobs.append(("focus.parquet", write_focus_parquet, (focus, paths["focus"].with_suffix(".parquet"))))
    return jobs


def measured_by_workload(result: RunResult) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, float | None]]]:
    """The measured requests' latencies per workload entry (one group, named "", without a mix),
    and each entry's own SLO limits: what latency.png draws."""
    t, scenario = result.table, result.scenario
    lat = latencies(t)
    measured = (t.status == COMPLETED) & (t.arrival_s >= scenario.warmup_s)
    limits = slo_limits_by_entry(scenario)
    n = len(scenario.workload.entries())
    names = [scenario.workload.entry_name(i) if n > 1 else "" for i in range(n)]
    by_workload = {name: {k: v[measured & (t.workload == i)] for k, v in lat.items()} for i, name in enumerate(names)}
    slos = {name: {k: None if np.isnan(limits[k][i]) else float(limits[k][i]) for k in limits} for i, name in enumerate(names)}
    return by_workload, slos
