"""The one base class of every method of every family: the ``adapt``/``score`` verbs, save and load.

``adapted = learner.adapt(support)`` returns an :class:`Adapted` for the B tasks of a support batch (a
``TaskBatch``; for the sequential models a ``SeqBatch``); ``adapted.score(users, items)`` gives (B, Q) scores for
pairs and ``adapted.score_items(items)`` (B, N) scores of every task's owner against N candidate items (for a
sequential model: of each candidate as the item that follows the task's support sequence);
``adapted.score_next(seq, pos)`` the sequential models' (B, P, n_items) next-item scores at output positions of
sequences. Training, evaluation and serving all use them. Every learner saves into one file format (registry name,
family, config, context, weights) that :func:`load_learner` reads back through the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import torch
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
    # sequential models: (seq (B, L) item codes, pos (B, P) output positions) -> (B, P, n_items) scores of every
    # item as the one that follows position p of the sequence; None for the models that score pairs only
    score_next: Callable[[Tensor, Tensor], Tensor] | None = None


def by_task_chunks(score: Callable[[slice], Tensor], n_tasks: int, per_task: int, budget: int = 1 << 17) -> Tensor:
    """``score(tasks)`` for a slice of the tasks -> (b, N), computed a few tasks at a time and concatenated to
    (B, N): a batched full ranking whose (b, N, hidden) intermediates (``per_task`` floats per task) stay near
    ``budget`` floats, so that a batch of newcomers costs no more per newcomer than one alone."""
    step = max(1, budget // max(1, per_task))
    if step >= n_tasks:
        return score(slice(0, n_tasks))
    return torch.cat([score(slice(a, a + step)) for a in range(0, n_tasks, step)])


class Learner(nn.Module):
    """The base class of every method of every family (rating, scenario and warm-up learners; the sequential
    models through ``metarec.seqrec.methods.SeqMethod``). Subclasses set ``name`` and ``Config`` and implement
    ``adapt`` (and ``meta_loss``, the training objective of one batch, when ``meta_trained``); ``fit_direct`` is for
    closed-form models fitted on the meta-train interactions. ``ctx``: what the learner knows about users and items
    (the feature :class:`Context`; the sequential models' item count)."""

    name: str = ""
    family: str = ""  # the registry family it was saved from ("" = found by name among the Learner families)
    meta_trained: bool = True
    select_start: bool = False  # the learner before meta-training (its prefit start) competes in model selection
    pooled_start: bool = False  # the scenario runner trains FT's pooled network first and hands it to set_start
    loss_kind: str = "mse"

    def __init__(self, ctx, config):
        super().__init__()
        self.ctx = ctx
        self.config = config

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

    def set_user_codes(self, users: Tensor, codes: Tensor) -> None:
        """Declared hook: the side features of users ``users`` (B,) become ``codes`` (B, F_u) (per-field codes of
        the context, 0 = unknown): a newcomer's profile when serving. Default: every feature encoder of the
        learner and its context take them (learners without user features ignore them)."""
        from metarec.nets.features import FeatureEncoder

        if self.ctx.user_codes.shape[1] == 0:  # no user fields (the scenario learners)
            return
        self.ctx.user_codes[users] = codes.to(self.ctx.user_codes.dtype)
        for m in self.modules():
            if isinstance(m, FeatureEncoder):
                m.set_user_codes(users, codes)

    def set_embeddings(self, users: Tensor, items: Tensor) -> None:
        """The scenario protocol's pretrained user and item embeddings; default: unused."""

    def learning_trace(self, support: TaskBatch) -> dict:
        """The step-by-step learning process on one task (s²Meta's Figure 2); default: none to trace."""
        raise MetarecError(f"{self.name} has no learning process to trace (s2meta has)")

    def fit_direct(self, train_inter) -> None:  # pragma: no cover - optional
        pass

    def set_start(self, params: dict[str, Tensor]) -> None:
        """Declared hook of ``pooled_start`` learners: start meta-training from ``params``. Default: unused."""
        raise MetarecError(f"{self.name} takes no pooled start")

    def prefit(self, train_inter) -> None:
        """Declared hook, called with the meta-train interactions before meta-training starts (and before a
        checkpoint is resumed): a closed-form start such as ``metafold``'s ALS factors. Default: nothing."""

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        raise NotImplementedError

    def adapt(self, support: TaskBatch) -> Adapted:
        raise NotImplementedError

    def context_state(self) -> dict:
        """What ``from_saved`` needs besides config and weights to rebuild the learner (plain data)."""
        return self.ctx.state()

    @classmethod
    def from_saved(cls, context: dict, config, state: dict) -> Learner:
        """The learner of a saved file, before its weights are loaded."""
        ctx = Context(context["user_codes"], context["item_codes"], context["item_genre"],
                      list(context["user_cards"]), list(context["item_cards"]), context.get("item_ids"))
        return cls(ctx, config)

    def save(self, path: Path, extra: dict | None = None) -> None:
        """One file for every family: registry name, family and class, config, context and weights; written
        atomically."""
        blob = {"learner": self.name, "family": self.family, "cls": type(self).__name__,
                "config": _to_plain(self.config), "context": self.context_state(), "state": self.state_dict(),
                "extra": extra or {}}
        save_torch(Path(path), blob)


def _to_plain(cfg):
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def _sequential_impl(blob: dict):
    """The sequential registry entry that wrote ``blob``: by method name, else (files written before the name was
    recorded) by the class name of a registered entry."""
    from metarec import registry

    name = blob.get("learner") or (blob.get("extra") or {}).get("method") or blob.get("name")
    seq = registry.names("sequential")
    if name in seq:
        return registry.method(name).impl("sequential")
    for n in seq:
        impl = registry.method(n).impl("sequential")
        if impl.model.rpartition(":")[2] == blob.get("cls"):
            return impl
    raise KeyError(f"no registered sequential method {name!r} or class {blob.get('cls')!r}")


def _is_sequential(blob: dict) -> bool:
    return blob.get("family") == "sequential" or "learner" not in blob  # older sequence files: no "learner" key


def _saved_class(blob: dict) -> tuple[type, type]:
    """The class and config class of the registry entry that wrote ``blob``."""
    from metarec import registry
    from metarec.learners.registry import LEARNERS

    if _is_sequential(blob):
        impl = _sequential_impl(blob)
        return registry.resolve(impl.model), impl.config_cls()
    spec = LEARNERS[blob["learner"]]
    return spec.cls, spec.config_cls


def load_learner(path: Path, blob: dict | None = None) -> tuple[Learner, dict]:
    """A saved learner of any family, found in the registry by its name (``blob``: its file's content when the
    caller has read it already). The file is read with ``weights_only``: it cannot run code."""
    if blob is None:
        blob = load_torch(Path(path), "model")
    try:
        cls, cfg_cls = _saved_class(blob)
        context = blob["context"] if "context" in blob else {"n_items": blob["n_items"]}  # older sequence files
        learner = cls.from_saved(context, config_from_dict(cfg_cls, blob["config"]), blob["state"])
        if _is_sequential(blob):  # one class serves several entries (DirectSeq: sasrec, gru4rec, full, ptft)
            learner.name = blob.get("learner") or blob.get("name") or (blob.get("extra") or {}).get("method", "")
        learner.load_state_dict(blob["state"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise MetarecError(f"{path}: not a metarec model file ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:100]})") from None
    learner.eval()
    return learner, blob.get("extra", {})
