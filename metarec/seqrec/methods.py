"""Sequence methods: the adapt/score contract, save/load, and the non-meta baselines of MML 5.1.2.

``adapted = method.adapt(batch.support_only())``; ``adapted.score(seq (B, L), pos (B, P))`` gives (B, P,
n_items) scores of every item at the given output positions, for the tasks the method adapted to.

:class:`DirectSeq` is one class for four baselines:
- ``sasrec`` / ``gru4rec``: the network trained on the old users' sequences (every target of every
  meta-train window, BPR), no adaptation: a new user's warm-up items are only context.
- ``full`` (Full retrain, [47]): the same SASRec trained on the old users' sequences plus the warm-up
  (support) sequences of the meta-valid and meta-test users; evaluated on the new users' queries only.
- ``ptft`` (pre-train and fine-tune): the ``sasrec`` model, then per new user ``steps`` SGD steps on its
  support positions (vectorised over users, fast weights via ``functional_call``); by default only Theta
  (the same parameters MML's inner loop adapts); the fine-tuning rate is picked on meta-valid from a grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from metarec.config import config_from_dict
from metarec.errors import MetarecError
from metarec.io import load_torch, save_torch
from metarec.learners.base import Model
from metarec.nets.gru4rec import GRU4Rec, GRU4RecConfig
from metarec.nets.sasrec import SASRec, SASRecConfig
from metarec.seqrec.batch import SeqBatch
from metarec.seqrec.functional import fast_init, flat_mean, inner_adapt, position_losses, vcall


@dataclass
class SeqAdapted:
    """A method adapted to B tasks. score: (seq (B, L) codes, pos (B, P)) -> (B, P, n_items)."""

    score: Callable[[Tensor, Tensor], Tensor]


class SeqMethod(Model):
    """Base class of the sequential models (a :class:`~metarec.learners.base.Model`): ``loss`` (training
    objective of one batch), ``adapt``, ``train_tasks``, save/load."""

    def __init__(self, n_items: int, config, pool: Tensor | None = None):
        super().__init__(config)
        self.n_items = n_items
        # items negatives are drawn from: those of the training data (new items do not exist yet)
        self.register_buffer("pool", torch.arange(n_items) if pool is None else torch.as_tensor(pool).long())

    def train_tasks(self, data) -> list:
        return data.train

    def loss(self, batch: SeqBatch) -> Tensor:
        raise NotImplementedError

    def adapt(self, batch: SeqBatch) -> SeqAdapted:
        raise NotImplementedError

    def begin_eval(self, tasks: list) -> None:
        """Called once by the evaluation before the batches of ``tasks`` (SML retrains on their supports)."""

    def save(self, path: Path, extra: dict | None = None) -> None:
        blob = {"cls": type(self).__name__, "name": self.name, "n_items": self.n_items,
                "config": asdict(self.config) if is_dataclass(self.config) else dict(self.config),
                "state": self.state_dict(), "extra": extra or {}}
        save_torch(Path(path), blob)


def load_seq_method(path: Path, blob: dict | None = None) -> tuple[SeqMethod, dict]:
    """A saved sequence model, its class and config class found in the registry by the method's name (files
    written before the name was recorded: by the class name of a registered entry). ``blob``: the file's content
    when the caller has read it already."""
    from metarec import registry

    if blob is None:
        blob = load_torch(Path(path), "model")  # weights_only: a model file cannot run code
    try:
        impl = _registered_impl(blob)
        cls, cfg_cls = registry.resolve(impl.model), impl.config_cls()
        method = cls(blob["n_items"], config_from_dict(cfg_cls, blob["config"]), pool=blob["state"]["pool"])
        method.name = blob["name"] or (blob.get("extra") or {}).get("method", "")  # older files: "" for DirectSeq
        method.load_state_dict(blob["state"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise MetarecError(f"{path}: not a metarec sequence model file ({type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:100]})") from None
    method.eval()
    return method, blob.get("extra", {})


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

    def loss(self, batch: SeqBatch) -> Tensor:
        per, mask = position_losses(self.net, batch, "all", self.config.loss, self.pool)
        return flat_mean(per, mask)

    def fast_names(self) -> list[str]:
        if self.config.finetune.params == "all":
            return [n for n, _ in self.net.named_parameters()]
        return self.net.fast_names()

    def adapt(self, batch: SeqBatch) -> SeqAdapted:
        ft = self.config.finetune
        if ft.steps == 0:
            return SeqAdapted(lambda seq, pos: self.net(seq, pos))
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(batch.owner.sum()))
        fast = inner_adapt(self.net, batch, fast_init(self.net, len(batch), self.fast_names()), ft.steps, ft.lr,
                           first_order=True, kind=self.config.loss, pool=self.pool, generator=gen)
        fast = {k: v.detach() for k, v in fast.items()}
        return SeqAdapted(lambda seq, pos: vcall(self.net, fast, seq, pos))


def _registered_impl(blob: dict):
    """The sequential registry entry that wrote ``blob``: by method name, else by class name."""
    from metarec import registry

    name = (blob.get("extra") or {}).get("method") or blob.get("name")
    seq = registry.names("sequential")
    if name in seq:
        return registry.method(name).impl("sequential")
    for n in seq:
        impl = registry.method(n).impl("sequential")
        if impl.model.rpartition(":")[2] == blob["cls"]:
            return impl
    raise KeyError(f"no registered sequential method {name!r} or class {blob['cls']!r}")
