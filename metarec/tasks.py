"""Meta-learning tasks (survey section 4): support/query sets and the padded ``TaskBatch``.

Task kinds: user-specific and item-specific (one owner's interactions), time-specific (support = period
t, query = period t+1), sequence-specific (a user's time-ordered sequence with prefix augmentation, MML
4.4.1) and scenario-specific (all interactions with the items of a scenario, s²Meta 3.2).

Sizing: the MeLU convention (owners with ``min_inter``..``max_inter`` interactions, ``n_query`` of them in
the query, the rest support) or fixed K-shot support (``k_shot``, the same query as in MeLU sizing so that
support-size curves compare like with like). ``order="random"`` picks the query with a per-owner seeded
permutation (MeLU); ``order="time"`` puts the earliest interactions in the support and the latest in the
query (the newcomer's view).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from metarec.errors import MetarecError

__all__ = ["TASK_KINDS", "CODE_STRIDE", "TaskConfig", "Task", "TaskBatch", "build_tasks", "build_time_tasks",
           "build_sequence_tasks", "scenarios_by_attribute", "build_scenario_tasks", "known_codes",
           "sample_negatives", "member_of_sorted", "add_negatives", "collate", "task_stats"]

TASK_KINDS = ("user", "item", "time", "sequence", "scenario")


@dataclass(frozen=True)
class TaskConfig:
    kind: str = "user"
    sizing: str = "melu"  # "melu" or "kshot"
    min_inter: int = 13
    max_inter: int = 100
    n_query: int = 10
    k_shot: int = 5
    order: str = "random"  # "random" (MeLU) or "time"
    negatives: int = 0  # sampled negatives per positive, for implicit tasks (0: none)
    seed: int = 0

    def __post_init__(self):
        from metarec.checks import check

        check(self, "tasks", nonneg_int=("negatives", "seed"))
        if self.kind not in TASK_KINDS:
            raise MetarecError(f"unknown task kind {self.kind!r}: choose one of {', '.join(TASK_KINDS)}")
        if self.sizing not in ("melu", "kshot"):
            raise MetarecError(f"unknown task sizing {self.sizing!r}: choose melu or kshot")
        if self.order not in ("random", "time"):
            raise MetarecError(f"unknown task order {self.order!r}: choose random or time")
        if self.n_query < 1 or self.k_shot < 1 or self.min_inter < 2 or self.max_inter < self.min_inter:
            raise MetarecError("task sizes must satisfy n_query >= 1, k_shot >= 1, 2 <= min_inter <= max_inter")


@dataclass(frozen=True)
class Task:
    """One learning task. Arrays are aligned: ``s_user[j], s_item[j], s_rating[j]`` is support pair j."""

    owner: int
    s_user: np.ndarray
    s_item: np.ndarray
    s_rating: np.ndarray
    q_user: np.ndarray
    q_item: np.ndarray
    q_rating: np.ndarray
    extra: dict = field(default_factory=dict)  # e.g. the full sequence of a sequence-specific task

    @property
    def n_support(self) -> int:
        return len(self.s_item)

    @property
    def n_query(self) -> int:
        return len(self.q_item)


def build_tasks(inter: pd.DataFrame, cfg: TaskConfig, desc: str = "tasks") -> list[Task]:
    """User- or item-specific tasks from an interaction frame (``user, item, rating, timestamp``)."""
    if cfg.kind not in ("user", "item"):
        raise MetarecError(f"build_tasks makes user or item tasks; use build_{cfg.kind}_tasks for {cfg.kind!r}")
    key = cfg.kind
    need = cfg.min_inter if cfg.sizing == "melu" else max(cfg.min_inter, cfg.k_shot + cfg.n_query)
    k_all = inter[key].to_numpy()
    if len(k_all) == 0:
        return []
    counts = np.bincount(k_all)
    kept = (counts >= need) & (counts <= cfg.max_inter)  # (n_owners,) owners of a task
    rows = np.flatnonzero(kept[k_all])  # only their interactions are sorted
    k = k_all[rows]
    u = inter["user"].to_numpy()[rows]
    i = inter["item"].to_numpy()[rows]
    t = inter["timestamp"].to_numpy()[rows]
    r = inter["rating"].to_numpy(np.float32)[rows]
    order = np.lexsort((i, u, t, k))  # by owner, then time, user, item (stable: the frame's order on ties)
    u, i, r, k = u[order], i[order], r[order], k[order]
    keep = np.flatnonzero(kept)
    bounds = np.r_[0, np.cumsum(counts[keep])]
    tasks = []
    nq = cfg.n_query
    for n, owner in enumerate(tqdm(keep.tolist(), desc=desc, leave=False, disable=len(keep) < 2000)):
        lo, hi = int(bounds[n]), int(bounds[n + 1])
        idx = lo + np.random.default_rng([cfg.seed, owner]).permutation(hi - lo) if cfg.order == "random" \
            else np.arange(lo, hi)
        q, s = idx[-nq:], idx[:-nq]
        if cfg.sizing == "kshot":
            s = s[: cfg.k_shot]
        tasks.append(Task(owner, u[s], i[s], r[s], u[q], i[q], r[q]))
    return tasks


def build_time_tasks(inter: pd.DataFrame, n_periods: int) -> list[Task]:
    """Time-specific tasks: ``n_periods`` equal-count periods; task t: support = period t, query = t+1."""
    if n_periods < 2:
        raise MetarecError("time-specific tasks need at least 2 periods")
    df = inter.sort_values(["timestamp", "user", "item"], kind="stable")
    cuts = np.array_split(np.arange(len(df)), n_periods)
    cols = [df[c].to_numpy() for c in ("user", "item")] + [df["rating"].to_numpy(np.float32)]
    tasks = []
    for t in range(n_periods - 1):
        s, q = cuts[t], cuts[t + 1]
        tasks.append(Task(t, cols[0][s], cols[1][s], cols[2][s], cols[0][q], cols[1][q], cols[2][q],
                          extra={"period": t}))
    return tasks


def build_sequence_tasks(inter: pd.DataFrame, min_len: int = 3, max_len: int = 200,
                         n_query: int | None = None) -> list[Task]:
    """Sequence-specific tasks with prefix augmentation (MML 4.4.1).

    A sequence (r1..rn) yields the prefix tasks <r1,r2>, <r1..r3>, ..., <r1..rn>: each predicts its last
    item from the rest. With ``n_query=None`` (meta-training on old users) the first n-2 of them form the
    support and the last one the query. With ``n_query=k`` (a new user), the last k positions are the query
    and the earlier ones the support (warm-up). Support pair j predicts ``seq[extra['s_pos'][j]]`` from
    ``seq[:s_pos[j]]``; ``extra['seq']`` holds the whole (truncated to the last ``max_len``) sequence.
    """
    df = inter.sort_values(["user", "timestamp", "item"], kind="stable")
    tasks = []
    for user, g in df.groupby("user", sort=True):
        items = g["item"].to_numpy()[-max_len:]
        n = len(items)
        nq = 1 if n_query is None else n_query
        if n < max(min_len, nq + 2):
            continue
        pos = np.arange(1, n)  # target positions of the n-1 prefixes
        s_pos, q_pos = pos[:-nq], pos[-nq:]
        ones_s, ones_q = np.ones(len(s_pos), np.float32), np.ones(len(q_pos), np.float32)
        tasks.append(Task(int(user), np.full(len(s_pos), user), items[s_pos], ones_s,
                          np.full(len(q_pos), user), items[q_pos], ones_q,
                          extra={"seq": items, "s_pos": s_pos, "q_pos": q_pos}))
    return tasks


def scenarios_by_attribute(items: pd.DataFrame, attribute: str = "genres", min_items: int = 100,
                           max_items: int = 1000) -> dict[str, np.ndarray]:
    """Scenario name -> item indices, for an item attribute or a '+'-joined combination of attributes.

    ``genres`` is multi-valued (an item is in each of its genres' scenarios); ``year`` is bucketed into
    decades. Only scenarios with ``min_items``..``max_items`` items are kept (s²Meta A.4).
    """
    parts = attribute.split("+")
    keys = []
    for a in parts:
        if a not in items.columns:
            raise MetarecError(f"unknown item attribute {a!r}: items have {', '.join(items.columns[1:])}")
        col = items[a]
        if a == "genres":
            keys.append(col.fillna("").astype(str).str.split("|"))
        elif a == "year":
            dec = (col.astype("Float64") // 10 * 10).astype("Int64").astype("string") + "s"
            keys.append(dec.fillna("unknown").map(lambda v: [v]))
        else:
            keys.append(col.fillna("unknown").astype(str).map(lambda v: [v]))
    groups: dict[str, list[int]] = {}
    for idx, vals in enumerate(zip(*keys, strict=True)):
        combos: list[list[str]] = [[]]
        for vs in vals:
            combos = [c + [v] for c in combos for v in vs if v]
        for c in combos:
            groups.setdefault(" x ".join(c), []).append(idx)
    return {k: np.asarray(v) for k, v in sorted(groups.items()) if min_items <= len(v) <= max_items}


def build_scenario_tasks(inter: pd.DataFrame, scenarios: dict[str, np.ndarray], source_users: np.ndarray,
                         n_train: int = 64, seed: int = 0) -> list[Task]:
    """Scenario-specific tasks (s²Meta 3.2, A.4): per scenario, ``n_train`` interactions of users who also
    appear in the source domain form the support (D_train); the scenario's other interactions are the query.
    """
    rng = np.random.default_rng(seed)
    tasks = []
    in_source = np.zeros(int(inter["user"].max()) + 1 if len(inter) else 0, dtype=bool)
    in_source[source_users[source_users < len(in_source)]] = True
    u_all, i_all = inter["user"].to_numpy(), inter["item"].to_numpy()
    r_all = inter["rating"].to_numpy(np.float32)
    for n, (name, items) in enumerate(scenarios.items()):
        rows = np.flatnonzero(np.isin(i_all, items))
        shared = rows[in_source[u_all[rows]]]
        if len(shared) < n_train or len(rows) - n_train < 1:
            continue
        s = rng.choice(shared, size=n_train, replace=False)
        q = np.setdiff1d(rows, s)
        tasks.append(Task(n, u_all[s], i_all[s], r_all[s], u_all[q], i_all[q], r_all[q],
                          extra={"scenario": name, "items": items}))
    return tasks


CODE_STRIDE = 1 << 32  # known-interaction codes are owner * CODE_STRIDE + item


def known_codes(inter: pd.DataFrame, key: str = "user", other: str = "item") -> np.ndarray:
    """Sorted codes ``owner * 2**32 + other`` of every interaction, for :func:`sample_negatives`."""
    return np.unique(inter[key].to_numpy(np.int64) * CODE_STRIDE + inter[other].to_numpy(np.int64))


def sample_negatives(owners: np.ndarray, candidates: np.ndarray, n: int, rng: np.random.Generator,
                     known: np.ndarray) -> np.ndarray:
    """(len(owners), n) items drawn from ``candidates`` that are never a known positive of their owner.

    ``known`` comes from :func:`known_codes` over every interaction the caller knows (use the whole log so
    that no true positive is ever labelled negative). Vectorised rejection sampling.
    """
    out = candidates[rng.integers(0, len(candidates), size=(len(owners), n))]
    for _ in range(1000):
        bad = member_of_sorted(owners[:, None].astype(np.int64) * CODE_STRIDE + out, known)
        if not bad.any():
            return out
        out[bad] = candidates[rng.integers(0, len(candidates), size=int(bad.sum()))]
    raise MetarecError("negative sampling failed: some owner has interacted with (almost) every candidate")


def member_of_sorted(codes: np.ndarray, sorted_known: np.ndarray) -> np.ndarray:
    """``np.isin(codes, sorted_known)`` without re-sorting the (large, already sorted) known codes."""
    if len(sorted_known) == 0:
        return np.zeros(codes.shape, dtype=bool)
    pos = np.searchsorted(sorted_known, codes).clip(max=len(sorted_known) - 1)
    return sorted_known[pos] == codes


def add_negatives(tasks: list[Task], known: np.ndarray, candidates: np.ndarray, n_neg: int, seed: int,
                  key: str = "user") -> list[Task]:
    """Implicit tasks: each positive gets ``n_neg`` sampled negatives (label 0) in support and query."""
    rng = np.random.default_rng(seed)
    out = []
    for t in tasks:
        parts = []
        for users, items, ratings in ((t.s_user, t.s_item, t.s_rating), (t.q_user, t.q_item, t.q_rating)):
            own = users if key == "user" else items
            neg = sample_negatives(own, candidates, n_neg, rng, known)  # (P, n_neg)
            if key == "user":
                nu, ni = np.repeat(users, n_neg), neg.ravel()
            else:
                nu, ni = neg.ravel(), np.repeat(items, n_neg)
            parts.append((np.r_[users, nu], np.r_[items, ni], np.r_[ratings, np.zeros(len(nu), np.float32)]))
        (su, si, sr), (qu, qi, qr) = parts
        out.append(Task(t.owner, su, si, sr, qu, qi, qr, t.extra))
    return out


@dataclass
class TaskBatch:
    """A meta-batch of B tasks padded to the longest support (S) and query (Q); masks mark real entries."""

    owner: torch.Tensor  # (B,)
    s_user: torch.Tensor  # (B, S) long
    s_item: torch.Tensor  # (B, S) long
    s_rating: torch.Tensor  # (B, S) float
    s_mask: torch.Tensor  # (B, S) bool
    q_user: torch.Tensor  # (B, Q) long
    q_item: torch.Tensor  # (B, Q) long
    q_rating: torch.Tensor  # (B, Q) float
    q_mask: torch.Tensor  # (B, Q) bool

    def __len__(self) -> int:
        return int(self.owner.shape[0])

    def to(self, device) -> TaskBatch:
        return TaskBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def collate(tasks: list[Task]) -> TaskBatch:
    """Pad ragged tasks into one ``TaskBatch`` (padding: index 0, rating 0, mask False)."""
    if not tasks:
        raise MetarecError("cannot collate an empty list of tasks")
    S = max(1, max(t.n_support for t in tasks))
    Q = max(1, max(t.n_query for t in tasks))

    s_len = np.array([t.n_support for t in tasks])
    q_len = np.array([t.n_query for t in tasks])
    s_mask = np.arange(S)[None, :] < s_len[:, None]  # (B, S)
    q_mask = np.arange(Q)[None, :] < q_len[:, None]  # (B, Q)

    def pad(arrs, mask, dtype):
        out = np.zeros(mask.shape, dtype=dtype)
        out[mask] = np.concatenate(arrs)  # row-major order of the mask = task by task, in order
        return torch.from_numpy(out)

    return TaskBatch(
        owner=torch.tensor([t.owner for t in tasks], dtype=torch.long),
        s_user=pad([t.s_user for t in tasks], s_mask, np.int64),
        s_item=pad([t.s_item for t in tasks], s_mask, np.int64),
        s_rating=pad([t.s_rating for t in tasks], s_mask, np.float32),
        s_mask=torch.from_numpy(s_mask),
        q_user=pad([t.q_user for t in tasks], q_mask, np.int64),
        q_item=pad([t.q_item for t in tasks], q_mask, np.int64),
        q_rating=pad([t.q_rating for t in tasks], q_mask, np.float32),
        q_mask=torch.from_numpy(q_mask),
    )


def task_stats(tasks: list[Task]) -> dict:
    """Counts for the statistics table."""
    if not tasks:
        return {"tasks": 0, "support_mean": 0.0, "support_min": 0, "support_max": 0, "query_mean": 0.0,
                "users": 0, "items": 0, "interactions": 0}
    s = np.array([t.n_support for t in tasks])
    q = np.array([t.n_query for t in tasks])
    users = np.unique(np.concatenate([np.r_[t.s_user, t.q_user] for t in tasks]))
    items = np.unique(np.concatenate([np.r_[t.s_item, t.q_item] for t in tasks]))
    return {"tasks": len(tasks), "support_mean": float(s.mean()), "support_min": int(s.min()),
            "support_max": int(s.max()), "query_mean": float(q.mean()), "users": int(len(users)),
            "items": int(len(items)), "interactions": int(s.sum() + q.sum())}
