"""MWUF, the Meta Warm Up Framework (Zhu et al. SIGIR'21; survey 5.2, eq. 21): warm a cold item-ID embedding.

    v_warm = v_cold * h_scale(x_i) + h_shift(U_i)                                     (eq. 21)

``h_scale`` (the meta scaling network) reads the item's attribute vectors x_i (decade and genres, from the
frozen CTR backbone); ``h_shift`` (the meta shifting network) reads U_i, the mean ID vector of the users who
interacted with the item. Predictions use v_warm in the frozen backbone; the warm-up update of the protocol
changes v_cold (the item's own ID parameters) through the transformation.

Training on old items, as in the paper: a table of cold ID vectors, one per item, all initialised like a new
item's (the mean of the old items' trained ID vectors), is trained with the cold loss (predicting with
v_cold), while the two meta networks are trained with the warm loss (predicting with v_warm, v_cold taken as
a constant). The two losses reach disjoint parameters, so one Adam step on their sum (``fit()``) performs the
paper's two updates. The backbone stays frozen (the paper may also keep training it; the protocol here
freezes it for every method).

Open choices:
- A task is an old item with two minibatches of K interactions: the cold loss and U_i use the first (what has
  been observed), the warm loss the second (what comes next), as at warm-up time, where U_i is the mean over
  the users of the warm-up batches seen so far. In the cold phase (no user yet) U_i is the mean ID vector of
  all known users.
- Networks: one hidden layer of ``hidden`` units (ReLU). The last layers start near a neutral transform:
  small uniform weights (+-0.01), bias 1 for the scaling and 0 for the shifting network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metarec.learners.base import Adapted, Context, Learner
from metarec.learners.metaemb import item_adapted
from metarec.nets.deepfm import BackboneConfig, DeepFM, WarmUpdate, sgd_update
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class MWUFConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    update: WarmUpdate = field(default_factory=WarmUpdate)
    hidden: int = 16


def _net(inp: int, hidden: int, out: int, bias: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))
    nn.init.uniform_(net[2].weight, -0.01, 0.01)
    nn.init.constant_(net[2].bias, bias)
    return net


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, S, d), mask (B, S) -> (B, d) mean over the real entries (zeros for an empty row)."""
    m = mask.to(x.dtype)[..., None]  # (B, S, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class MWUF(Learner):
    name = "mwuf"
    loss_kind = "bce"

    def __init__(self, ctx: Context, config: MWUFConfig, backbone: DeepFM | None = None):
        super().__init__(ctx, config)
        self.backbone = backbone if backbone is not None else DeepFM(ctx, config.backbone)
        self.backbone.requires_grad_(False)
        d = config.backbone.emb_dim
        self.scale_net = _net(self.backbone.n_item_side * d, config.hidden, d, 1.0)
        self.shift_net = _net(d, config.hidden, d, 0.0)
        self.register_buffer("mean_item", torch.zeros(d))  # init of every cold vector
        self.register_buffer("mean_user", torch.zeros(d))  # U_i of an item nobody has interacted with yet
        self.cold = nn.Parameter(torch.zeros(ctx.n_items, d))  # (n_items, d) cold vectors of training items
        if backbone is not None:
            with torch.no_grad():
                self.mean_item.copy_(backbone.old_item_table().mean(0))
                known = backbone.user_ids[backbone.user_ids > 0]
                if len(known):
                    self.mean_user.copy_(backbone.user_id(known).mean(0))
                self.cold.copy_(self.mean_item.expand_as(self.cold))

    # --- the warm-up interface (metarec/ctr/warmup.py) ----------------------------------------------------
    def init_embeddings(self, items: Tensor) -> Tensor:
        """(N,) -> (N, d): a new item's cold vector starts at the mean old-item vector."""
        return self.mean_item.expand(len(items), -1).clone()

    def effective(self, raw: Tensor, items: Tensor, user_mean: Tensor | None) -> Tensor:
        """Eq. 21: raw (N, d) cold vectors, items (N,), user_mean (N, d) or None (nobody yet) -> (N, d)."""
        x = self.backbone.item_side(items).flatten(-2).detach()  # (N, n_side * d)
        if user_mean is None:
            user_mean = self.mean_user.expand(len(items), -1)
        return raw * self.scale_net(x) + self.shift_net(user_mean.detach())

    # --- the learner verbs --------------------------------------------------------------------------------
    def _losses(self, batch: TaskBatch) -> tuple[Tensor, Tensor]:
        bb = self.backbone
        v_cold = self.cold[batch.owner]  # (B, d)
        cold = bb.item_loss(v_cold, batch.s_user, batch.s_item, batch.s_rating, batch.s_mask)  # (B,)
        u = masked_mean(bb.user_vec(batch.s_user), batch.s_mask)  # (B, d) U_i from the observed users
        v_warm = self.effective(v_cold.detach(), batch.owner, u)  # (B, d)
        warm = bb.item_loss(v_warm, batch.q_user, batch.q_item, batch.q_rating, batch.q_mask)  # (B,)
        return cold, warm

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        cold, warm = self._losses(batch)
        return cold.mean() + warm.mean()

    def valid_loss(self, batch: TaskBatch) -> Tensor:
        """Model selection: the warm loss of held-out items whose cold vectors are still the initial ones."""
        with torch.no_grad():
            v = self.init_embeddings(batch.owner)
            u = masked_mean(self.backbone.user_vec(batch.s_user), batch.s_mask)
            v_warm = self.effective(v, batch.owner, u)
            return self.backbone.item_loss(v_warm, batch.q_user, batch.q_item, batch.q_rating, batch.q_mask).mean()

    def adapt(self, support: TaskBatch) -> Adapted:
        """Observe the support (its users give U_i), take the warm-up update of the cold vector, score with
        the warmed vector."""
        owners = support.owner
        u = masked_mean(self.backbone.user_vec(support.s_user), support.s_mask).detach()  # (B, d)

        def eff(raw):
            return self.effective(raw, owners, u)

        raw, _ = sgd_update(self.backbone, self.init_embeddings(owners), eff, support.s_user, support.s_item,
                            support.s_rating, support.s_mask, self.config.update, "none")
        with torch.no_grad():
            v = eff(raw)
        return item_adapted(self.backbone, owners, v)
