"""The tasks protocol: explicit task files (metarec/task_files.py) read, checked and run end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from metarec.cli import main
from metarec.errors import MetarecError
from metarec.pipeline import make_config, prepare, train_and_evaluate
from metarec.task_files import read_task_file, task_file_split, write_task_file
from tests.conftest import synthetic_frames, write_atomic

# A hand-made split over the synthetic dataset's raw ids ("u0".., "i0.."). With both shrinkages at 0 the bias
# model is plain arithmetic: meta-train ratings 4,2,3 (u0), 2,4 (u1), 5 (u2's log) -> mu = 20/6;
# b(i0) = 3 - mu, b(i1) = 3 - mu, b(i2) = 4 - mu. The test newcomer u3 rates i0 5: offset 5 - mu - b(i0) = 2,
# so i1 -> 5 and i2 -> 6 against true 3 and 4: RMSE = MAE = 2.
HAND = {
    "tasks": [
        {"part": "train", "owner": "u0", "support": [["i0", 4], ["i1", 2]], "query": [["i2", 3]]},
        {"part": "train", "owner": "u1", "support": [{"item": "i0", "rating": 2}], "query": [["i1", 4]]},
        {"part": "valid", "owner": "u4", "support": [["i1", 1]], "query": [["i0", 2]]},
        {"part": "test", "owner": "u3", "support": [["i0", 5]], "query": [["i1", 3], ["i2", 4]]},
    ],
    "train_log": [["u2", "i2", 5]],
}
ZERO = {"learner.reg_item": 1e-9, "learner.reg_user": 0.0}  # 1e-9: items no one rated get 0, not 0/0


@pytest.fixture
def tiny_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return write_atomic(tmp_path / "tiny", "tiny", inter, users, items)


def _write(tmp_path, blob, name="split.json"):
    path = tmp_path / name
    path.write_text(json.dumps(blob))
    return path


def test_hand_made_split_gives_the_hand_computed_numbers(tmp_path, tiny_dir):
    path = _write(tmp_path, HAND)
    run, lcfg = make_config("bias", str(tiny_dir), "tasks", 0, "explicit", {**ZERO, "split.task_file": str(path)})
    prep = prepare(run)
    uid = prep.dataset.users["raw_id"].tolist()
    assert [(uid[t.owner], t.n_support, t.n_query) for t in prep.train] == [("u0", 2, 1), ("u1", 1, 1)]
    assert len(prep.valid) == 1 and len(prep.test) == 1
    assert len(prep.split.train) == 6  # the tasks' 5 pairs and the log's one
    res = train_and_evaluate(run, lcfg, prep=prep, progress=False)
    assert res["test"]["rmse"] == pytest.approx(2.0, abs=1e-5) and res["test"]["mae"] == pytest.approx(2.0, abs=1e-5)
    assert res["protocol"] == "tasks" and res["split"]["test_tasks"] == 1


def test_table_layouts_read_like_json(tmp_path, tiny_dir):
    rows = [(t["part"], t["owner"], *(p if isinstance(p, list) else (p["item"], p["rating"])), which)
            for t in HAND["tasks"] for which in ("support", "query") for p in t[which]]
    rows += [("train", u, i, r, "log") for u, i, r in HAND["train_log"]]
    table = pd.DataFrame(rows, columns=["part", "owner", "item", "rating", "set"])
    table.to_csv(tmp_path / "split.csv", index=False)
    table.astype({"rating": float}).to_parquet(tmp_path / "split.parquet")
    from metarec.data.registry import load_atomic

    ds = load_atomic(tiny_dir)
    want = task_file_split(ds, _write(tmp_path, HAND))[1]
    for name in ("split.csv", "split.parquet"):
        got = task_file_split(ds, tmp_path / name)[1]
        for part in want:
            assert [(t.owner, t.s_item.tolist(), t.q_item.tolist(), t.q_rating.tolist()) for t in got[part]] == \
                   [(t.owner, t.s_item.tolist(), t.q_item.tolist(), t.q_rating.tolist()) for t in want[part]]


@pytest.mark.parametrize("change, message", [
    (lambda b: b["tasks"][3]["query"].append(["i0", 1]) or b["tasks"][3].update(owner="u0"), "leakage"),
    (lambda b: b["tasks"][0].update(owner="nobody"), "not in"),
    (lambda b: b["tasks"][2].update(support=[]), "at least one support"),
    (lambda b: b["tasks"][2].update(part="dev"), "unknown part"),
    (lambda b: b["tasks"][0]["query"].__setitem__(0, ["i2", "x"]), "finite number"),
    (lambda b: b["tasks"].pop(2), "no valid task"),
    (lambda b: b.update(dataset="ml-1m"), "for dataset"),
])
def test_bad_task_files_stop_with_one_line(tmp_path, tiny_dir, change, message):
    from metarec.data.registry import load_atomic

    blob = json.loads(json.dumps(HAND))
    change(blob)
    with pytest.raises(MetarecError, match=message):
        task_file_split(load_atomic(tiny_dir), _write(tmp_path, blob))


def test_cli_train_on_a_task_file_and_its_errors(tmp_path, tiny_dir, capsys):
    path = _write(tmp_path, HAND)
    out = tmp_path / "run"
    assert main(["train", "--protocol", "tasks", "--task-file", str(path), "--dataset", str(tiny_dir), "--learner",
                 "bias", "--learner.reg_item=1e-9", "--learner.reg_user=0", "--out", str(out), "--quiet"]) == 0
    assert "rmse 2.0000" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["split"]["task_file"] == str(path.resolve())
    assert main(["evaluate", str(out)]) == 0 and "rmse 2.0000" in capsys.readouterr().out
    for argv, text in ((["train", "--protocol", "tasks", "--dataset", str(tiny_dir)], "--task-file"),
                       (["train", "--task-file", str(path), "--dataset", str(tiny_dir)], "--task-file"),
                       (["train", "--protocol", "tasks", "--task-file", str(tmp_path / "none.json"),
                         "--dataset", str(tiny_dir)], "no such task file")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and "\n" not in err


@pytest.mark.parametrize("learner", ["bias", "melu"])
def test_an_exported_split_runs_as_the_original(tmp_path, tiny_dir, learner):
    """write_task_file of a user-cold split, read back by the tasks protocol: the same tasks, the same numbers
    (a closed-form learner and a meta-trained one)."""
    over = {"train.epochs": 1} if learner == "melu" else {}
    run, lcfg = make_config(learner, str(tiny_dir), "user-cold", 0, "explicit", over)
    prep = prepare(run)
    path = tmp_path / "exported.json"
    write_task_file(path, prep.dataset, {"train": prep.train, "valid": prep.valid, "test": prep.test},
                    train_log=prep.split.train)
    df, named = read_task_file(path)
    assert named == prep.dataset.name and set(df["part"]) == {"train", "valid", "test"}
    run2, lcfg2 = make_config(learner, str(tiny_dir), "tasks", 0, "explicit", {**over, "split.task_file": str(path)})
    prep2 = prepare(run2)
    for a, b in ((prep.train, prep2.train), (prep.valid, prep2.valid), (prep.test, prep2.test)):
        assert [(t.owner, t.s_item.tolist(), t.q_item.tolist()) for t in a] == \
               [(t.owner, t.s_item.tolist(), t.q_item.tolist()) for t in b]
    assert len(prep2.split.train) == len(prep.split.train)
    want = train_and_evaluate(run, lcfg, prep=prep, progress=False)["test"]
    got = train_and_evaluate(run2, lcfg2, prep=prep2, progress=False)["test"]
    assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-6) and got["tasks"] == want["tasks"]
    assert np.isfinite(got["ndcg@3"])


def test_split_exports_what_train_reads_back(tmp_path, tiny_dir, capsys):
    path = tmp_path / "exported.json"
    assert main(["split", str(tiny_dir), "--protocol", "user-cold", "--export-tasks", str(path)]) == 0
    common = ["--dataset", str(tiny_dir), "--learner", "bias", "--quiet"]
    assert main(["train", "--protocol", "tasks", "--task-file", str(path), *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--protocol", "user-cold", *common, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["test"] for d in "ab")
    assert a == pytest.approx(b, rel=1e-6)


def test_implicit_view_reads_labels(tmp_path, tiny_dir):
    labels = json.loads(json.dumps(HAND))
    for t in labels["tasks"]:
        for which in ("support", "query"):
            t[which] = [[p[0], 1] if isinstance(p, list) else [p["item"], 1] for p in t[which]]
    labels["tasks"][0]["support"].append(["i5", 0])  # a labelled negative: dropped, negatives are sampled
    labels["train_log"] = [["u2", "i2", 1]]
    path = _write(tmp_path, labels)
    run, lcfg = make_config("itempop", str(tiny_dir), "tasks", 0, "implicit", {"split.task_file": str(path)})
    prep = prepare(run)
    assert prep.train[0].s_rating.tolist().count(1.0) == 2  # the two positives; i5 (0) dropped
    res = train_and_evaluate(run, lcfg, prep=prep, progress=False)
    assert 0.0 <= res["test"]["ndcg@10"] <= 1.0 and res["test"]["tasks"] == 1
    with pytest.raises(MetarecError, match="0/1 labels"):
        run, _ = make_config("itempop", str(tiny_dir), "tasks", 0, "implicit",
                             {"split.task_file": str(_write(tmp_path, HAND, "ratings.json"))})
        prepare(run)
