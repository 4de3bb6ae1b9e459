"""Single output files appear whole or not at all (simcost.files.staged_file), and the commands
that write one (trace inspect --json/--plot, calibrate --out, report --out) use it."""

from __future__ import annotations

import pytest

from simcost.errors import InputError
from simcost.files import staged_file


def test_success_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with staged_file(target, "--json") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the writer finished
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("failure", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_a_failed_writer_leaves_the_old_file_and_no_folders(tmp_path, failure):
    target = tmp_path / "old.yaml"
    target.write_text("kept")
    with pytest.raises(type(failure)):
        with staged_file(target, "--out") as tmp:
            tmp.write_text("half")
            raise failure
    assert target.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["old.yaml"]
    nested = tmp_path / "a" / "b" / "new.png"
    with pytest.raises(type(failure)):
        with staged_file(nested, "--plot") as tmp:
            raise failure
    assert not (tmp_path / "a").exists()  # the folders made for it went too


def test_a_folder_in_the_way_is_one_input_error(tmp_path):
    (tmp_path / "report.html").mkdir()
    with pytest.raises(InputError) as err:
        with staged_file(tmp_path / "report.html", "--out"):
            pass
    assert err.value.where == "--out" and "is a folder" in err.value.problem


def test_an_os_error_while_writing_is_an_input_error_with_nothing_left(tmp_path):
    target = tmp_path / "x.csv"
    with pytest.raises(InputError) as err:
        with staged_file(target, "--out"):
            raise OSError(28, "No space left on device")
    assert "nothing written" in err.value.problem and not list(tmp_path.iterdir())


def test_trace_inspect_json_into_a_folder_fails_cleanly(tmp_path, capsys):
    from simcost.cli.main import main

    (tmp_path / "info.json").mkdir()
    status = main(["trace", "inspect", "azure_code", "--json", str(tmp_path / "info.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "info.json is a folder" in err[0]
    assert [p.name for p in tmp_path.iterdir()] == ["info.json"] and not any((tmp_path / "info.json").iterdir())
