"""TaNP: shapes, the kernel/KL/clustering pieces against hand computations, padding, learning, save/load,
dependence on the support set, end to end."""

import copy
import math
from dataclasses import replace

import pytest
import torch

from metarec.engine.train import TrainConfig, fit
from metarec.evaluation.evaluate import evaluate_rating
from metarec.learners.base import load_learner
from metarec.learners.tanp import TaNP, TaNPConfig, clustering_loss, gaussian_kl, student_t_assign
from metarec.tasks import Task, collate
from tests.learners.common import as_double, assert_end_to_end, assert_same_predictions

CFG = TaNPConfig(emb_dim=4, embed_hidden=(8, 6), enc_hidden=(16, 16), z1_dim=8, z2_dim=8, z_dim=4,
                 task_hidden=(16, 8), task_dim=8, clusters=3, dec_hidden=(16, 16, 8))


def make(prep, cfg=CFG, double=True):
    torch.manual_seed(0)
    m = TaNP(prep.ctx, cfg)
    return m.double() if double else m


@pytest.mark.parametrize("decoder", ["film", "gating-film", "base"])
def test_shapes(prep, decoder):
    m = make(prep, replace(CFG, decoder=decoder), double=False)
    b = collate(prep.valid[:3])
    a = m.adapt(b)
    assert a.score(b.q_user, b.q_item).shape == b.q_item.shape
    scores = a.score_items(torch.arange(prep.ctx.n_items))
    assert scores.shape == (3, prep.ctx.n_items)
    # score_items is score on the owner's pairs
    items = b.q_item[:, :2]
    assert torch.allclose(a.score(b.owner[:, None].expand_as(items), items), scores.gather(1, items), atol=1e-5)
    loss = m.meta_loss(collate(prep.train[:4]))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_student_t_kernel_kl_and_clustering_loss_by_hand():
    o = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    pool = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    c = student_t_assign(o, pool, alpha=1.0)
    # alpha = 1: q = 1 / (1 + d^2); task 0: d^2 = 1, 4; task 1: d^2 = 1, 2
    q = [[1 / 2, 1 / 5], [1 / 2, 1 / 3]]
    want = [[x / sum(r) for x in r] for r in q]
    assert c.tolist() == [pytest.approx(r, abs=1e-12) for r in want]
    f = [want[0][k] + want[1][k] for k in range(2)]
    p = [[want[b][k] ** 2 / f[k] for k in range(2)] for b in range(2)]
    p = [[x / sum(r) for x in r] for r in p]
    kl = sum(p[b][k] * math.log(p[b][k] / want[b][k]) for b in range(2) for k in range(2)) / 2
    assert clustering_loss(c).item() == pytest.approx(kl, abs=1e-12)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(3, 4, dtype=torch.float64) for _ in range(4))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu_q, (0.5 * lv_q).exp()),
                                            torch.distributions.Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), ref, atol=1e-12)


def test_padding_does_not_change_the_result(prep):
    m = make(prep)
    t = prep.train[0]
    short = Task(t.owner, t.s_user[:3], t.s_item[:3], t.s_rating[:3], t.q_user[:4], t.q_item[:4], t.q_rating[:4])
    alone = as_double(collate([short]))
    padded = as_double(collate([short, prep.train[1]]))
    assert padded.s_mask[0].sum() < padded.s_mask.shape[1] and padded.q_mask[0].sum() < padded.q_mask.shape[1]
    with torch.no_grad():
        s1 = m.adapt(alone).score(alone.q_user, alone.q_item)
        s2 = m.adapt(padded).score(padded.q_user, padded.q_item)
        assert torch.allclose(s1[0], s2[0, :4], atol=1e-12)

        def stats(b):  # posterior over support + query, and the task embedding, as meta_loss computes them
            users, items = torch.cat([b.s_user, b.q_user], 1), torch.cat([b.s_item, b.q_item], 1)
            xu, xi = m._sides(users, items)
            y = torch.cat([b.s_rating, b.q_rating], 1)
            xy = torch.cat([xu, xi, y[..., None]], -1)
            mu, lv = m._latent(xy, torch.cat([b.s_mask, b.q_mask], 1))
            o, c = m.task_embedding(xy[:, :b.s_user.shape[1]], b.s_mask)
            return mu[0], lv[0], o[0], c[0]

        for a, b in zip(stats(alone), stats(padded), strict=True):
            assert torch.allclose(a, b, atol=1e-12)


def test_different_support_gives_different_scores(prep):
    m = make(prep)
    b = as_double(collate(prep.valid[:4]))
    other = copy.copy(b)
    other.s_rating = 6.0 - b.s_rating
    with torch.no_grad():
        s = m.adapt(b).score(b.q_user, b.q_item)
        assert not torch.allclose(s, m.adapt(other).score(b.q_user, b.q_item))
        assert torch.equal(s, m.adapt(b).score(b.q_user, b.q_item))  # deterministic (prior mean)


def test_fit_lowers_the_loss_and_save_load_round_trips(prep, tmp_path):
    m = make(prep, double=False)
    batch = collate(prep.train)

    def query_mse(model):
        with torch.no_grad():
            a = model.adapt(batch)
            err = (a.score(batch.q_user, batch.q_item) - batch.q_rating) ** 2
            return (err * batch.q_mask).sum().item() / batch.q_mask.sum().item()

    before = query_mse(m)
    tcfg = TrainConfig(epochs=5, meta_batch=8, lr=1e-2, patience=10)
    out = fit(m, prep.train, lambda x: evaluate_rating(x, prep.valid), tcfg, progress=False)
    assert query_mse(m) < 0.5 * before
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]
    m.save(tmp_path / "m.pt")
    back, _ = load_learner(tmp_path / "m.pt")
    assert_same_predictions(m, back, prep)


@pytest.mark.parametrize("view", ["explicit", "implicit"])
def test_end_to_end(tiny_dataset, view, tmp_path):
    assert_end_to_end("tanp", tiny_dataset, view, tmp_path, {"decoder": "gating-film"})


def test_full_ranking_in_task_chunks_is_exact(prep, monkeypatch):
    from metarec.learners import tanp
    from tests.learners.common import assert_chunked_full_ranking_is_exact

    assert_chunked_full_ranking_is_exact(make(prep).eval(), prep, tanp, monkeypatch)
