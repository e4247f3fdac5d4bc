"""Non-neural baselines fitted in closed form on the meta-train interactions.

- ``itempop``: ranks items by their meta-train interaction count; predicts a rating by the item's
  mean rating shrunk towards the global mean.
- ``bias``: the classic bias model: global mean + item bias learned on meta-train + the new user's offset
  estimated from the support set (both shrunk: b_i = sum(r - mu) / (lambda_i + n_i),
  b_u = sum(r - mu - b_i) / (lambda_u + n_u)). Hard to beat on MovieLens; the floor for rating learners.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metarec.learners.base import Adapted, Context, Learner
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class BiasConfig:
    reg_item: float = 10.0
    reg_user: float = 5.0
    use_user_offset: bool = True

    def __post_init__(self):
        from metarec.checks import check

        check(self, "learner", nonneg=("reg_item", "reg_user"))


class _ItemStatsLearner(Learner):
    meta_trained = False

    def __init__(self, ctx: Context, config: BiasConfig):
        super().__init__(ctx, config)
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("item_bias", torch.zeros(ctx.n_items))
        self.register_buffer("item_count", torch.zeros(ctx.n_items))

    def fit_direct(self, train_inter) -> None:
        mu, bi = item_biases(train_inter, self.ctx.n_items, self.config.reg_item)
        self.mu.fill_(mu)
        self.item_bias.copy_(bi)
        self.item_count.copy_(torch.from_numpy(np.bincount(train_inter["item"].to_numpy(),
                                                           minlength=self.ctx.n_items)).float())

    def _user_offset(self, support: TaskBatch) -> Tensor:
        if not self.config.use_user_offset:
            return torch.zeros(len(support))
        return user_offsets(support, self.mu, self.item_bias, self.config.reg_user)


def item_biases(train_inter, n_items: int, reg_item: float) -> tuple[float, Tensor]:
    """The global mean and the shrunk item biases ``b_i = sum(r - mu) / (reg_item + n_i)`` (float32 (I,))."""
    r = train_inter["rating"].to_numpy(np.float64)
    it = train_inter["item"].to_numpy()
    mu = float(r.mean())
    n = np.bincount(it, minlength=n_items).astype(np.float64)
    s = np.bincount(it, weights=r - mu, minlength=n_items)
    return mu, torch.from_numpy(s / (reg_item + n)).float()


def user_offsets(support: TaskBatch, mu: Tensor, item_bias: Tensor, reg_user: float) -> Tensor:
    """(B,) each task's shrunk offset ``sum(r - mu - b_i) / (reg_user + n)`` over its support ratings."""
    m = support.s_mask.to(item_bias.dtype)
    resid = (support.s_rating - mu - item_bias[support.s_item]) * m  # (B, S)
    return resid.sum(1) / (reg_user + m.sum(1))


class BiasModel(_ItemStatsLearner):
    name = "bias"

    def adapt(self, support: TaskBatch) -> Adapted:
        bu = self._user_offset(support)  # (B,)

        def score(users, items):
            return self.mu + self.item_bias[items] + bu[:, None]

        def score_items(items):
            return (self.mu + self.item_bias[items])[None, :] + bu[:, None]

        return Adapted(support.owner, score, score_items)


class ItemPop(_ItemStatsLearner):
    name = "itempop"

    def adapt(self, support: TaskBatch) -> Adapted:
        B = len(support)

        def score(users, items):
            return self.mu + self.item_bias[items]

        def score_items(items):
            return self.item_count[items][None, :].expand(B, len(items))

        return Adapted(support.owner, score, score_items)
