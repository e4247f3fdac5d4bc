"""Evaluate any learner on tasks through ``adapt``/``score``: pure metric functions on its outputs.

- ``evaluate_rating``: MAE and RMSE over all query ratings (micro), and query-only nDCG@k (the task's
  query items ordered by predicted score; the gain, ``ndcg_gain``, as in ``metrics.query_ndcg_at_k``:
  linear rating by default, ``exp`` = 2^r - 1, or RecBole-MetaRec's ``binary_topk``).
- ``evaluate_ranking``: full ranking of each task's owner against every candidate item of the protocol,
  excluding the task's own support positives (support rating > 0: items the user is known to have); sampled
  support negatives stay candidates, like any item the user has not interacted with. The query positives are
  the relevant items.
"""

from __future__ import annotations

import numpy as np
import torch

from metarec.evaluation import metrics as M
from metarec.tasks import Task, collate

__all__ = ["evaluate_rating", "evaluate_ranking"]


def _batches(tasks: list[Task], size: int):
    for i in range(0, len(tasks), size):
        yield collate(tasks[i: i + size])


@torch.no_grad()
def evaluate_rating(learner, tasks: list[Task], batch_size: int = 64, ks=(1, 3, 5),
                    ndcg_gain: str = "linear") -> dict[str, float]:
    """MAE, RMSE and query-only nDCG@k for each k in ``ks``, named by ``metrics.query_ndcg_name``:
    ``ndcg@k`` for the linear gain (default), ``ndcg_exp@k`` or ``ndcg_binary_topk@k`` otherwise, so that
    tables cannot confuse them. An unknown ``ndcg_gain`` raises ``MetarecError`` before any task is run."""
    names = {k: M.query_ndcg_name(k, ndcg_gain) for k in ks}
    learner.eval()
    preds, trues = [], []
    ndcg: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for b in _batches(tasks, batch_size):
        pred = learner.adapt(b).score(b.q_user, b.q_item).numpy()  # (B, Q)
        true, mask = b.q_rating.numpy(), b.q_mask.numpy()
        preds.append(pred[mask])
        trues.append(true[mask])
        for k in ks:
            ndcg[k].append(M.query_ndcg_at_k(pred, true, mask, k, gain=ndcg_gain))
    p, t = np.concatenate(preds), np.concatenate(trues)
    out = {"mae": M.mae(p, t), "rmse": M.rmse(p, t)}
    for k in ks:
        out[names[k]] = M.mean_ignore_nan(np.concatenate(ndcg[k]))
    out["tasks"] = len(tasks)
    return out


def _candidate_mask(items, valid, pos_of: np.ndarray, n_cand: int) -> np.ndarray:
    """(B, C) bool: which candidates appear among each row's valid items (items (B, N), valid (B, N))."""
    pos = pos_of[items.numpy()]  # (B, N) candidate position, -1 if not a candidate
    keep = valid.numpy() & (pos >= 0)
    out = np.zeros((items.shape[0], n_cand), dtype=bool)
    out[np.nonzero(keep)[0], pos[keep]] = True
    return out


@torch.no_grad()
def evaluate_ranking(learner, tasks: list[Task], candidates: np.ndarray, batch_size: int = 64,
                     ks=(5, 10, 20)) -> dict[str, float]:
    """Full ranking over ``candidates`` (item indices). Query items with rating > 0 are the positives."""
    learner.eval()
    cand = torch.as_tensor(np.asarray(candidates), dtype=torch.long)
    pos_of = np.full(int(max(cand.max().item() + 1, learner.ctx.n_items)), -1, dtype=np.int64)
    pos_of[cand.numpy()] = np.arange(len(cand))
    rows: dict[str, list] = {}
    for b in _batches(tasks, batch_size):
        scores = learner.adapt(b).score_items(cand).numpy()  # (B, C)
        exclude = _candidate_mask(b.s_item, b.s_mask & (b.s_rating > 0), pos_of, len(cand))  # (B, C)
        positives = _candidate_mask(b.q_item, b.q_mask & (b.q_rating > 0), pos_of, len(cand)) & ~exclude
        ranks = M.ranks_from_scores(scores, positives, exclude)
        for name, fn in M.RANKING_METRICS.items():
            for k in ks:
                rows.setdefault(f"{name}@{k}", []).append(fn(ranks, positives, k))
    out = {k: M.mean_ignore_nan(np.concatenate(v)) for k, v in rows.items()}
    out["tasks"] = len(tasks)
    return out
