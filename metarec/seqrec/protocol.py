"""The cold-start sequential protocol of MML (Pan et al. CIKM'22, sections 3, 4.4.1 and 5.1).

- A reference timestamp T: the (1 - ``new_user_frac``) quantile of the users' first-interaction times, so
  that about ``new_user_frac`` of the users are *new* (first interaction at or after T). The paper fixes a
  calendar date; on MovieLens a quantile is the only date that gives the 10 % the issue asks for.
- D_old = every interaction before T (5.1.1: "all the interactions before T will be selected into the
  training set"); *old users* are the users of D_old. Interactions of old users at or after T belong to
  neither side and are dropped (counted in the statistics).
- New items: items whose first interaction in the whole log is at or after T (none of them occurs in D_old).
- Meta-valid: the ``valid_frac`` share of the old users who arrived last, among those with at least
  ``n_support + n_query`` interactions in D_old. They are evaluated like new users (their first items) and
  never appear in meta-train. The paper has no validation set; we need one for model selection.
- Meta-train tasks: every other old user's D_old sequence, cut into consecutive windows of at most
  ``max_len`` items (``windows="all"``; ``"last"`` keeps only the latest window). Each window is one task
  with the prefix augmentation of 4.4.1: (r1..rn) gives the prefixes <r1,r2>, ..., <r1..rn>; the first n-2
  of them (targets r2..r_{n-1}) form the support set, the last one (target rn) the query set.
- Meta-valid / meta-test tasks: the user's FIRST ``n_support + n_query`` items (the cold-start phase). The
  support (warm-up) set is the prefixes of the first ``n_support`` items (targets r2..r_{n_support}); the
  query is the next ``n_query`` items, each predicted from the true prefix before it (earlier query items are
  context, never trained on). Users with fewer items are dropped (counted).

Tasks are :class:`metarec.tasks.Task` objects made by :func:`metarec.tasks.build_sequence_tasks`, whose
``extra`` holds ``seq`` (the window's item indices), ``s_pos`` and ``q_pos`` (target positions in ``seq``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from metarec.data.types import Dataset
from metarec.errors import MetarecError
from metarec.tasks import Task, build_sequence_tasks


@dataclass(frozen=True)
class SeqProtocolConfig:
    new_user_frac: float = 0.1
    valid_frac: float = 0.1  # share of the old users held out as meta-valid
    n_support: int = 10  # warm-up items of a new user (its support has n_support - 1 prefix targets)
    n_query: int = 5  # next items predicted, one ranking each
    max_len: int = 50  # longest sequence a model sees (SASRec / RecBole default)
    min_len: int = 3  # shortest meta-train window (one support and one query prefix)
    windows: str = "all"  # meta-train windows per old user: "all" consecutive ones or the "last" one
    seed: int = 0  # seeds the training-fraction subsample only; the split itself is deterministic

    def __post_init__(self):
        if not 0.0 < self.new_user_frac < 1.0 or not 0.0 < self.valid_frac < 1.0:
            raise MetarecError("new_user_frac and valid_frac must lie strictly between 0 and 1")
        if self.n_support < 2 or self.n_query < 1:
            raise MetarecError("the protocol needs n_support >= 2 and n_query >= 1")
        if self.min_len < 3 or self.max_len < max(self.min_len, self.n_support + self.n_query):
            raise MetarecError("need min_len >= 3 and max_len >= max(min_len, n_support + n_query)")
        if self.windows not in ("all", "last"):
            raise MetarecError(f"unknown windows {self.windows!r}: choose all or last")


@dataclass(frozen=True)
class SeqData:
    """A prepared protocol: tasks of every part plus what the models need to know about items and users."""

    dataset: Dataset
    config: SeqProtocolConfig
    t_ref: int  # T, seconds
    train: list[Task]
    valid: list[Task]
    test: list[Task]
    n_items: int
    old_items: np.ndarray  # (n_items,) bool: occurs in D_old (the training interactions)
    new_items: np.ndarray  # (n_items,) bool: first interaction at or after T
    user_new: np.ndarray  # (n_users,) bool
    train_users: np.ndarray  # old users whose windows are meta-train tasks
    valid_users: np.ndarray
    test_users: np.ndarray
    train_inter: pd.DataFrame  # D_old interactions of the meta-train users (for period-based SML)
    counts: dict  # raw counts for the statistics table

    @property
    def candidates(self) -> np.ndarray:
        """Every item of the dataset: the full ranking's candidates, cold items included."""
        return np.arange(self.n_items)

    def support_tasks(self, part: str) -> list[Task]:
        """The support part of each ``valid``/``test`` task as an ordinary prefix-augmented training task.

        Full retrain trains on these (the warm-up data a deployed system has seen); never on the queries.
        """
        out = []
        for t in {"valid": self.valid, "test": self.test}[part]:
            seq = t.extra["seq"][: self.config.n_support]
            out.append(prefix_task(t.owner, seq))
        return out

    def subsample_train(self, frac: float, seed: int | None = None) -> SeqData:
        """A seeded ``frac`` share of the meta-train tasks (Figure 2's training-data curve)."""
        if not 0.0 < frac <= 1.0:
            raise MetarecError(f"the training fraction must lie in (0, 1], got {frac}")
        if frac == 1.0:
            return self
        rng = np.random.default_rng([self.config.seed if seed is None else seed, 7919])
        keep = np.sort(rng.permutation(len(self.train))[: max(1, int(round(frac * len(self.train))))])
        return replace(self, train=[self.train[j] for j in keep])

    def stats(self) -> dict:
        """Sizes and newness counts of every part (the protocol table)."""
        cfg = self.config
        out = {"dataset": self.dataset.name, "T": pd.to_datetime(self.t_ref, unit="s").strftime("%Y-%m-%d %H:%M:%S"),
               "T_seconds": int(self.t_ref), **{f"cfg.{k}": v for k, v in asdict(cfg).items()}, **self.counts}
        for name, tasks in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            lens = np.array([len(t.extra["seq"]) for t in tasks]) if tasks else np.zeros(1)
            s = np.array([len(t.extra["s_pos"]) for t in tasks]) if tasks else np.zeros(1)
            q_items = np.concatenate([t.q_item for t in tasks]) if tasks else np.array([], int)
            all_items = np.concatenate([t.extra["seq"] for t in tasks]) if tasks else np.array([], int)
            out[f"{name}.tasks"] = len(tasks)
            out[f"{name}.users"] = len({t.owner for t in tasks})
            out[f"{name}.seq_len_mean"] = float(lens.mean())
            out[f"{name}.support_targets_mean"] = float(s.mean())
            out[f"{name}.query_targets"] = int(len(q_items))
            out[f"{name}.query_targets_new_item_share"] = float(self.new_items[q_items].mean()) if len(q_items) else 0.0
            out[f"{name}.new_item_share_of_sequence_items"] = \
                float(self.new_items[all_items].mean()) if len(all_items) else 0.0
        return out


def prefix_task(owner: int, seq: np.ndarray) -> Task:
    """A task over ``seq`` with prefix augmentation: targets 1..n-2 support, target n-1 query."""
    n = len(seq)
    s_pos, q_pos = np.arange(1, n - 1), np.array([n - 1])
    ones = np.ones(len(s_pos), np.float32)
    return Task(int(owner), np.full(len(s_pos), owner), seq[s_pos], ones, np.array([owner]), seq[q_pos],
                np.ones(1, np.float32), extra={"seq": seq, "s_pos": s_pos, "q_pos": q_pos})


def _ordered(inter: pd.DataFrame) -> pd.DataFrame:
    """Each user's interactions in time order (ties by item index, as ``build_sequence_tasks`` orders them)."""
    return inter.sort_values(["user", "timestamp", "item"], kind="stable")


def make_seq_protocol(ds: Dataset, cfg: SeqProtocolConfig) -> SeqData:
    inter = ds.inter
    if len(inter) == 0:
        raise MetarecError(f"{ds.name}: no interactions")
    first_user = inter.groupby("user")["timestamp"].min()  # index: users with interactions
    t_ref = int(np.quantile(first_user.to_numpy(), 1.0 - cfg.new_user_frac, method="higher"))
    user_new = np.zeros(ds.n_users, dtype=bool)
    user_new[first_user.index[first_user.to_numpy() >= t_ref]] = True
    first_item = inter.groupby("item")["timestamp"].min()
    new_items = np.zeros(ds.n_items, dtype=bool)
    new_items[first_item.index[first_item.to_numpy() >= t_ref]] = True

    ts = inter["timestamp"].to_numpy()
    u_new = user_new[inter["user"].to_numpy()]
    old = _ordered(inter[ts < t_ref])
    dropped_after_t = int(((ts >= t_ref) & ~u_new).sum())
    old_items = np.zeros(ds.n_items, dtype=bool)
    old_items[old["item"].unique()] = True
    need = cfg.n_support + cfg.n_query

    # meta-valid: the latest-arriving old users with enough D_old interactions
    old_counts = old.groupby("user").size()
    n_old_users = len(old_counts)
    eligible = old_counts.index[old_counts.to_numpy() >= need].to_numpy()
    by_arrival = eligible[np.argsort(-first_user.loc[eligible].to_numpy(), kind="stable")]
    valid_users = np.sort(by_arrival[: int(round(cfg.valid_frac * n_old_users))])
    is_valid = np.zeros(ds.n_users, dtype=bool)
    is_valid[valid_users] = True

    train_inter = old[~is_valid[old["user"].to_numpy()]].reset_index(drop=True)
    train = window_tasks(train_inter, cfg)
    valid = _cold_tasks(old[is_valid[old["user"].to_numpy()]], cfg)
    new = _ordered(inter[u_new])
    test = _cold_tasks(new, cfg)
    if not train or not valid or not test:
        raise MetarecError(f"{ds.name}: the sequential protocol leaves an empty part (train {len(train)}, "
                           f"valid {len(valid)}, test {len(test)} tasks); lower n_support/n_query")
    new_counts = new.groupby("user").size()
    counts = {
        "users": int(len(first_user)), "items": int(ds.n_items), "interactions": int(len(inter)),
        "old_users": int(n_old_users), "new_users": int(user_new.sum()),
        "new_user_share": float(user_new.sum() / len(first_user)),
        "new_users_too_short": int((new_counts.to_numpy() < need).sum()),
        "D_old_interactions": int(len(old)), "old_user_interactions_after_T_dropped": dropped_after_t,
        "old_items": int(old_items.sum()), "new_items": int(new_items.sum()),
        "items_never_interacted": int(ds.n_items - len(first_item)),
        "train_users": int(train_inter["user"].nunique()), "train_interactions": int(len(train_inter)),
    }
    return SeqData(dataset=ds, config=cfg, t_ref=t_ref, train=train, valid=valid, test=test, n_items=ds.n_items,
                   old_items=old_items, new_items=new_items, user_new=user_new,
                   train_users=np.unique(train_inter["user"].to_numpy()),
                   valid_users=np.array(sorted({t.owner for t in valid}), dtype=np.int64),
                   test_users=np.array(sorted({t.owner for t in test}), dtype=np.int64),
                   train_inter=train_inter, counts=counts)


def window_tasks(df: pd.DataFrame, cfg: SeqProtocolConfig) -> list[Task]:
    """Meta-train tasks: consecutive windows of <= max_len items per user, prefix-augmented (4.4.1)."""
    if len(df) == 0:
        return []
    df = _ordered(df)
    users = df["user"].to_numpy()
    rank = df.groupby("user").cumcount().to_numpy()
    chunk = rank // cfg.max_len
    if cfg.windows == "last":
        n_user = df.groupby("user")["item"].transform("size").to_numpy()
        keep = rank >= n_user - cfg.max_len
        df, users, chunk = df[keep], users[keep], np.zeros(int(keep.sum()), dtype=np.int64)
    key = users.astype(np.int64) * (int(chunk.max()) + 1) + chunk  # one pseudo-owner per (user, window)
    frame = pd.DataFrame({"user": key, "item": df["item"].to_numpy(), "timestamp": np.arange(len(df))})
    owner_of = dict(zip(key.tolist(), users.tolist(), strict=True))
    tasks = build_sequence_tasks(frame, min_len=cfg.min_len, max_len=cfg.max_len, n_query=None)
    return [replace(t, owner=owner_of[t.owner], s_user=np.full(len(t.s_user), owner_of[t.owner]),
                    q_user=np.full(len(t.q_user), owner_of[t.owner])) for t in tasks]


def _cold_tasks(df: pd.DataFrame, cfg: SeqProtocolConfig) -> list[Task]:
    """Cold-start tasks: the first n_support + n_query items; warm-up support, next-item queries."""
    need = cfg.n_support + cfg.n_query
    df = _ordered(df)
    df = df[df.groupby("user").cumcount().to_numpy() < need]
    return build_sequence_tasks(df, min_len=need, max_len=need, n_query=cfg.n_query)
