"""`metarec warmup` end to end on a tiny atomic dataset: the files it writes and its one-line errors."""

import json

import pytest

from metarec.cli import main
from tests.conftest import write_atomic
from tests.ctr.warmup_data import warmup_frames

FAST = ["--quiet", "--warmup.old_min=100", "--warmup.k=5", "--warmup.min_test=5", "--backbone.epochs=1",
        "--backbone.emb_dim=4", "--backbone.hidden=[8]", "--backbone.batch_size=128", "--train.epochs=1"]


@pytest.fixture
def data_dir(tmp_path):
    return str(write_atomic(tmp_path / "toy", "toy", *warmup_frames()).parent)


def test_warmup_writes_markdown_and_json(data_dir, tmp_path, capsys):
    stem = tmp_path / "out" / "warm"
    code = main(["warmup", "--dataset", data_dir, "--methods", "base", "mean", "metaemb", "mwuf", "--seeds", "0", "1",
                 "--out", str(stem), *FAST])
    assert code == 0, capsys.readouterr().err
    md = stem.with_suffix(".md").read_text()
    for needle in ("| base", "| mean", "| metaemb", "| mwuf", "warm-c", "±", "AUC", "log-loss"):
        assert needle in md
    data = json.loads(stem.with_suffix(".json").read_text())
    assert len(data["results"]) == 8 and data["command"].startswith("metarec warmup")
    r = data["results"][0]
    assert set(r["phases"]) == {"cold", "warm-a", "warm-b", "warm-c"}
    assert set(r["phases"]["cold"]) == {"auc", "logloss"}
    assert data["runs"][0]["config"]["warmup"]["k"] == 5
    meta = [r for r in data["results"] if r["method"] == "metaemb"]
    assert meta[0]["train"]["tasks_per_s"] > 0
    assert sorted(p.name for p in stem.parent.iterdir()) == ["warm.json", "warm.md"]  # nothing half-written


@pytest.mark.parametrize("argv,needle", [
    (["--methods", "base", "nope"], "unknown warm-up method(s) nope"),
    (["--methods", "base", "base"], "must not repeat"),
    (["--warmup.kk=3"], "unknown config key 'warmup.kk'"),
    (["--warmup.old_min=10000"], "0 old items"),
])
def test_bad_warmup_arguments(argv, needle, data_dir, capsys):
    assert main(["warmup", "--dataset", data_dir, *FAST, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


def test_unknown_dataset(capsys):
    assert main(["warmup", "--dataset", "nope-1m", "--quiet"]) == 2
    assert "unknown dataset 'nope-1m'" in capsys.readouterr().err


def test_warmup_seeds_run_apart_merge_into_the_one_run(data_dir, tmp_path, capsys):
    """The one merge takes warm-up records too: seeds run as separate processes give the one run's table."""
    base = ["warmup", "--dataset", data_dir, "--methods", "base", "mean", *FAST]
    assert main([*base, "--seeds", "0", "1", "--out", str(tmp_path / "both")]) == 0
    for s in ("0", "1"):
        assert main([*base, "--seeds", s, "--out", str(tmp_path / f"s{s}")]) == 0
    assert main(["merge", "--protocol", "warmup", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"),
                 "--out", str(tmp_path / "merged")]) == 0, capsys.readouterr().err
    table = lambda p: p.read_text().split("AUC (higher", 1)[1]  # noqa: E731 - the tables, not the provenance
    assert table(tmp_path / "merged.md") == table(tmp_path / "both.md")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["family"] == "warmup" and [r["seed"] for r in merged["runs"]] == [0, 1]
