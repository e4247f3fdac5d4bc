"""Meta-SGD and MetaCS: the MeLU network with learned inner rates, registered, trained, saved and reloaded."""

import pytest
import torch

from metarec.config import apply_overrides
from metarec.engine.train import TrainConfig, fit
from metarec.learners.base import load_learner
from metarec.learners.registry import LEARNERS
from metarec.tasks import collate


def _learner(prep, name):
    spec = LEARNERS[name]
    cfg = apply_overrides(spec.default(), {"emb_dim": 4, "hidden": (8, 8), "inner.lr": 0.05}, "learner.")
    torch.manual_seed(0)
    return spec.cls(prep.ctx, cfg)


@pytest.mark.parametrize("name,shape_of", [("metasgd", "per_param"), ("metacs", "scalar")])
def test_rates_are_learned_and_the_loss_drops(prep, name, shape_of):
    learner = _learner(prep, name)
    assert learner.config.inner.learn_lr == shape_of
    rates = [p.detach().clone() for n, p in learner.named_parameters() if n.startswith("inner_lr")]
    assert rates and (len(rates) == 6 if shape_of == "per_param" else rates[0].dim() == 0)
    batch = collate(prep.train)
    with torch.no_grad():
        before = learner.meta_loss(batch).item()
    fit(learner, prep.train, lambda m: {"loss": m.meta_loss(batch).item()},
        TrainConfig(epochs=5, meta_batch=8, lr=1e-2, select="loss", patience=10), progress=False)
    with torch.no_grad():
        after = learner.meta_loss(batch).item()
    assert after < 0.9 * before
    moved = [p.detach() for n, p in learner.named_parameters() if n.startswith("inner_lr")]
    assert any(not torch.equal(a, b) for a, b in zip(rates, moved, strict=True))  # the rates did learn


@pytest.mark.parametrize("name", ["metasgd", "metacs"])
def test_save_load_round_trip(prep, name, tmp_path):
    learner = _learner(prep, name)
    fit(learner, prep.train, lambda m: {"loss": 0.0}, TrainConfig(epochs=1, meta_batch=8, lr=1e-2, select="loss"),
        progress=False)
    learner.save(tmp_path / "m.pt")
    again, _ = load_learner(tmp_path / "m.pt")
    assert again.name == name and again.config == learner.config
    b = collate(prep.test)
    items = torch.arange(prep.ctx.n_items)
    assert torch.equal(learner.adapt(b).score_items(items), again.adapt(b).score_items(items))
