"""SASRec (Kang & McAuley ICDM'18), the base model of MML (Pan et al. CIKM'22, 4.2.1 eq. 1-8 without the bias).

Embedding layer (Gamma in MML 4.4.2): item embeddings ``M_id`` (row 0 = padding) and learnable absolute
position embeddings. Then a LayerNorm and dropout on their sum, and ``blocks`` self-attention blocks, each
causal multi-head attention (eq. 1, 2, 4) and the point-wise feed-forward network (eq. 5, 6), each followed
by dropout, a residual connection and LayerNorm (post-LN, as RecBole's SASRec that MML's code builds on).
The prediction layer (eq. 7, 8) scores item i at position t by ``e_i . F^L_t``: it shares the item
embeddings and has no parameters of its own, so Theta (the adapted parameters) = the blocks and the
embedding LayerNorm; ``fast="theta+pos"`` adds the position embeddings (MML's released yaml adapts them).

Open choices: defaults d=64, 2 blocks, 1 head (SASRec), inner size d with ReLU (eq. 6: W1 in R^{d x d}),
dropout 0.2 (SASRec on MovieLens), max length 50 (RecBole). Attention is written with plain matmuls so the
module runs under ``torch.func.functional_call`` and ``torch.vmap`` (per-task fast weights); ``bias``
((L, L) or (H, L, L)) is added to QK^T before the 1/sqrt(d/h) scale as in eq. 4, for MML's feature-aware
attention. Right padding + causal masking means no key-padding mask is needed: real positions never
attend to the padding that follows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    inner: int = 64  # feed-forward hidden size (eq. 6: d)
    dropout: float = 0.2
    max_len: int = 50
    act: str = "relu"  # "relu" (eq. 6) or "gelu" (RecBole)
    fast: str = "theta"  # adapted parameters: "theta" (blocks + embedding LayerNorm) or "theta+pos"

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.act not in ("relu", "gelu") or self.fast not in ("theta", "theta+pos"):
            raise ValueError("act must be relu or gelu; fast must be theta or theta+pos")


def causal_mask(L: int, device=None) -> Tensor:
    """(L, L) additive mask: 0 on and below the diagonal, -inf above (position t sees positions <= t)."""
    return torch.full((L, L), float("-inf"), device=device).triu(1)


class SelfAttentionBlock(nn.Module):
    """Causal multi-head self-attention + point-wise FFN, post-LN residuals. x: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int, inner: int, dropout: float, act: str = "relu"):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, inner)
        self.ff2 = nn.Linear(inner, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.act = F.relu if act == "relu" else F.gelu

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        B, L, D = x.shape
        H, dh = self.heads, D // self.heads
        q = self.q(x).reshape(B, L, H, dh).transpose(1, 2)  # (B, H, L, dh)
        k = self.k(x).reshape(B, L, H, dh).transpose(1, 2)  # (B, H, L, dh)
        v = self.v(x).reshape(B, L, H, dh).transpose(1, 2)  # (B, H, L, dh)
        att = q @ k.transpose(-1, -2)  # (B, H, L, L)
        if bias is not None:
            att = att + bias
        att = att / math.sqrt(dh) + causal_mask(L, x.device)  # (B, H, L, L)
        p = self.drop(torch.softmax(att, dim=-1))  # (B, H, L, L)
        h = (p @ v).transpose(1, 2).reshape(B, L, D)  # (B, L, D)
        x = self.norm1(x + self.drop(self.o(h)))  # (B, L, D)
        return self.norm2(x + self.drop(self.ff2(self.drop(self.act(self.ff1(x))))))  # (B, L, D)


class CausalTransformer(nn.Module):
    """Position embeddings, LayerNorm + dropout, and the self-attention blocks over input vectors."""

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.emb_norm = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(SelfAttentionBlock(cfg.dim, cfg.heads, cfg.inner, cfg.dropout, cfg.act)
                                    for _ in range(cfg.blocks))

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """x: (B, L, D) input vectors (item embeddings) -> (B, L, D) the last block's outputs F^L."""
        L = x.shape[1]
        x = self.drop(self.emb_norm(x + self.pos_emb.weight[:L]))  # (B, L, D)
        for blk in self.blocks:
            x = blk(x, bias)
        return x


def recbole_init(module: nn.Module) -> None:
    """RecBole's initialisation of every Linear and Embedding of ``module``: N(0, 0.02) weights, zero biases
    (LayerNorms keep their unit weights)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def gather_positions(h: Tensor, pos: Tensor) -> Tensor:
    """h (B, L, D), pos (B, P) long -> (B, P, D): the outputs at the given positions."""
    return torch.take_along_dim(h, pos.unsqueeze(-1), dim=1)


class SASRec(nn.Module):
    """The functional contract every sequence network here follows (also GRU4Rec, CBML's network):

    ``forward(seq, pos, items=None)``: ``seq`` (L,) or (B, L) item codes, ``pos`` (P,) or (B, P) output
    positions; ``items=None`` -> scores of every real item (..., P, n_items), column i = item index i;
    ``items`` (..., P, C) item INDICES -> (..., P, C). ``fast_names()`` are the parameters an inner loop adapts.
    """

    def __init__(self, n_items: int, cfg: SASRecConfig = SASRecConfig()):
        super().__init__()
        self.n_items = n_items
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.trm = CausalTransformer(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """RecBole's SASRec initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
        recbole_init(self)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def fast_names(self) -> list[str]:
        names = [n for n, _ in self.named_parameters() if n.startswith(("trm.blocks.", "trm.emb_norm."))]
        return names + (["trm.pos_emb.weight"] if self.cfg.fast == "theta+pos" else [])

    def encode(self, seq: Tensor, bias: Tensor | None = None) -> Tensor:
        """seq (B, L) codes -> (B, L, D) hidden state of every position."""
        return self.trm(self.item_emb(seq), bias)

    def score(self, h: Tensor, items: Tensor | None = None) -> Tensor:
        """h (B, P, D) -> (B, P, n_items) against every item, or (B, P, C) against ``items`` (B, P, C) indices."""
        if items is None:
            return h @ self.item_emb.weight[1:].T  # (B, P, N)
        return (h.unsqueeze(-2) * self.item_emb(items + 1)).sum(-1)  # (B, P, C)

    def forward(self, seq: Tensor, pos: Tensor, items: Tensor | None = None) -> Tensor:
        single = seq.dim() == 1
        if single:  # one task (e.g. inside vmap)
            seq, pos = seq[None], pos[None]
            items = None if items is None else items[None]
        out = self.score(gather_positions(self.encode(seq), pos), items)
        return out[0] if single else out
