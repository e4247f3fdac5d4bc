"""Where a learner's tensors live: ``--device`` (cpu, cuda, cuda:N, auto) and the moves the outer loop makes.

The model is moved once by its runner (``method.to(device)``); :func:`metarec.engine.train.fit` and the
evaluations move each collated batch to the device of the model's parameters (:func:`to_device`), so the
collate functions keep building CPU tensors from numpy. Random numbers that select data (negatives, batch
picks) are drawn on the CPU and moved, so a run draws the same data on every device.

Which families run on CUDA: the sequential methods (SASRec, GRU4Rec, Full, PT-FT, SML, CBML and MML's
variants; ``SEQUENTIAL_ONLY`` below). Their code was written device-agnostic and is checked on the CPU's
``meta`` device (tests/engine/test_device.py: every tensor a loss or a scoring creates follows its inputs' device);
it has not been run on a GPU here (no accelerator was lent to the work that built it).
"""

from __future__ import annotations

from typing import Any

import torch

from metarec.errors import MetarecError

__all__ = ["resolve_device", "module_device", "to_device", "SEQUENTIAL_ONLY"]

SEQUENTIAL_ONLY = "only the sequential methods run on another device than the CPU (--protocol sequential)"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (cuda when one is visible) as a device (a device is checked
    as its name); one clear error when the device is not here."""
    name = str(name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MetarecError(f"--device {name!r}: choose cpu, cuda, cuda:N or auto") from None
    if dev.type not in ("cpu", "cuda"):
        raise MetarecError(f"--device {name!r}: choose cpu, cuda, cuda:N or auto")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise MetarecError(f"--device {name}: {why}; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MetarecError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); cpu for a module without tensors."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device) -> Any:
    """A collated batch (anything with ``.to(device)``, e.g. ``TaskBatch``, ``SeqBatch``) on ``device``; other
    objects unchanged. A no-op on the CPU."""
    if device.type == "cpu" or batch is None or not hasattr(batch, "to"):
        return batch
    return batch.to(device)
