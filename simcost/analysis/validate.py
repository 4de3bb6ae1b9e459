"""`simcost validate`: replay a real serving run's requests through the simulator and compare.

The log's own arrivals and prompt/output lengths are replayed unchanged (no window, no rate
change, no warm-up cut) on the scenario's deployment; the scenario's workload section is replaced
by the log. Simulated and measured TTFT, TPOT and E2E latency (vLLM's definitions: TPOT is
(E2E - TTFT) / (output tokens - 1), left out for one-token answers) are compared by mean and
percentiles with signed errors (simulated / measured - 1, so a simulator that is too fast shows
a negative error), and throughput by requests and output tokens per second over the window from
the first arrival to the last finish (on the measured side of a log without send times, the
benchmark's logged `duration`).

A vLLM bench result without `start_times` is replayed as vLLM's client sent it (see
simcost.workload.serving_log.SEND_MODES): at once, under its `max_concurrency` as a trace with
`workload.trace.max_concurrency`, or with gamma gaps at its `request_rate` drawn from the
scenario's seed. Only a log whose send times are exact (logged, or all at once) is compared
request by request (the TTFT gap estimate); otherwise the statistics alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import theilslopes

from simcost.errors import InputError
from simcost.results.folder import check_targets, staged_folder
from simcost.rng import streams
from simcost.scenario.scenario import Scenario, UnknownWorkload, load_scenario
from simcost.scenario.workload import TraceSpec
from simcost.simulation.simulation import Simulation
from simcost.workload.requests import trace_requests
from simcost.workload.serving_log import ServingLog, bench_send_times_s

METRICS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "E2E"}
STATS = ("mean", "p50", "p90", "p99")
OUTPUTS = ("validation.json", "validation_cdf.png")


def validation_scenario(path: str | Path, log_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                        seed: int | None = None, catalog_files: list[str] | tuple[str, ...] = ()) -> Scenario:
    """The scenario's deployment with the log as its workload: every logged request counts (no
    warm-up cut), the run lasts until the last one ends. These keys are set after `overrides`."""
    forced = [f"workload={{trace: {{name: {json.dumps(str(log_path))}}}}}", "duration_s=null", "warmup_s=0",
              "drain_s=null"]
    try:
        scenario = load_scenario(path, [*overrides, *forced], seed, catalog_files)
    except UnknownWorkload as exc:
        raise InputError(exc.where, f"{exc.problem}: validate replays the log as the scenario's one workload, "
                                    "'default', so pools, cascades or outcomes that name workloads cannot be "
                                    "validated; validate the pool's deployment as a scenario of its own") from None
    model = scenario.specs.model(scenario.model.name, "model.name")
    if model.serving == "per_item":  # its requests are items: a log's prompt and output tokens mean nothing to it
        raise InputError("model.name", f"{model.key} is served per item ({model.item_input or 'an item'} a "
                                       "request); validate replays a token serving log on a model stepped token by token")
    return scenario


@dataclass(frozen=True)
class Outcomes:
    """Per-request TTFT and E2E (NaN: not finished) and output lengths, in arrival order."""

    arrival_s: np.ndarray
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    output_tokens: np.ndarray
    window_s: float | None = None  # throughput's window; None: first arrival to last finish; NaN: unknown

    @property
    def tpot_s(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.output_tokens > 1, (self.e2e_s - self.ttft_s) / (self.output_tokens - 1), np.nan)

    def values(self, metric: str) -> np.ndarray:
        return self.tpot_s if metric == "tpot_s" else getattr(self, metric)

    @classmethod
    def of_log(cls, log: ServingLog) -> Outcomes:
        """The log's outcomes; without send times (except all at once, where the window is known
        from the latencies) throughput is over the benchmark's logged duration, if any."""
        window_s = None if log.send == "logged" or (log.send == "burst" and log.duration_s is None) else (
            log.duration_s if log.duration_s is not None else float("nan"))
        return cls(log.trace.arrival_s, log.ttft_s, log.e2e_s, log.trace.output_tokens, window_s)


def replay_scenario(scenario: Scenario, log: ServingLog) -> Scenario:
    """The scenario with the log's client concurrency limit on its trace, if the log has one."""
    if log.max_concurrency is None:
        return scenario
    trace = scenario.workload.trace or TraceSpec(name=log.trace.source)
    return replace(scenario, workload=replace(scenario.workload, trace=replace(trace, max_concurrency=log.max_concurrency)))


def simulate(scenario: Scenario, log: ServingLog) -> Outcomes:
    """Replay the log's requests on the scenario's deployment; one row per logged request."""
    trace = log.trace if log.send == "logged" else replace(
        log.trace, arrival_s=bench_send_times_s(log, streams(scenario.seed).arrivals))
    scenario = replay_scenario(scenario, log)
    requests = trace_requests(scenario, trace)
    table = Simulation(scenario, requests=requests, timeseries=False).run().table
    n = len(log)
    arrival = table.arrival_s[:n]
    return Outcomes(arrival, table.first_token_s[:n] - arrival, table.finish_s[:n] - arrival, table.output_tokens[:n])


def stats(values: np.ndarray) -> dict[str, float | None]:
    """Mean and percentiles (numpy's linear interpolation, as vLLM's bench reports them)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return {k: None for k in STATS}
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return {"mean": float(values.mean()), "p50": p50, "p90": p90, "p99": p99}


def throughput(out: Outcomes) -> dict[str, float | None]:
    """Finished requests and their output tokens per second from the first arrival to the last finish."""
    done = ~np.isnan(out.e2e_s)
    if not done.any():
        return {"requests_per_s": None, "output_tokens_per_s": None}
    window_s = float(np.max((out.arrival_s + out.e2e_s)[done]) - np.min(out.arrival_s)) if out.window_s is None \
        else out.window_s
    if not window_s > 0:  # NaN too: unknown
        return {"requests_per_s": None, "output_tokens_per_s": None}
    return {"requests_per_s": int(done.sum()) / window_s,
            "output_tokens_per_s": float(out.output_tokens[done].sum()) / window_s}


def error_pct(simulated: float | None, measured: float | None) -> float | None:
    if simulated is None or measured is None or measured == 0:
        return None
    return (simulated / measured - 1.0) * 100.0


def compare(measured: Outcomes, simulated: Outcomes) -> dict:
    """{metric: {stat: {measured, simulated, error_pct}}} plus throughput, the same shape."""
    out: dict = {}
    for metric in METRICS:
        m, s = stats(measured.values(metric)), stats(simulated.values(metric))
        out[metric] = {k: {"measured": m[k], "simulated": s[k], "error_pct": error_pct(s[k], m[k])} for k in STATS}
    m, s = throughput(measured), throughput(simulated)
    out["throughput"] = {k: {"measured": m[k], "simulated": s[k], "error_pct": error_pct(s[k], m[k])} for k in m}
    return out


def validate(scenario: Scenario, log: ServingLog) -> tuple[dict, Outcomes, Outcomes]:
    measured, simulated = Outcomes.of_log(log), simulate(scenario, log)
    report = {"log": {"file": log.trace.source, "format": log.format, "requests": len(log), "failed_left_out": log.failed,
                      "span_s": log.trace.span_s, "send": log.send, "max_concurrency": log.max_concurrency,
                      "request_rate_per_s": None if log.send == "logged" else (
                          log.request_rate_per_s if np.isfinite(log.request_rate_per_s) else "inf"),
                      "duration_s": log.duration_s},
              "scenario": scenario.name,
              "simulated_unfinished": int(np.isnan(simulated.e2e_s).sum()),
              "comparison": compare(measured, simulated),
              # per request: only when the replay sends each request when the client did
              "ttft_gap": frontend_estimate_s(measured, simulated, log.trace.input_tokens) if log.paired else None,
              "frontend_s": scenario.engine.frontend_s}
    return report, measured, simulated


def frontend_estimate_s(measured: Outcomes, simulated: Outcomes, input_tokens: np.ndarray) -> dict | None:
    """What the log's TTFTs hold beyond the simulation's, split into a fixed part (time outside the
    engine model: HTTP, chat template, tokenisation, which engine.frontend_s adds) and a part per
    prompt token (a prefill rate error, which `simcost calibrate --log` fits): a Theil-Sen line of
    measured - simulated TTFT against prompt length, over the quarter of requests the simulation
    served fastest (those that queued least there, so queueing differences move it least). With
    one prompt length the fixed part is the median difference and no rate is told apart."""
    m, s = measured.values("ttft_s"), simulated.values("ttft_s")
    keep = ~np.isnan(m) & ~np.isnan(s)
    if keep.sum() < 8:
        return None
    m, s, tokens = m[keep], s[keep], np.asarray(input_tokens, dtype=np.float64)[keep]
    fastest = s <= np.percentile(s, 25)
    gap, tokens = m[fastest] - s[fastest], tokens[fastest]
    if np.ptp(tokens) == 0:
        return {"fixed_s": float(np.median(gap)), "s_per_1k_prompt_tokens": None, "requests": int(fastest.sum())}
    line = theilslopes(gap, tokens)
    return {"fixed_s": float(line.intercept), "s_per_1k_prompt_tokens": float(line.slope) * 1e3,
            "requests": int(fastest.sum())}


def format_report(report: dict) -> str:
    log = report["log"]
    lines = [f"{log['requests']} requests from {log['file']} ({log['format']}, {_sent(log)}"
             + (f"; {log['failed_left_out']} failed requests left out" if log["failed_left_out"] else "") + ")",
             f"{'metric':<10}{'stat':>6}{'measured':>12}{'simulated':>12}{'error':>10}"]
    table = report["comparison"]
    for metric, label in METRICS.items():
        for k in STATS:
            row = table[metric][k]
            lines.append(f"{label + ' ms':<10}{k:>6}{_num(row['measured'], 1e3)}{_num(row['simulated'], 1e3)}"
                         f"{_pct(row['error_pct'])}")
    for key, label in (("requests_per_s", "req/s"), ("output_tokens_per_s", "tok/s")):
        row = table["throughput"][key]
        lines.append(f"{label:<10}{'':>6}{_num(row['measured'])}{_num(row['simulated'])}{_pct(row['error_pct'])}")
    gap = report["ttft_gap"]
    if gap is not None:
        rate = gap["s_per_1k_prompt_tokens"]
        lines.append(f"TTFT gap (measured - simulated) of the {gap['requests']} least-queued requests: "
                     f"{gap['fixed_s'] * 1e3:+.1f} ms fixed" + ("" if rate is None else f", {rate * 1e3:+.2f} ms per 1k prompt "
                     "tokens (a prefill rate gap: simcost calibrate --log)"))
        if gap["fixed_s"] >= 0.005:  # below 5 ms: within one step's time
            lines.append(f"  the fixed part is time outside the engine model (HTTP, chat template, tokenisation): "
                         f"engine.frontend_s: {report['frontend_s'] + gap['fixed_s']:.3f} includes it")
    if report["simulated_unfinished"]:
        lines.append(f"warning: {report['simulated_unfinished']} requests did not finish in the simulation "
                     "(rejected: the deployment cannot hold them); they are left out of the simulated statistics")
    return "\n".join(lines)


def _sent(log: dict) -> str:
    """How the log's requests were sent, for the report's first line."""
    send, limit = log.get("send", "logged"), log.get("max_concurrency")
    if send == "logged":
        return f"{log['span_s']:.1f} s of arrivals"
    if send == "burst":
        return "no start_times: all sent at once"
    if send == "closed_loop":
        return f"no start_times: sent {limit} at a time"
    return f"no start_times: gamma arrivals at {log['request_rate_per_s']:g}/s" + (
        f", at most {limit} in flight" if limit else "")


def _num(value: float | None, scale: float = 1.0) -> str:
    return f"{'-':>12}" if value is None else f"{value * scale:>12.2f}"


def _pct(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>+9.1f}%"


def write_outputs(report: dict, measured: Outcomes, simulated: Outcomes, out_dir: Path) -> list[Path]:
    """validation.json and the CDF overlay, staged: the folder appears whole or not at all."""
    check_targets(out_dir, OUTPUTS)
    with staged_folder(out_dir, OUTPUTS) as tmp:
        (tmp / OUTPUTS[0]).write_text(json.dumps(report, indent=2) + "\n")
        plot_cdfs(measured, simulated, tmp / OUTPUTS[1])
    return [out_dir / name for name in OUTPUTS]


def plot_cdfs(measured: Outcomes, simulated: Outcomes, path: Path) -> None:
    from simcost.results.plots import pyplot, save  # matplotlib only where a figure is drawn

    fig, axes = pyplot().subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.4))
    for ax, (metric, label) in zip(axes, METRICS.items()):
        for out, name, style in ((measured, "measured", "-"), (simulated, "simulated", "--")):
            values = np.sort(out.values(metric)[~np.isnan(out.values(metric))]) * 1e3
            if len(values):
                ax.step(values, np.arange(1, len(values) + 1) / len(values), style, where="post", label=name)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:  # e.g. TPOT of a log of one-token answers
            ax.text(0.5, 0.5, "no requests", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    save(fig, path)


def require_roofline(scenario: Scenario, why: str) -> None:
    if scenario.perf.model != "roofline":
        raise InputError("perf.model", f"{scenario.perf.model}; {why} needs the roofline step model")


def vllm_bench_result(arrival_s: np.ndarray, input_tokens: np.ndarray, out: Outcomes, clock_origin_s: float = 0.0,
                      note: str = "") -> dict:
    """Outcomes written as `vllm bench serve --save-detailed` writes them (the fields the reader
    uses; no generated texts or inter-token latencies, which a simulator does not have). A
    request that did not finish is a failed one, as vLLM records it: output length 0, an error."""
    done = ~np.isnan(out.e2e_s)
    result: dict[str, object] = {"note": note} if note else {}
    result.update({
        "completed": int(done.sum()), "failed": int((~done).sum()),
        "input_lens": [int(v) for v in input_tokens],
        "output_lens": [int(v) if d else 0 for v, d in zip(out.output_tokens, done)],
        "start_times": [round(float(t) + clock_origin_s, 6) for t in arrival_s],
        "ttfts": [round(float(v), 6) if d else 0.0 for v, d in zip(out.ttft_s, done)],
        "latencies": [round(float(v), 6) if d else 0.0 for v, d in zip(out.e2e_s, done)],
        "errors": ["" if d else "did not finish in the simulation" for d in done],
    })
    return result
