"""The fleet as a list of pools, whichever way the scenario wrote it.

A scenario's fleet takes one of three forms: `fleet.replicas` (one pool of the scenario's own
deployment), `fleet.disaggregation` (a prefill pool handing requests to a decode pool) or
`fleet.pools` (named pools, each with its own hardware, model, engine, site, pricing and
autoscaler). `fleet_plan` turns each into the same thing, a tuple of `PoolPlan`, so that the
layers above build, run and bill pools without asking which form the user chose.

Each pool carries the scenario it runs: the scenario with the pool's hardware, model, engine and
one-pool fleet section in place (FleetConfig.pool_fleet). Pure: reads config types only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from simcost.errors import required
from simcost.scenario.fleet import FleetConfig
from simcost.scenario.scenario import Scenario

Role = Literal["serve", "prefill", "decode"]


@dataclass(frozen=True)
class PoolPlan:
    """One pool of replicas of one deployment."""

    role: Role  # serve: whole requests; prefill: up to the first token; decode: the rest
    replicas: int  # at the start, redundancy included
    scenario: Scenario  # what this pool runs: its hardware, model, engine, perf and fleet section
    name: str = ""  # fleet.pools' name; "" for a pool the fleet did not name
    # Written as an entry of fleet.pools: the pool router places requests on it, and it is
    # priced, sited and reported by its own section (not the fleet's as a whole)
    own_section: bool = False
    serves: tuple[int, ...] | None = None  # workload entry indices it may serve (None: all)
    # This pool has a control loop of its own when its fleet section moves. A disaggregated
    # fleet's decode pool has none: the fleet's section moves its prefill pool alone.
    controlled: bool = True
    kv_link_gb_per_s: float | None = None  # decode pool: the link the prompt's KV arrives over
    hardware_key: str = "hardware"  # where the user wrote this pool's hardware section
    model_key: str = "model"
    engine_key: str = "engine"
    fleet_key: str = "fleet"  # where its fleet keys (autoscaler, price, ...) were written
    site_key: str = "fleet.site"  # where its site was written

    @property
    def fleet(self) -> FleetConfig:
        return self.scenario.fleet

    @property
    def moves(self) -> bool:
        """Replicas of this pool come and go during the run (its own control loop)."""
        return self.controlled and self.fleet.moves

    @property
    def own_site(self) -> bool:
        """The pool runs at a site of fleet.sites it names (not the fleet's own site)."""
        return self.site_key != "fleet.site"

    @property
    def label(self) -> str:
        return self.name or self.role

    def config_key(self, where: str) -> str:
        """The key the user wrote for `where`, a key of this pool's one-pool scenario (so an
        error names the section that holds the mistake)."""
        section, dot, rest = where.partition(".")
        own = {"hardware": self.hardware_key, "model": self.model_key, "engine": self.engine_key}.get(section)
        if own is not None:
            return own + dot + rest
        for written, key in (("fleet.price_usd_per_device_hour", self.fleet_key + ".price_usd_per_device_hour"),
                              ("fleet.site.", self.site_key + ".")):
            if where.startswith(written):
                return key + where.removeprefix(written)
        return where  # a key every pool shares (fleet.pricing, workload, ...)


def fleet_plan(scenario: Scenario) -> tuple[PoolPlan, ...]:
    """Every pool of the scenario's fleet, in replica order."""
    fleet = scenario.fleet
    if fleet.pools is not None:
        return tuple(_named_pool(scenario, k) for k in range(len(fleet.pools)))
    d = fleet.disaggregation
    if d is None:
        return (PoolPlan("serve", fleet.num_replicas, scenario),)
    decode = scenario if d.decode_hardware is None else replace(scenario, hardware=d.decode_hardware)
    decode_key = "hardware" if d.decode_hardware is None else "fleet.disaggregation.decode_hardware"
    return (PoolPlan("prefill", d.prefill_replicas, scenario),
            PoolPlan("decode", d.decode_replicas, decode, controlled=False, kv_link_gb_per_s=d.kv_link_gb_per_s,
                     hardware_key=decode_key))


def pool_routed(plan: tuple[PoolPlan, ...]) -> bool:
    """Requests choose their pool by the fleet's pool router (fleet.pools); otherwise every
    request enters the first pool."""
    return plan[0].own_section


def pool_scenario(scenario: Scenario, k: int) -> Scenario:
    """Pool k of fleet.pools as a one-pool scenario: its hardware, model, engine and fleet section."""
    p = required(scenario.fleet.pools, "fleet.pools")[k]
    return replace(scenario, hardware=p.hardware, model=p.model or scenario.model, engine=p.engine or scenario.engine,
                   fleet=scenario.fleet.pool_fleet(k))


def _named_pool(scenario: Scenario, k: int) -> PoolPlan:
    fleet = scenario.fleet
    cfg = required(fleet.pools, "fleet.pools")[k]
    names = [scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))]
    serves = None if cfg.serves is None else tuple(names.index(name) for name in cfg.serves)
    key = f"fleet.pools[{k}]"
    site_key = "fleet.site" if cfg.site is None else f"fleet.sites[{[s.name for s in fleet.sites].index(cfg.site)}]"
    return PoolPlan("serve", cfg.replicas, pool_scenario(scenario, k), cfg.name, own_section=True, serves=serves,
                    hardware_key=f"{key}.hardware", model_key=f"{key}.model", engine_key=f"{key}.engine",
                    fleet_key=key, site_key=site_key)
