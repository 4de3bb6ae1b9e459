"""Node lifecycle: when a replica can serve, and what its time before that costs.

Today a fleet is static: every replica is requested at t = 0. Warm (fleet.cold_start unset), it
serves at once. Cold, it is provisioned for provisioning_s, then loads for
    image_gb / registry_gb_per_s                                  (image pull)
  + max(weight bytes / weights_gb_per_s, weight bytes / tp / PCIe) (weights: the node's network
        or disk, then each device's share over its own host link, whichever is slower)
  + engine_start_s
(DESIGN.md section 4). Requests that arrive meanwhile wait in its queue. The ledger prices the
two phases as the `provisioning` and `loading` cost categories (simcost.ledger).
"""

from __future__ import annotations

from dataclasses import dataclass

from simcost.config import ColdStartConfig
from simcost.perf import Pool


@dataclass(frozen=True)
class StartPhases:
    """When one replica finishes provisioning and loading (seconds from t = 0)."""

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


def start_phases(cfg: ColdStartConfig | None, pools: list[Pool]) -> list[StartPhases]:
    """Per replica, in replica order: all zero when the fleet starts warm."""
    phases = []
    for pool in pools:
        if cfg is None:
            phase = StartPhases(0.0, 0.0)
        else:
            phase = StartPhases(cfg.provisioning_s, cfg.provisioning_s + loading_s(cfg, pool))
        phases += [phase] * pool.replicas
    return phases
