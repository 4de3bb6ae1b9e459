"""Hosted-API pools (fleet.api_pools): every request sent to an API ends completed, failed or
rejected; its price is its tokens x the pool's prices exactly; the bill (fleet + API) is the same
in the summary, the FOCUS rows and the time series; rate limits hold in every 60 s window;
overflow, failover and budgets send the requests they say they do."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.catalog.api_prices import api_price_list
from simcost.errors import InputError
from simcost.results.focus import COLUMNS as FOCUS_COLUMNS
from simcost.results.focus import focus_rows
from simcost.results.focus_spec import focus_problems
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED, REASON_CODE, REJECTED

BUSY = {"arrivals": {"process": "poisson", "rate_per_s": 6.0},
        "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 200}}
MINI = {"name": "oai", "provider": "openai", "model": "gpt-4o-mini"}


def run(api: dict | list, workload=BUSY, **fleet):
    pools = api if isinstance(api, list) else [api]
    return Simulation(scenario(duration_s=60.0, workload=workload,
                               fleet={"replicas": 1, **fleet, "api_pools": pools})).run()


def api_rows(result, k: int = 0) -> np.ndarray:
    return np.flatnonzero(result.api.pool_of == k)


def test_every_api_request_ends_completed_failed_or_rejected_and_the_counts_agree():
    # 6 req/s against 60 requests/min: most calls are throttled, some past their retries
    r = run({**MINI, "rate_limits": {"requests_per_min": 60}, "retry": {"max_retries": 1}})
    counts = r.summary["api"]["oai"]["requests"]
    rows = api_rows(r)
    status = r.table.status[rows]
    assert counts["sent"] == len(rows) == r.table.num_requests  # route: every request
    assert counts["sent"] == counts["completed"] + counts["failed"] + counts["rejected"] and counts["in_flight"] == 0
    assert counts["completed"] == int((status == COMPLETED).sum())
    assert counts["failed"] == int((r.table.reject_reason[rows] == REASON_CODE["api_rate_limited"]).sum()) > 0
    assert (status == REJECTED).sum() == counts["failed"] + counts["rejected"]
    assert counts["throttled_429"] == counts["retries"] + counts["failed"]  # each 429 is retried or ends the call
    assert r.summary["requests"]["in_flight"] == 0


def test_rate_limits_hold_in_every_sliding_minute():
    r = run({**MINI, "rate_limits": {"requests_per_min": 90, "tokens_per_min": 40_000}, "retry": {"max_retries": 6}})
    t = r.table
    done = api_rows(r)[t.status[api_rows(r)] == COMPLETED]
    start_s = t.first_scheduled_s[done]  # when the API accepted each call
    tokens = t.input_tokens[done] + t.output_tokens[done]
    order = np.argsort(start_s)
    start_s, tokens = start_s[order], tokens[order]
    for i, s in enumerate(start_s):  # every window (s - 60, s] ending at an acceptance
        inside = (start_s > s - 60.0) & (start_s <= s)
        assert inside.sum() <= 90 and tokens[inside].sum() <= 40_000


def test_api_dollars_are_tokens_times_price_and_the_bill_adds_up_everywhere():
    # a session workload, so cached prompt tokens (the previous turn) are priced at the cached rate
    sessions = {**BUSY, "arrivals": {"process": "poisson", "rate_per_s": 1.0},
                "session": {"turns": {"dist": "fixed", "value": 3}, "think_time": {"dist": "fixed", "value_s": 2.0}}}
    r = run({**MINI, "role": "route", "cached_input_fraction": 0.25}, workload=sessions)
    t, price = r.table, api_price_list()[("openai", "gpt-4o-mini")]
    rows = api_rows(r)
    done = rows[t.status[rows] == COMPLETED]
    n_in = t.input_tokens[done]
    cached = np.minimum(n_in, np.maximum(t.shared_prefix_tokens[done], np.floor(0.25 * n_in).astype(np.int64)))
    assert (cached > np.floor(0.25 * n_in)).any()  # some follow-up turns cached their whole previous turn
    by_hand = ((n_in - cached) * 0.15 + cached * 0.075 + t.output_tokens[done] * 0.60) / 1e6
    assert (price.input_usd_per_1m, price.cached_input_usd_per_1m, price.output_usd_per_1m) == (0.15, 0.075, 0.60)
    np.testing.assert_allclose(r.bill.request_api_usd[done], by_hand, rtol=1e-12)
    assert r.bill.request_api_usd[np.setdiff1d(np.arange(t.num_requests), done)].sum() == 0  # failures unbilled
    assert r.bill.api_usd == pytest.approx(by_hand.sum(), rel=1e-12)
    check_bill_adds_up(r)


def check_bill_adds_up(r) -> None:
    """bill = fleet + API in the summary, the FOCUS rows and the time series."""
    b, c = r.bill, r.summary["cost"]
    assert b.api_usd > 0
    assert c["by_category"]["api"] == pytest.approx(b.api_usd, rel=1e-12)
    assert sum(c["by_category"].values()) == pytest.approx(b.total_usd, rel=1e-9)
    assert b.request_usd.sum() + b.unallocated_usd == pytest.approx(b.total_usd, rel=1e-9)
    rows = focus_rows(r)
    assert not focus_problems(rows, FOCUS_COLUMNS)  # FOCUS 1.1 conformant, api and cache rows too
    assert sum(row["EffectiveCost"] for row in rows) == pytest.approx(b.total_usd, rel=1e-9)
    api_focus = [row for row in rows if "/api-" in row["ResourceId"]]
    assert sum(row["EffectiveCost"] for row in api_focus) == pytest.approx(b.api_usd, rel=1e-9)
    assert {row["ProviderName"] for row in api_focus} <= {"OpenAI", "Anthropic", "Together AI"}
    ts = r.timeseries
    assert (ts.usd_per_hour * ts.width_s).sum() / 3600 == pytest.approx(b.total_usd, rel=1e-9)
    api_ts = [i for i, name in enumerate(ts.pools) if name.startswith("api:")]
    assert (ts.usd_per_hour[api_ts] * ts.width_s).sum() / 3600 == pytest.approx(b.api_usd, rel=1e-9)
    # the API's requests are counted on its rows, not the fleet's
    assert (ts.completions_per_s[api_ts] * ts.width_s).sum() == pytest.approx(len(
        np.flatnonzero((r.api.pool_of >= 0) & (r.table.status == COMPLETED))))
    assert (ts.completions_per_s * ts.width_s).sum() == pytest.approx((r.table.status == COMPLETED).sum())


def test_overflow_takes_requests_only_when_the_fleet_is_saturated():
    heavy = {**BUSY, "arrivals": {"process": "poisson", "rate_per_s": 40.0},
             "input_tokens": {"dist": "fixed", "value": 3000}}
    over = {**MINI, "role": "overflow", "overflow": {"waiting_requests": 4}, "rate_limits": {"requests_per_min": 10_000,
                                                                                          "tokens_per_min": 1e9}}
    r = run(over, workload=heavy)
    sent = r.summary["api"]["oai"]["requests"]["sent"]
    assert 0 < sent < r.table.num_requests
    check_bill_adds_up(r)
    light = {**BUSY, "arrivals": {"process": "poisson", "rate_per_s": 0.2}}
    assert run(over, workload=light).summary["api"]["oai"]["requests"]["sent"] == 0


def test_failover_serves_the_requests_that_arrive_during_an_outage():
    fo = {**MINI, "role": "failover"}
    r = run(fo, failures={"mttr_s": 30.0, "outages": [{"at_s": 20.0, "duration_s": 15.0}]})
    t = r.table
    rows = api_rows(r)
    assert len(rows) > 0 and (t.arrival_s[rows] >= 20.0).all()  # none before the outage
    assert (t.status[rows] == COMPLETED).all()
    assert r.summary["requests"]["completed"] == t.num_requests  # nobody waited out the outage unserved
    check_bill_adds_up(r)


def test_a_budget_caps_the_api_spend_and_the_fleet_takes_the_rest():
    r = run({**MINI, "budget_usd": 0.002})
    a = r.summary["api"]["oai"]
    assert a["usd"] <= 0.002 and a["requests"]["budget_declined"] > 0
    assert a["requests"]["sent"] + a["requests"]["budget_declined"] == r.table.num_requests
    assert r.summary["requests"]["completed"] == r.table.num_requests


def test_batch_pays_half_and_the_run_is_reproducible():
    a = run({**MINI, "batch": True})
    b = run({**MINI, "batch": True})
    full = run(MINI)
    np.testing.assert_array_equal(a.table.finish_s, b.table.finish_s)  # latency draws from the run's streams
    assert a.bill.api_usd == pytest.approx(full.bill.api_usd / 2, rel=1e-12)


def test_latency_follows_the_medians():
    r = run({**MINI, "latency": {"ttft_s": 0.4, "output_tokens_per_s": 50.0, "ttft_sigma": 0.0, "speed_sigma": 0.0}})
    t = r.table
    rows = api_rows(r)
    np.testing.assert_allclose(t.first_token_s[rows] - t.first_scheduled_s[rows], 0.4)
    np.testing.assert_allclose(t.finish_s[rows] - t.first_token_s[rows], (t.output_tokens[rows] - 1) / 50.0, atol=1e-9)


@pytest.mark.parametrize(("pool", "key"), [
    ({**MINI, "batch": True, "provider": "fireworks", "model": "llama-3.1-8b-instruct"}, "batch"),
    ({**MINI, "role": "overflow"}, "overflow"),
    ({**MINI, "serves": ["nope"]}, "serves[0]"),
    ({"name": "c", "provider": "custom", "model": "x", "input_usd_per_1m": 1, "output_usd_per_1m": 2}, "latency.ttft_s"),
])
def test_bad_api_pools_name_their_key(pool, key):
    with pytest.raises(InputError) as e:
        scenario(fleet={"api_pools": [pool]})
    assert f"fleet.api_pools[0].{key}" in str(e.value)
