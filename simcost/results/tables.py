"""A run's tables as columns (name -> equal-length numpy array): what `simcost.api`'s
`to_pandas` turns into data frames. The requests table is the one requests.csv holds; the others
are the raw arrays behind steps, the sampled fleet and the FOCUS bill."""

from __future__ import annotations

import numpy as np

from simcost.metrics.summary import records
from simcost.results.focus import focus_table
from simcost.simulation.simulation import RunResult

TABLES = ("requests", "steps", "timeseries", "costs")


def run_table(result: RunResult, table: str) -> dict[str, np.ndarray]:
    """One of TABLES ("focus" is another name for "costs"), as columns."""
    if table == "requests":
        return records(result.scenario, result.table, result.bill.request_usd, result.bill.unallocated_share_usd)
    if table == "steps":
        return step_columns(result)
    if table == "timeseries":
        return timeseries_columns(result)
    if table in ("costs", "focus"):
        focus = focus_table(result)
        return {name: np.asarray(focus.column(name), dtype=object) for name in focus.names} if len(focus) else {}
    raise ValueError(f"unknown table '{table}'; expected one of {', '.join(TABLES)} (or focus)")


def step_columns(result: RunResult) -> dict[str, np.ndarray]:
    """One row per engine step (a decode span counts its steps one by one), with its cost."""
    steps = result.steps
    # the log keeps replicas and tokens as int32 (simcost.cost.ledger); the table is int64 as before
    return {"replica": steps.step_replica.astype(np.int64), "start_s": steps.step_start_s, "end_s": steps.step_end_s,
            "duration_s": steps.step_duration_s, "tokens": steps.step_tokens.astype(np.int64),
            "cost_usd": result.bill.step_usd}


def timeseries_columns(result: RunResult) -> dict[str, np.ndarray]:
    """One row per sample time and pool, the columns of timeseries.csv."""
    ts = result.timeseries
    if ts is None:
        raise ValueError("this run kept no time series (it ran with timeseries=False)")
    pools, samples = len(ts.pools), len(ts.t_s)

    def flat(values: np.ndarray) -> np.ndarray:  # (pools, samples) -> time-major rows
        return np.asarray(values).T.reshape(-1)

    return {"t_s": np.repeat(ts.t_s, pools), "pool": np.tile(np.asarray(ts.pools, dtype=object), samples),
            "replicas": flat(ts.replicas), "ready": flat(ts.ready), "waiting": flat(ts.waiting),
            "running": flat(ts.running), "kv_used_fraction": flat(ts.kv_used_fraction),
            "usd_per_hour": flat(ts.usd_per_hour), "arrivals_per_s": flat(ts.arrivals_per_s),
            "completions_per_s": flat(ts.completions_per_s), "output_tokens_per_s": flat(ts.output_tokens_per_s)}
