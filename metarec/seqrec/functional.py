"""Losses and the functional inner loop for sequence networks (MML 4.4.2 eq. 18-20, PT-FT's fine-tuning).

Every sequence network follows the contract of :class:`metarec.nets.sasrec.SASRec`: ``net(seq, pos, items)``.
Per-task fast weights are a dict name -> (B, ...) tensor; :func:`vcall` is ``functional_call`` vmapped over
the tasks (dropout draws differ per task), so a meta-batch adapts in one vectorised computation, and
:func:`inner_adapt` runs SGD steps on every task's support positions through the shared engine
(:func:`metarec.engine.inner.inner_loop`: one ``autograd.grad`` of the summed task losses, second order
unless ``first_order``).

Losses: BPR (Rendle et al.; MML's training loss) with one negative per target drawn uniformly from a pool
(the items the training data contains: new items are unknown when a model is trained), or cross-entropy
over every item.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metarec.engine.inner import InnerConfig, expand_fast, inner_loop
from metarec.seqrec.batch import SeqBatch

Call = Callable[[Tensor, Tensor, Tensor | None], Tensor]  # (seq, pos, items) -> scores


def vcall(net: nn.Module, fast: dict[str, Tensor], seq: Tensor, pos: Tensor, items: Tensor | None = None) -> Tensor:
    """``net(seq[b], pos[b], items[b])`` with task b's fast weights ``fast[k][b]``, vmapped over b.

    fast: name -> (B, ...); seq (B, L); pos (B, P); items (B, P, C) or None -> (B, P, C) or (B, P, n_items).
    """
    if items is None:
        return torch.vmap(lambda f, s, p: functional_call(net, f, (s, p), strict=False),
                          randomness="different")(dict(fast), seq, pos)
    return torch.vmap(lambda f, s, p, i: functional_call(net, f, (s, p, i), strict=False),
                      randomness="different")(dict(fast), seq, pos, items)


def sample_negatives(target: Tensor, pool: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Item indices drawn uniformly from ``pool`` (M,), one per entry of ``target`` (...), never equal to it.

    The draws are made on the CPU (``generator`` is a CPU generator, None: the global one) and moved to the
    pool's device, so a run samples the same negatives on every device."""
    def draw() -> Tensor:
        return pool[torch.randint(len(pool), target.shape, generator=generator, device="cpu").to(pool.device)]

    neg = draw()
    for _ in range(10):
        clash = neg == target
        if not clash.any():
            break
        neg = torch.where(clash, draw(), neg)
    return neg


def position_losses(call: Call, batch: SeqBatch, which: str, kind: str, pool: Tensor,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Per-position next-item losses (B, P) and their mask (B, P) for ``which`` in support/query/all.

    ``call(seq, pos, items)`` scores (a module, or a closure over fast weights).
    """
    B, L = batch.seq.shape
    if which == "query":
        pos, mask = batch.q_pos, batch.q_valid  # (B, Q)
    else:
        pos = torch.arange(L, device=batch.seq.device).expand(B, L)  # (B, L)
        mask = batch.s_mask if which == "support" else batch.t_mask
    tgt = (torch.take_along_dim(batch.target, pos, dim=1) - 1).clamp_min(0)  # (B, P) item index
    if kind == "bpr":
        items = torch.stack([tgt, sample_negatives(tgt, pool, generator)], dim=-1)  # (B, P, 2)
        s = call(batch.seq, pos, items)  # (B, P, 2)
        per = -F.logsigmoid(s[..., 0] - s[..., 1])  # (B, P)
    elif kind == "ce":
        s = call(batch.seq, pos, None)  # (B, P, N)
        per = F.cross_entropy(s.flatten(0, 1), tgt.flatten(), reduction="none").view(tgt.shape)  # (B, P)
    else:
        raise ValueError(f"unknown loss {kind!r}: bpr or ce")
    return per, mask


def task_mean(per: Tensor, mask: Tensor) -> Tensor:
    """(B,) mean loss of each task over its masked positions (0 for a task without any)."""
    m = mask.to(per.dtype)
    return (per * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def flat_mean(per: Tensor, mask: Tensor) -> Tensor:
    """Scalar mean over every masked position of the batch (each target weighs the same)."""
    m = mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1.0)


def fast_init(net: nn.Module, batch_size: int, names: list[str] | None = None) -> dict[str, Tensor]:
    """The shared initialisation of the adapted parameters as (B, ...) per-task views."""
    params = dict(net.named_parameters())
    return expand_fast({n: params[n] for n in (names or net.fast_names())}, batch_size)


def inner_adapt(net: nn.Module, batch: SeqBatch, fast: dict[str, Tensor], steps: int, lr: float,
                first_order: bool = False, kind: str = "bpr", pool: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """``steps`` SGD steps of every task's fast weights on its support positions (eq. 18); returns (B, ...)."""
    pool = pool if pool is not None else torch.arange(net.n_items, device=batch.seq.device)

    def support_loss(f):
        per, mask = position_losses(lambda s, p, i: vcall(net, f, s, p, i), batch, "support", kind, pool,
                                    generator)
        return task_mean(per, mask)  # (B,)

    return inner_loop(fast, support_loss, steps, lr, first_order)


def maml_loss(net: nn.Module, batch: SeqBatch, inner: InnerConfig, kind: str = "bpr", pool: Tensor | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """MAML's outer loss (eq. 19, 20): mean over tasks of the query loss after ``inner.steps`` local updates."""
    pool = pool if pool is not None else torch.arange(net.n_items, device=batch.seq.device)
    fast = inner_adapt(net, batch, fast_init(net, len(batch)), inner.steps, inner.lr, inner.first_order, kind,
                       pool, generator)
    per, mask = position_losses(lambda s, p, i: vcall(net, fast, s, p, i), batch, "query", kind, pool, generator)
    return task_mean(per, mask).mean()
