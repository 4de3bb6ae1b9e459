"""Engine presets (engine.preset): the keys an engine section leaves out follow vLLM V1 as
`vllm serve` starts it (vllm-v1, the default) or simcost's earlier vLLM v0 defaults (vllm-v0);
keys given always win. The budget rule is vLLM's EngineArgs.get_batch_defaults for the API
server: 8192 tokens and 1024 sequences on GPUs of at least 70 GiB other than A100, else 2048 and
256 (sequences at most the token budget when that is given)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from scenarios import scenario

from simcost import api
from simcost.analysis.sizing import with_option
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.scenario.deployment import EngineConfig
from simcost.scenario.fleet_plan import fleet_plan
from simcost.scenario.scenario import scenario_from_dict
from simcost.scenario.schema import to_dict
from simcost.simulation.simulation import Simulation

CHAT = {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
        "input_tokens": {"dist": "uniform", "low": 100, "high": 400},
        "output_tokens": {"dist": "uniform", "low": 50, "high": 200},
        "session": {"turns": {"dist": "fixed", "value": 4}, "think_time": {"dist": "fixed", "value_s": 1.0}}}


def test_each_preset_fills_the_keys_left_out():
    v1, v0 = EngineConfig(), EngineConfig(preset="vllm-v0")
    assert (v1.policy, v1.prefix_caching) == ("chunked", True)
    assert (v0.policy, v0.prefix_caching) == ("prefill_first", False)
    # keys given win over either preset
    assert EngineConfig(policy="prefill_first").prefix_caching is True
    assert EngineConfig(preset="vllm-v0", prefix_caching=True).policy == "prefill_first"
    assert EngineConfig(prefix_caching=False).policy == "chunked"


def test_only_v0_and_request_level_batches_keep_a_watermark():
    # V1's scheduler admits down to the last free block; vLLM v0 kept 1 % free
    assert EngineConfig().kv_watermark == 0.0 and EngineConfig(policy="prefill_first").kv_watermark == 0.0
    assert EngineConfig(preset="vllm-v0").kv_watermark == 0.01 == EngineConfig(policy="static").kv_watermark
    assert EngineConfig(kv_watermark=0.05).kv_watermark == 0.05


def test_v1_caches_prefixes_only_where_vllm_can():
    # request-level batches share no cache, and V1 has no swap: the preset leaves caching off
    assert EngineConfig(policy="static").prefix_caching is False
    assert EngineConfig(preemption="swap").prefix_caching is False
    with pytest.raises(InputError, match="prefix_caching"):
        scenario(engine={"policy": "static", "prefix_caching": True})


@pytest.mark.parametrize(("device", "tp", "expected"), [
    ("h100-sxm", 1, 8192),   # 80 GB >= 70 GiB
    ("a100-80gb", 1, 2048),  # vLLM excludes A100 by name
    ("l40s", 1, 2048),       # 48 GB
])
def test_the_v1_budget_follows_device_memory(device, tp, expected):
    assert plan_deployment(scenario(hardware={"device": device, "tensor_parallel": tp})).max_num_batched_tokens == expected


def test_other_budgets():
    v0_chunked = scenario(engine={"preset": "vllm-v0", "policy": "chunked"})
    assert plan_deployment(v0_chunked).max_num_batched_tokens == 2048
    # without chunked prefill a whole max-length prompt fits one step, under either preset
    for preset in ("vllm-v1", "vllm-v0"):
        s = scenario(engine={"preset": preset, "policy": "prefill_first", "max_model_len": 4096})
        assert plan_deployment(s).max_num_batched_tokens == 4096
    given = scenario(engine={"max_num_batched_tokens": 512})
    assert plan_deployment(given).max_num_batched_tokens == 512


def test_a_round_trip_keeps_the_engine_and_the_budget_follows_the_device():
    base = scenario()
    raw = to_dict(base)
    assert scenario_from_dict(raw).engine == base.engine
    moved = scenario_from_dict(with_option(raw, {"hardware.device": "a100-80gb"}))
    assert plan_deployment(moved).max_num_batched_tokens == 2048
    # sizing over policies may reach a request-level one from a V1 base that caches prefixes
    static = scenario_from_dict(with_option(raw, {"engine.policy": "static"}))
    assert (static.engine.policy, static.engine.prefix_caching) == ("static", False)


def test_sessions_hit_the_cache_by_default_and_not_under_v0():
    """The default engine reuses the previous turn's blocks; the v0 preset prefills every turn whole."""
    v1 = Simulation(scenario(workload=CHAT, duration_s=30.0)).run().summary
    v0 = Simulation(scenario(workload=CHAT, duration_s=30.0, engine={"preset": "vllm-v0"})).run().summary
    assert v1["prefix_cache"]["prefill_tokens_saved"] > 0
    assert v0.get("prefix_cache") is None or v0["prefix_cache"]["prefill_tokens_saved"] == 0


def test_a_new_preset_on_a_built_scenario_decides_its_keys_again():
    built = scenario()
    v0 = api.load(built, overrides={"engine.preset": "vllm-v0"}).engine
    assert (v0.policy, v0.prefix_caching) == ("prefill_first", False)
    given = api.load(built, overrides={"engine.preset": "vllm-v0", "engine.policy": "chunked"}).engine
    assert (given.policy, given.prefix_caching) == ("chunked", False)
    assert api.load(built, overrides={"fleet.replicas": 2}).engine == built.engine  # other overrides keep them


@pytest.mark.parametrize(("device", "expected"), [
    ("h100-sxm", 1024), ("h200", 1024), ("b200", 1024),  # >= 70 GiB
    ("a100-80gb", 256),  # vLLM excludes A100 by name
    ("l40s", 256),       # 48 GB
    ("xeon-8480", 256),  # not a GPU: vLLM's CPU and TPU tables differ; simcost keeps 256
])
def test_the_v1_sequence_limit_follows_the_device(device, expected):
    s = scenario(hardware={"device": device}, model={"name": "llama-3.2-1b"}, fleet={"price_usd_per_device_hour": 1.0})
    assert s.engine.max_num_seqs == expected


def test_other_sequence_limits():
    assert scenario(engine={"preset": "vllm-v0"}).engine.max_num_seqs == 256
    assert scenario(engine={"policy": "static"}).engine.max_num_seqs == 256  # a static batch's size
    assert scenario(engine={"max_num_seqs": 64}).engine.max_num_seqs == 64  # given wins
    # vLLM caps the preset's at the token budget given (instead of refusing the budget)
    assert scenario(engine={"max_num_batched_tokens": 512}).engine.max_num_seqs == 512
    with pytest.raises(InputError, match="below engine.max_num_seqs"):
        plan_deployment(scenario(engine={"max_num_seqs": 1024, "max_num_batched_tokens": 512}))


def test_the_sequence_limit_follows_a_new_device_and_preset():
    h100 = scenario()
    assert replace(h100, hardware=replace(h100.hardware, device="a100-80gb")).engine.max_num_seqs == 256
    assert api.load(h100, overrides={"engine.preset": "vllm-v0"}).engine.max_num_seqs == 256
    assert api.load(h100, overrides={"fleet.replicas": 2}).engine.max_num_seqs == 1024
    assert api.load(h100, overrides={"hardware.device": "a100-80gb"}).engine.max_num_seqs == 256
    given = scenario(engine={"max_num_seqs": 1024})
    assert api.load(given, overrides={"hardware.device": "a100-80gb"}).engine.max_num_seqs == 1024  # given: kept
    # a pool on other hardware takes its own device's
    pools = scenario(fleet={"pools": [{"name": "big", "replicas": 1, "hardware": {"device": "h100-sxm"}},
                                      {"name": "small", "replicas": 1, "hardware": {"device": "l40s"}}]})
    assert [p.scenario.engine.max_num_seqs for p in fleet_plan(pools)] == [1024, 256]


def test_sizing_over_devices_decides_the_preset_sequence_limit_per_device():
    from simcost.analysis.sizing import with_option
    from simcost.scenario.deployment import free_device_defaults
    base = scenario()
    raw = to_dict(base)
    free_device_defaults(raw["engine"], base.engine)
    assert scenario_from_dict(with_option(raw, {"hardware.device": "a100-80gb"})).engine.max_num_seqs == 256
    assert scenario_from_dict(with_option(raw, {"hardware.device": "h200"})).engine.max_num_seqs == 1024
    assert scenario_from_dict(with_option(raw, {"engine.policy": "static"})).engine.max_num_seqs == 256  # a batch size


def test_the_written_scenario_leaves_the_device_default_to_the_preset(tmp_path):
    """scenario.yaml shows the max_num_seqs the preset chose as a comment, reruns the same, and on
    another device takes that device's default (1024 on an H100, 256 on an A100)."""
    from simcost.analysis.report_read import read_scenario

    base = {"name": "w", "seed": 3, "duration_s": 20.0, "model": {"name": "llama-3.1-8b"},
            "hardware": {"device": "h100-sxm"},
            "workload": {"arrivals": {"process": "poisson", "rate_per_s": 2.0},
                         "input_tokens": {"dist": "fixed", "value": 200}, "output_tokens": {"dist": "fixed", "value": 20}}}
    first = api.run(base, out=tmp_path / "a", progress=False)
    written = tmp_path / "a" / "scenario.yaml"
    assert "# max_num_seqs: 1024  (the engine preset's for h100-sxm)" in written.read_text()
    assert read_scenario(written)["engine"]["max_num_seqs"] == 1024  # the report still shows it
    again = api.load(written)
    assert again.engine.max_num_seqs == 1024 and again.engine.seqs_from_preset
    assert api.run(written, progress=False).summary == first.summary
    assert api.load(written, overrides={"hardware.device": "a100-80gb"}).engine.max_num_seqs == 256
    # a max_num_seqs the scenario gives is written as given
    api.run({**base, "engine": {"max_num_seqs": 64}}, out=tmp_path / "b", progress=False)
    assert api.load(tmp_path / "b" / "scenario.yaml", overrides={"hardware.device": "a100-80gb"}).engine.max_num_seqs == 64
