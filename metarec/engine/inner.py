"""The inner loop: a pure function over a dict of named tensors, batched over the tasks of a meta-batch.

The fast parameters of every task live in one tensor per name with a leading task dimension ``(B, ...)``.
A forward pass is ``torch.func.functional_call`` of the module, vmapped over that dimension, so a whole
meta-batch with ragged (masked) support sets adapts in one vectorised computation. Because the task losses
are independent, the gradient of their *sum* with respect to the ``(B, ...)`` fast weights is exactly the
per-task gradient of each task; ``create_graph=True`` keeps the graph of those gradients, so the query loss
back-propagates through the inner updates (true second order, MAML). ``first_order=True`` drops that graph
(FOMAML): the meta-gradient then flows only through the identity path of the updates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["InnerConfig", "expand_fast", "batched_call", "masked_task_loss", "sgd_step", "inner_loop"]


@dataclass(frozen=True)
class InnerConfig:
    steps: int = 1
    lr: float = 5e-6
    first_order: bool = False
    learn_lr: str = "none"  # "none", "scalar" (MetaCS) or "per_param" (Meta-SGD)

    def __post_init__(self):
        from metarec.checks import check

        check(self, "inner", nonneg_int=("steps",), nonneg=("lr",),
              choices={"learn_lr": ("none", "scalar", "per_param")})


def expand_fast(params: Mapping[str, Tensor], batch: int) -> dict[str, Tensor]:
    """The shared initialisation as per-task fast weights: each ``(...)`` tensor viewed as ``(B, ...)``."""
    return {k: v.unsqueeze(0).expand(batch, *v.shape) for k, v in params.items()}


def batched_call(module: nn.Module, fast: Mapping[str, Tensor], *inputs: Tensor) -> Tensor:
    """``module`` applied task by task with task b's fast weights ``fast[k][b]`` to ``inputs[j][b]``.

    fast: name -> (B, ...); inputs: each (B, ...). Parameters not in ``fast`` are the module's own.
    """
    def one(f, *x):
        return functional_call(module, f, x, strict=False)

    return torch.vmap(one)(dict(fast), *inputs)


def masked_task_loss(pred: Tensor, target: Tensor, mask: Tensor, kind: str = "mse") -> Tensor:
    """(B,) mean loss of each task over its real (masked) entries; an empty task contributes 0.

    pred, target, mask: (B, N).
    """
    if kind == "mse":
        per = (pred - target) ** 2
    elif kind == "bce":
        per = nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
    else:
        raise ValueError(f"unknown loss {kind!r}")
    m = mask.to(pred.dtype)
    return (per * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def sgd_step(w: Tensor, g: Tensor, lr: float | Tensor) -> Tensor:
    """``w - lr * g``, one fused op when ``lr`` is a plain number (a learnable rate keeps its graph)."""
    return torch.add(w, g, alpha=-lr) if isinstance(lr, float | int) else w - lr * g


def inner_loop(
    module: nn.Module,
    fast: dict[str, Tensor],
    support_loss: Callable[[dict[str, Tensor]], Tensor],
    steps: int,
    lr: float | Tensor | Mapping[str, Tensor],
    first_order: bool = False,
) -> dict[str, Tensor]:
    """``steps`` SGD steps on every task at once; returns the adapted fast weights (name -> (B, ...)).

    ``support_loss(fast) -> (B,)`` is each task's support loss under fast weights ``fast``. ``lr`` is a
    float, a learnable scalar tensor, or a dict of per-parameter learnable tensors shaped like the
    parameters (Meta-SGD). Runs under ``enable_grad`` so evaluation can adapt inside ``no_grad``.
    """
    names = list(fast)
    outer_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if not outer_graph:
            # called under no_grad (evaluation, serving): views made there are not graph nodes, so start
            # the inner graph from fresh leaves; nothing flows back to the initialisation anyway.
            fast = {k: v.detach().requires_grad_(True) for k, v in fast.items()}
        for _ in range(steps):
            loss = support_loss(fast)  # (B,)
            grads = torch.autograd.grad(loss.sum(), [fast[k] for k in names], create_graph=not first_order,
                                        allow_unused=True)
            new = {}
            for k, g in zip(names, grads, strict=True):
                if g is None:
                    new[k] = fast[k]
                    continue
                new[k] = sgd_step(fast[k], g, lr[k] if isinstance(lr, Mapping) else lr)
            fast = new
    return fast
