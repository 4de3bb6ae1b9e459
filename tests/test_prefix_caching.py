"""Prefix caching in the engine: prompt blocks computed once are reused by later requests with
the same prefix (Mooncake hash ids, multi-turn sessions), the prefill work saved is exactly the
cached tokens, nothing is lost, and less cache memory never gives more hits."""

from __future__ import annotations

import numpy as np
import pytest
from scenarios import scenario

from simcost.engine.kv.prefix_cache import trace_block_keys
from simcost.errors import InputError
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED
from simcost.workload.traces import load_trace

FAST = {"model": "constant", "prefill_s_per_token": 1e-7, "decode_step_s": 1e-5}


def mooncake(block_size=16, num_kv_blocks=None, end_s=600.0, policy="prefill_first", **engine):
    engine = {"prefix_caching": True, "block_size": block_size, "policy": policy,
              "num_kv_blocks": num_kv_blocks or 10 ** 8 // block_size, "max_num_batched_tokens": 131072, **engine}
    return scenario(workload={"trace": {"name": "mooncake_conversation", "end_s": end_s}}, duration_s=None,
                    perf=FAST, engine=engine)


def sequential_hits(trace, rows, block_size):
    """Hits of an unlimited cache that sees the requests one after another: each reuses the
    leading run of its keys (full blocks of its first n - 1 tokens) cached by earlier ones."""
    seen, hits, lookups = set(), 0, 0
    for i in rows:
        ids = trace.block_ids[trace.block_offsets[i]:trace.block_offsets[i + 1]]
        keys = trace_block_keys(ids, trace.block_tokens, block_size, int(trace.input_tokens[i]) - 1)
        run = next((j for j, k in enumerate(keys) if k not in seen), len(keys))
        hits, lookups = hits + run, lookups + len(keys)
        seen.update(trace_block_keys(ids, trace.block_tokens, block_size, int(trace.input_tokens[i])))
    return hits, lookups


def test_unlimited_cache_reaches_the_sequential_bound_of_the_trace():
    """With room for every block, the engine finds what a one-at-a-time replay finds, except
    requests prefilled in the same step as the one that computes their prefix (vLLM too)."""
    res = Simulation(mooncake(end_s=900.0)).run()
    pc = res.summary["prefix_cache"]
    trace = load_trace("mooncake_conversation")
    hits, lookups = sequential_hits(trace, np.flatnonzero(trace.arrival_s < 900.0), 16)
    assert pc["blocks_looked_up"] == lookups and pc["evictions"] == 0
    assert 0.97 * hits <= pc["blocks_hit"] <= hits
    assert pc["prefill_tokens_saved"] == pc["blocks_hit"] * 16


def test_saved_tokens_are_exactly_the_prefill_not_computed():
    plain = Simulation(mooncake(prefix_caching=False)).run()
    cached = Simulation(mooncake()).run()
    prefill = lambda r: int(r.steps.member_tokens[r.steps.member_prefill].sum())  # noqa: E731
    assert prefill(plain) - prefill(cached) == cached.summary["prefix_cache"]["prefill_tokens_saved"] > 0
    t = cached.table
    assert (t.status == COMPLETED).all() and (t.generated == t.output_tokens).all()
    assert cached.summary["ttft_s"]["mean"] <= plain.summary["ttft_s"]["mean"]


@pytest.mark.parametrize("policy", ["prefill_first", "chunked"])
def test_a_cache_that_must_evict_hits_less(policy):
    """Monotone in capacity for one request at a time is tested on the pool itself
    (test_kvcache_prefix.py); in the engine, capacity also changes timing and batching, so only
    the gap between an unlimited and a small cache is asserted here."""
    rates = [Simulation(mooncake(num_kv_blocks=blocks, policy=policy, end_s=300.0)).run()
             .summary["prefix_cache"] for blocks in (10 ** 7, 12_000)]
    assert rates[0]["evictions"] == 0 < rates[1]["evictions"]
    assert rates[0]["block_hit_rate"] > 2 * rates[1]["block_hit_rate"]


def test_sessions_reuse_the_previous_turns():
    chat = {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
            "input_tokens": {"dist": "uniform", "low": 100, "high": 400},
            "output_tokens": {"dist": "uniform", "low": 50, "high": 200},
            "session": {"turns": {"dist": "fixed", "value": 6}, "think_time": {"dist": "fixed", "value_s": 1.0}}}
    res = Simulation(scenario(workload=chat, engine={"prefix_caching": True})).run()
    t, pc = res.table, res.summary["prefix_cache"]
    later = t.turn > 0
    # each later turn reuses the full blocks of the previous prompt + output (minus the last token)
    expected = int(((t.shared_prefix_tokens[later] - 1) // 16 * 16).sum())
    assert pc["prefill_tokens_saved"] >= 0.95 * expected
    assert pc["prefill_tokens_saved"] <= int((t.input_tokens[later] - 1).sum())


def test_host_tier_holds_evicted_blocks_and_charges_their_load():
    small = mooncake(num_kv_blocks=12_000, end_s=300.0)
    tiered = mooncake(num_kv_blocks=12_000, end_s=300.0, host_cache_blocks=200_000)
    a, b = Simulation(small).run(), Simulation(tiered).run()
    assert b.summary["prefix_cache"]["host_hits"] > 0
    assert b.summary["prefix_cache"]["block_hit_rate"] > a.summary["prefix_cache"]["block_hit_rate"]


def test_prefix_caching_refuses_what_it_cannot_do():
    with pytest.raises(InputError, match="block_size"):
        Simulation(mooncake(block_size=24))
    with pytest.raises(InputError, match="swap"):
        mooncake(preemption="swap")
    with pytest.raises(InputError, match="prefix_caching"):
        scenario(engine={"policy": "static", "prefix_caching": True})
    with pytest.raises(InputError) as exc:  # a CPU has no host link to a separate KV memory
        Simulation(scenario(hardware={"device": "xeon-8480"}, engine={"prefix_caching": True, "host_cache_blocks": 100}))
    assert exc.value.where == "engine.host_cache_blocks"


def test_a_tiny_key_cache_changes_nothing(monkeypatch):
    """Trace keys are built once per request and kept up to a bound; past it they are rebuilt,
    which must not show in any result (a bound of 1 key rebuilds on nearly every call)."""
    import simcost.engine.kv.reuse as reuse

    kept = Simulation(mooncake(end_s=120.0, num_kv_blocks=2000)).run()
    monkeypatch.setattr(reuse, "_KEYS_KEPT", 1)
    rebuilt = Simulation(mooncake(end_s=120.0, num_kv_blocks=2000)).run()
    assert kept.summary["prefix_cache"] == rebuilt.summary["prefix_cache"]
    assert kept.summary["prefix_cache"]["evictions"] > 0 and kept.summary["prefix_cache"]["blocks_hit"] > 0
    assert np.array_equal(kept.table.first_token_s, rebuilt.table.first_token_s, equal_nan=True)
