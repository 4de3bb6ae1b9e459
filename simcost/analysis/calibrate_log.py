"""`simcost calibrate --log`: fit the roofline's efficiency factors to a serving log.

Most users have serving logs, not step profiles. Each candidate set of factors is tried by
replaying the log on the scenario's deployment (simcost.analysis.validate) and comparing every
request's simulated TTFT and TPOT with its measured one, and the relative residuals are
minimised under the robust `soft_l1` loss, as `simcost calibrate` does for step profiles. The simulator is deterministic for given factors (the arrivals and lengths are the
log's), but a request that lands in another step under a slightly different factor jumps, so
the loss is piecewise constant at fine scales and gradients from finite differences mislead: the
search is scipy's derivative-free Nelder-Mead on the mean soft_l1 loss, from a simplex on the
scale of a real misfit (25 %).

What a log can tell: TTFT carries the prefill rate (`mfu`) and queueing, TPOT the decode rate
(`mbu`) and the per-step overhead. Those two trade off: a decode step is the overhead plus the
bytes read over mbu x bandwidth, and unless the log's batches vary widely, a lower mbu and a
smaller overhead fit the same TPOTs (on the example log, fitting all three lands on mbu 0.53 and
6.9 ms instead of 0.6 and 5 ms, with TPOT within 0.3 %). So by default `mfu` and `mbu` are
fitted and the rest held at the scenario's values (its `perf` section, profile, or the device
catalog); `--fit` names others, with a warning for that pair.

A log without send times that the replay can reproduce (a vLLM bench result without
`start_times`, sent under a concurrency limit or at a finite rate; `ServingLog.paired` is False)
has no request-by-request pairing: the replay's request k is not sent when the real one was, so
their residuals would compare different queueing. Such a log is fitted by the quantile stage
alone, and its before/after errors are over the distributions' quantiles, not per request.
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import minimize

from simcost.analysis.validate import Outcomes, require_roofline, simulate
from simcost.errors import InputError, closest
from simcost.files import staged_file
from simcost.perf.deployment import plan_deployment
from simcost.perf.measurements import EFFICIENCY_FACTORS, FACTOR_LOWER, FACTOR_UPPER
from simcost.perf.roofline import efficiency_factors
from simcost.scenario.scenario import Scenario
from simcost.workload.serving_log import ServingLog

DEFAULT_FIT = ("mfu", "mbu")
# factors a scenario's perf section can set, so a replay can try them
FITTABLE = ("mfu", "mbu", "step_overhead_s", "prefill_overhead_s", "prefill_request_s", "attention_efficiency")
ROBUST_SCALE = 0.05
# Two Nelder-Mead runs: first on the distributions' quantiles (smooth: requests trading places do
# not move them) from a 25 % simplex, then on every request's residual from a 5 % one.
STAGES = (("quantiles", 0.25), ("requests", 0.05))
QUANTILES = np.arange(5, 100, 5)
UNFINISHED_RESIDUAL = 10.0  # a request the candidate cannot finish counts as a 1000 % error
_SCALE = {"mfu": 1.0, "mbu": 1.0, "step_overhead_s": 1e-3, "prefill_overhead_s": 1e-3, "prefill_request_s": 1e-3,
          "attention_efficiency": 1.0}


@dataclass(frozen=True)
class LogFit:
    factors: dict[str, float]  # every factor: fitted ones and those held
    fitted: tuple[str, ...]
    start: dict[str, float]
    evaluations: int
    median_abs_pct: dict[str, dict[str, float]]  # before/after: per-request median |error| of TTFT and TPOT
    paired: bool = True  # False: fitted and scored on quantiles only (a log without exact send times)


def parse_fit(text: str | None) -> tuple[str, ...]:
    if not text:
        return DEFAULT_FIT
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in FITTABLE:
            raise InputError("--fit", f"unknown or unfittable factor '{name}'{closest(name, FITTABLE)}; "
                                      f"expected some of {', '.join(FITTABLE)}")
    if not names or len(set(names)) != len(names):
        raise InputError("--fit", f"'{text}'; expected distinct factor names, e.g. mfu,mbu")
    return names


def with_factors(scenario: Scenario, factors: dict[str, float]) -> Scenario:
    """The scenario with these factors set in its perf section (which wins over profile and catalog)."""
    values: dict[str, Any] = dict(factors)
    return replace(scenario, perf=replace(scenario.perf, **values))


def residuals(measured: Outcomes, simulated: Outcomes) -> np.ndarray:
    """Relative errors of every request's TTFT and TPOT (TPOT where defined; zero-latency
    measurements are left out: no relative error exists)."""
    parts = []
    for metric in ("ttft_s", "tpot_s"):
        m, s = measured.values(metric), simulated.values(metric)
        keep = ~np.isnan(m) & (m > 0)
        with np.errstate(invalid="ignore"):
            r = s[keep] / m[keep] - 1.0
        parts.append(np.where(np.isnan(r), UNFINISHED_RESIDUAL, r))
    return np.concatenate(parts)


def quantile_residuals(measured: Outcomes, simulated: Outcomes) -> np.ndarray:
    """Relative errors of the TTFT and TPOT distributions at QUANTILES (a distribution the
    candidate cannot produce, every request unfinished, counts as UNFINISHED_RESIDUAL)."""
    parts = []
    for metric in ("ttft_s", "tpot_s"):
        m, s = measured.values(metric), simulated.values(metric)
        m, s = m[~np.isnan(m)], s[~np.isnan(s)]
        if not len(m):
            continue
        if not len(s):
            parts.append(np.full(len(QUANTILES), UNFINISHED_RESIDUAL))
            continue
        q_m = np.percentile(m, QUANTILES)
        parts.append(np.where(q_m > 0, np.percentile(s, QUANTILES) / np.where(q_m > 0, q_m, 1.0) - 1.0, 0.0))
    return np.concatenate(parts)


def median_errors(measured: Outcomes, simulated: Outcomes, paired: bool = True) -> dict[str, float]:
    """Median |relative error| of TTFT and TPOT: per request, or (not paired) over QUANTILES."""
    out = {}
    for metric in ("ttft_s", "tpot_s"):
        m, s = measured.values(metric), simulated.values(metric)
        if not paired:  # the distributions' quantiles stand for the requests
            m, s = m[~np.isnan(m)], s[~np.isnan(s)]
            if not len(m) or not len(s):
                out[metric] = float("nan")
                continue
            m, s = np.percentile(m, QUANTILES), np.percentile(s, QUANTILES)
        keep = ~np.isnan(m) & ~np.isnan(s) & (m > 0)
        out[metric] = round(float(np.median(np.abs(s[keep] / m[keep] - 1.0))) * 100, 2) if keep.any() else float("nan")
    return out


def robust_loss(r: np.ndarray) -> float:
    """Mean soft_l1 loss (quadratic below ROBUST_SCALE, linear above): a few requests that land in
    another step under a candidate bend the fit little."""
    z = (r / ROBUST_SCALE) ** 2
    return float(np.mean(2.0 * (np.sqrt(1.0 + z) - 1.0)) * ROBUST_SCALE ** 2)


def _simplex(x0: np.ndarray, move: float) -> np.ndarray:
    """A simplex with each factor moved down by `move` (the first: 25 %, the scale of a real misfit)."""
    return np.vstack([x0] + [x0 * np.where(np.arange(len(x0)) == i, 1.0 - move, 1.0) for i in range(len(x0))])


def fit_log(scenario: Scenario, log: ServingLog, names: tuple[str, ...] = DEFAULT_FIT, max_evaluations: int = 200) -> LogFit:
    if scenario.perf.model == "auto":  # the factors fitted are the roofline's (its profile runs the roofline)
        scenario = replace(scenario, perf=replace(scenario.perf, model="roofline"))
    require_roofline(scenario, "calibrating from a log")
    start = efficiency_factors(scenario, plan_deployment(scenario))
    measured = Outcomes.of_log(log)
    count = [0]

    def factors_of(x: np.ndarray) -> dict[str, float]:
        return {n: float(x[i] * _SCALE[n]) for i, n in enumerate(names)}

    def fun(x: np.ndarray, stage: str) -> np.ndarray:
        count[0] += 1
        simulated = simulate(with_factors(scenario, factors_of(x)), log)
        return quantile_residuals(measured, simulated) if stage == "quantiles" else residuals(measured, simulated)

    lower = np.array([max(FACTOR_LOWER[n], 1e-6 if n in ("mfu", "mbu", "attention_efficiency") else 0.0) / _SCALE[n]
                      for n in names])
    upper = np.array([FACTOR_UPPER[n] / _SCALE[n] for n in names])
    x0 = np.array([start[n] / _SCALE[n] for n in names])
    x0 = np.clip(np.where(x0 <= 0, 0.5, x0), lower + 1e-9, upper - 1e-9)  # 0 s would give a zero simplex edge
    x = x0
    stages = STAGES if log.paired else STAGES[:1]  # no per-request pairing without exact send times
    for stage, move in stages:  # each from the last one's best point, with a fresh simplex
        result = minimize(lambda v, stage=stage: robust_loss(fun(np.clip(v, lower, upper), stage)), x,
                          method="Nelder-Mead", bounds=list(zip(lower, upper)),
                          options={"maxfev": max_evaluations, "xatol": 1e-5, "fatol": 1e-12,
                                   "initial_simplex": _simplex(x, move)})
        x = result.x
    fitted = factors_of(x)
    before = median_errors(measured, simulate(scenario, log), log.paired)
    after = median_errors(measured, simulate(with_factors(scenario, fitted), log), log.paired)
    factors = {**start, **fitted}
    return LogFit(factors, names, start, count[0], {"before": before, "after": after}, log.paired)


def fit_warnings(fit: LogFit) -> list[str]:
    out = []
    if "mbu" in fit.fitted and "step_overhead_s" in fit.fitted:
        out.append("mbu and step_overhead_s trade off in decode steps (overhead + bytes / (mbu x bandwidth)): unless "
                   "the log's batch sizes vary widely, many pairs fit equally; hold one at a known value")
    for name in fit.fitted:
        if name in ("mfu", "mbu", "attention_efficiency") and fit.factors[name] >= FACTOR_UPPER[name] * 0.999:
            out.append(f"{name} ended at its upper bound 1: the roofline cannot be fast enough for this log "
                       "(check the device, tensor parallelism and weight format in the scenario)")
    return out


def format_fit(fit: LogFit) -> str:
    lines = [f"{'factor':<22}{'start':>12}{'fitted':>12}"]
    for name in fit.fitted:
        lines.append(f"{name:<22}{fit.start[name]:>12.4g}{fit.factors[name]:>12.4g}")
    held = [n for n in EFFICIENCY_FACTORS if n not in fit.fitted]
    lines.append("held: " + ", ".join(f"{n} = {fit.factors[n]:.4g}" for n in held))
    for when in ("before", "after"):
        e = fit.median_abs_pct[when]
        over = "per request" if fit.paired else "over the 5th..95th percentiles"
        lines.append(f"{when}: median |error| {over} TTFT {e['ttft_s']:.1f} %, TPOT {e['tpot_s']:.1f} %")
    lines.append(f"({fit.evaluations} replays of the log)")
    lines += [f"warning: {w}" for w in fit_warnings(fit)]
    return "\n".join(lines)


def write_log_profile(out: str | Path, scenario: Scenario, fit: LogFit, log_path: str | Path, requests: int) -> dict:
    """A profile (the layout `simcost calibrate` writes) that a scenario names with `perf.profile`."""
    dep = plan_deployment(scenario)
    log_path = Path(log_path)
    profile = {
        "device": dep.device.key, "model": dep.model.key, "weight_format": dep.weight_format,
        "factors": {n: float(f"{v:.6g}") for n, v in fit.factors.items()},
        "fixed": {n: "held at the scenario's value (not fitted from the log)" for n in EFFICIENCY_FACTORS
                  if n not in fit.fitted},
        "data": {"file": str(log_path), "sha256": hashlib.sha256(log_path.read_bytes()).hexdigest(),
                 "requests": requests, "tensor_parallel": [dep.tensor_parallel]},
        "fit": {"method": "scipy.optimize.minimize (Nelder-Mead) over replays of the serving log, "
                          + ("per-request" if fit.paired else "quantile (no send times logged)")
                          + f" relative TTFT and TPOT residuals, loss soft_l1 (f_scale {ROBUST_SCALE})",
                "median_abs_pct": fit.median_abs_pct},
        "date": datetime.date.today().isoformat(),
    }
    with staged_file(Path(out), "--out") as tmp:  # whole or not at all
        tmp.write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def calibrate_command(args) -> int:
    """`simcost calibrate --log LOG --scenario SCENARIO [--columns MAP] [--fit A,B] [--out PROFILE]`."""
    from simcost.analysis.validate import validation_scenario
    from simcost.workload.serving_log import LogColumns, load_log, send_note, unit_note

    if args.scenario is None:
        raise InputError("--scenario", "missing; --log needs the scenario of the deployment that served it")
    if args.measurements is not None:
        raise InputError("--log", f"given with a step-time CSV ({args.measurements}); fit one or the other")
    for flag, value in (("--device", args.device), ("--model", args.model), ("--fix", args.fix),
                        ("--tensor-parallel", args.tensor_parallel), ("--weight-format", args.weight_format)):
        if value:
            raise InputError(flag, "is for step-time CSVs; with --log the scenario names the deployment and --fit "
                                   "the factors to fit")
    log = load_log(args.log, LogColumns.parse(args.columns) if args.columns else None)
    note = send_note(log)
    if note is not None:
        print(note + "; fitting on quantiles only", file=sys.stderr)
    if (units := unit_note(log)) is not None:
        print(units, file=sys.stderr)
    scenario = validation_scenario(args.scenario, args.log, args.overrides)
    fit = fit_log(scenario, log, parse_fit(args.fit))
    print(format_fit(fit))
    if args.out:
        write_log_profile(args.out, scenario, fit, args.log, len(log))
        print(f"wrote {args.out} (use it with perf.profile: {args.out})")
    return 0
