"""The ``tasks`` protocol: meta-train / meta-valid / meta-test tasks read from a file, so that metarec's learners
run on another toolkit's exact split.

A task file names each task's owner (a user, by the dataset's raw id), its support and its query items (raw ids)
with their ratings (or 0/1 labels), and the part it belongs to. Two layouts:

- JSON: ``{"dataset": "ml-100k" (optional, checked), "tasks": [{"part": "train", "owner": "196",
  "support": [["242", 3.0], ...], "query": [["302", 4.0], ...]}, ...], "train_log": [["196", "51", 5.0],
  ...] (optional)}``; a pair may also be ``{"item": "242", "rating": 3.0}``.
- a table (``.parquet`` or ``.csv``): one row per pair, columns ``part, owner, item, rating, set`` with ``set``
  one of ``support``, ``query`` or ``log``.

``part`` is ``train``, ``valid`` or ``test``. ``train_log`` (rows with ``set = log``, part ``train``) lists
interactions that meta-train may use besides its tasks' pairs (the baselines' fitting, the pooled training and
the feature vocabularies see them; task-based meta-training does not). Features (profiles, genres, years) come
from the dataset the raw ids belong to (``--dataset``). A (owner, item) pair of a meta-valid or meta-test query
that is also a meta-train pair stops the run: that would leak the answer into training.

:func:`write_task_file` writes any split's tasks in the JSON layout (round trip: :func:`read_task_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.types import Dataset
from metarec.errors import MetarecError
from metarec.tasks import Task

__all__ = ["PARTS", "SETS", "COLUMNS", "TaskFileSplit", "read_task_file", "task_file_split", "write_task_file"]

PARTS = ("train", "valid", "test")
SETS = ("support", "query", "log")
COLUMNS = ("part", "owner", "item", "rating", "set")


def read_task_file(path: str | Path) -> tuple[pd.DataFrame, str | None]:
    """The file as one row per pair (columns :data:`COLUMNS`, ids as strings, task order kept in ``task``)
    and the dataset it names (JSON only, else None)."""
    path = Path(path)
    if not path.is_file():
        raise MetarecError(f"{path}: no such task file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".parquet", ".csv"):
        try:
            df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, dtype=str)
        except Exception as e:  # noqa: BLE001 - pyarrow and pandas raise many kinds for a bad file
            raise MetarecError(f"{path}: not a readable {suffix[1:]} file ({type(e).__name__})") from None
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise MetarecError(f"{path}: a task table needs the columns {', '.join(COLUMNS)} (missing "
                               f"{', '.join(missing)})")
        df = df[list(COLUMNS)].copy()
        # a task: one (part, owner) in file order (a table cannot give one owner two tasks in one part)
        key = df["part"].astype(str) + "\x1f" + df["owner"].astype(str)
        df["task"] = pd.factorize(key)[0]
        return _clean(df, path), None
    raise MetarecError(f"{path}: a task file is .json, .parquet or .csv")


def _read_json(path: Path) -> tuple[pd.DataFrame, str | None]:
    try:
        blob = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MetarecError(f"{path}: not valid JSON ({e})") from None
    if isinstance(blob, list):
        blob = {"tasks": blob}
    if not isinstance(blob, dict) or not isinstance(blob.get("tasks"), list):
        raise MetarecError(f"{path}: a task file holds {{\"tasks\": [...]}} (see `metarec.task_files`)")
    rows = []
    for n, t in enumerate(blob["tasks"]):
        if not isinstance(t, dict) or not {"part", "owner", "support", "query"} <= set(t):
            raise MetarecError(f"{path}: task {n} needs part, owner, support and query")
        for which in ("support", "query"):
            if not isinstance(t[which], list):
                raise MetarecError(f"{path}: task {n}: {which} is a list of [item, rating] pairs")
            rows += [(t["part"], t["owner"], *_pair(p, path, n), which, n) for p in t[which]]
    log = blob.get("train_log", [])
    if not isinstance(log, list):
        raise MetarecError(f"{path}: train_log is a list of [owner, item, rating] triples")
    for p in log:
        if not (isinstance(p, list | tuple) and len(p) == 3):
            raise MetarecError(f"{path}: train_log entries are [owner, item, rating], got {p!r}")
        rows.append(("train", p[0], p[1], p[2], "log", -1))
    df = pd.DataFrame(rows, columns=[*COLUMNS, "task"])
    dataset = blob.get("dataset")
    return _clean(df, path), str(dataset) if dataset is not None else None


def _pair(p, path: Path, n: int) -> tuple:
    if isinstance(p, dict) and "item" in p:
        return p["item"], p.get("rating", p.get("label"))
    if isinstance(p, list | tuple) and len(p) == 2:
        return p[0], p[1]
    raise MetarecError(f"{path}: task {n}: a pair is [item, rating] or {{\"item\": ..., \"rating\": ...}}, got {p!r}")


def _clean(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    for c in ("part", "set", "owner", "item"):
        df[c] = df[c].astype(str)
    bad = sorted(set(df["part"]) - set(PARTS))
    if bad:
        raise MetarecError(f"{path}: unknown part(s) {', '.join(bad)}: use {', '.join(PARTS)}")
    bad = sorted(set(df["set"]) - set(SETS))
    if bad:
        raise MetarecError(f"{path}: unknown set(s) {', '.join(bad)}: use {', '.join(SETS)}")
    if ((df["set"] == "log") & (df["part"] != "train")).any():
        raise MetarecError(f"{path}: log rows belong to the train part")
    rating = pd.to_numeric(df["rating"], errors="coerce")
    if rating.isna().any() or not np.isfinite(rating.to_numpy(float)).all():
        raise MetarecError(f"{path}: {int((~np.isfinite(rating.to_numpy(float))).sum())} rating(s) missing or not "
                           "a finite number")
    df["rating"] = rating.astype(np.float32)
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class TaskFileSplit:
    """What the runner reads of a split, built from a task file: the meta-train interactions (``train``), every
    part's pairs (``parts``), the ranking candidates and a description."""

    path: str
    dataset: str
    train: pd.DataFrame  # user, item, rating, timestamp: the meta-train tasks' pairs and the train log
    valid: pd.DataFrame
    test: pd.DataFrame
    n_items: int
    counts: dict

    @property
    def parts(self) -> dict[str, pd.DataFrame]:
        return {"meta-train": self.train, "meta-valid": self.valid, "meta-test": self.test}

    def candidate_items(self) -> np.ndarray:
        """Every item of the dataset: full ranking (the file names no candidate set)."""
        return np.arange(self.n_items)

    def describe(self) -> dict:
        return {"dataset": self.dataset, "protocol": "tasks", "task_file": self.path, **self.counts}


def task_file_split(ds: Dataset, path: str | Path) -> tuple[TaskFileSplit, dict[str, list[Task]]]:
    """The split and the tasks of each part (``train``, ``valid``, ``test``) of the task file at ``path``, its raw
    ids mapped through ``ds``. In the implicit view (``ds.implicit``) the file's ratings must be 0/1 labels: the
    pairs labelled 1 are the positives and those labelled 0 are dropped, as the implicit runner samples its own
    negatives (from the items no one of the owner's pairs names)."""
    df, named = read_task_file(path)
    if named is not None and named != ds.name:
        raise MetarecError(f"{path}: the task file is for dataset {named!r}, the run's dataset is {ds.name!r}")
    users = pd.Series(np.arange(ds.n_users), index=ds.users["raw_id"].astype(str))
    items = pd.Series(np.arange(ds.n_items), index=ds.items["raw_id"].astype(str))
    for col, table, what in (("owner", users, "user"), ("item", items, "item")):
        unknown = sorted(set(df[col]) - set(table.index))
        if unknown:
            raise MetarecError(f"{path}: {len(unknown)} {what} id(s) not in {ds.name} (e.g. "
                               f"{', '.join(map(repr, unknown[:3]))}); ids are the dataset's raw ids")
    df["user"] = users.loc[df["owner"]].to_numpy()
    df["item"] = items.loc[df["item"]].to_numpy()
    if ds.implicit:
        if not df["rating"].isin([0.0, 1.0]).all():
            raise MetarecError(f"{path}: the implicit view needs 0/1 labels in the task file")
        df = df[df["rating"] == 1.0]
    tasks = {p: _tasks(df[(df["part"] == p) & (df["set"] != "log")], path) for p in PARTS}
    empty = [p for p in PARTS if not tasks[p]]
    if empty:
        raise MetarecError(f"{path}: no {' or '.join(empty)} task")
    train_pairs = set(zip(df.loc[df["part"] == "train", "user"], df.loc[df["part"] == "train", "item"],
                          strict=True))
    for p in ("valid", "test"):
        q = df[(df["part"] == p) & (df["set"] == "query")]
        leak = sum((u, i) in train_pairs for u, i in zip(q["user"], q["item"], strict=True))
        if leak:
            raise MetarecError(f"{path}: {leak} meta-{p} query pair(s) are also meta-train pairs (leakage)")
    # timestamps of the dataset where it has the pair (the pooled training sorts by time), else 0
    times = ds.inter.set_index(["user", "item"])["timestamp"]
    frames = {}
    for p in PARTS:
        part = df[df["part"] == p][["user", "item", "rating"]].drop_duplicates(["user", "item"], keep="last")
        idx = pd.MultiIndex.from_arrays([part["user"], part["item"]])
        ts = times.reindex(idx).fillna(0).astype("int64").to_numpy() if len(times) else np.zeros(len(part), "int64")
        frames[p] = part.assign(timestamp=ts).sort_values(["timestamp", "user", "item"], kind="stable") \
            .reset_index(drop=True)
    counts = {f"{p}_tasks": len(tasks[p]) for p in PARTS}
    counts["train_log_pairs"] = int((df["set"] == "log").sum())
    split = TaskFileSplit(str(path), ds.name, frames["train"], frames["valid"], frames["test"], ds.n_items, counts)
    return split, tasks


def _tasks(df: pd.DataFrame, path) -> list[Task]:
    out = []
    for _, g in df.groupby("task", sort=True):
        s, q = g[g["set"] == "support"], g[g["set"] == "query"]
        if len(s) == 0 or len(q) == 0:
            raise MetarecError(f"{path}: task of owner {g['owner'].iloc[0]!r} ({g['part'].iloc[0]}) needs at least "
                               "one support and one query pair")
        owner = int(g["user"].iloc[0])
        out.append(Task(owner, s["user"].to_numpy(np.int64), s["item"].to_numpy(np.int64),
                        s["rating"].to_numpy(np.float32), q["user"].to_numpy(np.int64), q["item"].to_numpy(np.int64),
                        q["rating"].to_numpy(np.float32)))
    return out


def write_task_file(path: str | Path, ds: Dataset, parts: dict[str, list[Task]],
                    train_log: pd.DataFrame | None = None) -> None:
    """Write ``parts`` (``train``/``valid``/``test`` -> user tasks over ``ds``) as a JSON task file, with the
    meta-train interactions of ``train_log`` (``user, item, rating``) that no train task holds."""
    from metarec.io import write_json

    uid, iid = ds.users["raw_id"].astype(str).to_numpy(), ds.items["raw_id"].astype(str).to_numpy()
    tasks = []
    for p in PARTS:
        for t in parts.get(p, []):
            tasks.append({"part": p, "owner": uid[t.owner],
                          "support": [[iid[i], float(r)] for i, r in zip(t.s_item, t.s_rating, strict=True)],
                          "query": [[iid[i], float(r)] for i, r in zip(t.q_item, t.q_rating, strict=True)]})
    blob: dict[str, object] = {"dataset": ds.name, "tasks": tasks}
    if train_log is not None:
        held = {(int(u), int(i)) for t in parts.get("train", []) for u, i in
                zip(np.r_[t.s_user, t.q_user], np.r_[t.s_item, t.q_item], strict=True)}
        blob["train_log"] = [[uid[u], iid[i], float(r)] for u, i, r in
                             zip(train_log["user"], train_log["item"], train_log["rating"], strict=True)
                             if (int(u), int(i)) not in held]
    write_json(Path(path), blob)
