"""A tiny explicit log with enough interactions per item for the warm-up protocol, tiny configs, and a backbone
trained on its base split."""

from __future__ import annotations

import torch

from metarec.ctr.warmup import WarmupConfig, prepare_warmup
from metarec.data.loaders import build_dataset
from metarec.nets.deepfm import BackboneConfig, DeepFM, WarmUpdate, fit_backbone
from tests.conftest import synthetic_frames

# 150 users rate 14-40 of 40 items: about 100 interactions per item, half of the items above 100 (old)
N_USERS, N_ITEMS = 150, 40
WCFG = WarmupConfig(old_min=100, k=5, min_test=5, valid_frac=0.2, update=WarmUpdate(lr=1.0, steps=1))
BCFG = BackboneConfig(emb_dim=4, hidden=(8,), epochs=3, batch_size=64, lr=1e-2)


def warmup_frames():
    return synthetic_frames(n_users=N_USERS, n_items=N_ITEMS)


def warmup_dataset():
    return build_dataset("tiny-warmup", *warmup_frames())


def trained_backbone():
    """The prepared warm-up data and a DeepFM (seed 0) trained on its base split (old items only)."""
    data = prepare_warmup(warmup_dataset(), WCFG)
    torch.manual_seed(0)
    bb = DeepFM(data.ctx, BCFG)
    b = data.split.base
    fit_backbone(bb, b["user"].to_numpy(), b["item"].to_numpy(), b["label"].to_numpy(), BCFG, 0, progress=False)
    return data, bb
