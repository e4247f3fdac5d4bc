"""Evaluation metrics: rating error, full ranking at K, AUC / logloss, and query-only nDCG.

All functions are pure: numpy (or anything ``np.asarray`` accepts) in, python floats or numpy arrays out.
Batched inputs are 2-D, one row per task / user (``B`` rows) over ``N`` item slots.

Conventions
-----------
- ``mask`` (B, N) bool selects the valid entries of a padded batch; padded entries are ignored entirely
  (their values may be anything, NaN included).
- Ranks are 1-based. **Ties are broken pessimistically**: an item whose score is tied with ``k`` other
  candidates is ranked after all of them, i.e. ``rank = #{candidates i : score_i >= score_j}`` (itself
  included). A constant scorer therefore ranks every item last and gets no credit from ties; a model
  cannot inflate its metrics by emitting equal scores. Positives tied with each other are also ranked
  pessimistically.
- Per-row ranking metrics return NaN for rows without positives; average with :func:`mean_ignore_nan`.
- Invalid arguments (shape mismatch, NaN scores at valid entries, non-boolean masks, overlapping positives
  and excluded items, ``k < 1``) raise ``ValueError``.
  An unknown nDCG gain name raises ``MetarecError`` (a user's choice, shown by the CLI as one line).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metarec.errors import MetarecError

__all__ = [
    "mae",
    "rmse",
    "ranks_from_scores",
    "positive_ranks",
    "precision_at_k",
    "recall_at_k",
    "hit_rate_at_k",
    "ndcg_at_k",
    "mrr_at_k",
    "mean_ignore_nan",
    "auc",
    "global_auc",
    "logloss",
    "query_ndcg_at_k",
    "query_ndcg_name",
    "check_ndcg_gain",
    "QUERY_NDCG_GAINS",
    "full_ranking_report",
    "RANKING_METRICS",
]


# --------------------------------------------------------------------------------------------- validation


def _as_bool(x, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` as a bool array of ``shape``; accepts bool or numeric arrays holding only 0 / 1."""
    a = np.asarray(x)
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")
    if a.dtype == bool:
        return a
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (or hold only 0 and 1)")
    return a.astype(bool)


def _as_2d_float(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (B, N), got shape {a.shape}")
    return a


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _valid_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    return _as_bool(mask, "mask", shape)


# ------------------------------------------------------------------------------------------ rating error


def _rating_errors(pred, true, mask) -> np.ndarray:
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}")
    valid = _valid_mask(mask, p.shape)
    if not valid.any():
        raise ValueError("no valid entries to evaluate (empty input or all-False mask)")
    return p[valid] - t[valid]  # (n_valid,)


def mae(pred, true, mask=None) -> float:
    """Mean absolute error over all valid entries (micro average: every rating weighs the same).

    ``pred``, ``true``: same shape, e.g. (B, N); ``mask``: bool of that shape, True = valid (padding
    excluded), None = all valid. Raises ``ValueError`` if no entry is valid.
    """
    return float(np.mean(np.abs(_rating_errors(pred, true, mask))))


def rmse(pred, true, mask=None) -> float:
    """Root mean squared error over all valid entries (micro average), ``sqrt(mean((pred - true)^2))``.

    Same arguments as :func:`mae`.
    """
    return float(np.sqrt(np.mean(np.square(_rating_errors(pred, true, mask)))))


# ------------------------------------------------------------------------------------------------- ranks


def _tie_counts(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every valid entry, how many valid entries of its row score strictly higher / at least as high.

    ``scores`` (B, N) float, ``valid`` (B, N) bool. Returns ``(n_gt, n_ge)``, both (B, N) int64, where
    ``n_ge`` counts the entry itself; both are 0 at invalid entries. Vectorised over rows: one lexsort and
    two cumulative scans, O(B N log N).
    """
    b, n = scores.shape
    s = np.where(valid, scores, 0.0)  # (B, N) invalid values are irrelevant, keep them finite
    order = np.lexsort((-s, ~valid), axis=1)  # (B, N) valid first, then score descending
    ss = np.take_along_axis(s, order, axis=1)  # (B, N) sorted scores
    sv = np.take_along_axis(valid, order, axis=1)  # (B, N) sorted validity (True block, then False)
    pos = np.broadcast_to(np.arange(n), (b, n))  # (B, N) 0-based sorted positions
    # a tie group of valid entries starts where the score changes (or at position 0) and ends where it
    # changes again or the valid block ends; invalid entries form one-element groups of their own.
    differs = np.ones((b, n + 1), dtype=bool)  # (B, N+1) differs[:, p] = boundary before position p
    differs[:, 1:n] = (ss[:, 1:] != ss[:, :-1]) | (sv[:, 1:] != sv[:, :-1]) | ~sv[:, 1:]
    start = np.maximum.accumulate(np.where(differs[:, :n], pos, 0), axis=1)  # (B, N) first pos of group
    end_marks = np.where(differs[:, 1:], pos, n)  # (B, N) last pos of a group, else n
    end = np.minimum.accumulate(end_marks[:, ::-1], axis=1)[:, ::-1]  # (B, N) last pos of group
    n_gt = np.zeros((b, n), dtype=np.int64)
    n_ge = np.zeros((b, n), dtype=np.int64)
    np.put_along_axis(n_gt, order, np.where(sv, start, 0), axis=1)
    np.put_along_axis(n_ge, order, np.where(sv, end + 1, 0), axis=1)
    return n_gt, n_ge


def ranks_from_scores(scores, positives=None, exclude=None) -> np.ndarray:
    """1-based rank of every candidate item of each row, ties broken pessimistically.

    ``scores`` (B, N) float: higher = more relevant. ``positives`` (B, N) bool or None: only used to check
    that no positive is excluded. ``exclude`` (B, N) bool or None: items removed from the ranking (e.g. the
    task's own support items, or padding); an excluded item can never be a positive (``ValueError``).

    Returns ``rank`` (B, N) int64 with ``rank[b, j] = #{non-excluded i in row b : scores[b, i] >=
    scores[b, j]}`` for non-excluded ``j`` (so an item tied with ``k`` others is ranked after all of them),
    and ``rank[b, j] = 0`` (sentinel) for excluded ``j``. Fully vectorised (no loop over rows). Scores of
    candidates must not be NaN (``ValueError``); ``+-inf`` is allowed.
    """
    s = _as_2d_float(scores, "scores")
    excl = np.zeros(s.shape, dtype=bool) if exclude is None else _as_bool(exclude, "exclude", s.shape)
    if positives is not None:
        pos = _as_bool(positives, "positives", s.shape)
        if (pos & excl).any():
            raise ValueError("an excluded item cannot be a positive (positives & exclude overlap)")
    cand = ~excl  # (B, N)
    if np.isnan(s[cand]).any():
        raise ValueError("scores of candidate (non-excluded) items must not be NaN")
    return _tie_counts(s, cand)[1]


def positive_ranks(ranks, positives) -> list[np.ndarray]:
    """Per row, the sorted 1-based ranks of its positive items (a list of B int arrays, possibly empty)."""
    r = np.asarray(ranks)
    pos = _as_bool(positives, "positives", r.shape)
    return [np.sort(r[i][pos[i]]) for i in range(r.shape[0])]


# ----------------------------------------------------------------------------------- ranking metrics @ K


def _hits(ranks, positives, k) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Validate and return ``(ranks (B, N) int, positives (B, N) bool, hit (B, N) bool, k)``."""
    r = np.asarray(ranks)
    if r.ndim != 2:
        raise ValueError(f"ranks must be 2-D (B, N), got shape {r.shape}")
    if r.size and not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks must be integers (from ranks_from_scores), got dtype {r.dtype}")
    r = r.astype(np.int64)
    pos = _as_bool(positives, "positives", r.shape)
    if (r[pos] < 1).any():
        raise ValueError("every positive must have a rank >= 1 (a positive was excluded from the ranking)")
    k = _check_k(k)
    hit = pos & (r <= k)  # (B, N) positive ranked within the top k
    return r, pos, hit, k


def _nan_where_no_positive(values, n_pos: np.ndarray) -> np.ndarray:
    return np.where(n_pos > 0, values, np.nan)


def precision_at_k(ranks, positives, k: int) -> np.ndarray:
    """Precision@K per row: ``#positives ranked <= K / K``.

    Always divided by K, even when a row has fewer than K candidates or positives (RecBole's definition).
    ``ranks`` (B, N) int from :func:`ranks_from_scores`; ``positives`` (B, N) bool. Returns (B,) float,
    NaN for rows without positives.
    """
    _, pos, hit, k = _hits(ranks, positives, k)
    n_pos = pos.sum(axis=1)  # (B,)
    return _nan_where_no_positive(hit.sum(axis=1) / k, n_pos)


def recall_at_k(ranks, positives, k: int) -> np.ndarray:
    """Recall@K per row: ``#positives ranked <= K / #positives`` (RecBole's definition; it can stay below 1
    when a row has more than K positives). Returns (B,) float, NaN for rows without positives."""
    _, pos, hit, k = _hits(ranks, positives, k)
    n_pos = pos.sum(axis=1)  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _nan_where_no_positive(hit.sum(axis=1) / n_pos, n_pos)


def hit_rate_at_k(ranks, positives, k: int) -> np.ndarray:
    """Hit@K per row: 1.0 if at least one positive is ranked <= K, else 0.0. (B,), NaN without positives."""
    _, pos, hit, k = _hits(ranks, positives, k)
    return _nan_where_no_positive(hit.any(axis=1).astype(np.float64), pos.sum(axis=1))


def ndcg_at_k(ranks, positives, k: int) -> np.ndarray:
    """NDCG@K per row with binary relevance.

    ``DCG@K = sum over positives with rank r <= K of 1 / log2(r + 1)``;
    ``IDCG@K = sum_{i=1}^{min(#positives, K)} 1 / log2(i + 1)`` (all positives at the top);
    ``NDCG@K = DCG@K / IDCG@K``. Returns (B,) float, NaN for rows without positives.
    """
    r, pos, hit, k = _hits(ranks, positives, k)
    gains = np.where(hit, 1.0 / np.log2(np.maximum(r, 1) + 1.0), 0.0)  # (B, N)
    dcg = gains.sum(axis=1)  # (B,)
    n_pos = pos.sum(axis=1)  # (B,)
    ideal_prefix = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))])  # (k+1,)
    idcg = ideal_prefix[np.minimum(n_pos, k)]  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _nan_where_no_positive(dcg / idcg, n_pos)


def mrr_at_k(ranks, positives, k: int) -> np.ndarray:
    """MRR@K per row: ``1 / rank`` of the best-ranked positive if that rank is <= K, else 0.

    Returns (B,) float, NaN for rows without positives.
    """
    r, pos, hit, k = _hits(ranks, positives, k)
    first = np.where(hit, r, np.iinfo(np.int64).max).min(axis=1, initial=np.iinfo(np.int64).max)  # (B,)
    rr = np.where(hit.any(axis=1), 1.0 / np.maximum(first, 1).astype(np.float64), 0.0)  # (B,)
    return _nan_where_no_positive(rr, pos.sum(axis=1))


RANKING_METRICS = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "hit": hit_rate_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
}


def mean_ignore_nan(values) -> float:
    """Mean of the non-NaN entries (e.g. over rows that have positives); NaN, without a warning, if none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


# ------------------------------------------------------------------------------------- AUC and logloss


def auc(scores, labels, mask=None) -> np.ndarray:
    """Per-row ROC AUC (Mann-Whitney U): the share of (positive, negative) pairs of valid entries of the row
    in which the positive scores higher, a tie counting 1/2.

    ``scores`` (B, N) float, ``labels`` (B, N) bool (True = positive), ``mask`` (B, N) bool or None (all
    valid). Returns (B,) float, NaN for rows lacking a valid positive or a valid negative. Computed from
    mid-ranks, O(B N log N).
    """
    s = _as_2d_float(scores, "scores")
    y = _as_bool(labels, "labels", s.shape)
    valid = _valid_mask(mask, s.shape)
    if np.isnan(s[valid]).any():
        raise ValueError("scores of valid entries must not be NaN")
    n_gt, n_ge = _tie_counts(s, valid)  # (B, N) each
    n_valid = valid.sum(axis=1, keepdims=True)  # (B, 1)
    # ascending 1-based mid-rank: entries strictly below + average position within the tie group
    midrank = (n_valid - n_ge) + (n_ge - n_gt + 1) / 2.0  # (B, N)
    pos = y & valid  # (B, N)
    n_pos = pos.sum(axis=1).astype(np.float64)  # (B,)
    n_neg = (~y & valid).sum(axis=1).astype(np.float64)  # (B,)
    u = np.where(pos, midrank, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2.0  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def global_auc(scores, labels) -> float:
    """ROC AUC over one flat list of predictions (e.g. all CTR test impressions pooled), ties counting 1/2.

    ``scores`` (M,) float, ``labels`` (M,) bool. NaN if there is no positive or no negative.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    return float(auc(s[None, :], y[None, :])[0])


def logloss(prob, labels, eps: float = 1e-7, mask=None) -> float:
    """Mean binary cross-entropy ``-(y log p + (1 - y) log(1 - p))`` over valid entries (micro average).

    ``prob`` predicted probabilities of the positive class, clipped to ``[eps, 1 - eps]`` so that a
    confident mistake costs ``-log(eps)`` rather than infinity; ``labels`` 0/1 of the same shape; ``mask``
    bool or None. Raises ``ValueError`` for probabilities outside [0, 1] or no valid entry.
    """
    p = np.asarray(prob, dtype=np.float64)
    y = _as_bool(labels, "labels", p.shape).astype(np.float64)
    valid = _valid_mask(mask, p.shape)
    if not valid.any():
        raise ValueError("no valid entries to evaluate (empty input or all-False mask)")
    p, y = p[valid], y[valid]
    if not ((p >= 0.0) & (p <= 1.0)).all():  # also rejects NaN
        raise ValueError("prob must hold probabilities in [0, 1]")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


# -------------------------------------------------------------------------------- query-only protocol


QUERY_NDCG_GAINS = ("linear", "exp", "binary_topk")


def check_ndcg_gain(gain) -> str:
    """``gain`` if it names a query-only nDCG gain (:data:`QUERY_NDCG_GAINS`), else ``MetarecError``."""
    if not isinstance(gain, str) or gain not in QUERY_NDCG_GAINS:
        raise MetarecError(f"unknown nDCG gain {gain!r}: choose one of {', '.join(QUERY_NDCG_GAINS)}")
    return gain


def query_ndcg_name(k: int, gain: str = "linear") -> str:
    """The metric name of query-only nDCG@k with ``gain``: ``ndcg@k`` for linear, else ``ndcg_<gain>@k``."""
    gain = check_ndcg_gain(gain)
    return f"ndcg@{k}" if gain == "linear" else f"ndcg_{gain}@{k}"


def _binary_topk_gains(t: np.ndarray, valid: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of the true top-m items of each row, m = min(k, valid items), and m itself.

    ``t`` (B, N) true ratings, ``valid`` (B, N). Items rated above the m-th largest valid rating get 1,
    items below it 0; the ``c`` items tied at the m-th largest rating share the ``s`` top-m places left
    for them, ``s / c`` each (the mean over every way of choosing which tied items are the positives).
    Returns ``(gains (B, N) float, m (B,) int)``; rows without a valid item get gains 0 and m = 0.
    """
    n_valid = valid.sum(axis=1)  # (B,)
    m = np.minimum(k, n_valid)  # (B,)
    desc = -np.sort(np.where(valid, -t, np.inf), axis=1)  # (B, N) valid ratings descending, then -inf
    tau = np.take_along_axis(desc, np.maximum(m - 1, 0)[:, None], axis=1)  # (B, 1) m-th largest rating
    above = valid & (t > tau)  # (B, N)
    tied = valid & (t == tau)  # (B, N)
    n_above = above.sum(axis=1, keepdims=True)  # (B, 1)
    n_tied = np.maximum(tied.sum(axis=1, keepdims=True), 1)  # (B, 1) >= 1 where m >= 1
    share = (m[:, None] - n_above) / n_tied  # (B, 1) in (0, 1]
    gains = np.where(above, 1.0, np.where(tied, share, 0.0))
    return np.where(m[:, None] > 0, gains, 0.0), m


def query_ndcg_at_k(pred, true, mask, k: int, gain: str = "linear") -> np.ndarray:
    """nDCG@k of each row's valid query items ordered by predicted score, against their true ratings.

    ``pred``, ``true``: (B, N) float; ``mask`` (B, N) bool or None (all valid). Returns (B,) float.

    ``DCG@k = sum_{i=1}^{k} g_(i) / log2(i + 1)`` over the valid items in predicted order, where ``g`` is
    the gain of an item, named by ``gain`` (``MetarecError`` for another name):

    - ``"linear"`` (default): the true rating ``r``. ``IDCG@k`` is the same sum with the items sorted by
      true rating (the best possible order); ``nDCG@k = DCG@k / IDCG@k``. metarec's own choice: none of
      the reference implementations uses it (docs/results/README.md); the default, so that earlier
      tables keep their values.
    - ``"exp"``: ``2^r - 1`` (the gain of TaNP's and MAMO's evaluation code); ideal order as for linear.
    - ``"binary_topk"``: RecBole-MetaRec's convention: the ``m = min(k, valid items)`` items with the
      highest true ratings have gain 1, the others 0, and ``IDCG@k = sum_{i=1}^{m} 1 / log2(i + 1)``.
      When true ratings tie at the m-th place, the ``c`` tied items share the ``s`` places left, gain
      ``s / c`` each, so the value is the mean of RecBole-MetaRec's over the ways of choosing the tied
      positives (there ``torch.topk`` picks some); a ranking perfect by true rating then scores below 1,
      as it can there. When k >= the valid items every item is a positive and nDCG is 1.

    Ties in ``pred`` are broken pessimistically and deterministically: among equal predictions the item
    with the lower gain comes first (the module's convention), so equal scores earn no credit and the
    value does not depend on the items' positions. Padding (``mask`` False) is ignored entirely: padded
    entries are neither ranked nor counted, whatever their values. A row with fewer than k valid items
    uses all of them (DCG and IDCG sum over its n valid items, i.e. nDCG@n).

    NaN for rows without a valid item and, for linear and exp, rows whose IDCG is 0 (all true ratings 0).
    ``ValueError`` for NaN at valid entries, negative true ratings (gains must be >= 0), or ``k < 1``.
    """
    gain = check_ndcg_gain(gain)
    p = _as_2d_float(pred, "pred")
    t = np.asarray(true, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"pred has shape {p.shape} but true has shape {t.shape}")
    valid = _valid_mask(mask, p.shape)
    if np.isnan(p[valid]).any() or np.isnan(t[valid]).any():
        raise ValueError("pred and true must not be NaN at valid entries")
    if (t[valid] < 0).any():
        raise ValueError("true ratings (gains) must be >= 0 for nDCG")
    k = _check_k(k)
    p = np.where(valid, p, 0.0)  # (B, N)
    t = np.where(valid, t, 0.0)  # (B, N) padding contributes no gain
    n = p.shape[1]
    kk = min(k, n)
    discount = 1.0 / np.log2(np.arange(2, kk + 2))  # (kk,) 1/log2(i+1), i = 1..kk
    if gain == "linear":
        g = t
    elif gain == "exp":
        g = np.where(valid, np.exp2(t) - 1.0, 0.0)
    else:
        g, m = _binary_topk_gains(t, valid, k)
    # primary: valid first; then prediction descending; then gain ascending (pessimistic ties)
    order = np.lexsort((g, -p, ~valid), axis=1)  # (B, N)
    ranked = np.take_along_axis(g, order, axis=1)[:, :kk]  # (B, kk)
    dcg = ranked @ discount  # (B,)
    if gain == "binary_topk":
        idcg = (np.arange(kk) < m[:, None]) @ discount  # (B,) m ones in front
    else:
        ideal = -np.sort(-g, axis=1)[:, :kk]  # (B, kk) padding gains are 0, so they sort last
        idcg = ideal @ discount  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)


# --------------------------------------------------------------------------------------------- report


def full_ranking_report(
    scores,
    positives,
    exclude=None,
    ks: Sequence[int] = (5, 10, 20),
    metrics: Sequence[str] = ("precision", "recall", "hit", "ndcg", "mrr"),
) -> dict[str, float]:
    """Full-ranking metrics averaged over the rows with at least one positive.

    ``scores`` (B, N), ``positives`` (B, N) bool, ``exclude`` (B, N) bool or None: see
    :func:`ranks_from_scores`. Returns ``{"<metric>@<k>": value}`` for every metric (in the order given)
    and every k; values are NaN if no row has a positive. Metric names: precision, recall, hit, ndcg, mrr.
    """
    unknown = [m for m in metrics if m not in RANKING_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: choose from {', '.join(RANKING_METRICS)}")
    ks = [_check_k(k) for k in ks]
    ranks = ranks_from_scores(scores, positives, exclude)  # (B, N)
    out: dict[str, float] = {}
    for m in metrics:
        for k in ks:
            out[f"{m}@{k}"] = mean_ignore_nan(RANKING_METRICS[m](ranks, positives, k))
    return out
