"""simcost against published vLLM online-serving runs it was never fitted on.

Replays every row of simcost/data/published/vllm_serving.csv (`vllm bench serve` results that
others published, with the model, GPU, tensor parallelism, vLLM version and dataset each run
states; README beside it) as a whole simulation of one vLLM replica with simcost's defaults
(`engine.preset: vllm-v1`: chunked prefill, prefix caching, V1's token budget and sequence cap
for the device):
- request rate inf without --max-concurrency: every prompt arrives at t=0 (a trace);
- --max-concurrency C: a closed loop of C users with no think time (`workload.clients`); the
  first num_prompts requests it sends are the benchmark's (vLLM's semaphore admits the next
  prompt when one finishes, as a user sends its next request);
- a finite request rate: Poisson arrivals of num_prompts requests (vLLM's burstiness 1).
Each request has the run's mean prompt and output length (the row's totals / num_prompts): the
random dataset fixes both up to retokenisation, and rows whose outputs ended early or come from
ShareGPT say so in their notes. The statistics are vLLM's over those num_prompts requests: mean
and median TTFT, TPOT and ITL, and request throughput (num_prompts / duration, duration from the
first arrival to the last finish). Errors are simulated / published - 1 (negative: simcost is
faster). Each row runs with the default step model (`auto`) and the roofline; the last tables give
median |error| and worst signed error per GPU, model and TP, per metric.

    python experiments/validate_vllm_serving.py [--models qwen3-8b] [--perf auto roofline]
        [--set perf.step_overhead_s=0.004]

What it shows: how far simcost's defaults carry to real vLLM deployments, queueing and memory
pressure included. What it does not: the engines' versions differ from the kernel tables'
(vLLM 0.14 on A100, 0.24 elsewhere), the HTTP server, tokenizer and chat template are not
simulated, and lengths that vary within a run are replaced by their means.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import simcost
from simcost.metrics.latency import latencies
from simcost.metrics.token_gaps import inter_token_latencies
from simcost.workload.request_table import COMPLETED

ROWS_FILE = Path(simcost.__file__).resolve().parent / "data" / "published" / "vllm_serving.csv"
# the statistics compared, in vLLM's result keys (ms; req/s)
METRICS = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms", "median_itl_ms",
           "request_throughput")
GROUPS = {"TTFT": ("mean_ttft_ms", "median_ttft_ms"), "TPOT": ("mean_tpot_ms", "median_tpot_ms"),
          "ITL": ("mean_itl_ms", "median_itl_ms"), "req/s": ("request_throughput",)}
CLOSED_LOOP_TRIES = 6  # horizons tried (doubling) until the closed loop has sent num_prompts requests


@dataclass(frozen=True)
class Row:
    source: str
    url: str
    engine: str
    device: str
    model: str
    weight_format: str
    kv_cache_format: str
    tensor_parallel: int
    dataset: str
    num_prompts: int
    request_rate: float  # inf: every prompt at once
    max_concurrency: int  # 0: none
    total_input_tokens: int
    total_output_tokens: int
    duration_s: float
    published: dict[str, float]  # METRICS present in the row

    @property
    def family(self) -> str:
        return f"{self.device} {self.model} TP{self.tensor_parallel}"

    @property
    def input_tokens(self) -> int:
        return max(1, round(self.total_input_tokens / self.num_prompts))

    @property
    def output_tokens(self) -> int:
        return max(1, round(self.total_output_tokens / self.num_prompts))

    @property
    def label(self) -> str:
        load = f"c{self.max_concurrency}" if self.max_concurrency else (
            "all at once" if math.isinf(self.request_rate) else f"{self.request_rate:g} req/s")
        return f"{self.family} {self.dataset} {self.input_tokens}/{self.output_tokens} x{self.num_prompts} {load}"


def read_rows(path: Path = ROWS_FILE) -> list[Row]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            published = {m: float(r[m]) for m in METRICS[:-1] if r[m]}
            published["request_throughput"] = int(r["num_prompts"]) / float(r["duration_s"])
            rows.append(Row(r["source"], r["url"], r["engine"], r["device"], r["model"], r["weight_format"],
                            r["kv_cache_format"], int(r["tensor_parallel"]), r["dataset"], int(r["num_prompts"]),
                            float(r["request_rate"]), int(r["max_concurrency"] or 0), int(r["total_input_tokens"]),
                            int(r["total_output_tokens"]), float(r["duration_s"]), published))
    return rows


def _common(row: Row, perf_model: str) -> dict:
    return {"name": f"vllm-serving-{row.model}-{row.device}", "seed": 1,
            "model": {"name": row.model, "weight_format": row.weight_format, "kv_cache_format": row.kv_cache_format},
            "hardware": {"device": row.device, "tensor_parallel": row.tensor_parallel},
            "perf": {"model": perf_model}}


def row_scenario(row: Row, trace: Path, perf_model: str, horizon_s: float | None = None) -> dict:
    """The row's benchmark as a scenario: a trace of num_prompts arrivals (all at 0, or Poisson at
    the row's rate), or with max_concurrency a closed loop running for horizon_s."""
    if row.max_concurrency:
        fixed = {"dist": "fixed"}
        return {**_common(row, perf_model), "duration_s": horizon_s or 2 * row.duration_s + 60,
                "workload": {"clients": {"users": row.max_concurrency, "think_time": {"dist": "fixed", "value_s": 0.0}},
                             "input_tokens": {**fixed, "value": row.input_tokens},
                             "output_tokens": {**fixed, "value": row.output_tokens}}}
    if math.isinf(row.request_rate):
        arrival_s = np.zeros(row.num_prompts)
    else:  # vLLM's default: Poisson arrivals (burstiness 1); seeded, local to this row
        arrival_s = np.cumsum(np.random.default_rng(1).exponential(1.0 / row.request_rate, row.num_prompts))
    with open(trace, "w") as f:
        f.write("arrival_s,input_tokens,output_tokens\n")
        f.writelines(f"{float(t)!r},{row.input_tokens},{row.output_tokens}\n" for t in arrival_s)
    columns = {"arrival": "arrival_s", "input_tokens": "input_tokens", "output_tokens": "output_tokens"}
    return {**_common(row, perf_model), "duration_s": 1e7, "workload": {"trace": {"name": str(trace), "columns": columns}}}


def benchmark_stats(table, num_prompts: int) -> dict[str, float] | None:
    """vLLM's statistics over the first num_prompts requests sent (None: fewer completed)."""
    first = np.argsort(table.arrival_s, kind="stable")[:num_prompts]
    mask = np.zeros(table.num_requests, dtype=bool)
    mask[first] = True
    mask &= table.status == COMPLETED
    if mask.sum() < num_prompts:
        return None
    lat = latencies(table)
    ttft, tpot = lat["ttft_s"][mask] * 1e3, lat["tpot_s"][mask] * 1e3
    tpot = tpot[~np.isnan(tpot)]
    itl = inter_token_latencies(table, mask) * 1e3
    duration_s = float(table.finish_s[mask].max() - table.arrival_s[mask].min())
    return {"mean_ttft_ms": float(ttft.mean()), "median_ttft_ms": float(np.median(ttft)),
            "mean_tpot_ms": float(tpot.mean()), "median_tpot_ms": float(np.median(tpot)),
            "mean_itl_ms": float(itl.mean()), "median_itl_ms": float(np.median(itl)),
            "request_throughput": num_prompts / duration_s}


def simulate(row: Row, perf_model: str, folder: Path, sets: dict | None = None) -> tuple[dict[str, float], str]:
    """(the row's statistics as simulated, the step model the run used)."""
    horizon_s = 2 * row.duration_s + 60
    for _ in range(CLOSED_LOOP_TRIES):
        run = simcost.run(row_scenario(row, folder / "prompts.csv", perf_model, horizon_s), overrides=sets,
                          timeseries=False, progress=False)
        stats = benchmark_stats(run.result.table, row.num_prompts)
        if stats is not None:
            return stats, run.summary["perf_model"]
        if not row.max_concurrency:
            raise RuntimeError(f"{row.label}: not every prompt completed")
        horizon_s *= 2  # the closed loop sent fewer than num_prompts requests in time: run longer
    raise RuntimeError(f"{row.label}: the closed loop never sent {row.num_prompts} requests")


def summarize(errors: dict[str, dict[str, list[float]]]) -> list[str]:
    """Per family, per metric group: median |error| / worst signed error (and the count)."""
    lines = [f"{'family (rows)':<34}" + "".join(f"{g:>22}" for g in GROUPS)]
    for family, by_metric in errors.items():
        cells = []
        for metrics in GROUPS.values():
            e = np.asarray([x for m in metrics for x in by_metric.get(m, [])])
            cells.append(f"{np.median(np.abs(e)) * 100:7.1f} % / {e[np.argmax(np.abs(e))] * 100:+7.1f} %" if len(e)
                         else "-")
        lines.append(f"{family + ' (' + str(len(by_metric['request_throughput'])) + ')':<34}"
                     + "".join(f"{c:>22}" for c in cells))
    return lines


def parse_sets(texts: list[str]) -> dict:
    out: dict = {}
    for text in texts:
        key, _, value = text.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="only these model keys")
    ap.add_argument("--perf", nargs="*", default=["auto", "roofline"], help="step models to compare")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a scenario override for every row")
    args = ap.parse_args(argv)
    sets = parse_sets(args.set)
    rows = [r for r in read_rows() if not args.models or r.model in args.models]
    errors: dict[str, dict[str, dict[str, list[float]]]] = {p: {} for p in args.perf}
    # every row, and the rows by load: a closed loop of a few users, or a burst of every prompt
    every: dict[str, dict[str, dict[str, list[float]]]] = {p: {} for p in args.perf}
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            simulated = {p: simulate(row, p, Path(tmp), sets) for p in args.perf}
            used = " ".join(f"{p}: {simulated[p][1]}" for p in args.perf)
            print(f"\n{row.label}   [{row.engine}; {used}]")
            print(f"  {'metric':<20} {'published':>10} " + " ".join(f"{p:>22}" for p in args.perf))
            for m in METRICS:
                if m not in row.published:
                    continue
                cells = []
                for p in args.perf:
                    value = simulated[p][0][m]
                    err = value / row.published[m] - 1.0
                    errors[p].setdefault(row.family, {}).setdefault(m, []).append(err)
                    for key in ("all rows", "closed loop" if row.max_concurrency else "open loop"):
                        every[p].setdefault(key, {}).setdefault(m, []).append(err)
                    cells.append(f"{value:>12.2f} {err * 100:+7.1f} %")
                print(f"  {m:<20} {row.published[m]:>10.2f} " + " ".join(cells), flush=True)
    for p in args.perf:
        print(f"\n{p}: median |error| / worst signed error per GPU, model and TP, per metric")
        print("\n".join(summarize({**errors[p], **every[p]})))


if __name__ == "__main__":
    sys.exit(main())
