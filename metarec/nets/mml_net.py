"""The MML network (Pan et al. CIKM'22, section 4.2): a group of SASRec meta-learners and the fusion layer.

- Main meta-learner (4.2.1): item-ID embeddings, then L blocks of *feature-aware* self-attention (eq. 1-6):
  each head adds an attention bias from the modality similarity of the item pairs of the sequence,
      B_f = sum_m (E_m E_m^T) * W_m                      (eq. 3, W_m: learnable position-pair weights)
      head_i = softmax((Q_i K_i^T + w_i^B B_f) / sqrt(d/h)) V_i     (eq. 2, 4)
  then a point-wise FFN (eq. 5-6); prediction p_i = e_i^T F^L (eq. 7-8).
- Auxiliary meta-learners (4.2.2): the same blocks with vanilla attention over a modality's item vectors
  (a linear projection of the frozen pretrained feature) and the same vectors as output embeddings.
- Prediction fusion (4.2.3, eq. 9-13): P' = LN of each learner's candidate scores; F = LN of each learner's
  flattened last-layer outputs of the prefix; A = softmax_k(ReLU(F_k W + b) W_att + b_att); p = A P'.

Parameters are split as in 4.4.2: Gamma (embedding layer: item embeddings or modality projections,
position embeddings, the projections E_m of the bias) learns in the outer loop only; Theta (the input
LayerNorm, the attention blocks and the position-pair weights W_m) is adapted per task. ``encode`` is a
pure function of a Theta dict whose tensors are either shared ``(...)`` or per task ``(B, ...)``: the
same hand-batched matmuls serve the meta-batch's inner loop (no per-task module copies, no vmap, dropout
allowed) and plain training.

Open choices (the paper leaves them open or is inconsistent):
- ``B_f W_i^B`` with W_i^B in R^{d x d/h} does not type-check (B_f is n x n); we read it as one learnable
  scalar per head and layer (``head_bias``, init 1) scaling the shared B_f. W_m is n x n (max_len), shared
  by the layers, init 0, so an untrained MML starts as vanilla SASRec attention.
- E_m = the projected modality features (Gamma), their raw dot products as in eq. 3; the blocks are those of
  :class:`metarec.nets.sasrec.SelfAttentionBlock` (post-LN residual blocks, ReLU FFN, the same dropout
  places; tests compare the two), so MML_ID is MAML over exactly the SASRec baseline; the input LayerNorm is
  in Theta (as in the released config's local modules), the position embedding in Gamma (as in the paper).
  Dropout draws its mask from ``torch.rand`` (``F.dropout``'s bernoulli is several times slower on CPU).
- Fusion: LN without affine parameters (W and b follow, so an affine LN would be redundant); F is the
  prefix's outputs zero-padded to max_len (padding positions are zero, not computed); W is shared by the
  learners, as the single matrix of eq. 11 implies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.errors import MetarecError

NEG_INF = -1e9


@dataclass(frozen=True)
class MMLNetConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    inner_size: int = 64  # eq. 6: W1, W2 in R^{d x d}
    dropout: float = 0.2
    max_len: int = 50
    feature_bias: bool = True  # feature-aware attention in the main learner (eq. 3-4)
    aux: bool = True  # auxiliary learners for each modality
    fusion: str = "attention"  # "attention" (eq. 9-13), "mean" (No-Fusion), "main" (main learner only)
    fusion_hidden: int = 128
    init_std: float = 0.02


# ---------------------------------------------------------------------------------- batched functional ops
def linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """x (B, L, i) through w (o, i) shared or (B, o, i) per task, b (o,) or (B, o) -> (B, L, o)."""
    y = torch.matmul(x, w.transpose(-1, -2))
    if b is None:
        return y
    return y + (b.unsqueeze(-2) if b.dim() == 2 else b)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout from a uniform draw (``F.dropout``'s bernoulli_ is several times slower on CPU)."""
    if not training or p == 0.0:
        return x
    return x * (torch.rand_like(x) >= p).to(x.dtype) * (1.0 / (1.0 - p))


def layer_norm(x: Tensor, g: Tensor, b: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dim with affine g, b shared (d,) or per task (B, d); x (B, L, d)."""
    y = F.layer_norm(x, x.shape[-1:], eps=eps)
    if g.dim() == 2:
        g, b = g.unsqueeze(-2), b.unsqueeze(-2)
    return y * g + b


class Block(nn.Module):
    """Parameters of one (feature-aware) self-attention block; the computation is in ``SeqLearner.encode``."""

    def __init__(self, cfg: MMLNetConfig, feature_bias: bool):
        super().__init__()
        d = cfg.dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1 = nn.LayerNorm(d)
        self.f1, self.f2 = nn.Linear(d, cfg.inner_size), nn.Linear(cfg.inner_size, d)
        self.ln2 = nn.LayerNorm(d)
        self.head_bias = nn.Parameter(torch.ones(cfg.heads)) if feature_bias else None  # w_i^B


class SeqLearner(nn.Module):
    """One meta-learner. ``kind`` "id": item-ID embeddings (+ feature-aware attention over ``bias_feats``);
    a modality name: item vectors = a projection of that modality's frozen features (vanilla attention)."""

    def __init__(self, kind: str, n_items: int, cfg: MMLNetConfig, feat: Tensor | None = None,
                 bias_feats: dict[str, Tensor] | None = None):
        """feat / bias_feats: modality features by CODE, (n_items + 1, D_m) with a zero row 0 (``pad_row``);
        kept as non-persistent buffers (the owner of the group saves them once)."""
        super().__init__()
        self.kind, self.cfg, self.n_items = kind, cfg, n_items
        d = cfg.dim
        if kind == "id":
            self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)  # row 0 = padding
        else:
            if feat is None or feat.shape[0] != n_items + 1:
                raise MetarecError(f"learner {kind!r} needs its modality features, one row per code")
            self.register_buffer("feat", feat, persistent=False)  # (n_items + 1, D_m)
            self.proj = nn.Linear(feat.shape[1], d)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_ln = nn.LayerNorm(d)
        bias_feats = bias_feats or {}
        self.bias_names = sorted(bias_feats)
        for m in self.bias_names:
            if bias_feats[m].shape[0] != n_items + 1:
                raise MetarecError("bias features need one row per code (pad_row)")
            self.register_buffer(f"bias_feat_{m}", bias_feats[m], persistent=False)
        self.bias_proj = nn.ModuleDict({m: nn.Linear(bias_feats[m].shape[1], d, bias=False)
                                        for m in self.bias_names})  # E_m (Gamma)
        self.pair = nn.ParameterDict({m: nn.Parameter(torch.zeros(cfg.max_len, cfg.max_len))
                                      for m in self.bias_names})  # W_m (Theta), eq. 3
        self.blocks = nn.ModuleList(Block(cfg, bool(self.bias_names)) for _ in range(cfg.blocks))
        self.apply(self._init)

    def _init(self, m):
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, self.cfg.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    # ---- Gamma: the embedding layer ---------------------------------------------------------------------
    def theta_names(self) -> list[str]:
        """Names (relative to this learner) of the per-task adapted parameters Theta."""
        return [n for n, _ in self.named_parameters() if n.startswith(("blocks.", "pair.", "emb_ln."))]

    def table(self, id_table: Tensor | None = None) -> Tensor:
        """(n_items + 1, d) item vectors used as inputs and output embeddings; row 0 = padding."""
        if self.kind == "id":
            return self.item_emb.weight if id_table is None else id_table
        return self.proj(self.feat)

    def embed(self, seq: Tensor, table: Tensor) -> Tensor:
        """seq (B, L) codes -> (B, L, d) item + position embeddings (before the input LayerNorm)."""
        L = seq.shape[1]
        return table[seq] + self.pos_emb.weight[:L]

    def sims(self, seq: Tensor) -> dict[str, Tensor]:
        """Modality m -> (B, L, L) E_m E_m^T over the sequence's items (eq. 3 before the pair weights)."""
        out = {}
        for m in self.bias_names:
            e = self.bias_proj[m](getattr(self, f"bias_feat_{m}")[seq])  # (B, L, d)
            out[m] = e @ e.transpose(1, 2)
        return out

    # ---- Theta: the blocks, batched over tasks ----------------------------------------------------------
    def encode(self, theta: dict[str, Tensor], x: Tensor, valid: Tensor, sims: dict[str, Tensor],
               training: bool) -> Tensor:
        """(B, L, d) outputs F^L of the blocks; theta: name -> shared (...) or per-task (B, ...) tensor.

        x: (B, L, d) embeddings (``embed``); valid: (B, L) bool, False at padding; sims: from ``sims``
        (empty: vanilla attention). Causal: output t sees inputs 0..t only.
        """
        cfg = self.cfg
        B, L, d = x.shape
        H = cfg.heads
        dh = d // H
        p_drop = cfg.dropout if training else 0.0
        x = dropout(layer_norm(x, theta["emb_ln.weight"], theta["emb_ln.bias"]), p_drop, training)
        allowed = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()[None] & valid[:, None, :]  # (B, L, L)
        mask = torch.zeros(B, 1, L, L, dtype=x.dtype, device=x.device).masked_fill(~allowed[:, None], NEG_INF)
        bias = None
        if sims:
            bias = sum(sims[m] * theta[f"pair.{m}"][..., :L, :L] for m in sorted(sims))  # (B, L, L) eq. 3
        for j in range(cfg.blocks):
            def p(n, j=j):
                return theta[f"blocks.{j}.{n}"]

            q = linear(x, p("q.weight"), p("q.bias")).view(B, L, H, dh).transpose(1, 2)  # (B, H, L, dh)
            k = linear(x, p("k.weight"), p("k.bias")).view(B, L, H, dh).transpose(1, 2)
            v = linear(x, p("v.weight"), p("v.bias")).view(B, L, H, dh).transpose(1, 2)
            s = q @ k.transpose(-1, -2)  # (B, H, L, L)
            if bias is not None:
                hb = p("head_bias")  # (H,) or (B, H)
                hb = hb[:, :, None, None] if hb.dim() == 2 else hb[None, :, None, None]
                s = s + bias[:, None] * hb  # eq. 4 numerator: QK^T + B
            a = torch.softmax(s / math.sqrt(dh) + mask, dim=-1)
            a = dropout(a, p_drop, training)
            o = (a @ v).transpose(1, 2).reshape(B, L, d)  # (B, L, d) eq. 1 before W^O
            o = linear(o, p("o.weight"), p("o.bias"))
            x = layer_norm(x + dropout(o, p_drop, training), p("ln1.weight"), p("ln1.bias"))
            f = dropout(F.relu(linear(x, p("f1.weight"), p("f1.bias"))), p_drop, training)
            f = linear(f, p("f2.weight"), p("f2.bias"))  # eq. 6
            x = layer_norm(x + dropout(f, p_drop, training), p("ln2.weight"), p("ln2.bias"))
        return x * valid[..., None].to(x.dtype)


def pad_row(feat: Tensor) -> Tensor:
    """(n, D) -> (n + 1, D) with a zero row 0 for the padding code."""
    feat = feat.float()
    return torch.cat([feat.new_zeros(1, feat.shape[1]), feat], 0)


class Fusion(nn.Module):
    """Eq. 9-13. ``weights(F)`` (..., K, max_len * d) -> (..., K) attention over the K learners."""

    def __init__(self, cfg: MMLNetConfig):
        super().__init__()
        self.max_len, self.dim = cfg.max_len, cfg.dim
        self.proj = nn.Linear(cfg.max_len * cfg.dim, cfg.fusion_hidden)  # W, b (eq. 11)
        self.att = nn.Linear(cfg.fusion_hidden, 1)  # W_att, b_att (eq. 12)

    def prefix_states(self, h: Tensor, pos: Tensor) -> Tensor:
        """h (B, L, d) last-layer outputs, pos (B, P) output positions -> (B, P, max_len * d): the outputs of
        the prefix ending at each position (later positions zeroed), padded to max_len, flattened."""
        B, L, d = h.shape
        keep = torch.arange(L, device=h.device)[None, None, :] <= pos[..., None]  # (B, P, L)
        f = h[:, None] * keep[..., None].to(h.dtype)  # (B, P, L, d)
        f = F.pad(f, (0, 0, 0, self.max_len - L))  # (B, P, max_len, d)
        return f.flatten(2)

    def weights(self, states: Tensor) -> Tensor:
        """states (..., K, max_len * d) -> A (..., K), softmax over the learners (eq. 10-12)."""
        z = self.proj(F.layer_norm(states, states.shape[-1:]))  # (..., K, h)
        return torch.softmax(self.att(F.relu(z)).squeeze(-1), dim=-1)

    @staticmethod
    def normalise(scores: Tensor) -> Tensor:
        """Eq. 9: LN of each learner's scores over the candidates (last dim)."""
        return F.layer_norm(scores, scores.shape[-1:])
