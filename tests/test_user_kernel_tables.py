"""A catalog device's own kernel measurements (`kernel_tables: PATH`, simcost.perf.kernel_import):
a .npz in simcost's format or aiconfigurator's Parquet folder, priced as measured, judged by auto
as shipped tables are, overriding the shipped ones of a bundled key; bad files fail in one line."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from simcost.catalog.specs import config_dir
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.perf import step_model as sm
from simcost.perf.deployment import plan_deployment
from simcost.perf.kernel_import import COLUMNS, load_user_tables
from simcost.perf.kernel_model import K_HEADER
from simcost.perf.kernel_moe import Rates
from simcost.perf.kernel_tables import TABLE_DIR, KernelTables, load_tables
from simcost.perf.model_choice import choose_perf_model
from simcost.perf.roofline import efficiency_factors
from simcost.perf.step_params import NUM_PARAMS
from simcost.scenario.scenario import load_scenario
from simcost.simulation.simulation import Simulation

SHIPPED = TABLE_DIR / "h100_sxm.npz"
H100 = {k: v for k, v in yaml.safe_load((config_dir() / "devices.yaml").read_text())["h100-sxm"].items()
        if k != "aliases"}  # aliases are unique across the catalog


def write_scenario(tmp_path: Path, device: str, entry: dict | None = None, perf: str = "auto", tp: int = 1,
                   model: str = "llama-3.1-8b") -> Path:
    """A scenario in tmp_path whose catalog file (in a sub-folder, so relative paths are tested)
    adds `entry` under `device`."""
    (tmp_path / "cat").mkdir(exist_ok=True)
    (tmp_path / "cat" / "catalog.yaml").write_text(yaml.safe_dump({"devices": {device: entry}} if entry else {}))
    raw = {"name": "user-tables", "seed": 2, "duration_s": 8.0,
           "workload": {"arrivals": {"process": "poisson", "rate_per_s": 3.0},
                        "input_tokens": {"dist": "uniform", "low": 100, "high": 900},
                        "output_tokens": {"dist": "uniform", "low": 10, "high": 60}},
           "model": {"name": model}, "hardware": {"device": device, "tensor_parallel": tp},
           "engine": {"max_model_len": 4096}, "perf": {"model": perf},
           "catalog": {"files": ["cat/catalog.yaml"]} if entry else {}}
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def copy_tables(tmp_path: Path, arrays: dict | None = None, name: str = "mine.npz") -> Path:
    """The shipped H100 tables (or `arrays`) under cat/tables/ (relative to the catalog: tables/...)."""
    out = tmp_path / "cat" / "tables"
    out.mkdir(parents=True, exist_ok=True)
    if arrays is None:
        shutil.copy(SHIPPED, out / name)
    else:
        np.savez(out / name, **arrays)
    return out / name


def params(path: Path):
    s = load_scenario(path)
    dep = plan_deployment(s)
    return s, dep, sm.step_params(s, dep)


# --- (a) a shipped GPU held out as if it were a user's ------------------------------------------

@pytest.mark.parametrize("tp", [1, 4])
def test_a_copy_of_the_h100_tables_prices_my_h100_bit_for_bit(tmp_path, tp):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    copy_tables(tmp_path / "a")
    mine = write_scenario(tmp_path / "a", "my-h100", H100 | {"kernel_tables": "tables/mine.npz"}, tp=tp)
    builtin = write_scenario(tmp_path / "b", "h100-sxm", tp=tp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s, dep, p = params(mine)
    assert not [w for w in caught if "no kernel tables" in str(w.message)]  # measured, not borrowed
    assert dep.device.kernel_tables == str((tmp_path / "a" / "cat" / "tables" / "mine.npz").resolve())
    _, _, p_builtin = params(builtin)
    assert np.array_equal(p, p_builtin)
    model, why = choose_perf_model(s, dep)
    assert (model, why) == ("kernels", "auto: own tables from mine.npz")


def test_my_h100_reports_the_same_measured_fraction_and_names_its_file(tmp_path):
    for sub, device, entry in (("a", "my-h100", H100 | {"kernel_tables": "tables/mine.npz"}), ("b", "h100-sxm", None)):
        (tmp_path / sub).mkdir()
        copy_tables(tmp_path / sub)
        write_scenario(tmp_path / sub, device, entry)
    mine = Simulation(load_scenario(tmp_path / "a" / "scenario.yaml")).run().summary
    builtin = Simulation(load_scenario(tmp_path / "b" / "scenario.yaml")).run().summary
    assert mine["step_time_measured_fraction"] == builtin["step_time_measured_fraction"] > 0.5
    assert "step_time_scaled_fraction" not in mine
    assert mine["perf_model"] == "kernels (auto: own tables from mine.npz)"  # not where it sits: summaries compare
    assert mine["requests"] == builtin["requests"] and mine["ttft_s"] == builtin["ttft_s"]


# --- (b) aiconfigurator's Parquet folder ---------------------------------------------------------

def _to_parquet(arrays: dict[str, np.ndarray], folder: Path) -> None:
    """Write simcost arrays back in aiconfigurator's layout (the collector's column names), with
    rows the conversion must drop (a block-scaled fp8 GEMM, a sliding-window attention row, an
    other MoE token distribution)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    by_file: dict[str, dict[str, list]] = {}
    for key, rows in arrays.items():
        op, dtype = key.split("/")
        rel, split, keys = COLUMNS[op]
        cols: dict[str, list] = {c: list(rows[:, j]) for j, c in enumerate(keys)}
        cols["latency"] = list(rows[:, -1])
        n = len(rows)
        if op == "generation_attention":  # context = isl + step
            cols["isl"], cols["step"] = cols.pop("context"), [0.0] * n
        if op.startswith("mla_"):
            gemm, kv = dtype.split("_kv")
            cols |= {"gemm_type": [gemm] * n, "kv_cache_dtype": [kv] * n, "mla_dtype": ["bfloat16"] * n}
            cols.setdefault("isl" if op == "mla_generation" else "step", [1.0] * n)
        elif op == "nccl":  # elements of half precision
            cols["message_size"], cols["nccl_dtype"] = [b / 2 for b in cols.pop("bytes")], ["half"] * n
            cols[split] = [dtype] * n
        else:
            cols[split] = [dtype] * n
        if op.endswith("attention"):
            cols["window_size"] = [0] * n
        if op == "moe":
            cols["distribution"] = ["power_law_1.01"] * n
        part = by_file.setdefault(rel, {})
        for c, v in cols.items():
            part.setdefault(c, []).extend(v)
    for rel, cols in by_file.items():
        first = {c: v[0] for c, v in cols.items()}
        dropped = dict(first)
        if rel.startswith("gemm"):
            dropped["gemm_dtype"] = "fp8_block"
        elif "window_size" in first:
            dropped["window_size"] = 128
        elif rel.startswith("moe"):
            dropped["distribution"] = "uniform"
        for c in cols:
            cols[c].append(dropped[c])
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), path)


def test_a_parquet_folder_loads_as_the_npz_it_converts_to(tmp_path):
    pytest.importorskip("pyarrow")
    shipped = {k: np.asarray(v, dtype=np.float32) for k, v in load_tables("h100_sxm").items()}
    # a subset of every operator keeps the test quick; every table of the file is there
    arrays = {k: v[:: max(len(v) // 400, 1)] for k, v in shipped.items()}
    _to_parquet(arrays, tmp_path / "my_gpu")
    npz = copy_tables(tmp_path, arrays)
    from_folder, from_npz = load_user_tables(str(tmp_path / "my_gpu")), load_user_tables(str(npz))
    assert sorted(from_folder) == sorted(from_npz) == sorted(shipped)
    for key in from_npz:
        assert np.array_equal(from_folder[key], from_npz[key]), key


def test_the_shipped_h100_folder_through_a_catalog_prices_as_the_npz_route(tmp_path):
    pytest.importorskip("pyarrow")
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in load_tables("h100_sxm").items()
              if k.split("/")[0] in ("gemm", "context_attention", "generation_attention", "allreduce")}
    _to_parquet(arrays, tmp_path / "cat" / "h100_folder")
    copy_tables(tmp_path, arrays)
    folder = write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "h100_folder"}, tp=2)
    _, _, p_folder = params(folder)
    npz = write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "tables/mine.npz"}, tp=2)
    _, _, p_npz = params(npz)
    assert np.array_equal(p_folder, p_npz)


def test_a_folder_without_pyarrow_says_to_install_it_or_convert(tmp_path, monkeypatch):
    (tmp_path / "gpu" / "gemm").mkdir(parents=True)
    (tmp_path / "gpu" / "gemm" / "gemm_perf.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(InputError, match=r"pip install 'simcost\[parquet\]'.*\.npz") as e:
        load_user_tables(str(tmp_path / "gpu"))
    assert str(tmp_path / "gpu") in str(e.value) and "\n" not in str(e.value)


# --- (c) a partial set -----------------------------------------------------------------------

PARTIAL = ("gemm/bfloat16", "context_attention/bfloat16", "allreduce/vllm_graph", "allreduce/vllm_eager")


def test_a_missing_operator_takes_the_roofline_and_is_not_measured(tmp_path):
    copy_tables(tmp_path, {k: v for k, v in load_tables("h100_sxm").items() if k in PARTIAL})
    path = write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "tables/mine.npz"}, perf="kernels")
    s, dep, p = params(path)
    # the decode-attention grid: the roofline's bytes over the fallback rate, none of it measured
    base = NUM_PARAMS
    n_t, n_r, n_s, n_b, n_c = (int(x) for x in p[base:base + 5])
    at = base + K_HEADER + 5 * n_t + n_r + n_s + 2 * n_r * n_s
    b_axis, c_axis = p[at:at + n_b], p[at + n_b:at + n_b + n_c]
    dec_s = p[at + n_b + n_c:at + n_b + n_c + n_b * n_c].reshape(n_b, n_c)
    dec_share = p[at + n_b + n_c + n_b * n_c:at + n_b + n_c + 2 * n_b * n_c]
    factors = efficiency_factors(s, dep)
    rate = Rates(dep.device, dep.compute_format, factors["mfu"], factors["mbu"]).byte_rate
    m = dep.model
    b, c = np.meshgrid(b_axis, c_axis, indexing="ij")
    assert np.allclose(dec_s, b * c * 2.0 * m.num_kv_heads * m.head_dim * 2 / rate * m.num_layers, rtol=1e-12)
    assert not dec_share.any()
    summary = Simulation(s).run().summary
    assert 0.0 < summary["step_time_measured_fraction"] < 1.0
    # auto judges the partial set by the rules for shipped tables: no decode attention, no kernels
    auto = load_scenario(write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "tables/mine.npz"}))
    assert choose_perf_model(auto, plan_deployment(auto)) == (
        "roofline", "auto: no generation attention table for 8 KV heads of 128 per GPU (bf16 KV)")


def test_auto_runs_kernels_on_a_partial_set_that_covers_the_model(tmp_path):
    keep = PARTIAL + ("generation_attention/bfloat16",)
    copy_tables(tmp_path, {k: v for k, v in load_tables("h100_sxm").items() if k in keep})
    s = load_scenario(write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "tables/mine.npz"}, tp=2))
    model, why = choose_perf_model(s, plan_deployment(s))
    assert model == "kernels" and why.startswith("auto: own tables from ")


# --- (e) a user's tables for a bundled key replace the shipped ones ---------------------------

def test_my_tables_for_h100_sxm_replace_the_shipped_ones(tmp_path):
    doubled = {k: np.column_stack([v[:, :-1], 2.0 * v[:, -1]]) for k, v in load_tables("h100_sxm").items()}
    copy_tables(tmp_path, doubled)
    (tmp_path / "b").mkdir()
    s_mine, dep_mine, p_mine = params(write_scenario(tmp_path, "h100-sxm", H100 | {"kernel_tables": "tables/mine.npz"},
                                                     perf="kernels"))
    s_ship, dep_ship, p_ship = params(write_scenario(tmp_path / "b", "h100-sxm", perf="kernels"))
    # exactly the kernel model on the doubled arrays
    roofline = sm.step_params(load_scenario(write_scenario(tmp_path / "b", "h100-sxm", perf="roofline")), dep_ship)
    expected = sm._kernel_params(s_ship, dep_ship, roofline, efficiency_factors(s_ship, dep_ship),
                                 KernelTables("doubled", arrays=doubled))
    assert np.array_equal(p_mine, expected)
    # a decode step of 32 sequences at 2000 tokens of context: the tabled part doubles, the fixed
    # per-step overhead and the elementwise roofline do not
    mine, ship = (sm.step_time_s(p, 0, 32, 0, 32 * 2000, 0) for p in (p_mine, p_ship))
    overhead = sm.KERNEL_STEP_OVERHEAD_S
    assert 1.8 < (mine - overhead) / (ship - overhead) <= 2.0
    # by name, not where the file sits
    assert choose_perf_model(s_mine, dep_mine)[1] == "set in perf.model; kernel tables from mine.npz"


# --- (d) bad input: one line naming the file, exit 2 ---------------------------------------------

def _bad_npz(tmp_path: Path, arrays: dict) -> str:
    copy_tables(tmp_path, arrays, "bad.npz")
    return "tables/bad.npz"


GEMM = np.array([[1.0, 4096, 4096, 0.01], [16.0, 4096, 4096, 0.02]])


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: "tables/nowhere.npz", "no such file or folder"),
    (lambda tmp: (tmp / "cat" / "t.csv").write_text("m,n\n") and "t.csv", "expected a .npz"),
    (lambda tmp: _bad_npz(tmp, {"weights": GEMM}), "unknown table"),
    (lambda tmp: _bad_npz(tmp, {}), "no kernel table found"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM[:, :3]}), "gemm/bfloat16: shape (2, 3); expected rows of 4"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM * [1, 1, 1, np.nan]}), "column latency_ms"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM * [1, 1, 1, 0]}), "expected a finite latency > 0"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM * [1, -1, 1, 1]}), "column n: 2 bad value(s)"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM * [0, 1, 1, 1]}), "column m: 2 bad value(s), first 0.0"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM[:0]}), "empty table"),
    (lambda tmp: _bad_npz(tmp, {"gemm/bfloat16": GEMM[[0, 1, 0]]}), "1 row(s) repeat a measured point (first m 1, n 4096"),
    (lambda tmp: (tmp / "cat" / "tables").mkdir(parents=True) or (tmp / "cat" / "tables" / "x.npz").write_text("no")
     and "tables/x.npz", "not a readable .npz"),
])
def test_bad_tables_fail_in_one_line_naming_the_file(tmp_path, capsys, make, expected):
    (tmp_path / "cat").mkdir()
    rel = make(tmp_path)
    path = write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": rel})
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str((tmp_path / "cat" / rel).resolve()) in err and expected in err


GEMM_COLUMNS = {"gemm_dtype": ["bfloat16"] * 2, "m": [1, 16], "n": [4096] * 2, "k": [4096] * 2, "latency": [0.01, 0.02]}


@pytest.mark.parametrize("columns, expected", [
    ({k: v for k, v in GEMM_COLUMNS.items() if k != "k"}, "gemm_perf.parquet: missing column k"),
    ({k: v[:0] for k, v in GEMM_COLUMNS.items()}, "gemm_perf.parquet: empty table"),
    (GEMM_COLUMNS | {"latency": [0.01, float("nan")]}, "gemm_perf.parquet: column latency: 1 bad value(s), first nan"),
    (GEMM_COLUMNS | {"n": [4096, -1]}, "gemm_perf.parquet: column n: 1 bad value(s), first -1.0 in row 1"),
    (GEMM_COLUMNS | {"m": [0, 16]}, "gemm/bfloat16: column m: 1 bad value(s), first 0.0"),  # after the conversion
    (None, "gemm_perf.parquet: not a readable Parquet file"),
])
def test_bad_parquet_tables_name_the_folder_file_and_column(tmp_path, capsys, columns, expected):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    target = tmp_path / "cat" / "gpu" / "gemm" / "gemm_perf.parquet"
    target.parent.mkdir(parents=True)
    if columns is None:
        target.write_bytes(b"PAR1 not parquet")
    else:
        pq.write_table(pa.table(columns), target)
    path = write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "gpu"})
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(tmp_path / "cat" / "gpu") in err


def test_bad_tables_through_the_python_api_raise_input_error(tmp_path):
    copy_tables(tmp_path, {"gemm/bfloat16": GEMM * [1, 1, 1, np.inf]}, "inf.npz")
    s = load_scenario(write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": "tables/inf.npz"}))
    with pytest.raises(InputError, match=r"inf\.npz: gemm/bfloat16: column latency_ms"):
        sm.step_params(s, plan_deployment(s))


def test_a_kernel_tables_key_that_is_not_text_is_refused(tmp_path, capsys):
    path = write_scenario(tmp_path, "my-h100", H100 | {"kernel_tables": 3})
    assert main(["check", str(path)]) == 2
    assert "devices.my-h100.kernel_tables: 3; expected non-empty text" in capsys.readouterr().err


def test_two_files_for_one_key_do_not_share_a_cache_entry(tmp_path):
    one = copy_tables(tmp_path, {"gemm/bfloat16": GEMM}, "t.npz")
    first = load_user_tables(str(one))
    np.savez(one, **{"gemm/bfloat16": GEMM * [1, 1, 1, 3]})  # rewritten in place: a new version
    os.utime(one, ns=(1, 1))
    assert np.array_equal(load_user_tables(str(one))["gemm/bfloat16"][:, -1], 3 * first["gemm/bfloat16"][:, -1])


def test_a_sweep_cache_key_changes_with_the_tables_file(tmp_path):
    from simcost.analysis.sweep_cache import data_files
    one = copy_tables(tmp_path, {"gemm/bfloat16": GEMM}, "t.npz")
    raw = {"catalog": {"devices": {"my-h100": {"kernel_tables": str(one)}}}}
    before = data_files(raw)
    np.savez(one, **{"gemm/bfloat16": GEMM * [1, 1, 1, 3]})
    os.utime(one, ns=(1, 1))
    assert list(before) == [str(one)] and data_files(raw) != before


def test_relative_paths_follow_their_catalog_through_the_api_and_catalog_flag(tmp_path, monkeypatch):
    from simcost import api
    copy_tables(tmp_path)  # tmp_path/cat/tables/mine.npz
    (tmp_path / "cat" / "flag.yaml").write_text(yaml.safe_dump({"devices": {"flag-h100": H100 | {
        "kernel_tables": "tables/mine.npz"}}}))
    monkeypatch.chdir(tmp_path / "cat")  # a dict's own catalog section: relative to the working folder
    raw = yaml.safe_load(write_scenario(tmp_path, "dict-h100").read_text())
    raw["catalog"] = {"devices": {"dict-h100": H100 | {"kernel_tables": "tables/mine.npz"}}}
    expected = str(tmp_path / "cat" / "tables" / "mine.npz")
    for s in (api.load(raw), api.load(raw, catalog=[str(tmp_path / "cat" / "flag.yaml")])):
        assert s.catalog is not None and s.catalog.catalog.devices["dict-h100"].kernel_tables == expected
    monkeypatch.chdir(tmp_path)  # --catalog FILE: relative to that file
    s = load_scenario(write_scenario(tmp_path, "flag-h100"), catalog_files=["cat/flag.yaml"])
    assert plan_deployment(s).device.kernel_tables == expected


def test_rows_in_any_order_load_as_the_conversion_orders_them(tmp_path):
    shipped = load_tables("h100_sxm")
    rng = np.random.default_rng(7)
    shuffled = {k: v[rng.permutation(len(v))] for k, v in shipped.items()}
    loaded = load_user_tables(str(copy_tables(tmp_path, shuffled)))
    assert all(np.array_equal(loaded[k], shipped[k]) for k in shipped)


def test_the_roofline_fp8_factors_come_from_the_users_tables(tmp_path):
    """The roofline's fp8 mfu and mbu scale by what the device's fp8 GEMMs reach against bf16
    (format_efficiency_ratio): for a bundled key with the user's tables, from those."""
    slow_fp8 = {k: np.column_stack([v[:, :-1], (2.0 if k == "gemm/fp8" else 1.0) * v[:, -1]])
                for k, v in load_tables("h100_sxm").items()}
    copy_tables(tmp_path, slow_fp8)
    (tmp_path / "b").mkdir()
    fp8 = ["model.weight_format=fp8"]
    mine = load_scenario(write_scenario(tmp_path, "h100-sxm", H100 | {"kernel_tables": "tables/mine.npz"},
                                        perf="roofline"), fp8)
    ship = load_scenario(write_scenario(tmp_path / "b", "h100-sxm", perf="roofline"), fp8)
    f_mine, f_ship = (efficiency_factors(s, plan_deployment(s)) for s in (mine, ship))
    assert f_mine["mfu"] == pytest.approx(f_ship["mfu"] / 2, rel=1e-12)
    assert f_mine["mbu"] == pytest.approx(f_ship["mbu"] / 2, rel=1e-12)


def test_the_roofline_reads_the_users_tables_only_for_an_fp8_format(tmp_path, monkeypatch):
    """A 16-bit roofline run has nothing to take from them (an aiconfigurator folder converts in
    ~1.8 s), so it does not load them; an fp8 one does, for its GEMM ratio."""
    from simcost.perf import kernel_import

    copy_tables(tmp_path, load_tables("h100_sxm"))
    path = write_scenario(tmp_path, "h100-sxm", H100 | {"kernel_tables": "tables/mine.npz"}, perf="roofline")
    loads = []
    real = kernel_import.load_user_tables
    monkeypatch.setattr(kernel_import, "load_user_tables", lambda p: loads.append(p) or real(p))
    bf16 = load_scenario(path)
    efficiency_factors(bf16, plan_deployment(bf16))
    assert loads == []
    fp8 = load_scenario(path, ["model.weight_format=fp8"])
    efficiency_factors(fp8, plan_deployment(fp8))
    assert len(loads) == 1
