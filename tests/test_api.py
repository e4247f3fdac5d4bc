"""metarec.run: the Python mirror of `metarec train --protocol P --learner L`, one call per family."""

from __future__ import annotations

import json

import pytest
import torch

import metarec
from metarec.errors import MetarecError
from tests.conftest import synthetic_frames, write_atomic


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(write_atomic(tmp_path_factory.mktemp("api"), "tiny", *synthetic_frames()))


def test_rating_run_returns_the_model_it_saved(data_dir, tmp_path, capsys):
    from metarec.cli import main

    r = metarec.run("bias", "user-cold", data_dir, 0, out=tmp_path / "run")
    assert r.out == tmp_path / "run" and (r.out / "model.pt").is_file()
    assert r.result["protocol"] == "user-cold" and r.model.name == "bias"
    # the same numbers as the command line
    assert main(["train", "--learner", "bias", "--dataset", data_dir, "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert cli["test"] == r.result["test"]


def test_without_out_nothing_is_left_behind_and_the_model_adapts(data_dir):
    from metarec.pipeline import make_config, prepare
    from metarec.tasks import collate

    r = metarec.run("melu", "user-cold", data_dir, 0, overrides={"train.epochs": 1})
    assert r.out is None
    prep = prepare(make_config("melu", data_dir, "user-cold", 0, "explicit", {"train.epochs": 1})[0])
    b = collate(prep.test[:3])
    with torch.no_grad():
        scores = r.model.adapt(b).score(b.q_user, b.q_item)
    assert scores.shape == b.q_item.shape and torch.isfinite(scores).all()


def test_sequential_run(data_dir):
    r = metarec.run("sasrec", "sequential", data_dir, 0, overrides={"train.epochs": 1},
                    sequential={"n_support": 5, "n_query": 3, "max_len": 12})
    assert r.model.name and 0 <= r.result["test"]["ndcg@10"] <= 1


def test_a_method_off_its_protocols_stops():
    with pytest.raises(MetarecError, match="does not run on the user-cold"):
        metarec.run("sasrec", "user-cold")
    with pytest.raises(MetarecError, match="unknown protocol"):
        metarec.run("bias", "nope")


def test_warmup_run_returns_its_phases(tmp_path):
    from tests.ctr.warmup_data import warmup_frames

    d = write_atomic(tmp_path / "w", "w", *warmup_frames())
    over = {"warmup.old_min": 100, "warmup.k": 5, "warmup.min_test": 5, "warmup.valid_frac": 0.2,
            "backbone.emb_dim": 4, "backbone.hidden": "8", "backbone.epochs": 1, "train.epochs": 1}
    r = metarec.run("metaemb", "warmup", str(d), 0, overrides=over, out=tmp_path / "run")
    assert r.model is None and set(r.result["phases"]) == {"cold", "warm-a", "warm-b", "warm-c"}
    assert json.loads((tmp_path / "run" / "results.json").read_text())["phases"] == r.result["phases"]
