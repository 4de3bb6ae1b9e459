"""Device and model catalogs: every entry loads, carries dated sources, and bad entries are
reported with the file and key path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from simcost.catalog import (DEVICE_SOURCE_GROUPS, MODEL_SOURCE_GROUPS, config_dir, get_device, get_model,
                             load_devices, load_models)
from simcost.errors import InputError

DATE = re.compile(r"^\d{4}-\d{2}(-\d{2})?$")


def test_catalogs_load_with_required_keys():
    devices, models = load_devices(), load_models()
    assert {"h100-sxm", "a100-80gb", "l4", "xeon-8480"} <= set(devices)
    assert {"llama-3.1-8b", "llama-2-70b"} <= set(models)
    assert all(key == spec.key for key, spec in devices.items())


@pytest.mark.parametrize("key", sorted(load_devices()))
def test_every_device_value_group_has_a_dated_source(key):
    sources = load_devices()[key].sources
    assert set(sources) == set(DEVICE_SOURCE_GROUPS)
    for group in DEVICE_SOURCE_GROUPS:
        assert sources[group]["source"].strip()
        assert DATE.match(sources[group]["date"])


@pytest.mark.parametrize("key", sorted(load_models()))
def test_every_model_has_a_dated_source(key):
    sources = load_models()[key].sources
    for group in MODEL_SOURCE_GROUPS:
        assert sources[group]["source"].strip()
        assert DATE.match(sources[group]["date"])


def test_device_units_are_converted_to_si():
    h100 = get_device("h100-sxm")
    assert h100.memory_bytes == 80 * 2**30  # the "80GB" HBM is 80 GiB
    assert h100.mem_bw_bytes_per_s == 3350e9
    assert h100.peak_flops["bf16"] == 989e12 and h100.peak_flops["fp8"] == 1979e12
    assert h100.link_bytes_per_s == 450e9  # NVLink 900 GB/s bidirectional, one direction
    assert h100.price_usd_per_hour == pytest.approx(55.04 / 8)
    a100 = get_device("a100-80gb")
    assert "fp8" not in a100.peak_flops
    assert a100.price_usd_per_hour == pytest.approx(27.447 / 8)
    assert get_device("xeon-8480").price_usd_per_hour == pytest.approx(14 * 0.383)
    assert get_device("l4").memory_bytes == 24e9


@pytest.mark.parametrize("key", sorted(load_devices()))
def test_device_values_are_physically_sane(key):
    d = load_devices()[key]
    assert 0 <= d.idle_w < d.peak_w
    assert 0 < d.mfu <= 1 and 0 < d.mbu <= 1
    assert d.peak_flops and all(v > 0 for v in d.peak_flops.values())


@pytest.mark.parametrize("key", sorted(load_models()))
def test_model_param_count_matches_its_shapes(key):
    # Llama/Mistral layout: embeddings and an untied lm_head, per layer q, k, v, o, gate/up/down
    # and two RMSNorm weights, plus a final norm.
    m = load_models()[key]
    d, kv = m.hidden_size, m.num_kv_heads * m.head_dim
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * m.intermediate_size + 2 * d
    assert m.num_params == 2 * m.vocab_size * d + m.num_layers * per_layer + d
    assert m.num_heads * m.head_dim == d


def test_known_exact_parameter_counts():
    assert get_model("llama-3.1-8b").num_params == 8_030_261_248
    assert get_model("llama-2-70b").num_params == 68_976_648_192
    assert get_model("llama-2-70b").max_model_len == 4096
    assert get_model("llama-3.1-8b").max_model_len == 131072


def test_unknown_names_suggest_the_closest():
    with pytest.raises(InputError) as err:
        get_device("h100")
    assert err.value.where == "hardware.device" and "h100-sxm" in str(err.value)
    with pytest.raises(InputError) as err:
        get_model("llama-3-8b")
    assert err.value.where == "model.name" and "llama-3.1-8b" in str(err.value)


def test_config_dir_is_the_repository_configs():
    assert (config_dir() / "devices.yaml").is_file()
    assert (config_dir() / "models.yaml").is_file()


def _broken_copy(tmp_path: Path, file: str, edit) -> Path:
    for name in ("devices.yaml", "models.yaml"):
        shutil.copy(config_dir() / name, tmp_path / name)
    raw = yaml.safe_load((tmp_path / file).read_text())
    edit(raw)
    (tmp_path / file).write_text(yaml.safe_dump(raw))
    return tmp_path


def test_missing_field_names_file_and_key_path(tmp_path):
    folder = _broken_copy(tmp_path, "devices.yaml", lambda raw: raw["h100-sxm"].pop("mem_bw_gb_per_s"))
    with pytest.raises(InputError, match=r"^devices\.yaml: h100-sxm\.mem_bw_gb_per_s: missing"):
        load_devices(folder)


def test_wrong_type_is_refused(tmp_path):
    folder = _broken_copy(tmp_path, "devices.yaml", lambda raw: raw["l4"].__setitem__("peak_w", "72 W"))
    with pytest.raises(InputError, match=r"devices\.yaml: l4\.peak_w: '72 W'; expected a number"):
        load_devices(folder)


def test_missing_source_date_is_refused(tmp_path):
    folder = _broken_copy(tmp_path, "devices.yaml", lambda raw: raw["a100-80gb"]["sources"]["price"].pop("date"))
    with pytest.raises(InputError, match=r"devices\.yaml: a100-80gb\.sources\.price\.date: missing"):
        load_devices(folder)


def test_missing_source_group_is_refused(tmp_path):
    folder = _broken_copy(tmp_path, "models.yaml", lambda raw: raw["llama-2-70b"]["sources"].pop("spec"))
    with pytest.raises(InputError, match=r"models\.yaml: llama-2-70b\.sources\.spec: missing"):
        load_models(folder)


def test_unknown_field_is_refused_with_a_hint(tmp_path):
    folder = _broken_copy(tmp_path, "models.yaml", lambda raw: raw["llama-3.1-8b"].__setitem__("num_layer", 3))
    with pytest.raises(InputError, match=r"llama-3\.1-8b\.num_layer: unknown field \(closest: num_layers"):
        load_models(folder)


@pytest.mark.parametrize("table, header", [("devices", "bf16_TFLOPs"), ("models", "params_B"), ("prices", "$/hour/device")])
def test_catalog_command_lists_every_entry(capsys, table, header):
    from simcost.catalog import load_devices, load_models
    from simcost.cli import main

    assert main(["catalog", table]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert header in lines[0]
    keys = load_models() if table == "models" else load_devices()
    assert [line.split()[0] for line in lines[1:]] == list(keys)


def test_added_llama_parameter_counts():
    # Llama-2 7B/13B match their checkpoints' published counts; 405B is derived from its shapes.
    assert get_model("llama-2-7b").num_params == 6_738_415_616
    assert get_model("llama-2-13b").num_params == 13_015_864_320
    assert get_model("llama-3.1-405b").num_params == 405_853_388_800
