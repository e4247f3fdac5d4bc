"""Training of the sequence methods: the engine's one outer loop (:func:`metarec.engine.train.fit`) on
sequence batches.

``method.meta_loss(batch)`` on batches of sequence tasks (a direct loss for SASRec/GRU4Rec/Full, a meta loss for
MAML-style methods), Adam, gradient clipping, model selection and early stopping on meta-valid (never
meta-test), an atomic checkpoint after every epoch and resume from it, progress bars: all of it is ``fit``'s;
this module only names the sequence defaults and the batch format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from metarec.engine.train import TrainConfig, fit
from metarec.seqrec.batch import collate_seq
from metarec.tasks import Task


def seq_train_config(**changes) -> TrainConfig:
    """The engine's one :class:`TrainConfig` with the sequence defaults (100 epochs of 128 sequences, Adam 1e-3,
    clipping at 5, patience 10, selected on meta-valid nDCG@10), ``changes`` applied."""
    return replace(TrainConfig(epochs=100, meta_batch=128, lr=1e-3, clip=5.0, patience=10, select="ndcg@10"),
                   **changes)


def fit_seq(method, tasks: list[Task], valid_fn: Callable[[object], dict], cfg: TrainConfig,
            checkpoint: Path | None = None, progress: bool = True, params=None, identity: dict | None = None) -> dict:
    """Train ``method`` on ``tasks`` with ``fit``; keep the epoch with the best ``valid_fn(method)[cfg.select]``.

    ``params``: the parameters to optimise (default: every trainable parameter of ``method``); ``identity``:
    what else determines the run (a checkpoint resumes only if it matches, see ``fit``).
    Returns ``{"history", "best_epoch" (1-based, 0 if none), "best"}``; ``method`` holds the best weights.
    """
    return fit(method, tasks, valid_fn, cfg, checkpoint=checkpoint, progress=progress,
               collate_fn=collate_seq,
               params=list(params) if params is not None else None, identity=identity)
