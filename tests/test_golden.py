"""Golden outputs: every bundled scenario, and a set of feature variants, run at a fixed seed must
give byte-for-byte the summary.json and the same requests.csv, focus.csv and timeseries.csv as when
the file tests/golden/outputs.json was written. It guards refactors that must not change behaviour.

A deliberate change of behaviour regenerates the file, and the diff of outputs.json is then part of
the review:

    python tests/test_golden.py --update
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # scenarios.py when run as a script

from focus_check import check_focus_file  # noqa: E402
from scenarios import scenario  # noqa: E402

from simcost.catalog.specs import config_dir
from simcost.results.writer import write_run  # noqa: E402
from simcost.scenario.scenario import Scenario, load_scenario  # noqa: E402
from simcost.simulation.simulation import Simulation  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "outputs.json"
HASHED = ("requests.csv", "focus.csv", "timeseries.csv")

CONSTANT = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.002}
COLD = {"provisioning_s": 20.0, "image_gb": 1.0, "registry_gb_per_s": 1.0, "weights_gb_per_s": 16.0,
        "engine_start_s": 5.0}
BUSY = {"arrivals": {"process": "poisson", "rate_per_s": 8.0},
        "input_tokens": {"dist": "uniform", "low": 200, "high": 3000},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 300}}

# Each variant exercises one path the bundled scenarios leave out (roofline step model unless named).
VARIANTS: dict[str, dict] = {
    "chunked_jsq_tight_kv": {"fleet": {"replicas": 2, "router": "join_shortest_queue"},
                             "engine": {"policy": "chunked", "max_num_batched_tokens": 256, "num_kv_blocks": 150}},
    "shared_queue_preempt": {"fleet": {"replicas": 2, "router": "shared_queue"},
                             "engine": {"max_num_seqs": 4, "num_kv_blocks": 120}},
    "tp2_70b_round_robin": {"fleet": {"replicas": 3}, "model": {"name": "llama-2-70b"},
                            "hardware": {"device": "a100-80gb", "tensor_parallel": 2}},
    "disaggregated": {"workload": BUSY, "fleet": {"router": "join_shortest_queue", "disaggregation": {
        "prefill_replicas": 1, "decode_replicas": 2, "kv_link_gb_per_s": 10.0}}},
    "hpa_cold_start": {"perf": CONSTANT, "workload": BUSY, "duration_s": 120.0, "fleet": {
        "replicas": 1, "cold_start": COLD, "autoscaler": {"policy": "hpa", "target": 4, "max_replicas": 6}}},
    "kpa_scale_to_zero": {"perf": CONSTANT, "duration_s": 120.0, "fleet": {
        "replicas": 1, "cold_start": COLD, "autoscaler": {"policy": "kpa", "min_replicas": 0, "max_replicas": 4}}},
    "spot_failures_outage": {"perf": CONSTANT, "workload": BUSY, "duration_s": 120.0, "fleet": {
        "replicas": 3, "cold_start": COLD,
        "spot": {"share": 0.5, "usd_per_device_hour": 1.5, "monthly_interruption": 0.9, "notice_s": 5.0},
        "failures": {"mtbf_h": 0.02, "mttr_s": 30.0, "outages": [{"at_s": 40.0, "duration_s": 20.0}]}}},
    "warm_pool_hpa": {"perf": CONSTANT, "workload": BUSY, "duration_s": 120.0, "fleet": {
        "replicas": 1, "cold_start": COLD, "autoscaler": {"policy": "hpa", "target": 4, "max_replicas": 6},
        "warm_pool": {"size": 2}}},
    "drain_cut": {"workload": BUSY, "drain_s": 5.0, "engine": {"max_num_seqs": 8}},
}


def bundled() -> dict[str, Path]:
    root = config_dir()
    paths = [root / "example.yaml", *sorted((root / "scenarios").glob("*.yaml"))]
    return {p.stem: p for p in paths}


def build(case: str) -> Scenario:
    if case in VARIANTS:
        return scenario(**VARIANTS[case])
    return load_scenario(bundled()[case])


def outputs(case: str, out_dir: Path) -> dict:
    write_run(Simulation(build(case)).run(), out_dir)
    return {"summary": json.loads((out_dir / "summary.json").read_text()),
            "sha256": {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
                       for name in HASHED if (out_dir / name).exists()}}


CASES = [*bundled(), *VARIANTS]


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def test_every_case_is_pinned(golden):
    assert sorted(golden) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_golden(case, golden, tmp_path):
    got = outputs(case, tmp_path)
    check_focus_file(tmp_path / "focus.csv", got["summary"]["cost"]["total_usd"])  # FOCUS 1.1, the bill conserved
    assert got["summary"] == golden[case]["summary"]
    assert got["sha256"] == golden[case]["sha256"]


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    import tempfile
    pinned = {}
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            pinned[name] = outputs(name, Path(tmp))
        print(f"{name}: {pinned[name]['summary']['requests']}")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
