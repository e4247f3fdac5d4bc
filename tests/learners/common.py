"""Helpers shared by the learner tests: tiny user-cold tasks, float64 batches, and the learning and
save/load checks that every learner must pass."""

from __future__ import annotations

import json

import torch

from metarec.cli import main
from metarec.engine.train import TrainConfig, fit
from metarec.learners.base import load_learner
from metarec.pipeline import RunConfig, make_config, prepare, train_and_evaluate
from metarec.splits import SplitConfig
from metarec.tasks import TaskConfig, collate
from tests.conftest import synthetic_frames, write_atomic


def user_cold_prep(dataset, view):
    """Tiny user-cold tasks; implicit: positives = rating >= 3, 4 of them in the query (plus 16 negatives)."""
    tasks = TaskConfig(min_inter=14) if view == "explicit" else TaskConfig(min_inter=10, n_query=4)
    run = RunConfig(view=view, threshold=3.0, split=SplitConfig(protocol="user-cold", by="random"), tasks=tasks)
    return prepare(run, dataset)


def as_double(batch):
    """The batch's ratings in float64 (in place), for a float64 model; returns the batch."""
    batch.s_rating, batch.q_rating = batch.s_rating.double(), batch.q_rating.double()
    return batch


def assert_fit_lowers_query_loss(learner, prep, lr):
    """Six epochs of ``fit`` cut the meta-loss on all training tasks by at least 10%, and the training loss
    falls from the first epoch to the last."""
    batch = collate(prep.train)
    with torch.no_grad():
        before = learner.meta_loss(batch).item()
    out = fit(learner, prep.train, lambda m: {"loss": m.meta_loss(batch).item()},
              TrainConfig(epochs=6, meta_batch=8, lr=lr, select="loss", patience=10), progress=False)
    with torch.no_grad():
        after = learner.meta_loss(batch).item()
    assert after < 0.9 * before
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]


def assert_save_load_round_trip(learner, prep, tmp_path):
    """After one epoch of training, ``save`` + ``load_learner`` give the same class, config and scores."""
    fit(learner, prep.train, lambda m: {"loss": 0.0},
        TrainConfig(epochs=1, meta_batch=8, lr=1e-2, select="loss"), progress=False)
    learner.save(tmp_path / "m.pt")
    again, _ = load_learner(tmp_path / "m.pt")
    assert type(again) is type(learner) and again.config == learner.config
    assert_same_predictions(learner, again, prep)


def assert_same_predictions(learner, other, prep):
    """Both learners, adapted to the test tasks, give bit-identical scores on the query pairs and all items."""
    b = collate(prep.test)
    items = torch.arange(prep.ctx.n_items)
    with torch.no_grad():
        assert torch.equal(learner.adapt(b).score(b.q_user, b.q_item), other.adapt(b).score(b.q_user, b.q_item))
        assert torch.equal(learner.adapt(b).score_items(items), other.adapt(b).score_items(items))


def assert_cli_train_then_evaluate_implicit(name, tmp_path, capsys):
    """``metarec train`` on the synthetic log as RecBole files (implicit view), then ``metarec evaluate`` of the
    saved run reproduces the test metrics."""
    inter, users, items = synthetic_frames()
    data = str(write_atomic(tmp_path / "toy", "toy", inter, users, items).parent)
    out = tmp_path / "run"
    assert main(["train", "--learner", name, "--dataset", data, "--view", "implicit", "--out", str(out),
                 "--split.by=random", "--threshold=3", "--tasks.min_inter=10", "--tasks.n_query=4",
                 "--train.epochs=2", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["learner_config"]["loss"] == "bce" and "ndcg@10" in res["test"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res["test"]


def assert_end_to_end(name, dataset, view, tmp_path, learner_over):
    """One epoch through ``train_and_evaluate`` (user-cold, random split) in either view; the loss follows the
    view, the test metrics are there, and the saved model reloads with the same config."""
    over = {"train.epochs": 1, "split.by": "random", "tasks.min_inter": 6 if view == "implicit" else 14,
            **{f"learner.{k}": v for k, v in learner_over.items()}}
    if view == "implicit":
        over["threshold"] = 3
    run, lcfg = make_config(name, "tiny", "user-cold", 0, view, over)
    assert lcfg.loss == ("bce" if view == "implicit" else "mse")
    res = train_and_evaluate(run, lcfg, out_dir=tmp_path, progress=False, prep=prepare(run, dataset))
    assert res["test"]["tasks"] > 0
    assert ("rmse" if view == "explicit" else "ndcg@10") in res["test"]
    back, _ = load_learner(tmp_path / "model.pt")
    assert back.name == name and back.config == lcfg


def assert_chunked_full_ranking_is_exact(learner, prep, module, monkeypatch):
    """``score_items`` over every item, computed a task at a time (``by_task_chunks`` with a budget of one float),
    equals the scores of the same pairs through ``score`` and the unchunked call."""
    import functools

    import torch

    from metarec.learners.base import by_task_chunks
    from metarec.tasks import collate

    batch = as_double(collate(prep.test[:5]))
    items = torch.arange(prep.ctx.n_items)
    with torch.no_grad():
        adapted = learner.adapt(batch)
        whole = adapted.score_items(items)  # (B, N)
        monkeypatch.setattr(module, "by_task_chunks", functools.partial(by_task_chunks, budget=1))
        chunked = learner.adapt(batch).score_items(items)
        B, N = whole.shape
        pairs = adapted.score(batch.owner[:, None].expand(B, N), items[None].expand(B, N))
    assert torch.allclose(chunked, whole, rtol=1e-10, atol=1e-10)
    assert torch.allclose(whole, pairs, rtol=1e-10, atol=1e-10)
