"""``foldin``: matrix factorisation fitted on meta-train, a newcomer folded in by one ridge solve.

The strong non-meta baseline a reviewer asks for (LensKit's ``new_user_embedding``, implicit's
``recalculate_user``): factors are fitted once on the meta-train interactions by alternating least squares,
and a new user's factor is the exact minimiser of the same objective with the item side held fixed, a
(d x d) ridge system solved from the support set alone. Every task of a batch is solved at once (batched
Cholesky), with no Python loop over users.

Views (``loss``, the name the pipeline sets per view):
- ``"mse"`` (explicit): biased MF, ``r_ui ~ mu + b_u + b_i + p_u . q_i``; ALS over ``[b_u, p_u]`` and
  ``[b_i, q_i]`` with features ``[1, q_i]`` / ``[1, p_u]``; penalties ``reg_bias`` on biases, ``reg`` on factors.
  Fold-in: ``[b_u, p_u] = (X'X + L)^-1 X'(r - mu - b_i)`` over the support ratings, ``X = [1, Q_support]``.
- ``"bce"`` (implicit): confidence-weighted ALS (Hu, Koren and Volinsky 2008) on binary preferences: every
  item is a negative with confidence 1, an observed positive has confidence ``1 + alpha``; the user side
  solve is ``(Q'Q + alpha Q_S'Q_S + reg I)^-1 (1 + alpha) Q_S' 1`` over the support positives.

Items never seen in meta-train (item-cold protocols) get their ``[b_i, q_i]`` from a ridge map of their
attributes (decade one-hot, genre multi-hot) fitted to the factors of the meta-train items (``content``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context, Learner
from metarec.tasks import TaskBatch

LOSSES = ("mse", "bce")


@dataclass(frozen=True)
class FoldInConfig:
    rank: int = 32
    reg: float = 10.0  # ridge penalty on the factors (ALS and the fold-in)
    reg_bias: float = 5.0  # explicit: penalty on the biases (item biases in ALS, the user offset in the fold-in)
    iters: int = 10  # ALS sweeps (users then items)
    alpha: float = 10.0  # implicit: extra confidence of an observed positive
    content: bool = True  # items unseen in meta-train get [b_i, q_i] from their attributes (ridge map)
    reg_content: float = 10.0  # penalty of that map
    loss: str = "mse"  # "mse": explicit ratings; "bce": implicit feedback (set by the implicit view)
    init_seed: int = 0  # the random start of the item factors

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise MetarecError(f"learner.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not (isinstance(self.rank, int) and self.rank >= 1 and self.iters >= 1):
            raise MetarecError("learner.rank and learner.iters must be positive integers")
        for name in ("reg", "reg_bias", "alpha", "reg_content"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
                raise MetarecError(f"learner.{name} must be a finite positive number, got {v!r}")


# ----------------------------------------------------------------------------------------------- the solves


def ridge_solve(X: Tensor, w: Tensor, wy: Tensor, lam: Tensor, base: Tensor | None = None,
                prior: Tensor | None = None) -> Tensor:
    """Per task b: ``argmin_t sum_j w_j (y_j - x_j . t)^2 + (t - m)' diag(lam) (t - m) + t' base t``.

    X: (B, S, d) rows x_j; w: (B, S) weights (0 on padding); wy: (B, S) ``w_j * y_j``; lam: (d,) positive;
    base: (d, d) PSD matrix shared by every task (iALS's Q'Q) or None; prior m: (B, d) or None (zero).
    Returns (B, d): ``(X' W X + base + diag(lam))^-1 (X' W y + lam * m)``. Differentiable in every input
    (autograd through the Cholesky factor: exact second order for a meta-learner).
    """
    A = torch.einsum("bsd,bs,bse->bde", X, w, X) + torch.diag_embed(lam.expand(X.shape[0], -1))  # (B, d, d)
    if base is not None:
        A = A + base
    rhs = torch.einsum("bsd,bs->bd", X, wy)  # (B, d)
    if prior is not None:
        rhs = rhs + lam * prior
    L = torch.linalg.cholesky(A)
    return torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)


def _side_solve(rows: Tensor, cols: Tensor, w: Tensor, wy: Tensor, n_rows: int, feats: Tensor, lam: Tensor,
                base: Tensor | None = None, chunk: int = 1 << 14, block: int = 1 << 13) -> Tensor:
    """One ALS half-step for every row at once: ``theta_r = (sum w x x' + base + diag(lam))^-1 sum wy x`` over
    the interactions (rows[n], cols[n]) with ``x = feats[cols[n]]``. The normal equations come from sparse
    products (no (nnz, d, d) tensor): A = M_w @ vec(x x'), b = M_wy @ x, M the weighted row-by-col matrix.

    Bounded memory on logs of millions of users: the rows are solved in chunks of at most ``chunk`` consecutive
    rows holding about ``chunk`` interactions (a row with more is a chunk of its own; rows without any are 0, as
    the ridge solution with b = 0, and are not solved), and a chunk's normal equations are summed over
    blocks of at most ``block`` interactions, each with the outer products of only the columns it touches. The
    peak is then about (chunk + 2 block) * d * d floats, whatever the numbers of rows, columns and interactions.
    rows, cols: (n,) long; w, wy: (n,) float64; feats: (n_cols, d). Returns (n_rows, d).
    """
    n_cols, d = feats.shape
    out = torch.zeros(n_rows, d, dtype=feats.dtype)
    if len(rows) == 0:
        return out
    order = torch.argsort(rows, stable=True)
    rows, cols, w, wy = rows[order], cols[order], w[order], wy[order]
    # row boundaries: chunks of whole rows, each closed once it holds about `chunk` interactions
    ends = torch.searchsorted(rows, torch.arange(n_rows + 1), right=False)  # (n_rows + 1,) first index of row r
    cuts = torch.searchsorted(ends, torch.arange(chunk, max(chunk, len(rows)), chunk), right=True) - 1
    # ... and of at most `chunk` rows (users without interactions, e.g. the new ones, sit together at the end)
    bounds = torch.unique(torch.cat([torch.arange(0, n_rows, chunk), cuts.clamp_min(1), torch.tensor([n_rows])]))
    eye = torch.diag(lam)
    for r0, r1 in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        lo, hi = int(ends[r0]), int(ends[r1])
        if hi == lo:  # no interaction: the ridge solution is 0
            continue
        A = torch.zeros(r1 - r0, d * d, dtype=feats.dtype)
        b = torch.zeros(r1 - r0, d, dtype=feats.dtype)
        for s in range(lo, hi, block):
            e = min(hi, s + block)
            used, cc = torch.unique(cols[s:e], return_inverse=True)  # the columns this block touches
            fu = feats[used]  # (n_used, d)
            outer = (fu[:, :, None] * fu[:, None, :]).reshape(len(used), d * d)  # (n_used, d*d)
            idx = torch.stack([rows[s:e] - r0, cc])
            A += torch.sparse.mm(torch.sparse_coo_tensor(idx, w[s:e], (r1 - r0, len(used)), check_invariants=False),
                                 outer)
            b += torch.sparse.mm(torch.sparse_coo_tensor(idx, wy[s:e], (r1 - r0, len(used)), check_invariants=False),
                                 fu)
        A3 = A.view(r1 - r0, d, d) + eye
        if base is not None:
            A3 = A3 + base
        out[r0:r1] = torch.cholesky_solve(b.unsqueeze(-1), torch.linalg.cholesky(A3)).squeeze(-1)
    return out


def als_explicit(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int,
                 cfg: FoldInConfig) -> dict[str, Tensor]:
    """Biased MF by ALS (float64). Returns mu (), user_bias (U,), P (U, k), item_bias (I,), Q (I, k)."""
    u, i = torch.tensor(users, dtype=torch.long), torch.tensor(items, dtype=torch.long)
    r = torch.tensor(ratings, dtype=torch.float64)
    mu = r.mean()
    g = torch.Generator().manual_seed(cfg.init_seed)
    Q = torch.randn(n_items, cfg.rank, generator=g, dtype=torch.float64) * 0.1
    bi = torch.zeros(n_items, dtype=torch.float64)
    bu = torch.zeros(n_users, dtype=torch.float64)
    lam = torch.full((cfg.rank + 1,), float(cfg.reg), dtype=torch.float64)
    lam[0] = cfg.reg_bias
    ones = torch.ones_like(r)
    for _ in range(cfg.iters):
        th = _side_solve(u, i, ones, r - mu - bi[i], n_users, torch.cat([torch.ones(n_items, 1), Q], 1), lam)
        bu, P = th[:, 0], th[:, 1:]
        th = _side_solve(i, u, ones, r - mu - bu[u], n_items, torch.cat([torch.ones(n_users, 1), P], 1), lam)
        bi, Q = th[:, 0], th[:, 1:]
    return {"mu": mu, "user_bias": bu, "P": P, "item_bias": bi, "Q": Q}


def als_implicit(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                 cfg: FoldInConfig) -> dict[str, Tensor]:
    """Confidence-weighted ALS over binary preferences (float64). Returns P (U, k), Q (I, k)."""
    u, i = torch.tensor(users, dtype=torch.long), torch.tensor(items, dtype=torch.long)
    w = torch.full((len(u),), float(cfg.alpha), dtype=torch.float64)
    wy = torch.full((len(u),), 1.0 + cfg.alpha, dtype=torch.float64)
    g = torch.Generator().manual_seed(cfg.init_seed)
    Q = torch.randn(n_items, cfg.rank, generator=g, dtype=torch.float64) * 0.1
    lam = torch.full((cfg.rank,), float(cfg.reg), dtype=torch.float64)
    for _ in range(cfg.iters):
        P = _side_solve(u, i, w, wy, n_users, Q, lam, base=Q.T @ Q)
        Q = _side_solve(i, u, w, wy, n_items, P, lam, base=P.T @ P)
    return {"P": P, "Q": Q}


def item_content(ctx: Context) -> Tensor:
    """(n_items, F) float: one-hot of every categorical item field (unknown code included) and the genres."""
    parts = [torch.nn.functional.one_hot(ctx.item_codes[:, f], card).double()
             for f, card in enumerate(ctx.item_cards)]
    parts.append(ctx.item_genre.double())
    return torch.cat(parts, 1)


def content_map(F: Tensor, targets: Tensor, seen: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """Ridge map from item attributes to item parameters, fitted on the seen items: (W (F, d), c (d,)).

    The intercept ``c`` is the seen items' mean (unpenalised); ``targets``: (I, d); ``seen``: (I,) bool.
    """
    Fs, Ts = F[seen], targets[seen]
    c = Ts.mean(0)
    fm = Fs.mean(0)
    Fc = Fs - fm
    W = torch.linalg.solve(Fc.T @ Fc + reg * torch.eye(F.shape[1], dtype=F.dtype), Fc.T @ (Ts - c))
    return W, c - fm @ W


def fill_unseen(values: Tensor, F: Tensor, seen: Tensor, reg: float) -> Tensor:
    """``values`` (I, d) with the rows of unseen items replaced by the content map's prediction."""
    if bool(seen.all()) or not bool(seen.any()):
        return values
    W, c = content_map(F, values, seen, reg)
    out = values.clone()
    out[~seen] = F[~seen] @ W + c
    return out


# ------------------------------------------------------------------------------------------------ the learner


class FoldIn(Learner):
    """ALS on meta-train, then one batched ridge solve per support set (see the module docstring)."""

    name = "foldin"
    meta_trained = False

    def __init__(self, ctx: Context, config: FoldInConfig):
        super().__init__(ctx, config)
        k = config.rank
        self.loss_kind = config.loss
        self.register_buffer("mu", torch.zeros(()))
        self.register_buffer("item_bias", torch.zeros(ctx.n_items))
        self.register_buffer("Q", torch.zeros(ctx.n_items, k))
        self.register_buffer("gram", torch.zeros(k, k))  # implicit: Q'Q over the meta-train items

    @property
    def implicit(self) -> bool:
        return self.config.loss == "bce"

    def fit_direct(self, train_inter) -> None:
        fitted = fit_factors(self.ctx, train_inter, self.config)
        for k, v in fitted.items():
            getattr(self, k).copy_(v)

    def penalties(self) -> Tensor:
        c = self.config
        if self.implicit:
            return torch.full((c.rank,), float(c.reg))
        lam = torch.full((c.rank + 1,), float(c.reg))
        lam[0] = c.reg_bias
        return lam

    def adapt(self, support: TaskBatch) -> Adapted:
        return foldin_adapt(support, self.mu, self.item_bias, self.Q, self.penalties(), self.implicit,
                            self.config.alpha, self.gram)


def fit_factors(ctx: Context, train_inter, cfg: FoldInConfig) -> dict[str, Tensor]:
    """The fitted item side (float32): mu, item_bias, Q and (implicit) the Gram matrix Q'Q of the seen items."""
    users = train_inter["user"].to_numpy()
    items = train_inter["item"].to_numpy()
    if len(users) == 0:
        raise MetarecError("foldin: no meta-train interaction to fit the factors on")
    n_users = int(max(ctx.n_users, users.max() + 1))
    seen = torch.zeros(ctx.n_items, dtype=torch.bool)
    seen[torch.as_tensor(np.unique(items))] = True
    if cfg.loss == "bce":
        f = als_implicit(users, items, n_users, ctx.n_items, cfg)
        mu, bi, Q = torch.zeros((), dtype=torch.float64), torch.zeros(ctx.n_items, dtype=torch.float64), f["Q"]
        gram = Q[seen].T @ Q[seen]
    else:
        f = als_explicit(users, items, train_inter["rating"].to_numpy(np.float64), n_users, ctx.n_items, cfg)
        mu, bi, Q = f["mu"], f["item_bias"], f["Q"]
        gram = torch.zeros(cfg.rank, cfg.rank, dtype=torch.float64)
    if cfg.content:
        side = fill_unseen(torch.cat([bi[:, None], Q], 1), item_content(ctx), seen, cfg.reg_content)
        bi, Q = side[:, 0], side[:, 1:]
    return {"mu": mu.float(), "item_bias": bi.float(), "Q": Q.float(), "gram": gram.float()}


def foldin_adapt(support: TaskBatch, mu: Tensor, item_bias: Tensor, Q: Tensor, lam: Tensor, implicit: bool,
                 alpha: float | Tensor, gram: Tensor, prior: Tensor | None = None,
                 item_weight: Tensor | None = None) -> Adapted:
    """Fold every task's owner in at once and return the scoring functions (shared by ``metafold``).

    Explicit: theta = [b_u, p_u] from the support ratings' residuals; score = mu + b_i + b_u + p_u . q_i.
    Implicit: theta = p_u from the support positives; score = b_i + p_u . q_i (b_i = 0 for plain iALS).
    ``item_weight`` (I,): a weight of each item's support rows (its confidence; None = 1).
    """
    m = support.s_mask.to(Q.dtype)  # (B, S)
    if item_weight is not None:
        m = m * item_weight[support.s_item]
    Qs = Q[support.s_item]  # (B, S, k)
    if implicit:
        pos = m * (support.s_rating > 0).to(Q.dtype)
        theta = ridge_solve(Qs, alpha * pos, pos + alpha * pos, lam, base=gram, prior=prior)  # (B, k)
        offset, factor = torch.zeros(len(support), dtype=Q.dtype), theta
    else:
        X = torch.cat([torch.ones_like(Qs[..., :1]), Qs], -1)  # (B, S, 1 + k)
        y = support.s_rating - mu - item_bias[support.s_item]
        theta = ridge_solve(X, m, m * y, lam, prior=prior)  # (B, 1 + k)
        offset, factor = mu + theta[:, 0], theta[:, 1:]

    def score(users: Tensor, items: Tensor) -> Tensor:  # (B, Q) -> (B, Q)
        return offset[:, None] + item_bias[items] + torch.einsum("bk,bqk->bq", factor, Q[items])

    def score_items(items: Tensor) -> Tensor:  # (N,) -> (B, N)
        return offset[:, None] + item_bias[items][None, :] + factor @ Q[items].T

    return Adapted(support.owner, score, score_items)
