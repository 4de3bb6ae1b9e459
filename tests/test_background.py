"""The figure process of `simcost run`: jobs done in a forked child, a failed figure reported by
name without losing the run's other files, and no child left behind after an error or Ctrl-C."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from simcost.cli.main import main
from simcost.results import run_figures, writer
from simcost.results.background import Background, BackgroundFailure

EXAMPLE = ["configs/example.yaml", "--set", "duration_s=30", "--set", "warmup_s=5", "--quiet"]


def write_text(path, text):
    with open(path, "w") as fh:
        fh.write(text)
    return os.getpid()


def write_pid(path, sleep_s=0.0):
    path.write_text(str(os.getpid()))
    time.sleep(sleep_s)


def write_loaded(path, module):
    path.write_text(str(module in sys.modules))


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def fail(*args):
    raise ValueError("no such colour")


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_jobs_run_in_the_child_and_a_failure_is_named(tmp_path):
    with Background() as side:
        side.run([("a.txt", write_text, (tmp_path / "a.txt", "a")), ("b.png", fail, ()),
                  ("c.txt", write_text, (tmp_path / "c.txt", "c"))])
        with pytest.raises(BackgroundFailure) as failed:
            side.wait()
    assert set(failed.value.failures) == {"b.png"} and "ValueError: no such colour" in str(failed.value)
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "c.txt").read_text() == "c"
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the second drawer is Linux only")
def test_jobs_are_split_between_the_child_and_its_helper(tmp_path):
    """Every other job goes to a second process (two figures drawn at once); all are done."""
    with Background() as side:
        side.run([(name, write_pid, (tmp_path / name,)) for name in "abcd"])
        side.wait()
    pid = {name: int((tmp_path / name).read_text()) for name in "abcd"}
    assert pid["a"] == pid["c"] != pid["b"] == pid["d"] and os.getpid() not in pid.values()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the second drawer is Linux only")
def test_the_helper_dies_with_the_child(tmp_path):
    """Closing before the jobs are done (Ctrl-C) kills the child; its helper must not draw on."""
    side = Background()
    side.run([("a", write_pid, (tmp_path / "a", 60.0)), ("b", write_pid, (tmp_path / "b", 60.0))])
    while not (tmp_path / "b").exists() or not (tmp_path / "b").read_text():
        time.sleep(0.01)
    helper = int((tmp_path / "b").read_text())
    side.close()
    for _ in range(1000):  # SIGKILL on the child's death: gone at once, but give a busy machine time
        if not alive(helper):
            break
        time.sleep(0.01)
    else:
        pytest.fail(f"helper {helper} outlived its child")


def test_the_child_writes_parquet_without_pandas(tmp_path):
    """pyarrow would import pandas on its first array (~0.2 s of CPU); the child refuses it (in a
    fresh interpreter: a test session may have pandas loaded before the fork)."""
    pytest.importorskip("pyarrow")
    probe = ("import sys, pyarrow as pa\n"
             "from simcost.results.background import Background\n"
             "from tests.test_background import write_loaded\n"
             "from pathlib import Path\n"
             "with Background() as side:\n"
             f"    side.run([('a', write_loaded, (Path({str(tmp_path / 'a')!r}), 'pandas'))])\n"
             "    side.wait()\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a").read_text() == "False"


def test_without_a_child_the_same_jobs_run_in_process(tmp_path):
    side = Background(enabled=False)
    assert not side.forked
    side.run([("a.txt", write_text, (tmp_path / "a.txt", "a")), ("b.png", fail, ())])
    with pytest.raises(BackgroundFailure, match="b.png: ValueError"):
        side.wait()
    assert (tmp_path / "a.txt").read_text() == "a"


def test_a_child_given_nothing_ends_when_closed():
    side = Background()
    side.close()
    assert multiprocessing.active_children() == []


def pid_bytes(text):
    return f"{text} {os.getpid()}".encode()


def test_an_early_figure_is_drawn_before_its_path_is_known(tmp_path):
    """`early` draws in the child and keeps the bytes; the job that names the file writes them
    there, in the process that drew them, and an early failure is reported under its file's name
    when that file is asked for. On Linux every other early figure, from the first, goes to the
    child's helper, so two early figures are drawn side by side."""
    with Background() as side:
        side.early("a.png", pid_bytes, ("early a",))
        side.early("b.png", pid_bytes, ("early b",))
        side.early("e.png", fail, ())
        assert side.drawn_early("a.png") and side.drawn_early("e.png") and not side.drawn_early("c.png")
        side.run([("a.png", None, (tmp_path / "a.png",)), ("b.png", None, (tmp_path / "b.png",)),
                  ("e.png", None, (tmp_path / "e.png",)),
                  ("c.txt", write_pid, (tmp_path / "c.txt",)), ("d.txt", write_pid, (tmp_path / "d.txt",))])
        with pytest.raises(BackgroundFailure) as failed:
            side.wait()
    assert set(failed.value.failures) == {"e.png"} and "ValueError: no such colour" in str(failed.value)
    drawer = {}
    for name in ("a", "b"):
        text, pid = (tmp_path / f"{name}.png").read_text().rsplit(" ", 1)
        assert text == f"early {name}"
        drawer[name] = int(pid)
    child = drawer["b"]
    assert child != os.getpid() and not (tmp_path / "e.png").exists()
    assert int((tmp_path / "c.txt").read_text()) == child  # the child draws one of the two left
    if sys.platform.startswith("linux"):  # its helper the other, and the first early figure
        helper = int((tmp_path / "d.txt").read_text())
        assert helper not in (child, os.getpid()) and drawer["a"] == helper
    else:
        assert drawer["a"] == child
    assert multiprocessing.active_children() == []


def test_prepare_runs_in_the_child_and_its_answer_comes_back_once(tmp_path):
    with Background(prepare=functools.partial(pid_bytes, "prepared")) as side:
        text, pid = side.prepared().decode().rsplit(" ", 1)
        assert text == "prepared" and int(pid) not in (0, os.getpid())
        assert side.prepared() is None  # once
        side.run([("a.txt", write_pid, (tmp_path / "a.txt",))])
        side.wait()
    assert (tmp_path / "a.txt").exists() and multiprocessing.active_children() == []


@pytest.mark.parametrize("asked", [True, False])
def test_a_failed_or_unread_preparation_leaves_the_jobs_alone(tmp_path, asked):
    """A `prepare` that raises answers None (the parent does the work itself); one nobody asks
    for (an answer bigger than a pipe's buffer, so the child waits to hand it over) is read and
    dropped before the jobs, whose answer `wait` reads."""
    prepare = fail if asked else functools.partial(bytes, 1 << 20)
    with Background(prepare=prepare) as side:
        if asked:
            assert side.prepared() is None
        side.early("a.png", pid_bytes, ("early a",))
        side.run([("a.png", None, (tmp_path / "a.png",)), ("b.png", fail, ())])
        with pytest.raises(BackgroundFailure) as failed:
            side.wait()
    assert set(failed.value.failures) == {"b.png"} and (tmp_path / "a.png").read_text().startswith("early a")
    assert Background(enabled=False, prepare=prepare).prepared() is None


def test_simcost_run_parses_its_trace_in_the_figure_process(tmp_path, monkeypatch):
    """The Mooncake trace is parsed by the child while this process loads numba's target; this
    process adopts it and never parses it (without a child, it parses it itself), and the run's
    files are the same either way."""
    from simcost.workload import traces

    parsed, real_parse = [], traces._parse_file
    monkeypatch.setattr(traces, "_parsed", type(traces._parsed)())
    monkeypatch.setattr(traces, "_parse_file", lambda *key: parsed.append(os.getpid()) or real_parse(*key))
    run = ["run", "configs/scenarios/mooncake_conv_8b_h100.yaml", "--set", "duration_s=20", "--set", "warmup_s=0",
           "--quiet", "--request-records", "full"]
    assert main([*run, "--out", str(tmp_path / "forked")]) == 0
    forked = Background()
    expected = forked.forked
    forked.close()
    assert parsed == ([] if expected else [os.getpid()])
    monkeypatch.setattr(traces, "_parsed", type(traces._parsed)())
    monkeypatch.setattr("simcost.results.background._can_fork", lambda: False)
    assert main([*run, "--out", str(tmp_path / "alone")]) == 0
    assert parsed[-1] == os.getpid()
    for name in ("summary.json", "requests.csv", "focus.csv"):
        assert (tmp_path / "forked" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes(), name


def test_without_a_child_nothing_is_drawn_early(tmp_path):
    side = Background(enabled=False)
    side.early("a.png", pid_bytes, ("early a",))
    assert not side.drawn_early("a.png")  # so the run's jobs draw it in full, as before


def test_simcost_run_hands_both_figures_over_before_the_folder(tmp_path, monkeypatch):
    """`simcost run` (with a figure process) has latency.png and timeseries.png drawn early: by
    the time the folder's jobs are made, both are only to be written."""
    asked = {}
    made = writer.side_jobs

    def spy(result, paths, focus, drawn_early):
        asked.update({name: drawn_early(name) for name in ("latency.png", "timeseries.png")})
        return made(result, paths, focus, drawn_early)

    monkeypatch.setattr(writer, "side_jobs", spy)
    assert main(["run", *EXAMPLE, "--out", str(tmp_path / "run")]) == 0
    forked = Background()
    expected = forked.forked
    forked.close()
    assert asked == {"latency.png": expected, "timeseries.png": expected}
    assert (tmp_path / "run" / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "run" / "timeseries.png").stat().st_size > 0


@pytest.mark.parametrize("stage", ["early", "late"])
def test_a_failed_figure_keeps_the_run_and_says_which(tmp_path, monkeypatch, capsys, stage):
    """Drawn early (the figure process's `EarlyFigures`) or with the other files (without one)."""
    if stage == "early":
        monkeypatch.setattr(run_figures, "latency_png", fail)
    else:
        monkeypatch.setattr(run_figures, "EarlyFigures", lambda background: None)
        monkeypatch.setattr(run_figures, "latency_png", fail)
    out = tmp_path / "run"
    (out).mkdir()
    (out / "latency.png").write_bytes(b"an earlier run's")  # must not pass for this run's figure
    assert main(["run", *EXAMPLE, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "latency.png: ValueError: no such colour" in err and str(out) in err and err.count("\n") == 1
    assert not (out / "latency.png").exists()
    assert json.loads((out / "summary.json").read_text())["requests"]["arrived"] > 0
    assert (out / "requests.csv").exists() and (out / "focus.csv").exists()
    assert multiprocessing.active_children() == []


def test_ctrl_c_while_writing_ends_the_child_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_timeseries", interrupted)  # while the child draws
    out = tmp_path / "deep" / "run"
    assert main(["run", *EXAMPLE, "--out", str(out)]) == 130
    assert not (tmp_path / "deep").exists() and multiprocessing.active_children() == []


def test_an_early_figure_for_a_dead_child_does_not_stop_the_run(tmp_path):
    """A child killed before the run ends (out of memory?): handing it a figure must not raise in
    the middle of the simulation's result; the files it should have drawn are reported."""
    side = Background()
    side._process.kill()
    side._process.join()
    side.early("a.png", pid_bytes, ("early a",))  # a broken pipe, swallowed (or a buffered send)
    side.run([("a.png", None, (tmp_path / "a.png",))])
    with pytest.raises(BackgroundFailure, match="a.png"):
        side.wait()
    side.close()
