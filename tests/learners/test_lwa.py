"""LWA: shapes, learning, save/load, dependence on the support set, padding, and a hand-computed example."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.errors import MetarecError
from metarec.learners.base import Context
from metarec.learners.lwa import LWA, LWAConfig
from metarec.tasks import Task, collate
from tests.learners.common import (
    assert_cli_train_then_evaluate_implicit,
    assert_fit_lowers_query_loss,
    assert_save_load_round_trip,
    user_cold_prep,
)

CFG = LWAConfig(emb_dim=8, loss="bce")


def _learner(prep, cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return LWA(prep.ctx, cfg)


def test_shapes(implicit):
    learner = _learner(implicit)
    b = collate(implicit.valid[:3])
    adapted = learner.adapt(b)
    assert adapted.score(b.q_user, b.q_item).shape == b.q_item.shape
    items = torch.arange(implicit.ctx.n_items)
    assert adapted.score_items(items).shape == (3, implicit.ctx.n_items)
    loss = learner.meta_loss(collate(implicit.train[:5]))
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("view,loss", [("implicit", "bce"), ("explicit", "mse")])
def test_fit_lowers_the_query_loss(tiny_dataset, view, loss):
    prep = user_cold_prep(tiny_dataset, view)
    # explicit: without centering, so that the rating scale itself must be learnt (with it, the tiny log's
    # features, drawn at random, explain little beyond each user's mean rating)
    learner = _learner(prep, replace(CFG, loss=loss, coef="vector", center=False))
    assert_fit_lowers_query_loss(learner, prep, lr=3e-2)


def test_save_load_round_trip(implicit, tmp_path):
    assert_save_load_round_trip(_learner(implicit), implicit, tmp_path)


def _relabelled(t: Task) -> Task:
    return Task(t.owner, t.s_user, t.s_item, 1.0 - t.s_rating, t.q_user, t.q_item, t.q_rating)


def test_generated_weights_depend_on_the_support_set(implicit):
    learner = _learner(implicit)
    t = implicit.test[0]
    items = torch.arange(implicit.ctx.n_items)
    a = learner.adapt(collate([t])).score_items(items)
    b = learner.adapt(collate([_relabelled(t)])).score_items(items)  # positives and negatives swapped
    c = learner.adapt(collate([implicit.test[1]])).score_items(items)  # another user's history
    assert not torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, c, atol=1e-3)


def test_padding_does_not_change_scores(implicit):
    learner = _learner(implicit)
    tasks = sorted(implicit.test, key=lambda t: t.n_support)
    short, long = tasks[0], tasks[-1]
    assert long.n_support > short.n_support and long.n_query >= short.n_query
    items = torch.arange(implicit.ctx.n_items)
    alone, padded = collate([short]), collate([long, short])
    assert torch.allclose(learner.adapt(alone).score_items(items), learner.adapt(padded).score_items(items)[1:],
                          atol=1e-6)
    q = short.n_query
    got = learner.adapt(padded).score(padded.q_user, padded.q_item)[1, :q]
    assert torch.allclose(learner.adapt(alone).score(alone.q_user, alone.q_item)[0], got, atol=1e-6)


def _toy_context(n_items=5):
    """One item field, each item its own code; no genres: F(i) is the code's embedding row."""
    return Context(user_codes=torch.zeros(2, 1, dtype=torch.long), item_codes=torch.arange(n_items)[:, None],
                   item_genre=torch.zeros(n_items, 0), user_cards=[1], item_cards=[n_items])


E = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [-1.0, 1.0], [2.0, -2.0]])  # F(i) for items 0..4


COEF = {1: torch.tensor([0.5, 2.0]), 2: torch.tensor([[0.5, -1.0], [2.0, 3.0]]),
        3: torch.tensor([[[0.5, 1.0], [0.0, -1.0]], [[2.0, 0.0], [1.0, 3.0]]])}


def _toy(cfg):
    learner = LWA(_toy_context(), replace(cfg, emb_dim=2, item_layers=()))
    with torch.no_grad():
        learner.encoder.item_emb[0].weight.copy_(E)
        learner.coef.copy_(COEF[learner.coef.dim()])
        learner.bias.fill_(0.25)
    return learner


def _support(items, ratings, pad=1):
    """A one-task batch with ``pad`` padding entries (item 4, a rating that must not count) at the end."""
    n = len(items)
    t = Task(0, np.zeros(n + pad, int), np.r_[items, [4] * pad], np.r_[ratings, [5.0] * pad].astype(np.float32),
             np.zeros(1, int), np.array([3]), np.zeros(1, np.float32))
    b = collate([t])
    b.s_mask[0, n:] = False
    return b


def test_lwa_weights_match_a_hand_computed_example():
    learner = _toy(LWAConfig(loss="bce"))
    b = _support([0, 1, 2], [1.0, 1.0, 0.0])
    r1, r0 = (E[0] + E[1]) / 2, E[2]
    w = 0.5 * r0 + 2.0 * r1  # = (1.5, 0.5) + (1, 2) = (2.5, 2.5)
    assert torch.allclose(w, torch.tensor([2.5, 2.5]))
    state = learner.task_state(learner.embed(b.s_item), b.s_rating, b.s_mask)
    assert torch.allclose(state["w"][0], w) and torch.allclose(state["b"], torch.tensor([0.25]))
    scores = learner.adapt(b).score_items(torch.arange(5))[0]
    assert torch.allclose(scores, E @ w + 0.25)

    vec = _toy(LWAConfig(loss="bce", coef="vector"))
    state = vec.task_state(vec.embed(b.s_item), b.s_rating, b.s_mask)
    assert torch.allclose(state["w"][0], torch.tensor([0.5, -1.0]) * r0 + torch.tensor([2.0, 3.0]) * r1)

    mat = _toy(LWAConfig(loss="bce", coef="matrix"))
    state = mat.task_state(mat.embed(b.s_item), b.s_rating, b.s_mask)
    assert torch.allclose(state["w"][0], COEF[3][0] @ r0 + COEF[3][1] @ r1)


def test_explicit_view_classes_and_centering_by_hand():
    learner = _toy(LWAConfig(loss="mse", threshold=4.0))
    b = _support([0, 1, 2, 3], [5.0, 2.0, 4.0, 1.0])  # liked: items 0, 2; not: 1, 3
    r1, r0 = (E[0] + E[2]) / 2, (E[1] + E[3]) / 2
    w = 0.5 * r0 + 2.0 * r1
    scores = learner.adapt(b).score_items(torch.arange(5))[0]
    assert torch.allclose(scores, E @ w + 0.25 + 3.0)  # + the mean support rating (5+2+4+1)/4
    plain = _toy(LWAConfig(loss="mse", center=False))
    assert torch.allclose(plain.adapt(b).score_items(torch.arange(5))[0], E @ w + 0.25)


def test_empty_class_has_a_zero_representative():
    learner = _toy(LWAConfig(loss="bce"))
    b = _support([0, 1], [1.0, 1.0])
    state = learner.task_state(learner.embed(b.s_item), b.s_rating, b.s_mask)
    assert torch.allclose(state["w"][0], 2.0 * (E[0] + E[1]) / 2)


def test_bad_config_is_a_metarec_error(implicit):
    with pytest.raises(MetarecError, match="coef"):
        LWA(implicit.ctx, LWAConfig(coef="tensor"))
    with pytest.raises(MetarecError, match="loss"):
        LWA(implicit.ctx, LWAConfig(loss="hinge"))


def test_cli_train_then_evaluate_implicit(tmp_path, capsys):
    assert_cli_train_then_evaluate_implicit("lwa", tmp_path, capsys)
