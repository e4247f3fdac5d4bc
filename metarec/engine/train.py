"""The one outer training loop every learner uses.

Meta-batches of tasks, an optimiser (Adam), gradient clipping, model selection and early stopping on
meta-valid tasks (never meta-test), an atomic checkpoint after every epoch, resume from it, progress bars,
and a history. The shuffling of epoch e is drawn from ``(seed, e)``, so a resumed run replays exactly what
an uninterrupted one would have done.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from metarec.engine import dist
from metarec.engine.device import module_device, to_device
from metarec.errors import MetarecError
from metarec.io import load_torch, plain, save_torch
from metarec.tasks import Task, collate

__all__ = ["TrainConfig", "run_identity", "fingerprint", "identity_diff", "lower_is_better", "fit", "train_learner"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    meta_batch: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.0
    clip: float = 10.0
    patience: int = 5  # epochs without improvement on meta-valid before stopping
    select: str = "rmse"  # the meta-valid metric that selects the model
    seed: int = 0
    renamed: ClassVar[dict] = {"batch": "meta_batch"}  # the sequence models' files before the one TrainConfig

    def __post_init__(self):
        from metarec.checks import METRIC, check

        check(self, "train", pos_int=("epochs", "meta_batch", "patience"), nonneg_int=("seed",), pos=("lr",),
              nonneg=("weight_decay", "clip"), choices={"select": METRIC})  # clip 0: no clipping


def run_identity(cfg: TrainConfig, identity: dict | None = None) -> dict:
    """Everything that determines a training run: ``{"train": cfg, **identity}`` as plain data."""
    return plain({"train": asdict(cfg), **(identity or {})})


def fingerprint(identity: dict) -> str:
    """sha256 of a run identity (canonical JSON: sorted keys, tuples as lists)."""
    return hashlib.sha256(json.dumps(plain(identity), sort_keys=True).encode()).hexdigest()


def _recorded_identity(ck: dict) -> dict:
    if isinstance(ck.get("identity"), str):
        try:
            return json.loads(ck["identity"])
        except json.JSONDecodeError:
            pass
    return {"train": ck.get("config")}  # checkpoints written before the run identity: the training config only


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def identity_diff(old: dict, new: dict, limit: int = 6) -> str:
    """The keys whose values differ between two run identities, as ``key old -> new`` (at most ``limit``)."""
    a, b = _flat(json.loads(json.dumps(old, default=str))), _flat(json.loads(json.dumps(new, default=str)))
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    shown = [f"{k} {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def lower_is_better(metric: str) -> bool:
    return metric in ("mae", "rmse", "loss", "logloss")


def _meta_loss(model: Any, batch: Any) -> torch.Tensor:
    return model.meta_loss(batch)


def fit(learner, train_tasks: list[Task], valid_fn: Callable[[object], dict], cfg: TrainConfig,
        checkpoint: Path | None = None, progress: bool = True,
        on_batch: Callable[[int, int], None] | None = None, *,
        collate_fn: Callable[[list[Task]], object] = collate,
        batch_loss: Callable[[object, object], torch.Tensor] | None = None,
        params: list[torch.nn.Parameter] | None = None, identity: dict | None = None,
        restart: bool = False, select_start: bool = False) -> dict:
    """Meta-train ``learner`` on ``train_tasks``; select the epoch with the best ``valid_fn(learner)[select]``.

    Returns ``{"history": [...], "best_epoch": e, "best": metrics, "resumed_seconds": s}``; the learner holds
    the best weights. ``resumed_seconds``: wall time of the epochs that earlier processes finished before this
    one resumed from ``checkpoint`` (0 for a fresh run), so a caller can report the whole training time.
    ``on_batch(epoch, step)`` is a hook called after every optimiser step (tests use it to simulate a crash).
    Every model family uses this loop: ``collate_fn`` turns a list of tasks into a batch (default: the padded
    ``TaskBatch``), ``batch_loss(learner, batch)`` is the loss to minimise (default ``learner.meta_loss``) and
    ``params`` the parameters to optimise (default: all trainable ones).

    Run identity: ``identity`` is everything besides ``cfg`` that determines the run (the caller's whole config,
    the data's fingerprint, the split); the checkpoint records it with ``cfg`` and a run resumes only on an
    exact match, otherwise one line names the keys that differ. ``restart`` discards an existing checkpoint.

    ``select_start``: the learner as it is before the first step (a closed-form start, e.g. ``metafold``'s ALS
    fit) is scored on meta-valid too and competes in the selection as epoch 0 (``best_epoch`` 0: no epoch beat
    it, the start is kept). The start does not count for ``patience``, which runs from the best epoch, so a
    few epochs below the start do not stop training early.

    Many processes (:mod:`metarec.engine.dist`, a process group already joined): every rank runs this loop on
    the same tasks; each meta-batch is sharded over the ranks and the gradients summed, so the steps are those
    of one process on the whole meta-batch. Rank 0 alone validates (the others receive its figures), reads and
    writes the checkpoint; the others get its state when a run resumes.
    """
    if not train_tasks:
        raise MetarecError("no training tasks")
    torch.manual_seed(cfg.seed)
    batch_loss = batch_loss or _meta_loss
    params = [p for p in (params if params is not None else learner.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sign = 1.0 if lower_is_better(cfg.select) else -1.0
    state: dict[str, Any] = {"epoch": 0, "best_score": math.inf, "best_epoch": -1, "best_state": None, "bad": 0,
                             "history": [], "seconds": 0.0}
    ident = run_identity(cfg, identity)
    dev = module_device(learner)  # batches are collated on the CPU and moved to the model's device
    n_ranks, me = dist.world(), dist.rank()
    main = me == 0
    if checkpoint is not None and restart and main:
        Path(checkpoint).unlink(missing_ok=True)
    def resume() -> dict | None:  # the checkpoint's training state, if there is one (rank 0)
        if checkpoint is None or not Path(checkpoint).is_file():
            return None
        ck = load_torch(Path(checkpoint), "checkpoint")  # weights_only: a checkpoint cannot run code
        theirs = _recorded_identity(ck)
        if fingerprint(theirs) != fingerprint(ident):
            raise MetarecError(f"{Path(checkpoint).parent} holds a run with other settings: "
                               f"{identity_diff(theirs, ident)}; use --restart or another --out")
        try:
            learner.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optim"])
            got = ck["state"]
            torch.set_rng_state(ck["torch_rng"])
            if dev.type == "cuda" and ck.get("cuda_rng") is not None:  # dropout draws on the device
                torch.cuda.set_rng_state(ck["cuda_rng"], dev)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise MetarecError(f"{checkpoint}: not a checkpoint of this run ({type(e).__name__}: "
                               f"{(str(e).splitlines() or [''])[0][:100]}); use --restart or another --out") from None
        got.setdefault("seconds", 0.0)  # checkpoints written before the field
        print(f"resuming {checkpoint}: {got['epoch']} of {cfg.epochs} epochs done", file=sys.stderr, flush=True)
        return got

    if n_ranks == 1:
        state = resume() or state
    else:  # rank 0 resumes (or not) and its start goes to every rank; its error stops them all
        shared: Any = None
        if main:
            try:
                state = resume() or state
                shared = {"state": state, "optim": opt.state_dict(), "torch_rng": torch.get_rng_state()}
            except MetarecError as e:
                shared = e
        shared = dist.broadcast_object(shared)
        if isinstance(shared, MetarecError):
            raise shared
        if not main:
            state = shared["state"]
            opt.load_state_dict(shared["optim"])
            torch.set_rng_state(shared["torch_rng"])
        dist.broadcast_module(learner)
    resumed_seconds = state["seconds"]
    def selection_score(valid: dict) -> float:  # lower is better
        if cfg.select not in valid:
            raise MetarecError(f"train.select {cfg.select!r} is not measured on these meta-valid tasks; choose one "
                               f"of {', '.join(k for k in valid if k != 'tasks')}")
        return sign * valid[cfg.select]

    def snapshot() -> dict:
        return {k: v.detach().clone() for k, v in learner.state_dict().items()}

    def validate() -> dict:  # rank 0 validates; every rank gets its figures (or its error)
        if n_ranks == 1:
            return valid_fn(learner)
        got: Any = None
        if main:
            try:
                got = valid_fn(learner)
            except MetarecError as e:
                got = e
        got = dist.broadcast_object(got)
        if isinstance(got, MetarecError):
            raise got
        return got

    if select_start and state["epoch"] == 0 and "start" not in state:
        learner.eval()
        valid = validate()
        state.update(start=valid, start_score=selection_score(valid), best_state=snapshot())
        if progress and main:
            tqdm.write(f"start: valid {cfg.select} {valid[cfg.select]:.4f}")
    n_steps = math.ceil(len(train_tasks) / cfg.meta_batch)
    while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
        epoch, t_epoch = state["epoch"], time.perf_counter()
        learner.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_tasks))
        losses = []
        bar = tqdm(range(n_steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (progress and main))
        for step in bar:
            idx = order[step * cfg.meta_batch:(step + 1) * cfg.meta_batch]
            opt.zero_grad(set_to_none=True)
            if n_ranks == 1:
                loss = batch_loss(learner, to_device(collate_fn([train_tasks[j] for j in idx]), dev))
                loss.backward()
                loss_value = loss.item()
            else:  # this rank's shard, weighted by its share of the meta-batch's loss
                mine = dist.shard(idx, n_ranks, me)
                batch = to_device(collate_fn([train_tasks[j] for j in mine]), dev) if len(mine) else None
                w = dist.loss_weight(learner, batch) if batch is not None else 0.0
                total = dist.allreduce_sum([w])[0]
                part = 0.0
                if batch is not None and w > 0:
                    loss = batch_loss(learner, batch)
                    (loss * (w / total)).backward()
                    part = loss.item() * w / total
                dist.allreduce_grads(params)
                loss_value = dist.allreduce_sum([part])[0]
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            losses.append(loss_value)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            if on_batch is not None:
                on_batch(epoch, step)
        valid = validate()
        score = selection_score(valid)
        improved = score < state["best_score"]  # the best epoch so far (patience counts from it)
        if improved:
            state.update(best_score=score, bad=0)
        else:
            state["bad"] += 1
        if improved and score < state.get("start_score", math.inf):  # the start, if it competes, must be beaten
            state.update(best_epoch=epoch, best_state=snapshot())
        state["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **valid})
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - t_epoch
        if progress and main:
            tqdm.write(f"epoch {epoch + 1}: train loss {np.mean(losses):.4f}  valid {cfg.select} "
                       f"{valid[cfg.select]:.4f}{'  *' if improved else ''}")
        if checkpoint is not None and main:
            save_torch(Path(checkpoint), {"model": learner.state_dict(), "optim": opt.state_dict(), "state": state,
                                          "torch_rng": torch.get_rng_state(), "config": asdict(cfg),
                                          "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                                          "identity": json.dumps(plain(ident), sort_keys=True),
                                          "fingerprint": fingerprint(ident)})
    if state["best_state"] is not None:
        learner.load_state_dict(state["best_state"])
    best = (copy.deepcopy(state["history"][state["best_epoch"]]) if state["best_epoch"] >= 0
            else copy.deepcopy(state.get("start", {})))
    return {"history": state["history"], "best_epoch": state["best_epoch"] + 1, "best": best,
            "resumed_seconds": resumed_seconds}


def train_learner(learner, tasks: Callable[[], list[Task]], frame, valid_fn: Callable[[object], dict],
                  cfg: TrainConfig, *, checkpoint: Path | None = None, progress: bool = True,
                  identity: dict | None = None, restart: bool = False) -> dict:
    """The one training step of every learner of the rating, scenario and warm-up families.

    A meta-trained learner (``learner.meta_trained``) gets its declared ``prefit(frame)`` on the meta-train
    interactions ``frame``, then :func:`fit` on ``tasks()`` (built only here: a closed-form learner never needs
    them), its ``select_start`` deciding whether the start competes in the selection. A closed-form learner is
    fitted on ``frame`` (``fit_direct``) and scored once on meta-valid. Returns :func:`fit`'s record
    (``{"history", "best_epoch", "best", ...}``).
    """
    if learner.meta_trained:
        learner.prefit(frame)
        return fit(learner, tasks(), valid_fn, cfg, checkpoint=checkpoint, progress=progress, identity=identity,
                   restart=restart, select_start=learner.select_start)
    learner.fit_direct(frame)
    return {"history": [], "best_epoch": 0, "best": valid_fn(learner)}
