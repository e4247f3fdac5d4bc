"""The CTR backbone of the warm-up methods: DeepFM (Guo et al. IJCAI'17), trained once on old items, frozen.

Why DeepFM and not Wide&Deep: it is the backbone of Meta-Embedding's released MovieLens-1M example and one of
the backbones of MWUF's experiments, and its FM part makes the item-ID embedding interact directly (inner
products) with the user-ID and user-feature embeddings, so the quality of a new item's ID embedding shows in
the predictions without hand-made cross features (which Wide&Deep's wide part would need).

Fields (one ``emb_dim`` vector each): item ID, user ID, the user features of ``metarec/data/features.py``
(age, gender, occupation, zip prefix), the item's release decade, and its genres (a multi-hot bag, embedded
as the mean of its genres' vectors). ``logit = b + first-order terms + FM(pairwise inner products of the field
vectors) + MLP(concatenated field vectors)``.

Open choices:
- The item ID has no first-order (scalar) weight: a new item's whole ID representation is its one vector, so
  the warm-up methods own exactly one ``emb_dim`` vector per item (as in Meta-Embedding's released DeepFM,
  which has no first-order terms at all). Every other field has a first-order weight.
- ``logits(users, items, id_emb)`` takes the item-ID vectors as an argument: the backbone's own table holds
  old items only (index = 1 + rank among old items, 0 = not an old item); a new item's vector always comes
  from the warm-up method.
- Users who do not appear in the training (old-item) interactions share the unknown user ID 0.
- No dropout (the backbone is frozen and used in one mode); plain Adam on the BCE of every old-item
  interaction (labels: rating >= threshold, see ``warmup.py``) for ``epochs`` passes.

The warm-up update (``WarmUpdate``, ``sgd_update``) is shared by the protocol and the meta-learners: ``steps``
plain gradient steps of rate ``lr`` on each item's own mean loss over its K interactions of a warm-up batch,
every item at once (per-item gradients of a sum of per-item losses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from metarec.engine.inner import inner_loop, masked_task_loss, sgd_step_unfused
from metarec.errors import MetarecError
from metarec.nets.context import Context
from metarec.nets.mlp import mlp


@dataclass(frozen=True)
class BackboneConfig:
    emb_dim: int = 16
    hidden: tuple[int, ...] = (64, 64)
    init_std: float = 0.01  # normal init of every embedding (and of the "base" method's new-item vectors)
    epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3


@dataclass(frozen=True)
class WarmUpdate:
    """The warm-up update of an item's ID vector: ``steps`` gradient steps of rate ``lr`` on its batch.

    lr = 0.1 was the best of {0.01, 0.03, 0.1, 0.2, 0.3, 1, 3, 10, 30} for the base and mean methods on
    pseudo-new items of ml-100k (a fifth of the old items, cut to their first 100 interactions, backbone trained
    without them; the real new items untouched)."""

    lr: float = 0.1
    steps: int = 1


class DeepFM(nn.Module):
    def __init__(self, ctx: Context, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.emb_dim
        n_users = ctx.n_users
        item_ids = ctx.item_ids if ctx.item_ids is not None else torch.zeros(ctx.n_items, dtype=torch.long)
        self.register_buffer("user_codes", ctx.user_codes, persistent=False)
        self.register_buffer("item_codes", ctx.item_codes, persistent=False)
        self.register_buffer("item_genre", ctx.item_genre, persistent=False)
        self.register_buffer("item_ids", item_ids, persistent=False)
        self.register_buffer("user_ids", torch.arange(1, n_users + 1), persistent=True)  # 0 = unknown user
        self.user_id = nn.Embedding(n_users + 1, d)
        self.item_id = nn.Embedding(int(item_ids.max()) + 1, d)
        self.user_fields = nn.ModuleList(nn.Embedding(c, d) for c in ctx.user_cards)
        self.item_fields = nn.ModuleList(nn.Embedding(c, d) for c in ctx.item_cards)
        n_genres = int(ctx.item_genre.shape[1])
        self.genre = nn.Linear(n_genres, d, bias=False) if n_genres else None
        self.user_id_w = nn.Embedding(n_users + 1, 1)
        self.user_fields_w = nn.ModuleList(nn.Embedding(c, 1) for c in ctx.user_cards)
        self.item_fields_w = nn.ModuleList(nn.Embedding(c, 1) for c in ctx.item_cards)
        self.genre_w = nn.Linear(n_genres, 1, bias=False) if n_genres else None
        self.bias = nn.Parameter(torch.zeros(()))
        self.n_item_side = len(ctx.item_cards) + (self.genre is not None)  # item fields besides the ID
        self.n_fields = 2 + len(ctx.user_cards) + self.n_item_side
        self.mlp = mlp(self.n_fields * d, tuple(cfg.hidden))
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=cfg.init_std)
        for lin in (self.genre, self.genre_w):
            if lin is not None:
                nn.init.normal_(lin.weight, std=cfg.init_std)

    # --- field vectors ----------------------------------------------------------------------------------
    def user_vec(self, users: Tensor) -> Tensor:
        """(...,) user indices -> (..., d) user-ID vectors (the users MWUF's shifting network averages)."""
        return self.user_id(self.user_ids[users])

    def item_side(self, items: Tensor) -> Tensor:
        """(...,) item indices -> (..., n_item_side, d): the item's attribute vectors (decade, genres)."""
        codes = self.item_codes[items]  # (..., F_i)
        parts = [e(codes[..., j]) for j, e in enumerate(self.item_fields)]
        if self.genre is not None:
            g = self.item_genre[items]  # (..., G)
            parts.append(self.genre(g) / g.sum(-1, keepdim=True).clamp_min(1.0))
        return torch.stack(parts, -2)

    def old_id_vec(self, items: Tensor) -> Tensor:
        """(...,) item indices -> (..., d) the backbone's own ID vectors (meaningful for old items only)."""
        return self.item_id(self.item_ids[items])

    def old_item_table(self) -> Tensor:
        """(n_old, d) the trained ID vectors of the old items (rows 1.. of the table)."""
        return self.item_id.weight[1:]

    def _side(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """Every field vector but the item ID's, (..., F-1, d), and the first-order sum (...,)."""
        uc = self.user_codes[users]  # (..., F_u)
        ic = self.item_codes[items]  # (..., F_i)
        uid = self.user_ids[users]  # (...,)
        vecs = [self.user_id(uid)] + [e(uc[..., j]) for j, e in enumerate(self.user_fields)]
        first = self.user_id_w(uid).squeeze(-1)
        for j, w in enumerate(self.user_fields_w):
            first = first + w(uc[..., j]).squeeze(-1)
        for j, (e, w) in enumerate(zip(self.item_fields, self.item_fields_w, strict=True)):
            vecs.append(e(ic[..., j]))
            first = first + w(ic[..., j]).squeeze(-1)
        if self.genre is not None:
            g = self.item_genre[items]  # (..., G)
            n = g.sum(-1, keepdim=True).clamp_min(1.0)
            vecs.append(self.genre(g) / n)
            first = first + (self.genre_w(g) / n).squeeze(-1)
        return torch.stack(vecs, -2), first

    # --- predictions ------------------------------------------------------------------------------------
    def logits(self, users: Tensor, items: Tensor, id_emb: Tensor) -> Tensor:
        """users, items (...,) long; id_emb (..., d) the item-ID vector of each pair -> (...,) logits."""
        side, first = self._side(users, items)  # (..., F-1, d), (...,)
        e = torch.cat([id_emb.unsqueeze(-2), side], -2)  # (..., F, d)
        s = e.sum(-2)  # (..., d)
        fm = 0.5 * (s.pow(2) - e.pow(2).sum(-2)).sum(-1)  # (...,) sum of pairwise inner products
        deep = self.mlp(e.flatten(-2)).squeeze(-1)  # (...,)
        return self.bias + first + fm + deep

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Logits with the backbone's own ID vectors (training on old items)."""
        return self.logits(users, items, self.old_id_vec(items))

    def item_loss(self, emb: Tensor, users: Tensor, items: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """(B,) each item's mean BCE over its masked pairs, with its ID vector emb (B, d); the rest (B, K)."""
        logits = self.logits(users, items, emb[:, None, :].expand(-1, users.shape[1], -1))  # (B, K)
        return masked_task_loss(logits, labels, mask, "bce")


def fit_backbone(model: DeepFM, users: np.ndarray, items: np.ndarray, labels: np.ndarray, cfg: BackboneConfig,
                 seed: int = 0, progress: bool = True) -> list[float]:
    """Train ``model`` on the old items' interactions (BCE, Adam), then freeze it. Returns epoch losses."""
    if len(users) == 0:
        raise MetarecError("no interaction to train the CTR backbone on")
    known = np.zeros(model.user_ids.shape[0], dtype=bool)
    known[np.unique(users)] = True
    model.user_ids.copy_(torch.from_numpy(np.where(known, np.arange(1, len(known) + 1), 0)))
    u, i = torch.tensor(np.asarray(users), dtype=torch.long), torch.tensor(np.asarray(items), dtype=torch.long)
    y = torch.tensor(np.asarray(labels), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    history = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(u), generator=gen)
        total, n = 0.0, 0
        bar = tqdm(range(0, len(u), cfg.batch_size), desc=f"backbone epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress)
        for start in bar:
            j = order[start:start + cfg.batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(model(u[j], i[j]), y[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(j)
            n += len(j)
        history.append(total / n)
    model.eval()
    model.requires_grad_(False)
    return history


def sgd_update(backbone: DeepFM, raw: Tensor, effective: Callable[[Tensor], Tensor], users: Tensor, items: Tensor,
               labels: Tensor, mask: Tensor, update: WarmUpdate, graph: str = "none") -> tuple[Tensor, Tensor]:
    """The warm-up update of B items' ID parameters ``raw`` (B, d) on their batches (B, K); every item at once.

    The loss of item b is its mean BCE over its masked pairs, predicted with the vector ``effective(raw)[b]``
    (the identity for most methods; MWUF's scaling and shifting). Because the loss is a sum of per-item losses,
    the gradient of the sum with respect to the (B, d) parameters is each item's own gradient.
    ``graph``: "none" (evaluation: detached leaves), "first" (the update stays in the outer graph through
    ``raw`` but its gradients are constants: first order) or "second" (``create_graph``: true second order).
    Returns the updated ``raw`` and the (B,) losses before the first step.
    """
    kept: list[Tensor] = []

    def keep_first_loss(step, loss, grads):  # the losses before the first step (MWUF's and MetaEmb's cold loss)
        if step == 0:
            kept.append(loss)

    # the engine's loop over the (B, d) ID parameters; its graph kept in first order: the caller back-propagates
    # through the recorded first losses
    def loss(f):  # (B,) each item's mean BCE over its batch
        return backbone.item_loss(effective(f["raw"]), users, items, labels, mask)

    fast = inner_loop({"raw": raw}, loss, update.steps, update.lr, order=graph, update=sgd_step_unfused,
                      on_step=keep_first_loss, retain_graph=True)
    raw = fast["raw"]
    if not kept:  # no step: the loss of the parameters as they are
        kept.append(backbone.item_loss(effective(raw), users, items, labels, mask))
    first_loss = kept[0]
    if graph == "none":
        first_loss = first_loss.detach()
    return raw, first_loss
