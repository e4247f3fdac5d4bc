"""``metafold``: a meta-learner whose inner loop is the fold-in's closed-form ridge solve (metarec's design).

MAML adapts a network by a few gradient steps on the support set; on MovieLens those steps hardly move a
feature network (docs/results/melu_investigation.md) and a plain fold-in (``foldin``) beats every such
learner. ``metafold`` keeps the fold-in's exact adaptation and meta-learns what it adapts *from*, end to end
through the solve, in the manner of R2D2 / MetaOptNet for few-shot classification:

- inner loop: the newcomer's ``theta = (X'WX + base + diag(lam))^-1 (X'Wy + lam * m)`` over the support set
  (:func:`metarec.learners.foldin.ridge_solve`), exact, one batched Cholesky per meta-batch; the query loss
  back-propagates through it (exact second order at the cost of a d x d system per task);
- meta-parameters: the item side (ID factors and biases of meta-train items, started from ALS), the content
  map that gives never-seen items their factors (started from its ridge fit; trained when ``id_dropout``
  hides items' IDs during meta-training, as in DropoutNet), the per-dimension penalties ``lam``, the
  implicit confidence ``alpha``, and a prior mean ``m`` of the user's [offset, factor] from the profile
  fields (zero at the start, so the untrained learner *is* ``foldin``);
- outer loss: query MSE (explicit) or a softmax over every meta-train item for each query positive, the
  support positives masked out (implicit: the full-ranking task it is judged on); plus ``anchor`` times the
  squared distance of the item side to the ALS solution, which keeps the few-rating users' signal from
  pulling well-estimated factors away;
- episodes: every meta-batch re-splits each task's interactions into a fresh support and query of the
  task's own sizes (``resample``), so a meta-train user gives new query targets every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context, Learner
from metarec.learners.foldin import (
    LOSSES,
    FoldInConfig,
    content_map,
    fit_factors,
    foldin_adapt,
    item_content,
)
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class MetaFoldConfig:
    start: FoldInConfig = field(default_factory=FoldInConfig)  # the ALS start: rank, penalties, alpha
    loss: str = "mse"  # "mse": explicit ratings; "bce": implicit feedback (set by the implicit view)
    learn_reg: bool = True  # meta-learn the per-dimension penalties of the solve
    learn_alpha: bool = True  # implicit: meta-learn the confidence of a support positive
    prior: bool = True  # a prior mean of the user's parameters from the profile fields
    emb_dim: int = 16  # profile field embeddings of the prior
    item_bias: bool = True  # implicit: a learned item bias (popularity) added to the iALS score
    anchor: float = 1.0  # weight of the squared distance of the item side to its ALS start
    resample: bool = True  # re-split every task's interactions into support/query at every meta-batch
    id_dropout: float = 0.0  # probability of hiding an item's ID factors (content factors instead) in training
    item_weight: bool = False  # meta-learn a weight of each item's support rows (its confidence)
    temperature: float = 10.0  # implicit: the starting inverse temperature of the softmax (learned)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise MetarecError(f"learner.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not (isinstance(self.emb_dim, int) and self.emb_dim >= 1):
            raise MetarecError(f"learner.emb_dim must be a positive integer, got {self.emb_dim!r}")
        if not (math.isfinite(self.anchor) and self.anchor >= 0):
            raise MetarecError(f"learner.anchor must be a finite number >= 0, got {self.anchor!r}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise MetarecError(f"learner.id_dropout must be in [0, 1), got {self.id_dropout!r}")


def resample_split(batch: TaskBatch) -> TaskBatch:
    """A fresh random support/query split of every task's interactions, each task keeping its sizes.

    Support and query entries are pooled per task (width S + Q), ranked by a uniform draw (padding last),
    and the last ``n_query`` real ones of each task become its query. Uses torch's global generator, which
    the outer loop seeds and checkpoints.
    """
    items = torch.cat([batch.s_item, batch.q_item], 1)  # (B, S + Q)
    users = torch.cat([batch.s_user, batch.q_user], 1)
    ratings = torch.cat([batch.s_rating, batch.q_rating], 1)
    mask = torch.cat([batch.s_mask, batch.q_mask], 1)
    n, n_q = mask.sum(1, keepdim=True), batch.q_mask.sum(1, keepdim=True)  # (B, 1)
    keys = torch.rand(mask.shape).masked_fill(~mask, 2.0)
    rank = keys.argsort(1).argsort(1)  # (B, S + Q) position of each entry in its task's draw
    support = rank < n - n_q
    query = (rank >= n - n_q) & mask
    return TaskBatch(batch.owner, users, items, ratings, support, users, items, ratings, query)


class MetaFold(Learner):
    """Fold-in as the inner loop, its item side, penalties and profile prior meta-trained (module docstring)."""

    name = "metafold"
    meta_trained = True
    select_start = True  # the ALS start (= foldin) competes on meta-valid: meta-training is kept only if it helps

    def __init__(self, ctx: Context, config: MetaFoldConfig):
        super().__init__(ctx, config)
        self.start = replace(config.start, loss=config.loss)
        self.loss_kind = config.loss
        k = self.start.rank
        d = k if self.implicit else k + 1  # explicit theta = [b_u, p_u]
        n_items = ctx.n_items
        seen = ctx.item_ids > 0 if ctx.item_ids is not None else torch.ones(n_items, dtype=torch.bool)
        self.register_buffer("seen", seen, persistent=False)  # derived from the context
        self.register_buffer("content", item_content(ctx).float(), persistent=False)  # (I, F)
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("q0", torch.zeros(n_items, k))  # the ALS start (anchor)
        self.register_buffer("b0", torch.zeros(n_items))
        self.item_q = nn.Parameter(torch.zeros(n_items, k))
        self.item_b = nn.Parameter(torch.zeros(n_items), requires_grad=not self.implicit or config.item_bias)
        self.content_w = nn.Parameter(torch.zeros(self.content.shape[1], k + 1))  # attributes -> [b_i, q_i]
        self.content_c = nn.Parameter(torch.zeros(k + 1))
        lam = torch.full((d,), float(self.start.reg))
        if not self.implicit:
            lam[0] = self.start.reg_bias
        self.log_lam = nn.Parameter(lam.log(), requires_grad=config.learn_reg)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(self.start.alpha)),
                                      requires_grad=self.implicit and config.learn_alpha)
        # implicit: the softmax's inverse temperature (ranking is scale-free; without it the loss sharpens the
        # softmax by inflating the item factors, which distorts the solve)
        self.log_temp = nn.Parameter(torch.tensor(math.log(config.temperature)), requires_grad=self.implicit)
        self.log_item_w = nn.Parameter(torch.zeros(n_items)) if config.item_weight else None
        cards = torch.tensor(ctx.user_cards)
        self.register_buffer("user_codes", ctx.user_codes + (cards.cumsum(0) - cards), persistent=False)
        self.prior_emb = nn.Embedding(int(cards.sum()), config.emb_dim) if config.prior else None
        self.prior_out = nn.Linear(config.emb_dim * len(ctx.user_cards), d) if config.prior else None
        if self.prior_out is not None:  # zero prior at the start: the untrained learner is the fold-in
            nn.init.zeros_(self.prior_out.weight)
            nn.init.zeros_(self.prior_out.bias)

    @property
    def implicit(self) -> bool:
        return self.config.loss == "bce"

    def set_user_codes(self, users: Tensor, codes: Tensor) -> None:
        super().set_user_codes(users, codes)
        cards = torch.tensor(self.ctx.user_cards)
        self.user_codes[users] = codes.to(self.user_codes.dtype) + (cards.cumsum(0) - cards)

    def prefit(self, train_inter) -> None:
        """The ALS start on the meta-train interactions: item factors, biases, content map, anchor."""
        fitted = fit_factors(self.ctx, train_inter, replace(self.start, content=False))
        side = torch.cat([fitted["item_bias"][:, None], fitted["Q"]], 1).double()
        W, c = content_map(self.content.double(), side, self.seen, self.start.reg_content)
        with torch.no_grad():
            self.mu.copy_(fitted["mu"])
            self.item_q.copy_(fitted["Q"])
            self.q0.copy_(fitted["Q"])
            self.item_b.copy_(fitted["item_bias"])
            self.b0.copy_(fitted["item_bias"])
            self.content_w.copy_(W.float())
            self.content_c.copy_(c.float())

    # ------------------------------------------------------------------------------------------ item side

    def item_table(self) -> tuple[Tensor, Tensor]:
        """(I,) biases and (I, k) factors of every item: ID factors for meta-train items, the content map's
        for the others (and, in training, for a random ``id_dropout`` share of the meta-train items)."""
        use_id = self.seen
        if self.training and self.config.id_dropout > 0:
            use_id = use_id & (torch.rand(use_id.shape) >= self.config.id_dropout)
        side = self.content @ self.content_w + self.content_c  # (I, 1 + k)
        b = torch.where(use_id, self.item_b, side[:, 0])
        q = torch.where(use_id[:, None], self.item_q, side[:, 1:])
        if self.implicit and not self.config.item_bias:
            b = torch.zeros_like(b)
        return b, q

    def _prior(self, owners: Tensor) -> Tensor | None:
        if self.prior_emb is None:
            return None
        return self.prior_out(self.prior_emb(self.user_codes[owners]).flatten(-2))  # (B, d)

    def _adapt(self, support: TaskBatch, b: Tensor, q: Tensor) -> Adapted:
        lam = self.log_lam.exp()
        gram = q[self.seen].T @ q[self.seen] if self.implicit else None
        return foldin_adapt(support, self.mu, b, q, lam, self.implicit, self.log_alpha.exp(), gram,
                            prior=self._prior(support.owner),
                            item_weight=None if self.log_item_w is None else self.log_item_w.exp())

    def adapt(self, support: TaskBatch) -> Adapted:
        b, q = self.item_table()
        return self._adapt(support, b, q)

    # ---------------------------------------------------------------------------------------- outer loss

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        if self.config.resample:
            batch = resample_split(batch)
        b, q = self.item_table()
        adapted = self._adapt(batch, b, q)
        qm = batch.q_mask
        if self.implicit:
            scores = adapted.score_items(torch.arange(self.ctx.n_items)) * self.log_temp.exp()  # (B, I)
            drop = torch.zeros_like(scores, dtype=torch.bool)
            rows, cols = torch.nonzero(batch.s_mask & (batch.s_rating > 0), as_tuple=True)
            drop[rows, batch.s_item[rows, cols]] = True  # the support positives are not candidates
            scores = scores.masked_fill(drop | ~self.seen[None, :], float("-inf"))
            logp = torch.log_softmax(scores, 1).gather(1, batch.q_item)  # (B, Q)
            pos = (qm & (batch.q_rating > 0)).float()
            loss = -(logp.nan_to_num(neginf=0.0) * pos).sum() / pos.sum().clamp_min(1.0)
        else:
            pred = adapted.score(batch.q_user, batch.q_item)  # (B, Q)
            m = qm.float()
            loss = (((pred - batch.q_rating) ** 2) * m).sum() / m.sum().clamp_min(1.0)
        if self.config.anchor > 0:  # (implicit: iALS has no item bias, so the learned one is not anchored)
            pull = ((self.item_q - self.q0) ** 2).sum(1).mean()
            if not self.implicit:
                pull = pull + ((self.item_b - self.b0) ** 2).mean()
            loss = loss + self.config.anchor * pull
        return loss
