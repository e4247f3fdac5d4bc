"""Issue 18 points 6 and 7: the CLI's last line of defence and the misreportings."""

import json
import os
from pathlib import Path

import pytest

import metarec.commands
from metarec.cli import main
from tests.conftest import synthetic_frames, write_atomic

FAST = ["--split.by=random", "--tasks.min_inter=14", "--train.epochs=1", "--quiet"]


@pytest.fixture
def data_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return str(write_atomic(tmp_path / "toy", "toy", inter, users, items).parent)


def _boom(args, extra):
    raise ZeroDivisionError("a bug\nwith two lines")


def test_an_internal_error_is_one_line_with_a_saved_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(metarec.commands, "cmd_learners", _boom)
    assert main(["learners"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metarec: internal error: ZeroDivisionError: a bug with two lines")
    path = Path(err.split("traceback in ")[1].split(",")[0])
    assert path.is_file() and path.is_relative_to(tmp_path / "home" / "logs")  # METAREC_HOME/logs
    assert "Traceback" in path.read_text() and "_boom" in path.read_text()


def test_debug_raises_the_real_exception(monkeypatch):
    monkeypatch.setattr(metarec.commands, "cmd_learners", _boom)
    with pytest.raises(ZeroDivisionError):
        main(["learners", "--debug"])
    monkeypatch.setenv("METAREC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["learners"])


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["split", "x", "--seed", "abc"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metarec: error: argument --seed: invalid int value")


def test_an_unusable_out_stops_before_training(data_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--learner", "bias", "--dataset", data_dir, "--out", str(blocker / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write there" in err


def test_the_seeds_that_ran_are_printed_and_recorded(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--learner", "melu", "--dataset", data_dir, "--out", str(out), "--train.seed=1",
                 *FAST]) == 0
    assert "seeds split 0, tasks 0, train 1" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == {"split": 0, "tasks": 0, "train": 1} and res["run_config"]["train"]["seed"] == 1


def test_a_protocol_given_twice_must_agree(data_dir, capsys):
    assert main(["train", "--dataset", data_dir, "--protocol", "user-cold", "--split.protocol=warm", *FAST]) == 2
    assert "--protocol user-cold and the config's warm disagree" in capsys.readouterr().err


def test_dataset_paths_are_recorded_absolute(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(data_dir).parent)
    out = tmp_path / "run"
    assert main(["train", "--learner", "bias", "--dataset", "toy", "--out", str(out), *FAST]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["run_config"]["dataset"] == str(Path(data_dir).resolve())
    monkeypatch.chdir(tmp_path / "home" if (tmp_path / "home").is_dir() else "/")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0  # from another folder
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res["test"]


def test_unknown_dataset_names_real_flags(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["split", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--log" not in err and "--user-col and --item-col" in err


def test_train_help_mentions_the_overrides(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--section.field=value" in text and "--restart" in text


def test_select_not_measured_is_one_line(data_dir, tmp_path, capsys):
    assert main(["train", "--learner", "melu", "--dataset", data_dir, "--out", str(tmp_path / "r"),
                 "--train.select=auc", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.select 'auc' is not measured" in err
    assert os.path.exists(tmp_path / "r")  # the folder was checked, and nothing but it was made
    assert not (tmp_path / "r" / "model.pt").exists()
