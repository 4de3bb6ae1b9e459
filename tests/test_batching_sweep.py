"""Smoke test of experiments/batching_sweep.py: its main() in --quick mode on a 20-s window writes
one CSV row per (workload, load, policy) with finite numbers where defined, and its figures."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "batching_sweep.py"


def load_script():
    spec = importlib.util.spec_from_file_location("batching_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_sweep_writes_a_row_per_point_and_the_figures(tmp_path, capsys):
    bs = load_script()
    out = tmp_path / "sweep"
    assert bs.main(["--quick", "--window-s", "20", "--jobs", "1", "--out", str(out)]) == 0

    with (out / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    expected = {(w, float(load), p)
                for w in bs.WORKLOADS for load in bs.WORKLOADS[w]["quick_loads"] for p in bs.POLICIES}
    got = [(r["workload"], float(r["load"]), r["policy"]) for r in rows]
    assert len(got) == len(expected) and set(got) == expected

    always = ("offered_requests_per_s", "requests_per_s", "output_tokens_per_s", "goodput_requests_per_s",
              "usd_per_hour", "usd_per_1m_output_tokens", "usd_per_request", "utilization")
    for r in rows:
        assert int(r["arrived"]) > 0 and int(r["completed"]) + int(r["rejected"]) == int(r["arrived"])
        for key in always:
            assert math.isfinite(float(r[key])) and float(r[key]) >= 0, (r["policy"], key, r[key])
        for key in ("p50_ttft_s", "p99_ttft_s", "p99_tpot_s", "p99_itl_s", "p99_e2el_s", "slo_attainment"):
            if r[key] != "":  # empty: no measured request has this latency
                assert math.isfinite(float(r[key])) and float(r[key]) >= 0, (r["policy"], key, r[key])
        assert r["meets_slo"] in ("True", "False")

    for name in ["latency_vs_spend.png", *(f"load_{w}.png" for w in bs.WORKLOADS)]:
        assert (out / name).stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "p99 TTFT s" in printed and all(p in printed for p in bs.POLICIES)
