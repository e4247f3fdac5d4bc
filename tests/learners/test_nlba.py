"""NLBA: shapes, learning, save/load, dependence on the support set, padding, and a per-task reference."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.cli import main
from metarec.engine.train import TrainConfig, fit
from metarec.learners.base import load_learner
from metarec.learners.nlba import NLBA, NLBAConfig
from metarec.pipeline import RunConfig, prepare
from metarec.splits import SplitConfig
from metarec.tasks import Task, TaskConfig, collate
from tests.conftest import synthetic_frames, write_atomic

CFG = NLBAConfig(emb_dim=8, hidden=(16, 8), loss="bce")


def _prep(dataset, view):
    """Tiny user-cold tasks; implicit: positives = rating >= 3, 4 of them in the query (plus 16 negatives)."""
    tasks = TaskConfig(min_inter=14) if view == "explicit" else TaskConfig(min_inter=10, n_query=4)
    run = RunConfig(view=view, threshold=3.0, split=SplitConfig(protocol="user-cold", by="random"), tasks=tasks)
    return prepare(run, dataset)


@pytest.fixture
def implicit(tiny_dataset):
    return _prep(tiny_dataset, "implicit")


def _learner(prep, cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return NLBA(prep.ctx, cfg)


@pytest.mark.parametrize("hidden", [(16, 8), ()])
def test_shapes(implicit, hidden):
    learner = _learner(implicit, replace(CFG, hidden=hidden))
    b = collate(implicit.valid[:3])
    adapted = learner.adapt(b)
    assert adapted.score(b.q_user, b.q_item).shape == b.q_item.shape
    assert adapted.score_items(torch.arange(implicit.ctx.n_items)).shape == (3, implicit.ctx.n_items)
    loss = learner.meta_loss(collate(implicit.train[:5]))
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("view,loss", [("implicit", "bce"), ("explicit", "mse")])
def test_fit_lowers_the_query_loss(tiny_dataset, view, loss):
    prep = _prep(tiny_dataset, view)
    learner = _learner(prep, replace(CFG, loss=loss))
    batch = collate(prep.train)
    with torch.no_grad():
        before = learner.meta_loss(batch).item()
    out = fit(learner, prep.train, lambda m: {"loss": m.meta_loss(batch).item()},
              TrainConfig(epochs=6, meta_batch=8, lr=1e-2, select="loss", patience=10), progress=False)
    with torch.no_grad():
        after = learner.meta_loss(batch).item()
    assert after < 0.9 * before
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]


def test_save_load_round_trip(implicit, tmp_path):
    learner = _learner(implicit)
    fit(learner, implicit.train, lambda m: {"loss": 0.0},
        TrainConfig(epochs=1, meta_batch=8, lr=1e-2, select="loss"), progress=False)
    learner.save(tmp_path / "m.pt")
    again, _ = load_learner(tmp_path / "m.pt")
    assert type(again) is NLBA and again.config == learner.config
    b = collate(implicit.test)
    items = torch.arange(implicit.ctx.n_items)
    assert torch.equal(learner.adapt(b).score_items(items), again.adapt(b).score_items(items))
    assert torch.equal(learner.adapt(b).score(b.q_user, b.q_item), again.adapt(b).score(b.q_user, b.q_item))


def test_generated_biases_depend_on_the_support_set(implicit):
    learner = _learner(implicit)
    t = implicit.test[0]
    swapped = Task(t.owner, t.s_user, t.s_item, 1.0 - t.s_rating, t.q_user, t.q_item, t.q_rating)
    items = torch.arange(implicit.ctx.n_items)
    a = learner.adapt(collate([t])).score_items(items)
    b = learner.adapt(collate([swapped])).score_items(items)
    c = learner.adapt(collate([implicit.test[1]])).score_items(items)
    assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, c, atol=1e-3)
    # the shared weights are the same for every task: only the biases differ
    x = learner.embed(collate([t]).s_item)
    b0 = learner.task_state(x, collate([t]).s_rating, collate([t]).s_mask)["b0"]
    x2 = learner.embed(collate([swapped]).s_item)
    b1 = learner.task_state(x2, collate([swapped]).s_rating, collate([swapped]).s_mask)["b0"]
    assert not torch.allclose(b0, b1)


def test_padding_does_not_change_scores(implicit):
    learner = _learner(implicit)
    tasks = sorted(implicit.test, key=lambda t: t.n_support)
    short, long = tasks[0], tasks[-1]
    assert long.n_support > short.n_support
    items = torch.arange(implicit.ctx.n_items)
    alone, padded = collate([short]), collate([long, short])
    assert torch.allclose(learner.adapt(alone).score_items(items), learner.adapt(padded).score_items(items)[1:],
                          atol=1e-6)
    got = learner.adapt(padded).score(padded.q_user, padded.q_item)[1, :short.n_query]
    assert torch.allclose(learner.adapt(alone).score(alone.q_user, alone.q_item)[0], got, atol=1e-6)


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_matches_a_per_task_reference(implicit, loss):
    """The batched network equals the paper's formula written out task by task."""
    learner = _learner(implicit, replace(CFG, loss=loss))
    tasks = implicit.test[:4]
    if loss == "mse":  # ratings instead of labels: positives rated 4 or 5 (liked), negatives 1 to 3
        def rated(t):
            j = np.arange(t.n_support)
            r = np.where(t.s_rating > 0, 4 + j % 2, 1 + j % 3).astype(np.float32)
            return Task(t.owner, t.s_user, t.s_item, r, t.q_user, t.q_item, t.q_rating)
        tasks = [rated(t) for t in tasks]
    items = torch.arange(implicit.ctx.n_items)
    got = learner.adapt(collate(tasks)).score_items(items)
    with torch.no_grad():
        x = learner.embed(items)  # (N, D)
        for b, t in enumerate(tasks):
            f = learner.embed(torch.as_tensor(t.s_item))  # (S, D)
            r = torch.as_tensor(t.s_rating)
            pos = r >= (0.5 if loss == "bce" else 4.0)
            r0, r1 = f[~pos].mean(0), f[pos].mean(0)
            h = x
            for lin, gen in zip(learner.weights, learner.bias_gen[:-1], strict=True):
                d = r0.shape[0]
                bias = gen.bias + gen.weight[:, :d] @ r0 + gen.weight[:, d:] @ r1  # c + V0 R0 + V1 R1
                h = torch.relu(h @ lin.weight.T + bias)
            g = learner.bias_gen[-1]
            d = r0.shape[0]
            out = h @ learner.out.weight[0] + g.bias + g.weight[0, :d] @ r0 + g.weight[0, d:] @ r1
            if loss == "mse":
                out = out + r.mean()
            assert torch.allclose(got[b], out, atol=1e-5)


def test_cli_train_then_evaluate_implicit(tmp_path, capsys):
    inter, users, items = synthetic_frames()
    data = str(write_atomic(tmp_path / "toy", "toy", inter, users, items).parent)
    out = tmp_path / "run"
    assert main(["train", "--learner", "nlba", "--dataset", data, "--view", "implicit", "--out", str(out),
                 "--split.by=random", "--threshold=3", "--tasks.min_inter=10", "--tasks.n_query=4",
                 "--train.epochs=2", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["learner_config"]["loss"] == "bce" and "ndcg@10" in res["test"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res["test"]
