"""What a sweep varies: scenario keys, each a list of values or a numeric range, and the design
that picks the points.

A space file (`simcost sweep SCENARIO --space space.yaml`):

    design: lhs          # grid (every combination) | random | lhs (Latin hypercube)
    points: 20           # random and lhs: how many points
    seed: 7              # random and lhs: the design's own seed (default 0), not the runs' seed
    keys:
      fleet.replicas: [1, 2, 4]                                  # a list of values
      engine.policy: {values: [chunked, prefill_first]}          # the same, spelt out
      workload.arrivals.rate_per_s: {low: 2, high: 20, log: true}
      engine.max_num_seqs: {low: 16, high: 256, integer: true}

Each key is drawn on its own axis u in [0, 1): a range maps u to low + u (high - low), or with
`log: true` to low (high / low)^u (log-uniform); `integer: true` draws over [low, high + 1) and
floors, so each whole number from low to high is equally likely (log: in proportion to its width
on the log scale). A list maps u to the value at index floor(u n) (a uniform choice). The grid
takes every combination of lists (ranges are not allowed there: give the values).
Latin hypercube: scipy.stats.qmc.LatinHypercube, so each key's N draws fall one in each of N equal
strata of u (for a list, the strata are pooled into its n values as evenly as N allows).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simcost.errors import InputError, required
from simcost.yamlio import read_yaml_file

DESIGNS = ("grid", "random", "lhs")
MAX_POINTS = 100_000  # each point is at least one simulation: more is a typo, not a study


@dataclass(frozen=True)
class Axis:
    """One varied key: a list of values, or a range low..high (log, integer)."""

    key: str
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def at(self, u: float):
        """The value at position u in [0, 1) of this axis."""
        if self.values is not None:
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.low is None or self.high is None:
            raise ValueError(f"sweep axis {self.key}: neither values nor a range")
        low, high = self.low, self.high
        top = high + 1 if self.integer else high
        x = low * (top / low) ** u if self.log else low + u * (top - low)
        return min(math.floor(x), int(high)) if self.integer else float(x)


@dataclass(frozen=True)
class Space:
    axes: tuple[Axis, ...]
    design: str = "grid"
    points: int | None = None  # random and lhs
    seed: int = 0

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.axes)


def points(space: Space) -> list[dict]:
    """The design's points, each {key: value}; the grid in row-major order of the keys."""
    if space.design == "grid":
        grid = (required(a.values, f"sweep.{a.key}") for a in space.axes)  # a grid's axes are value lists
        return [dict(zip(space.keys, combo)) for combo in itertools.product(*grid)]
    rng = np.random.default_rng(space.seed)
    if space.design == "random":
        u = rng.random((required(space.points, "sweep.points"), len(space.axes)))
    else:
        from scipy.stats import qmc

        u = qmc.LatinHypercube(d=len(space.axes), rng=rng).random(space.points)
    return [{a.key: a.at(float(x)) for a, x in zip(space.axes, row)} for row in u]


# --- reading ----------------------------------------------------------------------------------

def _finite_number(where: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(where, f"{v!r}; expected a finite number")
    return v

def space_from_flags(params: list[str], values: list[list]) -> Space:
    """Repeated --param KEY --values a,b,c: the grid over every pair."""
    if len(params) != len(values):
        raise InputError("--param/--values", f"{len(params)} --param and {len(values)} --values; give one --values per --param")
    axes = tuple(axis(p, v, f"--param {p}") for p, v in zip(params, values))
    unique(axes, "--param {}")
    return Space(axes)


def load_space(path: str | Path, extra: Space | None = None) -> Space:
    """A space file, plus the --param/--values keys of `extra` (as lists)."""
    path = Path(path)
    raw = read_yaml_file(path, "space file")
    return space_from_dict(raw, str(path), extra)


def space_from_dict(raw, where: str = "space", extra: Space | None = None) -> Space:
    if not isinstance(raw, dict):
        raise InputError(where, f"expected a mapping with design, points, seed and keys, got {type(raw).__name__}")
    unknown = set(raw) - {"design", "points", "seed", "keys"}
    if unknown:
        raise InputError(f"{where}: {sorted(unknown)[0]}", "unknown; a space file has design, points, seed and keys")
    design = raw.get("design", "grid")
    if design not in DESIGNS:
        raise InputError(f"{where}: design", f"'{design}'; expected one of {', '.join(DESIGNS)}")
    keys = raw.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise InputError(f"{where}: keys", "missing or empty; expected a mapping of scenario keys to values or ranges")
    axes = [axis(str(k), spec, f"{where}: keys.{k}") for k, spec in keys.items()]
    axes += list(extra.axes if extra else ())
    unique(axes, f"{where}: keys.{{}}")
    n, seed = raw.get("points"), raw.get("seed", 0)
    if design == "grid":
        if n is not None:
            raise InputError(f"{where}: points", "not used by design grid (its size is the product of the value counts)")
        ranged = next((a.key for a in axes if a.values is None), None)
        if ranged:
            raise InputError(f"{where}: keys.{ranged}", "a range in a grid; give values: [...] (or use design random or lhs)")
        size = math.prod(len(a.values or ()) for a in axes)
        if size > MAX_POINTS:
            raise InputError(f"{where}: keys", f"a grid of {size:,} points; expected at most {MAX_POINTS:,} "
                             "(use design random or lhs to sample a large space)")
    elif not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_POINTS):
        raise InputError(f"{where}: points", f"{n!r}; design {design} needs a whole number of points from 1 to "
                                             f"{MAX_POINTS:,}")
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise InputError(f"{where}: seed", f"{seed!r}; expected a whole number >= 0")
    return Space(tuple(axes), design, n, seed)


def unique(axes, where: str) -> None:
    """No key twice; where is a format for the key's place, e.g. '--param {}'."""
    seen = [a.key for a in axes]
    dup = next((k for k in seen if seen.count(k) > 1), None)
    if dup:
        raise InputError(where.format(dup), "given twice (in a space file and by --param?)")


def axis(key: str, spec, where: str) -> Axis:
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise InputError(where, f"{spec!r}; expected a list of values or {{low, high[, log, integer]}}")
    if "values" in spec:
        extra = set(spec) - {"values"}
        values = spec["values"]
        if extra:
            raise InputError(where, f"{sorted(extra)[0]} given with values; give values or a range, not both")
        if not isinstance(values, list) or not values:
            raise InputError(where, f"values {values!r}; expected a non-empty list")
        return Axis(key, values=tuple(values))
    unknown = set(spec) - {"low", "high", "log", "integer"}
    if unknown:
        raise InputError(f"{where}.{sorted(unknown)[0]}", "unknown; a range has low, high, log and integer")
    low, high = _finite_number(f"{where}.low", spec.get("low")), _finite_number(f"{where}.high", spec.get("high"))
    log, integer = spec.get("log", False), spec.get("integer", False)
    for name, v in (("log", log), ("integer", integer)):
        if not isinstance(v, bool):
            raise InputError(f"{where}.{name}", f"{v!r}; expected true or false")
    if not low < high:
        raise InputError(where, f"low {low} is not below high {high}")
    if log and low <= 0:
        raise InputError(f"{where}.low", f"{low}; a log range needs low > 0")
    if integer and (low != int(low) or high != int(high)):
        raise InputError(where, f"low {low} and high {high} must be whole numbers with integer: true")
    return Axis(key, low=float(low), high=float(high), log=log, integer=integer)
