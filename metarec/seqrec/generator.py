"""MML's cold-start item embedding generator (Pan et al. CIKM'22, section 4.3, eq. 14-17).

For a new item z: retrieve the K most similar old items by the mean cosine over modalities (eq. 14), attend
over them in each modality (eq. 15), generate one embedding per modality (eq. 16) and average (eq. 17):

    q(z, o) = mean_m cos(e_z^m, e_o^m)
    a_o^m   = softmax_o( W_1^m [Y^m e_z^m || Y^m e_o^m] )
    g_z^m   = act( Y^m e_z^m + sum_o a_o^m Y^m e_o^m )
    e_z^id  = mean_m g_z^m

Open choices: Y^m is a linear map without bias from the frozen modality feature to the ID embedding size;
W_1^m has no bias (it would cancel in the softmax); ``act`` is the paper's ReLU (the released config's
leaky ReLU is an option). Retrieval is exact: the mean of cosines equals the inner product of the
concatenated L2-normalised features divided by the number of modalities, so a chunked matmul + top-k (or
faiss ``IndexFlatIP`` on the same vectors, when faiss-cpu is installed) returns the true top K. The pool is
the items trained in meta-train; an item never retrieves itself. Neighbours are computed once for every
item (old items need them when training forgets them, new ones at meta-test) and kept as a buffer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.errors import MetarecError


def unit_concat(feats: list[Tensor]) -> Tensor:
    """(N, sum D_m): each modality L2-normalised, concatenated, scaled by 1/sqrt(M).

    For two rows u, v of the result, u . v = mean_m cos(x_u^m, x_v^m) (a zero vector has cosine 0).
    """
    if not feats:
        raise MetarecError("the generator needs at least one modality")
    scale = 1.0 / math.sqrt(len(feats))
    return torch.cat([F.normalize(f.float(), dim=-1) * scale for f in feats], dim=-1)


class Retriever:
    """Exact top-K search of eq. 14 over a fixed pool: the pool's unit vectors (and the faiss index) are built
    once, so a request only pays for its own queries (what a server keeps in memory)."""

    def __init__(self, feats: list[Tensor], pool: Tensor, backend: str = "exact"):
        if backend not in ("exact", "faiss"):
            raise MetarecError(f"unknown retrieval backend {backend!r}: choose exact or faiss")
        self.z = unit_concat(feats)  # (N, D)
        self.pool, self.backend = pool, backend
        self.zp = self.z[pool]  # (P, D)
        self.index = None
        if backend == "faiss":
            try:
                import faiss
            except ImportError as e:
                raise MetarecError("the faiss backend needs the optional package faiss-cpu") from e
            self.index = faiss.IndexFlatIP(self.zp.shape[1])
            self.index.add(self.zp.numpy().astype("float32"))

    def search(self, queries: Tensor, k: int, exclude_self: bool = True, chunk: int = 2048) -> tuple[Tensor, Tensor]:
        """(Q, k) item indices of ``pool`` by decreasing eq.-14 similarity to each query item, and the values."""
        k_eff = min(k, len(self.pool) - (1 if exclude_self else 0))
        if k_eff < 1:
            raise MetarecError(f"the neighbour pool has {len(self.pool)} items: too few for K={k}")
        zq = self.z[queries]  # (Q, D)
        if self.index is not None:
            return _faiss_topk(self.index, zq, queries, self.pool, k_eff, exclude_self)
        idx, val = [], []
        for i in range(0, len(queries), chunk):
            s = zq[i:i + chunk] @ self.zp.T  # (c, P)
            if exclude_self:
                s = s.masked_fill(queries[i:i + chunk, None] == self.pool[None, :], -math.inf)
            v, j = torch.topk(s, k_eff, dim=1)  # (c, k)
            idx.append(self.pool[j])
            val.append(v)
        return torch.cat(idx), torch.cat(val)


def topk_similar(feats: list[Tensor], queries: Tensor, pool: Tensor, k: int, exclude_self: bool = True,
                 backend: str = "exact", chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Top-``k`` items of ``pool`` by eq. 14 for every item of ``queries`` (item indices into ``feats``).

    Returns (Q, k) item indices (sorted by decreasing similarity) and their similarities. ``backend``:
    "exact" (chunked matmul + topk) or "faiss" (IndexFlatIP, also exact; needs faiss-cpu).
    """
    return Retriever(feats, pool, backend).search(queries, k, exclude_self, chunk)


def _faiss_topk(index, zq: Tensor, queries: Tensor, pool: Tensor, k: int, exclude_self: bool):
    extra = 1 if exclude_self else 0
    v, j = index.search(zq.numpy().astype("float32"), k + extra)  # (Q, k+1)
    j_t, v_t = torch.from_numpy(j).long(), torch.from_numpy(v)
    items = pool[j_t.clamp_min(0)]  # (Q, k+1)
    if exclude_self:
        # drop the query itself where it was returned, else the last neighbour
        is_self = items == queries[:, None]
        drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full_like(queries, k))
        keep = torch.ones_like(items, dtype=torch.bool)
        keep[torch.arange(len(items), device=items.device), drop] = False
        items = items[keep].view(len(items), k)
        v_t = v_t[keep].view(len(items), k)
    return items, v_t


class ItemEmbeddingGenerator(nn.Module):
    """Eq. 15-17 over precomputed neighbours; ``forward(items (M,)) -> (M, dim)`` generated ID embeddings."""

    def __init__(self, feats: dict[str, Tensor], dim: int, k: int = 10, act: str = "relu"):
        super().__init__()
        if not feats:
            raise MetarecError("the item embedding generator needs at least one modality")
        self.names = sorted(feats)
        for m in self.names:
            self.register_buffer(f"feat_{m}", feats[m].float(), persistent=False)
        n = next(iter(feats.values())).shape[0]
        self.k = k
        self.register_buffer("neighbours", torch.zeros(n, k, dtype=torch.long))  # (N, K) item indices
        self.proj = nn.ModuleDict({m: nn.Linear(feats[m].shape[1], dim, bias=False) for m in self.names})  # Y^m
        self.att = nn.ModuleDict({m: nn.Linear(2 * dim, 1, bias=False) for m in self.names})  # W_1^m
        if act not in ("relu", "leaky_relu"):
            raise MetarecError(f"unknown generator activation {act!r}")
        self.act = act

    def feats(self) -> list[Tensor]:
        return [getattr(self, f"feat_{m}") for m in self.names]

    @torch.no_grad()
    def fit_neighbours(self, pool: Tensor, backend: str = "exact") -> None:
        """Neighbours of every item among ``pool`` (the trained items), itself excluded."""
        n = self.neighbours.shape[0]
        idx, _ = topk_similar(self.feats(), torch.arange(n, device=pool.device), pool, self.k, True, backend)
        if idx.shape[1] < self.k:  # tiny pools: repeat the best neighbours
            idx = idx[:, torch.arange(self.k, device=idx.device) % idx.shape[1]]
        self.neighbours.copy_(idx)

    def forward(self, items: Tensor) -> Tensor:
        nb = self.neighbours[items]  # (M, K)
        outs = []
        for m in self.names:
            x = getattr(self, f"feat_{m}")
            y_z = self.proj[m](x[items])  # (M, d)
            y_o = self.proj[m](x[nb])  # (M, K, d)
            w = self.att[m].weight[0]  # (2d,)
            d = y_z.shape[-1]
            logits = (y_z @ w[:d])[:, None] + y_o @ w[d:]  # (M, K) eq. 15
            a = torch.softmax(logits, dim=-1)
            g = y_z + (a[..., None] * y_o).sum(1)  # (M, d) eq. 16
            outs.append(F.relu(g) if self.act == "relu" else F.leaky_relu(g, 0.01))
        return torch.stack(outs).mean(0)  # (M, d) eq. 17
