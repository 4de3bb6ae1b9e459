"""One day of ServeGen traffic served by a static fleet sized for the peak, HPA, KPA and the
predictive scaler, each on demand and on a spot mix.

    python experiments/autoscaling_day.py                      # results/autoscaling_day
    python experiments/autoscaling_day.py --quick              # 3 hours instead of 24 (smoke test)
    python experiments/autoscaling_day.py --copy-figures docs/figures

Workload: Alibaba ServeGen's DeepSeek-R1 service, regenerated per client for 24 real hours
(t = 0 is local midnight) at a twentieth of its rate: hourly means from 0.46 to 1.75 req/s (a
day cycle of 4.9x, busiest late in the evening), about 69,000 requests; prompts ~1,500 tokens,
answers ~200 (lognormal; ServeGen's own length statistics are not shipped). Llama-3.1-8B on single
NVIDIA L4s (24 GB), chunked prefill, join-shortest-queue; SLO: p99 TTFT <= 2 s and TPOT <= 150 ms
for 99 % of requests.
1. The static fleet is sized for the peak: the smallest replica count meeting the SLO over the
   day's busiest hour of these very arrivals (its bursts included).
2. The scalers target 70 % of the per-replica concurrency the static fleet carries in that hour
   (Knative's default target utilisation: headroom while new replicas start): HPA v2 and the
   predictive scaler (an HPA that also
   provisions for the forecast load one cold start ahead) on concurrency with the Kubernetes
   defaults, KPA with Knative's. Replicas added during the day cold-start: 90 s provisioning,
   a 10-GB image at 0.5 GB/s, 16 GB of weights at 2 GB/s, 30 s engine start (~150 s).
3. Pricing: on demand ($0.8048/h per L4, g6.xlarge), or half the replicas on spot at $0.375/h
   (the observed range's midpoint; configs/prices.yaml) with AWS's 15-20 % monthly interruption
   band and a 120 s notice.
Prints a table (p99 TTFT, SLO attainment, $ for the day, replica-hours, spot reclaims) and writes
`day.csv`, `replicas.png` (replicas over the day per scaler, with the arrival rate) and
`cost_slo.png` ($ per day against SLO attainment) to --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from simcost.rng import streams
from simcost.scenario.scenario import scenario_from_dict
from simcost.simulation.simulation import Simulation
from simcost.workload.requests import Requests, generate

ROOT = Path(__file__).resolve().parents[1]
DAY_S = 86400.0
L4_SPOT_USD_PER_HOUR = 0.375  # configs/prices.yaml: aws us-east-1 g6.xlarge spot 0.35-0.40, midpoint
SPOT_MIX = {"share": 0.5, "usd_per_device_hour": L4_SPOT_USD_PER_HOUR, "monthly_interruption": 0.175,
            "notice_s": 120.0}
BASE = {
    "name": "autoscaling-day-l4",
    "seed": 42,
    "duration_s": DAY_S,
    "warmup_s": 600.0,
    "workload": {
        "arrivals": {"process": "servegen", "servegen_file": "servegen_deepseek_r1", "rate_multiplier": 0.05},
        "input_tokens": {"dist": "lognormal", "mean": 1500, "sigma": 0.6},
        "output_tokens": {"dist": "lognormal", "mean": 200, "sigma": 0.9},
    },
    "model": {"name": "llama-3.1-8b"},
    "hardware": {"device": "l4"},
    "engine": {"policy": "chunked", "max_model_len": 16384},
    "fleet": {"replicas": 1, "router": "join_shortest_queue"},
    "slo": {"ttft_s": 2.0, "tpot_s": 0.15},
}
SCALERS = ("static", "hpa", "kpa", "predictive")
# the scalers aim at this share of the per-replica load the peak-sized fleet carries at the peak
# (Knative's default target utilisation, 70 %): headroom for bursts while new replicas start
DEFAULT_HEADROOM = 0.7
PRICING = ("on_demand", "spot_mix")


def merged(base: dict, **changes) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            out[section] = {**out.get(section, {}), name: value}
        else:
            out[key] = value
    return out


def busiest_hour(base: dict) -> tuple[Requests, float]:
    """The day's busiest clock hour of arrivals, shifted to start at t = 0, and its rate."""
    requests = generate(scenario_from_dict(base), streams(base["seed"]))
    counts = np.histogram(requests.arrival_s, bins=np.arange(0.0, base["duration_s"] + 3600.0, 3600.0))[0]
    start_s = 3600.0 * int(np.argmax(counts))
    keep = (requests.arrival_s >= start_s) & (requests.arrival_s < start_s + 3600.0)
    tenants = None if requests.tenants is None else requests.tenants[keep]
    hour = Requests(requests.arrival_s[keep] - start_s, requests.input_tokens[keep], requests.output_tokens[keep],
                    tenants=tenants)
    return hour, float(keep.sum() / 3600.0)


def size_for_peak(base: dict, hour: Requests, max_replicas: int = 32) -> dict:
    """The smallest static fleet meeting the SLO over the busiest hour (its own bursts included),
    and the requests in flight per replica it then carries (Little's law over the hour)."""
    raw = merged(base, duration_s=3600.0, warmup_s=0.0)
    for replicas in range(1, max_replicas + 1):
        res = Simulation(scenario_from_dict(merged(raw, **{"fleet.replicas": replicas})), requests=hour,
                         timeseries=False).run()
        s = res.summary
        if s["meets_slo"]:
            concurrency = s["throughput"]["requests_per_s"] * s["e2el_s"]["mean"]
            return {"replicas": replicas, "concurrency_per_replica": concurrency / replicas}
    raise SystemExit(f"no fleet of up to {max_replicas} replicas meets the SLO in the busiest hour")


def scenario_for(base: dict, scaler: str, pricing: str, static_replicas: int, target: float) -> dict:
    fleet = dict(base["fleet"])
    if scaler == "static":
        fleet["replicas"] = static_replicas
    else:
        cap = 2 * static_replicas
        fleet["replicas"] = max(1, static_replicas // 2)  # start mid-way: the night is quieter than the peak
        fleet["autoscaler"] = {"policy": scaler, "target": round(target, 3), "max_replicas": cap}
        if scaler == "kpa":
            fleet["autoscaler"]["min_replicas"] = 1  # keep one warm at night: a cold start breaks the TTFT SLO
    if pricing == "spot_mix":
        fleet["spot"] = dict(SPOT_MIX)
    return merged(base, name=f"{base['name']}-{scaler}-{pricing}", fleet=fleet)


def day_run(raw: dict) -> dict:
    t0 = time.perf_counter()
    res = Simulation(scenario_from_dict(raw), sample_interval_s=300.0).run()
    s, ts = res.summary, res.timeseries
    ends = s["fleet"]["ended"]
    return {
        "name": raw["name"], "p99_ttft_s": s["ttft_s"]["p99"], "p99_tpot_s": s["tpot_s"]["p99"],
        "slo_attainment": s["slo_attainment"], "usd_per_day": s["cost"]["total_usd"] * DAY_S / res.horizon_s,
        "replica_hours": s["fleet"]["replica_hours"], "mean_replicas": s["fleet"]["mean_replicas"],
        "max_replicas": int(ts.replicas.sum(axis=0).max()), "reclaims": ends.get("reclaim", 0),
        "requests_retried": s["fleet"]["requests_retried"], "requests": s["requests"]["completed"],
        "cold_start_usd": s["cost"]["by_category"]["provisioning"] + s["cost"]["by_category"]["loading"],
        "draining_usd": s["cost"]["by_category"]["draining"], "wall_s": time.perf_counter() - t0,
        "t_s": ts.t_s.tolist(), "replicas_t": ts.replicas.sum(axis=0).tolist(),
        "arrivals_per_s": ts.arrivals_per_s.sum(axis=0).tolist(),
    }


COLUMNS = ("scaler", "pricing", "p99_ttft_s", "p99_tpot_s", "slo_attainment", "usd_per_day", "replica_hours",
           "mean_replicas", "max_replicas", "reclaims", "requests_retried", "cold_start_usd", "draining_usd",
           "requests", "wall_s")


def format_table(rows: list[dict]) -> str:
    head = (f"{'scaler':<11}{'pricing':<10}{'p99 TTFT s':>11}{'SLO att.':>10}{'$ / day':>10}{'repl-h':>9}"
            f"{'mean':>7}{'max':>5}{'reclaims':>9}{'retried':>8}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['scaler']:<11}{r['pricing']:<10}{r['p99_ttft_s']:>11.2f}{100 * r['slo_attainment']:>9.2f}%"
                     f"{r['usd_per_day']:>10.2f}{r['replica_hours']:>9.1f}{r['mean_replicas']:>7.2f}"
                     f"{r['max_replicas']:>5d}{r['reclaims']:>9d}{r['requests_retried']:>8d}")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> list[Path]:
    from simcost.results.plots import plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for r in rows:
        if r["pricing"] == "on_demand":
            ax.step(np.array(r["t_s"]) / 3600, r["replicas_t"], where="post", label=r["scaler"])
    rate = next(r for r in rows if r["pricing"] == "on_demand")
    twin = ax.twinx()
    twin.plot(np.array(rate["t_s"]) / 3600, rate["arrivals_per_s"], color="grey", alpha=0.4, label="arrivals")
    twin.set_ylabel("arrivals / s (5-min bins)", color="grey")
    ax.set_xlabel("hour of day")
    ax.set_ylabel("replicas billed")
    ax.set_xlim(0, max(rate["t_s"]) / 3600)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_title("Replicas over one day of ServeGen DeepSeek-R1-shaped traffic (Llama-3.1-8B on L4, on demand)")
    fig.tight_layout()
    paths = [out / "replicas.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pricing, marker in (("on_demand", "o"), ("spot_mix", "s")):
        sel = [r for r in rows if r["pricing"] == pricing]
        ax.scatter([r["usd_per_day"] for r in sel], [100 * r["slo_attainment"] for r in sel], marker=marker,
                   label=pricing.replace("_", " "))
        for r in sel:
            ax.annotate(r["scaler"], (r["usd_per_day"], 100 * r["slo_attainment"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
    ax.axhline(99.0, color="red", linestyle="--", linewidth=1, label="SLO target 99 %")
    ax.set_xlabel("$ per day")
    ax.set_ylabel("SLO attainment (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Cost against SLO attainment, per scaler and pricing")
    fig.tight_layout()
    paths.append(out / "cost_slo.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "autoscaling_day")
    p.add_argument("--quick", action="store_true", help="3 hours (00:00-03:00) instead of the whole day")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                   help="scalers target this share of the peak-sized fleet's load per replica (default 0.7)")
    p.add_argument("--copy-figures", type=Path, default=None, help="also copy the figures here (e.g. docs/figures)")
    args = p.parse_args(argv)
    base = merged(BASE, duration_s=3 * 3600.0) if args.quick else BASE
    args.out.mkdir(parents=True, exist_ok=True)

    hour, rate = busiest_hour(base)
    peak = size_for_peak(base, hour)
    target = args.headroom * peak["concurrency_per_replica"]
    print(f"busiest hour: {rate:.3f} req/s; static fleet for the peak: {peak['replicas']} x L4, carrying "
          f"{peak['concurrency_per_replica']:.2f} requests in flight per replica; scalers target {target:.2f}",
          flush=True)
    grid = [(scaler, pricing) for pricing in PRICING for scaler in SCALERS]
    raws = [scenario_for(base, s, pr, peak["replicas"], target) for s, pr in grid]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(day_run, raws))
    rows = [{"scaler": s, "pricing": pr, **res} for (s, pr), res in zip(grid, results)]
    print(format_table(rows))
    with (args.out / "day.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    figures = plot(rows, args.out)
    if args.copy_figures is not None:
        args.copy_figures.mkdir(parents=True, exist_ok=True)
        for path in figures:
            shutil.copy(path, args.copy_figures / f"autoscaling_day_{path.name}")
    print(f"wrote {args.out / 'day.csv'} and {', '.join(str(f) for f in figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
