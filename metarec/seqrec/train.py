"""Training of the sequence methods: the engine's one outer loop (:func:`metarec.engine.train.fit`) on
sequence batches.

``method.loss(batch)`` on batches of sequence tasks (a direct loss for SASRec/GRU4Rec/Full, a meta loss for
MAML-style methods), Adam, gradient clipping, model selection and early stopping on meta-valid (never
meta-test), an atomic checkpoint after every epoch and resume from it, progress bars: all of it is ``fit``'s;
this module only names the sequence defaults and the batch format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metarec.engine.train import TrainConfig, fit
from metarec.seqrec.batch import collate_seq
from metarec.tasks import Task


@dataclass(frozen=True)
class SeqTrainConfig:
    epochs: int = 100
    batch: int = 128  # sequences (tasks) per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip: float = 5.0
    patience: int = 10  # epochs without improvement on meta-valid before stopping
    select: str = "ndcg@10"  # meta-valid metric (higher is better)
    seed: int = 0

    def __post_init__(self):
        from metarec.checks import METRIC, check

        check(self, "train", pos_int=("epochs", "batch", "patience"), nonneg_int=("seed",), pos=("lr",),
              nonneg=("weight_decay", "clip"), choices={"select": METRIC})

    def as_train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, meta_batch=self.batch, lr=self.lr, weight_decay=self.weight_decay,
                           clip=self.clip, patience=self.patience, select=self.select, seed=self.seed)


def fit_seq(method, tasks: list[Task], valid_fn: Callable[[object], dict], cfg: SeqTrainConfig,
            checkpoint: Path | None = None, progress: bool = True, params=None, identity: dict | None = None) -> dict:
    """Train ``method`` on ``tasks`` with ``fit``; keep the epoch with the best ``valid_fn(method)[cfg.select]``.

    ``params``: the parameters to optimise (default: every trainable parameter of ``method``); ``identity``:
    what else determines the run (a checkpoint resumes only if it matches, see ``fit``).
    Returns ``{"history", "best_epoch" (1-based, 0 if none), "best"}``; ``method`` holds the best weights.
    """
    return fit(method, tasks, valid_fn, cfg.as_train_config(), checkpoint=checkpoint, progress=progress,
               collate_fn=collate_seq, batch_loss=lambda m, batch: m.loss(batch),
               params=list(params) if params is not None else None, identity=identity)
