"""MWUF: eq. 21 by hand, scaling and shifting change the vector, gradient routing, training, save/load."""

import pytest
import torch

from metarec.cli import main
from metarec.ctr.warmup import item_tasks
from metarec.engine.train import TrainConfig, fit
from metarec.learners.base import load_learner
from metarec.learners.mwuf import MWUF, MWUFConfig, masked_mean
from metarec.tasks import collate
from tests.ctr.warmup_data import BCFG, WCFG, trained_backbone


@pytest.fixture(scope="module")
def setup():
    data, bb = trained_backbone()
    tasks = item_tasks(data.split.base, data.split.old_items, WCFG.k, seed=0)
    return data, bb, tasks


def _model(data, bb, spread=True):
    torch.manual_seed(0)
    m = MWUF(data.ctx, MWUFConfig(backbone=BCFG, update=WCFG.update, hidden=8), backbone=bb)
    if spread:  # move the networks away from their near-neutral start
        for p in [*m.scale_net.parameters(), *m.shift_net.parameters()]:
            torch.nn.init.normal_(p, std=0.5)
    return m


def test_eq21_and_that_scaling_and_shifting_change_the_vector(setup):
    data, bb, _ = setup
    m = _model(data, bb)
    items = data.new_items[:5]
    raw = torch.randn(5, BCFG.emb_dim)
    u = torch.randn(5, BCFG.emb_dim)
    out = m.effective(raw, items, u)
    x = bb.item_side(items).flatten(-2)
    torch.testing.assert_close(out, raw * m.scale_net(x) + m.shift_net(u))
    assert out.shape == raw.shape and not torch.allclose(out, raw)
    assert not torch.allclose(m.effective(raw, items, u + 1.0), out)  # the shift follows the users
    other = data.new_items[5:10]
    differs = (bb.item_side(other) != bb.item_side(items)).flatten(1).any(1)
    assert differs.any()
    assert not torch.allclose(m.effective(raw, other, u)[differs], out[differs])  # the scale follows the item
    torch.testing.assert_close(m.effective(raw, items, None), raw * m.scale_net(x) + m.shift_net(m.mean_user))


def test_start_is_near_identity_and_new_vectors_start_at_the_mean(setup):
    data, bb, _ = setup
    m = _model(data, bb, spread=False)
    raw = m.init_embeddings(data.new_items)
    torch.testing.assert_close(raw, bb.old_item_table().mean(0).expand_as(raw))
    eff = m.effective(raw, data.new_items, None)
    assert (eff - raw).abs().max() < 0.05 * raw.abs().max() + 0.05


def test_cold_loss_trains_the_cold_table_and_warm_loss_the_meta_networks(setup):
    data, bb, tasks = setup
    m = _model(data, bb)
    batch = collate(tasks[:8])
    cold, warm = m._losses(batch)
    meta = [*m.scale_net.parameters(), *m.shift_net.parameters()]
    g_cold = torch.autograd.grad(cold.sum(), [m.cold, *meta], allow_unused=True)
    g_warm = torch.autograd.grad(warm.sum(), [m.cold, *meta], allow_unused=True)
    assert g_cold[0].abs().sum() > 0 and all(g is None for g in g_cold[1:])
    assert g_warm[0] is None and all(g is not None and g.abs().sum() > 0 for g in g_warm[1:])
    rows = torch.zeros(len(m.cold), dtype=torch.bool)
    rows[batch.owner] = True
    assert g_cold[0][~rows].abs().sum() == 0  # only the batch's items' cold vectors get a gradient


def test_training_lowers_the_warm_loss_and_round_trips(setup, tmp_path):
    data, bb, tasks = setup
    m = _model(data, bb, spread=False)
    batch = collate(tasks)
    before = m.valid_loss(batch).item()
    fit(m, tasks, lambda x: {"loss": float(x.valid_loss(batch))},
        TrainConfig(epochs=5, meta_batch=16, lr=3e-2, patience=10, select="loss"), progress=False)
    assert m.valid_loss(batch).item() < before - 0.002
    a = m.adapt(collate(tasks[:6]))
    q = collate(tasks[:6])
    scores = a.score(q.q_user, q.q_item)
    assert scores.shape == q.q_user.shape
    u = masked_mean(bb.user_vec(q.s_user), q.s_mask)
    assert not torch.allclose(m.effective(m.init_embeddings(q.owner), q.owner, u), m.init_embeddings(q.owner))
    m.save(tmp_path / "mwuf.pt")
    m2, _ = load_learner(tmp_path / "mwuf.pt")
    assert torch.equal(m2.adapt(q).score(q.q_user, q.q_item), scores)


def test_rating_commands_point_to_the_warmup_protocol(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--learners", "mwuf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--protocol warmup" in err and "does not run on the user-cold" in err
