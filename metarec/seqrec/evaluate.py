"""Full-ranking evaluation of next-item predictions (MML 5.2.1): Recall, MRR and NDCG at 5, 10, 20.

Each query target of a task is one ranking of ALL items of the dataset (cold items included) by the score
the adapted method gives at the target's output position. The only items removed from a ranking are those
already in the row's own history prefix (RecBole's full-sort convention, which MML's code uses); a target
itself is never removed, even if it occurred earlier in the prefix. One relevant item per ranking, so
Recall@K = hit rate. Ranks break ties pessimistically (metarec.evaluation.metrics). Metrics are averaged
over each user's rows, then over users (the paper: "averaged over all test users"); with a fixed number of
queries per user this equals the mean over rows.
"""

from __future__ import annotations

import numpy as np
import torch

from metarec.evaluation import metrics as M
from metarec.seqrec.batch import SeqBatch, collate_seq
from metarec.tasks import Task

SEQ_METRICS = ("recall", "mrr", "ndcg")


def history_mask(batch: SeqBatch, n_items: int) -> torch.Tensor:
    """(B, Q, n_items) bool: items in the history prefix of each query row (positions <= its output position)."""
    B, L = batch.seq.shape
    dev = batch.seq.device
    upto = torch.arange(L, device=dev)[None, None, :] <= batch.q_pos[:, :, None]  # (B, Q, L)
    codes = torch.where(upto, batch.seq[:, None, :], 0)  # (B, Q, L)
    hist = torch.zeros(B, batch.q_pos.shape[1], n_items + 1, dtype=torch.bool, device=dev)
    hist.scatter_(2, codes, True)
    return hist[:, :, 1:]  # (B, Q, N) drop the padding code


def rank_rows(scores: torch.Tensor, batch: SeqBatch, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranks of the query targets: (ranks (R, N), positives (R, N), row owner (R,)) for the valid query rows
    (``scores`` and ``batch`` on the CPU)."""
    tgt = torch.take_along_dim(batch.target, batch.q_pos, dim=1) - 1  # (B, Q) item index
    pos = torch.zeros(*tgt.shape, n_items, dtype=torch.bool, device=tgt.device)
    pos.scatter_(2, tgt.clamp_min(0)[..., None], True)  # (B, Q, N)
    excl = history_mask(batch, n_items) & ~pos  # (B, Q, N)
    v = batch.q_valid
    s, p, e = scores[v].double().numpy(), pos[v].numpy(), excl[v].numpy()  # (R, N)
    return M.ranks_from_scores(s, p, e), p, batch.owner[:, None].expand_as(v)[v].numpy()


@torch.no_grad()
def evaluate_seq(method, tasks: list[Task], n_items: int, batch_size: int = 64, ks=(5, 10, 20)) -> dict:
    """Adapt on each task's support, rank every item at each query position; metrics averaged per user."""
    return evaluate_seq_detail(method, tasks, n_items, batch_size, ks)[0]


@torch.no_grad()
def evaluate_seq_detail(method, tasks: list[Task], n_items: int, batch_size: int = 64,
                        ks=(5, 10, 20)) -> tuple[dict, dict]:
    """:func:`evaluate_seq`'s metrics, and per query index j (the j-th query item of a task, 0-based) the mean of
    each metric over the rows of that index: ``{"recall@10": [index 0, index 1, ...], ...}`` (one pass)."""
    from metarec.engine.device import module_device, to_device

    method.eval()
    method.begin_eval(tasks)
    dev = module_device(method)  # batches are collated on the CPU, adapted and scored on the model's device
    per_row: dict[str, list] = {f"{m}@{k}": [] for m in SEQ_METRICS for k in ks}
    owners, index = [], []
    for i in range(0, len(tasks), batch_size):
        b = collate_seq(tasks[i: i + batch_size])
        on = to_device(b, dev)
        adapted = method.adapt(on.support_only())
        scores = adapted.score_next(on.seq, on.q_pos).cpu()  # (B, Q, N)
        ranks, pos, own = rank_rows(scores, b, n_items)
        owners.append(own)
        index.append(torch.arange(b.q_valid.shape[1], device="cpu").expand_as(b.q_valid)[b.q_valid].numpy())
        for m in SEQ_METRICS:
            for k in ks:
                per_row[f"{m}@{k}"].append(M.RANKING_METRICS[m](ranks, pos, k))
    own, idx = np.concatenate(owners), np.concatenate(index)
    _, inv = np.unique(own, return_inverse=True)
    out, by_query = {}, {}
    for key, vals in per_row.items():
        v = np.concatenate(vals)
        user_mean = np.bincount(inv, weights=v) / np.bincount(inv)  # (U,)
        out[key] = float(user_mean.mean())
        by_query[key] = [float(x) for x in np.bincount(idx, weights=v) / np.maximum(np.bincount(idx), 1)]
    out["tasks"] = len(tasks)
    out["rows"] = int(len(own))
    return out, by_query
