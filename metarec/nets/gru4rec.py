"""GRU4Rec (Hidasi et al. ICLR'16) as the MML paper runs it (5.1.2): items as embedding vectors, not one-hot.

Item embedding -> dropout -> GRU -> linear projection to the embedding space; the score of item i at
position t is ``e_i . h_t`` (shared item embeddings, as RecBole's GRU4Rec). Same functional contract as
:class:`metarec.nets.sasrec.SASRec` (``forward(seq, pos, items=None)``). Right padding keeps the GRU
causal: a position's state never depends on what follows. Open choices: one layer, hidden size = d = 64,
embedding dropout 0.25 (RecBole defaults); trained with BPR like every model here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metarec.nets.sasrec import gather_positions


@dataclass(frozen=True)
class GRU4RecConfig:
    dim: int = 64
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.25


class GRU4Rec(nn.Module):
    def __init__(self, n_items: int, cfg: GRU4RecConfig = GRU4RecConfig()):
        super().__init__()
        self.n_items = n_items
        self.cfg = cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.dim, cfg.hidden, cfg.layers, batch_first=True)
        self.proj = nn.Linear(cfg.hidden, cfg.dim)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def fast_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if not n.startswith("item_emb")]

    def encode(self, seq: Tensor) -> Tensor:
        """seq (B, L) codes -> (B, L, D)."""
        h, _ = self.gru(self.drop(self.item_emb(seq)))  # (B, L, H)
        return self.proj(h)  # (B, L, D)

    def forward(self, seq: Tensor, pos: Tensor, items: Tensor | None = None) -> Tensor:
        single = seq.dim() == 1
        if single:
            seq, pos = seq[None], pos[None]
            items = None if items is None else items[None]
        h = gather_positions(self.encode(seq), pos)  # (B, P, D)
        out = h @ self.item_emb.weight[1:].T if items is None else (h.unsqueeze(-2) * self.item_emb(items + 1)).sum(-1)
        return out[0] if single else out
