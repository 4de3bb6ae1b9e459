"""Measured step times and calibrated profiles: reading a measurements CSV (Splitwise's columns or the generic ones) into step points, and a profile's fitted factors with their bounds."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simcost.catalog.specs import catalog_names, get_device, get_model
from simcost.errors import InputError
from simcost.yamlio import read_yaml_file

SPLITWISE_COLUMNS = ("model", "hardware", "prompt_size", "batch_size", "token_size", "prompt_time",
                     "token_time", "tensor_parallel")


GENERIC_COLUMNS = ("kind", "batch_size", "prompt_tokens", "context_tokens", "tensor_parallel", "step_time_ms")


# Lower bounds keep the rates positive (the roofline divides by them); (0, 1] is the physical range.
FACTOR_LOWER = {"mfu": 1e-3, "mbu": 1e-3, "step_overhead_s": 0.0, "allreduce_latency_s": 0.0, "prefill_overhead_s": 0.0,
          "attention_efficiency": 1e-3, "prefill_request_s": 0.0}


FACTOR_UPPER = {"mfu": 1.0, "mbu": 1.0, "step_overhead_s": np.inf, "allreduce_latency_s": np.inf,
          "prefill_overhead_s": np.inf, "attention_efficiency": 1.0, "prefill_request_s": np.inf}


@dataclass(frozen=True)
class StepPoint:
    """One measured setting (repeats averaged)."""

    kind: str  # "prefill" or "decode"
    batch_size: int
    prompt_tokens: int  # fresh tokens per request (prefill)
    context_tokens: float  # mean cached tokens per request (decode)
    tensor_parallel: int
    step_time_s: float  # mean of the repeats
    repeats: int
    where: str  # file:line of the first row


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def read_points(path: str | Path, device_key: str, model_key: str,
                tensor_parallel: tuple[int, ...] = (), *, hardware_name: str | None = None,
                model_name: str | None = None) -> list[StepPoint]:
    """The measured points of `path` for the pair, optionally only some TP degrees. A Splitwise
    file names its rows' hardware and model: they match the catalog key or an alias (ignoring case
    and punctuation), or `hardware_name` / `model_name` when given."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not part of a name
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), f"cannot read measurements ({getattr(exc, 'strerror', None) or exc})") from None
    reader = _reader(text)
    header = reader.fieldnames or []
    if all(c in header for c in SPLITWISE_COLUMNS):
        names = (_names(hardware_name, device_key, get_device), _names(model_name, model_key, get_model))
        raw = _splitwise_rows(reader, path.name, *names)
    elif all(c in header for c in GENERIC_COLUMNS):
        raw = _generic_rows(reader, path.name)
    else:
        raise InputError(f"{path.name}:1", f"columns {header} match neither layout; expected "
                         f"{', '.join(SPLITWISE_COLUMNS)} (Splitwise) or {', '.join(GENERIC_COLUMNS)} (generic)")
    if not raw and all(c in header for c in SPLITWISE_COLUMNS):
        raise InputError(path.name, f"no rows for {model_key} on {device_key}; the file has "
                         f"{_pairs_in(text)} (name them with --model-name / --hardware)")
    if tensor_parallel:
        degrees = sorted({r[4] for r in raw})
        raw = [r for r in raw if r[4] in tensor_parallel]
        if not raw:
            raise InputError(path.name, f"no rows for {model_key} on {device_key} at tensor_parallel "
                                        f"{list(tensor_parallel)}; the file has tensor_parallel {degrees}")
    if not raw:
        raise InputError(path.name, f"no rows for {model_key} on {device_key}")
    return _average(raw)


def _reader(text: str) -> csv.DictReader:
    """Rows keyed by the header's names with surrounding spaces removed; the delimiter is the
    header's: a comma, or a semicolon or tab (spreadsheets in many locales write those)."""
    lines = text.splitlines()
    first = lines[0] if lines else ""
    delimiter = max(",;\t", key=first.count) if first else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    if reader.fieldnames:
        reader.fieldnames = [name.strip() for name in reader.fieldnames]
    return reader


def _names(given: str | None, key: str, lookup) -> set[str]:
    """The normalised names a file's rows may use for catalog entry `key`."""
    if given:
        return {_norm(given)}
    try:
        return {_norm(n) for n in catalog_names(lookup(key))} | {_norm(key)}
    except InputError:  # not a catalog key: match the name as given
        return {_norm(key)}


def _pairs_in(text: str) -> str:
    """The (model on hardware) pairs of a Splitwise file, for an error message."""
    pairs = sorted({(r.get("model") or "").strip() + " on " + (r.get("hardware") or "").strip()
                    for r in _reader(text)})
    return ", ".join(pairs[:8]) + (f" and {len(pairs) - 8} more" if len(pairs) > 8 else "") if pairs else "no rows"


def _field(row: dict, name: str, where: str, kind=float, minimum: float = 0.0, strict: bool = False):
    """`row[name]` as a number >= minimum (> minimum when strict), else InputError at `where`."""
    text = (row.get(name) or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    in_range = value > minimum if strict else value >= minimum
    if not (in_range and value < float("inf")) or (kind is int and not value.is_integer()):
        what = "a whole number" if kind is int else "a finite number"
        raise InputError(where, f"{name} = {text!r}; expected {what} {'>' if strict else '>='} {minimum:g}")
    return kind(value)


def _splitwise_rows(reader, file: str, hardware_names: set[str], model_names: set[str]) -> list[tuple]:
    rows = []
    for line, row in enumerate(reader, start=2):
        where = f"{file}:{line}"
        if None in row:
            raise InputError(where, f"{len(reader.fieldnames) + len(row[None])} fields; the header has {len(reader.fieldnames)}")
        if _norm(row["model"] or "") not in model_names or _norm(row["hardware"] or "") not in hardware_names:
            continue
        b = _field(row, "batch_size", where, int, 1)
        prompt = _field(row, "prompt_size", where, int, 1)
        generated = _field(row, "token_size", where, int, 1)
        tp = _field(row, "tensor_parallel", where, int, 1)
        rows.append(("prefill", b, prompt, 0.0, tp, _field(row, "prompt_time", where, float, 0, strict=True) / 1e3, where))
        rows.append(("decode", b, 0, prompt + generated / 2, tp,
                     _field(row, "token_time", where, float, 0, strict=True) / 1e3, where))
    return rows


def _generic_rows(reader, file: str) -> list[tuple]:
    rows = []
    for line, row in enumerate(reader, start=2):
        where = f"{file}:{line}"
        if None in row:
            raise InputError(where, f"more fields than the header's {len(reader.fieldnames)}")
        kind = (row["kind"] or "").strip()
        if kind not in ("prefill", "decode"):
            raise InputError(where, f"kind = {kind!r}; expected prefill or decode")
        b = _field(row, "batch_size", where, int, 1)
        tp = _field(row, "tensor_parallel", where, int, 1)
        step_s = _field(row, "step_time_ms", where, float, 0, strict=True) / 1e3
        if kind == "prefill":
            rows.append((kind, b, _field(row, "prompt_tokens", where, int, 1), 0.0, tp, step_s, where))
        else:
            rows.append((kind, b, 0, _field(row, "context_tokens", where, float, 0), tp, step_s, where))
    return rows


def _average(raw: list[tuple]) -> list[StepPoint]:
    groups: dict[tuple, list[tuple]] = {}
    for r in raw:
        groups.setdefault(r[:5], []).append(r)
    return [StepPoint(kind=k[0], batch_size=k[1], prompt_tokens=k[2], context_tokens=k[3], tensor_parallel=k[4],
                      step_time_s=float(np.mean([r[5] for r in rs])), repeats=len(rs), where=rs[0][6])
            for k, rs in groups.items()]


def load_profile(path: str | Path, device_key: str, model_key: str, where: str = "perf.profile") -> dict[str, float]:
    """The fitted factors of a profile. A profile of another model or device carries the factors
    whose physics does not depend on what changed (carried_factors), with a warning."""
    try:
        raw = read_yaml_file(Path(path), "profile")
    except InputError as exc:  # name the key too: the profile is a file the scenario points to
        raise InputError(where, f"{exc.problem}, in {exc.where}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("factors"), dict):
        raise InputError(where, f"{path} has no 'factors' mapping; write it with `simcost calibrate`")
    keep = carried_factors(str(raw.get("device")), device_key, str(raw.get("model")), model_key, str(path))
    factors = {}
    for name in EFFICIENCY_FACTORS:
        value = raw["factors"].get(name)
        if value is None and name in FACTOR_DEFAULTS:
            continue  # a profile written before this factor existed: the catalog's value stands
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (FACTOR_LOWER[name] <= value <= FACTOR_UPPER[name]):
            raise InputError(where, f"{path}: factors.{name} = {value!r}; expected a number in [{FACTOR_LOWER[name]}, {FACTOR_UPPER[name]}]")
        factors[name] = float(value)
    return {name: v for name, v in factors.items() if name in keep}


# Factors that describe the engine's CPU work (per step, per prefill, per prompt): they carry to
# another device of the same kind; mfu and mbu are fractions of the device's own peaks, which
# kernels reach similarly on GPUs of one vendor generation, so they carry too, with a warning;
# allreduce_latency_s is the link's and never carries to another device.
_ENGINE_FACTORS = ("step_overhead_s", "prefill_overhead_s", "prefill_request_s")


def carried_factors(profile_device: str, device_key: str, profile_model: str, model_key: str, path: str) -> tuple[str, ...]:
    """The factors of a profile fitted on (profile_device, profile_model) that apply to
    (device_key, model_key), warning about what is assumed or left at the catalog's value."""
    import warnings
    if profile_device == device_key and profile_model == model_key:
        return EFFICIENCY_FACTORS
    if profile_device == device_key:
        warnings.warn(f"{path} was calibrated for model {profile_model!r}; its factors are carried to {model_key!r} "
                      f"(attention_efficiency and prefill_request_s depend on the model's shapes: check them)",
                      stacklevel=3)
        return EFFICIENCY_FACTORS
    try:
        same_kind = get_device(profile_device, "perf.profile").kind == get_device(device_key, "perf.profile").kind
    except InputError:
        same_kind = False
    if not same_kind:
        warnings.warn(f"{path} was calibrated on {profile_device!r}, not a {device_key!r}-like device; none of its "
                      f"factors carry, the catalog's values stand", stacklevel=3)
        return ()
    keep = ("mfu", "mbu", *_ENGINE_FACTORS, "attention_efficiency")
    warnings.warn(f"{path} was calibrated on {profile_device!r}; carried to {device_key!r}: {', '.join(keep)} (mfu and mbu "
                  f"as fractions of {device_key}'s peaks, an assumption); allreduce_latency_s stays the catalog's",
                  stacklevel=3)
    return keep


EFFICIENCY_FACTORS = ("mfu", "mbu", "step_overhead_s", "allreduce_latency_s", "prefill_overhead_s",
                      "attention_efficiency", "prefill_request_s")


# Factors the device catalog does not carry (yet): neutral values, so an uncalibrated model is the
# plain roofline; `simcost calibrate` fits them.
FACTOR_DEFAULTS = {"prefill_overhead_s": 0.0, "attention_efficiency": 1.0, "prefill_request_s": 0.0}
