"""Calibration: reading measurements, fitting the roofline's factors, profiles a scenario names."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from simcost.cli.main import main
from simcost.errors import InputError
from simcost.perf.calibrate import Pair, error_summary, fit_factors, fit_warnings, predict_s, write_profile
from simcost.perf.deployment import plan_deployment
from simcost.perf.measurements import StepPoint, load_profile, read_points
from simcost.perf.roofline import roofline_params
from simcost.perf.step_model import step_params
from simcost.perf.step_params import P_PREFILL_OVERHEAD_S, P_PREFILL_REQUEST_S
from simcost.scenario.scenario import scenario_from_dict

# the Splitwise measurements ship inside the package (MIT notice beside them); a test checks the
# copy against ../shared where that is present
SPLITWISE_CSV = Path(__file__).resolve().parents[1] / "simcost" / "data" / "calibration" / "splitwise_llama2-70b_a100-80gb.csv"
SHARED_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "calibration" / SPLITWISE_CSV.name
GENERIC_HEADER = ["kind", "batch_size", "prompt_tokens", "context_tokens", "tensor_parallel", "step_time_ms"]
TRUE_FACTORS = {"mfu": 0.52, "mbu": 0.71, "step_overhead_s": 0.0123, "allreduce_latency_s": 4.2e-5,
                "prefill_overhead_s": 0.0047, "attention_efficiency": 0.35, "prefill_request_s": 0.012}


def synthetic_points(pair: Pair, factors: dict, degrees=(2, 4, 8)) -> list[StepPoint]:
    """Prefill and decode settings whose times come from the model itself (batched prefills
    included, so that the per-request cost can be told from the per-step one)."""
    shapes = ([("prefill", b, n, 0.0) for b in (1, 4) for n in (128, 512, 2048, 8192)]
              + [("decode", b, 0, c) for b in (1, 8, 64, 256) for c in (256.0, 2048.0)])
    points = [StepPoint(kind, b, n, c, tp, 1.0, 1, "synthetic") for tp in degrees for kind, b, n, c in shapes]
    times = predict_s(pair, points, factors)
    return [StepPoint(pt.kind, pt.batch_size, pt.prompt_tokens, pt.context_tokens, pt.tensor_parallel, t, 1,
                      "synthetic") for pt, t in zip(points, times)]


def write_generic(path: Path, points: list[StepPoint]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(GENERIC_HEADER)
        for pt in points:
            w.writerow([pt.kind, pt.batch_size, pt.prompt_tokens, pt.context_tokens, pt.tensor_parallel,
                        repr(float(pt.step_time_s * 1e3))])
    return path


# --- fitting --------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["linear", "soft_l1"])
def test_fit_recovers_the_factors_that_generated_the_data(tmp_path, loss):
    pair = Pair.of("a100-80gb", "llama-2-70b")
    path = write_generic(tmp_path / "steps.csv", synthetic_points(pair, TRUE_FACTORS))
    fit = fit_factors(pair, read_points(path, "a100-80gb", "llama-2-70b"), loss)
    assert fit.fixed == ()
    for name, value in TRUE_FACTORS.items():
        assert fit.factors[name] == pytest.approx(value, rel=1e-6), name
    assert np.max(np.abs(fit.predicted_s / fit.measured_s - 1)) < 1e-9


def test_one_tensor_parallel_degree_holds_the_allreduce_latency():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    fit = fit_factors(pair, synthetic_points(pair, TRUE_FACTORS, degrees=(4,)))
    assert fit.fixed == ("allreduce_latency_s",) and "tensor-parallel" in fit.why_fixed
    assert fit.factors["allreduce_latency_s"] == pair.device.allreduce_latency_s


def test_decode_only_data_holds_the_prefill_factors():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    # decode steps have attention FLOPs too, so the data is made with the held (neutral) attention value
    true = dict(TRUE_FACTORS, attention_efficiency=1.0)
    decode = [pt for pt in synthetic_points(pair, true) if pt.kind == "decode"]
    fit = fit_factors(pair, decode)
    assert fit.fixed == ("prefill_overhead_s", "attention_efficiency", "prefill_request_s")
    assert "prefill and decode" in fit.reasons["prefill_overhead_s"] and "prompt lengths" in fit.reasons["attention_efficiency"]
    assert fit.factors["attention_efficiency"] == 1.0 and fit.factors["prefill_overhead_s"] == 0.0
    assert fit.factors["prefill_request_s"] == 0.0
    for name in ("mfu", "mbu", "step_overhead_s", "allreduce_latency_s"):
        assert fit.factors[name] == pytest.approx(TRUE_FACTORS[name], rel=1e-6), name


def test_single_prompt_prefills_hold_the_prefill_request_cost():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    # with one prompt per step the per-request cost is one more constant per prefill step: the data
    # is made without it, and the fit must hold it at its neutral value rather than split the sum
    true = dict(TRUE_FACTORS, prefill_request_s=0.0)
    single = [pt for pt in synthetic_points(pair, true) if pt.kind == "decode" or pt.batch_size == 1]
    fit = fit_factors(pair, single)
    assert fit.fixed == ("prefill_request_s",)
    assert "batch size 2 or more" in fit.reasons["prefill_request_s"]
    assert fit.factors["prefill_request_s"] == 0.0
    for name, value in true.items():
        assert fit.factors[name] == pytest.approx(value, rel=1e-6), name


def test_predicted_batched_prefill_pays_the_request_cost_per_prompt():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    shapes = [StepPoint("prefill", b, 512, 0.0, 4, 1.0, 1, "x") for b in (1, 4)] + [StepPoint("decode", 4, 0, 600.0, 4, 1.0, 1, "x")]
    base = predict_s(pair, shapes, dict(TRUE_FACTORS, prefill_request_s=0.0))
    more = predict_s(pair, shapes, TRUE_FACTORS)
    np.testing.assert_allclose(more - base, [0.012, 4 * 0.012, 0.0], rtol=1e-9, atol=1e-15)


def test_splitwise_layout_gives_a_prefill_and_a_decode_point_per_setting():
    points = read_points(SPLITWISE_CSV, "a100-80gb", "llama-2-70b", (4,))
    assert {pt.tensor_parallel for pt in points} == {4}
    shared = [pt for pt in points if pt.batch_size == 1 and pt.prompt_tokens == 512 and pt.kind == "prefill"]
    # prefill does not depend on token_size: the 512/1 prefill is 15 rows at 128 plus 5 at each of 6 others
    assert len(shared) == 1 and shared[0].repeats == 15 + 6 * 5
    decode = [pt for pt in points if pt.kind == "decode" and pt.batch_size == 64]
    assert decode[0].context_tokens == 512 + 128 / 2
    assert len(points) == 13 + 19  # 13 prefill settings; decode also varies with token_size


def _held_out_errors():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    fit = fit_factors(pair, read_points(SPLITWISE_CSV, "a100-80gb", "llama-2-70b", (4,)))
    held_out = read_points(SPLITWISE_CSV, "a100-80gb", "llama-2-70b", (2, 8))
    return error_summary(held_out, predict_s(pair, held_out, fit.factors))


def test_held_out_decode_error_on_real_a100_data():
    assert _held_out_errors()["decode"]["median_abs_pct"] <= 10.0


@pytest.mark.xfail(reason="measured: fitted on TP4, the TP2/TP8 prefill median |error| is 12.4 % (13.8 % before "
                          "prefill_request_s, 20.6 % before prefill_overhead_s and attention_efficiency). Splitwise's "
                          "batched prefills at TP4/TP8 run 17-41 % slower than the same prompts one per step but TP2's "
                          "do not, and per-token cost falls only ~2x from TP2 to TP8; one TP degree cannot reveal how "
                          "these costs scale with TP. See experiments/validate_perf_model.py", strict=True)
def test_held_out_prefill_error_on_real_a100_data():
    assert _held_out_errors()["prefill"]["median_abs_pct"] <= 10.0


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, where, problem", [
    ("a,b\n1,2\n", "bad.csv:1", "match neither layout"),
    ("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\nprefill,1,512,0,4,12.5\n"
     "prefil,1,512,0,4,12.5\n", "bad.csv:3", "expected prefill or decode"),
    ("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\ndecode,2.5,0,10,4,12.5\n",
     "bad.csv:2", "batch_size = '2.5'; expected a whole number"),
    ("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\ndecode,2,0,10,4,abc\n",
     "bad.csv:2", "step_time_ms = 'abc'"),
    ("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\ndecode,2,0,10,4,-1\n",
     "bad.csv:2", "step_time_ms = '-1'"),
    ("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\ndecode,2,0,10,4,5,9\n",
     "bad.csv:2", "more fields"),
    ("model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n"
     "llama2-70b,a100-80gb,512,1,128,196.2,,2\n", "bad.csv:2", "token_time = ''"),
    ("model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel\n"
     "llama2-7b,a100-80gb,512,1,128,196.2,50,2\n", "bad.csv", "no rows for llama-2-70b"),
])
def test_bad_csv_names_file_and_line(tmp_path, text, where, problem):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError) as exc:
        read_points(path, "a100-80gb", "llama-2-70b")
    assert exc.value.where == where and problem in exc.value.problem


def test_unknown_device_is_an_input_error():
    with pytest.raises(InputError, match="--device: unknown device 'a100'"):
        Pair.of("a100", "llama-2-70b")


# --- profiles -------------------------------------------------------------------------------

def scenario(profile=None, device="a100-80gb", **perf):
    raw = {"duration_s": 10.0,
           "workload": {"arrivals": {"process": "poisson", "rate_per_s": 1.0},
                        "input_tokens": {"dist": "fixed", "value": 128},
                        "output_tokens": {"dist": "fixed", "value": 16}},
           "model": {"name": "llama-2-70b"},
           "hardware": {"device": device, "tensor_parallel": 4},
           "perf": dict(perf, **({"profile": str(profile)} if profile else {}))}
    return scenario_from_dict(raw)


def profile_of(tmp_path) -> Path:
    pair = Pair.of("a100-80gb", "llama-2-70b")
    data = write_generic(tmp_path / "steps.csv", synthetic_points(pair, TRUE_FACTORS))
    points = read_points(data, "a100-80gb", "llama-2-70b")
    write_profile(tmp_path / "profile.yaml", pair, fit_factors(pair, points, "linear"), points, data)
    return tmp_path / "profile.yaml"


def test_scenario_with_a_profile_uses_its_factors(tmp_path):
    path = profile_of(tmp_path)
    saved = yaml.safe_load(path.read_text())
    assert saved["device"] == "a100-80gb" and len(saved["data"]["sha256"]) == 64
    assert saved["fit"]["error"]["all"]["worst_abs_pct"] < 1e-6
    sc = scenario(path)
    dep = plan_deployment(sc)
    want = roofline_params(dep.device, dep.model, 4, dep.compute_format, dep.weight_bytes, dep.kv_cache_format,
                           **load_profile(path, "a100-80gb", "llama-2-70b"))
    np.testing.assert_allclose(step_params(sc, dep), want)
    assert step_params(sc, dep)[6] == pytest.approx(312e12 * TRUE_FACTORS["mfu"], rel=1e-6)
    assert saved["factors"]["prefill_request_s"] == pytest.approx(TRUE_FACTORS["prefill_request_s"], rel=1e-5)
    assert step_params(sc, dep)[P_PREFILL_REQUEST_S] == saved["factors"]["prefill_request_s"]
    # a factor set in the scenario still wins over the profile
    assert step_params(scenario(path, mfu=0.3), dep)[6] == pytest.approx(312e12 * 0.3)


def test_profile_for_another_device_carries_its_efficiencies_but_not_its_link_latency(tmp_path):
    path = profile_of(tmp_path)
    sc = scenario(path, device="h100-sxm")
    with pytest.warns(UserWarning, match="calibrated on 'a100-80gb'.*allreduce_latency_s stays"):
        carried = load_profile(path, "h100-sxm", "llama-2-70b")
    assert carried["mfu"] == pytest.approx(TRUE_FACTORS["mfu"], rel=1e-6) and "allreduce_latency_s" not in carried
    with pytest.warns(UserWarning):
        p = step_params(sc, plan_deployment(sc))
    assert p[6] == pytest.approx(989e12 * carried["mfu"], rel=1e-6)  # h100's bf16 peak at the A100-fitted mfu
    with pytest.warns(UserWarning, match="none of its factors carry"):
        assert load_profile(path, "xeon-8480", "llama-2-70b") == {}


def test_profile_without_the_newer_factors_keeps_their_defaults(tmp_path):
    path = profile_of(tmp_path)
    saved = yaml.safe_load(path.read_text())
    for name in ("prefill_overhead_s", "attention_efficiency", "prefill_request_s"):
        del saved["factors"][name]
    path.write_text(yaml.safe_dump(saved))
    factors = load_profile(path, "a100-80gb", "llama-2-70b")
    assert "attention_efficiency" not in factors and factors["mfu"] == pytest.approx(TRUE_FACTORS["mfu"], rel=1e-6)
    sc = scenario(path)
    p = step_params(sc, plan_deployment(sc))
    assert p[P_PREFILL_OVERHEAD_S] == 0.0 and p[P_PREFILL_REQUEST_S] == 0.0  # the neutral defaults


def test_held_out_prefill_error_improved_by_the_prefill_terms():
    # regression guard for the measured 12.4 % (13.8 % without prefill_request_s, 20.6 % with four factors)
    assert _held_out_errors()["prefill"]["median_abs_pct"] <= 13.0


def test_missing_profile_is_an_input_error(tmp_path):
    sc = scenario(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="perf.profile: cannot read profile"):
        step_params(sc, plan_deployment(sc))


# --- command line ---------------------------------------------------------------------------

def test_calibrate_command_prints_errors_and_writes_a_profile(tmp_path, capsys):
    out = tmp_path / "a100.yaml"
    assert main(["calibrate", str(SPLITWISE_CSV), "--device", "a100-80gb", "--model", "llama-2-70b",
                 "--tensor-parallel", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "measured_ms" in text and "prefill: median |error|" in text and "held: allreduce_latency_s" in text
    assert yaml.safe_load(out.read_text())["data"]["tensor_parallel"] == [4]


def test_calibrate_command_bad_csv_is_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "m.csv"
    bad.write_text("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\nprefill,x,1,0,1,3\n")
    assert main(["calibrate", str(bad), "--device", "a100-80gb", "--model", "llama-2-70b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("simcost: error: m.csv:2: batch_size")


@pytest.mark.skipif(not SHARED_CSV.exists(), reason="../shared is absent (only beside the development checkout and CI)")
def test_shipped_measurements_are_the_shared_copy():
    assert SPLITWISE_CSV.read_bytes() == SHARED_CSV.read_bytes()


# --- names in measurement files and what the command tells the user -------------------------

def _splitwise_copy(tmp_path: Path, hardware: str, model: str = "llama2-70b") -> Path:
    rows = list(csv.reader(SPLITWISE_CSV.read_text().splitlines()))
    out = tmp_path / "renamed.csv"
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rows[0])
        for row in rows[1:]:
            w.writerow([model, hardware] + row[2:])
    return out


def test_rows_match_a_catalog_alias_or_the_names_given(tmp_path):
    # Splitwise calls the H100 SXM "h100-80gb": the catalog lists it as an alias of h100-sxm
    renamed = _splitwise_copy(tmp_path, "h100-80gb")
    assert len(read_points(renamed, "h100-sxm", "llama-2-70b")) == len(read_points(SPLITWISE_CSV, "a100-80gb", "llama-2-70b"))
    custom = _splitwise_copy(tmp_path, "DGX-H100 node", model="L2-70B")
    with pytest.raises(InputError, match=r"the file has L2-70B on DGX-H100 node \(name them with --model-name / --hardware\)"):
        read_points(custom, "h100-sxm", "llama-2-70b")
    points = read_points(custom, "h100-sxm", "llama-2-70b", hardware_name="dgx-h100 node", model_name="L2-70B")
    assert {pt.tensor_parallel for pt in points} == {2, 4, 8}


def test_missing_tensor_parallel_degree_names_those_present():
    with pytest.raises(InputError, match=r"at tensor_parallel \[3\]; the file has tensor_parallel \[2, 4, 8\]"):
        read_points(SPLITWISE_CSV, "a100-80gb", "llama-2-70b", (3,))


def test_calibrate_command_checks_fix_and_warns_of_factors_at_their_bounds(capsys):
    assert main(["calibrate", str(SPLITWISE_CSV), "--device", "a100-80gb", "--model", "llama-2-70b",
                 "--fix", "mfx"]) == 2
    assert "--fix: unknown factor 'mfx' (closest: mfu)" in capsys.readouterr().err
    # TP2 alone needs more than the A100's peak bandwidth unless the step overhead takes the rest
    assert main(["calibrate", str(SPLITWISE_CSV), "--device", "a100-80gb", "--model", "llama-2-70b",
                 "--tensor-parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "warning: mbu = 1 is at its upper bound" in out


def test_fit_warnings_flag_a_poor_fit_and_stay_quiet_on_a_good_one():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    points = synthetic_points(pair, TRUE_FACTORS)
    assert fit_warnings(fit_factors(pair, points)) == []
    scrambled = [StepPoint(pt.kind, pt.batch_size, pt.prompt_tokens, pt.context_tokens, pt.tensor_parallel,
                           pt.step_time_s * (3.0 if i % 2 else 0.3), pt.repeats, pt.where) for i, pt in enumerate(points)]
    assert any("describes these measurements poorly" in w for w in fit_warnings(fit_factors(pair, scrambled)))


@pytest.mark.parametrize("text", [
    # a spreadsheet's export: byte-order mark, spaces around names, a semicolon or tab delimiter
    "\ufeffkind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\n{rows}",
    " kind , batch_size ,prompt_tokens,context_tokens,tensor_parallel, step_time_ms \n{rows}",
    "kind;batch_size;prompt_tokens;context_tokens;tensor_parallel;step_time_ms\n{semi}",
    "kind\tbatch_size\tprompt_tokens\tcontext_tokens\ttensor_parallel\tstep_time_ms\n{tab}",
])
def test_spreadsheet_exports_read_as_the_plain_layout(tmp_path, text):
    rows = "prefill,2,512,0,4,250.5\ndecode,8,0,600,4,45.25\n"
    plain = tmp_path / "plain.csv"
    plain.write_text("kind,batch_size,prompt_tokens,context_tokens,tensor_parallel,step_time_ms\n" + rows)
    other = tmp_path / "other.csv"
    other.write_text(text.format(rows=rows, semi=rows.replace(",", ";"), tab=rows.replace(",", "\t")), encoding="utf-8")
    assert read_points(other, "a100-80gb", "llama-2-70b") == [
        StepPoint(**{**pt.__dict__, "where": pt.where.replace("plain", "other")}) for pt in read_points(plain, "a100-80gb", "llama-2-70b")]


def test_profile_goes_to_a_new_folder_and_an_unwritable_path_is_one_line(tmp_path, capsys):
    out = tmp_path / "new" / "folder" / "profile.yaml"
    args = ["calibrate", str(SPLITWISE_CSV), "--device", "a100-80gb", "--model", "llama-2-70b", "--tensor-parallel", "4"]
    assert main(args + ["--out", str(out)]) == 0 and out.is_file()
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    assert main(args + ["--out", str(blocked / "profile.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: cannot write" in err


def test_too_few_points_for_the_free_factors_is_flagged():
    pair = Pair.of("a100-80gb", "llama-2-70b")
    points = [pt for pt in synthetic_points(pair, TRUE_FACTORS, degrees=(4,)) if pt.batch_size == 1][:2]
    assert any("underdetermined" in w for w in fit_warnings(fit_factors(pair, points)))
