"""s²Meta: shapes, the update rule against SGD and a hand-written per-task loop, REINFORCE, vectorisation,
learning on a tiny log, ablation switches, save/load."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from metarec.learners.base import load_learner
from metarec.learners.s2meta import (
    S2Meta,
    S2MetaConfig,
    UpdateController,
    preprocess,
    recommend,
    recommend_grid,
    recommender_shapes,
    reinforce_surrogate,
)
from metarec.nets.mf import MFConfig, factorize
from metarec.scenario_run import scenario_context
from metarec.scenarios import prepare_scenarios, split_triples
from metarec.tasks import collate
from tests.test_scenarios import TINY, scenario_dataset

CFG = S2MetaConfig(emb_dim=8, max_steps=6, fixed_steps=3, query_sample=64, checkpoint=False)


@pytest.fixture(scope="module")
def sdata():
    data = prepare_scenarios(scenario_dataset(), TINY)
    ds = data.dataset  # informative embeddings: one MF of the whole tiny log
    data.emb = factorize(ds.inter, ds.n_users, ds.n_items, MFConfig(dim=CFG.emb_dim, epochs=20, batch=256))
    return data


def _learner(sdata, cfg=CFG, seed=0):
    torch.manual_seed(seed)
    ds = sdata.dataset
    m = S2Meta(scenario_context(ds.n_users, ds.n_items), cfg)
    m.set_embeddings(*sdata.emb)
    return m


def test_recommender_shapes_halve():
    s = recommender_shapes("interaction", 64)
    assert s["h0.weight"] == (64, 128) and s["h1.weight"] == (32, 64) and s["h2.weight"] == (16, 32)
    assert s["out.weight"] == (1, 16) and "out.bias" not in s
    m = recommender_shapes("mapping", 64)
    assert m["u0.weight"] == (32, 64) and m["i2.weight"] == (8, 16) and len(m) == 12


def test_preprocess_eq12():
    x = torch.tensor([1.0, -math.e, 1e-6, 0.0])
    out = preprocess(x, 10.0)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[1], torch.tensor([0.1, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, 1e-6 * math.exp(10)]))
    assert torch.allclose(out[3], torch.tensor([-1.0, 0.0]))


def test_update_controller_shapes_and_fixed_gates_equal_sgd():
    ctl = UpdateController(["w", "b"], 16, 10.0, input_gate=0.05, forget_gate=0.5)
    theta, grad = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    h = c = torch.zeros(3 * 20, 16)
    new, h2, c2, alpha, beta = ctl.step("w", theta, grad, torch.zeros(3, 2), h, c)
    assert new.shape == theta.shape and h2.shape == (60, 16) and alpha.shape == (3, 20) and beta.shape == (3, 20)
    assert torch.allclose(new.reshape(3, 20), beta * theta.reshape(3, 20) - alpha * grad.reshape(3, 20))
    # fixed gates: input gate = lr, forget gate = 1 -> exactly one SGD step
    with torch.no_grad():
        ctl.heads["w"].weight.zero_()
        ctl.heads["w"].bias.copy_(torch.tensor([math.log(0.05 / 0.95), 40.0]))
    new, *_ = ctl.step("w", theta, grad, torch.randn(3, 2), h, c)
    assert torch.allclose(new, theta - 0.05 * grad, atol=1e-6)


def _fix_gates(m: S2Meta, lr: float):
    with torch.no_grad():
        for head in m.updater.heads.values():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([math.log(lr / (1 - lr)), 40.0]))


def test_lstm_with_fixed_gates_equals_sgd_and_a_per_task_reference(sdata):
    """The vectorised episode with gates fixed at (lr, 1) = FixedLr's SGD = a hand-written loop per task with
    an nn.Sequential, SGD and the same triples."""
    lr = 0.05
    cfg = replace(CFG, stop="fixed", fixed_steps=3)
    lstm = _learner(sdata, cfg)
    _fix_gates(lstm, lr)
    sgd = _learner(sdata, replace(cfg, update="sgd", sgd_lr=lr))
    sgd.load_state_dict({k: v for k, v in lstm.state_dict().items() if not k.startswith("updater")})
    batch = collate(sdata.test + sdata.valid)
    with torch.no_grad():
        a = lstm._episode(batch, train=False)["theta"]
        b = sgd._episode(batch, train=False)["theta"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # reference: per task, an nn.Sequential copy trained by plain SGD on the same (u, i, i-) triples
    K = TINY.support_negatives
    u, i, j, m = split_triples(batch.s_user, batch.s_item, batch.s_rating, batch.s_mask, K)
    pick, slot, draw, _ = sgd._plan(len(batch), u.shape[1], K, cfg.fixed_steps, batch.owner, train=False)
    for t_idx in range(len(batch)):
        net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(),
                            nn.Linear(2, 1, bias=False))
        with torch.no_grad():
            for (name, _), p in zip(sgd.shapes.items(), net.parameters(), strict=True):
                p.copy_(sgd.omega_r[name.replace(".", "_")])
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        eu = sgd.user_emb[u[t_idx]]
        for step in range(cfg.fixed_steps):
            neg = j[t_idx, torch.arange(u.shape[1]), slot[t_idx, step]]
            fp = net(torch.cat([eu, sgd.item_emb[i[t_idx]]], -1)).squeeze(-1)
            fn = net(torch.cat([eu, sgd.item_emb[neg]], -1)).squeeze(-1)
            loss = torch.relu(1.0 - fp + fn).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for (name, _), p in zip(sgd.shapes.items(), net.parameters(), strict=True):
            assert torch.allclose(b[name][t_idx], p.detach(), atol=1e-5), (t_idx, name)


def test_batched_adaptation_equals_one_task_at_a_time(sdata):
    m = _learner(sdata)
    tasks = sdata.test + sdata.valid
    users = torch.tensor([[int(t.q_user[0])] * 5 for t in tasks])
    items = torch.tensor([list(t.extra["items"][:5]) for t in tasks])
    together = m.adapt(collate(tasks)).score(users, items)
    for b, t in enumerate(tasks):
        alone = m.adapt(collate([t])).score(users[b:b + 1], items[b:b + 1])
        assert torch.allclose(together[b:b + 1], alone, atol=1e-5)


def test_reinforce_gradient_on_a_tiny_example():
    # two steps taken, then stopped: L_test(theta^0..2) = 1.0, 0.8, 0.9 -> Q^(1) = 0.1, Q^(2) = -0.1
    z = torch.tensor([[0.3, -0.2]], requires_grad=True)  # stop logits of steps 1 and 2
    p = torch.sigmoid(z)
    q_loss = [torch.tensor([1.0]), torch.tensor([0.8]), torch.tensor([0.9])]
    sur = reinforce_surrogate(q_loss, [torch.log1p(-p[:, 0]), torch.log1p(-p[:, 1])])
    sur.sum().backward()
    # d/dz [-Q ln(1 - sigmoid(z))] = Q sigmoid(z): descending raises p where going on hurt (Q < 0)
    assert torch.allclose(z.grad, torch.tensor([[0.1, -0.1]]) * p.detach())
    assert z.grad[0, 1] < 0 < z.grad[0, 0]


def test_meta_loss_stop_gradient_matches_the_closed_form(sdata):
    m = _learner(sdata, replace(CFG, stop_weight=1.0, max_steps=5))
    with torch.no_grad():
        m.stopper.head.weight.zero_()  # p^(t) = sigmoid(bias) at every step
        m.stopper.head.bias.fill_(-1.0)
    batch = collate(sdata.train)
    torch.manual_seed(3)
    ep = m._episode(batch, train=True)
    ret = torch.stack([q - ep["q_loss"][-1] for q in ep["q_loss"][:len(ep["log_cont"])]], 1)  # (B, T)
    went_on = torch.stack(ep["log_cont"], 1) != 0
    torch.manual_seed(3)
    m.zero_grad()
    m.meta_loss(batch).backward()
    p = torch.sigmoid(torch.tensor(-1.0))
    expected = (ret * went_on * p).sum(1).mean()
    assert m.stopper.head.bias.grad.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-7)
    assert m.omega_r["h0_weight"].grad is not None and m.updater.cells["h0_weight"].weight_ih.grad is not None
    assert m.updater.cells["h0_weight"].weight_ih.grad.abs().sum() > 0


def test_meta_training_reduces_the_test_loss(sdata):
    m = _learner(sdata, replace(CFG, stop="fixed", fixed_steps=3))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    batch = collate(sdata.train)
    losses = []
    torch.manual_seed(0)
    for _ in range(40):
        loss = m.meta_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])


def test_activation_checkpointing_gives_the_same_meta_gradient(sdata):
    grads = []
    for ck in (False, True):
        m = _learner(sdata, replace(CFG, checkpoint=ck))
        torch.manual_seed(5)
        m.meta_loss(collate(sdata.train)).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], rtol=1e-5, atol=1e-7), k


def test_scenario_specific_learning_lowers_the_training_loss(sdata):
    m = _learner(sdata, replace(CFG, stop="fixed", fixed_steps=6, input_gate=0.1))
    tr = m.learning_trace(collate(sdata.test))
    assert tr["loss"][-1].mean() < tr["loss"][0].mean()
    assert len(tr["thetas"]) == 7 and set(tr["gates"]) == set(m.shapes)


def test_ablation_switches(sdata):
    batch = collate(sdata.test)
    fixed = _learner(sdata, replace(CFG, stop="fixed", fixed_steps=4))
    fixed.adapt(batch)
    assert fixed.last_steps == 4
    rand = _learner(sdata, replace(CFG, init="random"))
    assert not hasattr(rand, "omega_r")
    a = rand.adapt(batch).score(batch.s_user[:, :3], batch.s_item[:, :3])
    assert torch.equal(a, rand.adapt(batch).score(batch.s_user[:, :3], batch.s_item[:, :3]))  # seeded per scenario
    sgd = _learner(sdata, replace(CFG, update="sgd"))
    assert not hasattr(sgd, "updater")
    loss = sgd.meta_loss(collate(sdata.train))
    loss.backward()
    assert sgd.omega_r["h0_weight"].grad.abs().sum() > 0
    mapping = _learner(sdata, replace(CFG, arch="mapping"))
    assert mapping.adapt(batch).score(batch.s_user, batch.s_item).shape == batch.s_user.shape
    greedy = _learner(sdata, replace(CFG, eval_stop="greedy", stop_bias=5.0))
    greedy.adapt(batch)
    assert greedy.last_steps == 0  # p > 0.5 at the first step


def test_save_load_round_trip(sdata, tmp_path):
    m = _learner(sdata)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(3):
        loss = m.meta_loss(collate(sdata.train))
        opt.zero_grad()
        loss.backward()
        opt.step()
    batch = collate(sdata.test)
    users, items = batch.q_user[:, :20], batch.q_item[:, :20]
    before = m.adapt(batch).score(users, items)
    m.save(tmp_path / "model.pt")
    loaded, _ = load_learner(tmp_path / "model.pt")
    assert isinstance(loaded, S2Meta)
    assert torch.equal(before, loaded.adapt(batch).score(users, items))


def test_unprepared_learner_refuses(sdata):
    ds = sdata.dataset
    m = S2Meta(scenario_context(ds.n_users, ds.n_items), CFG)
    with pytest.raises(Exception, match="metarec scenario train"):
        m.adapt(collate(sdata.test))


@pytest.mark.parametrize("arch", ["interaction", "mapping"])
def test_grid_scores_equal_the_pair_scores(arch):
    torch.manual_seed(0)
    d, B, U, N = 8, 3, 7, 5
    theta = {k: torch.randn(B, *s, dtype=torch.float64) for k, s in recommender_shapes(arch, d).items()}
    eu, ei = torch.randn(B, U, d, dtype=torch.float64), torch.randn(B, N, d, dtype=torch.float64)
    pairs = recommend(arch, theta, eu.repeat_interleave(N, 1), ei.repeat(1, U, 1)).reshape(B, U, N)
    for budget in (1, 64, 1 << 24):  # one user per chunk, a few, all at once
        assert torch.allclose(recommend_grid(arch, theta, eu, ei, budget=budget), pairs, atol=1e-12)


def test_scenario_evaluation_through_the_grid_equals_the_pairs(sdata):
    from metarec.scenarios import evaluate_scenarios

    m = _learner(sdata)

    class PairsOnly:  # the same learner without score_grid: the pair-by-pair path
        eval = m.eval
        last_steps = property(lambda self: m.last_steps)

        def adapt(self, support):
            a = m.adapt(support)
            return replace(a, score_grid=None)

    grid = evaluate_scenarios(m, sdata.test, sdata.train_codes, batch_size=2)
    pairs = evaluate_scenarios(PairsOnly(), sdata.test, sdata.train_codes, batch_size=2)
    assert grid.keys() == pairs.keys()
    for k in grid:
        assert grid[k] == pytest.approx(pairs[k], abs=1e-9), k
