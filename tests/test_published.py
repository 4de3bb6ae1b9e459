"""The published-benchmark check (experiments/validate_published.py): its rows name devices and
models simcost knows, and a replayed static batch's throughput is what the step model's prefill
and decode steps add up to (the request-level engine loses and invents no step)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

import simcost
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import validate_published as vp  # noqa: E402


def test_every_published_row_names_a_known_device_model_and_metric(tmp_path):
    rows = vp.read_rows()
    assert len(rows) == 69
    assert {r.metric for r in rows} == {"output_tokens_per_s", "output_tokens_per_s_per_gpu", "ttft_ms"}
    for key in {(r.device, r.model, r.precision, r.tensor_parallel) for r in rows}:
        row = next(r for r in rows if (r.device, r.model, r.precision, r.tensor_parallel) == key)
        scenario = simcost.load(vp.row_scenario(replace(row, batch_size=1), tmp_path / "t.csv", "auto"))
        assert scenario.model.name == row.model and scenario.hardware.device == row.device


@pytest.mark.parametrize("perf", ["kernels", "roofline"])
def test_a_static_batch_throughput_is_its_prefill_and_decode_steps(tmp_path, perf):
    row = vp.Row("t", "h100-sxm", "fp8", "llama-2-7b", 8, 1, 256, 32, "output_tokens_per_s", 1.0)
    value, _ = vp.predict(row, perf, tmp_path)
    s = simcost.load(vp.row_scenario(row, tmp_path / "t.csv", perf))
    p = sm.step_params(s, plan_deployment(s))
    b, n, out = row.batch_size, row.input_tokens, row.output_tokens
    prefill_s = sm.step_time_s(p.copy(), b * n, 0, b * n * (n + 1) / 2.0, 0.0, b)
    decode_s = sum(sm.step_time_s(p.copy(), 0, b, b * (n + k + 1.0), b * (n + k), 0) for k in range(out - 1))
    assert value == pytest.approx(b * out / (prefill_s + decode_s), rel=1e-6)
