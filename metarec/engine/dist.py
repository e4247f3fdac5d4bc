"""Data-parallel meta-training over processes: each rank adapts its shard of the meta-batch, the gradients are
summed across ranks, every rank takes the same optimiser step.

How it fits the one outer loop (:func:`metarec.engine.train.fit`): a global meta-batch of B tasks (the same
shuffling on every rank) is cut into ``world`` contiguous shards; rank r computes the meta-loss of its shard and
back-propagates it scaled by ``w_r / W`` (``w_r`` = the shard's weight in the loss, :func:`loss_weight`, ``W``
their sum over ranks), the gradients are all-reduced (summed) in one flat bucket, and each rank clips and steps
on the same summed gradient: the update of one process on the whole meta-batch, up to float rounding, whenever
the loss draws no random numbers. Rank 0 alone runs validation (broadcast to the others, so the model selection
and early stopping agree), writes checkpoints and results; a resumed run reads the checkpoint on rank 0 and
broadcasts it.

This is what ``torch.nn.parallel.DistributedDataParallel`` does, without its module wrapper: a meta-learner's
loss is not its module's ``forward`` (it runs ``torch.func`` over fast weights in an inner loop), which DDP's
reducer cannot hook, so the all-reduce is called explicitly after ``backward``.

Processes: ``metarec train --nproc N`` starts N local ranks (gloo on the loopback interface);
``torchrun ... -m metarec train ...`` starts them on one or many nodes. A rank learns its place from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). The learners train on
CPU tensors, so the ranks join with gloo (a CUDA path with NCCL is not built: it could not be run here).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["world", "rank", "is_main", "init_from_env", "shutdown", "shard", "loss_weight", "allreduce_sum",
           "allreduce_grads", "broadcast_object", "broadcast_module"]


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(timeout_s: float = 4 * 3600) -> bool:
    """Join the gloo process group the environment describes (``WORLD_SIZE`` > 1); False when there is none.

    ``timeout_s`` bounds a collective (rank 0's validation and checkpointing run while the others wait in one).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if dist.is_initialized():
        return True
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices, n_ranks: int, r: int):
    """Rank ``r``'s contiguous share of a meta-batch's task indices (the first ``len % n_ranks`` ranks get one
    more; a rank may get none when the batch is smaller than the world)."""
    n = len(indices)
    base, extra = divmod(n, n_ranks)
    lo = r * base + min(r, extra)
    return indices[lo:lo + base + (r < extra)]


def loss_weight(learner, batch) -> float:
    """The number of units a batch's loss averages over: ``learner.loss_weight(batch)`` when the learner
    declares one (a loss averaged over interactions), else the number of tasks in the batch."""
    fn = getattr(learner, "loss_weight", None)
    return float(fn(batch)) if fn is not None else float(len(batch))


def allreduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def allreduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks in one flat bucket. A parameter no rank gave a gradient keeps
    ``grad = None`` (as in one process, so Adam leaves it alone); one some ranks did gets zeros elsewhere."""
    if not params:
        return
    dev = params[0].device
    dtype = params[0].dtype if all(p.dtype == params[0].dtype for p in params) else torch.float64
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=dev)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                      for p in params])
    dist.all_reduce(has)
    dist.all_reduce(flat)
    off = 0
    for p, h in zip(params, has.tolist(), strict=True):
        n = p.numel()
        p.grad = flat[off:off + n].view_as(p).to(p.dtype).clone() if h > 0 else None
        off += n


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (between this run's own processes; never data a user handed over)."""
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: torch.nn.Module) -> None:
    """Every parameter and buffer of rank 0's ``module`` copied into the others' (a common start)."""
    for t in [*module.parameters(), *module.buffers()]:
        with torch.no_grad():
            dist.broadcast(t.data, src=0)
