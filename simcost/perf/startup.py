"""Node start-up: how long a replica takes from its request to serving (provisioning, image pull, weight load, engine start), cold or from a warm node."""

from __future__ import annotations

from dataclasses import dataclass

from simcost.errors import InputError
from simcost.perf.deployment import Pool
from simcost.scenario.fleet import ColdStartConfig
from simcost.scenario.limits import MAX_START_S

STOPPED, RUNNING = "stopped", "running"  # a warm node's state (EC2 warm pool PoolState)


@dataclass(frozen=True)
class StartPhases:
    """When one replica finishes provisioning and loading (seconds from its request)."""

    provisioned_s: float
    ready_s: float

    @property
    def loading_s(self) -> float:
        return self.ready_s - self.provisioned_s


def weight_paths_s(cfg: ColdStartConfig, pool: Pool) -> tuple[float, float]:
    """(the weights over the node's network or disk, each device's share over its host link; 0
    for a device with none)."""
    dep = pool.deployment
    link = dep.device.host_link_bytes_per_s
    return (dep.weight_bytes / (cfg.weights_gb_per_s * 1e9),
            0.0 if link is None else dep.weight_bytes / dep.tensor_parallel / link)


def loading_s(cfg: ColdStartConfig, pool: Pool) -> float:
    return cfg.image_gb / cfg.registry_gb_per_s + max(weight_paths_s(cfg, pool)) + cfg.engine_start_s


def warm_start(cfg: ColdStartConfig, pool: Pool, state: str) -> StartPhases:
    """A replica on a warm node: no provisioning (the node exists) and no image pull (it is on the
    node's disk). stopped: the weights come off the node's disk (at weights_gb_per_s, the cold
    start's min(network, disk) bound: an EBS volume is network storage) and over the host link;
    running: they are staged in host memory, so only the host-link copy is left. Then the engine
    starts (KV allocation, CUDA graphs) in both."""
    disk_s, link_s = weight_paths_s(cfg, pool)
    return StartPhases(0.0, (max(disk_s, link_s) if state == STOPPED else link_s) + cfg.engine_start_s)


def cold_start(cfg: ColdStartConfig | None, pool: Pool) -> StartPhases:
    """Provisioning and loading of one replica of `pool` (zero when warm)."""
    if cfg is None:
        return StartPhases(0.0, 0.0)
    phases = StartPhases(cfg.provisioning_s, cfg.provisioning_s + loading_s(cfg, pool))
    if phases.ready_s > MAX_START_S:
        _refuse_start(cfg, pool, phases.ready_s)
    return phases


def _refuse_start(cfg: ColdStartConfig, pool: Pool, ready_s: float) -> None:
    """A start-up beyond MAX_START_S: blame the phase that takes longest, so the key named is the
    one to fix (a link typed in the wrong unit, a provisioning time in ms)."""
    disk_s, link_s = weight_paths_s(cfg, pool)
    phases = {"provisioning_s": cfg.provisioning_s, "registry_gb_per_s": cfg.image_gb / cfg.registry_gb_per_s,
              "weights_gb_per_s": disk_s, "engine_start_s": cfg.engine_start_s}
    key = max(phases, key=lambda name: phases[name])
    device = pool.deployment.device
    if link_s > phases[key]:  # the device's own host link (its catalog entry) is the slow path
        raise InputError(f"catalog devices.{device.key}.host_link_gb_per_s",
                         f"{(device.host_link_bytes_per_s or 0.0) / 1e9:g} makes a replica take {ready_s / 86400:,.3g} days to "
                         f"load its weights; expected a start-up within {MAX_START_S / 86400:g} days")
    raise InputError(f"fleet.cold_start.{key}", f"{getattr(cfg, key):g} makes a replica take {ready_s / 86400:,.3g} days "
                     f"to start ({phases[key] / 86400:,.3g} of them here); expected a start-up within "
                     f"{MAX_START_S / 86400:g} days")


def start_phases(cfg: ColdStartConfig | None, pools: list[Pool]) -> list[StartPhases]:
    """Per initial replica, in replica order: all zero when the fleet starts warm."""
    return [phase for pool in pools for phase in [cold_start(cfg, pool)] * pool.replicas]
