"""Per-request latencies and SLO attainment, with vLLM's benchmark definitions.

- TTFT = first output token time - arrival; E2EL = last token time - arrival.
- TPOT = (E2EL - TTFT) / (output_tokens - 1), for requests with more than one output token.
- ITL = gaps between consecutive output tokens of a request, pooled over requests.
SLO attainment covers every request that arrived at or after warmup_s: completed, rejected and
still in flight when drain_s cut the run, the last two counting as not met (`slo_outcomes`).
`simcost.metrics.summary` puts them into the run summary.
"""

from __future__ import annotations

import numpy as np

from simcost.metrics.run_summary import LatencyStats
from simcost.metrics.token_gaps import inter_token_latencies
from simcost.scenario.scenario import Scenario
from simcost.workload.request_table import COMPLETED, IN_FLIGHT, RequestTable
from simcost.workload.token_stats import ALPHA

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def stats(values: np.ndarray, scratch: bool = False) -> LatencyStats:
    """Mean and percentiles of the non-NaN values. `scratch`: the caller hands `values` over, so
    the percentiles may partition it in place (the ITL's millions of gaps: no NaN-free copy and
    no copy for np.percentile, two passes of ~30 MB on the Mooncake run)."""
    nan = np.isnan(values)
    if not scratch or nan.any():
        values = values[~nan]  # a copy: ours to partition
    if not len(values):
        return {"mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "count": 0}
    mean = float(values.mean())  # before the percentiles reorder the values (the sum's rounding follows the order)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, list(PERCENTILES.values()), overwrite_input=True))
    return {"mean": mean, "p50": p50, "p90": p90, "p95": p95, "p99": p99, "count": int(len(values))}


def latencies(table: RequestTable) -> dict[str, np.ndarray]:
    """TTFT, TPOT and E2EL per request (NaN where not defined)."""
    return latency_columns(table.arrival_s, table.first_token_s, table.finish_s, table.output_tokens)


def latency_columns(arrival_s: np.ndarray, first_token_s: np.ndarray, finish_s: np.ndarray,
                    output_tokens: np.ndarray) -> dict[str, np.ndarray]:
    ttft = first_token_s - arrival_s
    e2el = finish_s - arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output_tokens > 1, (e2el - ttft) / (output_tokens - 1), np.nan)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2el_s": e2el}


def itl_stats(table: RequestTable, measured: np.ndarray) -> LatencyStats:
    """ITL over the measured requests: exact from the token times when the table keeps them,
    else from the streaming histogram (percentiles within ALPHA; it also covers requests still in
    flight at a drain_s cut, simcost.workload.token_stats)."""
    if table.streamed is None:
        return stats(inter_token_latencies(table, measured), scratch=True)  # a fresh array of gaps
    itl = table.streamed.itl
    if not itl.count:
        return stats(np.zeros(0))
    p50, p90, p95, p99 = itl.percentiles(list(PERCENTILES.values()))
    return {"mean": float(itl.totals[0] / itl.totals[1]), "p50": p50, "p90": p90, "p95": p95, "p99": p99,
            "count": itl.count, "relative_error": ALPHA}


SLO_KEYS = ("ttft_s", "tpot_s", "e2el_s")


def slo_limits_by_entry(scenario: Scenario) -> dict[str, np.ndarray]:
    """Each workload entry's SLO limits (NaN: none): its own slo where set, else the scenario's."""
    entries = scenario.workload.entries()
    limits = {}
    for key in SLO_KEYS:
        per_entry = [getattr(e.slo, key) if e.slo is not None and getattr(e.slo, key) is not None
                     else getattr(scenario.slo, key) for e in entries]
        limits[key] = np.array([np.nan if v is None else v for v in per_entry], dtype=np.float64)
    return limits


def slo_limits(scenario: Scenario, workload: np.ndarray) -> dict[str, np.ndarray]:
    """Each request's SLO limits (NaN: none), given each one's workload entry (the RequestTable
    column): its workload's slo where set, else the scenario's."""
    by_entry = slo_limits_by_entry(scenario)
    if len(scenario.workload.entries()) == 1:  # one entry: its limits, read-only, not a float per request each
        return {key: np.broadcast_to(limits[0], len(workload)) for key, limits in by_entry.items()}
    return {key: limits[workload] for key, limits in by_entry.items()}


def meets_slo(limits: dict[str, np.ndarray], lat: dict[str, np.ndarray]) -> np.ndarray:
    ok = np.ones(len(lat["ttft_s"]), dtype=bool)
    for key in SLO_KEYS:
        within = (lat[key] <= limits[key]) | np.isnan(limits[key])
        if key == "tpot_s":
            within |= np.isnan(lat[key])  # a one-token request has no TPOT to miss
        ok &= within
    return ok


def slo_outcomes(scenario: Scenario, table: RequestTable, lat: dict[str, np.ndarray], horizon_s: float) -> dict:
    """Each request judged against its SLO at the end of the run: `met` (completed within its
    limits), `missed` (completed outside them, rejected, or still in flight past a limit: no first
    token by arrival + ttft_s, or unfinished by arrival + e2el_s) and `open` (in flight, no limit
    passed yet: it may still meet the SLO). A run cut by drain_s leaves requests in flight; leaving
    them out would overstate attainment, so attainment counts them as not met (`open` bounds how
    much higher it could have been)."""
    limits = slo_limits(scenario, table.workload)
    completed, in_flight = table.status == COMPLETED, table.status == IN_FLIGHT
    met = completed & meets_slo(limits, lat)
    age_s = horizon_s - table.arrival_s
    no_first_token = np.isnan(table.first_token_s)
    late_ttft = np.where(no_first_token, age_s > limits["ttft_s"], lat["ttft_s"] > limits["ttft_s"])
    past_limit = late_ttft | (age_s > limits["e2el_s"])  # NaN limits compare False: no limit to pass
    open_ = in_flight & ~past_limit
    return {"met": met, "open": open_, "missed": ~met & ~open_}


def attainment_keys(measured_arrived: np.ndarray, outcomes: dict) -> dict:
    """SLO attainment over every measured request that arrived (completed, rejected, in flight),
    and its upper bound had every open request gone on to meet the SLO."""
    n = int(measured_arrived.sum())
    met = int((outcomes["met"] & measured_arrived).sum())
    open_ = int((outcomes["open"] & measured_arrived).sum())
    return {"slo_attainment": met / n if n else None,
            "slo_outcomes": {"of": n, "met": met, "missed": n - met - open_, "open": open_,
                             "attainment_upper_bound": (met + open_) / n if n else None}}
