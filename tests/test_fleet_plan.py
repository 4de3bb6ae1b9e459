"""The fleet plan: every way of writing a fleet becomes a tuple of pools."""

from __future__ import annotations

from scenarios import scenario
from test_pools import SITES, cloud_pool, edge_pool, pooled

from simcost.scenario.fleet_plan import fleet_plan, pool_routed


def test_one_deployment_is_one_serve_pool_of_all_its_replicas():
    scn = scenario(fleet={"replicas": 3, "redundancy": 1})
    (pool,) = fleet_plan(scn)
    assert (pool.role, pool.replicas, pool.name, pool.label) == ("serve", 4, "", "serve")
    assert pool.scenario is scn and pool.fleet is scn.fleet
    assert not pool_routed(fleet_plan(scn)) and not pool.own_site
    assert pool.config_key("hardware.device") == "hardware.device"


def test_disaggregation_is_a_prefill_pool_then_a_decode_pool_on_its_own_hardware():
    scn = scenario(engine={"policy": "chunked"}, fleet={"disaggregation": {
        "prefill_replicas": 1, "decode_replicas": 2, "kv_link_gb_per_s": 10.0,
        "decode_hardware": {"device": "a100-80gb"}}})
    prefill, decode = fleet_plan(scn)
    assert (prefill.role, prefill.replicas, decode.role, decode.replicas) == ("prefill", 1, "decode", 2)
    assert prefill.scenario is scn and decode.scenario.hardware.device == "a100-80gb"
    assert decode.kv_link_gb_per_s == 10.0 and not decode.controlled
    assert decode.config_key("hardware.device") == "fleet.disaggregation.decode_hardware.device"
    assert decode.config_key("model.weight_format") == "model.weight_format"
    assert not pool_routed((prefill, decode))


def test_named_pools_keep_their_sections_sites_and_keys():
    scn = pooled([cloud_pool(), edge_pool(replicas=3)], sites=SITES)
    cloud, edge = fleet_plan(scn)
    assert pool_routed((cloud, edge)) and cloud.own_section and edge.own_section
    assert (edge.name, edge.replicas, edge.role) == ("edge", 3, "serve")
    assert edge.scenario.hardware.device == "jetson-agx-orin" and edge.fleet.site.name == "edge" and edge.own_site
    assert edge.fleet.pricing.model == "owned"
    assert edge.config_key("hardware.device") == "fleet.pools[1].hardware.device"
    assert edge.config_key("fleet.price_usd_per_device_hour") == "fleet.pools[1].price_usd_per_device_hour"
    assert edge.config_key("fleet.site.region") == "fleet.sites[1].region"
    assert edge.config_key("workload.arrivals") == "workload.arrivals"
