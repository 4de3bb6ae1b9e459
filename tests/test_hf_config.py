"""Hugging Face config.json import: derived parameter counts, entries, errors, the CLI command and
`model: {config_json: ...}` in a scenario."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from scenarios import scenario

from simcost.catalog.catalog import bundled_catalog
from simcost.catalog.hf_config import entry_from_file, model_entry, param_counts
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
CONFIGS = sorted(p.stem for p in FIXTURES.glob("*.json"))
SHAPE = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size",
         "max_model_len", "weight_format", "num_experts", "experts_per_token", "expert_params")


def _config(key: str) -> dict:
    return json.loads((FIXTURES / f"{key}.json").read_text())


@pytest.mark.parametrize("key", CONFIGS)
def test_derived_count_equals_the_catalogs_num_params(key):
    # every fixture is the config.json of a catalog model: its derived count is the entry's exact count
    model = bundled_catalog().models[key]
    total, experts = param_counts(_config(key))
    assert (total, experts) == (model.num_params, model.expert_params)


@pytest.mark.parametrize("key", CONFIGS)
def test_imported_entry_has_the_catalogs_shape(key):
    entry = model_entry(_config(key), key, "test", "2026-12-06")
    model = bundled_catalog().models[key]
    assert {f: entry.get(f, 0) for f in SHAPE} == {f: getattr(model, f) for f in SHAPE}
    assert (entry.get("sliding_window", 0), entry.get("num_sliding_layers", 0)) == (
        model.sliding_window, model.num_sliding_layers)


def test_every_transformer_in_the_catalog_has_a_config_fixture():
    tokens = {k for k, m in bundled_catalog().models.items() if m.serving == "tokens" and k != "bloom-176b"}
    assert tokens <= set(CONFIGS)


def test_tied_embeddings_count_once():
    raw = _config("llama-3.1-8b")
    untied, _ = param_counts(raw)
    tied, _ = param_counts({**raw, "tie_word_embeddings": True})
    assert untied - tied == 128256 * 4096


def test_head_dim_is_derived_when_absent_and_used_when_given():
    raw = _config("llama-3.1-8b")
    assert model_entry(raw, "x", "s", "2026-12-06")["head_dim"] == 128
    wide = {**raw, "head_dim": 256}
    assert param_counts(wide)[0] - param_counts(raw)[0] == 32 * (2 * 4096 * (32 * 128 + 8 * 128))


def test_shared_experts_and_dense_layers():
    raw = {**_config("mixtral-8x7b"), "model_type": "qwen2_moe", "moe_intermediate_size": 1024,
           "shared_expert_intermediate_size": 2048, "mlp_only_layers": [0]}
    total, experts = param_counts(raw)
    d, qkv_bias = 4096, 4096 + 2 * 1024
    expert = 3 * d * 1024
    assert experts == 31 * 8 * expert
    attention = 2 * d * d + 2 * d * 1024 + qkv_bias
    sparse = 8 * expert + d * 8 + 3 * d * 2048 + d
    assert total == 2 * 32000 * d + 32 * (attention + 2 * d) + 31 * sparse + 3 * d * 14336 + d


def test_sliding_window_layers_are_recorded_with_a_note():
    raw = {**_config("mistral-7b"), "sliding_window": 4096}
    entry = model_entry(raw, "x", "s", "2026-12-06")
    assert (entry["sliding_window"], entry["num_sliding_layers"]) == (4096, 32)
    assert "keeps at most the window" in entry["notes"]
    mixed = {**raw, "sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 16}
    assert model_entry(mixed, "x", "s", "2026-12-06")["num_sliding_layers"] == 16
    bundled_catalog().with_entries({"models": {"x": entry}}, "test")  # the catalog accepts it


@pytest.mark.parametrize("edit, where", [
    (lambda c: c.pop("hidden_size"), "cfg.json: hidden_size: missing"),
    (lambda c: c.update(num_key_value_heads=5), "cfg.json: num_key_value_heads: 5 does not divide"),
    (lambda c: c.update(kv_lora_rank=512), "cfg.json: qk_rope_head_dim: missing"),
    (lambda c: c.update(text_config={}), "cfg.json: text_config: a multimodal checkpoint"),
    (lambda c: c.update(model_type="gpt2"), "cfg.json: model_type: 'gpt2'"),
    (lambda c: c.update(torch_dtype="int7"), "cfg.json: torch_dtype: 'int7'"),
    (lambda c: c.update(vocab_size="big"), "cfg.json: vocab_size: 'big'"),
])
def test_a_bad_config_names_the_field(tmp_path, edit, where, capsys):
    raw = _config("llama-3.1-8b")
    edit(raw)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError) as err:
        entry_from_file(path)
    assert str(err.value).startswith(f"{path}: {where.split(': ', 1)[1]}")
    assert main(["catalog", "import-model", str(path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_import_model_prints_an_entry_the_catalog_accepts(tmp_path, capsys):
    assert main(["catalog", "import-model", str(FIXTURES / "qwen2.5-7b.json"), "--key", "my-qwen"]) == 0
    entries = yaml.safe_load(capsys.readouterr().out)
    assert entries["my-qwen"]["num_params"] == 7_615_616_512
    assert bundled_catalog().with_entries({"models": entries}, "out").models["my-qwen"].num_params == 7_615_616_512


def test_a_scenario_model_from_config_json():
    s = scenario(model={"config_json": str(FIXTURES / "llama-3.1-8b.json"), "name": "mine"})
    dep = plan_deployment(s)
    assert dep.model.key == "mine" and dep.model.num_params == 8_030_261_248
    assert s.model.name == "mine" and "mine" in s.catalog.models
