"""Arrival processes of a scenario's workload: one frozen, keyword-only class per process, picked
by the `process` key (a tagged union: `simcost.scenario.schema` builds the class the key names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simcost.errors import InputError
from simcost.scenario.schema import bounds, tag


@dataclass(frozen=True, kw_only=True)
class PoissonArrivals:
    """Poisson arrivals at rate_per_s."""

    process: Literal["poisson"] = field(default="poisson", metadata=tag("process"))
    rate_per_s: float = field(metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class RenewalArrivals:
    """A renewal process (gamma or weibull inter-arrival times) at rate_per_s whose gaps have
    coefficient of variation cv (1 is Poisson; above 1 is burstier)."""

    process: Literal["gamma", "weibull"] = field(metadata=tag("process"))
    rate_per_s: float = field(metadata=bounds(gt=0))
    cv: float = field(metadata=bounds(ge=0.01, le=100))


@dataclass(frozen=True, kw_only=True)
class MmppArrivals:
    """On-off bursts: a two-state Markov-modulated Poisson process with exponential sojourns."""

    process: Literal["mmpp"] = field(default="mmpp", metadata=tag("process"))
    rate_on_per_s: float = field(metadata=bounds(ge=0))
    rate_off_per_s: float = field(metadata=bounds(ge=0))
    mean_on_s: float = field(metadata=bounds(gt=0))
    mean_off_s: float = field(metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if self.rate_on_per_s + self.rate_off_per_s == 0:
            raise InputError(f"{path}.rate_on_per_s", "0 with rate_off_per_s 0; at least one rate must be > 0")


@dataclass(frozen=True, kw_only=True)
class PiecewiseArrivals:
    """A rate that steps: rate_table [[start_s, rate_per_s], ...] or rate_file (a CSV with header
    start_s,rate_per_s, relative to the scenario file), first start 0, the last rate holds on."""

    process: Literal["piecewise"] = field(default="piecewise", metadata=tag("process"))
    rate_table: tuple[tuple[float, ...], ...] | None = None
    rate_file: str | None = None

    def _check(self, path: str) -> None:
        if (self.rate_table is None) == (self.rate_file is None):
            raise InputError(f"{path}.rate_file" if self.rate_file else f"{path}.rate_table",
                             "given with rate_table; give one of them" if self.rate_file
                             else "missing; process 'piecewise' needs rate_table or rate_file")
        if self.rate_table is not None:
            check_rate_rows(self.rate_table, lambda i: f"{path}.rate_table[{i}]", f"{path}.rate_table")


@dataclass(frozen=True, kw_only=True)
class SinusoidalArrivals:
    """A daily (or any period_s) cycle around mean_rate_per_s, peak_to_trough times higher at
    peak_at_s than half a period later."""

    process: Literal["sinusoidal"] = field(default="sinusoidal", metadata=tag("process"))
    mean_rate_per_s: float = field(metadata=bounds(gt=0))
    peak_to_trough: float = field(metadata=bounds(ge=1))
    period_s: float = field(default=86400.0, metadata=bounds(gt=0))
    peak_at_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ServegenArrivals:
    """Alibaba ServeGen per-client windows (see `simcost.workload.servegen`): servegen_file (a
    bundled name, simcost.workload.servegen.SERVEGEN_BUNDLED, or a path); clients (ids) or
    top_clients (the K busiest), else every client of the file; start_s in trace time (0 = local
    midnight); time_compression (60 plays a day in 24 min) and rate_multiplier."""

    process: Literal["servegen"] = field(default="servegen", metadata=tag("process"))
    servegen_file: str
    clients: tuple[int, ...] | None = None
    top_clients: int | None = field(default=None, metadata=bounds(ge=1))
    start_s: float = field(default=0.0, metadata=bounds(ge=0))
    time_compression: float = field(default=1.0, metadata=bounds(ge=1))
    rate_multiplier: float = field(default=1.0, metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if self.clients is not None and self.top_clients is not None:
            raise InputError(f"{path}.top_clients", "given with clients; give one of them")
        if self.clients is not None and not self.clients:
            raise InputError(f"{path}.clients", "empty; list client ids, or leave clients out for all of them")
        listed = self.clients or ()
        for i, client in enumerate(listed):
            if client in listed[:i]:
                raise InputError(f"{path}.clients[{i}]", f"client {client} is listed twice")


# An arrival process (see `simcost.workload.arrivals`), picked by the `process` key; each takes
# only its own keys.
ArrivalSpec = (PoissonArrivals | RenewalArrivals | MmppArrivals | PiecewiseArrivals | SinusoidalArrivals
               | ServegenArrivals)


def check_rate_rows(table, where_row, where_table: str) -> None:
    """Checks of a piecewise table [[start_s, rate_per_s], ...]; `where_row(i)` names row i
    (a key path inline, `file:line` for rate_file)."""
    if not table:
        raise InputError(where_table, "empty; expected rows [start_s, rate_per_s] starting at 0")
    for i, row in enumerate(table):
        if len(row) != 2:
            raise InputError(where_row(i), f"{list(row)} has {len(row)} numbers; expected [start_s, rate_per_s]")
        if row[1] < 0:
            raise InputError(where_row(i), f"rate {row[1]} is negative; expected >= 0")
        if i == 0 and row[0] != 0:
            raise InputError(where_row(0), f"starts at {row[0]} s; the first row must start at 0")
        if i and row[0] <= table[i - 1][0]:
            raise InputError(where_row(i), f"start {row[0]} s is not after the previous row's {table[i - 1][0]} s")
    if max(row[1] for row in table) == 0:
        raise InputError(where_table, "every rate is 0; at least one must be > 0")


def peak_rate_per_s(spec: ArrivalSpec) -> tuple[str, float] | None:
    """(the key that sets it, the highest rate a process reaches), for estimating a run's size
    before drawing it; None when only a file knows (rate_file, servegen)."""
    if isinstance(spec, (PoissonArrivals, RenewalArrivals)):
        return "rate_per_s", spec.rate_per_s
    if isinstance(spec, MmppArrivals):
        return max(("rate_on_per_s", spec.rate_on_per_s), ("rate_off_per_s", spec.rate_off_per_s), key=lambda kv: kv[1])
    if isinstance(spec, SinusoidalArrivals):
        return "mean_rate_per_s", spec.mean_rate_per_s * 2 * spec.peak_to_trough / (1 + spec.peak_to_trough)
    if isinstance(spec, PiecewiseArrivals) and spec.rate_table:
        return "rate_table", max(row[1] for row in spec.rate_table)
    return None
