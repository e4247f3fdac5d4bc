"""Sequence methods: the adapt/score contract, save/load, and the non-meta baselines of MML 5.1.2.

``adapted = method.adapt(batch.support_only())`` is the one base class's :class:`~metarec.learners.base.Adapted`:
``adapted.score_next(seq (B, L), pos (B, P))`` gives (B, P, n_items) scores of every item at the given output
positions, for the tasks the method adapted to; ``adapted.score_items(items)`` (B, N) scores of the candidate
items as the next one after each task's support sequence (what serving ranks), ``adapted.score`` the same for
(B, Q) items.

:class:`DirectSeq` is one class for four baselines:
- ``sasrec`` / ``gru4rec``: the network trained on the old users' sequences (every target of every
  meta-train window, BPR), no adaptation: a new user's warm-up items are only context.
- ``full`` (Full retrain, [47]): the same SASRec trained on the old users' sequences plus the warm-up
  (support) sequences of the meta-valid and meta-test users; evaluated on the new users' queries only.
- ``ptft`` (pre-train and fine-tune): the ``sasrec`` model, then per new user ``steps`` SGD steps on its
  support positions (vectorised over users, fast weights via ``functional_call``); by default only Theta
  (the same parameters MML's inner loop adapts); the fine-tuning rate is picked on meta-valid from a grid.
  With ``pretrain=False`` it is MML 5.2.2's support-only baseline: the randomly initialised network trained
  only by those steps on each new user's support (``ptft@model.pretrain=false,model.finetune.params=all,
  model.finetune.steps=50``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from metarec.learners.base import Adapted, Learner
from metarec.nets.gru4rec import GRU4Rec, GRU4RecConfig
from metarec.nets.sasrec import SASRec, SASRecConfig
from metarec.seqrec.batch import SeqBatch
from metarec.seqrec.functional import fast_init, flat_mean, inner_adapt, position_losses, vcall


def seq_adapted(support: SeqBatch, score_next: Callable[[Tensor, Tensor], Tensor]) -> Adapted:
    """The :class:`Adapted` of a sequential model adapted to the B tasks of ``support`` (its ``support_only``
    view), from its next-item scorer ``score_next``: (seq (B, L), pos (B, P)) -> (B, P, n_items)."""
    last = (support.length - 1).clamp_min(0)[:, None]  # (B, 1) the output position after the known sequence

    def score_items(items: Tensor) -> Tensor:  # items (N,) indices -> (B, N)
        return score_next(support.seq, last)[:, 0, items]

    def score(users: Tensor, items: Tensor) -> Tensor:  # (B, Q) item indices -> (B, Q); users: the owners
        return torch.take_along_dim(score_next(support.seq, last)[:, 0], items, dim=1)

    return Adapted(owners=support.owner, score=score, score_items=score_items, score_next=score_next)


class SeqMethod(Learner):
    """The sequential models' part of the one base class: ``meta_loss`` (the training objective of one batch of
    sequences: a direct loss for SASRec/GRU4Rec/Full, a meta loss for the MAML-style methods), ``adapt`` (to
    :func:`seq_adapted`), ``train_tasks``; saved and loaded as every learner is. ``ctx``: the item count (items
    are known by code, no features)."""

    family = "sequential"

    def __init__(self, n_items: int, config, pool: Tensor | None = None):
        super().__init__({"n_items": n_items}, config)
        self.n_items = n_items
        # items negatives are drawn from: those of the training data (new items do not exist yet)
        self.register_buffer("pool", torch.arange(n_items) if pool is None else torch.as_tensor(pool).long())

    def context_state(self) -> dict:
        return {"n_items": self.n_items}

    @classmethod
    def from_saved(cls, context: dict, config, state: dict) -> SeqMethod:
        return cls(context["n_items"], config, pool=state["pool"])

    def train_tasks(self, data) -> list:
        return data.train

    def set_user_codes(self, users: Tensor, codes: Tensor) -> None:
        """No user features: a sequence model knows a user by the items of the sequence."""

    def meta_loss(self, batch: SeqBatch) -> Tensor:
        raise NotImplementedError

    def adapt(self, batch: SeqBatch) -> Adapted:
        raise NotImplementedError

    def begin_eval(self, tasks: list) -> None:
        """Called once by the evaluation before the batches of ``tasks`` (SML retrains on their supports)."""


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 0  # 0: no adaptation
    lr: float = 1e-2
    lr_grid: tuple = (1e-3, 1e-2, 1e-1, 1.0)  # rates tried on meta-valid after pre-training (PT-FT)
    params: str = "theta"  # "theta" (the network's fast_names) or "all"


@dataclass(frozen=True)
class DirectConfig:
    net: str = "sasrec"  # "sasrec" or "gru4rec"
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    gru4rec: GRU4RecConfig = field(default_factory=GRU4RecConfig)
    loss: str = "bpr"  # "bpr" (MML) or "ce"
    with_supports: bool = False  # Full retrain: also train on the valid/test users' warm-up sequences
    # False: the network starts at its random initialisation and is trained only by the per-user fine-tuning on the
    # new user's support (the non-transfer baselines of MML 5.2.2: "trained only on the cold-start user's support")
    pretrain: bool = True
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0  # seeds the fine-tuning negatives (evaluation is deterministic)


def make_net(n_items: int, cfg: DirectConfig) -> nn.Module:
    if cfg.net == "sasrec":
        return SASRec(n_items, cfg.sasrec)
    if cfg.net == "gru4rec":
        return GRU4Rec(n_items, cfg.gru4rec)
    raise ValueError(f"unknown network {cfg.net!r}: sasrec or gru4rec")


class DirectSeq(SeqMethod):
    """A sequence network trained directly on sequences; optionally fine-tuned per user (PT-FT)."""

    def __init__(self, n_items: int, config: DirectConfig = DirectConfig(), pool: Tensor | None = None):
        super().__init__(n_items, config, pool)
        self.net = make_net(n_items, config)

    def train_tasks(self, data) -> list:
        if self.config.with_supports:
            return [*data.train, *data.support_tasks("valid"), *data.support_tasks("test")]
        return data.train

    def meta_loss(self, batch: SeqBatch) -> Tensor:
        per, mask = position_losses(self.net, batch, "all", self.config.loss, self.pool)
        return flat_mean(per, mask)

    def loss_weight(self, batch: SeqBatch) -> float:
        """What ``meta_loss`` averages over: every target position (a data-parallel shard weighs this much)."""
        return float(batch.t_mask.sum())

    def fast_names(self) -> list[str]:
        if self.config.finetune.params == "all":
            return [n for n, _ in self.net.named_parameters()]
        return self.net.fast_names()

    def adapt(self, batch: SeqBatch) -> Adapted:
        ft = self.config.finetune
        if ft.steps == 0:
            return seq_adapted(batch, lambda seq, pos: self.net(seq, pos))
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(batch.owner.sum()))
        fast = inner_adapt(self.net, batch, fast_init(self.net, len(batch), self.fast_names()), ft.steps, ft.lr,
                           first_order=True, kind=self.config.loss, pool=self.pool, generator=gen)
        fast = {k: v.detach() for k, v in fast.items()}
        return seq_adapted(batch, lambda seq, pos: vcall(self.net, fast, seq, pos))
