"""A one-parameter sweep: the same scenario at several values of one key, each run in full,
collected into a table and a latency-versus-spend figure. Points run in parallel processes;
each point's own results folder is written too, so any point can be inspected later."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import yaml

from simcost.config import load_scenario
from simcost.frontier import plot_frontier
from simcost.plots import latency_vs_spend
from simcost.results import write_run
from simcost.sim import run

COLUMNS = ("p50_ttft_s", "p99_ttft_s", "p99_tpot_s", "p99_e2el_s", "requests_per_s", "output_tokens_per_s",
           "goodput_requests_per_s", "slo_attainment", "usd_per_hour", "usd_per_1m_output_tokens",
           "usd_per_request", "utilization", "meets_slo")


def parse_values(text: str) -> list:
    """'1,2,4' -> [1, 2, 4]; each item parsed as YAML so numbers, words and null all work."""
    return [yaml.safe_load(item) for item in text.split(",") if item.strip()]


def run_point(scenario_path: str, overrides: tuple[str, ...], seed: int | None, param: str, value, out_dir: str) -> dict:
    text = value if isinstance(value, str) else json.dumps(value)
    scenario = load_scenario(scenario_path, (*overrides, f"{param}={text}"), seed)
    result = run(scenario)
    write_run(result, Path(out_dir) / f"{param}={value}")
    return row(result.summary, param, value)


def row(summary: dict, param: str, value) -> dict:
    s = summary
    slo_attainment = s["slo_attainment"]
    return {
        param: value,
        "p50_ttft_s": s["ttft_s"]["p50"], "p99_ttft_s": s["ttft_s"]["p99"], "p99_tpot_s": s["tpot_s"]["p99"],
        "p99_e2el_s": s["e2el_s"]["p99"], "requests_per_s": s["throughput"]["requests_per_s"],
        "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
        "goodput_requests_per_s": s["goodput_requests_per_s"], "slo_attainment": slo_attainment,
        "usd_per_hour": s["cost"]["usd_per_hour"], "usd_per_1m_output_tokens": s["cost"]["usd_per_1m_output_tokens"],
        "usd_per_request": s["cost"]["usd_per_request"], "utilization": s["utilization"],
        "meets_slo": s["meets_slo"],
    }


def sweep(scenario_path: str, param: str, values: list, out_dir: Path, overrides=(), seed: int | None = None,
          jobs: int = 1, progress: bool = False) -> list[dict]:
    # validate every point before spending time on any (a bad value fails fast, naming the key)
    for value in values:
        text = value if isinstance(value, str) else json.dumps(value)
        load_scenario(scenario_path, (*overrides, f"{param}={text}"), seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [(str(scenario_path), tuple(overrides), seed, param, v, str(out_dir)) for v in values]
    with worker_pool(min(jobs, len(values))) as pool:
        rows = map_runs(pool, run_point, args, progress, desc="sweep")
    write_table(rows, param, out_dir / "sweep.csv")
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2) + "\n")
    latency_vs_spend(rows, param, out_dir / "sweep.png")
    slo = load_scenario(scenario_path, tuple(overrides), seed).slo
    plot_frontier(rows, "p99_ttft_s", "usd_per_hour", slo.ttft_s, out_dir / "frontier.png",
                  label_key=param, title=f"p99 TTFT vs $/hour over {param}")
    return rows


@contextmanager
def worker_pool(jobs: int):
    """A process pool for a batch of runs (workers import numba once), or None for jobs <= 1."""
    if jobs <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield pool


def map_runs(pool, fn, args: list[tuple], progress: bool = False, desc: str = "runs") -> list:
    """fn(*a) for each a, in the pool's processes when there is one; results in order."""
    if pool is None or len(args) < 2:
        return [fn(*a) for a in progress_items(args, progress, desc)]
    futures = [pool.submit(fn, *a) for a in args]
    return [f.result() for f in progress_items(futures, progress, desc)]


def progress_items(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, unit="run", desc=desc, delay=1.0, leave=False, disable=None)


def write_table(rows: list[dict], param: str, path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[param, *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict], param: str) -> str:
    head = f"{param:>16}{'p99 TTFT ms':>13}{'p99 TPOT ms':>13}{'req/s':>9}{'$/hour':>10}{'$/1M out':>10}{'SLO':>6}"
    lines = [head]
    for r in rows:
        f = lambda v, scale=1.0, fmt=".1f": "-" if v is None else format(v * scale, fmt)
        lines.append(f"{str(r[param]):>16}{f(r['p99_ttft_s'], 1e3):>13}{f(r['p99_tpot_s'], 1e3):>13}"
                     f"{f(r['requests_per_s'], 1, '.2f'):>9}{f(r['usd_per_hour'], 1, '.2f'):>10}"
                     f"{f(r['usd_per_1m_output_tokens'], 1, '.3f'):>10}{'yes' if r['meets_slo'] else 'no':>6}")
    return "\n".join(lines)
