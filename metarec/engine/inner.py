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

__all__ = ["InnerConfig", "expand_fast", "batched_call", "masked_task_loss", "sgd_step", "sgd_step_unfused",
           "UpdateRule", "ORDERS", "inner_loop"]


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


def sgd_step_unfused(w: Tensor, g: Tensor, lr: float | Tensor) -> Tensor:
    """``w - lr * g`` in two ops (the product rounded first): the arithmetic of the test-time fine-tuning loops
    (s²Meta's FT, EMCDR, the DeepFM warm-up), kept so that their numbers stay bit for bit what they were."""
    return w - lr * g


# an update rule: (w, g, lr) -> the updated w; lr is the loop's rate for that name (a number or a tensor)
UpdateRule = Callable[[Tensor, Tensor, "float | Tensor"], Tensor]
ORDERS = ("second", "first", "none")


def inner_loop(
    fast: dict[str, Tensor],
    support_loss: Callable[..., Tensor],
    steps: int,
    lr: float | Tensor | Mapping[str, Tensor],
    first_order: bool = False,
    *,
    order: str | None = None,
    update: UpdateRule = sgd_step,
    step_arg: bool = False,
    on_step: Callable[[int, Tensor, dict[str, Tensor]], bool | None] | None = None,
    retain_graph: bool = False,
    rule: Callable[[int, dict[str, Tensor], dict[str, Tensor], Tensor], dict[str, Tensor]] | None = None,
    after_step: Callable[[int, dict[str, Tensor]], None] | None = None,
) -> dict[str, Tensor]:
    """``steps`` updates of every task at once; returns the adapted fast weights (name -> (B, ...)).

    ``support_loss(fast) -> (B,)`` (``support_loss(fast, step)`` with ``step_arg``) is each task's support loss
    under fast weights ``fast``. ``lr`` is a float, a learnable scalar tensor, or a dict of per-parameter
    learnable tensors shaped like the parameters (Meta-SGD). Runs under ``enable_grad`` so evaluation can adapt
    inside ``no_grad``.

    The gradient order and the update rule are arguments, not copies of the loop:
    ``order`` "second" (``create_graph``: true second order, MAML), "first" (the gradients are constants; the
    meta-gradient flows through the identity path of the updates, FOMAML) or "none" (every step starts from
    detached leaves and the result is detached: test-time fine-tuning that nothing back-propagates through);
    default "first" if ``first_order`` else "second". ``update(w, g, lr)`` is the rule (default SGD,
    :func:`sgd_step`). ``on_step(step, loss, grads)`` sees each step's (B,) support losses and gradients (MAMO
    keeps the first step's user gradients, the DeepFM warm-up its first losses); when it returns True the loop
    ends there, before that step's update (s²Meta's stop policy once every task has stopped). ``retain_graph``
    keeps each step's graph in first order (a caller that back-propagates through a recorded loss later).
    ``rule(step, fast, grads, loss) -> new fast`` replaces the per-name ``update`` with one update of all
    parameters at once: a learned rule whose state spans the parameters and steps (s²Meta's LSTM controller,
    which also keeps the tasks that stopped where they are). ``after_step(step, fast)`` sees each step's result.
    """
    order = order or ("first" if first_order else "second")
    if order not in ORDERS:
        raise ValueError(f"unknown gradient order {order!r}: choose one of {', '.join(ORDERS)}")
    names = list(fast)
    outer_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if not outer_graph or order == "none":
            # called under no_grad (evaluation, serving): views made there are not graph nodes, so start
            # the inner graph from fresh leaves; nothing flows back to the initialisation anyway.
            fast = {k: v.detach().requires_grad_(True) for k, v in fast.items()}
        else:  # a tensor outside the outer graph (a buffer, a constant) cannot carry a meta-gradient: a leaf
            fast = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in fast.items()}
        for step in range(steps):
            if order == "none" and step:
                fast = {k: v.detach().requires_grad_(True) for k, v in fast.items()}
            loss = support_loss(fast, step) if step_arg else support_loss(fast)  # (B,)
            grads = torch.autograd.grad(loss.sum(), [fast[k] for k in names], create_graph=order == "second",
                                        retain_graph=True if retain_graph and order == "first" else None,
                                        allow_unused=True)
            # the gradients by name, only for a hook or a rule that reads them (the plain loop skips the dict)
            present = {k: g for k, g in zip(names, grads, strict=True) if g is not None} \
                if on_step is not None or rule is not None else {}
            if on_step is not None and on_step(step, loss, present):
                break
            if rule is not None:
                fast = {**fast, **rule(step, fast, present, loss)}
            else:
                fast = {k: fast[k] if g is None else update(fast[k], g, lr[k] if isinstance(lr, Mapping) else lr)
                        for k, g in zip(names, grads, strict=True)}
            if after_step is not None:
                after_step(step, fast)
    if order == "none":
        fast = {k: v.detach() for k, v in fast.items()}
    return fast
