"""Energy and carbon of a run, per replica and per clock hour.

Power of a replica at utilisation u is idle_w + u * (peak_w - idle_w) (docs/design.md section 4),
times the site's PUE for cooling and power delivery. The step log does not carry a compute
utilisation, so u = 1 while a step runs and u = 0 between steps: an upper bound on busy power
(memory-bound decode steps draw less than peak) that keeps energy a function of the log alone.
The kernels take u per step, so a finer utilisation can be passed in later without changing them.

Everything is kept per (replica, hour) because pricing and the FOCUS export are hourly:
hour h covers [3600 h, min(3600 (h + 1), horizon)); only for the hours each replica life spans
(simcost.cost.hours.HourWindows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from simcost.cost.hours import HourWindows, clock_hour
from simcost.errors import required
from simcost.units import J_PER_KWH, S_PER_HOUR


def num_hours(horizon_s: float) -> int:
    return max(1, math.ceil(horizon_s / S_PER_HOUR))


def hour_covered_s(horizon_s: float) -> np.ndarray:
    """Seconds of each clock hour inside [0, horizon_s] (the last hour may be partial)."""
    starts = np.arange(num_hours(horizon_s)) * S_PER_HOUR
    return np.clip(horizon_s - starts, 0.0, S_PER_HOUR)


@dataclass(frozen=True)
class Energy:
    windows: HourWindows  # the replica lives' hours
    hour_kwh: np.ndarray  # per entry of windows (replica, hour), PUE included
    pue: float | None  # None: replicas at sites of different PUE (replica_pue)
    grid_gco2_per_kwh: float | None  # None: sites of different grids (replica_gco2_per_kwh)
    replica_pue: np.ndarray | None = None  # (replicas,) when sites differ
    replica_gco2_per_kwh: np.ndarray | None = None  # (replicas,) when sites differ

    @property
    def total_kwh(self) -> float:
        return self.windows.total(self.hour_kwh)

    @property
    def replica_kwh(self) -> np.ndarray:
        return self.windows.row_sums(self.hour_kwh)

    @property
    def total_gco2(self) -> float:
        if self.replica_gco2_per_kwh is not None:
            return float((self.replica_kwh * self.replica_gco2_per_kwh).sum())
        return self.total_kwh * required(self.grid_gco2_per_kwh, "site.grid_gco2_per_kwh")  # one grid: set


def replica_hour_energy(windows: HourWindows, busy_u_s: np.ndarray, alive_s: np.ndarray, idle_w, peak_w,
                        pue, grid_gco2_per_kwh) -> Energy:
    """Integral of power over each replica-hour (entries of windows): idle_w for the seconds the
    replica was there (alive_s) plus (peak - idle) x u over the time steps ran (busy_u_s = integral
    of u dt, from `split_steps_by_hour`). idle_w and peak_w: one figure per replica; so are pue and
    grid_gco2_per_kwh (each replica's site), or one for all."""
    idle_w = windows.per_entry(np.broadcast_to(np.asarray(idle_w, dtype=np.float64), (windows.num_lives,)))
    peak_w = windows.per_entry(np.broadcast_to(np.asarray(peak_w, dtype=np.float64), (windows.num_lives,)))
    joules = alive_s * idle_w + busy_u_s * (peak_w - idle_w)
    if np.ndim(pue) == 0 and np.ndim(grid_gco2_per_kwh) == 0:
        return Energy(windows, joules * pue / J_PER_KWH, pue=pue, grid_gco2_per_kwh=grid_gco2_per_kwh)
    pue, grid = np.asarray(pue, dtype=np.float64), np.asarray(grid_gco2_per_kwh, dtype=np.float64)
    one = lambda x: float(x[0]) if len(x) and (x == x[0]).all() else None  # noqa: E731
    return Energy(windows, joules * windows.per_entry(pue) / J_PER_KWH, pue=one(pue), grid_gco2_per_kwh=one(grid),
                  replica_pue=pue, replica_gco2_per_kwh=grid)


# --- kernels (each with a plain-Python twin) ----------------------------------------------

@njit(cache=True)
def hour_piece(t_s, end_s, n_hours):
    """The clock hour h holding time t_s (the last hour takes any overrun), and where the piece of
    a step from t_s to end_s inside that hour stops."""
    h = min(clock_hour(t_s), n_hours - 1)
    cut_s = min(end_s, (h + 1) * S_PER_HOUR) if h < n_hours - 1 else end_s
    return h, cut_s


@njit(cache=True)
def split_steps_by_hour(step_start_s, step_end_s, step_replica, step_util, first_hour, offset, n_hours):
    """Busy seconds and integral of u dt per (replica, hour), per entry of the replicas' hour
    windows (first_hour, offset: simcost.cost.hours.HourWindows, which must hold every hour a
    replica's steps touch); a step across an hour boundary is cut."""
    busy_s = np.zeros(offset[-1])
    busy_u_s = np.zeros(offset[-1])
    for j in range(step_start_s.shape[0]):
        r = step_replica[j]
        t = step_start_s[j]
        while t < step_end_s[j]:
            h, cut = hour_piece(t, step_end_s[j], n_hours)
            e = offset[r] + h - first_hour[r]
            busy_s[e] += cut - t
            busy_u_s[e] += (cut - t) * step_util[j]
            t = cut
    return busy_s, busy_u_s


def split_steps_by_hour_py(step_start_s, step_end_s, step_replica, step_util, num_replicas, n_hours):
    """The dense (replicas, hours) twin of `split_steps_by_hour`."""
    busy_s = np.zeros((num_replicas, n_hours))
    busy_u_s = np.zeros((num_replicas, n_hours))
    for s, e, r, u in zip(step_start_s, step_end_s, step_replica, step_util):
        for h in range(n_hours):
            lo = h * S_PER_HOUR
            hi = (h + 1) * S_PER_HOUR if h < n_hours - 1 else math.inf  # the last hour takes any overrun
            piece = max(0.0, min(e, hi) - max(s, lo))
            busy_s[r, h] += piece
            busy_u_s[r, h] += piece * u
    return busy_s, busy_u_s


def hour_overlap_s(start_s: np.ndarray, end_s: np.ndarray, n_hours: int) -> np.ndarray:
    """(intervals, hours): seconds of each [start, end) inside each clock hour (the last hour
    takes any overrun): the dense twin of HourWindows.overlap_s, for tests."""
    lo = np.arange(n_hours) * S_PER_HOUR
    hi = lo + S_PER_HOUR
    hi[-1] = math.inf
    return np.clip(np.minimum(end_s[:, None], hi[None, :]) - np.maximum(start_s[:, None], lo[None, :]), 0.0, None)
