"""The response cache (fleet.response_cache): every lookup is a hit or a miss; hits are answered
after the lookup time and never reach a pool; an exact cache's hits are those a plain-Python
replay of its TTL and LRU rules finds; a semantic cache hits at its rate; its dollars (embedding
calls, store hosting) are in the bill, the summary, FOCUS and the time series."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
from scenarios import scenario

from simcost.errors import InputError
from simcost.results.focus import COLUMNS as FOCUS_COLUMNS
from simcost.results.focus import focus_rows
from simcost.results.focus_spec import focus_problems
from simcost.simulation.simulation import Simulation
from simcost.workload.request_table import COMPLETED

SEMANTIC = {"mode": "semantic", "hit_rate": 0.4, "false_hit_rate": 0.25, "capacity_entries": 20,
            "store_usd_per_hour": 0.5}


def check_bill(r) -> None:
    b, c = r.bill, r.summary["cost"]["by_category"]
    assert sum(c.values()) == pytest.approx(b.total_usd, rel=1e-9)
    assert b.request_usd.sum() + b.unallocated_usd == pytest.approx(b.total_usd, rel=1e-9)
    rows = focus_rows(r)
    assert not focus_problems(rows, FOCUS_COLUMNS)  # the cache's rows are FOCUS 1.1 conformant
    assert sum(row["EffectiveCost"] for row in rows) == pytest.approx(b.total_usd, rel=1e-9)
    ts = r.timeseries
    assert (ts.usd_per_hour * ts.width_s).sum() / 3600 == pytest.approx(b.total_usd, rel=1e-9)
    assert (ts.completions_per_s * ts.width_s).sum() == pytest.approx((r.table.status == COMPLETED).sum())
    cache_row = ts.pools.index("cache")
    assert (ts.completions_per_s[cache_row] * ts.width_s).sum() == pytest.approx(r.summary["response_cache"]["hits"])


def test_a_semantic_cache_answers_its_share_and_every_dollar_adds_up():
    sim = Simulation(scenario(duration_s=120.0, fleet={"replicas": 1, "response_cache": SEMANTIC}))
    r = sim.run()
    c, t = r.summary["response_cache"], r.table
    n = t.num_requests
    assert c["lookups"] == c["hits"] + c["misses"] == n
    hits = np.array(sorted(sim.cache.hit))
    assert (t.status == COMPLETED).all() and (t.replica[hits] == -1).all()  # no pool saw a hit
    np.testing.assert_allclose(t.finish_s[hits] - t.arrival_s[hits], 0.005 + 0.02)  # lookup + embedding
    np.testing.assert_allclose(t.first_token_s[hits], t.finish_s[hits])  # the whole answer at once
    # once the cache holds an answer (the first miss completes), each lookup hits with p = 0.4
    warm = t.arrival_s > t.finish_s[0]
    k, m = int(np.isin(np.flatnonzero(warm), hits).sum()), int(warm.sum())
    assert abs(k - 0.4 * m) < 4 * np.sqrt(m * 0.24)
    assert abs(c["false_hits"] - 0.25 * c["hits"]) < 4 * np.sqrt(c["hits"] * 0.25 * 0.75) + 1
    assert c["entries_at_end"] <= 20 and c["evicted"] == c["stored"] - c["entries_at_end"]
    # every lookup embeds its prompt at $0.02 per 1M tokens; the store costs $0.5/hour over the run
    assert r.bill.cache_usd == pytest.approx(t.input_tokens.sum() * 0.02 / 1e6, rel=1e-12)
    assert r.bill.cache_store_usd == pytest.approx(0.5 * r.horizon_s / 3600, rel=1e-12)
    check_bill(r)


def replay_exact(table, keys: list, ttl_s: float, capacity: int) -> set[int]:
    """Plain-Python reference: lookups at arrival, each miss stored at its finish, in time order."""
    events = sorted([(float(table.arrival_s[i]), 1, i) for i in range(len(keys))])
    lru: OrderedDict = OrderedDict()
    hits: set[int] = set()
    pending = []  # (finish time, request) of misses not yet stored
    for at, _, i in events:
        for f, j in sorted(p for p in pending if p[0] <= at):
            pending.remove((f, j))
            lru.pop(keys[j], None)
            lru[keys[j]] = f
            while len(lru) > capacity:
                lru.popitem(last=False)
        key = keys[i]
        if key in lru and at < lru[key] + ttl_s:
            lru.move_to_end(key)
            hits.add(i)
            continue
        lru.pop(key, None)
        pending.append((float(table.finish_s[i]), i))
    return hits


def test_an_exact_cache_hits_what_a_replay_of_its_rules_finds(tmp_path):
    rng = np.random.default_rng(5)
    lines = []
    for k in range(300):  # 12 distinct prompts of 1-12 blocks of 512 tokens, Zipf-ish popularity, one every 0.25 s
        prompt = min(int(rng.zipf(1.6)), 12)
        lines.append(json.dumps({"timestamp": 250 * k, "input_length": 512 * prompt - 10, "output_length": 20 + prompt,
                                 "hash_ids": list(range(prompt * 10, prompt * 10 + prompt))}))
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cache = {"mode": "exact", "ttl_s": 10.0, "capacity_entries": 4}
    sim = Simulation(scenario(duration_s=None, workload={"trace": {"name": str(path)}},
                              fleet={"replicas": 1, "response_cache": cache}))
    r = sim.run()
    t = r.table
    keys = [(int(t.input_tokens[i]), tuple(sim.requests.prefix_block_ids[i])) for i in range(t.num_requests)]
    expected = replay_exact(t, keys, 10.0, 4)
    assert 0 < len(expected) < t.num_requests and sim.cache.hit == expected
    c = r.summary["response_cache"]
    assert c["hits"] == len(expected) and c["lookups"] == t.num_requests and c["embedding_usd"] == 0
    check_bill(r)


def test_an_exact_cache_needs_prompt_hashes_and_bad_caches_name_their_key():
    with pytest.raises(InputError) as e:
        Simulation(scenario(fleet={"response_cache": {"mode": "exact"}}))
    assert str(e.value).startswith("fleet.response_cache.mode")
    for cache, where in (({"mode": "semantic"}, "fleet.response_cache"),
                         ({"mode": "exact", "hit_rate": 0.2}, "fleet.response_cache.hit_rate"),
                         ({"mode": "semantic", "hit_rate": 1.2}, "fleet.response_cache.hit_rate"),
                         ({"mode": "semantic", "rates": [{"workload": "x", "rate": 0.1}]}, "fleet.response_cache")):
        with pytest.raises(InputError) as e:
            scenario(fleet={"response_cache": cache})
        assert str(e.value).startswith(where), str(e.value)


def test_pools_sites_an_api_and_a_cache_together_still_add_up():
    """fleet.pools with egress, an overflow api pool past its rate limit and a semantic cache: every
    dollar of each is in the summary, FOCUS and the time series once."""
    from test_api_pools import check_bill_adds_up

    busy = {"arrivals": {"process": "poisson", "rate_per_s": 30.0},
            "input_tokens": {"dist": "uniform", "low": 500, "high": 3000},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 200}}
    r = Simulation(scenario(duration_s=60.0, workload=busy, fleet={
        "pools": [{"name": "a", "hardware": {"device": "h100-sxm"}},
                  {"name": "b", "hardware": {"device": "a100-80gb"}, "site": "far"}],
        "sites": [{"name": "far", "region": "eu-west-1"}],
        "api_pools": [{"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "role": "overflow",
                       "overflow": {"waiting_requests": 5}}],
        "response_cache": {"mode": "semantic", "hit_rate": 0.1, "store_usd_per_hour": 0.3}})).run()
    api = r.summary["api"]["oai"]["requests"]
    assert api["completed"] > 0 and api["failed"] > 0  # the default tier's 200k tokens/min throttles it
    assert r.bill.egress_usd > 0 and r.bill.cache_usd > 0
    check_bill_adds_up(r)
    check_bill(r)
