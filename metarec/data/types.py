"""The typed containers every later stage reads: a dataset is interactions plus side information."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

INTER_COLUMNS = ("user", "item", "rating", "timestamp")
USER_FIELDS = ("age", "gender", "occupation", "zip")
ITEM_FIELDS = ("title", "genres", "year")


@dataclass(frozen=True)
class Dataset:
    """An interaction log with dense integer ids and its side information.

    ``inter``: one row per interaction, columns ``user, item`` (int64 indices into ``users``/``items``),
    ``rating`` (float32; 1.0 everywhere in an implicit view) and ``timestamp`` (int64 seconds), sorted by
    (timestamp, user, item). ``users``: row ``u`` describes user index ``u``; column ``raw_id`` plus any of
    ``age, gender, occupation, zip`` (strings, missing as ``<NA>``). ``items``: row ``i`` describes item
    index ``i``; ``raw_id`` plus any of ``title`` (str), ``genres`` ('|'-joined str) and ``year`` (Int64).
    """

    name: str
    inter: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    implicit: bool = False

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_inter(self) -> int:
        return len(self.inter)

    def stats(self) -> dict:
        r = self.inter["rating"].to_numpy()
        per_user = self.inter.groupby("user").size()
        return {
            "dataset": self.name,
            "view": "implicit" if self.implicit else "explicit",
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_inter,
            "density": self.n_inter / max(1, self.n_users * self.n_items),
            "rating_min": float(r.min()) if len(r) else float("nan"),
            "rating_max": float(r.max()) if len(r) else float("nan"),
            "inter_per_user_median": float(per_user.median()) if len(per_user) else 0.0,
            "time_start": pd.to_datetime(int(self.inter["timestamp"].min()), unit="s").strftime("%Y-%m-%d"),
            "time_end": pd.to_datetime(int(self.inter["timestamp"].max()), unit="s").strftime("%Y-%m-%d"),
            "user_fields": [c for c in USER_FIELDS if c in self.users.columns],
            "item_fields": [c for c in ITEM_FIELDS if c in self.items.columns],
        }

    def item_text(self) -> list[str]:
        """One text per item for text encoders: its title and genres ("Toy Story. Animation, Comedy")."""
        title = self.items["title"].fillna("") if "title" in self.items else pd.Series([""] * self.n_items)
        genres = self.items["genres"].fillna("") if "genres" in self.items else pd.Series([""] * self.n_items)
        return [
            (f"{t}. {g.replace('|', ', ')}" if g else str(t)).strip()
            for t, g in zip(title.astype(str), genres.astype(str), strict=True)
        ]


def data_fingerprint(ds: Dataset) -> str:
    """sha256 of a dataset's content (interactions, users, items, view): equal data, equal fingerprint."""
    import hashlib

    h = hashlib.sha256(f"{ds.name}|{ds.implicit}".encode())
    for df in (ds.inter, ds.users, ds.items):
        h.update(",".join(map(str, df.columns)).encode())
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def to_implicit(ds: Dataset, threshold: float | None = None) -> Dataset:
    """The implicit view: interactions with rating >= ``threshold`` (all of them if None) become 1.0."""
    inter = ds.inter
    if threshold is not None:
        inter = inter[inter["rating"] >= threshold]
    inter = inter.assign(rating=np.float32(1.0)).reset_index(drop=True)
    return Dataset(name=ds.name, inter=inter, users=ds.users, items=ds.items, implicit=True)
