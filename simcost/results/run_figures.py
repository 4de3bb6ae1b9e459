"""What a run's background process makes (`simcost.results.background`): latency.png and
timeseries.png from small inputs (CDF points, the time series), and focus.parquet; `EarlyFigures`
hands it the figures before the results folder exists."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simcost.cost.roster import RosterArrays
from simcost.metrics.latency import latencies, slo_limits_by_entry
from simcost.metrics.timeseries import TimeSeries
from simcost.results.background import Background, Job
from simcost.results.focus import write_focus_parquet
from simcost.results.focus_table import FocusTable
from simcost.results.plots import (
    LatencyPanel,
    fleet_events,
    latency_panels,
    latency_png,
    timeseries_png,
    write_png,
)
from simcost.scenario.scenario import Scenario
from simcost.simulation.simulation import RunResult
from simcost.workload.request_table import COMPLETED, RequestTable

PATH_KEY = {"latency.png": "plot", "timeseries.png": "timeseries_plot"}  # each figure's key in the writer's paths


def side_jobs(result: RunResult, paths: dict[str, Path], focus: FocusTable,
              drawn_early: Callable[[str], bool] = lambda name: False) -> list[Job]:
    """The figures (from small inputs: CDF points, the time series) and focus.parquet; a figure
    `drawn_early` (by `EarlyFigures`) is only written, from the bytes the figure process holds."""
    series = result.timeseries
    # each figure's drawing function and its inputs, made only for a figure not drawn early
    figures: dict[str, tuple[Callable[..., bytes], Callable[[], tuple]]] = {
        "latency.png": (latency_png, lambda: latency_inputs(result.scenario, result.table))}
    if series is not None:
        figures["timeseries.png"] = (timeseries_png, lambda: timeseries_inputs(
            result.scenario, series, result.bill.roster, result.summary.get("per_item") is not None))
    jobs: list[Job] = [(name, None, (paths[PATH_KEY[name]],)) if drawn_early(name)
                       else (name, write_png, (draw, inputs(), paths[PATH_KEY[name]]))
                       for name, (draw, inputs) in figures.items()]
    if importlib.util.find_spec("pyarrow") is not None:
        jobs.append(("focus.parquet", write_focus_parquet, (focus, paths["focus"].with_suffix(".parquet"))))
    return jobs


class EarlyFigures:
    """Hands each figure to the figure process as soon as its inputs exist (a listener of
    `Simulation.run`), so it is drawn while the run settles its bill and summarises (~0.1-0.2 s
    off a Mooncake run's whole process on two cores, docs/speed.md)."""

    def __init__(self, background: Background) -> None:
        self.background = background

    def requests_final(self, scenario: Scenario, table: RequestTable) -> None:
        self.background.early("latency.png", latency_png, latency_inputs(scenario, table))

    def series_final(self, scenario: Scenario, series: TimeSeries, roster: RosterArrays, per_item: bool) -> None:
        self.background.early("timeseries.png", timeseries_png, timeseries_inputs(scenario, series, roster, per_item))


def latency_inputs(scenario: Scenario, table: RequestTable) -> tuple[list[LatencyPanel], str]:
    """latency.png's panels and title."""
    by_workload, slos, measured = measured_by_workload(scenario, table)
    return latency_panels(by_workload, slos), f"{scenario.name}: {measured} measured requests"


def timeseries_inputs(scenario: Scenario, series: TimeSeries, roster: RosterArrays,
                      per_item: bool) -> tuple[TimeSeries, str, dict[str, np.ndarray], bool]:
    """timeseries.png's series, title, fleet events and whether the model is served per item."""
    return series, f"{scenario.name}: fleet over time", fleet_events(roster), per_item


def measured_by_workload(scenario: Scenario, table: RequestTable) -> tuple[
        dict[str, dict[str, np.ndarray]], dict[str, dict[str, float | None]], int]:
    """The measured requests' latencies per workload entry (one group, named "", without a mix),
    each entry's own SLO limits, and how many requests were measured: what latency.png draws."""
    t = table
    lat = latencies(t)
    measured = (t.status == COMPLETED) & (t.arrival_s >= scenario.warmup_s)  # as the summary's
    limits = slo_limits_by_entry(scenario)
    n = len(scenario.workload.entries())
    names = [scenario.workload.entry_name(i) if n > 1 else "" for i in range(n)]
    by_workload = {name: {k: v[measured & (t.workload == i)] for k, v in lat.items()} for i, name in enumerate(names)}
    slos = {name: {k: None if np.isnan(limits[k][i]) else float(limits[k][i]) for k in limits} for i, name in enumerate(names)}
    return by_workload, slos, int(measured.sum())
