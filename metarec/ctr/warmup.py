"""The item warm-up protocol of Meta-Embedding (Pan et al. SIGIR'19), also used by MWUF (Zhu et al. SIGIR'21).

Data. Explicit ratings become CTR labels: label = 1 if rating >= ``threshold`` (4) else 0; every rating is
one impression. Items are split by their number of interactions (the papers' rule): *old* items have more
than ``old_min``; *new* items have between ``3 k + min_test`` and ``old_min``; the others are not used.
MovieLens-1M uses the papers' numbers (old: > 200 ratings; new: 80-200, k = 20); smaller logs such as
ml-100k use old > 100, new 40-100, k = 10 (``dataset_defaults``). Every user is a known user.

- The backbone (``metarec/nets/deepfm.py``) is trained once per seed on all the old items' interactions, then frozen.
- Each new item's interactions, sorted by (time, user), give three warm-up batches of k each, warm-a, warm-b
  and warm-c (its 1st..k-th, (k+1)..2k-th, (2k+1)..3k-th), and the rest is its test set.
- A fraction ``valid_frac`` of old items (seeded) is held out of the meta-learners' training; their tasks
  select the epoch (``fit()``), never the new items' data.

Evaluation, identical for every method (``run_protocol``): AUC and log-loss over all the new items' test
interactions pooled (``global_auc``, ``logloss`` of metarec/evaluation/metrics.py) in the cold phase (the
method's initial ID vectors, no update), then after updating the new items' ID parameters with warm-a, then
warm-b, then warm-c. The update (``WarmUpdate``, ``sgd_update``) changes only the new items' ID parameters:
``steps`` gradient steps of rate ``lr`` per batch on each item's mean loss over its k interactions (every item
updated at once, independently of the others); the backbone is frozen. A method is any object with
``init_embeddings(items) -> (N, d)`` and ``effective(raw, items, user_mean) -> (N, d)``: ``user_mean`` is the
mean user-ID vector of the warm-up interactions seen so far (None in the cold phase; MWUF's U_i).

Methods: ``base`` (random normal ID vectors, the papers' baseline), ``mean`` (the mean of the old items' ID
vectors), ``metaemb`` and ``mwuf`` (``metarec/learners``).

Open choices: split by interaction count as in the papers (not by release year, which MovieLens' item-cold
split of ``metarec/splits.py`` uses); the old items' interactions train the backbone whatever their time (as
in the papers), so they may postdate a new item's test interactions; plain gradient steps for the warm-up
update (the authors' code used Adam on the whole embedding table; a per-item gradient step is the update
Meta-Embedding's objective simulates, and it does not couple items through optimiser state).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from metarec import registry
from metarec.data.features import fit_features
from metarec.data.types import Dataset
from metarec.engine.train import TrainConfig, train_learner
from metarec.errors import MetarecError
from metarec.evaluation.metrics import global_auc, logloss
from metarec.learners.base import Context
from metarec.learners.metaemb import MetaEmb, MetaEmbConfig
from metarec.learners.mwuf import MWUF, MWUFConfig
from metarec.nets.deepfm import BackboneConfig, DeepFM, WarmUpdate, fit_backbone, sgd_update
from metarec.report import with_core
from metarec.tasks import Task, collate

PHASES = ("cold", "warm-a", "warm-b", "warm-c")
METHODS = registry.names("warmup")  # base, mean, metaemb, mwuf


@dataclass(frozen=True)
class WarmupConfig:
    threshold: float = 4.0  # label = rating >= threshold
    old_min: int = 200  # items with more interactions than this are old
    k: int = 20  # interactions per warm-up batch
    min_test: int = 20  # a new item keeps at least this many test interactions
    valid_frac: float = 0.1  # old items held out of the meta-learners' training (model selection)
    update: WarmUpdate = field(default_factory=WarmUpdate)
    eval_batch: int = 65536


@dataclass(frozen=True)
class WarmupRun:
    """Everything ``metarec warmup`` runs with; ``--section.field=value`` overrides any of it."""

    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, meta_batch=32, lr=1e-3, patience=2,
                                                                   select="loss"))
    metaemb: MetaEmbConfig = field(default_factory=MetaEmbConfig)  # its backbone and update come from the run
    mwuf: MWUFConfig = field(default_factory=MWUFConfig)


def dataset_defaults(name: str) -> WarmupConfig:
    """The papers' thresholds on ml-1m; scaled down (old > 100, new 40-100, k = 10) for smaller logs."""
    if name == "ml-1m":
        return WarmupConfig()
    return WarmupConfig(old_min=100, k=10, min_test=10)


# ------------------------------------------------------------------------------------------------ split


@dataclass
class WarmupSplit:
    base: pd.DataFrame  # old items' interactions: user, item, label, timestamp
    warm: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]  # warm-a, -b, -c: k rows per new item
    test: pd.DataFrame
    old_items: np.ndarray  # sorted item indices
    new_items: np.ndarray  # sorted item indices

    def describe(self) -> dict:
        return {"old_items": len(self.old_items), "new_items": len(self.new_items),
                "base_interactions": len(self.base), "warm_interactions": [len(w) for w in self.warm],
                "test_interactions": len(self.test),
                "base_ctr": float(self.base["label"].mean()), "test_ctr": float(self.test["label"].mean())}


def make_warmup_split(ds: Dataset, cfg: WarmupConfig) -> WarmupSplit:
    if ds.implicit:
        raise MetarecError(f"{ds.name}: the warm-up protocol needs explicit ratings (labels are rating >= "
                           f"{cfg.threshold}); drop --implicit")
    if cfg.k < 1 or cfg.min_test < 1 or cfg.old_min < 3 * cfg.k + cfg.min_test:
        raise MetarecError(f"warm-up sizes need k >= 1, min_test >= 1 and old_min >= 3 k + min_test (got k={cfg.k}, "
                           f"min_test={cfg.min_test}, old_min={cfg.old_min})")
    df = ds.inter[["user", "item", "rating", "timestamp"]]
    df = df.assign(label=(df["rating"].to_numpy() >= cfg.threshold).astype(np.float32)).drop(columns="rating")
    counts = df.groupby("item").size()
    old = np.sort(counts.index[counts > cfg.old_min].to_numpy())
    new = np.sort(counts.index[(counts >= 3 * cfg.k + cfg.min_test) & (counts <= cfg.old_min)].to_numpy())
    if len(old) == 0 or len(new) == 0:
        raise MetarecError(f"{ds.name}: {len(old)} old items (> {cfg.old_min} interactions) and {len(new)} new items "
                           f"({3 * cfg.k + cfg.min_test}-{cfg.old_min}); set --warmup.old_min/k/min_test to fit "
                           "this log")
    base = df[df["item"].isin(old)].reset_index(drop=True)
    cold = df[df["item"].isin(new)].sort_values(["item", "timestamp", "user"], kind="stable")
    pos = cold.groupby("item").cumcount().to_numpy()
    k = cfg.k
    warm = tuple(cold[(pos >= j * k) & (pos < (j + 1) * k)].reset_index(drop=True) for j in range(3))
    test = cold[pos >= 3 * k].reset_index(drop=True)
    for name, part in (("old items' interactions", base), ("new items' test interactions", test)):
        if part["label"].nunique() < 2:
            raise MetarecError(f"{ds.name}: the {name} hold only one label; AUC needs clicks and non-clicks")
    return WarmupSplit(base, warm, test, old, new)


# ------------------------------------------------------------------------------------------- prepared data


@dataclass
class WarmupData:
    ctx: Context
    split: WarmupSplit
    new_items: torch.Tensor  # (N,) long
    phases: list[tuple[torch.Tensor, torch.Tensor]]  # per warm-up batch: users (N, k), labels (N, k)
    test: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # users, items, labels (M,)
    new_pos: torch.Tensor  # (n_items,) position of an item among the new items, -1 otherwise


def prepare_warmup(ds: Dataset, cfg: WarmupConfig) -> WarmupData:
    split = make_warmup_split(ds, cfg)
    fs = fit_features(ds, split.base)
    icodes, genre = fs.encode_items(ds.items)
    item_ids = torch.zeros(ds.n_items, dtype=torch.long)
    item_ids[torch.from_numpy(split.old_items)] = torch.arange(1, len(split.old_items) + 1)
    ctx = Context(fs.encode_users(ds.users), icodes, genre, fs.user_cardinalities, fs.item_cardinalities, item_ids)
    n, k = len(split.new_items), cfg.k
    phases = []
    for w in split.warm:  # sorted by (item, time, user): k consecutive rows per new item, items ascending
        users = torch.from_numpy(w["user"].to_numpy(np.int64, copy=True)).view(n, k)
        labels = torch.from_numpy(w["label"].to_numpy(np.float32, copy=True)).view(n, k)
        phases.append((users, labels))
    t = split.test
    test = tuple(torch.from_numpy(t[c].to_numpy(dt, copy=True))
                 for c, dt in (("user", np.int64), ("item", np.int64), ("label", np.float32)))
    new_pos = torch.full((ds.n_items,), -1, dtype=torch.long)
    new_pos[torch.from_numpy(split.new_items)] = torch.arange(n)
    return WarmupData(ctx, split, torch.from_numpy(split.new_items), phases, test, new_pos)


def item_tasks(frame: pd.DataFrame, items: np.ndarray, k: int, seed: int) -> list[Task]:
    """Meta-training tasks from old items: each item's interactions, shuffled (seeded), cut into consecutive
    disjoint pairs of k-minibatches (support = a, query = b); ``n // (2k)`` tasks per item."""
    df = frame[frame["item"].isin(items)].sort_values(["item", "timestamp", "user"], kind="stable")
    u, i, y = df["user"].to_numpy(), df["item"].to_numpy(), df["label"].to_numpy(np.float32)
    bounds = np.r_[0, np.cumsum(df.groupby("item", sort=True).size().to_numpy())]
    owners = np.unique(i)
    tasks = []
    for n, owner in enumerate(owners):
        idx = np.random.default_rng([seed, int(owner)]).permutation(np.arange(bounds[n], bounds[n + 1]))
        for p in range(len(idx) // (2 * k)):
            a, b = idx[2 * p * k:(2 * p + 1) * k], idx[(2 * p + 1) * k:(2 * p + 2) * k]
            tasks.append(Task(int(owner), u[a], i[a], y[a], u[b], i[b], y[b]))
    return tasks


# --------------------------------------------------------------------------------------------- methods


class RandomInit:
    """The papers' base: new ID vectors drawn like the backbone's initial embeddings."""

    def __init__(self, dim: int, std: float, seed: int):
        self.dim, self.std, self.seed = dim, std, seed

    def init_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(len(items), self.dim, generator=g) * self.std

    def effective(self, raw, items, user_mean):
        return raw


class MeanInit:
    """New ID vectors start at the mean of the old items' trained ID vectors."""

    def __init__(self, backbone: DeepFM):
        self.mean = backbone.old_item_table().detach().mean(0)

    def init_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        return self.mean.expand(len(items), -1).clone()

    def effective(self, raw, items, user_mean):
        return raw


def train_meta(learner, data: WarmupData, cfg: WarmupConfig, tcfg: TrainConfig, seed: int,
               progress: bool = True) -> dict:
    """Meta-train a MetaEmb or MWUF learner with ``fit()`` on old items, selecting on held-out old items."""
    old = data.split.old_items
    rng = np.random.default_rng([seed, 17])
    n_valid = int(round(cfg.valid_frac * len(old))) if len(old) > 1 else 0
    valid_items = np.sort(rng.choice(old, size=n_valid, replace=False)) if n_valid else old[:0]
    train_items = np.setdiff1d(old, valid_items)
    train = item_tasks(data.split.base, train_items, cfg.k, seed)
    valid = item_tasks(data.split.base, valid_items, cfg.k, seed + 1) if n_valid else train[:256]
    if not train:
        raise MetarecError(f"no old item has {2 * cfg.k} interactions to form a meta-training task")

    def valid_fn(m):
        m.eval()
        losses, n = 0.0, 0
        for j in range(0, len(valid), 256):
            b = collate(valid[j:j + 256])
            losses += float(m.valid_loss(b)) * len(b)
            n += len(b)
        return {"loss": losses / max(n, 1)}

    t0 = time.perf_counter()
    out = train_learner(learner, lambda: train, data.split.base, valid_fn, replace(tcfg, seed=seed), progress=progress)
    seconds = time.perf_counter() - t0
    learner.eval()
    epochs = len(out["history"])
    return {"train_tasks": len(train), "valid_tasks": len(valid), "epochs": epochs, "best_epoch": out["best_epoch"],
            "valid_loss": out["best"].get("loss"), "seconds": seconds,
            "tasks_per_s": len(train) * epochs / max(seconds, 1e-9), "history": out["history"]}


def make_method(name: str, run: WarmupRun, data: WarmupData, backbone: DeepFM, seed: int,
                progress: bool = True) -> tuple[object, dict]:
    """The method object for ``run_protocol`` and what its training reported."""
    bcfg, upd = run.backbone, run.warmup.update
    torch.manual_seed(seed)
    if name == "base":
        return RandomInit(bcfg.emb_dim, bcfg.init_std, seed), {}
    if name == "mean":
        return MeanInit(backbone), {}
    if name == "metaemb":
        learner = MetaEmb(data.ctx, replace(run.metaemb, backbone=bcfg, update=upd), backbone=backbone)
    elif name == "mwuf":
        learner = MWUF(data.ctx, replace(run.mwuf, backbone=bcfg, update=upd), backbone=backbone)
    else:
        raise MetarecError(f"unknown warm-up method {name!r}: choose from {', '.join(METHODS)}")
    info = train_meta(learner, data, run.warmup, run.train, seed, progress)
    return learner, info


# ------------------------------------------------------------------------------------------- the protocol


@torch.no_grad()
def evaluate_test(backbone: DeepFM, vecs: torch.Tensor, data: WarmupData, batch: int = 65536) -> dict[str, float]:
    """AUC and log-loss over every test interaction of the new items, with their ID vectors vecs (N, d)."""
    users, items, labels = data.test
    probs = []
    for j in range(0, len(users), batch):
        u, i = users[j:j + batch], items[j:j + batch]
        probs.append(torch.sigmoid(backbone.logits(u, i, vecs[data.new_pos[i]])))  # (M_j,)
    p = torch.cat(probs).double().numpy()
    y = labels.numpy() > 0.5
    return {"auc": global_auc(p, y), "logloss": logloss(p, y)}


def run_protocol(backbone: DeepFM, method, data: WarmupData, update: WarmUpdate,
                 eval_batch: int = 65536, users_seen: str = "all") -> dict[str, dict[str, float]]:
    """Cold, then warm-a, warm-b, warm-c: the metrics of each phase (see the module docstring).

    ``users_seen``: U_i (the mean ID vector of the item's users, for MWUF) over every warm-up user so far
    ("all", the protocol) or over the latest batch only ("last", a diagnostic)."""
    if users_seen not in ("all", "last"):
        raise ValueError(f"users_seen must be 'all' or 'last', not {users_seen!r}")
    items = data.new_items  # (N,)
    with torch.no_grad():
        raw = method.init_embeddings(items).detach()  # (N, d)
        user_sum = torch.zeros_like(raw)
        res = {"cold": evaluate_test(backbone, method.effective(raw, items, None), data, eval_batch)}
    for phase, (users, labels) in zip(PHASES[1:], data.phases, strict=True):
        mask = torch.ones_like(labels, dtype=torch.bool)  # (N, k)
        item_rep = items[:, None].expand_as(users)  # (N, k)
        with torch.no_grad():
            user_sum += backbone.user_vec(users).sum(1)
            seen = PHASES.index(phase) * users.shape[1]
            user_mean = user_sum / seen  # (N, d) U_i over the warm-up users so far
            if users_seen == "last":
                user_mean = backbone.user_vec(users).mean(1)  # (N, d) the latest batch only

        def eff(r, user_mean=user_mean):
            return method.effective(r, items, user_mean)

        raw, _ = sgd_update(backbone, raw, eff, users, item_rep, labels, mask, update, "none")
        with torch.no_grad():
            res[phase] = evaluate_test(backbone, eff(raw), data, eval_batch)
    return res


def run_seed(ds: Dataset, run: WarmupRun, methods: list[str], seed: int, progress: bool = True,
             on_step=None) -> tuple[list[dict], dict]:
    """Train the backbone once for this seed, then run every method through the protocol."""
    data = prepare_warmup(ds, run.warmup)
    torch.manual_seed(seed)
    backbone = DeepFM(data.ctx, run.backbone)
    base = data.split.base
    t0 = time.perf_counter()
    hist = fit_backbone(backbone, base["user"].to_numpy(), base["item"].to_numpy(), base["label"].to_numpy(),
                        run.backbone, seed, progress)
    bb_info = {"seconds": time.perf_counter() - t0, "train_loss": hist}
    if on_step is not None:
        on_step("backbone")
    results = []
    for name in methods:
        method, info = make_method(name, run, data, backbone, seed, progress)
        t0 = time.perf_counter()
        phases = run_protocol(backbone, method, data, run.warmup.update, run.warmup.eval_batch)
        info = {k: v for k, v in info.items() if k != "history"}
        results.append(with_core(
            {"seed": seed, "test": {f"{m}@{p}": v for p, d in phases.items() for m, v in d.items()},
             "valid": {"loss": info["valid_loss"]} if "valid_loss" in info else {},
             "best_epoch": info.get("best_epoch", 0), "train_seconds": info.get("seconds", 0.0),
             "phases": phases, "train": info, "protocol_seconds": time.perf_counter() - t0},
            method=name, family="warmup", protocol="warmup", dataset=ds.name))
        if on_step is not None:
            on_step(name)
    return results, {"backbone": bb_info, "split": data.split.describe(), "config": asdict(run)}
