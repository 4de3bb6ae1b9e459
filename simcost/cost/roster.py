"""Node lifecycle: when each replica is requested, serves, stops taking work and is gone, and
what its time before serving costs.

A replica is requested, provisioned for provisioning_s, then loads for
    image_gb / registry_gb_per_s                                  (image pull)
  + max(weight bytes / weights_gb_per_s, weight bytes / tp / PCIe) (weights: the node's network
        or disk, then each device's share over its own host link, whichever is slower)
  + engine_start_s
(docs/design.md section 4) before it serves. A static fleet's replicas are all requested at t = 0,
warm (fleet.cold_start unset: they serve at once) or cold. A fleet that moves (an autoscaler,
spot capacity, failures: simcost.cluster.control) adds replicas during the run, always cold,
drains them (no new work; gone once their last request ends) and loses them (spot reclaim,
failure: gone at once, their requests retried elsewhere).

`Roster` keeps every replica's timeline; the ledger bills each replica from request to gone and
prices provisioning, loading and draining as their own cost categories (simcost.cost.ledger).

Warm pools (fleet.warm_pool, simcost.scenario.fleet.WarmPoolConfig): nodes kept prepared beside the
fleet. A replica that takes one skips provisioning and the image pull (`warm_start`); the roster
keeps each warm node's timeline too (`WarmNode`: requested, in the pool, taken or lost), billed
as the `warm_pool` cost category, and which replicas took one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simcost.perf.deployment import Pool
from simcost.perf.startup import RUNNING, STOPPED, StartPhases  # noqa: F401 (RUNNING: a warm node's other state)

ON_DEMAND, SPOT = "on_demand", "spot"














@dataclass
class Life:
    """One replica's timeline (seconds from t = 0). drain_s: it stopped taking new work
    (scale-down, spot notice); gone_s: it stopped being billed (inf: still there at the end)."""

    pool: int  # index into the fleet's pools
    capacity: str  # ON_DEMAND or SPOT
    # billed from here: when it was requested, or, requested while its site was down (an
    # outage), when the site came back (a node the cloud cannot provision is not billed)
    requested_s: float
    provisioned_s: float
    ready_s: float
    drain_s: float = math.inf
    gone_s: float = math.inf
    end: str = ""  # why it went: scale_down, reclaim, failure, cancelled ("" while there)
    warm: bool = False  # it took a warm node (skipped provisioning and the image pull)


@dataclass
class WarmNode:
    """One node of a warm pool: requested at requested_s (provisioning, at the on-demand rate),
    in the pool from standby_s (at its state's rate) until gone_s (taken by a replica, or lost)."""

    pool: int
    state: str  # STOPPED or RUNNING
    requested_s: float
    standby_s: float
    provisioning_usd_per_hour: float
    standby_usd_per_hour: float
    gone_s: float = math.inf
    end: str = ""  # taken, outage ("" while there)


@dataclass
class Roster:
    """Every replica the run had, by replica index; every warm node; and, per pool with a warm
    pool, its (size, state) and how many on-demand replicas found it empty (misses)."""

    lives: list[Life] = field(default_factory=list)
    warm: list[WarmNode] = field(default_factory=list)
    warm_pools: dict[int, tuple[int, str]] = field(default_factory=dict)
    warm_misses: dict[int, int] = field(default_factory=dict)

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
            warm_hit=np.array([life.warm for life in lives], dtype=bool),
            warm=self._warm_arrays(horizon_s),
            warm_pools=dict(self.warm_pools),
            warm_misses=dict(self.warm_misses),
        )

    def _warm_arrays(self, horizon_s: float) -> "WarmArrays":
        nodes = self.warm
        gone = np.array([min(w.gone_s, horizon_s) for w in nodes], dtype=np.float64)
        col = lambda xs: np.array(xs, dtype=np.float64)  # noqa: E731
        return WarmArrays(pool=np.array([w.pool for w in nodes], dtype=np.int64),
                          requested_s=np.minimum(col([w.requested_s for w in nodes]), gone),
                          standby_s=np.minimum(col([w.standby_s for w in nodes]), gone), gone_s=gone,
                          provisioning_usd_per_hour=col([w.provisioning_usd_per_hour for w in nodes]),
                          standby_usd_per_hour=col([w.standby_usd_per_hour for w in nodes]),
                          end=[w.end for w in nodes])


@dataclass(frozen=True)
class WarmArrays:
    """The warm nodes as columns, times cut at the horizon."""

    pool: np.ndarray
    requested_s: np.ndarray
    standby_s: np.ndarray
    gone_s: np.ndarray
    provisioning_usd_per_hour: np.ndarray
    standby_usd_per_hour: np.ndarray
    end: list[str]

    @classmethod
    def empty(cls) -> "WarmArrays":
        z = np.zeros(0)
        return cls(np.zeros(0, dtype=np.int64), z, z, z, z, z, [])

    def part(self, mask: np.ndarray) -> "WarmArrays":
        return WarmArrays(self.pool[mask], self.requested_s[mask], self.standby_s[mask], self.gone_s[mask],
                          self.provisioning_usd_per_hour[mask], self.standby_usd_per_hour[mask],
                          [e for e, m in zip(self.end, mask) if m])

    @property
    def provisioning_s(self) -> np.ndarray:
        return self.standby_s - self.requested_s

    @property
    def in_pool_s(self) -> np.ndarray:
        return self.gone_s - self.standby_s


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
    warm_hit: np.ndarray  # per replica: it took a warm node
    warm: WarmArrays = field(default_factory=WarmArrays.empty)
    warm_pools: dict[int, tuple[int, str]] = field(default_factory=dict)  # pool -> (size, state)
    warm_misses: dict[int, int] = field(default_factory=dict)  # pool -> on-demand adds that found it empty

    @property
    def alive_s(self) -> np.ndarray:
        return self.gone_s - self.requested_s

    @property
    def static(self) -> bool:
        """Every replica there from t = 0 to the horizon, never drained: a fixed fleet."""
        return bool((self.requested_s == 0).all() and not any(self.end) and (self.drain_s >= self.gone_s).all())
