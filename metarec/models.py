"""Any saved model of any family, read back through the registry: ``load_model(path) -> (model, extra)``."""

from __future__ import annotations

from pathlib import Path

from metarec.errors import MetarecError
from metarec.io import load_torch
from metarec.learners.base import Model, load_learner
from metarec.seqrec.methods import load_seq_method

__all__ = ["load_model", "is_sequence_model"]


def is_sequence_model(blob) -> bool:
    return isinstance(blob, dict) and "learner" not in blob and "n_items" in blob


def load_model(path: str | Path) -> tuple[Model, dict]:
    """The model in ``path`` (a model.pt, or its run directory) and the ``extra`` it was saved with. The file is
    read with ``weights_only`` (it cannot run code); anything but a metarec model file stops with one line."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise MetarecError(f"{path}: no such checkpoint")
    blob = load_torch(path, "model")
    if is_sequence_model(blob):
        return load_seq_method(path, blob)
    if isinstance(blob, dict) and "learner" in blob:
        return load_learner(path, blob)
    raise MetarecError(f"{path}: not a metarec model file")
