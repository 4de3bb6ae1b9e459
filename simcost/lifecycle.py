"""Node lifecycle: when each replica is requested, serves, stops taking work and is gone, and
what its time before serving costs.

A replica is requested, provisioned for provisioning_s, then loads for
    image_gb / registry_gb_per_s                                  (image pull)
  + max(weight bytes / weights_gb_per_s, weight bytes / tp / PCIe) (weights: the node's network
        or disk, then each device's share over its own host link, whichever is slower)
  + engine_start_s
(DESIGN.md section 4) before it serves. A static fleet's replicas are all requested at t = 0,
warm (fleet.cold_start unset: they serve at once) or cold. A fleet that moves (an autoscaler,
spot capacity, failures: simcost.fleet_control) adds replicas during the run, always cold,
drains them (no new work; gone once their last request ends) and loses them (spot reclaim,
failure: gone at once, their requests retried elsewhere).

`Roster` keeps every replica's timeline; the ledger bills each replica from request to gone and
prices provisioning, loading and draining as their own cost categories (simcost.ledger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simcost.config import ColdStartConfig
from simcost.perf import Pool

ON_DEMAND, SPOT = "on_demand", "spot"


@dataclass(frozen=True)
class StartPhases:
    """When one replica finishes provisioning and loading (seconds from its request)."""

    provisioned_s: float
    ready_s: float

    @property
    def loading_s(self) -> float:
        return self.ready_s - self.provisioned_s


def loading_s(cfg: ColdStartConfig, pool: Pool) -> float:
    dep = pool.deployment
    weights_s = dep.weight_bytes / (cfg.weights_gb_per_s * 1e9)
    if dep.device.host_link_bytes_per_s is not None:  # devices on a host link load their share over it
        weights_s = max(weights_s, dep.weight_bytes / dep.tensor_parallel / dep.device.host_link_bytes_per_s)
    return cfg.image_gb / cfg.registry_gb_per_s + weights_s + cfg.engine_start_s


def cold_start(cfg: ColdStartConfig | None, pool: Pool) -> StartPhases:
    """Provisioning and loading of one replica of `pool` (zero when warm)."""
    if cfg is None:
        return StartPhases(0.0, 0.0)
    return StartPhases(cfg.provisioning_s, cfg.provisioning_s + loading_s(cfg, pool))


def start_phases(cfg: ColdStartConfig | None, pools: list[Pool]) -> list[StartPhases]:
    """Per initial replica, in replica order: all zero when the fleet starts warm."""
    return [phase for pool in pools for phase in [cold_start(cfg, pool)] * pool.replicas]


@dataclass
class Life:
    """One replica's timeline (seconds from t = 0). drain_s: it stopped taking new work
    (scale-down, spot notice); gone_s: it stopped being billed (inf: still there at the end)."""

    pool: int  # index into the fleet's pools
    capacity: str  # ON_DEMAND or SPOT
    requested_s: float
    provisioned_s: float
    ready_s: float
    drain_s: float = math.inf
    gone_s: float = math.inf
    end: str = ""  # why it went: scale_down, reclaim, failure, cancelled ("" while there)


@dataclass
class Roster:
    """Every replica the run had, by replica index."""

    lives: list[Life] = field(default_factory=list)

    @classmethod
    def static(cls, pools: list[Pool], phases: list[StartPhases] | None = None,
               capacity: list[str] | None = None) -> "Roster":
        pool_of = [k for k, p in enumerate(pools) for _ in range(p.replicas)]
        phases = phases or [StartPhases(0.0, 0.0)] * len(pool_of)
        capacity = capacity or [ON_DEMAND] * len(pool_of)
        return cls([Life(k, c, 0.0, ph.provisioned_s, ph.ready_s) for k, ph, c in zip(pool_of, phases, capacity)])

    def __len__(self) -> int:
        return len(self.lives)

    def arrays(self, horizon_s: float) -> "RosterArrays":
        lives = self.lives
        gone = np.array([min(life.gone_s, horizon_s) for life in lives])
        clip = lambda xs: np.minimum(np.array(xs, dtype=np.float64), gone)  # noqa: E731
        return RosterArrays(
            pool=np.array([life.pool for life in lives], dtype=np.int64),
            spot=np.array([life.capacity == SPOT for life in lives], dtype=bool),
            requested_s=clip([life.requested_s for life in lives]),
            provisioned_s=clip([life.provisioned_s for life in lives]),
            ready_s=clip([life.ready_s for life in lives]),
            drain_s=clip([life.drain_s for life in lives]),
            gone_s=gone,
            end=[life.end for life in lives],
        )


@dataclass(frozen=True)
class RosterArrays:
    """The roster as columns, every time cut at the horizon (a replica still there then is billed
    to it)."""

    pool: np.ndarray
    spot: np.ndarray
    requested_s: np.ndarray
    provisioned_s: np.ndarray
    ready_s: np.ndarray
    drain_s: np.ndarray
    gone_s: np.ndarray
    end: list[str]

    @property
    def alive_s(self) -> np.ndarray:
        return self.gone_s - self.requested_s

    @property
    def static(self) -> bool:
        """Every replica there from t = 0 to the horizon, never drained: a fixed fleet."""
        return bool((self.requested_s == 0).all() and not any(self.end) and (self.drain_s >= self.gone_s).all())
