"""The fleet section: replicas or pools, routing, cold starts, warm pools, disaggregation,
autoscaling, spot capacity, failures and sites."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from simcost.errors import InputError
from simcost.scenario.api import ApiPoolConfig
from simcost.scenario.autoscalers import AutoscalerConfig
from simcost.scenario.cascade import CascadeConfig
from simcost.scenario.deployment import EngineConfig, HardwareConfig, ModelConfig
from simcost.scenario.limits import MAX_REPLICAS, REPLICAS_WHY
from simcost.scenario.pricing import PricingConfig, SiteConfig
from simcost.scenario.response_cache import ResponseCacheConfig
from simcost.scenario.schema import bounds


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """One pool of a fleet (fleet.pools): `replicas` replicas of `model` (default: the scenario's)
    on `hardware`, with `engine` keys merged over the scenario's engine section, priced by its own
    `pricing` (default: fleet.pricing; a savings-plan commitment is then this pool's), at its own
    `price_usd_per_device_hour` (default: the catalog's at its site's provider and region), at
    `site` (a name of fleet.sites; default: fleet.site), serving the workloads named in `serves`
    (mix entry names; default: all). `autoscaler`, `spot`, `failures` and `cold_start` move this
    pool alone (simcost.cluster.control runs one control loop per pool)."""

    name: str
    hardware: HardwareConfig
    model: ModelConfig | None = None
    engine: EngineConfig | None = None  # the scenario's engine section with this pool's keys over it
    replicas: int = field(default=1, metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))
    price_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))
    pricing: PricingConfig | None = None
    site: str | None = None
    serves: tuple[str, ...] | None = None
    cold_start: ColdStartConfig | None = None  # None: fleet.cold_start
    warm_pool: WarmPoolConfig | None = None  # None: fleet.warm_pool
    autoscaler: AutoscalerConfig | None = None
    spot: SpotConfig | None = None
    failures: FailureConfig | None = None

    def _check(self, path: str) -> None:
        pricing = self.pricing
        moving = [key for key in ("autoscaler", "spot", "failures") if getattr(self, key) is not None]
        if moving and pricing is not None and pricing.model in ("reserved", "owned"):
            raise InputError(f"{path}.{moving[0]}", f"a pool that changes size cannot be priced as {pricing.model} "
                             "capacity (paid for whether used or not); use on_demand, spot or savings_plan")
        if self.serves is not None and not self.serves:
            raise InputError(f"{path}.serves", "empty; list workload names, or leave serves out for all of them")


@dataclass(frozen=True, kw_only=True)
class ColdStartConfig:
    """Node lifecycle at the start of a run (simcost.lifecycle): every replica is requested at
    t = 0, provisioned, then loads (image pull + weight load + engine start) before it serves;
    both phases are billed and reported as their own cost categories. Every default is a simcost
    assumption (docs/design.md: "GPU nodes often take minutes"; published cold starts run from tens
    of seconds for 7B models to minutes for 70B): set your platform's figures."""

    provisioning_s: float = field(default=90.0, metadata=bounds(ge=0))  # VM boot and node join
    image_gb: float = field(default=10.0, metadata=bounds(ge=0))  # a CUDA + vLLM serving image
    registry_gb_per_s: float = field(default=0.5, metadata=bounds(gt=0))  # image pull bandwidth
    weights_gb_per_s: float = field(default=2.0, metadata=bounds(gt=0))  # min(network, disk) to the node
    engine_start_s: float = field(default=30.0, metadata=bounds(ge=0))  # KV allocation, CUDA graph capture


# EBS gp3 in us-east-1: $0.08 per GB-month (aws.amazon.com/ebs/pricing, checked 2026-11) for a
# 100 GB volume holding the image and weights, over 730 hours a month: what a stopped node costs
STOPPED_NODE_USD_PER_HOUR = 100 * 0.08 / 730


WARM_POOL_STATIC = ("needs a fleet that moves (an autoscaler, spot capacity or failures): a static fleet never "
                    "takes a warm node")


@dataclass(frozen=True, kw_only=True)
class WarmPoolConfig:
    """Nodes kept prepared beside a fleet that moves (simcost.cluster.control), as an EC2 Auto
    Scaling warm pool (its MinSize) or Kubernetes over-provisioning. A replica added on demand
    while a warm node is in the pool takes it and skips part of its cold start (simcost.lifecycle
    `warm_start`): `stopped` (EBS keeps the image and weights on disk) skips provisioning and the
    image pull; `running` (image pulled, weights staged in host memory) also skips the weights'
    network or disk read, leaving their copy over the host link and the engine start. The slot is
    refilled at once: a new node provisions for cold_start.provisioning_s and then joins the pool.
    Warm nodes are on-demand capacity; their time in the pool is its own cost category
    (`warm_pool`): running at the on-demand price, stopped at `stopped_usd_per_hour` a node (default
    STOPPED_NODE_USD_PER_HOUR, an assumption: 100 GB of gp3)."""

    size: int = field(default=1, metadata=bounds(REPLICAS_WHY, ge=0, le=MAX_REPLICAS))
    state: Literal["stopped", "running"] = "stopped"
    stopped_usd_per_hour: float = field(default=STOPPED_NODE_USD_PER_HOUR, metadata=bounds(ge=0))


@dataclass(frozen=True, kw_only=True)
class DisaggregationConfig:
    """Prefill and decode on separate replicas (Splitwise, DistServe): requests enter a prefill
    replica, which emits the first token; the prompt's KV then moves to a decode replica over
    the KV link (each tensor-parallel device sends its shard over its own link), and the decode
    replica generates the rest. kv_link_gb_per_s default 50: one InfiniBand NDR 400 Gb/s port per
    GPU, as in a DGX H100 (an assumption; set 450 for NVLink within a node). When the pools'
    tensor parallelism differs, min(tp) links carry the KV in parallel."""

    prefill_replicas: int = field(metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))
    decode_replicas: int = field(metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))
    kv_link_gb_per_s: float = field(default=50.0, metadata=bounds(gt=0))
    # the decode pool's devices (Splitwise: prompts on H100, tokens on A100); None: the scenario's
    # hardware. Pools of different devices are priced on demand from the catalog.
    decode_hardware: HardwareConfig | None = None


@dataclass(frozen=True, kw_only=True)
class SpotConfig:
    """Spot capacity (simcost.cluster.control; docs/design.md section 4). A share of the replicas runs on
    spot at a lower price and can be reclaimed: each spot replica gets a notice at a Poisson
    hazard of -ln(1 - monthly_interruption) / 730 per hour (AWS publishes bands: <5 %, 5-10,
    10-15, 15-20, >20 % a month; default 0.075, the 5-10 % band's middle), stops taking work,
    and is gone notice_s later (AWS 120 s; GCP and Azure 30 s), its unfinished requests retried
    elsewhere. A replacement is requested at the notice, on `replace_with` capacity."""

    share: float = field(default=1.0, metadata=bounds(ge=0, le=1))  # of the replicas, rounded half up (num_spot)
    usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))  # None: pricing.spot_usd_per_device_hour
    monthly_interruption: float = field(default=0.075, metadata=bounds(ge=0, le=0.99))
    notice_s: float = field(default=120.0, metadata=bounds(ge=0))
    replace_with: Literal["spot", "on_demand"] = "spot"

    def num_spot(self, replicas: int) -> int:
        """Replicas of `replicas` on spot: share x replicas rounded half up, so a 0.5 share puts
        1 of 1, 2 of 3 and 3 of 5 on spot (Python's round() rounds half to even: 0, 2, 2)."""
        return math.floor(self.share * replicas + 0.5)


@dataclass(frozen=True, kw_only=True)
class OutageSpec:
    """Every replica of the site lost at at_s; none can start before at_s + duration_s."""

    at_s: float = field(metadata=bounds(ge=0))
    duration_s: float = field(metadata=bounds(gt=0))


@dataclass(frozen=True, kw_only=True)
class FailureConfig:
    """Node failures (simcost.cluster.control): each replica fails after an exponential time with
    mean mtbf_h hours of service; its requests are retried elsewhere at once, and a replacement is
    requested that serves mttr_s after the failure (detection, a new node, its cold start).
    Whole-site outages are listed explicitly."""

    mtbf_h: float | None = field(default=None, metadata=bounds(gt=0))  # None: no node failures
    mttr_s: float = field(default=600.0, metadata=bounds(ge=0))
    outages: tuple[OutageSpec, ...] = ()


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    replicas: int = field(default=1, metadata=bounds(REPLICAS_WHY, ge=1, le=MAX_REPLICAS))
    router: Literal["round_robin", "random", "join_shortest_queue", "power_of_two", "least_outstanding_tokens",
                    "prefix_affinity", "shared_queue"] = "round_robin"
    # prefix_affinity's c: a replica takes a request only if it then holds at most ceil(c L / n + 1)
    # requests, L the outstanding requests of its n-replica pool before it (simcost.cluster.routers)
    affinity_load_bound: float = field(default=1.25, metadata=bounds(ge=1))
    price_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))  # None: catalog on-demand
    pricing: PricingConfig = PricingConfig()
    site: SiteConfig = SiteConfig()
    # prefill and decode pools (replaces replicas: the fleet has prefill + decode replicas)
    disaggregation: DisaggregationConfig | None = None
    # None: replicas serve from t = 0 (warm); else they provision and load first (simcost.lifecycle)
    cold_start: ColdStartConfig | None = None
    # None: no warm pool; else nodes kept prepared beside a fleet that moves (WarmPoolConfig)
    warm_pool: WarmPoolConfig | None = None
    # None: a static fleet of `replicas`; else the replica count follows load (simcost.cluster.autoscalers),
    # starting from `replicas`
    autoscaler: AutoscalerConfig | None = None
    spot: SpotConfig | None = None  # a share of the replicas on spot capacity, with reclaims
    failures: FailureConfig | None = None  # node failures and site outages
    redundancy: int = field(default=0, metadata=bounds(REPLICAS_WHY, ge=0, le=MAX_REPLICAS))  # N+k: k replicas beyond replicas or the autoscaler's count
    # A fleet of several pools (replaces hardware/replicas as the fleet's shape; see PoolConfig),
    # the sites they run at, and how a request's pool is chosen (simcost.cluster.routers.POOL_ROUTERS)
    pools: tuple[PoolConfig, ...] | None = None
    sites: tuple[SiteConfig, ...] = ()
    pool_router: Literal["fastest", "cost_aware", "edge_first"] = "fastest"
    # edge_first: an edge pool takes a request while its outstanding requests stay below this many
    # per ready replica (None: engine max_num_seqs, its batch capacity)
    edge_max_outstanding_per_replica: int | None = field(default=None, metadata=bounds(ge=1))
    # bytes a token takes on the wire: ~4 for English UTF-8 text with Llama-3's tokenizer (an
    # assumption: its 128k vocabulary averages about 4 characters per token on English prose)
    bytes_per_token: float = field(default=4.0, metadata=bounds(gt=0))
    # hosted-model APIs beside the self-hosted replicas, billed per token (simcost.scenario.api)
    api_pools: tuple[ApiPoolConfig, ...] = ()
    # a small model first, some answers escalated to a larger one (simcost.scenario.cascade)
    cascade: CascadeConfig | None = None
    # answers served from a cache in front of every pool (simcost.scenario.response_cache)
    response_cache: ResponseCacheConfig | None = None

    @property
    def moves(self) -> bool:
        """Replicas come and go during the run (simcost.cluster.control)."""
        if self.pools is not None:
            return any(self.pool_fleet(k).moves for k in range(len(self.pools)))
        return bool(self.autoscaler or self.spot or self.failures or self.pricing.model == "spot")

    def pool_fleet(self, k: int) -> FleetConfig:
        """Pool k of fleet.pools as a one-pool fleet section (what its control loop and its bill
        read); the fleet's own section without pools."""
        if self.pools is None:
            return self
        p = self.pools[k]
        return FleetConfig(replicas=p.replicas, router=self.router, affinity_load_bound=self.affinity_load_bound,
                           price_usd_per_device_hour=p.price_usd_per_device_hour,
                           pricing=p.pricing or self.pricing, site=self.site_of(k),
                           cold_start=p.cold_start or self.cold_start, warm_pool=p.warm_pool or self.warm_pool,
                           autoscaler=p.autoscaler, spot=p.spot,
                           failures=p.failures)

    def site_of(self, k: int) -> SiteConfig:
        """Pool k's site (fleet.site when it names none, or without pools)."""
        name = self.pools[k].site if self.pools is not None else None
        return self.site if name is None else next(s for s in self.sites if s.name == name)

    def _check(self, path: str) -> None:
        if self.pools is not None:
            self._check_pools(path)
            return
        if self.sites:
            raise InputError(f"{path}.sites", "needs fleet.pools (each pool names its site); use fleet.site for one site")
        if self.warm_pool is not None and not self.moves:
            raise InputError(f"{path}.warm_pool", WARM_POOL_STATIC)
        self._check_moving(path)
        if self.disaggregation is None:
            return
        if self.replicas != 1:
            raise InputError(f"{path}.replicas", "not used with disaggregation; give prefill_replicas and decode_replicas")
        if self.router == "shared_queue":
            raise InputError(f"{path}.router", "shared_queue is not available with disaggregation; choose another router")
        if self.disaggregation.decode_hardware is not None:
            if self.pricing.model != "on_demand":
                raise InputError(f"{path}.pricing.model", f"{self.pricing.model} for pools of different devices is not "
                                 "modelled yet; use on_demand, or leave out disaggregation.decode_hardware")
            if self.price_usd_per_device_hour is not None:
                raise InputError(f"{path}.price_usd_per_device_hour", "one price cannot cover two device types; "
                                 "leave it out to use each device's catalog price")

    def _check_moving(self, path: str) -> None:
        moving = [key for key in ("autoscaler", "spot", "failures") if getattr(self, key) is not None]
        if not moving and not self.redundancy:
            return
        key = f"{path}.{moving[0] if moving else 'redundancy'}"
        if self.disaggregation is not None:
            raise InputError(key, "is not modelled with disaggregation yet; leave one of them out")
        if self.pricing.model in ("reserved", "owned"):
            raise InputError(key, f"a fleet that changes size cannot be priced as {self.pricing.model} capacity "
                             "(paid for whether used or not); use on_demand, spot or savings_plan")
        if self.spot is not None and self.spot.usd_per_device_hour is None and self.pricing.spot_usd_per_device_hour is None:
            raise InputError(f"{path}.spot.usd_per_device_hour", "missing; give the spot price per device-hour")

    def _check_pools(self, path: str) -> None:
        for key, value, default in (("disaggregation", self.disaggregation, None), ("redundancy", self.redundancy, 0),
                                    ("autoscaler", self.autoscaler, None), ("spot", self.spot, None),
                                    ("failures", self.failures, None), ("replicas", self.replicas, 1),
                                    ("price_usd_per_device_hour", self.price_usd_per_device_hour, None)):
            if value != default:
                raise InputError(f"{path}.{key}", "not used with fleet.pools; give it inside each pool"
                                 if key != "disaggregation" and key != "redundancy"
                                 else "is not modelled with fleet.pools yet; leave one of them out")
        if self.router == "shared_queue":
            raise InputError(f"{path}.router", "shared_queue is not available with fleet.pools; choose another router")
        if not self.pools:
            raise InputError(f"{path}.pools", "empty; list at least one pool")
        site_names = [s.name for s in self.sites]
        for i, site in enumerate(self.sites):
            if site_names.index(site.name) != i:
                raise InputError(f"{path}.sites[{i}].name", f"'{site.name}' is used twice; sites need distinct names")
        names = [p.name for p in self.pools]
        for i, pool in enumerate(self.pools):
            if names.index(pool.name) != i:
                raise InputError(f"{path}.pools[{i}].name", f"'{pool.name}' is used twice; pools need distinct names")
            if pool.site is not None and pool.site not in site_names:
                raise InputError(f"{path}.pools[{i}].site", f"'{pool.site}' is not a site of fleet.sites "
                                 f"(known: {', '.join(site_names) or 'none'})")
            if pool.warm_pool is not None and not self.pool_fleet(i).moves:
                raise InputError(f"{path}.pools[{i}].warm_pool", WARM_POOL_STATIC)
            self.pool_fleet(i)._check_moving(f"{path}.pools[{i}]")

    @property
    def num_replicas(self) -> int:
        """All replicas paid for at the start: every pool's, the prefill and decode pools, or
        `replicas` (plus any redundancy)."""
        if self.pools is not None:
            return sum(p.replicas for p in self.pools)
        d = self.disaggregation
        return self.replicas + self.redundancy if d is None else d.prefill_replicas + d.decode_replicas
