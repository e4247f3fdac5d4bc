"""Side features as integer codes, with vocabularies fitted on meta-train owners only.

Index 0 of every vocabulary is reserved for "unknown" (a value never seen in meta-train, or missing), so a
new user or item is always encodable. User fields: age, gender, occupation, zip prefix. Item fields: the
release-year bucket (decade) as a categorical, and genres as a multi-hot vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from metarec.data.types import Dataset

UNKNOWN = "<unk>"


@dataclass(frozen=True)
class FeatureSpace:
    user_fields: tuple[str, ...]
    user_vocab: dict[str, list[str]]  # field -> values; value at position p has code p (p=0: unknown)
    item_fields: tuple[str, ...]
    item_vocab: dict[str, list[str]]
    genres: list[str]  # multi-hot columns
    zip_prefix: int = 2

    @property
    def user_cardinalities(self) -> list[int]:
        return [len(self.user_vocab[f]) for f in self.user_fields]

    @property
    def item_cardinalities(self) -> list[int]:
        return [len(self.item_vocab[f]) for f in self.item_fields]

    def user_columns(self, users: pd.DataFrame) -> dict[str, pd.Series]:
        cols = {}
        for f in self.user_fields:
            v = users[f].astype("string")
            cols[f] = v.str[: self.zip_prefix] if f == "zip" else v
        return cols

    def item_columns(self, items: pd.DataFrame) -> dict[str, pd.Series]:
        cols = {}
        for f in self.item_fields:
            if f == "decade":
                cols[f] = (items["year"].astype("Float64") // 10 * 10).astype("Int64").astype("string")
            else:
                cols[f] = items[f].astype("string")
        return cols

    def user_encoder(self):
        """``encode(profile) -> (F_u,) codes`` for one user's fields given as a mapping (a newcomer when serving):
        the function ``encode_users`` computes for a frame's row, in plain Python (no frame per user)."""
        index = {f: {v: j for j, v in enumerate(self.user_vocab[f])} for f in self.user_fields}

        def encode(profile) -> list[int]:
            out = []
            for f in self.user_fields:
                v = profile.get(f)
                v = UNKNOWN if v is None else str(v)
                if f == "zip" and v != UNKNOWN:
                    v = v[: self.zip_prefix]
                out.append(index[f].get(v, 0))
            return out

        return encode

    def encode_users(self, users: pd.DataFrame) -> torch.Tensor:
        """(n_users, F_u) long codes."""
        return _encode(self.user_columns(users), self.user_vocab, self.user_fields, len(users))

    def encode_items(self, items: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_items, F_i) long codes and (n_items, G) float genre multi-hot."""
        cat = _encode(self.item_columns(items), self.item_vocab, self.item_fields, len(items))
        multi = np.zeros((len(items), len(self.genres)), dtype=np.float32)
        if "genres" in items and self.genres:
            col = {g: j for j, g in enumerate(self.genres)}
            for r, gs in enumerate(items["genres"].fillna("").astype(str)):
                for g in gs.split("|"):
                    if g in col:
                        multi[r, col[g]] = 1.0
        return cat, torch.from_numpy(multi)

    def to_dict(self) -> dict:
        return {"user_fields": list(self.user_fields), "user_vocab": self.user_vocab,
                "item_fields": list(self.item_fields), "item_vocab": self.item_vocab,
                "genres": self.genres, "zip_prefix": self.zip_prefix}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpace:
        return cls(tuple(d["user_fields"]), d["user_vocab"], tuple(d["item_fields"]), d["item_vocab"],
                   list(d["genres"]), int(d["zip_prefix"]))


def fit_features(ds: Dataset, train_inter: pd.DataFrame, zip_prefix: int = 2) -> FeatureSpace:
    """Vocabularies from the users and items that appear in ``train_inter`` (meta-train) only."""
    users = ds.users.iloc[np.unique(train_inter["user"].to_numpy())]
    items = ds.items.iloc[np.unique(train_inter["item"].to_numpy())]
    u_fields = tuple(f for f in ("age", "gender", "occupation", "zip") if f in ds.users.columns)
    i_fields = ("decade",) if "year" in ds.items.columns else ()
    space = FeatureSpace(u_fields, {}, i_fields, {}, [], zip_prefix)
    u_vocab = {f: [UNKNOWN] + sorted(set(c.dropna().tolist())) for f, c in space.user_columns(users).items()}
    i_vocab = {f: [UNKNOWN] + sorted(set(c.dropna().tolist())) for f, c in space.item_columns(items).items()}
    genres = sorted({g for gs in items["genres"].fillna("").astype(str) for g in gs.split("|") if g}) \
        if "genres" in items else []
    return FeatureSpace(u_fields, u_vocab, i_fields, i_vocab, genres, zip_prefix)


def _encode(cols: dict[str, pd.Series], vocab: dict[str, list[str]], fields, n) -> torch.Tensor:
    out = np.zeros((n, len(fields)), dtype=np.int64)
    for j, f in enumerate(fields):
        index = pd.Index(vocab[f])
        codes = index.get_indexer(cols[f].fillna(UNKNOWN).astype(object))
        out[:, j] = np.where(codes < 0, 0, codes)
    return torch.from_numpy(out)
