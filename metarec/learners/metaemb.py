"""Meta-Embedding (Pan et al. SIGIR'19; survey 5.2): generate a new item's ID embedding from its attributes.

A generator maps the item's attribute vectors (release decade, genres), taken from the frozen CTR backbone
(``metarec/nets/deepfm.py``), to an initial ID vector ``v_ini = scale * tanh(W x)``. It is meta-trained on
old items. Each task is one old item with two disjoint minibatches of K interactions, a and b:

    L_cold = loss(v_ini, D_a)                        (the cold-start phase: predict with v_ini)
    v_warm = v_ini - lr * grad_v L_cold(v_ini, D_a)  (the warm-up update on the first minibatch)
    L_warm = loss(v_warm, D_b)
    L_meta = delta * L_cold + (1 - delta) * L_warm

with the gradient through the update kept (``create_graph``: second order; ``first_order=True`` drops it).
A meta-batch of items is one tensor computation: the (B, d) generated vectors, (B, K) minibatches, the
per-item gradients of the summed per-item losses (``sgd_update``). The backbone is frozen throughout.

Settings: delta = 0.1 (the weight of the cold loss in the authors' code), generator trained with Adam at 1e-3
(``metarec warmup`` uses ``fit()``), K as in the protocol. Open choices:
- The update inside the meta-objective is the protocol's warm-up update (``WarmUpdate``: ``steps`` plain
  gradient steps of rate ``lr`` on the item's K interactions), so the generator is trained for exactly the
  update it will get at warm-up time. (The authors' code used a smaller inner rate, 1e-4, than its warm-up
  optimiser; set ``update`` to reproduce that.)
- The generator is the authors' simplest one (one dense layer, tanh, no bias); the tanh range ``scale`` is
  set, when the learner is attached to a trained backbone, to the largest absolute entry of the old items'
  ID vectors (the authors divided by a constant 5 for their initialisation scale).
- MovieLens has no ad-style content ids; the attributes are the backbone's decade and genre vectors.

``adapt(support)``: the tasks are items (``owner`` = item); the generated vector is updated once on the
support (the warm-up update) and ``score(users, items)`` gives (B, Q) logits for the task's item.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context, Learner
from metarec.nets.deepfm import BackboneConfig, DeepFM, WarmUpdate, sgd_update
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class MetaEmbConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    update: WarmUpdate = field(default_factory=WarmUpdate)
    delta: float = 0.1  # weight of the cold-start loss; 1 - delta on the warm-up loss
    first_order: bool = False


class MetaEmb(Learner):
    name = "metaemb"
    loss_kind = "bce"

    def __init__(self, ctx: Context, config: MetaEmbConfig, backbone: DeepFM | None = None):
        super().__init__(ctx, config)
        self.backbone = backbone if backbone is not None else DeepFM(ctx, config.backbone)
        self.backbone.requires_grad_(False)
        d = config.backbone.emb_dim
        self.generator = nn.Linear(self.backbone.n_item_side * d, d, bias=False)
        self.register_buffer("scale", torch.tensor(0.2))
        if backbone is not None:
            self.scale.fill_(float(backbone.old_item_table().detach().abs().max()))

    # --- the warm-up interface (metarec/ctr/warmup.py) ----------------------------------------------------
    def init_embeddings(self, items: Tensor) -> Tensor:
        """(N,) item indices -> (N, d) generated initial ID vectors."""
        x = self.backbone.item_side(items).flatten(-2).detach()  # (N, n_side * d) frozen attribute vectors
        return self.scale * torch.tanh(self.generator(x))

    def effective(self, raw: Tensor, items: Tensor, user_mean: Tensor) -> Tensor:
        return raw

    # --- the learner verbs --------------------------------------------------------------------------------
    def _losses(self, batch: TaskBatch, graph: str) -> tuple[Tensor, Tensor]:
        """(B,) cold losses on the support and warm losses on the query after the update."""
        bb = self.backbone
        v_ini = self.init_embeddings(batch.owner)  # (B, d)
        v_warm, cold = sgd_update(bb, v_ini, lambda v: v, batch.s_user, batch.s_item, batch.s_rating, batch.s_mask,
                                  self.config.update, graph)
        warm = bb.item_loss(v_warm, batch.q_user, batch.q_item, batch.q_rating, batch.q_mask)  # (B,)
        return cold, warm

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        cold, warm = self._losses(batch, "first" if self.config.first_order else "second")
        d = self.config.delta
        return (d * cold + (1 - d) * warm).mean()

    def valid_loss(self, batch: TaskBatch) -> Tensor:
        """The meta-objective without a graph (model selection)."""
        with torch.no_grad():
            cold, warm = self._losses(batch, "none")
        d = self.config.delta
        return (d * cold + (1 - d) * warm).mean()

    def adapt(self, support: TaskBatch) -> Adapted:
        owners = support.owner
        v, _ = sgd_update(self.backbone, self.init_embeddings(owners), lambda r: r, support.s_user, support.s_item,
                          support.s_rating, support.s_mask, self.config.update, "none")
        return item_adapted(self.backbone, owners, v)


def item_adapted(backbone: DeepFM, owners: Tensor, v: Tensor) -> Adapted:
    """Scoring closed over B item tasks' adapted ID vectors v (B, d): logits of (user, task item) pairs."""
    v = v.detach()

    def score(users: Tensor, items: Tensor) -> Tensor:  # (B, Q) -> (B, Q) logits
        return backbone.logits(users, items, v[:, None, :].expand(-1, users.shape[1], -1))

    def score_items(items: Tensor) -> Tensor:
        raise MetarecError("item warm-up tasks score (user, item) pairs with score(users, items); there is no "
                           "user to rank items for")

    return Adapted(owners, score, score_items)
