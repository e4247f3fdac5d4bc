"""LWA, Linear Weight Adaptation (Vartak et al. NIPS'17, "A Meta-Learning Perspective on Cold-Start
Recommendations for Items"; survey 5.1/5.2, parameter generation).

A task is a history of (item, label) pairs. Every item goes through one item embedding network F (here
:class:`~metarec.learners.feature_mlp.FeatureEncoder`'s item part: release decade and genres, optionally an
item ID). The history is summarised by two class representatives, the mean embedding of its negative items
and of its positive items::

    R0 = mean{F(t) : label 0},   R1 = mean{F(t) : label 1}                    (B, D) each, masked means

and a meta-network G turns them into the weights of a per-task logistic regression::

    w = G(R0, R1) = a0 * R0 + a1 * R1,    P(y = 1 | t) = sigmoid(w . F(t) + b)

with a0, a1 and b learned across tasks (the paper's LWA: a linear combination of the representatives and
a bias shared by all tasks). No gradient step happens at adaptation time: the "adaptation" is one forward
pass of G, so meta-training is plain back-propagation of the query loss through G and F.

Vartak et al. target item cold start: a task is a user, her history the tweets she engaged with or not,
and the items to score are new tweets known only by their features. Here the same computation runs on
user-specific tasks of any protocol; on user-cold the new entity is the user, whose few interactions are
the history (the survey lists LWA under user-specific tasks).

Open choices (ours, the paper leaves them open or has no counterpart):
- ``coef="scalar"`` (default): a0, a1 are scalars, a linear combination as in the paper's equation;
  ``coef="vector"`` makes them per-dimension (element-wise products) and ``coef="matrix"`` (D x D) maps
  (w = A0 R0 + A1 R1, the reading of the RecBole-MetaRec reimplementation), each a superset of the last.
  Initialised at (-1, +1) / sqrt(D) (times the identity): the "positive prototype minus negative
  prototype" direction, scaled so that initial logits are O(1).
- F is FeatureEncoder's item part (field embeddings concatenated, as in MeLU) followed by an MLP,
  ``item_layers`` (64, 32) by default (the paper's F is a learned network over tweet features; RecBole-MetaRec
  uses embedding -> hidden -> embedding). Without it w . F(t) is linear in the field embeddings and LWA
  barely beats the base rate on ml-100k (test Recall@10 0.013-0.017 against 0.036-0.051 with it, user-cold
  implicit, 5 epochs, seeds 0-2); ``item_layers=[]`` gives the bare encoder.
- An empty class (no negative or no positive in the support set) has the zero vector as representative.
- Implicit view (``loss="bce"``): labels are 1 (positives) and 0 (sampled negatives), the classes of the
  paper; the score returned is the logit (sigmoid is monotone, BCE-with-logits trains it).
- Explicit view (``loss="mse"``): the output is linear, w . F(t) + b (+ the task's mean support rating when
  ``center``, so that the generated weights model the user's deviations from her own mean), trained with
  MSE; the two classes are the support ratings >= ``threshold`` (liked) and below it.
- User side information is not used: the task owner is represented by her history only, as in the paper.

Sources: the survey's account (5.2: w_i = w_p R^p + w_n R^n, the generated weights of a logistic
regression) and the RecBole-MetaRec reimplementation (nuster1128/RecBole-MetaRec, read, not copied); the
full paper text was not available to us, so which coefficient shape the paper uses is left as ``coef``.

:class:`HistoryLearner` holds what LWA and NLBA (``metarec/learners/nlba.py``) share: the encoder, the
class representatives, the meta-loss and ``adapt``. Everything is batched over the tasks of a meta-batch
with masks; no per-task Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metarec.engine.inner import masked_task_loss
from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context, Learner
from metarec.nets.features import FeatureEncoder
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class LWAConfig:
    emb_dim: int = 32
    item_id: bool = False  # add an item-ID embedding to F (index 0 for items unseen in meta-train)
    item_layers: tuple[int, ...] = (64, 32)  # MLP on top of the field embeddings in F (last layer linear)
    coef: str = "scalar"  # w = a0 R0 + a1 R1 with a scalar (paper), "vector" (per-dimension) or "matrix" a
    loss: str = "mse"  # "mse" (explicit ratings, linear output) or "bce" (implicit, logistic regression)
    threshold: float = 4.0  # explicit view: support ratings >= threshold form the positive class
    center: bool = True  # explicit view: add the task's mean support rating to the output

    def __post_init__(self):
        from metarec.checks import check

        check(self, "learner", pos_int=("emb_dim",), pos_list=("item_layers",),
              choices={"coef": ("scalar", "vector", "matrix"), "loss": ("mse", "bce")})


def class_masks(rating: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """(B, 2, S) float: row 0 marks the real support entries below ``threshold`` (class 0), row 1 the rest."""
    pos = mask & (rating >= threshold)  # (B, S)
    neg = mask & ~pos
    return torch.stack([neg, pos], 1).to(rating.dtype)


def class_representatives(x: Tensor, masks: Tensor) -> Tensor:
    """Masked mean embedding of each class: x (B, S, D), masks (B, 2, S) -> (B, 2, D) = [R0, R1].

    A class with no member gets the zero vector."""
    counts = masks.sum(-1, keepdim=True).clamp_min(1.0)  # (B, 2, 1)
    return torch.bmm(masks, x) / counts  # (B, 2, D)


def support_mean(rating: Tensor, mask: Tensor) -> Tensor:
    """(B,) mean of each task's real support ratings (0 for an empty support set)."""
    m = mask.to(rating.dtype)
    return (rating * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class HistoryLearner(Learner):
    """A learner whose task state is generated from the support set's class representatives.

    Subclasses implement ``_task_state(reps, offset)`` (reps (B, 2, D), offset (B,)) -> dict of (B, ...)
    tensors and ``_logits(state, x)`` for item embeddings x of shape (B, N, D) (per-task items) or
    (N, D) (the same candidates for every task) -> (B, N).
    """

    def __init__(self, ctx: Context, config):
        super().__init__(ctx, config)
        if config.loss not in ("mse", "bce"):
            raise MetarecError(f"unknown loss {config.loss!r}: choose mse or bce")
        self.loss_kind = config.loss
        self.encoder = FeatureEncoder(ctx, config.emb_dim, config.item_id)
        layers, d = [], self.encoder.item_dim
        for h in config.item_layers:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.item_net = nn.Sequential(*layers[:-1])  # empty: the identity
        self.dim = d

    def embed(self, items: Tensor) -> Tensor:
        """F: item indices (...,) -> (..., D), computed once per distinct item (a meta-batch repeats many)."""
        uniq, inv = torch.unique(items, return_inverse=True)  # (U,), inv shaped like items
        return self.item_net(self.encoder.item(uniq))[inv]  # (U, D) gathered back to (..., D)

    def _task_state(self, reps: Tensor, offset: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _logits(self, state: dict[str, Tensor], x: Tensor) -> Tensor:
        raise NotImplementedError

    def representatives(self, x_s: Tensor, rating: Tensor, mask: Tensor) -> Tensor:
        """x_s (B, S, D) support embeddings -> (B, 2, D) class representatives [R0, R1]."""
        threshold = 0.5 if self.loss_kind == "bce" else self.config.threshold
        return class_representatives(x_s, class_masks(rating, mask, threshold))

    def task_state(self, x_s: Tensor, rating: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The generated per-task parameters from the support embeddings x_s (B, S, D)."""
        reps = self.representatives(x_s, rating, mask)  # (B, 2, D)
        if self.loss_kind == "mse" and self.config.center:
            offset = support_mean(rating, mask)  # (B,)
        else:
            offset = rating.new_zeros(rating.shape[0])
        return self._task_state(reps, offset)

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        S = batch.s_item.shape[1]
        x = self.embed(torch.cat([batch.s_item, batch.q_item], 1))  # (B, S+Q, D): one encoder pass
        state = self.task_state(x[:, :S], batch.s_rating, batch.s_mask)
        pred = self._logits(state, x[:, S:])  # (B, Q)
        return masked_task_loss(pred, batch.q_rating, batch.q_mask, self.loss_kind).mean()

    def adapt(self, support: TaskBatch) -> Adapted:
        with torch.no_grad():
            x_s = self.embed(support.s_item)  # (B, S, D)
            state = self.task_state(x_s, support.s_rating, support.s_mask)
        def score(users: Tensor, items: Tensor) -> Tensor:
            return self._logits(state, self.embed(items))  # (B, Q)

        def score_items(items: Tensor) -> Tensor:
            return self._logits(state, self.embed(items))  # (N, D) -> (B, N)

        return Adapted(support.owner, score, score_items)


class LWA(HistoryLearner):
    name = "lwa"

    def __init__(self, ctx: Context, config: LWAConfig):
        super().__init__(ctx, config)
        scale = 1.0 / math.sqrt(self.dim)
        if config.coef == "scalar":
            self.coef = nn.Parameter(torch.tensor([-scale, scale]))  # (2,): a0, a1
        elif config.coef == "vector":
            self.coef = nn.Parameter(torch.tensor([-scale, scale])[:, None].repeat(1, self.dim))  # (2, D)
        elif config.coef == "matrix":
            self.coef = nn.Parameter(torch.tensor([-scale, scale])[:, None, None] * torch.eye(self.dim))  # (2, D, D)
        else:
            raise MetarecError(f"unknown coef {config.coef!r}: choose scalar, vector or matrix")
        self.bias = nn.Parameter(torch.zeros(()))  # b, shared by all tasks

    def generate(self, reps: Tensor) -> Tensor:
        """G: class representatives (B, 2, D) -> logistic-regression weights w (B, D)."""
        if self.coef.dim() == 3:  # (2, D, D): w = A0 R0 + A1 R1
            return torch.einsum("cde,bce->bd", self.coef, reps)  # (B, D)
        coef = self.coef[:, None] if self.coef.dim() == 1 else self.coef  # (2, 1) or (2, D)
        return (coef * reps).sum(1)  # (B, D) = a0 * R0 + a1 * R1

    def _task_state(self, reps: Tensor, offset: Tensor) -> dict[str, Tensor]:
        return {"w": self.generate(reps), "b": self.bias + offset}  # (B, D), (B,)

    def _logits(self, state: dict[str, Tensor], x: Tensor) -> Tensor:
        w, b = state["w"], state["b"]
        if x.dim() == 2:  # (N, D): the same items for every task
            return w @ x.T + b[:, None]  # (B, N)
        return torch.bmm(x, w[:, :, None]).squeeze(-1) + b[:, None]  # (B, N)
