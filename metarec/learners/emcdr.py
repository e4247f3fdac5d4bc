"""EMCDR (Man et al., IJCAI'17, "Cross-Domain Recommendation: An Embedding and Mapping Approach").

The deep cross-domain baseline of s²Meta (5.1.2, A.3, A.4), each scenario being a target domain:
1. latent factors in each domain. Source: the user factors of the source-domain MF (the pretrained user
   embeddings, :mod:`metarec.nets.mf`). Target: the item factors V of the scenario-only users' MF (the pretrained
   item embeddings) and, for every user of the scenario's D_train, a target factor fitted to that user's
   D_train positives (target 1) and pre-sampled negatives (target 0) with V fixed: the ridge solution
   ``u_t = (V^T V + reg I)^-1 V^T y``, the same squared loss as the MF;
2. a mapping MLP (d -> ``hidden`` tanh -> d, EMCDR's MLP variant) from source to target factors, fitted on
   the scenario's D_train users by full-batch gradient descent on the squared error, ``steps`` steps at
   rate ``lr`` (A.3.2 grid: lr in 0.1, 0.01, 0.001, 0.0001 and steps in 10, 100, 1000, chosen here on
   meta-valid scenarios);
3. the score of a test user u and item i is ``MLP(U_s[u]) . V[i]``.
All scenarios of a batch are fitted at once: ridge systems batched by (scenario, user), mapping weights as
(B, ...) tensors. No meta-training (``meta_trained = False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metarec.engine.inner import inner_loop, sgd_step_unfused
from metarec.learners.base import Adapted, Context, Learner
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class EMCDRConfig:
    emb_dim: int = 64
    hidden: int = 128
    lr: float = 0.01
    steps: int = 100
    reg: float = 0.1
    seed: int = 0
    grid_lr: tuple[float, ...] = (0.1, 0.01, 0.001, 0.0001)  # A.3.2, chosen on meta-valid
    grid_steps: tuple[int, ...] = (10, 100, 1000)


class EMCDR(Learner):
    name = "emcdr"
    meta_trained = False

    def __init__(self, ctx: Context, config: EMCDRConfig):
        super().__init__(ctx, config)
        d = config.emb_dim
        self.register_buffer("user_emb", torch.zeros(ctx.n_users, d))
        self.register_buffer("item_emb", torch.zeros(ctx.n_items, d))

    @property
    def adapt_grid(self) -> dict:
        return {"lr": self.config.grid_lr, "steps": self.config.grid_steps}

    def set_embeddings(self, users: Tensor, items: Tensor) -> None:
        self.user_emb.copy_(users)
        self.item_emb.copy_(items)

    def target_factors(self, support: TaskBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Per scenario, its D_train users (B, U) (mask (B, U)) and their fitted target factors (B, U, d)."""
        d = self.config.emb_dim
        B = len(support)
        pos = (support.s_rating > 0) & support.s_mask  # (B, S)
        # support rows, positives and their negatives alike, carry their user (metarec.scenarios layout)
        key = torch.arange(B)[:, None] * self.ctx.n_users + support.s_user  # (B, S) (scenario, user)
        valid = support.s_mask
        # users of a scenario: those with a positive there
        ukey = torch.unique(key[pos])  # (G,) sorted: grouped by scenario, then user
        g_of = torch.searchsorted(ukey, key.clamp_max(int(ukey.max())))  # (B, S)
        hit = valid & (ukey[g_of.clamp_max(len(ukey) - 1)] == key)
        v = self.item_emb[support.s_item]  # (B, S, d)
        y = support.s_rating  # (B, S)
        G = len(ukey)
        A = torch.zeros(G, d, d)
        b = torch.zeros(G, d)
        gi, vi, yi = g_of[hit], v[hit], y[hit]
        A.index_add_(0, gi, vi[:, :, None] * vi[:, None, :])
        b.index_add_(0, gi, vi * yi[:, None])
        ut = torch.linalg.solve(A + self.config.reg * torch.eye(d), b)  # (G, d)
        task = ukey // self.ctx.n_users
        counts = torch.bincount(task, minlength=B)
        U = max(1, int(counts.max()))
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(G) - first[task]
        users = torch.zeros(B, U, dtype=torch.long)
        users[task, slot] = ukey % self.ctx.n_users
        mask = torch.zeros(B, U, dtype=torch.bool)
        mask[task, slot] = True
        factors = torch.zeros(B, U, d)
        factors[task, slot] = ut
        return users, mask, factors

    def _mapping_init(self, B: int) -> dict[str, Tensor]:
        d, h = self.config.emb_dim, self.config.hidden
        g = torch.Generator().manual_seed(self.config.seed)
        w1 = (torch.rand(h, d, generator=g) * 2 - 1) / math.sqrt(d)
        w2 = (torch.rand(d, h, generator=g) * 2 - 1) / math.sqrt(h)
        return {"w1": w1.expand(B, h, d).clone(), "b1": torch.zeros(B, h), "w2": w2.expand(B, d, h).clone(),
                "b2": torch.zeros(B, d)}

    @staticmethod
    def _map(p: dict[str, Tensor], x: Tensor) -> Tensor:
        """x (B, N, d) -> (B, N, d) through each scenario's mapping MLP."""
        hdn = torch.tanh(torch.baddbmm(p["b1"][:, None], x, p["w1"].transpose(1, 2)))
        return torch.baddbmm(p["b2"][:, None], hdn, p["w2"].transpose(1, 2))

    def fit_mapping(self, src: Tensor, target: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Each scenario's mapping MLP fitted to (source, target) factor pairs: src, target (B, U, d), mask (B, U)."""
        cfg = self.config
        m = mask.to(src.dtype)

        def loss(p):  # (B,) each scenario's mean squared mapping error over its users
            err = ((self._map(p, src) - target) ** 2).sum(-1)  # (B, U)
            return (err * m).sum(1) / m.sum(1).clamp_min(1.0)

        # full-batch gradient descent per scenario: the engine's loop, nothing back-propagates through it
        return inner_loop(self._mapping_init(len(src)), loss, cfg.steps, cfg.lr, order="none",
                          update=sgd_step_unfused)

    def adapt(self, support: TaskBatch) -> Adapted:
        users, mask, target = self.target_factors(support)  # (B, U), (B, U), (B, U, d)
        p = self.fit_mapping(self.user_emb[users], target, mask)
        owners = support.owner

        def score(u: Tensor, i: Tensor) -> Tensor:
            return (self._map(p, self.user_emb[u]) * self.item_emb[i]).sum(-1)  # (B, N)

        def score_items(items: Tensor) -> Tensor:
            raise NotImplementedError("scenario tasks are owned by scenarios: score (user, item) pairs")

        return Adapted(owners, score, score_items)
