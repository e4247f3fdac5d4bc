"""Matrix factorisation (Koren et al. 2009) for the pretrained embeddings of s²Meta (appendix A.4).

"We use all the interactions on the source domain to generate the user embeddings and the interactions of
the users only appearing on the scenario to generate the item embeddings, with Matrix Factorization."
Two independent factorisations of implicit feedback: the squared loss of ``p_u . q_i`` against 1 for every
interaction and 0 for ``negatives`` sampled items per interaction (resampled every epoch), plus L2, Adam
over shuffled mini-batches. The user factors of the first (source domain) and the item factors of the
second (scenario-only users x scenario items) are the fixed embedding matrices of the recommender; the two
latent spaces are unrelated, which is the cross-domain difficulty the meta learner has to bridge.

:func:`pretrained_embeddings` caches the pair under ``$METAREC_HOME/pretrained`` keyed by dataset, scenario
protocol (incl. seed) and MF config, written atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from metarec.io import atomic_path, metarec_home


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64  # s²Meta A.2: embedding size 64 on MovieLens
    epochs: int = 40
    lr: float = 0.01
    reg: float = 1e-4  # L2 on the factors of each mini-batch, per interaction
    negatives: int = 4
    batch: int = 4096
    seed: int = 0


def factorize(inter: pd.DataFrame, n_users: int, n_items: int, cfg: MFConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_users, d) user and (n_items, d) item factors; rows of absent users/items stay at their small init."""
    g = torch.Generator().manual_seed(cfg.seed)
    P = torch.nn.Parameter(torch.randn(n_users, cfg.dim, generator=g) * 0.1)
    Q = torch.nn.Parameter(torch.randn(n_items, cfg.dim, generator=g) * 0.1)
    opt = torch.optim.Adam([P, Q], lr=cfg.lr)
    u = torch.tensor(inter["user"].to_numpy(np.int64))
    i = torch.tensor(inter["item"].to_numpy(np.int64))
    items = torch.unique(i)
    n = len(u)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, cfg.batch):
            b = perm[lo:lo + cfg.batch]
            bu, bi = u[b], i[b]  # (N,)
            neg = items[torch.randint(len(items), (len(b), cfg.negatives), generator=g)]  # (N, K)
            pu = P[bu]  # (N, d)
            pos = (pu * Q[bi]).sum(-1)  # (N,)
            negs = torch.einsum("nd,nkd->nk", pu, Q[neg])  # (N, K)
            loss = ((pos - 1) ** 2).mean() + (negs ** 2).mean() * cfg.negatives
            loss = loss + cfg.reg * (pu.pow(2).sum(-1).mean() + Q[bi].pow(2).sum(-1).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return P.detach(), Q.detach()


def pretrained_embeddings(data, cfg: MFConfig, cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """User embeddings from the source domain, item embeddings from the scenario-only users (A.4)."""
    ds = data.dataset
    key = json.dumps({"dataset": ds.name, "inter": ds.n_inter, "users": ds.n_users, "items": ds.n_items,
                      "scenarios": asdict(data.config), "mf": asdict(cfg)}, sort_keys=True)
    path = metarec_home() / "pretrained" / f"s2meta-{ds.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if cache and path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["user"], blob["item"]
    users, _ = factorize(data.source, ds.n_users, ds.n_items, cfg)
    _, items = factorize(data.target_only, ds.n_users, ds.n_items, MFConfig(**{**asdict(cfg), "seed": cfg.seed + 1}))
    if cache:
        with atomic_path(path) as tmp:
            torch.save({"user": users, "item": items, "key": key}, tmp)
    return users, items
