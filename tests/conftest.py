"""Shared fixtures: a tiny synthetic MovieLens-like log, and an isolated METAREC_HOME per test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec.data.loaders import build_dataset

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
REAL_HOME = Path(os.environ.get("METAREC_HOME", Path.home() / ".cache" / "metarec"))


def synthetic_frames(n_users: int = 60, n_items: int = 80, seed: int = 0):
    """Users arrive over 100 days and rate 14-40 items each; ratings follow a latent-factor model."""
    rng = np.random.default_rng(seed)
    pu, qi = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    rows = []
    for u in range(n_users):
        start = 86400 * (u * 100 // n_users)
        k = int(rng.integers(14, 41))
        for j, i in enumerate(rng.choice(n_items, size=k, replace=False)):
            score = pu[u] @ qi[i] + rng.normal(scale=0.5)
            rating = int(np.clip(np.round(3 + score), 1, 5))
            rows.append((f"u{u}", f"i{i}", str(rating), str(1_000_000_000 + start + 3600 * j)))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    users = pd.DataFrame({
        "user": [f"u{u}" for u in range(n_users)],
        "age": rng.choice(["18-24", "25-34", "35-44"], size=n_users),
        "gender": rng.choice(["M", "F"], size=n_users),
        "occupation": rng.choice(["student", "engineer", "artist", "other"], size=n_users),
        "zip": [f"{z:05d}" for z in rng.integers(0, 99999, size=n_users)],
    })
    items = pd.DataFrame({
        "item": [f"i{i}" for i in range(n_items)],
        "title": [f"Movie {i}" for i in range(n_items)],
        "genres": ["|".join(rng.choice(GENRES, size=int(rng.integers(1, 3)), replace=False)) for _ in range(n_items)],
        "year": [str(1980 + (i * 20) // n_items) for i in range(n_items)],
    })
    return inter, users, items


def require(module: str):
    """``pytest.importorskip(module)``, except under ``METAREC_REQUIRE_EXTRAS=1`` (``make test-slow``, which
    installs the extras): there a missing module fails the test instead of skipping it silently."""
    if os.environ.get("METAREC_REQUIRE_EXTRAS") == "1":
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture
def tiny_dataset():
    inter, users, items = synthetic_frames()
    return build_dataset("tiny", inter, users, items)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets an empty METAREC_HOME; integration tests opt into the real cache explicitly."""
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))


@pytest.fixture
def real_home(monkeypatch):
    """The shared cache (datasets converted once per machine), for integration tests."""
    monkeypatch.setenv("METAREC_HOME", str(REAL_HOME))
    return REAL_HOME


def write_atomic(dirpath: Path, name: str, inter: pd.DataFrame, users=None, items=None, crlf=False) -> Path:
    """Write frames as RecBole atomic files (``name.inter`` etc.)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    nl = "\r\n" if crlf else "\n"

    def dump(df, header, path):
        lines = ["\t".join(header)] + ["\t".join(map(str, r)) for r in df.itertuples(index=False)]
        path.write_bytes((nl.join(lines) + nl).encode())

    dump(inter, ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], dirpath / f"{name}.inter")
    if users is not None:
        dump(users, ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"],
             dirpath / f"{name}.user")
    if items is not None:
        it = items.assign(genres=items["genres"].str.replace("|", " "))[["item", "title", "year", "genres"]]
        dump(it, ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"],
             dirpath / f"{name}.item")
    return dirpath / f"{name}.inter"
