"""Meta-Embedding: a true second-order meta-gradient (finite differences), training, adapt, save/load, CLI."""

from dataclasses import replace

import pytest
import torch

from metarec.cli import main
from metarec.ctr.warmup import item_tasks
from metarec.engine.train import TrainConfig, fit
from metarec.errors import MetarecError
from metarec.learners.base import load_learner
from metarec.learners.metaemb import MetaEmb, MetaEmbConfig
from metarec.nets.deepfm import BackboneConfig, DeepFM, WarmUpdate
from metarec.tasks import collate
from tests.ctr.warmup_data import BCFG, WCFG, trained_backbone


@pytest.fixture(scope="module")
def setup():
    data, bb = trained_backbone()
    tasks = item_tasks(data.split.base, data.split.old_items, WCFG.k, seed=0)
    return data, bb, tasks


def _tiny_double(data, first_order=False):
    """A float64 model with large random weights, so that second-order terms are far from negligible."""
    torch.manual_seed(1)
    bcfg = BackboneConfig(emb_dim=3, hidden=(4,), init_std=0.7)
    bb = DeepFM(data.ctx, bcfg).double()
    cfg = MetaEmbConfig(backbone=bcfg, update=WarmUpdate(lr=2.0, steps=2), first_order=first_order)
    m = MetaEmb(data.ctx, cfg, backbone=bb).double()
    torch.nn.init.normal_(m.generator.weight, std=1.0)
    m.scale.fill_(1.0)
    return m


def _double(batch):
    return replace(batch, s_rating=batch.s_rating.double(), q_rating=batch.q_rating.double())


def test_meta_gradient_is_second_order_finite_differences(setup):
    data, _, tasks = setup
    batch = _double(collate(tasks[:4]))
    m = _tiny_double(data)
    w = m.generator.weight
    (g,) = torch.autograd.grad(m.meta_loss(batch), w)
    eps = 1e-6
    fd = torch.zeros_like(w)
    with torch.no_grad():
        for idx in [(0, 0), (1, 2), (2, 5), (0, 4)]:
            w[idx] += eps
            up = m.meta_loss(batch).item()
            w[idx] -= 2 * eps
            down = m.meta_loss(batch).item()
            w[idx] += eps
            fd[idx] = (up - down) / (2 * eps)
    picked = fd != 0
    torch.testing.assert_close(g[picked], fd[picked], rtol=1e-5, atol=1e-8)
    # the first-order variant drops the second-order term: its gradient is measurably different
    fo = _tiny_double(data, first_order=True)
    (g1,) = torch.autograd.grad(fo.meta_loss(batch), fo.generator.weight)
    assert (g1[picked] - fd[picked]).abs().max() > 1e-3 * fd[picked].abs().max()


def test_meta_training_lowers_the_meta_loss(setup):
    data, bb, tasks = setup
    torch.manual_seed(0)
    m = MetaEmb(data.ctx, MetaEmbConfig(backbone=BCFG, update=WCFG.update), backbone=bb)
    batch = collate(tasks)
    before = m.meta_loss(batch).item()
    out = fit(m, tasks, lambda x: {"loss": float(x.valid_loss(batch))},
              TrainConfig(epochs=5, meta_batch=16, lr=3e-2, patience=10, select="loss"), progress=False)
    assert m.meta_loss(batch).item() < before - 0.01
    assert out["best"]["loss"] < before
    assert not any(p.requires_grad for p in bb.parameters())  # the backbone stayed frozen


def test_adapt_shapes_and_save_load_round_trip(setup, tmp_path):
    data, bb, tasks = setup
    torch.manual_seed(0)
    m = MetaEmb(data.ctx, MetaEmbConfig(backbone=BCFG, update=WCFG.update), backbone=bb)
    torch.nn.init.normal_(m.generator.weight, std=0.3)
    batch = collate(tasks[:6])
    a = m.adapt(batch)
    scores = a.score(batch.q_user, batch.q_item)
    assert scores.shape == batch.q_user.shape
    with pytest.raises(MetarecError):
        a.score_items(torch.arange(3))
    # the update moved the generated vectors: adapted scores differ from the unadapted ones
    v0 = m.init_embeddings(batch.owner)
    plain = bb.logits(batch.q_user, batch.q_item, v0[:, None].expand(-1, batch.q_user.shape[1], -1))
    assert not torch.allclose(scores, plain)
    m.save(tmp_path / "m.pt")
    m2, _ = load_learner(tmp_path / "m.pt")
    assert torch.equal(m2.init_embeddings(data.new_items), m.init_embeddings(data.new_items))
    assert torch.equal(m2.adapt(batch).score(batch.q_user, batch.q_item), scores)


def test_rating_commands_point_to_the_warmup_protocol(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--learner", "metaemb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--protocol warmup" in err and "does not run on the user-cold" in err
