"""MAMO: shapes, memory read/write against hand computations, batched = per-task, padding, learning,
save/load (memories included), dependence on the support set, end to end."""

import copy
import math
from dataclasses import replace

import pytest
import torch

from metarec.engine.inner import InnerConfig, masked_task_loss
from metarec.engine.train import TrainConfig, fit
from metarec.evaluation.evaluate import evaluate_rating
from metarec.learners.base import load_learner
from metarec.learners.mamo import MAMO, MAMOConfig
from metarec.tasks import Task, collate
from tests.learners.common import as_double, assert_end_to_end, assert_same_predictions

CFG = MAMOConfig(emb_dim=4, inner=InnerConfig(steps=2, lr=0.05))


def make(prep, cfg=CFG, double=True):
    torch.manual_seed(0)
    m = MAMO(prep.ctx, cfg)
    return m.double() if double else m


def ragged(prep, n=5):
    out = []
    for j, t in enumerate(prep.train[:n]):
        k = 2 + 3 * j
        out.append(Task(t.owner, t.s_user[:k], t.s_item[:k], t.s_rating[:k], t.q_user, t.q_item, t.q_rating))
    return out


def test_shapes_and_memories_in_state_dict(prep):
    m = make(prep, double=False)
    b = collate(prep.valid[:3])
    a = m.adapt(b)
    assert a.score(b.q_user, b.q_item).shape == b.q_item.shape
    assert a.score_items(torch.arange(prep.ctx.n_items)).shape == (3, prep.ctx.n_items)
    loss = m.meta_loss(collate(prep.train[:4]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    state = m.state_dict()
    d, K = CFG.emb_dim, CFG.n_memory
    assert state["mem_profile"].shape == (K, m.encoder.user_dim)
    assert state["mem_pref"].shape == (K, 2 * d, 2 * d)
    assert state["mem_w_u0_weight"].shape == (K, *m.layers["u0"].weight.shape)


def test_memory_read_is_the_hand_computed_attention(prep):
    m = make(prep)
    du = m.encoder.user_dim
    mp = torch.zeros(3, du, dtype=torch.float64)
    mp[0, 0], mp[1, 1], mp[2, 0], mp[2, 1] = 1.0, 1.0, 1.0, 1.0  # e0, e1, e0 + e1
    m.mem_profile = mp
    p = torch.zeros(1, du, dtype=torch.float64)
    p[0, 0], p[0, 1] = 1.0, 2.0
    cos = [1 / math.sqrt(5), 2 / math.sqrt(5), 3 / (math.sqrt(5) * math.sqrt(2))]
    e = [math.exp(c) for c in cos]
    a = [x / sum(e) for x in e]
    att, bias, w_mem = m.read_memory(p)
    assert att[0].tolist() == pytest.approx(a, abs=1e-12)
    mw = m.mem_w_u1_bias  # (K, d)
    want = [sum(a[k] * mw[k, j].item() for k in range(3)) for j in range(mw.shape[1])]
    assert bias["u1.bias"][0].tolist() == pytest.approx(want, abs=1e-12)
    assert torch.allclose(w_mem[0], sum(a[k] * m.mem_pref[k] for k in range(3)), atol=1e-12)
    # the personalised initialisation of theta_u is phi_u - tau * b_u; the memory layer is M_uI
    _, fast = m._init_fast(p)
    assert torch.allclose(fast["u1.bias"][0], m.layers["u1"].bias - CFG.tau * bias["u1.bias"][0])
    assert torch.equal(fast["mem.weight"], w_mem)


def test_memory_writes_follow_the_update_rules(prep):
    m = make(prep)
    tasks = ragged(prep)
    b = as_double(collate(tasks))
    old = {k: v.clone() for k, v in m.state_dict().items() if k.startswith("mem_")}
    p = m.encoder.user(b.owner).detach()
    att = m.read_memory(p)[0].detach()
    # reference: each task's first support gradient w.r.t. theta_u, one task at a time
    grads = []
    for j, t in enumerate(tasks):
        one = as_double(collate([t]))
        _, fast = m._init_fast(p[j:j + 1])
        xs_u, xs_i = m.encoder.user(one.s_user), m.encoder.item(one.s_item)
        loss = masked_task_loss(m._forward(fast, xs_u, xs_i), one.s_rating, one.s_mask).sum()
        grads.append(torch.autograd.grad(loss, fast["u0.weight"])[0][0])
    with torch.no_grad():
        m.eval()
        m.meta_loss(b)
    assert all(torch.equal(old[k], m.state_dict()[k]) for k in old), "eval mode must not write"
    m.train()
    m.meta_loss(b)
    B, alpha, beta = len(tasks), CFG.alpha, CFG.beta
    want_p = alpha * sum(torch.outer(att[j], p[j]) for j in range(B)) / B + (1 - alpha) * old["mem_profile"]
    assert torch.allclose(m.mem_profile, want_p, atol=1e-12)
    want_w = beta * sum(att[j][:, None, None] * grads[j] for j in range(B)) / B + (1 - beta) * old["mem_w_u0_weight"]
    assert torch.allclose(m.mem_w_u0_weight, want_w, atol=1e-10)
    assert not torch.equal(m.mem_pref, old["mem_pref"])


def test_batched_meta_loss_equals_per_task(prep):
    """Second order through ragged, padded support sets: the batch's loss and meta-gradient are the mean of
    the tasks' own."""
    m = make(prep)
    m.eval()  # no memory writes between the calls
    tasks = ragged(prep)
    params = [p for p in m.parameters()]
    batched = m.meta_loss(as_double(collate(tasks)))
    g_b = torch.autograd.grad(batched, params, allow_unused=True)
    ref = sum(m.meta_loss(as_double(collate([t]))) for t in tasks) / len(tasks)
    g_r = torch.autograd.grad(ref, params, allow_unused=True)
    assert torch.allclose(batched, ref, atol=1e-10)
    for a, r in zip(g_b, g_r, strict=True):
        if a is None:
            assert r is None
        else:
            assert torch.allclose(a, r, atol=1e-9)


def test_user_tower_shortcut_is_exact(prep, monkeypatch):
    """User tasks run the user tower once per task; forcing the per-row path gives the same loss and scores."""
    m = make(prep)
    m.eval()
    b = as_double(collate(ragged(prep)))
    fast_loss = m.meta_loss(b)
    with torch.no_grad():
        fast_scores = m.adapt(b).score(b.q_user, b.q_item)
    monkeypatch.setattr("metarec.learners.mamo._owner_rows", lambda *a: False)
    assert torch.allclose(m.meta_loss(b), fast_loss, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(m.adapt(b).score(b.q_user, b.q_item), fast_scores, atol=1e-12)


def test_padding_does_not_change_the_scores(prep):
    m = make(prep)
    short = ragged(prep, 2)[0]
    long_ = prep.train[3]
    alone = as_double(collate([short]))
    padded = as_double(collate([short, long_]))
    assert padded.s_mask[0].sum() < padded.s_mask.shape[1]
    with torch.no_grad():
        s1 = m.adapt(alone).score(alone.q_user, alone.q_item)
        s2 = m.adapt(padded).score(padded.q_user, padded.q_item)
    assert torch.allclose(s1[0], s2[0, : s1.shape[1]], atol=1e-12)


def test_adaptation_depends_on_the_support_set(prep):
    m = make(prep)
    b = as_double(collate(prep.valid[:4]))
    other = copy.copy(b)
    other.s_rating = 6.0 - b.s_rating
    no_steps = make(prep, replace(CFG, inner=InnerConfig(steps=0)))
    with torch.no_grad():
        s = m.adapt(b).score(b.q_user, b.q_item)
        s_other = m.adapt(other).score(b.q_user, b.q_item)
        s_none = no_steps.adapt(b).score(b.q_user, b.q_item)
    assert not torch.allclose(s, s_other)
    assert not torch.allclose(s, s_none)


def test_fit_lowers_the_loss_and_save_load_round_trips(prep, tmp_path):
    m = make(prep, double=False)
    batch = collate(prep.train)
    m.eval()
    before = m.meta_loss(batch).item()
    tcfg = TrainConfig(epochs=4, meta_batch=8, lr=1e-2, patience=10)
    out = fit(m, prep.train, lambda x: evaluate_rating(x, prep.valid), tcfg, progress=False)
    m.eval()
    after = m.meta_loss(batch).item()
    assert after < 0.5 * before
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]
    m.save(tmp_path / "m.pt")
    back, _ = load_learner(tmp_path / "m.pt")
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert_same_predictions(m, back, prep)


@pytest.mark.parametrize("view", ["explicit", "implicit"])
def test_end_to_end(tiny_dataset, view, tmp_path):
    assert_end_to_end("mamo", tiny_dataset, view, tmp_path, {"emb_dim": 4, "inner.steps": 1})


def test_full_ranking_in_task_chunks_is_exact(prep, monkeypatch):
    from metarec.learners import mamo
    from tests.learners.common import assert_chunked_full_ranking_is_exact

    assert_chunked_full_ranking_is_exact(make(prep).eval(), prep, mamo, monkeypatch)
