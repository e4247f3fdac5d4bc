"""A seeded synthetic interaction log with the shape of a real one, for scale benchmarks and tests.

Shape: item popularity is Zipf-like (item of popularity rank r drawn with weight ``(r + 10) ** -zipf``), user
activity is Pareto (a long tail of users with one or two interactions, a few with thousands), users arrive over
the log's time span with more of them late (a growing service), each user's interactions follow their arrival
with exponential gaps (a day on average), and ratings 1-5 come from a user bias, an item bias and noise. Raw ids
are strings ("u17", "i4") so the readers do their real work. Everything is vectorised: 20M rows take about a
minute and a few GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["SyntheticConfig", "synthetic_log"]


@dataclass(frozen=True)
class SyntheticConfig:
    n_inter: int = 1_000_000
    users_per_inter: float = 0.1  # 2M users at 20M interactions
    items_per_inter: float = 0.005  # 100k items at 20M interactions
    zipf: float = 0.9  # item popularity exponent
    pareto: float = 1.2  # user activity tail index
    span_days: int = 3 * 365
    seed: int = 0


def synthetic_log(cfg: SyntheticConfig) -> pd.DataFrame:
    """Columns ``user, item`` (str), ``rating`` (int8, 1-5), ``timestamp`` (int64 seconds); about
    ``cfg.n_inter`` rows (exactly, unless duplicate pairs leave fewer), no duplicate (user, item) pair, in no
    particular order."""
    rng = np.random.default_rng(cfg.seed)
    n_users = max(10, int(cfg.n_inter * cfg.users_per_inter))
    n_items = max(10, int(cfg.n_inter * cfg.items_per_inter))
    # user activity: Pareto shares of what remains after one interaction each, the rounding remainder spread
    # over random users; capped at half the catalogue
    raw = rng.pareto(cfg.pareto, n_users) + 1.0
    counts = 1 + np.floor(raw / raw.sum() * (cfg.n_inter - n_users)).astype(np.int64)
    counts = np.minimum(counts, n_items // 2)
    for _ in range(10):  # what rounding and the cap took goes to random users below the cap, one each
        room = np.flatnonzero(counts < n_items // 2)
        short = cfg.n_inter - int(counts.sum())
        if short <= 0 or len(room) == 0:
            break
        counts[rng.choice(room, size=min(short, len(room)), replace=False)] += 1
    user = np.repeat(np.arange(n_users, dtype=np.int64), counts)  # (n,) grouped by user
    n = len(user)
    # items: Zipf popularity over a random permutation of item ids
    w = (np.arange(n_items) + 10.0) ** -cfg.zipf
    perm = rng.permutation(n_items)
    item = perm[rng.choice(n_items, size=n, p=w / w.sum())]
    # timestamps: arrival (more users late), then exponential gaps of a day on average
    day = 86_400
    t0 = 1_500_000_000
    arrival = (t0 + cfg.span_days * day * np.sqrt(rng.random(n_users))).astype(np.int64)
    gaps = rng.exponential(day, n).astype(np.int64)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    cum = np.cumsum(gaps)
    within = cum - np.repeat(cum[starts] - gaps[starts], counts)  # cumulative gaps from each user's start
    ts = arrival[user] + within
    # ratings: user bias + item bias + noise, rounded into 1-5
    ub = rng.normal(0.0, 0.5, n_users)
    ib = rng.normal(0.0, 0.7, n_items)
    rating = np.clip(np.rint(3.6 + ub[user] + ib[item] + rng.normal(0.0, 0.8, n)), 1, 5).astype(np.int8)
    for rnd in range(20):  # a repeated (user, item) draw is drawn again (heavy users hit popular items twice),
        # from the popularity law first, then uniformly (the heaviest users exhaust the popular items)
        dup = pd.Series(user * n_items + item).duplicated().to_numpy()
        if not dup.any():
            break
        item[dup] = perm[rng.choice(n_items, size=int(dup.sum()), p=w / w.sum())] if rnd < 5 else \
            rng.integers(0, n_items, int(dup.sum()))
    keep = ~pd.Series(user * n_items + item).duplicated().to_numpy()  # what is still repeated is dropped
    user, item, rating, ts = user[keep], item[keep], rating[keep], ts[keep]
    return pd.DataFrame({
        "user": _ids("u", user),
        "item": _ids("i", item),
        "rating": rating,
        "timestamp": ts,
    })


def _ids(prefix: str, codes: np.ndarray) -> pd.Series:
    """String ids ``prefix + code`` for integer codes, built once per distinct code (fast at 20M rows)."""
    uniq, inv = np.unique(codes, return_inverse=True)
    names = np.array([f"{prefix}{c}" for c in uniq], dtype=object)
    return pd.Series(names[inv])
