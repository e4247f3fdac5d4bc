"""CBML (Song et al. CIKM'21, "CBML: A Cluster-based Meta-learning Model for Session-based Recommendation";
MML's reference [35]), on the SASRec base with MovieLens item attributes (genres, release decade).

What we follow (the paper's structure as its abstract and MML 5.1.2 describe it; the full text was not
available to us, so the equations below are our reconstruction, listed as open choices):
- Item- and feature-level self-attention (IF-SAN): one causal transformer over item embeddings and one over
  item-attribute embeddings (a linear map of the multi-hot genres + one-hot decade); their outputs are summed.
- A prediction layer z = W h + b (d x d), scored against the item embeddings: ``p_i = e_i . z``.
- Cluster-based meta-learning: a task (sequence) representation r = MLP(mean over the SUPPORT items of
  [item embedding; attribute embedding]); a soft assignment to K learnable cluster centres
  ``a_k = softmax_k(-||r - c_k||^2 / tau)``; the cluster-enhanced representation ``r' = r + sum_k a_k c_k``;
  a parameter gate ``g = sigmoid(G r' + g0)`` (one gate per element of W and b) that gives each task its own
  initialisation of the prediction layer, ``W_task = W * g_W``, ``b_task = b * g_b``.
- MAML on the prediction layer: ``inner.steps`` SGD steps from the gated initialisation on the support
  prefixes (BPR, eq. 18 of MML), the query loss after them trains everything (second order; the encoder
  output is computed once per task since only the prediction layer is adapted).
Not reproduced: CBML's clustering regulariser; no user features (MovieLens sessions are anonymous here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from metarec.data.types import Dataset
from metarec.engine.inner import InnerConfig, inner_loop
from metarec.learners.base import Adapted
from metarec.nets.sasrec import CausalTransformer, SASRecConfig, gather_positions, recbole_init
from metarec.seqrec.batch import SeqBatch
from metarec.seqrec.functional import position_losses, task_mean
from metarec.seqrec.methods import SeqMethod, seq_adapted


@dataclass(frozen=True)
class CBMLConfig:
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    clusters: int = 8
    temperature: float = 1.0
    inner: InnerConfig = field(default_factory=lambda: InnerConfig(steps=5, lr=1e-3, first_order=False))
    loss: str = "bpr"
    attr_dim: int = 0  # width of the item-attribute vectors (set from the data)
    meta_query: int = 1  # meta-train query = the last m targets of each window (1: the last prefix; issue 17)
    seed: int = 0


def item_attributes(ds: Dataset) -> np.ndarray:
    """(n_items, F) float: multi-hot genres and one-hot release decade of every item (all items are known)."""
    items = ds.items
    cols = []
    if "genres" in items:
        g = items["genres"].fillna("").astype(str).str.get_dummies(sep="|")
        cols.append(g.to_numpy(np.float32))
    if "year" in items:
        dec = (items["year"].astype("Float64") // 10 * 10).astype("Int64").astype("string").fillna("unknown")
        cols.append(pd.get_dummies(dec).to_numpy(np.float32))
    if not cols:
        return np.ones((ds.n_items, 1), np.float32)
    return np.concatenate(cols, axis=1)


class CBML(SeqMethod):
    def __init__(self, n_items: int, config: CBMLConfig = CBMLConfig(), pool: Tensor | None = None,
                 attrs: np.ndarray | None = None):
        super().__init__(n_items, config, pool)
        cfg, d = config, config.sasrec.dim
        attr_dim = attrs.shape[1] if attrs is not None else max(1, config.attr_dim)
        a = torch.zeros(n_items + 1, attr_dim)
        if attrs is not None:
            a[1:] = torch.as_tensor(attrs, dtype=torch.float32)
        self.register_buffer("attrs", a)  # (N+1, F) row 0 = padding
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.attr_proj = nn.Linear(attr_dim, d, bias=False)
        self.trm_item = CausalTransformer(cfg.sasrec)
        self.trm_feat = CausalTransformer(cfg.sasrec)
        self.pred = nn.Linear(d, d)
        self.task_enc = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d))
        self.centres = nn.Parameter(torch.randn(cfg.clusters, d) * 0.1)
        self.gate = nn.Linear(d, d * d + d)
        recbole_init(self)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            nn.init.eye_(self.pred.weight)
            self.gate.bias.fill_(2.0)  # gates start near 0.88: the shared initialisation dominates at first

    # ------------------------------------------------------------------------------------------ network
    def attr_emb(self, codes: Tensor) -> Tensor:
        """codes (...) -> (..., D) attribute embeddings (0 for padding)."""
        return self.attr_proj(self.attrs[codes])

    def encode(self, seq: Tensor) -> Tensor:
        """seq (B, L) codes -> (B, L, D): item-level + feature-level self-attention."""
        return self.trm_item(self.item_emb(seq)) + self.trm_feat(self.attr_emb(seq))

    def task_init(self, support_seq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gated per-task initialisation of the prediction layer from the support items.

        support_seq (B, L) codes (0 = padding / not support) -> W (B, D, D), b (B, D), assignment (B, K).
        """
        m = (support_seq > 0).float()[..., None]  # (B, L, 1)
        feats = torch.cat([self.item_emb(support_seq), self.attr_emb(support_seq)], dim=-1)  # (B, L, 2D)
        r = self.task_enc((feats * m).sum(1) / m.sum(1).clamp_min(1.0))  # (B, D)
        dist = ((r[:, None, :] - self.centres[None]) ** 2).sum(-1)  # (B, K)
        assign = torch.softmax(-dist / self.config.temperature, dim=-1)  # (B, K)
        g = torch.sigmoid(self.gate(r + assign @ self.centres))  # (B, D*D + D)
        d = self.pred.weight.shape[0]
        W = self.pred.weight[None] * g[:, : d * d].view(-1, d, d)  # (B, D, D)
        b = self.pred.bias[None] * g[:, d * d:]  # (B, D)
        return W, b, assign

    def _score(self, h: Tensor, W: Tensor, b: Tensor, pos: Tensor, items: Tensor | None) -> Tensor:
        """h (B, L, D) encoder outputs; W (B, D, D), b (B, D) task prediction layers -> scores at ``pos``."""
        z = torch.einsum("bpd,bed->bpe", gather_positions(h, pos), W) + b[:, None, :]  # (B, P, D)
        if items is None:
            return z @ self.item_emb.weight[1:].T  # (B, P, N)
        return (z.unsqueeze(-2) * self.item_emb(items + 1)).sum(-1)  # (B, P, C)

    def _adapt_fast(self, batch: SeqBatch, h: Tensor, generator=None) -> dict[str, Tensor]:
        W, b, _ = self.task_init(batch.support_only().seq)
        inner = self.config.inner

        def support_loss(f):
            per, mask = position_losses(lambda s, p, i: self._score(h, f["W"], f["b"], p, i), batch, "support",
                                        self.config.loss, self.pool, generator)
            return task_mean(per, mask)  # (B,)

        return inner_loop({"W": W, "b": b}, support_loss, inner.steps, inner.lr, inner.first_order)

    # ------------------------------------------------------------------------------------------ contract
    def meta_loss(self, batch: SeqBatch) -> Tensor:
        if self.config.meta_query > 1:  # a query of the last m targets, the support before them
            batch = batch.last_queries(self.config.meta_query)
        h = self.encode(batch.seq)  # (B, L, D) causal: support outputs never see the query
        fast = self._adapt_fast(batch, h)
        per, mask = position_losses(lambda s, p, i: self._score(h, fast["W"], fast["b"], p, i), batch, "query",
                                    self.config.loss, self.pool)
        return task_mean(per, mask).mean()

    def adapt(self, batch: SeqBatch) -> Adapted:
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(batch.owner.sum()))
        sup = batch.support_only()
        fast = {k: v.detach() for k, v in self._adapt_fast(sup, self.encode(sup.seq), gen).items()}
        return seq_adapted(batch, lambda seq, pos: self._score(self.encode(seq), fast["W"], fast["b"], pos, None))


