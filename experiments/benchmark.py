"""Speed and memory benchmark: simulated requests per wall-clock second, medians.

    python experiments/benchmark.py            # both workloads, 3 timed runs each
    python experiments/benchmark.py --repeats 5

Workloads:
- poisson: Llama-3.1-8B on one H100, ~10,000 Poisson requests, 2,048 prompt / 256 output tokens
  at 8 req/s (configs/scenarios/poisson_8b_h100.yaml);
- azure-conv: the whole Azure 2023 conversation trace (19,366 requests) on 4 replicas of
  Llama-2-70B over 4 x A100 (configs/scenarios/azure_conv_70b_a100.yaml).
Each workload runs in its own child process (so its peak RSS is its own): one untimed run to
load numba's compiled kernels, then the timed runs. The same child also times a short slice
with decode spans on and off (one SimPy event per decode step), and reports the ratio, so the
speed-up of spans is measured against a baseline on the same machine in the same command.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {
    "poisson": ROOT / "configs" / "scenarios" / "poisson_8b_h100.yaml",
    "azure-conv": ROOT / "configs" / "scenarios" / "azure_conv_70b_a100.yaml",
}
SLICE = {"poisson": ["duration_s=125"], "azure-conv": ["duration_s=300"]}  # for the spans on/off ratio


def timed_run(path: Path, overrides=(), max_span_steps: int = 1 << 30) -> tuple[float, int]:
    from simcost.scenario.scenario import load_scenario
    from simcost.simulation.simulation import Simulation

    scenario = load_scenario(path, overrides)
    start = time.perf_counter()
    sim = Simulation(scenario, max_span_steps=max_span_steps)
    sim.run()
    return time.perf_counter() - start, len(sim.requests)


def child(name: str, repeats: int) -> dict:
    path = WORKLOADS[name]
    timed_run(path, SLICE[name])  # warm-up: numba kernels load from cache or compile
    walls, n = [], 0
    for _ in range(repeats):
        wall, n = timed_run(path)
        walls.append(wall)
    span_on = statistics.median(timed_run(path, SLICE[name])[0] for _ in range(repeats))
    span_off = timed_run(path, SLICE[name], max_span_steps=1)[0]
    median = statistics.median(walls)
    return {
        "workload": name, "requests": n, "repeats": repeats, "median_wall_s": median,
        "requests_per_wall_s": n / median, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "slice_speedup_spans_vs_steps": span_off / span_on,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=list(WORKLOADS))
    p.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return 0
    rows = []
    for name in [args.only] if args.only else WORKLOADS:
        out = subprocess.run([sys.executable, __file__, "--child", name, "--repeats", str(args.repeats)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'workload':<12}{'requests':>10}{'median s':>10}{'req/wall s':>12}{'peak MiB':>10}{'spans x':>9}")
    for r in rows:
        print(f"{r['workload']:<12}{r['requests']:>10,}{r['median_wall_s']:>10.2f}{r['requests_per_wall_s']:>12,.0f}"
              f"{r['peak_rss_mib']:>10.0f}{r['slice_speedup_spans_vs_steps']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
