"""What every learner shares: the feature context, the ``adapt``/``score`` verbs, save and load.

``adapted = learner.adapt(support)`` returns an :class:`Adapted` for the tasks of a ``TaskBatch``;
``adapted.score(users, items)`` gives (B, Q) scores for pairs and ``adapted.score_items(items)`` (B, N)
scores of every task's owner against N candidate items. Training, evaluation and serving all use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

from torch import Tensor, nn

from metarec.config import config_from_dict
from metarec.errors import MetarecError
from metarec.io import load_torch, save_torch
from metarec.nets.context import Context
from metarec.tasks import TaskBatch


@dataclass
class Adapted:
    """A learner adapted to B tasks: scoring functions closed over the tasks' adapted state."""

    owners: Tensor  # (B,) the task owners (users for user-specific tasks)
    score: Callable[[Tensor, Tensor], Tensor]  # (users (B, Q), items (B, Q)) -> (B, Q)
    score_items: Callable[[Tensor], Tensor]  # items (N,) -> (B, N)
    # optional: (users (B, U), items (B, N)) -> (B, U, N), every user of a task against every item of it; equal
    # to ``score`` on the flattened grid, offered by models that factorise (scored faster than pair by pair)
    score_grid: Callable[[Tensor, Tensor], Tensor] | None = None


class Model(nn.Module):
    """The root of every trained method of every family: :class:`Learner` (rating, scenario and warm-up learners)
    and ``metarec.seqrec.methods.SeqMethod`` (the sequential models). Each has its registry ``name``, its frozen
    ``config``, ``adapt(support)`` returning the adapted scorer (:class:`Adapted` scores user-item pairs and item
    lists; ``SeqAdapted`` the next items at positions of a sequence) and ``save(path, extra)``, read back by
    ``metarec.models.load_model`` through the registry."""

    name: str = ""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def adapt(self, support):
        raise NotImplementedError

    def save(self, path: Path, extra: dict | None = None) -> None:
        raise NotImplementedError


class Learner(Model):
    """Base class. Subclasses set ``name`` and ``Config`` and implement ``adapt`` (and ``meta_loss`` when
    ``meta_trained``); ``fit_direct`` is for closed-form models fitted on the meta-train interactions."""

    name: str = ""
    meta_trained: bool = True
    select_start: bool = False  # the learner before meta-training (its prefit start) competes in model selection
    loss_kind: str = "mse"

    def __init__(self, ctx: Context, config):
        super().__init__(config)
        self.ctx = ctx

    # declared hooks (defaults here; the runners call them instead of probing with hasattr/getattr):
    last_steps: float | None = None  # learners with a learned number of adaptation steps (s²Meta): the last mean

    @property
    def pooled(self) -> bool:
        """Trained on pooled interactions (``config.train_mode == "pooled"``) instead of through adaptation."""
        return getattr(self.config, "train_mode", "maml") == "pooled"

    @property
    def adapt_grid(self) -> dict:
        """Adapt-time settings chosen on meta-valid after training (name -> values); {}: none (FT, EMCDR: steps
        and rate)."""
        return {}

    def set_embeddings(self, users: Tensor, items: Tensor) -> None:
        """The scenario protocol's pretrained user and item embeddings; default: unused."""

    def learning_trace(self, support: TaskBatch) -> dict:
        """The step-by-step learning process on one task (s²Meta's Figure 2); default: none to trace."""
        raise MetarecError(f"{self.name} has no learning process to trace (s2meta has)")

    def fit_direct(self, train_inter) -> None:  # pragma: no cover - optional
        pass

    def prefit(self, train_inter) -> None:
        """Declared hook, called with the meta-train interactions before meta-training starts (and before a
        checkpoint is resumed): a closed-form start such as ``metafold``'s ALS factors. Default: nothing."""

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        raise NotImplementedError

    def adapt(self, support: TaskBatch) -> Adapted:
        raise NotImplementedError

    def save(self, path: Path, extra: dict | None = None) -> None:
        """One file: learner name, config, feature context (vocab codes) and weights; written atomically."""
        blob = {"learner": self.name, "config": _to_plain(self.config), "context": self.ctx.state(),
                "state": self.state_dict(), "extra": extra or {}}
        save_torch(Path(path), blob)


def _to_plain(cfg):
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def load_learner(path: Path, blob: dict | None = None) -> tuple[Learner, dict]:
    """A saved learner (``blob``: its file's content when the caller has read it already)."""
    from metarec.learners.registry import LEARNERS

    if blob is None:
        blob = load_torch(Path(path), "model")  # weights_only: a model file cannot run code
    try:
        spec = LEARNERS[blob["learner"]]
        cfg = config_from_dict(spec.config_cls, blob["config"])
        c = blob["context"]
        ctx = Context(c["user_codes"], c["item_codes"], c["item_genre"], list(c["user_cards"]),
                      list(c["item_cards"]), c.get("item_ids"))
        learner = spec.cls(ctx, cfg)
        learner.load_state_dict(blob["state"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise MetarecError(f"{path}: not a metarec model file ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:100]})") from None
    learner.eval()
    return learner, blob.get("extra", {})
