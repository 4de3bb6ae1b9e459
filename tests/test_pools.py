"""Fleets of several pools across sites (fleet.pools, fleet.sites): pool routers (edge_first,
cost_aware), workload restrictions, each pool priced its own way, egress, network round trips."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scenarios import scenario

from simcost.errors import InputError
from simcost.metrics.pool_summary import _pool_step_usd, served_pool
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

CONSTANT = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.02, "step_overhead_s": 0.002}
EDGE_DEVICE = {"device": "jetson-agx-orin"}  # no catalog price: owned, or priced by hand
OWNED = {"model": "owned", "capex_usd_per_device": 2000.0, "usd_per_kwh": 0.15, "lifetime_years": 3.0}
SITES = [{"name": "cloud", "client_rtt_s": 0.08},
         {"name": "edge", "edge": True, "client_rtt_s": 0.01, "egress_usd_per_gb": 0.05, "pue": 1.0,
          "grid_gco2_per_kwh": 100.0}]


def workload(rate=4.0, low=50, high=800):
    return {"arrivals": {"process": "poisson", "rate_per_s": rate},
            "input_tokens": {"dist": "uniform", "low": low, "high": high},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 200}}


def edge_pool(replicas=1, **extra):
    return {"name": "edge", "hardware": EDGE_DEVICE, "site": "edge", "replicas": replicas,
            "model": {"name": "llama-3.1-8b", "weight_format": "int4"},
            "pricing": OWNED, **extra}


def cloud_pool(replicas=2, price=3.0, **extra):
    return {"name": "cloud", "hardware": {"device": "h100-sxm"}, "site": "cloud", "replicas": replicas,
            "price_usd_per_device_hour": price, **extra}


def pooled(pools, pool_router="fastest", sites=SITES, rate=4.0, duration_s=60.0, fleet_extra=None, **extra):
    fleet = {"pools": pools, "sites": sites, "pool_router": pool_router, "router": "join_shortest_queue",
             **(fleet_extra or {})}
    extra.setdefault("workload", workload(rate))
    return scenario(perf=CONSTANT, engine={"max_model_len": 8192}, fleet=fleet, duration_s=duration_s, **extra)


def served(res) -> np.ndarray:
    return served_pool(res.table, res.bill.roster.pool)


def assert_bill_adds_up(bill):
    assert bill.request_usd.sum() + bill.unallocated_usd == pytest.approx(bill.total_usd, rel=1e-9)


# --- edge_first ----------------------------------------------------------------------------

def test_edge_first_never_overfills_an_edge_replica_and_spills_when_it_is_full():
    """Checked at every routing decision: a request goes to an edge replica only while it holds
    fewer than max_num_seqs (4) requests, so it never holds more; a request goes to the cloud only
    when every edge replica is full (no SLO is set, so capacity is the only reason). The intra-pool
    router is round_robin, which alone would overfill one replica while the other has room."""
    cap = 4
    scn = pooled([edge_pool(replicas=2, engine={"max_num_seqs": cap}), cloud_pool()], "edge_first", rate=6.0,
                 fleet_extra={"router": "round_robin"})
    sim = Simulation(scn)
    fleet, decisions = sim.fleet, []
    submit = fleet._submit

    def watched(replica, rid):
        edge_loads = [r.num_outstanding for r in fleet.routable[0]]
        submit(replica, rid)
        pool = fleet.roster.lives[replica.index].pool
        decisions.append((pool, min(edge_loads), replica.num_outstanding))

    fleet._submit = watched
    res = sim.run()
    pool, edge_min_before, after = map(np.array, zip(*decisions))
    assert (after[pool == 0] <= cap).all()
    assert after[pool == 0].max() == cap  # the bound was reached, so it was tested
    assert (edge_min_before[pool == 1] >= cap).all()  # spilled only when the edge was full
    assert (pool == 1).sum() > 20 and (pool == 0).sum() > 20
    routing = res.summary["pool_routing"]
    assert routing["spilled_to_cloud"] == int((pool == 1).sum())
    assert routing["requests_by_pool"] == {"edge": int((pool == 0).sum()), "cloud": int((pool == 1).sum())}
    assert (res.table.status == COMPLETED).all()


def test_edge_first_spills_when_the_edge_prediction_breaks_the_slo():
    """With a TTFT SLO below the edge's predicted TTFT for long prompts (the edge is far from
    full: max_num_seqs 256), those go to the cloud and the rest stay on the edge."""
    slo_s = 0.05
    sim = Simulation(pooled([edge_pool(), cloud_pool()], "edge_first", rate=2.0, slo={"ttft_s": slo_s}))
    decisions = record(sim)
    res = sim.run()
    for k, predicted in decisions:
        assert k == (0 if predicted[0] <= slo_s else 1)
    edge = sum(k == 0 for k, _ in decisions)
    assert edge >= 10 and len(decisions) - edge >= 10
    assert res.summary["pool_routing"]["spilled_to_cloud"] == len(decisions) - edge


# --- egress and network --------------------------------------------------------------------

@pytest.mark.parametrize("unallocated", ["showback", "chargeback"])
def test_egress_is_bytes_out_times_the_price_and_the_bill_adds_up(unallocated):
    scn = pooled([edge_pool(engine={"max_num_seqs": 4}), cloud_pool()], "edge_first", rate=3.0,
                 fleet_extra={"bytes_per_token": 2.5}, cost={"unallocated": unallocated})
    res = Simulation(scn).run()
    t, bill, where = res.table, res.bill, served(res)
    price = {0: 0.05, 1: 0.09}  # edge's own; cloud's default, AWS internet egress
    by_hand = {k: t.generated[where == k].sum() * 2.5 / 1e9 * price[k] for k in (0, 1)}
    assert by_hand[0] > 0 and by_hand[1] > 0
    assert bill.egress_usd == pytest.approx(by_hand[0] + by_hand[1], rel=1e-12)
    sites = res.summary["by_site"]
    assert sites["edge"]["egress_usd"] == pytest.approx(by_hand[0], rel=1e-12)
    assert sites["cloud"]["egress_gb"] == pytest.approx(t.generated[where == 1].sum() * 2.5 / 1e9, rel=1e-12)
    assert sites["edge"]["requests_served"] + sites["cloud"]["requests_served"] == t.num_requests
    # each request carries its own egress; the categories and allocated + unallocated add up
    np.testing.assert_allclose(bill.request_egress_usd, t.generated * 2.5 / 1e9 * np.where(where == 0, 0.05, 0.09))
    assert_bill_adds_up(bill)
    assert bill.charged_usd.sum() + bill.unallocated_left_usd == pytest.approx(bill.total_usd, rel=1e-9)
    assert sum(res.summary["cost"]["by_category"].values()) == pytest.approx(bill.total_usd, rel=1e-9)
    assert res.summary["cost"]["by_category"]["egress"] == bill.egress_usd


def test_network_round_trip_is_added_once_to_what_the_user_sees():
    res = Simulation(pooled([edge_pool(), cloud_pool()], "edge_first", rate=3.0)).run()
    t, where, net = res.table, served(res), res.summary["network"]
    rtt = np.where(where == 0, 0.01, 0.08)
    ttft = t.first_token_s - t.arrival_s
    assert net["ttft_end_to_end_s"]["mean"] == pytest.approx((ttft + rtt).mean(), rel=1e-12)
    assert net["rtt_s"]["mean"] == pytest.approx(rtt.mean(), rel=1e-12)
    assert res.summary["ttft_s"]["mean"] == pytest.approx(ttft.mean(), rel=1e-12)  # vLLM's, server-side


# --- pricing per pool ----------------------------------------------------------------------

def test_each_pool_is_priced_its_own_way():
    """An owned edge pool, an on-demand cloud pool and a spot pool (no reclaims, so the fleet
    stays put): the bill is the sum of the three bills computed by hand."""
    spot = {"name": "spot", "hardware": {"device": "h100-sxm"}, "replicas": 2, "price_usd_per_device_hour": 3.0,
            "pricing": {"model": "spot", "spot_usd_per_device_hour": 1.2}, "spot": {"monthly_interruption": 0.0}}
    scn = pooled([edge_pool(), cloud_pool(replicas=1, price=3.0), spot], "fastest", rate=3.0)
    res = Simulation(scn).run()
    h, bill, steps = res.horizon_s, res.bill, res.steps
    assert res.bill.roster.static and len(res.bill.roster.pool) == 4
    busy_s = np.bincount(steps.step_replica, weights=steps.step_duration_s, minlength=4)
    assert busy_s[0] > 0  # the owned pool's power follows its busy time
    # owned (Jetson AGX Orin: idle 12 W, peak 60 W; edge PUE 1.0): capital over 3 years + power
    capex = 2000.0 * h / (3 * 8760 * 3600)
    kwh = (12.0 * h + (60.0 - 12.0) * busy_s[0]) * 1.0 / 3.6e6
    edge_usd = capex + kwh * 0.15
    cloud_usd = max(h, 60.0) * 3.0 / 3600
    spot_usd = 2 * max(h, 60.0) * 1.2 / 3600
    assert bill.egress_usd > 0  # edge and cloud list their sites; the spot pool's (fleet.site) has none
    assert bill.total_usd - bill.egress_usd == pytest.approx(edge_usd + cloud_usd + spot_usd, rel=1e-9)
    rows = {row["name"]: row for row in res.summary["pools"]}
    assert rows["edge"]["usd"] == pytest.approx(edge_usd, rel=1e-9)
    assert rows["cloud"]["usd"] == pytest.approx(cloud_usd, rel=1e-9)
    assert rows["spot"]["usd"] == pytest.approx(spot_usd, rel=1e-9)
    assert [rows[n]["pricing_model"] for n in ("edge", "cloud", "spot")] == ["owned", "on_demand", "spot"]
    assert bill.tariff.model == "mixed" and bill.tariff.replica_model == ["owned", "on_demand", "spot", "spot"]
    assert_bill_adds_up(bill)
    # carbon at each replica's site: the edge at 100 g/kWh, the rest at fleet.site's 400
    kwh_r = bill.energy.replica_kwh
    assert bill.energy.total_gco2 == pytest.approx(kwh_r[0] * 100.0 + kwh_r[1:].sum() * 400.0, rel=1e-12)


# --- workload restrictions -----------------------------------------------------------------

def mix():
    return {"mix": [{"name": "chat", **workload(2.0)}, {"name": "batch", **workload(2.0)}]}


def test_a_workload_restricted_to_one_pool_is_never_served_elsewhere():
    scn = pooled([edge_pool(serves=["chat"], engine={"max_num_seqs": 4}), cloud_pool(replicas=1)], "edge_first",
                 workload=mix())
    res = Simulation(scn).run()
    t, where = res.table, served(res)
    batch = t.workload == 1
    assert batch.sum() > 50 and (where[batch] == 1).all()
    assert (where[~batch] == 0).sum() > 10 and (where[~batch] == 1).sum() > 10  # chat went to both
    assert res.summary["by_workload"]["batch"]["completed"] == int(batch.sum())


def test_a_workload_no_pool_serves_is_an_input_error():
    with pytest.raises(InputError, match="no pool serves workload 'batch'"):
        pooled([edge_pool(serves=["chat"]), cloud_pool(serves=["chat"])], workload=mix())
    with pytest.raises(InputError, match=r"fleet.pools\[0\].serves\[0\].*'chta' is not a workload"):
        pooled([edge_pool(serves=["chta"]), cloud_pool()], workload=mix())
    with pytest.raises(InputError, match=r"fleet.pools\[0\].site.*'moon' is not a site"):
        pooled([edge_pool(site="moon"), cloud_pool()])
    with pytest.raises(InputError, match=r"fleet.pools\[0\].price_usd_per_device_hour.*jetson-agx-orin has no price"):
        Simulation(pooled([edge_pool(price_usd_per_device_hour=None, pricing={"model": "on_demand"}), cloud_pool()]))
    with pytest.raises(InputError, match=r"fleet.replicas.*inside each pool"):
        pooled([cloud_pool()], fleet_extra={"replicas": 3})


# --- cost_aware ----------------------------------------------------------------------------

def two_prices(rate, slo_s, max_num_seqs=256, duration_s=60.0):
    """Same device, speed and batch size; cheap at $1, dear at $4 per device-hour."""
    engine = {"max_num_seqs": max_num_seqs}
    pools = [cloud_pool(replicas=1, price=1.0, name="cheap", engine=engine),
             cloud_pool(replicas=1, price=4.0, name="dear", engine=engine)]
    return pooled(pools, "cost_aware", rate=rate, duration_s=duration_s, slo={"ttft_s": slo_s})


RTT_S = {"cloud": 0.08, "cheap": 0.08, "dear": 0.08, "edge": 0.01}  # SITES; cheap and dear are at cloud


def by_hand_ttft_s(fleet, k, rid, name) -> float:
    """The documented predictor (simcost.cluster.routers), from the state, by hand for the constant model:
    waiting prompt tokens / ready replicas x (prefill seconds per token at a full 8192-token step)
    + this prompt's prefill step + the site's RTT."""
    t = fleet.table
    ready = fleet.routable[k]
    queued = sum(int(t.input_tokens[w]) for r in ready for w in r.waiting)
    per_token_s = (0.002 + 1e-4 * 8192) / 8192
    return queued / len(ready) * per_token_s + 0.002 + 1e-4 * int(t.input_tokens[rid]) + RTT_S[name]


def record(sim):
    router, out = sim.fleet.pool_router, []
    choose = router.choose

    def recorded(rid, pools):
        predicted = {k: by_hand_ttft_s(sim.fleet, k, rid, sim.pools[k].name) for k in pools}
        k, replica = choose(rid, pools)
        out.append((k, predicted))
        return k, replica

    router.choose = recorded
    return out


def test_cost_aware_takes_the_cheap_pool_at_low_load():
    sim = Simulation(two_prices(rate=0.5, slo_s=1.0))
    res = sim.run()
    assert (served(res) == 0).all() and res.summary["pool_routing"]["requests_by_pool"]["dear"] == 0
    rows = {row["name"]: row for row in res.summary["pools"]}
    assert rows["cheap"]["usd_per_hour"] == 1.0 and rows["dear"]["usd_per_hour"] == 4.0


def test_cost_aware_takes_the_fast_pool_when_the_cheap_one_would_break_the_slo():
    """Each pool batches 2 requests at a time, so the cheap pool's queue grows under load: each
    request goes to the cheap pool exactly when its predicted TTFT there meets the 0.3 s SLO,
    else to the dear pool (the fastest, when neither meets it)."""
    slo_s = 0.3
    sim = Simulation(two_prices(rate=1.5, slo_s=slo_s, max_num_seqs=2, duration_s=120.0))
    decisions = record(sim)
    res = sim.run()
    to_dear = 0
    for k, predicted in decisions:
        if 0 in predicted and predicted[0] <= slo_s:
            assert k == 0
        elif 1 in predicted and predicted[1] <= slo_s:
            assert k == 1
            to_dear += 1
        else:  # neither meets it: the fastest
            assert k == min(predicted, key=predicted.get)
    assert to_dear > 20 and sum(k == 0 for k, _ in decisions) > 20
    assert (res.table.status == COMPLETED).all()


def test_cost_aware_falls_back_to_the_fastest_pool_when_no_pool_meets_the_slo():
    sim = Simulation(two_prices(rate=4.0, slo_s=0.001, max_num_seqs=2))
    decisions = record(sim)
    res = sim.run()
    for k, predicted in decisions:
        assert predicted[k] == min(predicted.values())
    assert res.summary["pool_routing"]["slo_predicted_missed"] == len(decisions)


# --- one pool ------------------------------------------------------------------------------

def test_one_named_pool_runs_exactly_as_the_shorthand():
    """fleet.pools with one pool at fleet.site is the same fleet as hardware + fleet.replicas:
    the same tokens at the same times and the same bill, to the bit."""
    fleet = {"router": "join_shortest_queue"}
    short = scenario(perf=CONSTANT, engine={"max_model_len": 8192}, workload=workload(6.0),
                     fleet={**fleet, "replicas": 2})
    named = scenario(perf=CONSTANT, engine={"max_model_len": 8192}, workload=workload(6.0),
                     fleet={**fleet, "pools": [{"name": "only", "hardware": {"device": "h100-sxm"}, "replicas": 2}]})
    a, b = Simulation(short).run(), Simulation(named).run()
    np.testing.assert_array_equal(a.table.token_time_s, b.table.token_time_s)
    np.testing.assert_array_equal(a.table.replica, b.table.replica)
    assert a.bill.total_usd == b.bill.total_usd and a.bill.idle_usd == b.bill.idle_usd
    np.testing.assert_array_equal(a.bill.request_usd, b.bill.request_usd)
    assert a.summary["energy"]["kwh"] == b.summary["energy"]["kwh"]


def test_a_fleet_of_pools_round_trips_through_its_written_scenario():
    scn = pooled([edge_pool(engine={"max_num_seqs": 3}), cloud_pool()], "cost_aware")
    again = scenario_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(scn), sort_keys=False)))
    assert again == scn


def test_pool_engine_keys_merge_over_the_scenario_engine():
    scn = pooled([edge_pool(engine={"max_num_seqs": 3}), cloud_pool()])
    edge, cloud = scn.fleet.pools
    assert edge.engine.max_num_seqs == 3 and edge.engine.max_model_len == 8192  # the scenario's, kept
    assert cloud.engine is None  # the scenario's own


# --- pools that move -----------------------------------------------------------------------

def test_failures_and_the_autoscaler_move_their_own_pool_only():
    """The cloud pool fails often (MTBF 18 s) and scales with an HPA; the edge pool stays as it
    was. Lost replicas are replaced in their own pool, and no request or token is lost."""
    cloud = cloud_pool(replicas=1, failures={"mtbf_h": 0.005, "mttr_s": 5.0},
                       autoscaler={"policy": "hpa", "metric": "concurrency", "target": 2.0, "min_replicas": 1,
                                   "max_replicas": 4},
                       cold_start={"provisioning_s": 1.0, "image_gb": 0.0, "engine_start_s": 1.0})
    scn = pooled([edge_pool(engine={"max_num_seqs": 4}), cloud], "edge_first", rate=4.0)
    res = Simulation(scn).run()
    ra, t = res.bill.roster, res.table
    assert (ra.pool == 0).sum() == 1 and ra.end[0] == ""  # the edge replica, there all along
    cloud_ends = [e for e, k in zip(ra.end, ra.pool) if k == 1]
    assert cloud_ends.count("failure") >= 1 and (ra.pool == 1).sum() > 2
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()
    assert (t.num_retries > 0).any()
    assert_bill_adds_up(res.bill)
    ts = res.timeseries
    assert ts.pools == ("edge", "cloud") and ts.replicas[0].max() == 1 and ts.replicas[1].max() > 1
    where = served(res)
    assert (ts.arrivals_per_s * ts.width_s).sum(axis=1) == pytest.approx([(where == 0).sum(), (where == 1).sum()])


def test_a_pool_that_moves_cannot_be_reserved():
    with pytest.raises(InputError, match=r"fleet.pools\[1\].autoscaler.*reserved"):
        pooled([edge_pool(), cloud_pool(autoscaler={"policy": "hpa", "target": 2.0, "max_replicas": 3},
                                        pricing={"model": "reserved", "upfront_usd_per_device": 1.0,
                                                 "recurring_usd_per_device_hour": 1.0, "term_years": 1.0})])
    with pytest.raises(InputError, match="fleet.sites.*needs fleet.pools"):
        scenario(fleet={"sites": SITES})


def test_focus_rows_carry_each_pools_pricing_and_region_and_the_egress_and_sum_to_the_bill():
    from simcost.results.focus import focus_rows

    sites = [{"name": "cloud", "region": "us-east-1"},
             {"name": "edge", "edge": True, "region": "store-17", "egress_usd_per_gb": 0.05}]
    res = Simulation(pooled([edge_pool(), cloud_pool()], sites=sites)).run()
    rows = focus_rows(res)
    assert sum(r["BilledCost"] for r in rows) == pytest.approx(res.bill.total_usd, rel=1e-9)
    egress = [r for r in rows if r["ResourceType"] == "Data Transfer Out"]
    assert egress and sum(r["BilledCost"] for r in egress) == pytest.approx(res.bill.egress_usd, rel=1e-9)
    assert {r["RegionId"] for r in egress} == {"us-east-1", "store-17"}  # both pools served and sent bytes out
    replicas = [r for r in rows if r["ResourceType"] != "Data Transfer Out"]
    pool_of = res.bill.roster.pool
    for r in replicas:
        k = pool_of[int(r["ResourceId"].rsplit("-", 1)[1])]
        assert r["RegionId"] == ("store-17" if k == 0 else "us-east-1")  # pool 0 is the edge
        assert r["PricingCategory"] == ("Other" if k == 0 else "Standard")  # owned edge, on-demand cloud


def test_decisions_that_resize_one_fleet_refuse_a_fleet_of_pools_rather_than_answer_for_the_wrong_pool():
    from simcost.analysis.forecast import GrowthPath, forecast
    from simcost.analysis.levers import study
    from simcost.analysis.levers_config import LeversConfig
    from simcost.analysis.sizing import size

    pools = pooled([edge_pool(), cloud_pool()])
    with pytest.raises(InputError, match="fleet of pools") as info:
        size(pools, [{"hardware.device": "h100-sxm"}])
    assert info.value.where == "fleet.pools"
    with pytest.raises(InputError, match="fleet of pools") as info:
        study(pools, LeversConfig(), only=("int8",))
    assert info.value.where == "fleet.pools"
    with pytest.raises(InputError, match="fleet of pools") as info:
        forecast(pools, GrowthPath(months=2), seeds=1, resize=True)
    assert info.value.where == "--resize"


# --- TPOT: observed inter-token latency --------------------------------------------------------

def by_hand_tpot_s(fleet, k) -> float:
    """The documented signal: mean over pool k's ready replicas of itl_ewma_s (0 if idle)."""
    ready = fleet.routable[k]
    return sum(r.itl_ewma_s for r in ready if r.running) / len(ready)


def test_fastest_passes_over_a_pool_whose_tpot_is_over_the_slo():
    """Two identical pools; the first is listed first, so TTFT ties go to it. Every decision
    follows the rule: the lowest predicted TTFT among the pools whose observed TPOT meets the
    SLO, or among all when none does. Under load both rules are exercised."""
    tpot_slo_s = 0.03
    pools = [cloud_pool(replicas=1, name="cheap"), cloud_pool(replicas=1, name="dear")]
    sim = Simulation(pooled(pools, "fastest", rate=8.0, duration_s=60.0, slo={"tpot_s": tpot_slo_s}))
    router, seen = sim.fleet.pool_router, []
    choose = router.choose

    def recorded(rid, candidates):
        ttft = {k: by_hand_ttft_s(sim.fleet, k, rid, sim.pools[k].name) for k in candidates}
        tpot = {k: by_hand_tpot_s(sim.fleet, k) for k in candidates}
        k, replica = choose(rid, candidates)
        seen.append((k, ttft, tpot))
        return k, replica

    router.choose = recorded
    sim.run()
    passed_over = 0
    for k, ttft, tpot in seen:
        within = [j for j in ttft if tpot[j] <= tpot_slo_s] or list(ttft)
        best = min(ttft[j] for j in within)
        assert k in within and ttft[k] == pytest.approx(best, rel=1e-12)
        passed_over += len(within) < len(ttft)
    assert passed_over > 20  # the TPOT rule decided many requests, not just TTFT ties
    assert min(sum(k == j for k, _, _ in seen) for j in (0, 1)) > 50  # both pools take a real share


def reference_itl_s(res, replica: int = 0) -> tuple[float, int]:
    """The engine's ITL average rebuilt from the step log, one step at a time: a decode step (or
    a chunked step with decode members) is a gap of its duration plus the prefill steps that
    stalled decoding requests since the last one; the first gap sets the average, each later one
    moves it by ITL_EWMA_WEIGHT. Also returns how many prefill steps stalled decoding requests."""
    from simcost.engine.replica import ITL_EWMA_WEIGHT

    st, t = res.steps, res.table
    itl, stalled, stalls = 0.0, 0.0, 0
    for r in range(len(st.record_prefill)):
        steps = range(st.record_step_offset[r], st.record_step_offset[r + 1])
        members = slice(st.record_member_offset[r], st.record_member_offset[r + 1])
        if st.step_replica[steps[0]] != replica:
            continue
        decodes = not st.record_prefill[r] or not st.member_prefill[members].all()
        for j in steps:
            start, duration = st.step_start_s[j], st.step_end_s[j] - st.step_start_s[j]
            if not decodes:
                on_replica = t.replica == replica
                decoding = on_replica & (t.first_token_s <= start) & ~(t.finish_s <= start)
                stalled += duration if decoding.any() else 0.0
                stalls += bool(decoding.any())
                continue
            gap = duration + stalled
            stalled = 0.0
            itl = gap if itl == 0.0 else itl + ITL_EWMA_WEIGHT * (gap - itl)
    return itl, stalls


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_itl_average_matches_the_step_log_step_by_step(policy):
    """With one event per step (max_span_steps=1), the replica's itl_ewma_s at the end equals the
    reference rebuilt from the step log; prefill stalls are in it (prefill_first) and it lies
    between the bare decode step and the longest gap."""
    scn = scenario(perf=CONSTANT, engine={"max_model_len": 8192, "policy": policy, "max_num_batched_tokens": 512},
                   fleet={"replicas": 1}, duration_s=30.0, workload=workload(3.0))
    sim = Simulation(scn, max_span_steps=1)
    res = sim.run()
    replica = sim.fleet.replicas[0]
    itl_s, stalls = reference_itl_s(res)
    assert replica.itl_ewma_s == pytest.approx(itl_s, rel=1e-9)
    assert stalls > 10 if policy == "prefill_first" else stalls == 0  # chunked steps carry the decodes
    bare_s = CONSTANT["decode_step_s"] + CONSTANT["step_overhead_s"]
    assert replica.itl_ewma_s >= bare_s * (1 - 1e-9)


def test_a_pools_step_cost_sums_its_replicas_steps_and_one_pool_skips_the_gather():
    """A one-pool fleet sums every step without gathering them: the same float as the gather's."""
    rng = np.random.default_rng(5)
    step_usd = rng.random(200_003) * rng.random(200_003) ** 4  # long enough for numpy's blocked sums
    step_replica = rng.integers(0, 4, len(step_usd)).astype(np.int32)
    everyone = np.ones(4, dtype=bool)
    assert _pool_step_usd(step_usd, step_replica, everyone) == float(step_usd[everyone[step_replica]].sum())
    some = np.array([True, False, True, False])
    assert _pool_step_usd(step_usd, step_replica, some) == float(step_usd[(step_replica % 2) == 0].sum())
    assert _pool_step_usd(step_usd, step_replica, ~some) + _pool_step_usd(step_usd, step_replica, some) == \
        pytest.approx(step_usd.sum(), rel=1e-12)
