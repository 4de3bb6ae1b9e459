"""The 2025 model families (DeepSeek-V3/R1, Llama 4, Gemma 3): parameter counts against the model
cards, the KV cache of latent attention and of sliding-window layers, and the 4-bit and fp8 formats
with their refusals."""

from __future__ import annotations

import math

import pytest
from scenarios import scenario

from simcost.catalog.catalog import bundled_catalog
from simcost.catalog.specs import get_device, get_model
from simcost.catalog.types import BYTES_PER_ELEMENT, format_refusal
from simcost.errors import InputError
from simcost.perf.deployment import (
    ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN,
    ACTIVATION_REPLICATED_BYTES_PER_HIDDEN,
    kv_capacity_tokens,
    plan_deployment,
)

B = 1e9


def _embedding(key: str) -> float:
    m = get_model(key)
    return m.vocab_size * m.hidden_size


# Published totals: DeepSeek-V3 README_WEIGHTS (671 B main model, 36.6 B activated of which 0.9 B is the
# output head, the input embedding not counted as activated); Llama 4 cards (109 B / 400 B total with
# the vision encoder, 17 B active); Gemma 3 technical report table 1 (non-embedding parameters, in M).
@pytest.mark.parametrize("key, total_b, tolerance_b", [
    ("deepseek-v3", 671.0, 0.5), ("deepseek-r1", 671.0, 0.5),
    ("llama-4-scout", 109.0, 1.5),  # the card's total includes the ~1 B vision encoder we leave out
    ("llama-4-maverick", 400.0, 1.0),
])
def test_totals_match_the_model_cards(key, total_b, tolerance_b):
    assert abs(get_model(key).num_params / B - total_b) <= tolerance_b


@pytest.mark.parametrize("key", ["deepseek-v3", "llama-4-scout", "llama-4-maverick"])
def test_active_parameters_match_the_model_cards(key):
    m = get_model(key)
    if key == "deepseek-v3":  # 36.6 B activated, not counting the input embedding
        assert round((m.active_params - _embedding(key)) / B, 1) == 36.6
    else:
        assert round(m.active_params / B) == 17


@pytest.mark.parametrize("key, non_embedding_m", [("gemma-3-4b", 3209), ("gemma-3-27b", 25600)])
def test_gemma_non_embedding_count_matches_the_report(key, non_embedding_m):
    m = get_model(key)
    assert round((m.num_params - _embedding(key)) / 1e6) == non_embedding_m  # tied: the embedding counts once


def test_layer_patterns():
    scout, maverick = get_model("llama-4-scout"), get_model("llama-4-maverick")
    assert (scout.sliding_window, scout.num_sliding_layers) == (8192, 36)  # 3 of every 4 layers chunked
    assert maverick.num_sliding_layers == 36
    # Maverick: experts on every other layer, so half Scout's share of expert parameters per layer count
    assert maverick.expert_params == 24 * 128 * 3 * 5120 * 8192
    assert scout.expert_params == 48 * 16 * 3 * 5120 * 8192
    g4, g27 = get_model("gemma-3-4b"), get_model("gemma-3-27b")
    assert (g4.num_sliding_layers, g27.num_sliding_layers) == (34 - 5, 62 - 10)  # 5 local : 1 global
    ds = get_model("deepseek-v3")
    assert (ds.num_shared_experts, ds.first_dense_layers) == (1, 3)
    assert ds.expert_params == 58 * 256 * 3 * 7168 * 2048  # routed experts of the 58 sparse layers


# --- KV cache ---------------------------------------------------------------------------------

def test_latent_attention_caches_576_elements_per_token_per_layer_on_every_device():
    ds = get_model("deepseek-v3")
    assert ds.kv_elements_per_token_per_layer(1) == ds.kv_elements_per_token_per_layer(8) == 512 + 64
    dep = plan_deployment(scenario(model={"name": "deepseek-v3"}, hardware={"device": "h200", "tensor_parallel": 8},
                                   engine={"preset": "vllm-v0", "max_model_len": 32768}))  # budget 32768
    assert dep.kv_bytes_per_token == 61 * 576 * 2  # bf16 latent: 70 kB, where 128 full heads would take 4 MB
    # by hand: each of the 8 devices keeps the whole latent of every layer (it is not split by head)
    h200 = get_device("h200")
    # activations: the residual stream's bytes replicated, the rest split over the 8 devices
    activations = 32768 * 7168 * (ACTIVATION_REPLICATED_BYTES_PER_HIDDEN
                                  + (ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN - ACTIVATION_REPLICATED_BYTES_PER_HIDDEN) / 8)
    free = h200.memory_bytes * 0.9 - 671_026_419_200 * 1.0 / 8 - activations
    assert dep.kv_capacity_tokens == math.floor(free / (61 * 576 * 2)) // 16 * 16


def test_kv_capacity_caps_sliding_layers_at_the_window():
    # 10 full layers and 50 sliding ones of 100 bytes per token each; window 1000, 4 sequences
    assert kv_capacity_tokens(6_000_000, 1000, 5000, 4000) == 1000  # below the cap: every layer keeps every token
    assert kv_capacity_tokens(100_000_000, 1000, 5000, 4000) == (100_000_000 - 4000 * 5000) // 1000
    assert kv_capacity_tokens(0, 1000, 5000, 4000) == 0
    # the cap never costs capacity: at least as many tokens as counting every layer in full
    for free in (1e6, 2.4e7, 1e9):
        assert kv_capacity_tokens(free, 1000, 5000, 4000) >= math.floor(free / 6000)


def test_gemma_sliding_layers_hold_more_context_when_few_sequences_run():
    def dep(seqs):
        return plan_deployment(scenario(model={"name": "gemma-3-27b"}, hardware={"device": "h100-sxm"},
                                        engine={"max_num_seqs": seqs, "max_model_len": 8192}))
    few, many = dep(4), dep(256)
    g = get_model("gemma-3-27b")
    per_layer = 2 * 16 * 128 * 2
    h100 = get_device("h100-sxm")
    free = h100.memory_bytes * 0.9 - g.num_params * 2 - 8192 * 5376 * ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN
    # 256 x 1024 window tokens exceed what fits: every layer keeps every token
    assert many.kv_capacity_tokens == math.floor(free / (62 * per_layer)) // 16 * 16
    # 4 sequences: the 52 local layers need at most 4 x 1024 tokens, the rest goes to the 10 global ones
    assert few.kv_capacity_tokens == math.floor((free - 4 * 1024 * 52 * per_layer) / (10 * per_layer)) // 16 * 16
    assert few.kv_capacity_tokens > 4 * many.kv_capacity_tokens


# --- formats ----------------------------------------------------------------------------------

def _plan(model, device, tp=1, **model_keys):
    # a price for the devices the catalog has none for: planning needs one, these tests do not read it
    return plan_deployment(scenario(model={"name": model, **model_keys}, hardware={"device": device, "tensor_parallel": tp},
                                    engine={"max_model_len": 8192}, fleet={"price_usd_per_device_hour": 1.0}))


def test_nvfp4_needs_blackwell():
    dep = _plan("llama-3.1-8b", "b200", weight_format="nvfp4")
    assert dep.compute_format == "fp4" and dep.weight_bytes == pytest.approx(8_030_261_248 * (0.5 + 1 / 16))
    with pytest.raises(InputError) as err:
        _plan("llama-3.1-8b", "h100-sxm", weight_format="nvfp4")
    assert err.value.where == "model.weight_format"
    assert "Blackwell" in str(err.value) and "\n" not in str(err.value) and "fp8" in str(err.value)


def test_mxfp4_runs_natively_on_fp4_units_and_weight_only_elsewhere():
    assert _plan("gpt-oss-120b", "b200").compute_format == "fp4"
    on_h100 = _plan("gpt-oss-120b", "h100-sxm")
    assert on_h100.weight_format == "mxfp4" and on_h100.compute_format == "bf16"  # gpt-oss's native checkpoint
    assert on_h100.weight_bytes == pytest.approx(116_829_156_672 * 0.53125)  # fits one 80 GB H100, as OpenAI says
    with pytest.raises(InputError) as err:
        _plan("gpt-oss-20b", "xeon-8480", weight_format="mxfp4")
    assert "mxfp4" in str(err.value) and "xeon-8480" in str(err.value)


def test_fp8_weights_and_kv_refusals_name_the_reason():
    assert format_refusal(get_device("h100-sxm"), "fp8") is None
    assert "Hopper" in format_refusal(get_device("a100-80gb"), "fp8")
    # an fp8 KV cache: any GPU widens it in its attention kernel; a TPU v5e (no fp8) cannot
    assert format_refusal(get_device("a100-80gb"), "fp8", "KV cache") is None
    with pytest.raises(InputError) as err:
        _plan("llama-3.2-1b", "tpu-v5e", tp=1, kv_cache_format="fp8")
    assert err.value.where == "model.kv_cache_format" and "tpu-v5e" in str(err.value)
    fp8_kv = _plan("deepseek-v3", "h200", tp=8, kv_cache_format="fp8")
    assert fp8_kv.kv_bytes_per_token == 61 * 576 * BYTES_PER_ELEMENT["fp8"]


def test_deepseek_is_fp8_native_and_refused_where_fp8_is_missing():
    assert get_model("deepseek-v3").weight_format == "fp8"
    with pytest.raises(InputError) as err:
        _plan("deepseek-v3", "a100-80gb", tp=8)
    assert err.value.where == "model.weight_format"


def test_nvl72_allows_tensor_parallelism_across_its_domain():
    nvl = get_device("gb200-nvl72")
    assert nvl.devices_per_node == 72
    dep = _plan("deepseek-v3", "gb200-nvl72", tp=16)  # 128 heads split over 16 GPUs of one NVLink domain
    assert dep.num_devices == 16
    with pytest.raises(InputError) as err:
        _plan("deepseek-v3", "b200", tp=16)  # an HGX B200 node holds 8
    assert "8 b200 devices in a node" in str(err.value)


def test_every_new_device_has_sources_and_a_user_catalog_can_use_the_new_fields():
    catalog = bundled_catalog()
    for key in ("b300", "gb200-nvl72", "rtx-4090", "rtx-5090", "trainium2", "inferentia2", "tpu-v7",
                "xeon-6980p", "epyc-9755", "jetson-thor"):
        device = catalog.devices[key]
        assert {"spec", "power", "price", "efficiency"} <= set(device.sources)
        if device.price_usd_per_hour is None:
            assert device.sources["price"]["source"].startswith(("none", "no on-demand"))
    assert catalog.devices["tpu-v7"].rentable_shapes[0] == 4


# --- config.json import -------------------------------------------------------------------------

def test_tpu_v7_is_rented_by_the_slice():
    with pytest.raises(InputError) as err:
        _plan("gemma-3-27b", "tpu-v7", tp=2)
    assert "not a slice a cloud rents" in str(err.value) and "4, 8, 16" in str(err.value)
    assert _plan("gemma-3-27b", "tpu-v7", tp=4).num_devices == 4


def test_an_incomplete_latent_attention_config_names_the_missing_field(tmp_path, capsys):
    import json
    from pathlib import Path

    from simcost.catalog.hf_config import entry_from_file
    from simcost.cli.main import main

    raw = json.loads((Path(__file__).parent / "fixtures" / "hf" / "deepseek-v3.json").read_text())
    del raw["v_head_dim"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError) as err:
        entry_from_file(path)
    assert str(err.value) == f"{path}: v_head_dim: missing"
    assert main(["catalog", "import-model", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_multimodal_gemma_config_imports_its_language_model(capsys):
    from pathlib import Path

    import yaml

    from simcost.cli.main import main

    fixture = Path(__file__).parent / "fixtures" / "hf" / "gemma-3-4b.json"
    assert main(["catalog", "import-model", str(fixture), "--key", "my-gemma"]) == 0
    entries = yaml.safe_load(capsys.readouterr().out)
    assert "vision tower is not counted" in entries["my-gemma"]["notes"]
    model = bundled_catalog().with_entries({"models": entries}, "out").models["my-gemma"]
    assert model.num_params == get_model("gemma-3-4b").num_params and model.num_sliding_layers == 29


def test_an_imported_deepseek_entry_is_accepted_with_its_latent_cache():
    import json
    from pathlib import Path

    from simcost.catalog.hf_config import model_entry

    raw = json.loads((Path(__file__).parent / "fixtures" / "hf" / "deepseek-v3.json").read_text())
    entry = model_entry(raw, "deepseek-v3.json", "test", "2026-12-06")
    model = bundled_catalog().with_entries({"models": {"mine": entry}}, "test").models["mine"]
    assert model.is_mla and model.kv_elements_per_token_per_layer(8) == 576
    assert (model.weight_format, model.num_shared_experts, model.first_dense_layers) == ("fp8", 1, 3)
    # a hand-written entry whose absorbed shape does not match its latent is refused in one line
    bad = {**entry, "head_dim": 256}
    with pytest.raises(InputError) as err:
        bundled_catalog().with_entries({"models": {"bad": bad}}, "mine.yaml")
    assert "head_dim" in err.value.where and "288" in str(err.value)
