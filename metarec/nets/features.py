"""Side features to dense vectors: the feature encoder that MeLU's network, MAMO, TaNP and LWA share."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metarec.nets.context import Context

__all__ = ["FeatureEncoder"]


class FeatureEncoder(nn.Module):
    """Side features -> dense vectors. user: (...,) ids -> (..., F_u * d); item: (...,) -> (..., 2d).

    One embedding table per field (``user_emb``, ``item_emb``); the forward pass looks all of an entity's
    fields up at once in the concatenation of those tables (codes shifted by per-field offsets, kept in a
    buffer), which is the same function with fewer, larger operations. Genres are a mean of genre vectors:
    the multi-hot rows are normalised once, at construction. A log without side information (a plain
    user-item-rating CSV) has no user field (the user part is empty, ``user_dim`` 0: adaptation alone
    personalises) and no item field, in which case the item-ID embedding is the item's representation.
    """

    def __init__(self, ctx: Context, dim: int, item_id: bool = False):
        super().__init__()
        self.dim = dim
        self.register_buffer("user_codes", _offset_codes(ctx.user_codes, ctx.user_cards), persistent=False)
        self.register_buffer("item_codes", _offset_codes(ctx.item_codes, ctx.item_cards), persistent=False)
        genre = ctx.item_genre.float()
        self.register_buffer("item_genre", genre / genre.sum(-1, keepdim=True).clamp_min(1.0), persistent=False)
        self.user_emb = nn.ModuleList(nn.Embedding(c, dim) for c in ctx.user_cards)
        self.item_emb = nn.ModuleList(nn.Embedding(c, dim) for c in ctx.item_cards)
        self.genre = nn.Linear(ctx.item_genre.shape[1], dim, bias=False) if ctx.item_genre.shape[1] else None
        self.id_emb = None
        if item_id or not (ctx.item_cards or ctx.item_genre.shape[1]):  # no item field: the ID is all there is
            self.register_buffer("item_ids", ctx.item_ids, persistent=False)
            self.id_emb = nn.Embedding(int(ctx.item_ids.max()) + 1, dim)
        self.user_dim = dim * len(ctx.user_cards)
        self.item_dim = dim * (len(ctx.item_cards) + (self.genre is not None) + (self.id_emb is not None))

    def set_user_codes(self, users: Tensor, codes: Tensor) -> None:
        """Rows ``users`` (B,) of the user features become ``codes`` (B, F_u) (per-field codes, 0 = unknown)."""
        cards = [e.num_embeddings for e in self.user_emb]
        self.user_codes[users] = _offset_codes(codes.to(self.user_codes.dtype), cards)

    @staticmethod
    def _lookup(tables: nn.ModuleList, codes: Tensor) -> Tensor:
        """codes (..., F) already offset into the concatenated tables -> (..., F * d)."""
        weight = tables[0].weight if len(tables) == 1 else torch.cat([e.weight for e in tables])  # (sum c, d)
        return nn.functional.embedding(codes, weight).flatten(-2)

    def user(self, users: Tensor) -> Tensor:
        if not len(self.user_emb):  # no user field
            return users.new_zeros((*users.shape, 0), dtype=self.item_genre.dtype)
        return self._lookup(self.user_emb, self.user_codes[users])  # (..., F_u * d)

    def item(self, items: Tensor) -> Tensor:
        parts = [self._lookup(self.item_emb, self.item_codes[items])] if len(self.item_emb) else []
        if self.genre is not None:
            parts.append(self.genre(self.item_genre[items]))  # (..., d): mean of the item's genre vectors
        if self.id_emb is not None:
            parts.append(self.id_emb(self.item_ids[items]))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def pair(self, users: Tensor, items: Tensor) -> Tensor:
        return torch.cat([self.user(users), self.item(items)], -1)


def _offset_codes(codes: Tensor, cards: list[int]) -> Tensor:
    """(n, F) per-field codes -> codes into the row-wise concatenation of the F fields' tables."""
    offsets = torch.tensor([0, *cards[:-1]], dtype=codes.dtype).cumsum(0) if cards else codes.new_zeros(0)
    return codes + offsets
