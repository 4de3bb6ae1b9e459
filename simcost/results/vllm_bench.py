"""The latency summary under `vllm bench serve`'s result keys and units (vllm_bench.json,
`simcost run --format vllm`), so a simulated run lines up with a measured one.

vLLM's benchmark (vllm/benchmarks/serve.py, formerly benchmarks/benchmark_serving.py) saves
`duration` (s), `completed`, `total_input_tokens`, `total_output_tokens`, `request_throughput`
(req/s), `request_goodput` (req/s), `output_throughput` and `total_token_throughput` (tok/s), and
per metric m of ttft, tpot, itl, e2el: `mean_m_ms`, `median_m_ms`, `std_m_ms` and `p{P}_m_ms` for
each --metric-percentiles P (here 50, 90, 95, 99, as summary.json has them). Values come from
summary.json (seconds there, milliseconds here) over the same requests: those completed after
warm-up, throughput over the measured window as vLLM divides by the benchmark's duration; the
standard deviations (population, as numpy's std in vLLM) from the request table. `std_itl_ms`
spreads over every inter-token gap, like vLLM's flattened ITL list. Per-request lists (ttfts,
itls, input_lens, generated_texts) are left out: requests.csv has them.
"""

from __future__ import annotations

import numpy as np

from simcost.metrics.latency import latencies
from simcost.metrics.token_gaps import gap_std_s
from simcost.workload.request_table import COMPLETED

METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = (50, 90, 95, 99)  # summary.json's; vLLM's default --metric-percentiles is 99
MS_PER_S = 1e3


def vllm_bench(result) -> dict:
    """The vLLM result dict of a RunResult (see the module docstring for what each key holds)."""
    s, table = result.summary, result.table
    measured = (table.status == COMPLETED) & (table.arrival_s >= result.scenario.warmup_s)
    lat = latencies(table)
    values = {"ttft": lat["ttft_s"][measured], "tpot": lat["tpot_s"][measured], "e2el": lat["e2el_s"][measured]}
    # a table without per-token times (long runs) has ITL only as the summary's histogram: no std
    std_itl_s = gap_std_s(table, measured) if table.streamed is None else None
    tp = s["throughput"]
    out: dict = {
        "backend": "simcost",
        "model_id": s["model"],
        "num_prompts": s["latency_covers"]["of"],  # sent after warm-up (vLLM: prompts sent)
        "duration": s["measured_window_s"],
        "completed": s["requests"]["measured"],
        "total_input_tokens": int(table.input_tokens[measured].sum()),
        "total_output_tokens": int(table.output_tokens[measured].sum()),
        "request_throughput": tp["requests_per_s"],
        "request_goodput": s["goodput_requests_per_s"],
        "output_throughput": tp["output_tokens_per_s"],
        "total_token_throughput": tp["total_tokens_per_s"],
    }
    for m in METRICS:
        stats = s[f"{m}_s"]
        out[f"mean_{m}_ms"] = _ms(stats["mean"])
        out[f"median_{m}_ms"] = _ms(stats["p50"])
        out[f"std_{m}_ms"] = _ms(std_itl_s if m == "itl" else _std(values[m]))
        for p in PERCENTILES:
            out[f"p{p}_{m}_ms"] = _ms(stats[f"p{p}"])
    return out


def _std(values: np.ndarray) -> float | None:
    """Population standard deviation of the non-NaN values (None without any)."""
    values = values[~np.isnan(values)]
    return float(values.std()) if len(values) else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * MS_PER_S
