"""The table-driven step-time model: interpolation by hand, kernel against its reference, scenarios."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.errors import InputError
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment
from simcost.perf.step_model import decode_span_times_s, step_params, step_time_s
from simcost.perf.step_reference import decode_span_times_s_py, step_time_s_py
from simcost.perf.step_table import pack_table, table_step_time_s_py
from simcost.scenario.scenario import scenario_from_dict

SPLITWISE_CSV = Path(__file__).resolve().parents[1] / "simcost" / "data" / "calibration" / "splitwise_llama2-70b_a100-80gb.csv"
PREFILL = [(100, 0.010), (200, 0.018)]
DECODE = [(1, 100, 0.005), (1, 300, 0.007), (4, 100, 0.008)]


def small_table():
    return pack_table(np.zeros(sm.NUM_PARAMS), PREFILL, DECODE)


def run(p, num_prefill, num_decode, kv_read):
    p = p.copy()
    p[sm.P_KIND] = sm.KIND_TABLE
    return step_time_s(p, num_prefill, num_decode, 0.0, kv_read, 1 if num_prefill else 0)


@pytest.mark.parametrize("num_prefill, num_decode, kv_read, want_s", [
    (150, 0, 0, 0.014),  # between the two prefill totals
    (50, 0, 0, 0.010),  # below the smallest: its time
    (400, 0, 0, 0.036),  # beyond the largest: proportional to tokens
    (0, 1, 200, 0.006),  # batch 1, context between 100 and 300
    (0, 1, 50, 0.005 - 0.002 / 200 * 50),  # below the context range: the KV-read slope, downwards
    (0, 4, 400, 0.008),  # batch 4 at its one measured context
    # batch 4 at context 300: its series ends at 100; the KV-read slope of the batch-1 series
    # (2 ms per 200 tokens) times the 4 x 200 extra cached tokens
    (0, 4, 1200, 0.008 + 0.002 / 200 * 800),
    (0, 2, 200, 0.005 + (0.008 - 0.005) / 3),  # linear in batch size between 1 and 4
    (0, 8, 800, 0.008 + 4 * 0.001),  # beyond batch 4: 1 ms more per request, as from 1 to 4
    (100, 2, 600, 0.010 + 0.008 / 100 * 2 + 0.002 / 200 * 600),  # mixed: prefill of 102 tokens + KV reads
])
def test_interpolation_by_hand(num_prefill, num_decode, kv_read, want_s):
    assert run(small_table(), num_prefill, num_decode, kv_read) == pytest.approx(want_s, rel=1e-12)
    assert table_step_time_s_py(PREFILL, DECODE, num_prefill, num_decode, kv_read) == pytest.approx(want_s, rel=1e-12)


def scenario(tp=4, table=str(SPLITWISE_CSV)):
    return scenario_from_dict({
        "duration_s": 10.0,
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                     "input_tokens": {"dist": "fixed", "value": 128}, "output_tokens": {"dist": "fixed", "value": 16}},
        "model": {"name": "llama-2-70b"}, "hardware": {"device": "a100-80gb", "tensor_parallel": tp},
        "perf": {"model": "table", "table": table}})


def splitwise_params(tp=4):
    sc = scenario(tp)
    return step_params(sc, plan_deployment(sc))


def test_scenario_table_reproduces_the_measured_points():
    from simcost.perf.measurements import read_points
    p = splitwise_params()
    points = read_points(SPLITWISE_CSV, "a100-80gb", "llama-2-70b", (4,))
    for pt in points:
        b = pt.batch_size
        if pt.kind == "prefill":  # settings with the same total (1 x 1024, 2 x 512) are averaged
            total = b * pt.prompt_tokens
            same = [q.step_time_s for q in points if q.kind == "prefill" and q.batch_size * q.prompt_tokens == total]
            assert step_time_s(p, total, 0, 0.0, 0.0, b) == pytest.approx(np.mean(same), rel=1e-12)
        if pt.kind == "decode" and b > 1:  # one context per batch size above 1
            kv = b * pt.context_tokens
            assert step_time_s(p, 0, b, kv + b, kv, 0) == pytest.approx(pt.step_time_s, rel=1e-12)


def test_table_keeps_the_roofline_rates_for_items():
    sc = scenario()
    dep = plan_deployment(sc)
    roofline = step_params(scenario_from_dict({**_raw(sc), "perf": {"model": "roofline"}}), dep)
    p = step_params(sc, dep)
    np.testing.assert_array_equal(p[1:sm.NUM_PARAMS], roofline[1:])
    assert p[sm.P_KIND] == sm.KIND_TABLE


def _raw(sc):
    return {"duration_s": 10.0,
            "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                         "input_tokens": {"dist": "fixed", "value": 128}, "output_tokens": {"dist": "fixed", "value": 16}},
            "model": {"name": "llama-2-70b"}, "hardware": {"device": "a100-80gb", "tensor_parallel": 4}}


TP4 = splitwise_params()


@settings(max_examples=200, deadline=None)
@given(num_prefill=st.integers(0, 40_000), num_decode=st.integers(0, 300), context=st.integers(0, 20_000),
       num_requests=st.integers(0, 64))
def test_table_kernel_equals_reference(num_prefill, num_decode, context, num_requests):
    kv_read = num_decode * context
    want = step_time_s_py(TP4, num_prefill, num_decode, 0, kv_read, num_requests)
    assert step_time_s(TP4, num_prefill, num_decode, 0.0, kv_read, num_requests) == pytest.approx(want, rel=1e-12, abs=1e-15)
    if num_decode:
        np.testing.assert_allclose(decode_span_times_s(TP4, num_decode, kv_read, 3),
                                   decode_span_times_s_py(TP4, num_decode, kv_read, 3), rtol=1e-12)


def test_table_without_rows_at_the_degree_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"^perf\.table: .*tensor_parallel 1 \(it has tensor_parallel \[2, 4, 8\]\)"):
        step_params(scenario(tp=1), _plan_tp1())
    with pytest.raises(InputError, match=r"^perf\.table: missing; model 'table' needs"):
        scenario_from_dict({**_raw(None), "perf": {"model": "table"}})
    with pytest.raises(InputError, match=r"^perf\.table: .*cannot read"):
        sc = scenario(table=str(tmp_path / "none.csv"))
        step_params(sc, plan_deployment(sc))


def _plan_tp1():
    # 70B does not fit one A100: plan at TP 2 and pretend the table is asked for TP 1
    from dataclasses import replace
    return replace(plan_deployment(scenario(tp=2)), tensor_parallel=1)
