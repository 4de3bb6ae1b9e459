"""Calibrating the roofline: fit a device-model pair's efficiency factors to measured step times.

Two CSV layouts are read (the header decides which):

- Splitwise's profiling layout (`simcost/data/calibration/`): columns `model, hardware,
  prompt_size, batch_size, token_size, prompt_time, token_time, tensor_parallel` (times in ms).
  Each row gives two steps: the prefill of the whole batch (`batch_size` prompts of `prompt_size`
  tokens) and a mean decode iteration with every request of the batch, whose mean cached context
  is taken as `prompt_size + token_size / 2` per request. Rows of other models or hardware are
  skipped: a row's names match the catalog key or one of its `aliases` ignoring case and
  punctuation (`llama2-70b` is `llama-2-70b`; Splitwise's `h100-80gb` is `h100-sxm`), or the
  names given with `--hardware` / `--model-name`.
- The generic layout: columns `kind, batch_size, prompt_tokens, context_tokens, tensor_parallel,
  step_time_ms`, one step per row. `kind` is `prefill` (each of `batch_size` requests prefills
  `prompt_tokens` fresh tokens; `context_tokens` is ignored) or `decode` (each request adds one
  token to `context_tokens` cached ones; `prompt_tokens` is ignored).

Repeats of one setting are averaged into one point before fitting, so a setting measured 15
times weighs as much as one measured 5 times. The fit minimises relative residuals
(predicted / measured - 1) with scipy's `least_squares`, by default under the robust `soft_l1`
loss (scale 5 %) so that a few wrong points (Splitwise's TP2 batch-64 prefill) bend the fit
little; they are reported, not dropped.

Seven factors are fitted: mfu, mbu, step_overhead_s, allreduce_latency_s, prefill_overhead_s (the
extra cost of a step with prefill: eager-mode kernel launches, prompt metadata),
attention_efficiency (the attention kernels' rate relative to the GEMMs') and prefill_request_s
(the cost of each request prefilled in a step: per-sequence input preparation and sampling). A
factor the data cannot tell apart from another is held at the catalog's value and the profile
says why: `allreduce_latency_s` needs two or more tensor-parallel degrees > 1 (with one degree it
is a constant per step, like `step_overhead_s`); `prefill_overhead_s` needs both prefill and decode
points; `attention_efficiency` needs prefill points of two or more prompt lengths;
`prefill_request_s` needs prefill points of batch size 2 or more. `fit_warnings` says when a rate
ends at a bound of its physical range or the fit is poor, so a profile is not trusted blindly.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

from simcost.catalog.specs import get_device, get_model
from simcost.catalog.types import BYTES_PER_ELEMENT, DeviceSpec, ModelSpec, compute_format_for
from simcost.errors import InputError
from simcost.files import staged_file
from simcost.perf.measurements import EFFICIENCY_FACTORS, FACTOR_LOWER, FACTOR_UPPER, StepPoint
from simcost.perf.roofline import default_factors, roofline_params
from simcost.perf.step_model import step_time_s

ROBUST_SCALE = 0.05  # soft_l1 turns from quadratic to linear at 5 % relative error
# Times are fitted in ms / us so that all unknowns are of order 1 for the solver.
_SCALE = {"mfu": 1.0, "mbu": 1.0, "step_overhead_s": 1e-3, "allreduce_latency_s": 1e-6, "prefill_overhead_s": 1e-3,
          "attention_efficiency": 1.0, "prefill_request_s": 1e-3}




# --- reading --------------------------------------------------------------------------------



















# --- predicting and fitting -----------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """What the roofline needs besides the factors."""

    device: DeviceSpec
    model: ModelSpec
    weight_format: str
    compute_format: str
    kv_cache_format: str = "bf16"

    @classmethod
    def of(cls, device_key: str, model_key: str, weight_format: str | None = None) -> "Pair":
        device, model = get_device(device_key, "--device"), get_model(model_key, "--model")
        weight_format = weight_format or model.weight_format
        compute = compute_format_for(device, weight_format)
        if compute is None:
            raise InputError("--weight-format", f"{device.key} cannot run {weight_format} weights")
        return cls(device, model, weight_format, compute)

    def params(self, tp: int, factors: dict[str, float]) -> np.ndarray:
        weight_bytes = self.model.num_params * BYTES_PER_ELEMENT[self.weight_format]
        return roofline_params(self.device, self.model, tp, self.compute_format, weight_bytes,
                               self.kv_cache_format, **factors, pipeline_parallel=1)  # profiles are one stage


def predict_s(pair: Pair, points: list[StepPoint], factors: dict[str, float]) -> np.ndarray:
    """The roofline's step time for every point, counted as the engine counts a step."""
    params = {tp: pair.params(tp, factors) for tp in {pt.tensor_parallel for pt in points}}
    out = np.empty(len(points))
    for i, pt in enumerate(points):
        p, b = params[pt.tensor_parallel], pt.batch_size
        if pt.kind == "prefill":
            n = pt.prompt_tokens
            out[i] = step_time_s(p, b * n, 0, b * n * (n + 1) / 2.0, 0.0, b)  # b prompts in one step
        else:
            kv = b * pt.context_tokens
            out[i] = step_time_s(p, 0, b, kv + b, kv, 0)
    return out


@dataclass(frozen=True)
class Fit:
    factors: dict[str, float]
    fixed: tuple[str, ...]  # held at the catalog's value
    reasons: dict[str, str]  # why each of `fixed` is held
    loss: str
    predicted_s: np.ndarray
    measured_s: np.ndarray

    @property
    def why_fixed(self) -> str:
        return "; ".join(f"{n}: {self.reasons[n]}" for n in self.fixed)


def unidentifiable(points: list[StepPoint]) -> dict[str, str]:
    """The factors `points` cannot tell apart from others, and why."""
    out = {}
    if len({pt.tensor_parallel for pt in points if pt.tensor_parallel > 1}) < 2:
        out["allreduce_latency_s"] = ("the data has fewer than two tensor-parallel degrees > 1, so the all-reduce "
                                      "latency cannot be told from step_overhead_s")
    kinds = {pt.kind for pt in points}
    if kinds != {"prefill", "decode"}:
        out["prefill_overhead_s"] = "the data needs both prefill and decode points to tell it from step_overhead_s"
    if len({pt.prompt_tokens for pt in points if pt.kind == "prefill"}) < 2:
        out["attention_efficiency"] = "the data needs prefill points of two or more prompt lengths"
    if not any(pt.kind == "prefill" and pt.batch_size >= 2 for pt in points):
        out["prefill_request_s"] = ("the data has no prefill points of batch size 2 or more, so the per-request "
                                    "cost cannot be told from prefill_overhead_s")
    return out


def fit_factors(pair: Pair, points: list[StepPoint], loss: str = "soft_l1",
                fixed: tuple[str, ...] = ()) -> Fit:
    """Least-squares factors for `points` (relative residuals), starting from the catalog's."""
    start = default_factors(pair.device)
    reasons = {n: "held at the catalog value on request" for n in fixed}
    for name, why in unidentifiable(points).items():
        if name not in reasons:
            reasons[name] = why
    fixed = tuple(n for n in EFFICIENCY_FACTORS if n in reasons)
    free = [n for n in EFFICIENCY_FACTORS if n not in fixed]
    measured = np.array([pt.step_time_s for pt in points])

    def factors_of(x):
        f = dict(start)
        f.update({n: x[i] * _SCALE[n] for i, n in enumerate(free)})
        return f

    def residuals(x):
        return predict_s(pair, points, factors_of(x)) / measured - 1.0

    x0 = np.array([np.clip(start[n], FACTOR_LOWER[n], FACTOR_UPPER[n]) / _SCALE[n] for n in free])
    lower = [FACTOR_LOWER[n] / _SCALE[n] for n in free]
    upper = [FACTOR_UPPER[n] / _SCALE[n] for n in free]
    result = least_squares(residuals, x0, bounds=(lower, upper), loss=loss, f_scale=ROBUST_SCALE,
                           x_scale=1.0, xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
    # a factor the solver leaves a rounding error above its lower bound is at the bound (6e-25 s is 0 s)
    x = np.where(result.x - np.array(lower) < 1e-9, np.array(lower), result.x)
    factors = factors_of(x)
    return Fit(factors, fixed, reasons, loss, predict_s(pair, points, factors), measured)


# --- reporting ------------------------------------------------------------------------------

POOR_FIT_MEDIAN_PCT = 15.0  # above this median |error| a profile describes the data poorly


def fit_warnings(fit: Fit) -> list[str]:
    """What a user should know before trusting `fit`: factors pinned at a bound of their physical
    range (the model needed more than the range allows, so another factor absorbed the rest) and
    a poor overall fit."""
    out = []
    for name, value in fit.factors.items():
        if name in fit.fixed:
            continue
        if name not in ("mfu", "mbu", "attention_efficiency"):  # the rates; an overhead at 0 s is plausible
            continue
        # the solver stops a hair inside a bound, hence the tolerance
        bound = (("lower", FACTOR_LOWER[name]) if np.isclose(value, FACTOR_LOWER[name], rtol=1e-3)
                 else ("upper", FACTOR_UPPER[name]) if np.isclose(value, FACTOR_UPPER[name], rtol=1e-3) else None)
        if bound:
            out.append(f"{name} = {value:.4g} is at its {bound[0]} bound ({bound[1]:g}): the roofline cannot match "
                       f"these points within the physical range; check the device, weight format and the "
                       f"tensor_parallel column, and read the other factors as compensating")
    free = len(fit.factors) - len(fit.fixed)
    if len(fit.measured_s) <= free:
        out.append(f"{len(fit.measured_s)} points for {free} free factors: the fit is underdetermined (any error "
                   f"it shows is not evidence); measure more settings or hold factors with --fix")
    errors = np.abs(fit.predicted_s / fit.measured_s - 1.0) * 100
    if len(errors) and np.median(errors) > POOR_FIT_MEDIAN_PCT:
        out.append(f"median |error| {np.median(errors):.1f} % in sample: the profile describes these measurements "
                   f"poorly; predictions from it will be worse")
    return out


def error_summary(points: list[StepPoint], predicted_s: np.ndarray) -> dict[str, dict[str, float]]:
    """Median and worst absolute relative error (%) per kind and over all points."""
    errors = np.abs(predicted_s / np.array([pt.step_time_s for pt in points]) - 1.0) * 100
    out = {}
    for kind in ("prefill", "decode", "all"):
        mask = np.array([kind in ("all", pt.kind) for pt in points])
        if mask.any():
            out[kind] = {"median_abs_pct": round(float(np.median(errors[mask])), 2),
                         "worst_abs_pct": round(float(errors[mask].max()), 2), "points": int(mask.sum())}
    return out


def format_table(points: list[StepPoint], predicted_s: np.ndarray, flag_pct: float = 3 * ROBUST_SCALE * 100) -> str:
    """One line per point: setting, measured, predicted, % error; '<-' marks |error| > flag_pct."""
    lines = [f"{'kind':<8}{'tp':>3}{'batch':>6}{'prompt':>7}{'context':>8}{'measured_ms':>13}{'predicted_ms':>13}{'error_%':>9}"]
    order = sorted(range(len(points)), key=lambda i: (points[i].kind != "prefill", points[i].tensor_parallel,
                                                     points[i].batch_size, points[i].prompt_tokens,
                                                     points[i].context_tokens))
    for i in order:
        pt = points[i]
        err = (predicted_s[i] / pt.step_time_s - 1.0) * 100
        mark = "  <-" if abs(err) > flag_pct else ""
        lines.append(f"{pt.kind:<8}{pt.tensor_parallel:>3}{pt.batch_size:>6}{pt.prompt_tokens or '':>7}"
                     f"{pt.context_tokens or '':>8}{pt.step_time_s * 1e3:>13.2f}{predicted_s[i] * 1e3:>13.2f}{err:>+9.1f}{mark}")
    for kind, s in error_summary(points, predicted_s).items():
        lines.append(f"{kind}: median |error| {s['median_abs_pct']:.1f} %, worst {s['worst_abs_pct']:.1f} % "
                     f"over {s['points']} points")
    return "\n".join(lines)


# --- profiles -------------------------------------------------------------------------------

def write_profile(out: str | Path, pair: Pair, fit: Fit, points: list[StepPoint], data_path: str | Path) -> dict:
    """A calibrated profile (YAML) that a scenario names with `perf.profile`."""
    data_path = Path(data_path)
    profile = {
        "device": pair.device.key,
        "model": pair.model.key,
        "weight_format": pair.weight_format,
        "factors": {n: float(f"{v:.6g}") for n, v in fit.factors.items()},
        "fixed": {n: fit.reasons[n] for n in fit.fixed},
        "data": {"file": str(data_path), "sha256": hashlib.sha256(data_path.read_bytes()).hexdigest(),
                 "points": len(points), "measured_steps": sum(pt.repeats for pt in points),
                 "tensor_parallel": sorted({pt.tensor_parallel for pt in points})},
        "fit": {"method": f"scipy.optimize.least_squares, relative residuals, loss {fit.loss}"
                          + (f" (f_scale {ROBUST_SCALE})" if fit.loss != "linear" else ""),
                "error": error_summary(points, fit.predicted_s)},
        "date": datetime.date.today().isoformat(),
    }
    with staged_file(Path(out), "--out") as tmp:
        tmp.write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


