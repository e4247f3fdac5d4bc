"""The one experiment runner (metarec/experiment.py): one record layout and report for every family, resume
from the partial record, one merge."""

from __future__ import annotations

import json

import pytest

from metarec.errors import MetarecError
from metarec.experiment import Experiment, compare, family_of_record, merge


def _rec(family, label, seed, v):
    """A record shaped like the family's runner writes it (the result core, then the family's keys)."""
    r = {"method": label, "family": family, "protocol": {"rating": "user-cold"}.get(family, family),
         "dataset": "tiny", "seed": seed, "valid": {}, "best_epoch": 1, "train_seconds": 2.0, "history": [1, 2]}
    if family == "rating":
        return {**r, "label": label, "learner": label, "view": "explicit", "test": {"rmse": v, "tasks": 3},
                "valid": {"rmse": v + 1, "tasks": 2}}
    if family == "scenario":
        return {**r, "label": label, "scenarios": {"attribute": "genres"},
                "test": {"recall@10": v, "recall@20": v, "recall@50": v, "tasks": 2}}
    if family == "sequential":
        return {**r, "test": {f"{m}@{k}": v for m in ("recall", "mrr", "ndcg") for k in (5, 10, 20)}}
    return {**r, "phases": {p: {"auc": v, "logloss": 1 - v} for p in ("cold", "warm-a", "warm-b", "warm-c")},
            "test": {"auc@cold": v}}


FAMILIES = ("rating", "scenario", "sequential", "warmup")
VALUES = {0: {"A": 0.1, "B": 0.5}, 1: {"A": 0.3, "B": 0.7}}


def _experiment(family, calls=None, stop_after=None):
    extra = {"protocol_stats": {"dataset": "tiny", "items": 9}} if family == "sequential" else {}
    runs = []

    def records(seed, skip):
        if calls is not None:
            calls.append((seed, sorted(skip)))
        if family == "warmup":
            runs.append({"seed": seed, "config": {"warmup": {"threshold": 4.0, "old_min": 20, "k": 5, "min_test": 5,
                                                             "update": {"steps": 1, "lr": 0.01}}},
                         "split": {"old_items": 10, "new_items": 4}})
        for label in ("A", "B"):
            if label in skip:
                continue
            if stop_after is not None and len(calls or []) > stop_after:
                raise KeyboardInterrupt
            yield _rec(family, label, seed, VALUES[seed][label])

    return Experiment(family, {"rating": "user-cold"}.get(family, family), "tiny", records, extra=extra, runs=runs)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_layout_and_report_for_every_family(family, tmp_path, capsys):
    res = compare(_experiment(family), [0, 1], ["compare", "--protocol", family], tmp_path / "out")
    assert [(r["method"], r["seed"]) for r in res] == [("A", 0), ("B", 0), ("A", 1), ("B", 1)]
    blob = json.loads((tmp_path / "out.json").read_text())
    assert list(blob)[:5] == ["command", "code", "family", "protocol", "dataset"] and blob["family"] == family
    assert blob["command"] == f"metarec compare --protocol {family}"
    assert all("history" not in r and r["code"] == blob["code"] for r in blob["results"])
    md = (tmp_path / "out.md").read_text()
    assert md.startswith("# ") and f"`{blob['command']}`" in md
    assert "0.2000 ± 0.1000" in md and "0.6000 ± 0.1000" in md  # A over seeds 0, 1: (0.1, 0.3); B: (0.5, 0.7)
    assert not (tmp_path / "out.partial.json").exists()
    assert "seed 1 B:" in capsys.readouterr().out


def test_an_interrupted_compare_resumes_from_its_partial_record(tmp_path):
    calls: list = []
    argv = ["compare", "--learners", "A", "B"]
    with pytest.raises(KeyboardInterrupt):  # A of seed 0, B of seed 0, then stops inside seed 1
        compare(_experiment("rating", calls, stop_after=1), [0, 1], argv, tmp_path / "out")
    partial = json.loads((tmp_path / "out.partial.json").read_text())
    assert [(r["label"], r["seed"]) for r in partial["results"]] == [("A", 0), ("B", 0)]
    calls.clear()
    res = compare(_experiment("rating", calls), [0, 1], argv, tmp_path / "out")
    assert calls == [(0, ["A", "B"]), (1, [])]  # seed 0 not rerun
    assert [(r["label"], r["seed"]) for r in res] == [("A", 0), ("B", 0), ("A", 1), ("B", 1)]
    assert not (tmp_path / "out.partial.json").exists()
    calls.clear()  # another command does not take over the partial record of this one
    with pytest.raises(KeyboardInterrupt):
        compare(_experiment("rating", calls, stop_after=1), [0, 1], argv, tmp_path / "x")
    calls.clear()
    compare(_experiment("rating", calls), [0, 1], [*argv, "--other"], tmp_path / "x")
    assert calls == [(0, []), (1, [])]


@pytest.mark.parametrize("family", FAMILIES)
def test_merge_of_per_seed_records_gives_the_one_table(family, tmp_path):
    compare(_experiment(family), [0, 1], ["compare"], tmp_path / "both")
    for s in (0, 1):
        compare(_experiment(family), [s], ["compare", str(s)], tmp_path / f"s{s}")
    merged = merge([str(tmp_path / "s1.json"), str(tmp_path / "s0.json")], tmp_path / "m", ["merge"])
    assert [(r["method"], r["seed"]) for r in merged] == [("A", 0), ("B", 0), ("A", 1), ("B", 1)]
    table = lambda p: p.read_text()[p.read_text().index("\n|"):]  # noqa: E731 - the tables, not the provenance
    assert table(tmp_path / "m.md") == table(tmp_path / "both.md")
    blob = json.loads((tmp_path / "m.json").read_text())
    assert blob["commands"] == ["metarec compare 1", "metarec compare 0"] and blob["merged_by"] == "metarec merge"
    assert blob["family"] == family
    only = merge([str(tmp_path / "both.json")], tmp_path / "b", ["merge"], labels=["B"])
    assert {r["method"] for r in only} == {"B"}


def test_merge_refuses_what_cannot_be_one_table(tmp_path):
    compare(_experiment("rating"), [0], ["compare"], tmp_path / "r")
    compare(_experiment("scenario"), [0], ["compare"], tmp_path / "s")
    with pytest.raises(MetarecError, match="different protocol families"):
        merge([str(tmp_path / "r.json"), str(tmp_path / "s.json")], tmp_path / "m", ["merge"])
    with pytest.raises(MetarecError, match="present twice"):
        merge([str(tmp_path / "r.json"), str(tmp_path / "r.json")], tmp_path / "m", ["merge"])
    with pytest.raises(MetarecError, match="not in the records"):
        merge([str(tmp_path / "r.json")], tmp_path / "m", ["merge"], labels=["Z"])
    assert not (tmp_path / "m.json").exists()


def test_records_written_before_the_result_core_say_their_family():
    assert family_of_record({"scenarios": {}}, {}) == "scenario"
    assert family_of_record({"phases": {}}, {}) == "warmup"
    assert family_of_record({"learner": "bias"}, {"protocol": {"T": 1}}) == "sequential"  # old seqrec layout
    assert family_of_record({"learner": "bias"}, {}) == "rating"
    assert family_of_record({"family": "scenario"}, {}) == "scenario"


def test_merge_refuses_records_of_other_protocol_settings(tmp_path):
    def with_split(by):
        def records(seed, skip):
            r = _rec("rating", "A", seed, 0.1)
            r["run_config"] = {"split": {"by": by, "seed": seed}, "tasks": {"k_shot": 5, "seed": seed}}
            yield r
        return Experiment("rating", "user-cold", "tiny", records)

    compare(with_split("time"), [0], ["compare", "0"], tmp_path / "a")
    compare(with_split("time"), [1], ["compare", "1"], tmp_path / "b")  # another seed, the same settings
    compare(with_split("random"), [2], ["compare", "2"], tmp_path / "c")
    assert len(merge([str(tmp_path / "a.json"), str(tmp_path / "b.json")], tmp_path / "m", ["merge"])) == 2
    with pytest.raises(MetarecError, match=r"other protocol settings .*split.by: time -> random"):
        merge([str(tmp_path / "a.json"), str(tmp_path / "c.json")], tmp_path / "m2", ["merge"])
