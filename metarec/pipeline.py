"""One run: dataset -> split -> features -> tasks -> learner -> fit (valid) -> evaluate (test) -> files."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from metarec.config import apply_overrides
from metarec.data.features import FeatureSpace, fit_features
from metarec.data.registry import DATASETS, load_dataset
from metarec.data.types import data_fingerprint, to_implicit
from metarec.engine.train import TrainConfig, fingerprint, train_learner
from metarec.engine.train import run_identity as run_identity_of
from metarec.errors import MetarecError
from metarec.evaluation.evaluate import evaluate_ranking, evaluate_rating
from metarec.io import write_json, writer
from metarec.learners.base import Context
from metarec.learners.registry import LEARNERS
from metarec.report import with_core
from metarec.splits import SplitConfig, make_split
from metarec.task_files import task_file_split
from metarec.tasks import Task, TaskBatch, TaskConfig, add_negatives, build_tasks, collate, known_codes


@dataclass(frozen=True)
class RunConfig:
    learner: str = "melu"
    dataset: str = "ml-100k"
    view: str = "explicit"  # "explicit" (ratings) or "implicit" (positives = rating >= threshold)
    threshold: float = 4.0
    negatives: int = 4  # implicit: sampled negatives per positive in support and query
    split: SplitConfig = field(default_factory=SplitConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""  # the named preset (metarec/presets.py) the learner's settings came from; "" = none

    def __post_init__(self):
        from metarec.checks import check

        check(self, "", pos_int=("negatives",), choices={"view": ("explicit", "implicit")})
        if self.learner not in LEARNERS:
            raise MetarecError(f"unknown learner {self.learner!r}: registered learners are {', '.join(LEARNERS)}")


def check_protocol(learner: str, protocol: str) -> None:
    """Stop with one line unless the registered method ``learner`` runs on ``protocol`` (a rating protocol)."""
    from metarec import registry

    registry.method(learner)  # an unknown name stops with the list of registered methods
    if registry.family_of(protocol) != "rating":
        rating = [p for p, f in registry.PROTOCOLS.items() if f == "rating"]
        raise MetarecError(f"the {protocol} protocol has its own runner (`metarec compare --protocol {protocol}`); "
                           f"this command takes the rating protocols ({', '.join(rating)})")
    registry.require(learner, protocol)


@dataclass
class Prepared:
    ctx: Context
    train: list
    valid: list
    test: list
    candidates: np.ndarray
    split: object
    dataset: object
    protocol: RatingProtocol
    features: FeatureSpace
    _pooled: list | None = None

    def pooled_train(self) -> list:
        """Every meta-train interaction, one pseudo-task per user (no size filter), for learners trained
        without adaptation ("the same network trained on all training interactions")."""
        if self._pooled is None:
            p = self.protocol
            cfg = replace(p.tasks, min_inter=2, max_inter=10**9, n_query=1, sizing="melu")
            tasks = [piece for t in build_tasks(self.split.train, cfg, desc="pooled") for piece in _chunks(t, 128)]
            if p.view == "implicit":
                train_items = np.unique(self.split.train["item"].to_numpy())
                tasks = add_negatives(tasks, known_codes(self.dataset.inter), train_items, p.negatives, p.tasks.seed)
            self._pooled = tasks
        return self._pooled


def _chunks(t: Task, size: int) -> list[Task]:
    """A pooled pseudo-task cut into pieces of at most ``size`` interactions (less padding per batch)."""
    u, i, r = np.r_[t.s_user, t.q_user], np.r_[t.s_item, t.q_item], np.r_[t.s_rating, t.q_rating]
    e = np.array([], dtype=u.dtype)
    return [Task(t.owner, u[j:j + size], i[j:j + size], r[j:j + size], e, e.astype(i.dtype), e.astype(r.dtype))
            for j in range(0, len(u), size)]


def make_config(learner: str, dataset: str, protocol: str, seed: int, view: str, overrides: dict,
                preset: str | None = None, presets: dict | None = None) -> tuple:
    """``(RunConfig, learner config)``: the registry defaults, then the preset, then ``overrides`` (which win).

    ``preset``: None for none (the registry defaults, which are the ``paper`` settings), ``"auto"`` for the
    learner's working default that matches the run if there is one, or a preset's name; ``presets``: the
    preset store (default: the shipped ``metarec/presets.json``). See :mod:`metarec.presets`.
    """
    from metarec import presets as _presets

    check_protocol(learner, protocol)
    if view not in ("explicit", "implicit"):
        raise MetarecError(f"unknown view {view!r}: choose explicit or implicit")
    if "preset" in overrides:
        raise MetarecError("a preset is chosen with --preset NAME (or NAME@preset=... in compare and curve), "
                           "not as a config key")
    if preset is not None:
        store = presets if presets is not None else _presets.load_store()
        preset, base = _presets.resolve(store, learner, preset, dataset, protocol, view)
        overrides = {**base, **overrides}
    task_file = str(overrides.get("split.task_file", ""))
    if task_file:  # recorded absolute: the run config stays valid from any folder
        task_file = str(Path(task_file).resolve())
        overrides = {**overrides, "split.task_file": task_file}
    run = RunConfig(learner=learner, dataset=dataset, view=view, preset=preset or "",
                    split=SplitConfig(protocol=protocol, seed=seed, task_file=task_file), tasks=TaskConfig(seed=seed),
                    train=TrainConfig(seed=seed, select="rmse" if view == "explicit" else "ndcg@10"))
    lcfg = LEARNERS[learner].default()
    if view == "implicit" and hasattr(lcfg, "loss"):
        lcfg = apply_overrides(lcfg, {"loss": "bce"})
    learner_over = {k[len("learner."):]: v for k, v in overrides.items() if k.startswith("learner.")}
    if "learner" in overrides and isinstance(overrides["learner"], dict):
        learner_over.update(overrides["learner"])
    run_over = {k: v for k, v in overrides.items() if not k.startswith("learner")}
    run, lcfg = apply_overrides(run, run_over), apply_overrides(lcfg, learner_over, "learner.")
    for flag, given, used in (("--protocol", protocol, run.split.protocol), ("--dataset", dataset, run.dataset),
                              ("--view", view, run.view)):
        if given != used:  # a run that prints one setting and runs another
            raise MetarecError(f"{flag} {given} and the config's {used} disagree: give it once")
    if dataset not in DATASETS and Path(dataset).exists():  # a path: recorded absolute, valid from any folder
        run = replace(run, dataset=str(Path(dataset).resolve()))
    return run, lcfg


def prepare(run: RunConfig, ds=None) -> Prepared:
    """Everything a run needs; ``ds`` replaces loading ``run.dataset`` by name (tests, custom data)."""
    return RatingProtocol.of(run).prepare(ds if ds is not None else load_dataset(run.dataset))


@dataclass(frozen=True)
class RatingProtocol:
    """The rating family's protocols (the four rating states, by time or at random, and ``tasks``) as one object
    of the :class:`metarec.protocols.Protocol` interface: the split, the task sizing and the view.

    ``prepare(ds)`` builds the meta-train / meta-valid / meta-test tasks with their feature context,
    ``evaluate(model, prepared, part)`` scores a model on a part (RMSE, MAE and query-only nDCG in the explicit view;
    full ranking in the implicit one), ``train_default()`` is the default training budget."""

    split: SplitConfig = field(default_factory=SplitConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    view: str = "explicit"
    threshold: float = 4.0
    negatives: int = 4
    family: ClassVar[str] = "rating"

    @property
    def name(self) -> str:
        return self.split.protocol

    @classmethod
    def of(cls, run: RunConfig) -> RatingProtocol:
        return cls(run.split, run.tasks, run.view, run.threshold, run.negatives)

    def train_default(self) -> TrainConfig:
        return TrainConfig(seed=self.split.seed, select="rmse" if self.view == "explicit" else "ndcg@10")

    def collate(self, tasks: list[Task]) -> TaskBatch:
        return collate(tasks)

    def describe(self, prep: Prepared) -> dict:
        return prep.split.describe()

    def evaluate(self, model, prep: Prepared, part: str = "test") -> dict:
        with torch.no_grad():
            return evaluator(self, prep)(model, getattr(prep, part))

    def context(self, ds) -> tuple:
        """What every learner of this protocol knows before any task: (the dataset in this view, the split, the
        task parts a task file gives (None: built from the split), the feature space fitted on meta-train, the
        encoded feature context). ``prepare`` builds the tasks on it; serving needs only this."""
        if self.view == "implicit":
            ds = to_implicit(ds, self.threshold)
            if ds.n_inter == 0:
                raise MetarecError(f"{ds.name}: the implicit view (ratings >= {self.threshold:g}) keeps no interaction")
        if self.name == "tasks":  # the split and its tasks as a file gives them (metarec/task_files.py)
            split, by_part = task_file_split(ds, self.split.task_file)
            parts = [by_part[p] for p in ("train", "valid", "test")]
        else:
            split, parts = make_split(ds, self.split), None
        if len(split.train) == 0:
            raise MetarecError(f"{ds.name} {self.name}: meta-train keeps no interaction (view {self.view})")
        fs = fit_features(ds, split.train)
        icodes, genre = fs.encode_items(ds.items)
        seen = np.unique(split.train["item"].to_numpy())
        item_ids = torch.zeros(ds.n_items, dtype=torch.long)
        item_ids[torch.from_numpy(seen)] = torch.arange(1, len(seen) + 1)
        ctx = Context(fs.encode_users(ds.users), icodes, genre, fs.user_cardinalities, fs.item_cardinalities, item_ids)
        return ds, split, parts, fs, ctx

    def prepare(self, ds) -> Prepared:
        ds, split, parts, fs, ctx = self.context(ds)
        if parts is None:
            parts = [build_tasks(df, self.tasks, desc=name) for name, df in split.parts.items()]
        if any(len(p) == 0 for p in parts):
            sizes = ", ".join(f"{n} {len(p)}" for n, p in zip(split.parts, parts, strict=True))
            raise MetarecError(f"{ds.name} {self.name}: a part has no task ({sizes})")
        candidates = split.candidate_items()
        if self.view == "implicit":
            known = known_codes(ds.inter)
            train_items = np.unique(split.train["item"].to_numpy())
            parts = [add_negatives(parts[0], known, train_items, self.negatives, self.tasks.seed),
                     *(add_negatives(p, known, candidates, self.negatives, self.tasks.seed + 1 + j)
                       for j, p in enumerate(parts[1:]))]
        return Prepared(ctx, parts[0], parts[1], parts[2], candidates, split, ds, self, fs)


def evaluator(run: RunConfig | RatingProtocol, prep: Prepared):
    if run.view == "explicit":
        return lambda learner, tasks: evaluate_rating(learner, tasks)
    return lambda learner, tasks: evaluate_ranking(learner, tasks, prep.candidates)


def run_identity(run: RunConfig, learner_cfg, prep: Prepared) -> dict:
    """What determines a run besides its training config (``fit`` adds that): the run and learner configs,
    the data's content fingerprint and the split. A checkpoint resumes, and a model file evaluates, only
    against the same."""
    rd = {k: v for k, v in asdict(run).items() if k != "train"}
    if not rd["split"]["task_file"]:  # outside the tasks protocol: the identity of runs made before the field
        del rd["split"]["task_file"]
    return {"run": rd, "learner": asdict(learner_cfg),
            "data": data_fingerprint(prep.dataset), "split": prep.split.describe()}


def train_and_evaluate(run: RunConfig, learner_cfg, out_dir: Path | None = None, progress: bool = True,
                       prep: Prepared | None = None, pretrained: dict | None = None, restart: bool = False,
                       evaluate_test: bool = True) -> dict:
    """Fit on meta-train (selecting on meta-valid), evaluate on meta-test, optionally write the files.

    ``evaluate_test=False`` (tuning trials, ``metarec tune``): the meta-test tasks are never evaluated and the
    result's "test" is None.

    ``pretrained``: a dict shared across calls (``metarec compare``) in which learners trained without
    adaptation (``train_mode="pooled"``) keep their fitted weights, keyed by everything that determines
    them; ``noadapt`` and ``ptft`` then share one pretraining, as PT-FT's definition implies.
    ``restart``: discard a checkpoint in ``out_dir`` instead of resuming from it (it must match the run).
    """
    prep = prep or prepare(run)
    identity = run_identity(run, learner_cfg, prep) if out_dir is not None else None
    spec = LEARNERS[run.learner]
    torch.manual_seed(run.train.seed)  # the initialisation depends on the seed only, not on earlier runs
    learner = spec.cls(prep.ctx, learner_cfg)
    ev = evaluator(run, prep)
    t0 = time.perf_counter()
    pooled = learner.pooled
    shared = replace(learner_cfg, inner=None) if hasattr(learner_cfg, "inner") else learner_cfg  # not the fine-tuning
    key = repr((asdict(run.train), asdict(shared))) if pooled else None
    if pretrained is not None and key in pretrained:
        state, fitted = pretrained[key]
        learner.load_state_dict(state)
        fitted = {**fitted, "best": ev(learner, prep.valid), "resumed_seconds": 0.0}
    else:
        ckpt = out_dir / "checkpoint.pt" if out_dir is not None else None
        fitted = train_learner(learner, lambda: prep.pooled_train() if pooled else prep.train, prep.split.train,
                               lambda m: ev(m, prep.valid), run.train, checkpoint=ckpt, progress=progress,
                               identity=identity, restart=restart)
        if pretrained is not None and pooled and learner.meta_trained:
            pretrained[key] = ({k: v.clone() for k, v in learner.state_dict().items()}, fitted)
    train_s = time.perf_counter() - t0 + fitted.get("resumed_seconds", 0.0)  # + epochs of resumed processes
    test = ev(learner, prep.test) if evaluate_test and writer() else None  # rank 0 alone, in a multi-process run
    result = {"learner": run.learner, "dataset": run.dataset, "protocol": run.split.protocol,
              "view": run.view, "seed": run.split.seed,
              "seeds": {"split": run.split.seed, "tasks": run.tasks.seed, "train": run.train.seed},
              "preset": run.preset, "test": test, "valid": fitted["best"],
              "best_epoch": fitted["best_epoch"], "train_seconds": train_s, "history": fitted["history"],
              "run_config": asdict(run), "learner_config": asdict(learner_cfg),
              "split": prep.split.describe()}
    result = with_core(result, method=run.learner, family="rating", protocol=run.split.protocol, dataset=run.dataset)
    if out_dir is not None and writer():
        out_dir.mkdir(parents=True, exist_ok=True)
        learner.save(out_dir / "model.pt", extra={"run_config": asdict(run), "learner_config": asdict(learner_cfg),
                                                  "vocabularies": prep.features.to_dict(),
                                                  "user_ids": prep.dataset.users["raw_id"].tolist(),
                                                  "item_ids": prep.dataset.items["raw_id"].tolist(),
                                                  "data_fingerprint": identity["data"],
                                                  "fingerprint": fingerprint(run_identity_of(run.train, identity))})
        write_json(out_dir / "results.json", result)
    return result
