"""train / evaluate / compare / curve / learners through the command line, on a tiny atomic dataset."""

import json

import pytest

from metarec.cli import main
from tests.conftest import synthetic_frames, write_atomic

FAST = ["--split.by=random", "--tasks.min_inter=14", "--train.epochs=2", "--quiet"]


@pytest.fixture
def data_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return str(write_atomic(tmp_path / "toy", "toy", inter, users, items).parent)


def test_learners_lists_the_registry(capsys):
    from metarec.learners.registry import LEARNERS
    assert main(["learners"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in LEARNERS)


def test_train_then_evaluate_gives_the_same_numbers(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--learner", "melu", "--dataset", data_dir, "--out", str(out), *FAST]) == 0
    res = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again == res["test"]


def test_compare_writes_markdown_and_json(data_dir, tmp_path, capsys):
    stem = tmp_path / "cmp"
    code = main(["compare", "--dataset", data_dir, "--learners", "bias", "itempop", "melu@learner.inner.lr=1e-2",
                 "--seeds", "0", "1", "--out", str(stem), *FAST])
    assert code == 0, capsys.readouterr().err
    md = (stem.with_suffix(".md")).read_text()
    assert "| bias" in md and "| melu@learner.inner.lr=1e-2" in md and "±" in md
    data = json.loads(stem.with_suffix(".json").read_text())
    assert len(data["results"]) == 6 and data["command"].startswith("metarec compare")
    assert not stem.with_suffix(".partial.json").exists()  # removed once every run is in the final record
    melu = [r for r in data["results"] if r["learner"] == "melu"]
    assert all(r["learner_config"]["inner"]["lr"] == 0.01 for r in melu)


def test_compare_valid_table_reports_the_selection_data(data_dir, tmp_path, capsys):
    stem = tmp_path / "sel"
    assert main(["compare", "--dataset", data_dir, "--learners", "bias", "--seeds", "0", "--valid",
                 "--out", str(stem), *FAST]) == 0, capsys.readouterr().err
    md = stem.with_suffix(".md").read_text()
    test_part, valid_part = md.split("Meta-valid tasks")
    res = json.loads(stem.with_suffix(".json").read_text())["results"][0]
    assert f"{res['test']['rmse']:.4f}" in test_part and f"{res['valid']['rmse']:.4f}" in valid_part
    assert f"| {res['valid']['tasks']}" in valid_part and "valid tasks" in valid_part


def test_compare_checks_every_entry_before_training(data_dir, tmp_path, capsys):
    stem = tmp_path / "cmp"
    code = main(["compare", "--dataset", data_dir, "--learners", "bias", "melu@learner.nope=1", "--seeds", "0",
                 "--out", str(stem), *FAST])
    assert code == 2 and "unknown config key 'learner.nope'" in capsys.readouterr().err
    assert not list(tmp_path.glob("cmp*"))  # nothing trained, nothing written


def test_compare_keeps_finished_runs_when_a_later_one_fails(data_dir, tmp_path, capsys, monkeypatch):
    import metarec.pipeline
    from metarec.errors import MetarecError

    real = metarec.pipeline.train_and_evaluate

    def failing(run, *a, **k):
        if run.learner == "melu":
            raise MetarecError("simulated failure of a later run")
        return real(run, *a, **k)

    monkeypatch.setattr(metarec.pipeline, "train_and_evaluate", failing)
    stem = tmp_path / "cmp"
    code = main(["compare", "--dataset", data_dir, "--learners", "bias", "melu", "--seeds", "0",
                 "--out", str(stem), *FAST])
    assert code == 2 and "simulated failure" in capsys.readouterr().err
    partial = json.loads(stem.with_suffix(".partial.json").read_text())
    assert [r["learner"] for r in partial["results"]] == ["bias"] and partial["code"]
    assert not stem.with_suffix(".json").exists() and not stem.with_suffix(".md").exists()


def test_merge_of_per_seed_records_equals_one_compare(data_dir, tmp_path, capsys):
    common = ["--dataset", data_dir, "--learners", "bias", "noadapt", *FAST]
    assert main(["compare", "--seeds", "0", "1", "--out", str(tmp_path / "both"), *common]) == 0
    for s in ("0", "1"):
        assert main(["compare", "--seeds", s, "--out", str(tmp_path / f"s{s}"), *common]) == 0
    assert main(["merge", str(tmp_path / "s1.json"), str(tmp_path / "s0.json"), "--out", str(tmp_path / "m")]) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    merged = json.loads((tmp_path / "m.json").read_text())
    key = lambda r: (r["label"], r["seed"], json.dumps(r["test"], sort_keys=True))  # noqa: E731
    assert [key(r) for r in merged["results"]] == [key(r) for r in both["results"]]
    assert len(merged["commands"]) == 2 and merged["codes"] and merged["merged_by"].startswith("metarec merge")
    assert "Merged by `metarec merge" in (tmp_path / "m.md").read_text()
    table = lambda p: p.read_text().split("| learner")[1]  # noqa: E731
    assert table(tmp_path / "m.md") == table(tmp_path / "both.md")
    capsys.readouterr()
    # the same (learner, seed) twice, or records of different runs, are refused with one line
    assert main(["merge", str(tmp_path / "s0.json"), str(tmp_path / "both.json"), "--out", str(tmp_path / "x")]) == 2
    assert "present twice" in capsys.readouterr().err
    other = json.loads((tmp_path / "s0.json").read_text())
    for r in other["results"]:
        r["view"] = "implicit"
    (tmp_path / "o.json").write_text(json.dumps(other))
    assert main(["merge", str(tmp_path / "s1.json"), str(tmp_path / "o.json"), "--out", str(tmp_path / "x")]) == 2
    assert "different runs" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main(["merge", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")]) == 2
    assert "not a `metarec compare` record" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_curve_writes_a_png(data_dir, tmp_path):
    stem = tmp_path / "curve"
    assert main(["curve", "--dataset", data_dir, "--learners", "bias", "noadapt", "--seeds", "0", "--ks", "1", "3",
                 "--out", str(stem), *FAST]) == 0
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = json.loads(stem.with_suffix(".json").read_text())
    assert [k for k, _, _ in rec["curves"]["bias"]] == [1, 3] and rec["code"]
    stem.with_suffix(".png").unlink()
    assert main(["curve", "--replot", str(stem.with_suffix(".json"))]) == 0  # redraw only, from the record
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(stem.with_suffix(".json").read_text()) == rec


@pytest.mark.parametrize("argv,needle", [
    (["train", "--learner", "nope"], "unknown learner 'nope'"),
    (["train", "--train.epoch=3"], "unknown config key 'train.epoch'"),
    (["train", "--train.epochs=many"], "takes a number"),
    (["train", "--view", "both"], "unknown view"),
    (["evaluate", "missing.pt"], "no such checkpoint"),
    (["compare", "--learners", "melu@lr"], "overrides look like"),
    (["train", "--config", "missing.yaml"], "no such config file"),
])
def test_bad_run_arguments(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


def test_overrides_parse_numbers_like_a_user_writes_them():
    from metarec.config import apply_overrides
    from metarec.engine.train import TrainConfig
    cfg = apply_overrides(TrainConfig(), {"lr": "1e-3", "epochs": "7", "clip": "5", "select": "mae"})
    assert cfg.lr == 1e-3 and cfg.epochs == 7 and cfg.clip == 5.0 and cfg.select == "mae"
    assert isinstance(cfg.epochs, int)
