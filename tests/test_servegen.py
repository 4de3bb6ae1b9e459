"""ServeGen per-client regeneration: the bundled files reproduce the README's facts; regenerated
counts match rate x 600 per (client, window) up to the documented rounding; time compression is an
exact rescale; within a window the gaps follow the fitted law's shape (KS, with a twin showing a
wrong shape is rejected); bad files fail at `file:line`; a `process: servegen` scenario runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scenarios import scenario
from scipy import stats

from simcost.errors import InputError
from simcost.rng import streams
from simcost.simulation.simulation import Simulation
from simcost.workload.arrivals import arrivals
from simcost.workload.servegen import (
    COLUMNS,
    SERVEGEN_BUNDLED,
    WINDOW_S,
    load_client_windows,
    servegen_arrivals,
    servegen_arrivals_with_clients,
    servegen_path,
)

P_MIN = 0.001  # fixed seeds: a pass is deterministic; the threshold documents the margin
SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
DAY_S = 86_400.0

# name: (rows, clients, requests in the day, aggregate req/s min, mean, max as README rounds them)
FACTS = {"servegen_mm_image": (2_094, 35, 818_610, 4.9, 9.5, 13.3),
         "servegen_deepseek_r1": (3_111, 73, 1_383_669, 4.3, 16.0, 42.5)}


def header() -> str:
    return ",".join(COLUMNS)


def windows_file(tmp_path, rows: list[str], name="sg.csv") -> str:
    path = tmp_path / name
    path.write_text("\n".join([header(), *rows]) + "\n")
    return str(path)


def per_window(windows, weights) -> np.ndarray:
    return np.bincount(windows.window_start_s // WINDOW_S, weights=weights, minlength=144)


@pytest.fixture(scope="module")
def mm_image():
    return load_client_windows("servegen_mm_image")


@pytest.fixture(scope="module")
def mm_image_day(mm_image):
    return servegen_arrivals(mm_image, DAY_S, np.random.default_rng(7))


# --- the bundled files ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FACTS))
def test_bundled_file_matches_readme(name):
    rows, clients, requests, low, mean, high = FACTS[name]
    windows = load_client_windows(name)
    assert len(windows) == rows and len(np.unique(windows.client_id)) == clients
    assert windows.window_start_s.min() == 0 and windows.end_s == DAY_S
    pairs = windows.client_id * 1000 + windows.window_start_s // WINDOW_S
    assert len(np.unique(pairs)) == rows  # one row per (client, window)
    assert round((windows.rate_per_s * WINDOW_S).sum()) == requests
    aggregate = per_window(windows, windows.rate_per_s)
    assert (round(aggregate.min(), 1), round(aggregate.mean(), 1), round(aggregate.max(), 1)) == (low, mean, high)


def test_first_row_and_sort_order(mm_image):
    # File line 2: 0,0,0.805,0.5697...,Gamma,3.0811...,0.3600...; rows are kept sorted by (window, client).
    assert (mm_image.client_id[0], mm_image.window_start_s[0], mm_image.rate_per_s[0]) == (0, 0, 0.805)
    assert not mm_image.iat_weibull[0] and mm_image.iat_shape[0] == pytest.approx(3.081101985437916)
    assert np.all(np.diff(mm_image.window_start_s) >= 0)
    with pytest.raises(ValueError):
        mm_image.rate_per_s[0] = 1.0  # cached and shared, so read-only


@pytest.mark.parametrize("name", sorted(SERVEGEN_BUNDLED))
def test_shipped_copies_are_byte_identical_to_shared(name):
    shared = SHARED_TRACES / SERVEGEN_BUNDLED[name]
    if not shared.exists():
        pytest.skip(f"{SHARED_TRACES} is absent (only present in the development checkout)")
    assert servegen_path(name).read_bytes() == shared.read_bytes()


def test_attribution_shipped():
    folder = servegen_path("servegen_mm_image").parent
    readme = (folder / "README.md").read_text()
    assert "alibaba/ServeGen" in readme and "2505.09999" in readme and "f891d1189eb3" in readme
    assert "servegen_deepseek_r1" in readme and "Apache License" in (folder / "LICENSE-Apache-2.0.txt").read_text()


def test_unknown_name_suggests_bundled():
    with pytest.raises(InputError) as err:
        load_client_windows("servegen_mm_imag")
    assert err.value.where == "workload.arrivals.servegen_file" and "servegen_mm_image" in err.value.problem


# --- counts ---------------------------------------------------------------------------------

def test_every_client_window_gets_its_rate_times_600(mm_image, mm_image_day):
    # Whole rate x 600 in this file: every (client, window) gets exactly that many, inside its window.
    times_s, client = mm_image_day.arrival_s, mm_image_day.client_id
    assert times_s.dtype == np.float64 and np.all(np.diff(times_s) >= 0) and times_s[0] >= 0 and times_s[-1] < DAY_S
    got = np.unique(client * 1000 + (times_s // WINDOW_S).astype(np.int64), return_counts=True)
    want = (mm_image.client_id * 1000 + mm_image.window_start_s // WINDOW_S, np.rint(mm_image.rate_per_s * WINDOW_S))
    order = np.argsort(want[0])
    np.testing.assert_array_equal(got[0], want[0][order])
    np.testing.assert_array_equal(got[1], want[1][order])


def test_fractional_counts_are_unbiased(mm_image):
    # x = 0.37 rate x 600 is fractional; n = floor(x) + Bernoulli(frac): each (client, window) gets
    # floor or ceil, and the day's total is sum(x) within 4 sd, sd^2 = sum f(1 - f). Always taking
    # the floor would be ~sum f ~ 1,000 low (~45 sd), so the test can fail.
    expected = mm_image.rate_per_s * WINDOW_S * 0.37
    frac = expected - np.floor(expected)
    sd = math.sqrt((frac * (1 - frac)).sum())
    totals = [len(servegen_arrivals(mm_image, DAY_S, np.random.default_rng(seed), rate_multiplier=0.37).arrival_s)
              for seed in range(4)]
    assert sd > 10 and frac.sum() > 40 * sd
    assert all(abs(total - expected.sum()) < 4 * sd for total in totals)
    assert abs(np.mean(totals) - expected.sum()) < 4 * sd / 2


def test_aggregate_rate_per_window_tracks_the_file(mm_image):
    # Compressed 60x with rate_multiplier 0.25: 10-s windows, each within 4 sd of its rounding noise.
    run = servegen_arrivals(mm_image, DAY_S / 60, np.random.default_rng(3), time_compression=60, rate_multiplier=0.25)
    got = np.bincount((run.arrival_s // (WINDOW_S / 60)).astype(np.int64), minlength=144)
    expected = mm_image.rate_per_s * WINDOW_S * 0.25
    frac = expected - np.floor(expected)
    want, var = per_window(mm_image, expected), per_window(mm_image, frac * (1 - frac))
    assert len(got) == 144 and np.all(np.abs(got - want) <= 4 * np.sqrt(var) + 1e-9)
    assert np.corrcoef(got, want)[0, 1] > 0.99  # the diurnal shape, 4.9 .. 13.3 req/s


def test_time_compression_is_an_exact_rescale(mm_image):
    start_s, span_s, factor = 36_000.0, 7_200.0, 60.0
    plain = servegen_arrivals(mm_image, span_s, np.random.default_rng(5), start_s=start_s)
    fast = servegen_arrivals(mm_image, span_s / factor, np.random.default_rng(5), start_s=start_s, time_compression=factor)
    assert len(plain.arrival_s) > 50_000 and plain.arrival_s[-1] < span_s
    np.testing.assert_array_equal(fast.arrival_s, plain.arrival_s / factor)
    np.testing.assert_array_equal(fast.client_id, plain.client_id)


def test_partial_windows_are_cut_not_rescaled(tmp_path):
    # One client at 1 req/s in windows 0 and 600: [300, 900) holds about half of each, 600 in all.
    path = windows_file(tmp_path, ["4,0,1.0,1.0,Gamma,1.0,1.0", "4,600,1.0,1.0,Gamma,1.0,1.0"])
    counts = [len(servegen_arrivals(load_client_windows(path), 600.0, np.random.default_rng(s), start_s=300.0).arrival_s)
              for s in range(200)]
    # Poisson given 600 per window: each half is Binomial(600, 1/2); the sum has sd sqrt(300).
    assert abs(np.mean(counts) - 600) < 4 * math.sqrt(300 / 200)


# --- client selection, span -----------------------------------------------------------------

def test_client_list_and_top_clients(mm_image):
    rng = np.random.default_rng(1)
    chosen = servegen_arrivals(mm_image, 3600.0, rng, clients=(0, 3))
    assert set(np.unique(chosen.client_id)) == {0, 3}
    mask = np.isin(mm_image.client_id, (0, 3)) & (mm_image.window_start_s < 3600)
    assert len(chosen.arrival_s) == round((mm_image.rate_per_s[mask] * WINDOW_S).sum())
    top = servegen_arrivals(mm_image, 3600.0, rng, top_clients=2)
    first_hour = mm_image.window_start_s < 3600
    totals = np.bincount(mm_image.client_id[first_hour], weights=mm_image.rate_per_s[first_hour])
    assert set(np.unique(top.client_id)) == set(np.argsort(-totals, kind="stable")[:2])


@pytest.mark.parametrize("kw, where, problem", [
    (dict(clients=(0, 999)), "workload.arrivals.clients[1]", "client 999 is not in"),
    (dict(top_clients=36), "workload.arrivals.top_clients", "has 35 clients"),
    (dict(start_s=80_000.0), "duration_s", "past the end"),
    (dict(time_compression=30.0), "duration_s", "past the end"),
])
def test_bad_selection_or_span(mm_image, kw, where, problem):
    with pytest.raises(InputError) as err:
        servegen_arrivals(mm_image, 7200.0, np.random.default_rng(0), **kw)
    assert err.value.where == where and problem in err.value.problem


# --- the law within a window ----------------------------------------------------------------

def one_window_gaps(tmp_path, dist, shape, n=20_000, seed=2) -> np.ndarray:
    path = windows_file(tmp_path, [f"1,0,{n / WINDOW_S!r},1.0,{dist},{shape},123.0"], name=f"{dist}{shape}.csv")
    times_s = servegen_arrivals(load_client_windows(path), WINDOW_S, np.random.default_rng(seed)).arrival_s
    assert len(times_s) == n
    gaps_s = np.diff(times_s)
    return gaps_s / gaps_s.mean()


def unit_mean(dist, shape):
    law = stats.gamma(a=shape) if dist == "Gamma" else stats.weibull_min(c=shape)
    return lambda x: law.cdf(np.asarray(x) * law.mean())


@pytest.mark.parametrize("dist, shape", [("Gamma", 0.5), ("Gamma", 3.0), ("Weibull", 0.7), ("Weibull", 1.8)])
def test_gaps_in_a_window_follow_the_fitted_shape(tmp_path, dist, shape):
    # The rescale keeps the shape and sets the scale: gaps / mean gap ~ law / its mean (scale 123 is ignored).
    gaps = one_window_gaps(tmp_path, dist, shape)
    assert stats.kstest(gaps, unit_mean(dist, shape)).pvalue > P_MIN
    assert stats.kstest(gaps, unit_mean(dist, shape * 1.1)).pvalue < P_MIN  # the test can fail


def test_tiny_shapes_stay_finite_and_inside_their_window(tmp_path):
    # Fitted shapes reach 0.01: Gamma(0.01) underflows and Weibull(0.01) overflows without log-space draws.
    path = windows_file(tmp_path, ["1,0,2.0,10.0,Gamma,0.01,1.0", "2,0,2.0,10.0,Weibull,0.01,1.0",
                                   "1,600,0.01,10.0,Gamma,0.01,1.0"])
    for seed in range(20):
        run = servegen_arrivals(load_client_windows(path), 1200.0, np.random.default_rng(seed))
        assert len(run.arrival_s) == 1200 + 1200 + 6 and np.all(np.isfinite(run.arrival_s))
        assert np.all(run.arrival_s[run.client_id == 2] < WINDOW_S)


# --- bad files ------------------------------------------------------------------------------

GOOD = "0,0,1.5,1.2,Gamma,0.7,0.9"
BAD_FILES = {
    "missing_column": ("client_id,window_start_s,rate_rps,iat_cv,iat_dist,iat_shape\n0,0,1,1,Gamma,1\n", 1,
                       ["missing column iat_scale"]),
    "negative_rate": (f"{GOOD}\n1,0,-0.5,1.2,Gamma,0.7,0.9", 3, ["rate_rps is -0.5", ">= 0"]),
    "unknown_dist": (f"{GOOD}\n1,0,0.5,1.2,Gama,0.7,0.9", 3, ["iat_dist 'Gama'", "Gamma or Weibull", "closest: Gamma"]),
    "zero_shape": (f"{GOOD}\n0,600,0.5,1.2,Weibull,0,0.9", 3, ["iat_shape is 0.0", "> 0"]),
    "negative_scale": ("0,0,0.5,1.2,Weibull,1.0,-2", 2, ["iat_scale is -2.0", "> 0"]),
    "window_not_multiple": (f"{GOOD}\n0,650,0.5,1.2,Gamma,0.7,0.9", 3, ["window_start_s 650", "multiple of 600"]),
    "window_fraction": (f"{GOOD}\n0,600.0,0.5,1.2,Gamma,0.7,0.9", 3, ["window_start_s '600.0'", "whole number"]),
    "duplicate": (f"{GOOD}\n1,0,0.5,1.2,Gamma,0.7,0.9\n0,0,2.5,1.2,Gamma,0.7,0.9", 4,
                  ["client 0, window 0 s", "already on line 2"]),
    "not_a_number": (f"{GOOD}\n0,600,fast,1.2,Gamma,0.7,0.9", 3, ["rate_rps 'fast' is not a number"]),
    "not_finite": (f"{GOOD}\n0,600,nan,1.2,Gamma,0.7,0.9", 3, ["rate_rps 'nan' is not finite"]),
    "short_row": (f"{GOOD}\n0,600,1.0,1.2,Gamma,0.7", 3, ["6 fields, expected 7"]),
    # a blank line is skipped, and a later bad row is still named by its line in the file
    "after_blank_line": (f"{GOOD}\n\n\n0,600,-1.0,1.2,Gamma,0.7,0.9", 5, ["rate_rps is -1.0"]),
    "duplicate_after_blank_line": (f"{GOOD}\n\n0,0,2.5,1.2,Gamma,0.7,0.9", 4, ["already on line 2"]),
    "negative_client": ("-1,0,1.0,1.2,Gamma,0.7,0.9", 2, ["client_id is -1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_names_file_and_line(tmp_path, case):
    body, line, fragments = BAD_FILES[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(body if body.startswith("client_id") else f"{header()}\n{body}\n")
    with pytest.raises(InputError) as err:
        load_client_windows(str(path))
    assert err.value.where == f"{path}:{line}", str(err.value)
    assert all(f in err.value.problem for f in fragments), str(err.value)


def test_blank_lines_and_crlf_are_skipped(tmp_path):
    rows = [GOOD, "0,600,1.0,1.2,Gamma,0.7,0.9"]
    plain, gappy = tmp_path / "plain.csv", tmp_path / "gappy.csv"
    plain.write_text("\n".join([header(), *rows]) + "\n")
    gappy.write_bytes(("\r\n".join([header(), "", rows[0], "  ", rows[1]]) + "\r\n\r\n").encode())
    a, b = load_client_windows(str(plain)), load_client_windows(str(gappy))
    assert len(a.client_id) == len(b.client_id) == 2
    assert all(np.array_equal(getattr(a, name), getattr(b, name))
               for name in ("client_id", "window_start_s", "rate_per_s", "iat_cv", "iat_shape", "iat_scale"))


@pytest.mark.parametrize("text, line, fragment", [("", 1, "empty file"), ("\n\n", 1, "empty file"),
                                                  (header() + "\n", 2, "header only"),
                                                  (header() + "\r\n\r\n", 2, "header only")])
def test_empty_files(tmp_path, text, line, fragment):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_client_windows(str(path))
    assert err.value.where == f"{path}:{line}" and fragment in err.value.problem


# --- scenarios ------------------------------------------------------------------------------

SG = {"process": "servegen", "servegen_file": "servegen_mm_image", "time_compression": 60.0,
      "rate_multiplier": 0.01, "start_s": 43_200.0}
LENGTHS = {"input_tokens": {"dist": "fixed", "value": 200}, "output_tokens": {"dist": "fixed", "value": 20}}


def test_scenario_with_servegen_validates_and_runs():
    sc = scenario(duration_s=120.0, warmup_s=0.0, workload={"arrivals": SG, **LENGTHS})
    spec = sc.workload.arrivals
    assert (spec.process, spec.time_compression, spec.start_s) == ("servegen", 60.0, 43_200.0)
    times_s = arrivals(spec, 120.0, streams(sc.seed).arrivals)
    with_clients = servegen_arrivals_with_clients(spec, 120.0, streams(sc.seed).arrivals)
    np.testing.assert_array_equal(times_s, with_clients.arrival_s)  # same draws, plus the client ids
    assert len(with_clients.client_id) == len(times_s) and len(np.unique(with_clients.client_id)) > 10
    # 12:00-14:00 of the file at 0.01 x 60 = 0.6 x its rate: ~9.5 req/s x 0.6 x 120 s
    assert 400 < len(times_s) < 1200
    result = Simulation(sc).run()  # the run's arrivals stream gives the same times
    assert result.summary["requests"]["arrived"] == len(times_s)


@pytest.mark.parametrize("extra, where, problem", [
    ({"servegen_file": None}, "servegen_file", "missing"),
    ({"clients": [1, 2], "top_clients": 2}, "top_clients", "given with clients"),
    ({"clients": []}, "clients", "empty"),
    ({"clients": [3, 3]}, "clients[1]", "listed twice"),
    ({"time_compression": 0.5}, "time_compression", ">= 1"),
    ({"rate_per_s": 2.0}, "rate_per_s", "not used by process 'servegen'"),
])
def test_bad_servegen_config_names_the_key(extra, where, problem):
    kw = {k: v for k, v in {**SG, **extra}.items() if v is not None}
    with pytest.raises(InputError) as err:
        scenario(workload={"arrivals": kw, **LENGTHS})
    assert err.value.where == f"workload.arrivals.{where}" and problem in err.value.problem


def test_bundled_scenario_loads():
    from simcost.scenario.scenario import load_scenario
    path = Path(__file__).resolve().parents[1] / "configs" / "scenarios" / "servegen_day_mm_image.yaml"
    sc = load_scenario(path)
    spec = sc.workload.arrivals
    assert spec.process == "servegen" and sc.duration_s * spec.time_compression == DAY_S
