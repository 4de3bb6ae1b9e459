"""A scenario's own catalog entries: the `catalog:` section, catalog files and `--catalog`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from scenarios import scenario

from simcost.catalog.catalog import bundled_catalog
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.perf.deployment import plan_deployment
from simcost.scenario.scenario import load_scenario, scenario_from_dict
from simcost.scenario.schema import to_dict

SOURCE = {"source": "test fixture", "date": "2026-12-06"}
# A made-up 8B-shaped model and an H100-shaped device under new names.
MODEL = {"name": "Test 8B", "num_layers": 32, "hidden_size": 4096, "num_heads": 32, "num_kv_heads": 8,
         "head_dim": 128, "intermediate_size": 14336, "vocab_size": 128256, "num_params": 8030261248,
         "weight_format": "bf16", "max_model_len": 32768, "sources": {"spec": SOURCE}}
DEVICE = {"name": "Test GPU", "kind": "gpu", "memory_gb": 180, "mem_bw_gb_per_s": 8000,
          "peak_tflops": {"bf16": 2250, "fp8": 4500}, "link_gb_per_s": 900, "idle_w": 200, "peak_w": 1000,
          "mfu": 0.65, "mbu": 0.8, "step_overhead_s": 0.005, "allreduce_latency_s": 0.00003,
          "price_usd_per_hour": 9.5,
          "sources": {g: SOURCE for g in ("spec", "power", "price", "efficiency")}}


def _own(**catalog):
    return scenario(model={"name": "test-8b"}, hardware={"device": "test-gpu"}, catalog=catalog)


def test_inline_entries_are_used_and_not_seen_by_other_scenarios():
    mine = _own(models={"test-8b": MODEL}, devices={"test-gpu": DEVICE})
    dep = plan_deployment(mine)
    assert dep.model.name == "Test 8B" and dep.device.name == "Test GPU"
    assert dep.price_usd_per_hour == 9.5
    with pytest.raises(InputError, match="unknown model 'test-8b'"):
        plan_deployment(scenario(model={"name": "test-8b"}))
    assert "test-8b" not in bundled_catalog().models


def test_two_catalogs_in_one_process_stay_apart():
    other = copy.deepcopy(DEVICE) | {"price_usd_per_hour": 1.0}
    a = _own(models={"test-8b": MODEL}, devices={"test-gpu": DEVICE})
    b = _own(models={"test-8b": MODEL}, devices={"test-gpu": other})
    assert plan_deployment(a).price_usd_per_hour == 9.5
    assert plan_deployment(b).price_usd_per_hour == 1.0


def test_an_entry_replaces_a_bundled_one_of_the_same_key():
    cheap = copy.deepcopy(bundled_catalog().devices["h100-sxm"])
    raw = {"devices": {"h100-sxm": DEVICE}}
    s = scenario(catalog=raw)
    assert plan_deployment(s).device.name == "Test GPU"
    assert bundled_catalog().devices["h100-sxm"] == cheap


def test_resolved_scenario_round_trips_and_carries_the_entries():
    s = _own(models={"test-8b": MODEL}, devices={"test-gpu": DEVICE})
    raw = to_dict(s)
    assert raw["catalog"]["models"]["test-8b"]["num_layers"] == 32  # in sweep cache keys and scenario.yaml
    again = scenario_from_dict(raw)
    assert plan_deployment(again).device.name == "Test GPU"
    assert yaml.safe_dump(raw)


def test_prices_list_adds_an_offer():
    offer = {"provider": "acme", "region": "any", "instance": "box-8", "device": "test-gpu",
             "devices_per_instance": 8, "on_demand_usd_per_hour": 40.0, "sources": {"on_demand": SOURCE}}
    s = _own(models={"test-8b": MODEL}, devices={"test-gpu": DEVICE}, prices=[offer])
    s = scenario_from_dict(to_dict(s) | {"fleet": {"site": {"provider": "acme", "region": "x"}}})
    assert plan_deployment(s).price_usd_per_hour == 5.0


@pytest.mark.parametrize("catalog, where", [
    ({"models": {"test-8b": {**MODEL, "num_layers": 0}}}, "catalog: models.test-8b.num_layers"),
    # a count in billions would size the weights at a few bytes and fit anywhere
    ({"models": {"test-8b": {**MODEL, "num_params": 8}}}, "catalog: models.test-8b.num_params: 8 is below"),
    ({"devices": {"test-gpu": {k: v for k, v in DEVICE.items() if k != "mbu"}}}, "catalog: devices.test-gpu.mbu"),
    ({"gadgets": {}}, "catalog: gadgets"),
    ({"prices": [{"provider": "acme", "region": "any", "instance": "x", "device": "nope",
                  "devices_per_instance": 1, "on_demand_usd_per_hour": 1.0, "sources": {"on_demand": SOURCE}}]},
     "catalog: prices[0].device"),
])
def test_bad_entries_name_the_section_and_key(catalog, where):
    with pytest.raises(InputError) as err:
        scenario(catalog=catalog)
    assert str(err.value).startswith(where)


def _files(tmp_path: Path) -> Path:
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "models.yaml").write_text(yaml.safe_dump({"models": {"test-8b": MODEL}}))
    (tmp_path / "cat" / "all.yaml").write_text(yaml.safe_dump({"files": ["models.yaml"],
                                                               "devices": {"test-gpu": DEVICE}}))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "own", "duration_s": 5, "catalog": {"files": ["cat/all.yaml"]},
        "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                     "input_tokens": {"dist": "fixed", "value": 100},
                     "output_tokens": {"dist": "fixed", "value": 10}},
        "model": {"name": "test-8b"}, "hardware": {"device": "test-gpu"}}))
    return path


def test_catalog_files_are_relative_to_the_file_naming_them(tmp_path, monkeypatch):
    path = _files(tmp_path)
    monkeypatch.chdir(Path(__file__).parent)
    assert plan_deployment(load_scenario(path)).model.name == "Test 8B"


def test_catalog_flag_adds_entries_after_the_scenarios(tmp_path, capsys):
    path = _files(tmp_path)
    flag = tmp_path / "flag.yaml"
    flag.write_text(yaml.safe_dump({"devices": {"test-gpu": {**DEVICE, "name": "Flag GPU"}}}))
    assert plan_deployment(load_scenario(path, catalog_files=[str(flag)])).device.name == "Flag GPU"
    assert main(["check", str(path), "--catalog", str(flag)]) == 0
    assert "test-gpu" in capsys.readouterr().out


def test_a_bad_catalog_file_is_one_line_naming_it(tmp_path, capsys):
    path = _files(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"models": {"x": {**MODEL, "weight_format": "fp5"}}}))
    assert main(["check", str(path), "--catalog", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--catalog {bad}: models.x.weight_format" in err


# --- TPU slices ------------------------------------------------------------------------------------

def test_tpus_list_the_slices_a_cloud_rents_with_a_source():
    devices = bundled_catalog().devices
    for key in ("tpu-v5e", "tpu-v6e", "tpu-v5p"):
        assert devices[key].rentable_shapes and devices[key].sources["shapes"]["source"]
    assert devices["tpu-v5e"].rentable_shapes == (1, 4, 8)
    assert all(not d.rentable_shapes for d in devices.values() if d.kind != "tpu")


@pytest.mark.parametrize("device, tp", [("tpu-v6e", 2), ("tpu-v5p", 1), ("tpu-v5e", 3)])
def test_check_refuses_a_tensor_parallel_degree_that_is_no_rentable_slice(device, tp, capsys):
    path = Path(__file__).parents[1] / "configs" / "example.yaml"
    assert main(["check", str(path), "--set", f"hardware.device={device}",
                 "--set", f"hardware.tensor_parallel={tp}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a slice a cloud rents; rentable slices: " in err


def test_size_refuses_a_tensor_parallel_degree_that_is_no_rentable_slice(capsys):
    path = Path(__file__).parents[1] / "configs" / "example.yaml"
    assert main(["size", str(path), "--devices", "tpu-v6e", "--tensor-parallel", "2"]) == 2
    assert "--tensor-parallel: 2 tpu-v6e chips is not a slice a cloud rents; rentable slices: 1, 4, 8" in \
        capsys.readouterr().err


def test_rentable_shapes_need_their_own_source():
    tpu = {**DEVICE, "kind": "tpu", "rentable_shapes": [1, 4]}
    with pytest.raises(InputError, match="catalog: devices.t.sources.shapes: missing"):
        bundled_catalog().with_entries({"devices": {"t": tpu}}, "catalog")
    sourced = {**tpu, "sources": {**DEVICE["sources"], "shapes": SOURCE}}
    assert bundled_catalog().with_entries({"devices": {"t": sourced}}, "catalog").devices["t"].rentable_shapes == (1, 4)
    with pytest.raises(InputError, match="catalog: devices.t.rentable_shapes: \\[4, 1\\]"):
        bundled_catalog().with_entries({"devices": {"t": {**sourced, "rentable_shapes": [4, 1]}}}, "catalog")


def test_sweep_cache_keys_include_the_user_catalogs_content():
    from simcost.analysis.sweep_cache import run_key

    a = _own(models={"test-8b": MODEL}, devices={"test-gpu": DEVICE})
    b = _own(models={"test-8b": MODEL}, devices={"test-gpu": {**DEVICE, "mem_bw_gb_per_s": 7000}})
    assert run_key(to_dict(a)) != run_key(to_dict(b))
    assert run_key(to_dict(a)) == run_key(to_dict(_own(models={"test-8b": MODEL}, devices={"test-gpu": DEVICE})))


def test_catalog_listing_shows_a_catalog_files_entries(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"models": {"test-8b": MODEL}}))
    assert main(["catalog", "models", "--catalog", str(path)]) == 0
    assert "test-8b" in capsys.readouterr().out
    assert main(["catalog", "models"]) == 0
    assert "test-8b" not in capsys.readouterr().out


@pytest.mark.parametrize("content, problem", [
    (b"devices:\n  a: {}\ndevices:\n  b: {}\n", "duplicate key 'devices'"),
    (b"models:\n  x: {name: \"\xff\"}\n", "not UTF-8"),
])
def test_a_catalog_file_is_read_as_strictly_as_a_scenario(tmp_path, content, problem):
    """A repeated key would silently drop the first entries, and a non-UTF-8 byte used to end in a
    traceback: both are one line naming the file and line, as for scenario files."""
    path = tmp_path / "mine.yaml"
    path.write_bytes(content)
    scn = tmp_path / "s.yaml"
    scn.write_text(yaml.safe_dump({**to_dict(scenario()), "catalog": {"files": ["mine.yaml"]}}))
    with pytest.raises(InputError) as err:
        load_scenario(scn)
    assert str(path) in err.value.where and problem in err.value.problem
