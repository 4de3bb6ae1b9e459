"""simcost against an engine vendor's published benchmarks it was never fitted on.

Replays every row of simcost/data/published/trtllm_static_batching.csv (TensorRT-LLM's static
batching pages: H100 FP8, L40S FP8, A100 FP16; README beside it) as a whole simulation: one batch
of `batch_size` identical requests arriving together, served by the request-level `static` policy
with that batch size and a token budget that takes the whole batch's prompts in one context pass,
as gptSessionBenchmark runs it. Throughput rows compare output tokens per second of the run (per
GPU where the page gives it per GPU); first-token rows compare the batch-1 TTFT. Each row runs
with the default step model (`auto`) and with the roofline; the last table gives median |error|
and worst signed error per page, device and model.

    python experiments/validate_published.py [--models llama-2-7b llama-2-70b] [--perf auto roofline]

What it shows: how far the step models carry to another engine on the same GPUs (TensorRT-LLM
compiles its graphs and has no Python scheduler, so simcost's vLLM-like step overhead and kernel
tables are expected to be somewhat slower than these pages at small batches). What it does not:
continuous batching, queueing or memory pressure, which static batches of identical requests
never exercise.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import simcost

PUBLISHED = Path(simcost.__file__).resolve().parent / "data" / "published"
ROWS_FILE = PUBLISHED / "trtllm_static_batching.csv"
MODELS_FILE = PUBLISHED / "models.yaml"


@dataclass(frozen=True)
class Row:
    table: str
    device: str
    precision: str
    model: str
    batch_size: int
    tensor_parallel: int
    input_tokens: int
    output_tokens: int
    metric: str
    value: float

    @property
    def family(self) -> str:
        return f"{self.table} {self.device} {self.precision} {self.model}"


def read_rows(path: Path = ROWS_FILE) -> list[Row]:
    with open(path, newline="") as f:
        return [Row(r["table"], r["device"], r["precision"], r["model"], int(r["batch_size"]),
                    int(r["tensor_parallel"]), int(r["input_tokens"]), int(r["output_tokens"]), r["metric"],
                    float(r["value"])) for r in csv.DictReader(f)]


def row_scenario(row: Row, trace: Path, perf_model: str) -> dict:
    """One static batch of the row's requests, all arriving at 0."""
    with open(trace, "w") as f:
        f.write("arrival_s,input_tokens,output_tokens\n")
        f.writelines(f"0,{row.input_tokens},{row.output_tokens}\n" for _ in range(row.batch_size))
    columns = {"arrival": "arrival_s", "input_tokens": "input_tokens", "output_tokens": "output_tokens"}
    return {
        "name": f"published-{row.model}-{row.device}", "seed": 1, "duration_s": 1e6,
        "catalog": {"files": [str(MODELS_FILE)]},
        "workload": {"trace": {"name": str(trace), "columns": columns}},
        "model": {"name": row.model, "weight_format": row.precision, "kv_cache_format": row.precision},
        "hardware": {"device": row.device, "tensor_parallel": row.tensor_parallel},
        "engine": {"policy": "static", "max_num_seqs": row.batch_size,
                   "max_num_batched_tokens": row.batch_size * row.input_tokens},
        # a TensorRT-LLM engine is compiled: no step pays PyTorch's eager launch cost per layer
        "perf": {"model": perf_model, "eager_s_per_layer": 0.0},
    }


def predict(row: Row, perf_model: str, folder: Path) -> tuple[float, str]:
    """(the simulated value in the row's metric, the step model the run used)."""
    summary = simcost.run(row_scenario(row, folder / "batch.csv", perf_model)).summary
    if row.metric == "ttft_ms":
        return summary["ttft_s"]["p50"] * 1e3, summary["perf_model"]
    tokens_per_s = summary["throughput"]["output_tokens_per_s"]
    per = row.tensor_parallel if row.metric == "output_tokens_per_s_per_gpu" else 1
    return tokens_per_s / per, summary["perf_model"]


def summarize(errors: dict[str, list[float]]) -> list[str]:
    lines = []
    for family, errs in errors.items():
        e = np.asarray(errs)
        worst = e[np.argmax(np.abs(e))]
        lines.append(f"{family:<48} {np.median(np.abs(e)) * 100:6.1f} % {worst * 100:+8.1f} %  ({len(e)})")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="only these model keys")
    ap.add_argument("--perf", nargs="*", default=["auto", "roofline"], help="step models to compare")
    args = ap.parse_args(argv)
    rows = [r for r in read_rows() if not args.models or r.model in args.models]
    errors: dict[str, dict[str, list[float]]] = {p: {} for p in args.perf}
    print(f"{'row':<74} {'published':>10} " + " ".join(f"{p:>22}" for p in args.perf))
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            cells = []
            for p in args.perf:
                value, used = predict(row, p, Path(tmp))
                err = value / row.value - 1.0
                errors[p].setdefault(row.family, []).append(err)
                cells.append(f"{value:>10.1f} {err * 100:+6.1f} % {used.split(' ')[0][:3]}")
            label = f"{row.family} b{row.batch_size} tp{row.tensor_parallel} {row.input_tokens}/{row.output_tokens} {row.metric}"
            print(f"{label:<74} {row.value:>10.1f} " + " ".join(cells), flush=True)
    for p in args.perf:
        print(f"\n{p}: median |error| and worst signed error per family (rows)")
        print("\n".join(summarize(errors[p])))
        every = np.concatenate([np.asarray(v) for v in errors[p].values()])
        print(f"{'all rows':<48} {np.median(np.abs(every)) * 100:6.1f} % "
              f"{every[np.argmax(np.abs(every))] * 100:+8.1f} %  ({len(every)})")


if __name__ == "__main__":
    sys.exit(main())
