"""Figures a planning document can use, checked through matplotlib's objects (labels, tick
texts, legends, lines) rather than image bytes: per-workload CDFs against each workload's own
SLO, plain-number log axes with ms or s, `key=value` labels, clock units by span, fleet events;
and per-item models printed in items, dollars per request in significant digits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scenarios import scenario

from simcost.analysis.frontier import frontier_figure
from simcost.metrics.timeseries import TimeSeries
from simcost.results.plots import (
    clock_unit,
    duration_text,
    fleet_events,
    latency_figure,
    plain_number,
    pyplot,
    spend_figure,
    timeseries_figure,
)
from simcost.results.run_figures import measured_by_workload
from simcost.results.writer import format_summary, usd_text
from simcost.simulation.simulation import run
from simcost.workload.request_table import COMPLETED

CHAT_TTFT_S, BATCH_TTFT_S = 0.08, 3.0
ARRIVALS = {"process": "poisson", "rate_per_s": 6.0}
MIX = {"mix": [
    {"name": "chat", "arrivals": ARRIVALS, "slo": {"ttft_s": CHAT_TTFT_S},
     "input_tokens": {"dist": "uniform", "low": 50, "high": 400}, "output_tokens": {"dist": "uniform", "low": 20, "high": 200}},
    {"name": "batch", "arrivals": ARRIVALS, "slo": {"ttft_s": BATCH_TTFT_S, "e2el_s": 60.0},
     "input_tokens": {"dist": "uniform", "low": 2000, "high": 6000}, "output_tokens": {"dist": "fixed", "value": 50}},
]}


@pytest.fixture(scope="module")
def mixed():
    return run(scenario(workload=MIX, warmup_s=5.0))


def _texts(artists) -> list[str]:
    return [a.get_text() for a in artists]


def test_each_workload_has_its_own_cdf_against_its_own_slo(mixed):
    by_workload, slos, measured = measured_by_workload(mixed.scenario, mixed.table)
    assert measured == mixed.summary["requests"]["measured"]  # latency.png's title: the summary's count
    fig = latency_figure(by_workload, slos, "mixed")
    ttft_ax = next(ax for ax in fig.axes if ax.get_xlabel().startswith("TTFT"))
    unit = ttft_ax.get_xlabel().split("(")[1].rstrip(")")
    scale = {"ms": 1e3, "s": 1.0}[unit]
    curves = [line for line in ttft_ax.get_lines() if not line.get_label().startswith("_")]
    assert [c.get_label().split(":")[0] for c in curves] == ["chat", "batch"]  # one line per workload
    limits = {line.get_color(): line.get_xdata()[0] for line in ttft_ax.get_lines() if line.get_linestyle() == "--"}
    # each dashed SLO line sits at its workload's limit, in its workload's colour
    assert {c.get_label().split(":")[0]: limits[c.get_color()] for c in curves} == pytest.approx(
        {"chat": CHAT_TTFT_S * scale, "batch": BATCH_TTFT_S * scale})
    # the share within the SLO in the legend is that workload's, counted by hand
    t = mixed.table
    for i, (name, limit_s) in enumerate((("chat", CHAT_TTFT_S), ("batch", BATCH_TTFT_S))):
        mine = (t.workload == i) & (t.status == COMPLETED) & (t.arrival_s >= 5.0)
        share = np.mean((t.first_token_s - t.arrival_s)[mine] <= limit_s)
        label = next(c.get_label() for c in curves if c.get_label().startswith(name))
        assert label == f"{name}: {share:.1%} within {plain_number(limit_s * scale)} {unit}"
    assert _texts(ttft_ax.get_legend().get_texts()) == [c.get_label() for c in curves]
    pyplot().close(fig)


def test_log_axes_read_as_plain_numbers_with_units():
    rows = [{"fleet.replicas": n, "p99_ttft_s": 30.0 / n ** 2, "usd_per_hour": 4.0 * n ** 1.5} for n in (1, 2, 4, 8, 16)]
    fig = frontier_figure(rows, slo_limit_s=1.0, label_key="fleet.replicas")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_ylabel() == "p99 TTFT (s)"
    fig.canvas.draw()
    ticks = [t for t in _texts(ax.get_yticklabels() + ax.get_yticklabels(minor=True)) if t]
    assert ticks and all(set(t) <= set("0123456789.") for t in ticks), ticks  # no 2x10^0, no mathtext
    assert "2" in ticks or "0.2" in ticks  # minor ticks labelled on an axis of few decades
    assert sorted(_texts(ax.texts)) == sorted(f"replicas={n}" for n in (1, 2, 4, 8, 16))
    assert not [c for c in ax.collections if type(c).__name__.endswith("PolyCollection")]  # no grey region
    assert "SLO 1 s" in _texts(ax.get_legend().get_texts())
    pyplot().close(fig)
    assert [plain_number(v) for v in (2.0, 0.05, 1000.0, 1e-4)] == ["2", "0.05", "1000", "0.0001"]


def test_sweep_figure_names_the_varied_key_and_its_values():
    rows = [{"fleet.replicas": n, "p99_ttft_s": 0.4 / n, "p99_tpot_s": 0.03, "usd_per_hour": 4.0 * n,
             "usd_per_1m_output_tokens": 2.0 * n, "meets_slo": n > 1} for n in (1, 2, 3)]
    fig = spend_figure(rows, "fleet.replicas")
    for ax in fig.axes:
        assert _texts(ax.get_legend().get_texts()) == ["p99 TTFT", "p99 TPOT"]
        assert ax.get_ylabel() == "p99 latency (ms)"
        assert {"replicas=1", "replicas=2", "replicas=3"} <= set(_texts(ax.texts))
    assert "fleet.replicas" in fig._suptitle.get_text()
    pyplot().close(fig)


def _series(horizon_s: float, interval_s: float) -> TimeSeries:
    t_s = np.arange(0.0, horizon_s, interval_s)
    one = np.ones((1, len(t_s)))
    return TimeSeries(pools=("serve",), interval_s=interval_s, horizon_s=horizon_s, t_s=t_s,
                      width_s=np.full(len(t_s), interval_s), replicas=2 * one, ready=2 * one, waiting=one, running=one,
                      kv_used_blocks=one, kv_total_blocks=10 * one, usd_per_hour=8 * one, arrivals_per_s=one,
                      completions_per_s=one, output_tokens_per_s=100 * one)


def test_time_axis_in_minutes_or_hours_with_the_runs_events_marked():
    fig = timeseries_figure(_series(7200.0, 7.00344), "run", {"replica requested": np.array([600.0, 1200.0]),
                                                             "spot reclaim": np.array([3000.0])})
    assert fig.axes[4].get_xlabel() == "time (min)" and fig.axes[4].get_xlim() == (0, 120)
    assert fig._suptitle.get_text() == "run (sampled every 7 s)"
    legend = _texts(fig.axes[0].get_legend().get_texts())
    assert "replica requested (2)" in legend and "spot reclaim (1)" in legend
    marks = [c for c in fig.axes[0].collections if c.get_label() == "replica requested (2)"][0]
    assert sorted(seg[0][0] for seg in marks.get_segments()) == [10.0, 20.0]  # minutes
    assert any("tokens/s" in ax.get_ylabel() for ax in fig.axes)
    pyplot().close(fig)
    per_item = timeseries_figure(_series(60.0, 0.5), "run", per_item=True)
    assert per_item.axes[4].get_xlabel() == "time (s)" and not any("token" in ax.get_ylabel() for ax in per_item.axes)
    pyplot().close(per_item)
    assert [clock_unit(s)[0] for s in (120, 3600, 86400)] == ["s", "min", "h"]
    assert [duration_text(s) for s in (7.00344, 0.25, 90, 12.6)] == ["7 s", "0.25 s", "1.5 min", "13 s"]


def test_fleet_events_come_from_the_roster():
    inf = np.inf
    roster = SimpleNamespace(requested_s=np.array([0.0, 0.0, 30.0, 50.0]), drain_s=np.array([inf, 40.0, 60.0, inf]),
                             gone_s=np.array([inf, 45.0, 65.0, 70.0]), end=["", "reclaim", "scale_down", "outage"])
    events = fleet_events(roster)
    assert {k: v.tolist() for k, v in events.items()} == {"replica requested": [30.0, 50.0], "spot reclaim": [45.0],
                                                          "scale-down": [60.0], "site outage": [70.0]}
    still = SimpleNamespace(requested_s=np.zeros(2), drain_s=np.full(2, inf), gone_s=np.full(2, inf), end=["", ""])
    assert fleet_events(still) == {}


def test_per_item_models_print_items_and_dollars_in_significant_digits():
    from test_per_item import resnet_on_graviton

    res = run(resnet_on_graviton({"policy": "static", "max_num_seqs": 8, "batch_timeout_s": 0.01}))
    text = format_summary(res.summary)
    assert "items/s" in text and "per 1M items" in text and "items/step" in text
    assert "tok/s" not in text and "per 1M output tokens" not in text and "$0.000000 " not in text
    usd = res.summary["cost"]["usd_per_request"]
    assert f"${usd_text(usd)} per request" in text and float(usd_text(usd)) == pytest.approx(usd, rel=5e-3)
    assert [usd_text(v) for v in (0.0000123456, 0.0123, 5.3, 1234.5, 0.0, None)] == [
        "0.0000123", "0.0123", "5.30", "1,234.50", "0.00", "-"]


def test_the_report_draws_the_same_workloads_against_the_same_slos(mixed, tmp_path):
    import yaml

    from simcost.analysis.report_read import read_measured_latencies
    from simcost.analysis.report_run import _by_workload
    from simcost.results.writer import write_run

    write_run(mixed, tmp_path / "run")
    s = mixed.summary
    scn = yaml.safe_load((tmp_path / "run" / "scenario.yaml").read_text())
    lat = read_measured_latencies(tmp_path / "run" / "requests.csv", scn["warmup_s"], s["requests"]["measured"])
    groups, slos = _by_workload(tmp_path / "run" / "requests.csv", lat, s, scn)
    ours, our_slos, _ = measured_by_workload(mixed.scenario, mixed.table)
    assert list(groups) == list(ours) == ["chat", "batch"] and slos == our_slos
    for name in groups:
        np.testing.assert_allclose(np.sort(groups[name]["ttft_s"]), np.sort(ours[name]["ttft_s"]), rtol=1e-12)
