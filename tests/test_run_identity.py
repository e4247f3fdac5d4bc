"""Issue 18, points 1 and 2: one run identity (a stale checkpoint is never reused) and model files that
cannot run code (``torch.load(weights_only=True)``)."""

import json

import pytest
import torch

from metarec.cli import main
from tests.conftest import synthetic_frames, write_atomic

FAST = ["--split.by=random", "--tasks.min_inter=14", "--train.epochs=2", "--quiet"]


class Payload:
    """Unpickling this object calls ``open(marker, "w")``: the file appears only if the pickle is executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def data_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return str(write_atomic(tmp_path / "toy", "toy", inter, users, items).parent)


def one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("metarec: error: ") and needle in err, err
    assert "Traceback" not in err
    return err


def train(data_dir, out, *extra):
    return main(["train", "--learner", "melu", "--dataset", data_dir, "--out", str(out), *FAST, *extra])


def test_the_payload_is_real(tmp_path):
    """The test's premise: an unrestricted unpickling of this file runs the payload."""
    marker = tmp_path / "pwned"
    torch.save({"learner": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_a_malicious_model_file_is_refused_unread(tmp_path, capsys):
    marker, run = tmp_path / "pwned", tmp_path / "run"
    run.mkdir()
    torch.save({"learner": "melu", "config": Payload(marker), "state": {}}, run / "model.pt")
    assert main(["evaluate", str(run)]) == 2
    one_line_error(capsys, "not a metarec model file (it holds objects other than tensors and plain data")
    assert main(["scenario", "evaluate", str(run)]) == 2
    one_line_error(capsys, "not a metarec model file")
    assert not marker.exists()


def test_a_malicious_checkpoint_is_refused_on_resume(data_dir, tmp_path, capsys):
    marker, run = tmp_path / "pwned", tmp_path / "run"
    run.mkdir()
    torch.save({"model": Payload(marker), "config": {}}, run / "checkpoint.pt")
    assert train(data_dir, run) == 2
    one_line_error(capsys, "checkpoint.pt: not a metarec checkpoint file (it holds objects other than tensors")
    assert not marker.exists()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # nothing written beside it


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, json.dumps({"learner": "melu"}).encode()])
def test_garbage_model_files_give_one_line(tmp_path, capsys, content):
    (tmp_path / "model.pt").write_bytes(content)
    assert main(["evaluate", str(tmp_path / "model.pt")]) == 2
    one_line_error(capsys, "not a metarec model file")


def test_a_stale_checkpoint_is_never_reused(data_dir, tmp_path, capsys):
    """The issue's scenario at tiny scale: the same command with another inner rate must not resume the first
    run's checkpoint (it trained nothing and reported the old model under the new setting)."""
    a, fresh = tmp_path / "a", tmp_path / "fresh"
    assert train(data_dir, a, "--learner.inner.lr=1e-3") == 0
    assert (a / "checkpoint.pt").is_file()
    capsys.readouterr()
    assert train(data_dir, a, "--learner.inner.lr=1e-2") == 2
    err = one_line_error(capsys, "holds a run with other settings: learner.inner.lr 0.001 -> 0.01")
    assert "use --restart or another --out" in err
    assert json.loads((a / "results.json").read_text())["learner_config"]["inner"]["lr"] == 0.001  # untouched
    for other in ("--split.seed=1", "--tasks.seed=3", "--train.lr=1e-3"):
        assert train(data_dir, a, "--learner.inner.lr=1e-3", other) == 2
        key = other[2:].split("=")[0]
        one_line_error(capsys, key.replace("split.", "run.split.").replace("tasks.", "run.tasks."))
    # --restart trains the new setting from scratch: the same numbers as a fresh directory
    assert train(data_dir, a, "--learner.inner.lr=1e-2", "--restart") == 0
    assert train(data_dir, fresh, "--learner.inner.lr=1e-2") == 0
    ra, rf = (json.loads((d / "results.json").read_text()) for d in (a, fresh))
    assert ra["learner_config"]["inner"]["lr"] == 0.01
    assert ra["test"] == rf["test"] and ra["history"] == rf["history"]


def test_same_settings_resume_and_say_so(data_dir, tmp_path, capsys):
    a = tmp_path / "a"
    assert train(data_dir, a) == 0
    first = json.loads((a / "results.json").read_text())
    capsys.readouterr()
    assert train(data_dir, a) == 0
    err = capsys.readouterr().err
    assert "resuming" in err and "2 of 2 epochs done" in err
    again = json.loads((a / "results.json").read_text())
    assert again["test"] == first["test"] and again["history"] == first["history"]


def test_evaluate_refuses_changed_data(data_dir, tmp_path, capsys):
    from pathlib import Path

    run = tmp_path / "run"
    assert train(data_dir, run) == 0
    inter = Path(data_dir) / "toy.inter"
    lines = inter.read_text().splitlines()
    f = lines[5].split("\t")
    f[2] = "5" if f[2] != "5" else "1"  # one rating changed
    lines[5] = "\t".join(f)
    inter.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    one_line_error(capsys, "changed since this model was trained; use --allow-changed-data")
    assert main(["evaluate", str(run), "--allow-changed-data"]) == 0
    assert "warning: the data" in capsys.readouterr().err


def test_scenario_evaluate_refuses_a_train_model(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(data_dir, run) == 0
    capsys.readouterr()
    assert main(["scenario", "evaluate", str(run)]) == 2
    one_line_error(capsys, "not a model of `metarec scenario train`")
