"""The ``Protocol`` interface: every protocol of every family behind one shape.

A protocol knows its configuration, builds its meta-train / meta-valid / meta-test tasks with their context from a
dataset (``prepare``), batches them (``collate``), evaluates a model on a part (``evaluate``), describes what it
built (``describe``) and names its default training budget (``train_default``). ``get(name, seed, overrides)``
gives the protocol of any name ``metarec learners`` lists:

    >>> from metarec import protocols
    >>> from metarec.data.registry import load_dataset
    >>> p = protocols.get("user-cold", seed=0)                          # doctest: +SKIP
    >>> data = p.prepare(load_dataset("ml-100k"))                       # doctest: +SKIP
    >>> p.evaluate(my_model, data, "test")                              # doctest: +SKIP

so a model of your own (anything with metarec's ``adapt(support).score(...)`` verbs) is evaluated exactly as the
registered methods are. The families' runners build the same objects from their run configs.

Item warm-up differs in what it evaluates: a warm-up method (initial ID vectors and their update) together with
the frozen DeepFM backbone it warms up, passed as the pair ``(backbone, method)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from typing import Protocol as _Interface

from metarec import registry
from metarec.config import apply_overrides
from metarec.errors import MetarecError

__all__ = ["Protocol", "ScenarioProtocol", "SequentialProtocol", "WarmupProtocol", "get"]


class Protocol(_Interface):
    """The interface the protocols of the four families implement (structural: no base class to inherit)."""

    family: ClassVar[str]

    @property
    def name(self) -> str: ...

    def prepare(self, ds) -> Any: ...

    def collate(self, tasks: list) -> Any: ...

    def evaluate(self, model, prepared, part: str = "test") -> dict: ...

    def describe(self, prepared) -> dict: ...

    def train_default(self) -> Any: ...


def _scenario_config():
    from metarec.scenarios import ScenarioConfig

    return ScenarioConfig()


@dataclass(frozen=True)
class ScenarioProtocol:
    """s²Meta's scenario-specific protocol (``metarec/scenarios.py``): tasks are scenarios, evaluated by Recall@K
    (and nDCG@K) of their test users over the scenario's items."""

    config: Any = field(default_factory=_scenario_config)  # ScenarioConfig
    eval_batch: int = 4
    family: ClassVar[str] = "scenario"
    name: ClassVar[str] = "scenario"

    def prepare(self, ds):
        from metarec.scenarios import prepare_scenarios

        return prepare_scenarios(ds, self.config)

    def collate(self, tasks):
        from metarec.tasks import collate

        return collate(tasks)

    def evaluate(self, model, data, part: str = "test") -> dict:
        import torch

        from metarec.scenarios import evaluate_scenarios

        with torch.no_grad():
            return evaluate_scenarios(model, _part(data, part), data.train_codes, batch_size=self.eval_batch)

    def describe(self, data) -> dict:
        return data.describe()

    def train_default(self):
        from metarec.engine.train import TrainConfig

        return TrainConfig(select="recall@20", seed=self.config.seed)


def _seq_config():
    from metarec.seqrec.protocol import SeqProtocolConfig

    return SeqProtocolConfig()


@dataclass(frozen=True)
class SequentialProtocol:
    """MML's cold-start sequential protocol (``metarec/seqrec/protocol.py``): next-item tasks of new users,
    Recall, MRR and nDCG at 5, 10, 20 of every query position over all items."""

    config: Any = field(default_factory=_seq_config)  # SeqProtocolConfig
    family: ClassVar[str] = "sequential"
    name: ClassVar[str] = "sequential"

    def prepare(self, ds):
        from metarec.seqrec.protocol import make_seq_protocol

        return make_seq_protocol(ds, self.config)

    def collate(self, tasks):
        from metarec.seqrec.batch import collate_seq

        return collate_seq(tasks)

    def evaluate(self, model, data, part: str = "test") -> dict:
        import torch

        from metarec.seqrec.evaluate import evaluate_seq

        with torch.no_grad():
            return evaluate_seq(model, _part(data, part), data.n_items)

    def describe(self, data) -> dict:
        return data.stats()

    def train_default(self):
        from metarec.seqrec.command import direct_train_default

        return replace(direct_train_default(), seed=self.config.seed)


def _warmup_config():
    from metarec.ctr.warmup import WarmupConfig

    return WarmupConfig()


@dataclass(frozen=True)
class WarmupProtocol:
    """The item warm-up protocol of MetaEmb and MWUF (``metarec/ctr/warmup.py``): new items' ID embeddings, cold
    and after three warm-up batches, scored by AUC and log-loss of a frozen DeepFM."""

    config: Any = field(default_factory=_warmup_config)  # WarmupConfig
    seed: int = 0
    family: ClassVar[str] = "warmup"
    name: ClassVar[str] = "warmup"

    def prepare(self, ds):
        from metarec.ctr.warmup import prepare_warmup

        return prepare_warmup(ds, self.config)

    def collate(self, tasks):
        from metarec.tasks import collate

        return collate(tasks)

    def evaluate(self, model, data, part: str = "test") -> dict:
        """``model``: the pair (backbone, method); the metrics of every phase (cold, warm-a, warm-b, warm-c)."""
        from metarec.ctr.warmup import run_protocol

        if part != "test":
            raise MetarecError("the warm-up protocol evaluates its new items' test interactions only (part 'test')")
        if not (isinstance(model, tuple) and len(model) == 2):
            raise MetarecError("the warm-up protocol evaluates a (backbone, method) pair")
        backbone, method = model
        return run_protocol(backbone, method, data, self.config.update, self.config.eval_batch)

    def describe(self, data) -> dict:
        return data.split.describe()

    def train_default(self):
        from metarec.ctr.warmup import WarmupRun

        return replace(WarmupRun().train, seed=self.seed)


def _part(data, part: str):
    if part not in ("train", "valid", "test"):
        raise MetarecError(f"unknown part {part!r}: choose train, valid or test")
    return getattr(data, part)


def get(name: str, seed: int = 0, overrides: dict | None = None, dataset: str | None = None) -> Protocol:
    """The protocol ``name`` (see ``metarec learners``) for ``seed``, its config changed by flat ``overrides``
    (``split.*``, ``tasks.*``, ``view``, ``threshold``, ``negatives`` for the rating protocols; the config's own
    fields for the others, e.g. ``{"n_support": 5}`` for ``sequential``). ``dataset``: the warm-up protocol's
    per-dataset defaults (item thresholds of the papers)."""
    family = registry.family_of(name)
    over = dict(overrides or {})
    if family == "rating":
        from metarec.pipeline import RatingProtocol
        from metarec.splits import SplitConfig
        from metarec.tasks import TaskConfig

        # the tasks protocol's file is given before the split config checks it
        split = SplitConfig(protocol=name, seed=seed, task_file=str(over.get("split.task_file", "")))
        return apply_overrides(RatingProtocol(split, TaskConfig(seed=seed)), over)
    if family == "scenario":
        from metarec.scenarios import ScenarioConfig

        return ScenarioProtocol(apply_overrides(ScenarioConfig(seed=seed), over))
    if family == "sequential":
        from metarec.seqrec.protocol import SeqProtocolConfig

        return SequentialProtocol(apply_overrides(SeqProtocolConfig(seed=seed), over))
    from metarec.ctr.warmup import WarmupConfig, dataset_defaults

    base = dataset_defaults(dataset) if dataset else WarmupConfig()
    return WarmupProtocol(apply_overrides(base, over), seed)
