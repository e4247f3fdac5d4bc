"""NLBA: shapes, learning, save/load, dependence on the support set, padding, and a per-task reference."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.learners.nlba import NLBA, NLBAConfig
from metarec.tasks import Task, collate
from tests.learners.common import (
    assert_cli_train_then_evaluate_implicit,
    assert_fit_lowers_query_loss,
    assert_save_load_round_trip,
    user_cold_prep,
)

CFG = NLBAConfig(emb_dim=8, hidden=(16, 8), loss="bce")


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
    prep = user_cold_prep(tiny_dataset, view)
    learner = _learner(prep, replace(CFG, loss=loss))
    assert_fit_lowers_query_loss(learner, prep, lr=1e-2)


def test_save_load_round_trip(implicit, tmp_path):
    assert_save_load_round_trip(_learner(implicit), implicit, tmp_path)


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
    assert_cli_train_then_evaluate_implicit("nlba", tmp_path, capsys)
