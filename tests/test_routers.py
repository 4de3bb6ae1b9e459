"""Routers (simcost.cluster.routers): the queueing order JSQ < power of two < random, token-aware
balancing for unequal requests, prefix affinity's cache hits and its load bound, and for every
router: reproducible from the seed, every request routed, disaggregated fleets too."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scenarios import scenario

from simcost.analysis.queueing import measured_waits_s, queue_scenario
from simcost.cluster.routers import ROUTERS, PowerOfTwo, RoutingContext, affinity_key_fn
from simcost.errors import InputError
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

PERF = {"model": "constant", "prefill_s_per_token": 1e-4, "decode_step_s": 0.01, "step_overhead_s": 0.002}
TWO_TURNS = {"turns": {"dist": "fixed", "value": 2}, "think_time": {"dist": "fixed", "value_s": 1.0}}


def mean_waits_s(router: str, seeds=range(4)) -> np.ndarray:
    """M/M/4 arrivals and exponential service at utilisation 0.85, one request per replica."""
    return np.array([measured_waits_s(queue_scenario(seed=s, rate_per_s=3.4, service_mean_s=1.0, dist="exponential",
                                                     servers=4, router=router, duration_s=1500, warmup_s=100)).mean()
                     for s in seeds])


def test_join_shortest_queue_beats_power_of_two_beats_random():
    """Per seed (the same arrivals and sizes for every router: routing has its own stream).
    Random splitting is four M/M/1 queues at 0.85 (mean wait 5.7 s); two looks recover most of
    JSQ's gain (Mitzenmacher)."""
    jsq, two, rand = (mean_waits_s(r) for r in ("join_shortest_queue", "power_of_two", "random"))
    assert (jsq < two).all() and (two < rand).all(), (jsq, two, rand)
    assert two.mean() < 0.5 * rand.mean()


def bimodal(router: str, seed: int):
    """Many short requests and a few 80-times-longer ones: counting requests is blind to the
    difference, counting tokens is not."""
    def part(name, rate, prompt, output):
        return {"name": name, "arrivals": {"process": "poisson", "rate_per_s": rate},
                "input_tokens": {"dist": "fixed", "value": prompt}, "output_tokens": {"dist": "fixed", "value": output}}

    return scenario(seed=seed, duration_s=300.0, perf=PERF,
                    workload={"mix": [part("short", 4.0, 200, 20), part("long", 0.4, 16000, 400)]},
                    engine={"max_num_seqs": 8, "max_num_batched_tokens": 32768},
                    fleet={"replicas": 4, "router": router})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_least_outstanding_tokens_beats_request_counting_on_unequal_requests(seed):
    ttft = {r: Simulation(bimodal(r, seed)).run().summary["ttft_s"]["mean"]
            for r in ("round_robin", "join_shortest_queue", "least_outstanding_tokens")}
    assert ttft["least_outstanding_tokens"] < 0.8 * ttft["round_robin"], ttft
    assert ttft["least_outstanding_tokens"] < ttft["join_shortest_queue"], ttft


def test_token_count_is_exact_at_every_arrival():
    """TokenLoad's counters plus its correction of running requests equal the direct sum over
    every waiting and running request (entry replicas, recompute), here with preemptions and
    prefix-cached session turns that grow the request table during the run."""
    chat = {"arrivals": {"process": "poisson", "rate_per_s": 6.0},
            "input_tokens": {"dist": "uniform", "low": 50, "high": 1500},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 400},
            "session": {"turns": {"dist": "fixed", "value": 3}, "think_time": {"dist": "fixed", "value_s": 1.0}}}
    for policy in ("prefill_first", "chunked"):
        sim = Simulation(scenario(duration_s=40.0, workload=chat,
                                  fleet={"replicas": 2, "router": "least_outstanding_tokens"},
                                  engine={"policy": policy, "num_kv_blocks": 400, "prefix_caching": True}))
        fleet, router, checked = sim.fleet, sim.fleet.entry_router, []

        def direct(replica):
            t = fleet.table
            run = np.array(replica.running, dtype=np.int64)
            wait = np.array(list(replica.waiting), dtype=np.int64)
            running = np.maximum(t.prefill_target[run] - t.kv_tokens[run], 0) + t.output_tokens[run] - t.generated[run]
            return int(running.sum() + (t.input_tokens[wait] + t.output_tokens[wait]).sum())

        def pick(rid, pick=router.pick):
            assert fleet.tokens.tokens(fleet.entry_pool) == [direct(r) for r in fleet.entry_pool]
            checked.append(rid)
            return pick(rid)

        router.pick = pick
        t = sim.run().table
        assert t.num_preemptions.sum() > 0 and (t.turn > 0).any() and len(checked) == t.num_requests
        assert fleet.tokens.counted == [0, 0] and not fleet.tokens.at_submit.any()  # every request removed


# --- prefix affinity -------------------------------------------------------------------------

MOONCAKE_PERF = {"model": "constant", "prefill_s_per_token": 2e-5, "decode_step_s": 0.01}


def mooncake(router: str, c: float = 1.25):
    """The first 10 minutes of Mooncake's conversation trace on 4 replicas with prefix caching;
    each replica caches 1.6 M tokens (it must evict), and serving takes real time (~20 % busy)."""
    return scenario(workload={"trace": {"name": "mooncake_conversation", "end_s": 600.0}}, duration_s=None,
                    perf=MOONCAKE_PERF, fleet={"replicas": 4, "router": router, "affinity_load_bound": c},
                    engine={"prefix_caching": True, "num_kv_blocks": 100_000, "max_num_batched_tokens": 131072})


def bound_checked(sim: Simulation, c: float) -> list[tuple[int, int]]:
    """Record, at every submission to an entry replica, (requests it holds then, its cap)."""
    pool, seen = sim.fleet.entry_pool, []
    for replica in pool:
        def submit(rid, replica=replica, submit=replica.submit):
            outstanding = sum(r.num_outstanding for r in pool)  # before this request
            seen.append((replica.num_outstanding + 1, math.ceil(c * outstanding / len(pool) + 1)))
            submit(rid)
        replica.submit = submit
    return seen


def test_prefix_affinity_raises_the_hit_rate_within_its_load_bound():
    """What the bound guarantees, exactly: a replica takes a request only if it then holds at
    most ceil(c L / n + 1) requests, L the pool's outstanding requests just before. It bounds
    outstanding requests at each assignment, not a replica's share of all requests; the share
    follows (at most about c / n) only when sojourn times are alike, so it is checked loosely."""
    hit = {r: Simulation(mooncake(r)).run().summary["prefix_cache"]["block_hit_rate"]
           for r in ("round_robin", "join_shortest_queue")}
    sim = Simulation(mooncake("prefix_affinity"))
    seen = bound_checked(sim, 1.25)
    res = sim.run()
    t = res.table
    hit["prefix_affinity"] = res.summary["prefix_cache"]["block_hit_rate"]
    assert hit["prefix_affinity"] > 1.5 * max(hit["round_robin"], hit["join_shortest_queue"]), hit
    assert (t.status == COMPLETED).all() and len(seen) == t.num_requests
    held, cap = np.array(seen).T
    assert (held <= cap).all() and (held == cap).any()  # kept, and it binds
    assert np.bincount(t.replica, minlength=4).max() <= (1.25 / 4 + 0.02) * t.num_requests


def test_load_bound_spreads_a_single_hot_prefix():
    """Every request with the same key: pure consistent hashing (c huge) sends all of them to one
    replica; with c = 1.25 the bound holds at every assignment and the owner keeps the most."""
    work = {"arrivals": {"process": "poisson", "rate_per_s": 8.0},
            "input_tokens": {"dist": "uniform", "low": 500, "high": 3000},
            "output_tokens": {"dist": "uniform", "low": 50, "high": 300}}
    counts = {}
    for c in (1.25, 1e9):
        sim = Simulation(scenario(duration_s=120.0, perf=PERF, workload=work, engine={"max_num_seqs": 8},
                                  fleet={"replicas": 4, "router": "prefix_affinity", "affinity_load_bound": c}))
        sim.fleet.entry_router.key = lambda rid: 12345  # one hot prefix
        seen = bound_checked(sim, c)
        t = sim.run().table
        held, cap = np.array(seen).T
        assert (held <= cap).all()
        counts[c] = np.sort(np.bincount(t.replica, minlength=4))[::-1]
    assert counts[1e9][0] == counts[1e9].sum()  # unbounded: a hot spot
    assert 0.25 < counts[1.25][0] / counts[1.25].sum() < 0.6 and counts[1.25][-1] > 0, counts


def test_affinity_keys_follow_prefix_blocks_and_sessions():
    sim = Simulation(scenario(workload={"trace": {"name": "mooncake_conversation", "end_s": 120.0}}, duration_s=None,
                              fleet={"router": "prefix_affinity"}))
    blocks = sim.requests.prefix_block_ids
    key = affinity_key_fn(sim.table, blocks, np.array([False]))
    by_head: dict = {}
    for rid, ids in enumerate(blocks):
        by_head.setdefault(tuple(ids[:2].tolist()), set()).add(key(rid))
    assert all(len(keys) == 1 for keys in by_head.values())  # one key per two-block head
    assert len(set.union(*by_head.values())) == len(by_head) > 1  # distinct heads, distinct keys
    chat = scenario(workload={"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                              "input_tokens": {"dist": "fixed", "value": 10},
                              "output_tokens": {"dist": "fixed", "value": 5}, "session": TWO_TURNS})
    sim = Simulation(chat)
    key = affinity_key_fn(sim.table, None, np.array([True]))
    assert key(0) != key(1) and key(0) is not None
    assert affinity_key_fn(sim.table, None, np.array([False]))(0) is None  # no known shared prefix


def test_power_of_two_compares_two_distinct_replicas():
    """With two replicas both are always looked at: the less loaded one is always taken."""
    class Stub:
        def __init__(self, load):
            self.num_outstanding = load

    pool = [Stub(3), Stub(1)]
    router = PowerOfTwo(pool, RoutingContext(np.random.default_rng(0), tokens=None))
    assert all(router.pick(rid) is pool[1] for rid in range(50))


# --- every router ------------------------------------------------------------------------------

def mixed(router: str, seed: int = 1, **extra):
    """Multi-turn chats (prefix keys) next to one-shot requests (none)."""
    chat = {"name": "chat", "arrivals": {"process": "poisson", "rate_per_s": 2.0},
            "input_tokens": {"dist": "uniform", "low": 50, "high": 1500},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 300},
            "session": {"turns": {"dist": "uniform", "low": 1, "high": 4},
                        "think_time": {"dist": "fixed", "value_s": 2.0}}}
    batch = {"name": "batch", "arrivals": {"process": "poisson", "rate_per_s": 3.0},
             "input_tokens": {"dist": "uniform", "low": 50, "high": 3000},
             "output_tokens": {"dist": "uniform", "low": 1, "high": 300}}
    return scenario(seed=seed, duration_s=40.0, workload={"mix": [chat, batch]},
                    fleet={"replicas": 3, "router": router}, engine={"prefix_caching": True}, **extra)


@pytest.mark.parametrize("router", [*ROUTERS, "shared_queue"])
def test_every_router_is_reproducible_and_routes_every_request(router):
    a, b = (Simulation(mixed(router)).run().table for _ in range(2))
    np.testing.assert_array_equal(a.replica, b.replica)
    np.testing.assert_array_equal(a.first_token_s, b.first_token_s)
    assert (a.status == COMPLETED).all() and (a.generated == a.output_tokens).all()
    assert ((a.replica >= 0) & (a.replica < 3)).all()
    if router in ("random", "power_of_two"):  # the routing stream is the seed's
        assert not np.array_equal(a.replica, Simulation(mixed(router, seed=2)).run().table.replica[:len(a.replica)])


@pytest.mark.parametrize("router", [r for r in ROUTERS if r not in ("round_robin", "join_shortest_queue")])
def test_disaggregated_fleet_routes_both_pools(router):
    """Prefill pool = replicas 0-1, decode pool = 2-4; a request that wants more than one token
    ends on a decode replica, and the token counts come back to zero."""
    scn = scenario(fleet={"router": router, "disaggregation": {"prefill_replicas": 2, "decode_replicas": 3,
                                                               "kv_link_gb_per_s": 10.0}},
                   workload={"arrivals": {"process": "poisson", "rate_per_s": 8.0},
                             "input_tokens": {"dist": "uniform", "low": 200, "high": 3000},
                             "output_tokens": {"dist": "uniform", "low": 1, "high": 300},
                             "session": TWO_TURNS},
                   perf=PERF, duration_s=30.0)
    sim = Simulation(scn)
    t = sim.run().table
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()
    more = t.output_tokens > 1
    assert (t.replica[more] >= 2).all() and (t.replica[~more] < 2).all()
    assert len(np.unique(t.replica[more])) == 3  # the decode pool is balanced, not pinned
    if sim.fleet.tokens is not None:  # kept only for least_outstanding_tokens
        assert sim.fleet.tokens.counted == [0] * 5


def test_load_bound_below_one_is_refused():
    with pytest.raises(InputError, match="affinity_load_bound"):
        scenario(fleet={"router": "prefix_affinity", "affinity_load_bound": 0.9})
