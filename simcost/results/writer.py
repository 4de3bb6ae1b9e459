"""Writing a run to a results folder, and the text table the CLI prints.

A folder holds: summary.json (schema in the README), requests.csv or requests.parquet (one row
per request), scenario.yaml (the scenario as run, overrides and seed applied), latency.png, the bill in
FOCUS format: focus.csv (plus focus.parquet when pyarrow is installed; see `simcost.results.focus`), the
latency summary under vLLM's benchmark keys: vllm_bench.json (`simcost.results.vllm_bench`), and the fleet over time: timeseries.csv and timeseries.png (see `simcost.metrics.timeseries`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Literal

import numpy as np

from simcost.errors import InputError
from simcost.metrics.run_summary import LatencyKey, RunSummary, StatName
from simcost.metrics.summary import records
from simcost.metrics.timeseries import TimeSeries
from simcost.results.background import Background, BackgroundFailure
from simcost.results.csv_rows import write_csv_rows
from simcost.results.focus import focus_table, write_focus
from simcost.results.folder import check_targets, staged_folder
from simcost.results.run_figures import side_jobs
from simcost.results.vllm_bench import vllm_bench
from simcost.rng import streams
from simcost.scenario.scenario import scenario_text
from simcost.simulation.simulation import RunResult

# every file a run folder can hold (check_run_folder, and staged_folder's stale-file cleanup)
RUN_FILES = ("summary.json", "scenario.yaml", "requests.csv", "requests.parquet", "latency.png", "focus.csv",
             "focus.parquet", "timeseries.csv", "timeseries.png", "vllm_bench.json")


def check_run_folder(out_dir: Path, records_format: str = "csv") -> None:
    """What write_run needs, checked before the simulation so a missing pyarrow or a folder in
    the way is found in a second, not after the run."""
    if records_format == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise InputError("--records parquet", "needs pyarrow: pip install 'simcost[parquet]'") from None
    check_targets(Path(out_dir), RUN_FILES)


RECORDS_KEPT = ("full", "sample", "none")  # --request-records: every request row, a sample, or no table
SAMPLE_FRACTION = 0.01  # of the requests a sampled table keeps
CSV_CHUNK_ROWS = 65_536  # rows turned into text at once: a column of Python strings is ~60 B per row


def write_run(result: RunResult, out_dir: Path, records_format: str = "csv", kept: str | None = None,
              background: Background | None = None) -> dict[str, Path]:
    """Every file of the run into `out_dir`, all or none (simcost.results.folder). `kept`: the
    request table has every row (full), a seeded sample (sample_rows) or is not written (none);
    nothing else depends on it. None: the scenario's output.request_records. Figures and focus.parquet are drawn by `background` (a child
    process `simcost run` started early) while the CSV and JSON are written here. A figure that
    fails does not lose the run: the other files are published, then `BackgroundFailure` names
    the missing ones."""
    out_dir = Path(out_dir)
    kept = kept or result.scenario.output.request_records
    check_run_folder(out_dir, records_format)
    side = background or Background(enabled=False)
    with staged_folder(out_dir, RUN_FILES) as tmp:
        try:
            failure = _write_files(result, tmp, records_format, kept, side)
        finally:
            side.close()  # the child is gone before the folder is published or removed
    if failure is not None:
        failure.folder = out_dir
        raise failure
    return {name: out_dir / path.name for name, path in _run_paths(result, out_dir, records_format, kept).items()}


def sample_rows(num_requests: int, seed: int) -> np.ndarray:
    """Request ids a sampled table keeps: each with probability SAMPLE_FRACTION, drawn from the
    run's own `records` stream (simcost.rng), so the same scenario and seed keep the same rows."""
    return np.flatnonzero(streams(seed).records.random(num_requests) < SAMPLE_FRACTION)


def _run_paths(result: RunResult, out_dir: Path, records_format: str, kept: str = "full") -> dict[str, Path]:
    paths = {
        "summary": out_dir / "summary.json",
        "scenario": out_dir / "scenario.yaml",
        "requests": out_dir / f"requests.{records_format}",
        "plot": out_dir / "latency.png",
        "focus": out_dir / "focus.csv",
        "vllm_bench": out_dir / "vllm_bench.json",
    }
    if kept == "none":
        del paths["requests"]
    if result.timeseries is not None:
        paths |= {"timeseries": out_dir / "timeseries.csv", "timeseries_plot": out_dir / "timeseries.png"}
    return paths


def _write_files(result: RunResult, out_dir: Path, records_format: str, kept: str,
                 side: Background) -> BackgroundFailure | None:
    paths = _run_paths(result, out_dir, records_format, kept)
    focus = focus_table(result)
    side.run(side_jobs(result, paths, focus, side.drawn_early))  # drawn while the files below are written
    paths["summary"].write_text(json.dumps(result.summary, indent=2) + "\n")
    paths["vllm_bench"].write_text(json.dumps(vllm_bench(result), indent=2) + "\n")  # `vllm bench serve` keys
    paths["scenario"].write_text(scenario_text(result.scenario))
    if kept != "none":
        table, bill = result.table, result.bill

        def block(rows: slice | np.ndarray) -> dict[str, np.ndarray]:
            return records(result.scenario, table, bill.request_usd, bill.unallocated_share_usd, rows)

        if kept == "sample":
            write_records(block(sample_rows(table.num_requests, result.scenario.seed)), paths["requests"], records_format)
        elif records_format == "csv":  # a block of rows at a time: no column of every request beside the run's own
            write_csv_blocks((block(slice(lo, lo + CSV_CHUNK_ROWS)) for lo in range(0, table.num_requests, CSV_CHUNK_ROWS)),
                             block(slice(0, 0)), paths["requests"])
        else:
            write_records(block(slice(None)), paths["requests"], records_format)
    write_focus(focus, paths["focus"], parquet=False)  # focus.parquet is a side job
    if result.timeseries is not None:
        write_timeseries(result.timeseries, paths["timeseries"])
    try:
        side.wait()
    except BackgroundFailure as failure:
        for name in failure.failures:
            (out_dir / name).unlink(missing_ok=True)  # no half-drawn file
        return failure
    return None


def write_records(columns: dict[str, np.ndarray], path: Path, records_format: str) -> None:
    if records_format == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError("--records parquet", "needs pyarrow: pip install 'simcost[parquet]'") from None
        pq.write_table(pa.table({k: list(v) if v.dtype == object else v for k, v in columns.items()}), path)
        return
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        for start in range(0, n, CSV_CHUNK_ROWS):  # Python strings for a chunk of rows at a time, not all of them
            write_csv_rows(fh, writer, [v[start:start + CSV_CHUNK_ROWS] for v in columns.values()])


def write_csv_blocks(blocks, header: dict[str, np.ndarray], path: Path) -> None:
    """write_records' CSV from blocks of rows (dicts of columns, each block's in header's order)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for columns in blocks:
            write_csv_rows(fh, writer, list(columns.values()))


def format_summary(s: RunSummary) -> str:
    """The results table printed by `simcost run`."""
    def ms(v):
        return "-" if v is None else f"{v * 1e3:,.1f}"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    named = [p for p in s.get("pools", []) if p.get("name")]
    ep = s.get("expert_parallel")  # data-parallel attention groups multiply the devices per replica
    pp = s.get("pipeline_parallel", 1)
    devices = s["tensor_parallel"] * (ep["attention_groups"] if ep else 1) * pp
    layout = f" (expert parallel {ep['experts_over_devices']})" if ep else ""
    if pp > 1:
        layout += f" (tensor parallel {s['tensor_parallel']} x pipeline parallel {pp})"
    fleet = (f"{s['replicas']} x {devices} x {s['device']}{layout}" if not named else
             ", ".join(f"{p['name']}: {p['replicas']} x {p['tensor_parallel']} x {p['device']}" for p in named))
    lines = [
        f"{s['scenario']}: {s['model']} on {fleet} ({s['router']}), seed {s['seed']}",
        f"requests: {s['requests']['arrived']} arrived, {s['requests']['completed']} completed, "
        f"{s['requests']['rejected']} rejected, {s['requests']['in_flight']} in flight; "
        f"{s['requests']['measured']} measured after warm-up{_of_arrived(s)}",
        "",
    ]
    columns: tuple[StatName, ...] = ("mean", "p50", "p90", "p95", "p99")
    latency_keys: tuple[LatencyKey, ...] = ("ttft_s", "tpot_s", "itl_s", "e2el_s")
    cells = {key: [ms(s[key][p]) for p in columns] for key in latency_keys}
    # columns at least 10 wide, wider when a value needs it (an overloaded run's millions of ms)
    width = max(10, 2 + max(len(c) for row in cells.values() for c in row))
    lines.append(f"{'latency (ms)':<14}" + "".join(f"{p:>{width}}" for p in columns))
    for key, row in cells.items():
        lines.append(f"{key.removesuffix('_s').upper():<14}" + "".join(f"{c:>{width}}" for c in row))
    tp, c, item = s["throughput"], s["cost"], s.get("per_item")
    # a per-item model (embeddings, images) counts items in and one result out: speak of items
    rate = (f"{num(item['items_per_s'], ',.1f')} items/s" if item else f"{num(tp['output_tokens_per_s'], ',.0f')} output tok/s")
    batch = "items" if item else "tokens"
    unit_cost = (f"${num(item['usd_per_1m_items'], ',.3f')} per 1M items" if item
                 else f"${num(c['usd_per_1m_output_tokens'], ',.3f')} per 1M output tokens")
    lines += [
        "",
        f"throughput: {num(tp['requests_per_s'], '.2f')} req/s, {rate}; "
        f"goodput {num(s['goodput_requests_per_s'], '.2f')} req/s (SLO attainment {num(s['slo_attainment'], '.1%')}, "
        f"target {s['slo']['attainment']:.0%}: {_slo_verdict(s)})",
        *_per_item_lines(s),
        f"utilization {s['utilization']:.1%}, mean batch {s['mean_batch_tokens']:.1f} {batch}/step, "
        f"{s['preemptions']} preemptions",
        *_measured_lines(s),
        f"cost: ${c['usd_per_hour']:,.2f}/hour; ${c['total_usd']:,.4f} over {s['horizon_s']:,.0f} s "
        f"(idle ${c['idle_usd']:,.4f}); {unit_cost}, ${usd_text(c['usd_per_request'])} per request",
    ]
    return "\n".join(lines + _overload_lines(s) + _fleet_lines(s) + _pool_lines(s) + _api_lines(s) + _breakdown_lines(s))


def _measured_lines(s: RunSummary) -> list[str]:
    """perf.model kernels: how much of the step time came from measured kernels."""
    share = s.get("step_time_measured_fraction")
    scaled = s.get("step_time_scaled_fraction")
    model = [f"step model: {s['perf_model']}"] if "perf_model" in s else []
    if share is None:
        return model
    if scaled:
        return model + [f"step times: {scaled:.0%} from another GPU's measured vLLM kernels scaled to this device "
                "by its specs (no tables of its own; docs/step_model.md), the rest roofline and overheads"]
    if share == 0.0:
        return model + ["step times: roofline only (no kernel tables for this device and weight format; docs/step_model.md)"]
    return model + [f"step times: {share:.0%} from measured vLLM kernels, the rest roofline fallbacks and overheads"]


def _overload_lines(s: RunSummary) -> list[str]:
    """One warning line when arrivals outpaced the fleet: its queue grew with the run."""
    o = s.get("overload")
    if not o or not o["arrivals_outpaced_completions"]:
        return []
    return [f"WARNING: arrivals outpaced the fleet: {o['arrivals_per_s']:,.2f} req/s arrived, {o['departures_per_s']:,.2f} "
            f"req/s left over the second half of the arrivals; {o['backlog_at_arrivals_end']:,} requests queued or running "
            "when arrivals ended. The queue grows with the run: latencies reflect its length, not a steady state."]


def _pool_lines(s: RunSummary) -> list[str]:
    """Fleets of named pools (fleet.pools): each pool's size, device, site and cost; each site's
    requests and egress; how the pool router spread requests; latency as users see it."""
    pools = [p for p in s.get("pools", []) if p.get("name")]
    if not pools:
        return []
    lines = ["", f"{'pool':<14}{'replicas':>9}{'device':>18}{'site':>12}{'pricing':>14}{'util':>7}{'$':>12}"]
    for p in pools:
        lines.append(f"{p['name']:<14}{p['replicas']:>9}{p['device']:>18}{p.get('site') or '-':>12}"
                     f"{p.get('pricing_model') or '-':>14}{p['utilization']:>7.1%}{p['usd']:>12.4f}")
    for name, site in s.get("by_site", {}).items():
        lines.append(f"site {name} ({site['region']}): {site['requests_served']} requests, "
                     f"{site['egress_gb']:.4g} GB out, egress ${site['egress_usd']:.4g}")
    routing = s.get("pool_routing")
    if routing:
        spread = ", ".join(f"{k} {v}" for k, v in routing["requests_by_pool"].items())
        lines.append(f"pool router {routing['policy']}: {spread}; spilled to the cloud {routing.get('spilled_to_cloud', 0)}")
    net = s.get("network")
    if net and net.get("ttft_end_to_end_s", {}).get("p99") is not None:
        lines.append(f"as users see it (+ client round trip): p99 TTFT {net['ttft_end_to_end_s']['p99'] * 1e3:,.1f} ms, "
                     f"p99 E2EL {net['e2el_end_to_end_s']['p99'] * 1e3:,.1f} ms")
    return lines


def _api_lines(s: RunSummary) -> list[str]:
    """Hosted-API pools (fleet.api_pools): each one's outcomes, tokens and dollars."""
    api = s.get("api") or {}
    lines = []
    for name, a in api.items():
        r = a["requests"]
        ttft = f", p50 TTFT {a['ttft_s_p50'] * 1e3:,.0f} ms" if a["ttft_s_p50"] is not None else ""
        lines.append(f"api {name} ({a['provider']} {a['model']}, {a['role']}): {r['sent']} sent, {r['completed']} completed, "
                     f"{r['failed']} failed, {r['rejected']} rejected, {r['throttled_429']} x 429; "
                     f"{a['input_tokens']:,} in ({a['cached_input_tokens']:,} cached) / {a['output_tokens']:,} out "
                     f"tokens, ${a['usd']:,.4f}{ttft}")
    c = s.get("cascade")
    if c:
        rate = "n/a" if c["escalation_rate"] is None else f"{c['escalation_rate']:.1%}"
        added = c["added_latency_s"]["p50"]
        q = c["quality_proxy"]
        lines.append(f"cascade {c['first']} -> {c['escalate_to']}: {c['escalated']} of {c['first_answers']} answers escalated "
                     f"({rate}), p50 added latency " + ("-" if added is None else f"{added * 1e3:,.0f} ms")
                     + f"; ${c['first_stage_usd']:,.4f} first stage + ${c['escalation_usd']:,.4f} escalations; "
                     + ("quality proxy -" if q is None else f"quality proxy {q:.3f}"))
    rc = s.get("response_cache")
    if rc:
        rate = "n/a" if rc["hit_rate"] is None else f"{rc['hit_rate']:.1%}"
        lines.append(f"response cache ({rc['mode']}): {rc['hits']} of {rc['lookups']} lookups hit ({rate}), "
                     f"{rc['false_hits']} false hits, {rc['evicted']} evicted, {rc['expired']} expired; "
                     f"embeddings ${rc['embedding_usd']:,.4f}, store ${rc['store_usd']:,.4f}")
    b = s.get("budget")
    if b:
        fired = ", ".join(f"{a['threshold']:.0%} forecast at {a['forecast_fired_at_s']:,.1f} s"
                          for a in b["alerts"] if a["forecast_fired_at_s"] is not None) or "no forecast alert"
        actual = ", ".join(f"{a['threshold']:.0%} actual at {a['actual_fired_at_s']:,.1f} s"
                           for a in b["alerts"] if a["actual_fired_at_s"] is not None) or "no actual alert"
        lines.append(f"budget ${b['monthly_usd']:,.0f}/month: burn rate projects ${b['projected_month_usd_at_end']:,.0f} "
                     f"at the end; {fired}; {actual}")
    for name, u in (s.get("unit_economics") or {}).items():
        per_outcome = "-" if u["usd_per_outcome"] is None else f"${u['usd_per_outcome']:,.4f}"
        per_user = "-" if u["usd_per_user"] is None else f"${u['usd_per_user']:,.5f}"
        lines.append(f"unit economics {name}: {u['outcomes']:,.1f} outcomes, {per_outcome} per outcome, "
                     f"{per_user} per user ({u['users']} {u['users_counted_as']})")
    return ([""] + lines) if lines else []


def _of_arrived(s: RunSummary) -> str:
    """When some requests arriving after warm-up did not complete (rejected, in flight): how many
    arrived, since latency covers only the completed ones and attainment all of them."""
    covers = s.get("latency_covers") or {}
    if covers.get("of", 0) <= covers.get("count", 0):
        return ""
    return f" (latency over these completed ones; {covers['of']:,} arrived after warm-up)"


def _slo_verdict(s: RunSummary) -> str:
    """met / NOT met, and why: a rejected request fails the SLO, and so does one left in flight
    (counted as not met; `open` of them might still have met it had the run gone on)."""
    if s["meets_slo"]:
        return "met"
    rejected, in_flight = s["requests"]["rejected"], s["requests"]["in_flight"]
    why = [f"{rejected:,} rejected"] if rejected else []
    outcomes = s.get("slo_outcomes") or {}
    if in_flight:
        why.append(f"{in_flight:,} in flight at the end, {outcomes.get('open', 0):,} of them not yet late")
    return "NOT met: " + "; ".join(why) if why else "NOT met"


def _per_item_lines(s: RunSummary) -> list[str]:
    """Per-item models (embeddings, images): their own throughput and unit cost; their 'tokens'
    above are items in and one result out."""
    p = s.get("per_item")
    if not p:
        return []
    return [f"per item ({p['kind']}: {p['item_input']}): {p['items_per_s']:.1f} items/s, "
            f"{p['mean_items_per_batch']:.2f} items per batch, ${p['usd_per_1m_items']:.4f} per 1M items"]


def _fleet_lines(s: RunSummary) -> list[str]:
    """How the fleet moved (autoscaler, spot, failures); nothing for a fleet that stood still."""
    f = s.get("fleet")
    if f is None or (f["replicas_started"] == s["replicas"] and not f["ended"]):
        return []
    ended = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in f["ended"].items()) or "none"
    lines = [f"fleet: {f['replicas_started']} replicas started ({f['spot_replicas_started']} on spot), "
             f"{f['replicas_at_end']} at the end, mean {f['mean_replicas']:.2f} ({f['replica_hours']:,.2f} "
             f"replica-hours); ended: {ended}; {f['requests_retried']} requests retried"]
    w = f.get("warm_pool")
    if w:
        lines.append(f"warm pool: {w['hits']} scale-ups served warm, {w['misses']} cold; "
                     f"{w['standby_node_hours']:,.2f} standby node-hours, ${w['usd']:,.4f}")
    return lines


def _breakdown_lines(s: RunSummary) -> list[str]:
    """The cost allocation; per workload / tenant rows (and per tenant, the showback or chargeback
    table); session and closed-loop accounting, when the run has them."""
    lines = _allocation_lines(s["cost"])
    titles: tuple[Literal["by_workload", "by_tenant"], ...] = ("by_workload", "by_tenant")
    for title in titles:
        if title not in s:
            continue
        lines += ["", f"{title.replace('_', ' '):<14}{'arrived':>9}{'done':>9}{'rejected':>9}{'p99 TTFT ms':>13}"
                      f"{'SLO met':>9}{'$ / req':>11}"]
        for name, g in s[title].items():
            lines.append(f"{name:<14}{g['arrived']:>9}{g['completed']:>9}{g['rejected']:>9}"
                         f"{_fmt(g['ttft_s']['p99'], ',.1f', 1e3):>13}{_fmt(g['slo_attainment'], '.1%'):>9}"
                         f"{usd_text(g['usd_per_request']):>11}")
        if title == "by_tenant" and "allocation" in s["cost"]:
            lines += _tenant_cost_lines(s["cost"], s[title])
    if "sessions" in s:
        x = s["sessions"]
        lines += ["", f"sessions: {x['started']} started, {x['completed']} completed, {x['ended_by_rejection']} ended by "
                      f"a rejection, {x['unfinished']} unfinished (next turn cut at duration_s: {x['turns_cut_at_end']}); "
                      f"{x['turns_sent']} turns, {x['mean_turns_sent'] or 0:.2f} per session"]
    if "closed_loop" in s:
        x = s["closed_loop"]
        lines += ["", f"closed loop: {x['users']} users ({x['users_active']} sent a request), "
                      f"{x['requests_sent_after_first']} requests after the first, {x['requests_cut_at_end']} cut at duration_s"]
    return lines


def _allocation_lines(c: dict) -> list[str]:
    """One line: how busy steps were split, and where idle and overhead dollars went."""
    a = c.get("allocation")
    if a is None:  # a summary written before cost allocation existed
        return []
    split = (f"tokens (prefill x{a['prefill_weight']:g}, decode x{a['decode_weight']:g})" if a["policy"] == "tokens"
             else "equal shares")
    where = ("spread over requests by allocated cost" if a["spread_basis"] == "allocated_cost"
             else "spread equally over completed requests" if a["spread_basis"]
             else "left as its own line" if c["unallocated_usd"] else "nothing to place")
    # every unallocated category the summary has (busy, egress and api are allocated to requests)
    parts = ", ".join(f"{name.replace('_', ' ')} ${usd:,.4f}" for name, usd in c["by_category"].items()
                      if name not in ("busy", "egress", "api", "response_cache_lookups"))
    return ["", f"cost allocation ({a['unallocated']}): steps split by {split}; unallocated ${c['unallocated_usd']:,.4f} "
                f"({parts}): {where}"]


def _tenant_cost_lines(c: dict, groups: dict) -> list[str]:
    """Per tenant: allocated dollars, share of the unallocated (chargeback), total and unit costs;
    then the unallocated line (showback) and the bill, so the columns add up."""
    a = c["allocation"]
    lines = ["", f"{a['unallocated'] + ' $':<14}{'allocated':>12}{'unallocated':>13}{'total':>12}{'$ / req':>11}"
                 f"{'$ / 1M out':>12}{'$ / session':>13}"]
    for name, g in groups.items():
        lines.append(f"{name:<14}{g['allocated_usd']:>12.4f}{g['unallocated_share_usd']:>13.4f}{g['total_usd']:>12.4f}"
                     f"{usd_text(g['usd_per_request']):>11}{_fmt(g['usd_per_1m_output_tokens'], ',.3f'):>12}"
                     f"{_fmt(g.get('usd_per_session'), '.4f'):>13}")
    if a["unallocated_left_usd"]:
        left = a["unallocated_left_usd"]
        lines.append(f"{'(unallocated)':<14}{'':>12}{left:>13.4f}{left:>12.4f}")
    lines.append(f"{'bill':<14}{c['allocated_usd']:>12.4f}{c['unallocated_usd']:>13.4f}{c['total_usd']:>12.4f}")
    return lines


def usd_text(usd: float | None) -> str:
    """Dollars with at least three significant digits and two decimals, never in e-notation:
    5.30, 0.0123, 0.0000123 (not 0.000000 for a cheap request)."""
    if usd is None:
        return "-"
    if usd == 0 or not math.isfinite(usd):
        return f"{usd:.2f}"
    decimals = min(12, max(2, 2 - math.floor(math.log10(abs(usd)))))
    return f"{usd:,.{decimals}f}"


def _fmt(value, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


COLUMNS = ("t_s", "pool", "replicas", "ready", "waiting", "running", "kv_used_fraction", "usd_per_hour", "arrivals_per_s",
           "completions_per_s", "output_tokens_per_s")


def write_timeseries(ts: TimeSeries, path_csv: Path) -> Path:
    """One row per sample time and pool."""
    kv = ts.kv_used_fraction
    with Path(path_csv).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for k, t in enumerate(ts.t_s):
            for p, pool in enumerate(ts.pools):
                writer.writerow([round(float(t), 9), pool, int(ts.replicas[p, k]), int(ts.ready[p, k]), int(ts.waiting[p, k]),
                                 int(ts.running[p, k]), f"{kv[p, k]:.6g}", f"{ts.usd_per_hour[p, k]:.6g}",
                                 f"{ts.arrivals_per_s[p, k]:.6g}", f"{ts.completions_per_s[p, k]:.6g}",
                                 f"{ts.output_tokens_per_s[p, k]:.6g}"])
    return Path(path_csv)
