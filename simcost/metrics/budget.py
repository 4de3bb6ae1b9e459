"""Budget alerts on a run's time series and unit economics (summary `budget` and
`unit_economics`; the configuration is simcost.scenario.budget)."""

from __future__ import annotations

import numpy as np

from simcost.cost.ledger import Bill
from simcost.metrics.timeseries import TimeSeries
from simcost.scenario.budget import BudgetConfig
from simcost.scenario.scenario import Scenario
from simcost.units import HOURS_PER_MONTH, S_PER_HOUR
from simcost.workload.request_table import COMPLETED, RequestTable


def budget_alerts(cfg: BudgetConfig, series: TimeSeries) -> dict:
    """When each threshold's forecast and actual alerts would have fired (seconds into the run,
    at the end of the interval that crossed it; None: never), from the series' $/hour. Forecasts
    start once a whole window has passed."""
    spend = series.usd_per_hour.sum(axis=0) * series.width_s / S_PER_HOUR  # $ per interval, every row
    end_s = series.t_s + series.width_s
    cumulative = np.cumsum(spend)
    before = np.concatenate([[0.0], cumulative])
    # spend in (end - window, end]: cumulative at end less cumulative at the window's start
    # (interpolated within the interval it falls in)
    start_s = np.maximum(end_s - cfg.window_s, 0.0)
    at_start = np.interp(start_s, np.concatenate([[0.0], end_s]), before)
    elapsed_s = end_s - start_s
    burn = np.divide(cumulative - at_start, elapsed_s, out=np.zeros(len(end_s)), where=elapsed_s > 0) * S_PER_HOUR
    projected = burn * HOURS_PER_MONTH

    def first(mask: np.ndarray) -> float | None:
        hit = np.flatnonzero(mask)
        return float(end_s[hit[0]]) if len(hit) else None

    full = end_s >= cfg.window_s  # a forecast needs a whole window of history (a run's first seconds would swing it)
    alerts = [{"threshold": t, "forecast_fired_at_s": first(full & (projected >= t * cfg.monthly_usd)),
               "actual_fired_at_s": first(cumulative >= t * cfg.monthly_usd)} for t in cfg.thresholds]
    return {"monthly_usd": cfg.monthly_usd, "window_s": cfg.window_s, "spend_usd": float(cumulative[-1]) if len(spend) else 0.0,
            "projected_month_usd_at_end": float(projected[-1]) if len(spend) else 0.0,
            "peak_projected_month_usd": float(projected.max(initial=0.0)), "alerts": alerts}


def unit_economics(scenario: Scenario, table: RequestTable, bill: Bill) -> dict:
    """Per workload: outcomes (completed requests x its conversion rate, cost.outcomes), $ per
    outcome and $ per user (distinct closed-loop users, else sessions, else requests), each at the
    workload's fully loaded cost (allocated + its share of the unallocated under chargeback, or
    its share of the allocated cost times the whole bill under showback)."""
    names = [scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))]
    rates = {r.workload: r.rate for r in scenario.cost.outcomes or ()}
    allocated = float(bill.request_usd.sum())
    out = {}
    for w, name in enumerate(names):
        rows = table.workload == w
        share = float(bill.request_usd[rows].sum()) / allocated if allocated > 0 else float(rows.mean())
        usd = bill.total_usd * share
        completed = int((rows & (table.status == COMPLETED)).sum())
        outcomes = completed * rates.get(name, 0.0)
        users = table.user[rows & (table.user >= 0)]
        sessions = table.session[rows & (table.session >= 0)]
        n_users, basis = ((len(np.unique(users)), "users") if len(users) else
                          (len(np.unique(sessions)), "sessions") if len(sessions) else (int(rows.sum()), "requests"))
        out[name] = {"usd": usd, "conversion_rate": rates.get(name), "outcomes": outcomes,
                     "usd_per_outcome": usd / outcomes if outcomes > 0 else None,
                     "users": n_users, "users_counted_as": basis, "usd_per_user": usd / n_users if n_users else None}
    return out
