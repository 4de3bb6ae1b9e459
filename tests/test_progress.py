"""Long commands show one bar counting their simulations (tqdm.auto, so a notebook draws a
widget); --quiet and progress=False show none. Checked with a stand-in bar that records what it
was told, never by timing."""

from __future__ import annotations

import threading

import pytest
import yaml
from scenarios import BASE, scenario

from simcost.analysis.sizing import candidate_options, size
from simcost.cli.main import main
from simcost.simulation import progress as progress_mod


class RecordingBar:
    def __init__(self, created: list, iterable=None, **kwargs):
        self.iterable, self.kwargs, self.n = iterable, kwargs, 0
        created.append(self)

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description_str(self, text: str) -> None:
        self.kwargs["desc"] = text

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __iter__(self):
        for item in self.iterable:
            self.n += 1
            yield item


@pytest.fixture
def bars(monkeypatch):
    created: list[RecordingBar] = []
    monkeypatch.setattr(progress_mod, "_bar_class", lambda: lambda *a, **k: RecordingBar(created, *a, **k))
    return created


def test_size_counts_every_simulation_on_one_bar(bars):
    result = size(scenario(), candidate_options(["h100-sxm", "a100-80gb"]), max_replicas=2, progress=True)
    assert len(bars) == 1 and bars[0].kwargs["desc"] == "size" and bars[0].kwargs["disable"] is None  # off when not a TTY
    assert bars[0].n == result.total_simulations > 2  # the search, headroom and N+1/N+2: every run once


def test_no_bar_without_progress_or_with_quiet(bars, tmp_path, capsys):
    size(scenario(), candidate_options(["h100-sxm"]), max_replicas=1, progress=False, with_headroom=False)
    assert bars == []
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["size", str(path), "--devices", "h100-sxm", "--max-replicas", "1", "--jobs", "1", "-q",
                 "--out", str(tmp_path / "out")]) == 0
    assert bars == [] and capsys.readouterr().err == ""


def test_forecast_bar_knows_its_total(bars, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["forecast", str(path), "--months", "3", "--seeds", "2", "--growth", "1", "--step", "3:2", "--jobs", "1",
                 "--out", str(tmp_path / "fc")]) == 0
    forecast_bars = [b for b in bars if b.kwargs.get("desc") == "forecast"]
    # months 1 and 2 carry the same load, so they are the same 2 runs; month 3 doubles it: 4 distinct runs of 6
    assert len(forecast_bars) == 1 and forecast_bars[0].kwargs["total"] == 4 and forecast_bars[0].n == 4


def test_a_run_bar_says_it_is_summarizing_after_the_arrivals(bars):
    from simcost.simulation.simulation import Simulation

    sim = Simulation(scenario())
    sim.run(progress=True)
    assert len(bars) == 1 and bars[0].kwargs["total"] == len(sim.requests)
    assert bars[0].kwargs["desc"] == "summarizing"


def test_a_bar_starts_no_thread_that_a_later_fork_would_copy():
    """tqdm's own bars start a monitor thread for the life of the process; simcost's do not, so a
    sweep's workers and a run's figure process still fork from a single-threaded process."""
    before = {t.ident for t in threading.enumerate()}
    bar = progress_mod.new_bar(range(3), desc="runs", delay=1.0, leave=False, disable=None)
    assert list(bar) == [0, 1, 2]
    with progress_mod.new_bar(total=2, desc="sims", disable=False) as manual:  # drawn: stderr is captured
        manual.update(2)
    assert {t.ident for t in threading.enumerate()} == before
