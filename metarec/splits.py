"""Cold-start protocols: which users and items are new, and which interactions meta-train, -valid, -test see.

The four states of MeLU (Lee et al. KDD'19): every interaction is *warm* (existing user, existing item),
*user-cold* (new user, existing item), *item-cold* (existing user, new item) or *user-item-cold* (both new).

Newness, ``by="time"``: a user is new if they first appear at or after the reference timestamp ``T``, chosen
so that ``new_user_frac`` of the users are new (MML section 5.1, MeLU). An item is new if it was released
in or after year Y, the earliest year for which such items are at most ``new_item_frac`` of all (MeLU's
rule; MovieLens items are rated from the first day, so first-seen time would leave almost none new);
datasets without release years fall back to the item's first interaction time against the same quantile.
``by="random"``: a seeded ``new_user_frac`` of users and ``new_item_frac`` of items are new.

Meta-train tasks are always built from warm interactions of the training owners; by time, only those
before ``T`` (nothing from the future of the test period). Evaluation owners never own a meta-train task:
- ``warm``: a seeded ``holdout_frac`` of existing users, tasks over their warm interactions;
- ``user-cold``: new users, tasks over their interactions with existing items;
- ``item-cold``: a seeded ``holdout_frac`` of existing users (held out of meta-train entirely), tasks over
  their interactions with new items, so every query item is unseen in meta-train;
- ``user-item-cold``: new users, tasks over their interactions with new items.
Evaluation owners are divided between meta-valid (model selection) and meta-test: by time, the earlier
arrivals go to valid; at random, a seeded permutation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from metarec.data.types import Dataset
from metarec.errors import MetarecError

__all__ = ["PROTOCOLS", "SPLIT_BY", "SplitConfig", "Split", "make_split"]

PROTOCOLS = ("warm", "user-cold", "item-cold", "user-item-cold")
SPLIT_BY = ("time", "random")


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = "user-cold"
    by: str = "time"
    new_user_frac: float = 0.2
    new_item_frac: float = 0.2
    holdout_frac: float = 0.2  # warm and item-cold: share of existing users held out for valid + test
    valid_frac: float = 0.5  # share of evaluation owners used for meta-valid (the rest is meta-test)
    train_before_t: bool = True  # by time: meta-train sees only interactions before T
    seed: int = 0
    task_file: str = ""  # protocol "tasks": the task file (metarec/task_files.py) that holds the whole split

    def __post_init__(self):
        from metarec.checks import check_types

        check_types(self, "split")
        if self.protocol not in (*PROTOCOLS, "tasks"):
            raise MetarecError(f"unknown protocol {self.protocol!r}: choose one of {', '.join(PROTOCOLS)} or tasks")
        if (self.protocol == "tasks") != bool(self.task_file):
            raise MetarecError("the tasks protocol reads its split from a file: give --protocol tasks with "
                               "--task-file FILE (and --task-file only with it)")
        if self.by not in SPLIT_BY:
            raise MetarecError(f"unknown split --by {self.by!r}: choose one of {', '.join(SPLIT_BY)}")
        for f in ("new_user_frac", "new_item_frac", "holdout_frac", "valid_frac"):
            v = getattr(self, f)
            if not 0.0 < v < 1.0:
                raise MetarecError(f"{f} must lie strictly between 0 and 1, got {v}")


@dataclass(frozen=True)
class Split:
    """Interactions of meta-train / meta-valid / meta-test (columns of ``Dataset.inter``) and newness."""

    config: SplitConfig
    dataset: str
    user_new: np.ndarray  # (n_users,) bool
    item_new: np.ndarray  # (n_items,) bool
    t_ref: int | None  # the reference timestamp T (by time), else None
    item_year_ref: int | None  # release year from which items are new (by time, with years)
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def parts(self) -> dict[str, pd.DataFrame]:
        return {"meta-train": self.train, "meta-valid": self.valid, "meta-test": self.test}

    def candidate_items(self) -> np.ndarray:
        """Items a ranking may recommend in this protocol's evaluation state (sorted indices).

        Existing items for warm and user-cold, new items for item-cold and user-item-cold.
        """
        new = self.config.protocol in ("item-cold", "user-item-cold")
        return np.flatnonzero(self.item_new if new else ~self.item_new)

    def describe(self) -> dict:
        conf = {k: v for k, v in asdict(self.config).items() if k != "task_file"}  # "" outside the tasks protocol
        d = {"dataset": self.dataset, **conf, "new_users": int(self.user_new.sum()),
             "new_items": int(self.item_new.sum())}
        if self.t_ref is not None:
            d["T"] = pd.to_datetime(self.t_ref, unit="s").strftime("%Y-%m-%d %H:%M")
        if self.item_year_ref is not None:
            d["new_item_release_year"] = f">= {self.item_year_ref}"
        return d


def make_split(ds: Dataset, cfg: SplitConfig) -> Split:
    if cfg.protocol == "tasks":
        raise MetarecError("the tasks protocol's split comes from its file (metarec.task_files.task_file_split)")
    inter = ds.inter
    rng = np.random.default_rng(cfg.seed)
    users_first = inter.groupby("user")["timestamp"].min().reindex(range(ds.n_users)).to_numpy()
    t_ref, year_ref = None, None
    if cfg.by == "time":
        # users with no interaction in this view (e.g. no rating above an implicit threshold) have NaN here
        t_ref = int(np.nanquantile(users_first, 1.0 - cfg.new_user_frac, method="higher"))
        user_new = users_first >= t_ref
        years = ds.items["year"].astype("Float64").to_numpy(dtype=float, na_value=np.nan) \
            if "year" in ds.items else np.full(ds.n_items, np.nan)
        if np.isfinite(years).mean() > 0.9:
            year_ref = _newest_years(years, cfg.new_item_frac)
            item_new = np.nan_to_num(years, nan=-1) >= year_ref
        else:
            items_first = inter.groupby("item")["timestamp"].min().reindex(range(ds.n_items)).to_numpy()
            item_new = items_first >= np.nanquantile(items_first, 1.0 - cfg.new_item_frac, method="higher")
    else:
        user_new = _random_mask(rng, ds.n_users, cfg.new_user_frac)
        item_new = _random_mask(rng, ds.n_items, cfg.new_item_frac)

    u_new = user_new[inter["user"].to_numpy()]
    i_new = item_new[inter["item"].to_numpy()]
    warm = ~u_new & ~i_new
    p = cfg.protocol
    if p in ("warm", "item-cold"):
        old_users = np.flatnonzero(~user_new)
        held = old_users[_random_mask(rng, len(old_users), cfg.holdout_frac)]
        eval_owner = np.zeros(ds.n_users, dtype=bool)
        eval_owner[held] = True
        state = warm if p == "warm" else (~u_new & i_new)
    else:
        eval_owner = user_new
        state = (u_new & ~i_new) if p == "user-cold" else (u_new & i_new)
    is_eval_owner = eval_owner[inter["user"].to_numpy()]
    train_mask = warm & ~is_eval_owner
    if cfg.by == "time" and cfg.train_before_t:
        train_mask &= inter["timestamp"].to_numpy() < t_ref
    eval_df = inter[state & is_eval_owner]

    owners = np.flatnonzero(eval_owner)
    if cfg.by == "time":
        owners = owners[np.argsort(users_first[owners], kind="stable")]
    else:
        owners = rng.permutation(owners)
    n_valid = int(round(len(owners) * cfg.valid_frac))
    valid_owners = owners[:n_valid]
    ev_user = eval_df["user"].to_numpy()
    valid = eval_df[np.isin(ev_user, valid_owners)].reset_index(drop=True)
    test = eval_df[~np.isin(ev_user, valid_owners)].reset_index(drop=True)
    train = inter[train_mask].reset_index(drop=True)
    if len(train) == 0:
        raise MetarecError(f"{ds.name}: the {p} split leaves no meta-train interactions")
    return Split(config=cfg, dataset=ds.name, user_new=user_new, item_new=item_new, t_ref=t_ref,
                 item_year_ref=year_ref, train=train, valid=valid, test=test)


def _newest_years(years: np.ndarray, frac: float) -> int:
    """The earliest release year Y such that items released in Y or later are at most ``frac`` of all
    (at least the newest year, so some items are always new)."""
    ys = np.nan_to_num(years, nan=-1)
    uniq = np.unique(ys[ys >= 0])[::-1]
    chosen = uniq[0]
    for y in uniq:
        if (ys >= y).mean() > frac:
            break
        chosen = y
    return int(chosen)


def _random_mask(rng: np.random.Generator, n: int, frac: float) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: int(round(n * frac))]] = True
    return mask
