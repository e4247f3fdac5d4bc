"""MeLU anchored on the bias model (``learner.residual``): the network predicts what the bias model leaves."""

from __future__ import annotations

import pytest
import torch

from metarec.engine.inner import InnerConfig
from metarec.errors import MetarecError
from metarec.learners.baselines import BiasConfig, BiasModel
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig
from metarec.tasks import collate
from tests.learners.common import assert_fit_lowers_query_loss, user_cold_prep


def test_residual_scores_are_the_bias_model_plus_the_adapted_network(tiny_dataset):
    prep = user_cold_prep(tiny_dataset, "explicit")
    cfg = FeatureMLPConfig(residual=True, inner=InnerConfig(steps=2, lr=1e-2, first_order=True))
    torch.manual_seed(0)
    net = FeatureMLP(prep.ctx, cfg)
    net.prefit(prep.split.train)
    bias = BiasModel(prep.ctx, BiasConfig())
    bias.fit_direct(prep.split.train)
    b = collate(prep.test)
    items = torch.arange(prep.ctx.n_items)
    with torch.no_grad():
        base = bias.adapt(b)
        resid = b.__class__(**{**b.__dict__, "s_rating": b.s_rating - base.score(b.s_user, b.s_item)})
        plain = net._adapt_net(resid)  # the network adapted to the bias model's support residuals
        got = net.adapt(b)
        torch.testing.assert_close(got.score(b.q_user, b.q_item),
                                   base.score(b.q_user, b.q_item) + plain.score(b.q_user, b.q_item))
        torch.testing.assert_close(got.score_items(items), base.score_items(items) + plain.score_items(items))
        # the residual targets are not the ratings: the anchor changes what the network learns
        assert not torch.allclose(got.score(b.q_user, b.q_item), net._adapt_net(b).score(b.q_user, b.q_item))


def test_residual_learns_and_is_explicit_only(tiny_dataset):
    prep = user_cold_prep(tiny_dataset, "explicit")
    torch.manual_seed(0)
    net = FeatureMLP(prep.ctx, FeatureMLPConfig(residual=True, inner=InnerConfig(steps=1, lr=1e-2)))
    net.prefit(prep.split.train)
    assert_fit_lowers_query_loss(net, prep, lr=1e-2)
    with pytest.raises(MetarecError, match="explicit"):
        FeatureMLPConfig(residual=True, loss="bce")
