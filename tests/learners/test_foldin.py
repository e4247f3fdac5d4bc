"""``foldin`` and ``metafold``: the solves against direct least squares, ALS against its objective, the
meta-gradient through the solve against finite differences, the episode re-split, save/load, end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.errors import MetarecError
from metarec.learners.foldin import (
    FoldIn,
    FoldInConfig,
    als_explicit,
    als_implicit,
    content_map,
    fill_unseen,
    ridge_solve,
)
from metarec.learners.metafold import MetaFold, MetaFoldConfig, resample_split
from metarec.tasks import collate
from tests.learners.common import (
    assert_end_to_end,
    assert_fit_lowers_query_loss,
    assert_same_predictions,
    assert_save_load_round_trip,
    user_cold_prep,
)


def test_ridge_solve_matches_lstsq_of_the_augmented_system():
    """theta = argmin sum_j w_j (y_j - x_j.t)^2 + (t - m)' diag(lam) (t - m) + t' G t, checked per task by
    ordinary least squares on the stacked system [sqrt(W) X; sqrt(lam) I; chol(G)'] t = [sqrt(W) y; sqrt(lam) m; 0]."""
    g = torch.Generator().manual_seed(0)
    B, S, d = 3, 7, 4
    X = torch.randn(B, S, d, generator=g, dtype=torch.float64)
    y = torch.randn(B, S, generator=g, dtype=torch.float64)
    w = torch.rand(B, S, generator=g, dtype=torch.float64)
    w[1, 4:] = 0  # padding
    lam = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    Z = torch.randn(5, d, generator=g, dtype=torch.float64)
    G = Z.T @ Z
    m = torch.randn(B, d, generator=g, dtype=torch.float64)
    got = ridge_solve(X, w, w * y, lam, base=G, prior=m)
    C = torch.linalg.cholesky(G)  # G = C C'
    for b in range(B):
        A = np.vstack([np.sqrt(w[b].numpy())[:, None] * X[b].numpy(), np.diag(np.sqrt(lam.numpy())), C.T.numpy()])
        rhs = np.r_[np.sqrt(w[b].numpy()) * y[b].numpy(), np.sqrt(lam.numpy()) * m[b].numpy(), np.zeros(d)]
        want = np.linalg.lstsq(A, rhs, rcond=None)[0]
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-9, atol=1e-10)


def test_ridge_solve_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    B, S, d = 2, 5, 3
    X = torch.randn(B, S, d, generator=g, dtype=torch.float64, requires_grad=True)
    wy = torch.randn(B, S, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(B, S, generator=g, dtype=torch.float64)
    lam = (torch.rand(d, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    m = torch.randn(B, d, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X, wy, lam, m: ridge_solve(X, w, wy, lam, prior=m), (X, wy, lam, m))
    # and second order (the meta-gradient of a gradient), as a meta-learner on top would need
    assert torch.autograd.gradgradcheck(lambda X, lam: ridge_solve(X, w, wy.detach(), lam), (X, lam))


def _ratings(n_users=30, n_items=20, k=3, seed=0, density=0.6):
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    bu, bi = rng.normal(size=n_users) * 0.3, rng.normal(size=n_items) * 0.3
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    r = 3.5 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(size=len(u)) * 0.1
    return u, i, r


def _explicit_objective(f, u, i, r, cfg):
    pred = f["mu"] + f["user_bias"][u] + f["item_bias"][i] + (f["P"][u] * f["Q"][i]).sum(1)
    resid = torch.as_tensor(r) - pred
    return float((resid ** 2).sum() + cfg.reg * (f["P"].pow(2).sum() + f["Q"].pow(2).sum())
                 + cfg.reg_bias * (f["user_bias"].pow(2).sum() + f["item_bias"].pow(2).sum()))


def test_als_explicit_sweeps_lower_the_objective_and_each_half_step_is_exact():
    u, i, r = _ratings()
    objs = [_explicit_objective(als_explicit(u, i, r, 30, 20, FoldInConfig(rank=3, reg=0.5, reg_bias=0.5, iters=n)),
                                u, i, r, FoldInConfig(rank=3, reg=0.5, reg_bias=0.5)) for n in (1, 2, 5, 20)]
    assert all(b <= a + 1e-9 for a, b in zip(objs, objs[1:], strict=False)), objs
    f = als_explicit(u, i, r, 30, 20, FoldInConfig(rank=3, reg=0.5, reg_bias=0.5, iters=20))
    fitted = f["mu"] + f["user_bias"][u] + f["item_bias"][i] + (f["P"][u] * f["Q"][i]).sum(1)
    assert float(np.sqrt(((fitted.numpy() - r) ** 2).mean())) < 0.15  # a rank-3 log with noise 0.1
    # the last half step was the items' one: each user's [b_u, p_u] is one step behind, but every item's
    # [b_i, q_i] is the exact ridge solution given the users (checked for item 0 by lstsq)
    rows = i == 0
    X = np.c_[np.ones(rows.sum()), f["P"][u[rows]].numpy()]
    y = r[rows] - f["mu"].item() - f["user_bias"][u[rows]].numpy()
    A = np.vstack([X, np.sqrt(0.5) * np.eye(4)])
    want = np.linalg.lstsq(A, np.r_[y, np.zeros(4)], rcond=None)[0]
    np.testing.assert_allclose(np.r_[f["item_bias"][0].item(), f["Q"][0].numpy()], want, rtol=1e-8, atol=1e-10)


def test_als_implicit_user_step_is_the_weighted_ridge_solution_over_all_items():
    u, i, _ = _ratings(density=0.3)
    cfg = FoldInConfig(rank=3, reg=2.0, alpha=4.0, iters=3, loss="bce")
    f = als_implicit(u, i, 30, 20, cfg)
    P, Q = f["P"], f["Q"]
    # the last step solved the items; redo user 3's step by hand: confidence 1 + alpha on its positives,
    # 1 elsewhere, preference 1 on positives, 0 elsewhere, over every item
    items = i[u == 3]
    c = np.ones(20)
    c[items] += cfg.alpha
    p = np.zeros(20)
    p[items] = 1.0
    Qn = Q.numpy()
    want = np.linalg.solve(Qn.T @ (c[:, None] * Qn) + cfg.reg * np.eye(3), Qn.T @ (c * p))
    got = ridge_solve(Q[items][None], torch.full((1, len(items)), cfg.alpha, dtype=torch.float64),
                      torch.full((1, len(items)), 1 + cfg.alpha, dtype=torch.float64),
                      torch.full((3,), cfg.reg, dtype=torch.float64), base=Q.T @ Q)[0]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    assert P.shape == (30, 3)


def test_content_map_recovers_a_linear_map_and_fills_only_unseen_items():
    g = torch.Generator().manual_seed(2)
    F = (torch.rand(40, 6, generator=g) < 0.5).double()
    W = torch.randn(6, 2, generator=g, dtype=torch.float64)
    T = F @ W + 0.3
    seen = torch.ones(40, dtype=torch.bool)
    seen[:5] = False
    Wf, c = content_map(F, T, seen, reg=1e-8)
    np.testing.assert_allclose((F @ Wf + c).numpy(), T.numpy(), atol=1e-6)
    values = torch.zeros(40, 2, dtype=torch.float64)
    values[seen] = T[seen]
    filled = fill_unseen(values, F, seen, reg=1e-8)
    assert torch.equal(filled[seen], T[seen])
    np.testing.assert_allclose(filled[~seen].numpy(), T[~seen].numpy(), atol=1e-5)


def test_foldin_adapt_equals_a_direct_least_squares_solve_per_user(tiny_dataset):
    prep = user_cold_prep(tiny_dataset, "explicit")
    learner = FoldIn(prep.ctx, FoldInConfig(rank=4, reg=2.0, reg_bias=1.5))
    learner.fit_direct(prep.split.train)
    b = collate(prep.test)
    with torch.no_grad():
        got = learner.adapt(b).score(b.q_user, b.q_item)
    mu, bi, Q = learner.mu.double(), learner.item_bias.double(), learner.Q.double()
    for t in range(len(b)):
        s = b.s_mask[t]
        items = b.s_item[t][s]
        X = np.c_[np.ones(len(items)), Q[items].numpy()]
        y = b.s_rating[t][s].double().numpy() - mu.item() - bi[items].numpy()
        lam = np.r_[1.5, np.full(4, 2.0)]
        theta = np.linalg.lstsq(np.vstack([X, np.diag(np.sqrt(lam))]), np.r_[y, np.zeros(5)], rcond=None)[0]
        qi = b.q_item[t][b.q_mask[t]]
        want = mu.item() + bi[qi].numpy() + theta[0] + Q[qi].numpy() @ theta[1:]
        np.testing.assert_allclose(got[t][b.q_mask[t]].numpy(), want, rtol=1e-4, atol=1e-4)


def test_foldin_beats_the_bias_model_on_a_low_rank_log():
    """On ratings made by a latent-factor model the fold-in must beat the bias model (which has no factors)."""
    from metarec.data.loaders import build_dataset
    from metarec.learners.baselines import BiasConfig, BiasModel
    from metarec.pipeline import evaluator
    from tests.conftest import synthetic_frames

    prep = user_cold_prep(build_dataset("lr", *synthetic_frames(n_users=120, n_items=60)), "explicit")
    ev = evaluator(prep.protocol, prep)
    fold = FoldIn(prep.ctx, FoldInConfig(rank=3, reg=3.0, reg_bias=3.0))
    fold.fit_direct(prep.split.train)
    bias = BiasModel(prep.ctx, BiasConfig())
    bias.fit_direct(prep.split.train)
    assert ev(fold, prep.test)["rmse"] < ev(bias, prep.test)["rmse"] - 0.05


def test_foldin_config_domains():
    with pytest.raises(MetarecError, match="loss"):
        FoldInConfig(loss="hinge")
    with pytest.raises(MetarecError, match="reg"):
        FoldInConfig(reg=0.0)
    with pytest.raises(MetarecError, match="rank"):
        FoldInConfig(rank=0)
    with pytest.raises(MetarecError, match="id_dropout"):
        MetaFoldConfig(id_dropout=1.0)


@pytest.mark.parametrize("view", ["explicit", "implicit"])
def test_untrained_metafold_is_the_foldin(tiny_dataset, view):
    """Prior zero, penalties and confidence at the start values, item side from ALS: the same predictions."""
    prep = user_cold_prep(tiny_dataset, view)
    loss = "mse" if view == "explicit" else "bce"
    start = FoldInConfig(rank=4, reg=2.0, reg_bias=1.5, alpha=3.0, loss=loss, content=False)
    fold = FoldIn(prep.ctx, start)
    fold.fit_direct(prep.split.train)
    meta = MetaFold(prep.ctx, MetaFoldConfig(start=start, loss=loss))
    meta.prefit(prep.split.train)
    meta.eval()
    b = collate(prep.test)
    items = torch.arange(prep.ctx.n_items)[meta.seen]
    with torch.no_grad():
        torch.testing.assert_close(meta.adapt(b).score_items(items), fold.adapt(b).score_items(items),
                                   rtol=1e-4, atol=1e-4)


def test_metafold_meta_gradient_through_the_solve_matches_finite_differences(tiny_dataset):
    """d(query loss)/d(log penalties) and d/d(prior weights) by autograd through the Cholesky solve, against
    central differences, in float64 (resampling off so the loss is a deterministic function)."""
    prep = user_cold_prep(tiny_dataset, "explicit")
    meta = MetaFold(prep.ctx, MetaFoldConfig(start=FoldInConfig(rank=3, reg=2.0), resample=False)).double()
    meta.prefit(prep.split.train)
    with torch.no_grad():
        meta.prior_out.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    batch = collate(prep.train)
    batch.s_rating, batch.q_rating = batch.s_rating.double(), batch.q_rating.double()
    for p, idx in ((meta.log_lam, (1,)), (meta.prior_out.weight, (0, 2)), (meta.item_q, (int(batch.q_item[0, 0]), 1))):
        meta.zero_grad()
        meta.meta_loss(batch).backward()
        analytic = p.grad[idx].item()
        eps = 1e-6
        with torch.no_grad():
            p[idx] += eps
            up = meta.meta_loss(batch).item()
            p[idx] -= 2 * eps
            down = meta.meta_loss(batch).item()
            p[idx] += eps
        assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_resample_split_keeps_sizes_and_partitions_each_task(tiny_dataset):
    prep = user_cold_prep(tiny_dataset, "explicit")
    b = collate(prep.train[:6])
    torch.manual_seed(0)
    r = resample_split(b)
    assert torch.equal(r.s_mask.sum(1), b.s_mask.sum(1)) and torch.equal(r.q_mask.sum(1), b.q_mask.sum(1))
    assert not (r.s_mask & r.q_mask).any()
    for t in range(len(b)):
        before = sorted(torch.cat([b.s_item[t][b.s_mask[t]], b.q_item[t][b.q_mask[t]]]).tolist())
        after = sorted(torch.cat([r.s_item[t][r.s_mask[t]], r.q_item[t][r.q_mask[t]]]).tolist())
        assert before == after
        pairs = {(int(i), float(x)) for i, x in zip(r.s_item[t][r.s_mask[t]], r.s_rating[t][r.s_mask[t]], strict=True)}
        orig = {(int(i), float(x)) for i, x in zip(torch.cat([b.s_item[t], b.q_item[t]]),
                                                     torch.cat([b.s_rating[t], b.q_rating[t]]), strict=True)}
        assert pairs <= orig  # ratings travel with their items
    torch.manual_seed(1)
    assert not torch.equal(resample_split(b).q_mask, r.q_mask)  # a new split per draw


@pytest.mark.parametrize("view", ["explicit", "implicit"])
def test_metafold_learns_and_round_trips(tiny_dataset, view, tmp_path):
    prep = user_cold_prep(tiny_dataset, view)
    loss = "mse" if view == "explicit" else "bce"
    cfg = MetaFoldConfig(start=FoldInConfig(rank=3, reg=2.0, loss=loss), loss=loss, resample=False, anchor=0.0)
    torch.manual_seed(0)
    meta = MetaFold(prep.ctx, cfg)
    meta.prefit(prep.split.train)
    assert_fit_lowers_query_loss(meta, prep, lr=3e-2)
    again = MetaFold(prep.ctx, cfg)
    again.load_state_dict(meta.state_dict())
    meta.eval(), again.eval()
    assert_same_predictions(meta, again, prep)
    assert_save_load_round_trip(meta, prep, tmp_path)


@pytest.mark.parametrize("name", ["foldin", "metafold"])
@pytest.mark.parametrize("view", ["explicit", "implicit"])
def test_end_to_end(tiny_dataset, name, view, tmp_path):
    over = {"start.rank": 3} if name == "metafold" else {"rank": 3}
    assert_end_to_end(name, tiny_dataset, view, tmp_path, over)


def test_item_cold_new_items_get_content_factors(tiny_dataset):
    """In item-cold the test items were never seen in meta-train: their factors come from the content map
    (nonzero, item-specific), not from the zero start that ALS leaves them."""
    from metarec.pipeline import RunConfig, prepare
    from metarec.splits import SplitConfig
    from metarec.tasks import TaskConfig

    prep = prepare(RunConfig(split=SplitConfig(protocol="item-cold", by="random"), tasks=TaskConfig(min_inter=6)),
                   tiny_dataset)
    new = prep.ctx.item_ids == 0
    assert new.any()
    fold = FoldIn(prep.ctx, FoldInConfig(rank=3))
    fold.fit_direct(prep.split.train)
    assert fold.Q[new].abs().sum() > 0
    plain = FoldIn(prep.ctx, replace(FoldInConfig(rank=3), content=False))
    plain.fit_direct(prep.split.train)
    assert plain.Q[new].abs().sum() == 0
    assert isinstance(prep.split.train, pd.DataFrame)


@pytest.mark.parametrize("scores, best_epoch", [((1.0, 2.0, 3.0), 0), ((1.0, 0.5, 3.0), 1), ((1.0, 2.0, 0.9), 2),
                                                 ((1.0, 2.0, 1.5, 0.9), 3)])
def test_select_start_lets_the_start_compete_as_epoch_0(tiny_dataset, scores, best_epoch):
    """fit(select_start=True) scores the learner before the first step; scripted meta-valid scores decide. With
    patience 1 the last case trains on: epochs below the start but improving do not count as bad epochs."""
    from metarec.engine.train import TrainConfig, fit

    prep = user_cold_prep(tiny_dataset, "explicit")
    start = FoldInConfig(rank=3, reg=2.0, content=False)
    meta = MetaFold(prep.ctx, MetaFoldConfig(start=start, resample=False))
    meta.prefit(prep.split.train)
    before = {k: v.clone() for k, v in meta.state_dict().items()}
    seq = iter(scores)
    out = fit(meta, prep.train, lambda m: {"rmse": next(seq)}, TrainConfig(epochs=len(scores) - 1, meta_batch=8,
              lr=3e-2, patience=1), progress=False, select_start=True)
    assert out["best_epoch"] == best_epoch and out["best"]["rmse"] == min(scores)
    same = all(torch.equal(v, meta.state_dict()[k]) for k, v in before.items())
    assert same is (best_epoch == 0)


def test_metafold_keeps_its_als_start_when_meta_training_only_hurts(tiny_dataset):
    """On real meta-valid tasks a wild rate (30) only makes things worse: the start (the untrained learner,
    i.e. the fold-in) is what comes back, with its meta-valid RMSE."""
    from metarec.engine.train import TrainConfig, fit
    from metarec.evaluation.evaluate import evaluate_rating

    torch.manual_seed(1)  # pinned (order-independent); at seed 0 the rate-30 epoch breaks the ALS Cholesky instead
    prep = user_cold_prep(tiny_dataset, "explicit")
    start = FoldInConfig(rank=3, reg=2.0, content=False)
    meta = MetaFold(prep.ctx, MetaFoldConfig(start=start, resample=False))
    meta.prefit(prep.split.train)
    fold = FoldIn(prep.ctx, start)
    fold.fit_direct(prep.split.train)
    torch.manual_seed(0)
    out = fit(meta, prep.train, lambda m: evaluate_rating(m, prep.valid),
              TrainConfig(epochs=2, meta_batch=8, lr=30.0, patience=5, clip=0.0), progress=False,
              select_start=meta.select_start)
    meta.eval()
    assert out["best_epoch"] == 0
    assert out["best"]["rmse"] == pytest.approx(evaluate_rating(fold, prep.valid)["rmse"], rel=1e-4)
    untrained = MetaFold(prep.ctx, MetaFoldConfig(start=start, resample=False))
    untrained.prefit(prep.split.train)
    untrained.eval()
    assert_same_predictions(meta, untrained, prep)


def test_als_half_step_is_the_same_in_any_chunking():
    """The half-step's chunks of rows (bounded memory on large logs) change nothing: one chunk, many chunks,
    rows without interactions included."""
    from metarec.learners.foldin import _side_solve

    g = torch.Generator().manual_seed(0)
    n = 5000
    rows, cols = torch.randint(0, 900, (n,), generator=g), torch.randint(0, 300, (n,), generator=g)
    w, wy = torch.rand(n, dtype=torch.float64, generator=g), torch.rand(n, dtype=torch.float64, generator=g)
    feats = torch.randn(300, 4, dtype=torch.float64, generator=g)
    lam = torch.full((4,), 0.5, dtype=torch.float64)
    whole = _side_solve(rows, cols, w, wy, 1000, feats, lam, chunk=1 << 20, block=1 << 20)
    for chunk, block in ((1, 1), (37, 5), (777, 100), (300, 1 << 20)):
        torch.testing.assert_close(_side_solve(rows, cols, w, wy, 1000, feats, lam, chunk=chunk, block=block), whole)
    assert whole[900:].abs().max() == 0  # no interaction: the ridge solution is 0
