"""Any saved model of any family, read back through the registry: ``load_model(path) -> (model, extra)``."""

from __future__ import annotations

from pathlib import Path

from metarec.errors import MetarecError
from metarec.io import load_torch
from metarec.learners.base import Learner, load_learner

__all__ = ["load_model", "is_sequence_model"]


def is_sequence_model(blob) -> bool:
    """A saved sequential model (older files: no "learner" key, an "n_items" one)."""
    return isinstance(blob, dict) and (blob.get("family") == "sequential" or ("learner" not in blob
                                                                            and "n_items" in blob))


def load_model(path: str | Path) -> tuple[Learner, dict]:
    """The model in ``path`` (a model.pt, or its run directory) and the ``extra`` it was saved with. The file is
    read with ``weights_only`` (it cannot run code); anything but a metarec model file stops with one line."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise MetarecError(f"{path}: no such checkpoint")
    blob = load_torch(path, "model")
    if isinstance(blob, dict) and ("learner" in blob or is_sequence_model(blob)):
        return load_learner(path, blob)
    raise MetarecError(f"{path}: not a metarec model file")
