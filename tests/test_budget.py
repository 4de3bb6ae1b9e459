"""Budget alerts on the run's time series and unit economics, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.errors import InputError
from simcost.metrics.budget import budget_alerts
from simcost.metrics.timeseries import TimeSeries
from simcost.scenario.budget import BudgetConfig
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED


def series(usd_per_hour: list[float], interval_s: float) -> TimeSeries:
    n = len(usd_per_hour)
    z = np.zeros((1, n))
    return TimeSeries(pools=("serve",), interval_s=interval_s, horizon_s=n * interval_s, t_s=np.arange(n) * interval_s,
                      width_s=np.full(n, interval_s), replicas=z, ready=z, waiting=z, running=z, kv_used_blocks=z,
                      kv_total_blocks=z, usd_per_hour=np.array([usd_per_hour]), arrivals_per_s=z, completions_per_s=z,
                      output_tokens_per_s=z)


def test_alerts_fire_when_the_burn_rate_and_the_spend_cross_by_hand():
    # hourly intervals at $1/h for 5 h, then $3/h for 5 h; budget $2,000/month; a 2-hour window
    ts = series([1.0] * 5 + [3.0] * 5, 3600.0)
    out = budget_alerts(BudgetConfig(monthly_usd=2000.0, thresholds=(0.5, 1.0), window_s=7200.0), ts)
    # projected month = burn x 730: $730 at $1/h (36.5 %), $1,460 when the window holds one hour of
    # each (73 %: the 50 % alert fires at 6 h), $2,190 at $3/h (109.5 %: the 100 % alert at 7 h)
    assert [a["forecast_fired_at_s"] for a in out["alerts"]] == [6 * 3600.0, 7 * 3600.0]
    assert out["projected_month_usd_at_end"] == pytest.approx(3.0 * 730)
    # actual spend: $5 + $15 = $20, far below $1,000: no actual alert
    assert out["spend_usd"] == pytest.approx(20.0) and all(a["actual_fired_at_s"] is None for a in out["alerts"])
    small = budget_alerts(BudgetConfig(monthly_usd=10.0, thresholds=(0.5, 1.0)), ts)
    # $5 by the end of hour 5 (50 %), $11 by the end of hour 7 (100 % passed during hour 7)
    assert [a["actual_fired_at_s"] for a in small["alerts"]] == [5 * 3600.0, 7 * 3600.0]


def test_a_run_reports_its_alerts_and_its_unit_economics():
    mix = {"mix": [{"name": "chat", "arrivals": {"process": "poisson", "rate_per_s": 2.0},
                    "input_tokens": {"dist": "fixed", "value": 300}, "output_tokens": {"dist": "fixed", "value": 50},
                    "session": {"turns": {"dist": "fixed", "value": 2}, "think_time": {"dist": "fixed", "value_s": 1}}},
                   {"name": "search", "arrivals": {"process": "poisson", "rate_per_s": 1.0},
                    "input_tokens": {"dist": "fixed", "value": 500}, "output_tokens": {"dist": "fixed", "value": 20}}]}
    r = Simulation(scenario(duration_s=60.0, workload=mix, cost={
        "budget": {"monthly_usd": 1000.0, "window_s": 30.0},
        "outcomes": [{"workload": "chat", "rate": 0.05}, {"workload": "search", "rate": 0.5}]})).run()
    b, t = r.summary["budget"], r.table
    # one H100 at ~$6.9/hour projects to ~$5,000 a month: every forecast alert fires, no actual one
    assert b["spend_usd"] == pytest.approx(r.bill.total_usd, rel=1e-9)
    assert all(a["forecast_fired_at_s"] is not None and a["actual_fired_at_s"] is None for a in b["alerts"])
    u = r.summary["unit_economics"]
    for w, name, rate in ((0, "chat", 0.05), (1, "search", 0.5)):
        rows = t.workload == w
        usd = r.bill.total_usd * r.bill.request_usd[rows].sum() / r.bill.request_usd.sum()
        outcomes = int((rows & (t.status == COMPLETED)).sum()) * rate
        assert u[name]["usd_per_outcome"] == pytest.approx(usd / outcomes, rel=1e-9)
    assert u["chat"]["users_counted_as"] == "sessions" and u["search"]["users_counted_as"] == "requests"
    assert u["chat"]["users"] == len(np.unique(t.session[(t.workload == 0) & (t.session >= 0)]))
    assert sum(x["usd"] for x in u.values()) == pytest.approx(r.bill.total_usd, rel=1e-9)


def test_bad_budgets_and_outcomes_name_their_key():
    for cost, where in (({"budget": {"monthly_usd": 0}}, "cost.budget.monthly_usd"),
                        ({"budget": {"monthly_usd": 10, "thresholds": [0]}}, "cost.budget.thresholds"),
                        ({"outcomes": [{"workload": "nope", "rate": 0.1}]}, "cost.outcomes[0].workload")):
        with pytest.raises(InputError) as e:
            scenario(cost=cost)
        assert str(e.value).startswith(where), str(e.value)
