"""Where metarec keeps its files, and how it writes them without ever leaving half a file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def metarec_home() -> Path:
    """Root of the cache: ``$METAREC_HOME`` if set, else ``~/.cache/metarec``."""
    env = os.environ.get("METAREC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metarec"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``final`` (file or directory).

    On any exception the temporary is removed and ``final`` is left as it was, so a crash never
    leaves a half-written file where a reader would take it for a complete one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and target.is_dir():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(target, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def writable_dir(path: Path, what: str = "--out") -> Path:
    """Create folder ``path`` if needed and check that files can be written in it (before any work is done)."""
    from metarec.errors import MetarecError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MetarecError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


def remove_stale_temporaries(final: Path, older_than_s: float = 3600.0) -> list[Path]:
    """Remove what a killed :func:`atomic_path` left beside ``final`` (``.NAME.*.tmp`` and ``.NAME.old``) once it
    is older than ``older_than_s`` (younger ones may belong to a write in progress). Returns what it removed."""
    import time

    final = Path(final)
    if not final.parent.is_dir():
        return []
    now, gone = time.time(), []
    for p in [*final.parent.glob(f".{final.name}.*.tmp"), final.with_name(f".{final.name}.old")]:
        try:
            if p.exists() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                gone.append(p)
        except OSError:
            pass
    return gone


def read_record(path: Path, what: str, keys=("results",), result_keys=()) -> dict:
    """A JSON record written by metarec (``compare``, ``curve``, ``seqrec``, ...): a mapping holding ``keys``;
    if ``result_keys``, its "results" are mappings holding them. Anything else raises a one-line error."""
    from metarec.errors import MetarecError

    try:
        blob = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetarecError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        raise MetarecError(f"{path}: not a {what} ({type(e).__name__})") from None
    if not isinstance(blob, dict) or any(k not in blob for k in keys):
        raise MetarecError(f"{path}: not a {what} (it lacks {', '.join(keys)})")
    if result_keys:
        res = blob.get("results")
        if not isinstance(res, list) or not all(isinstance(r, dict) and all(k in r for k in result_keys)
                                                 for r in res):
            raise MetarecError(f"{path}: not a {what} (its results lack {', '.join(result_keys)})")
    return blob


def writer() -> bool:
    """Whether this process writes results: always, except on the ranks other than 0 of a multi-process run
    (:mod:`metarec.engine.dist`), which train in step with rank 0 and leave every file to it."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as pretty JSON, atomically (rank 0 only in a multi-process run: :func:`writer`)."""
    if not writer():
        return
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: Path, text: str) -> None:
    if not writer():
        return
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def record_code(result: dict) -> str:
    """The commit (``code``) of one result record; "not recorded" for records from before the field existed."""
    return result.get("code", "not recorded")


def record_codes(results: list[dict]) -> str:
    """The distinct commits of some result records (:func:`record_code`), for a table's header."""
    return ", ".join(sorted({record_code(r) for r in results}))


def code_version() -> str:
    """The git commit of the running metarec code (``+dirty`` if its sources differ from it), or "unknown"
    outside a git checkout: recorded with every results file so a number can be traced to its code."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "metarec"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def plain(obj):
    """``obj`` with every non-tensor value made plain data that ``torch.load(weights_only=True)`` accepts and
    JSON could hold: dataclasses as dicts, numpy scalars and arrays as numbers and lists, paths as strings.
    Tensors, dicts, lists, tuples, str, int, float, bool and None are kept."""
    import dataclasses

    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return type(obj)((k, plain(v)) for k, v in obj.items()) if type(obj) is not dict \
            else {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a model or checkpoint file")


def save_torch(path: Path, blob: dict) -> None:
    """Write ``blob`` (tensors and plain data, see :func:`plain`) with ``torch.save``, atomically (rank 0 only in
    a multi-process run: :func:`writer`)."""
    import torch

    if not writer():
        return

    blob = plain(blob)
    with atomic_path(Path(path)) as tmp:
        torch.save(blob, tmp)


def load_torch(path: Path, what: str = "model") -> dict:
    """Read a file written by :func:`save_torch` with ``torch.load(weights_only=True)``: tensors and plain data
    only, so nothing in the file can run code. Anything else (a pickle of other objects, garbage, a truncated
    file, not a dict) raises a one-line :class:`MetarecError`."""
    import pickle

    import torch

    from metarec.errors import MetarecError

    path = Path(path)
    if not path.is_file():
        raise MetarecError(f"{path}: no such {what} file")
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files; we refuse them
            warnings.simplefilter("ignore", UserWarning)
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = ("it holds objects other than tensors and plain data, refused unread"
                  if "Weights only load failed" in str(e) else str(e).splitlines()[0][:100])
        raise MetarecError(f"{path}: not a metarec {what} file ({reason})") from None
    except Exception as e:  # noqa: BLE001 - garbage bytes raise many kinds (RuntimeError, EOFError, ...)
        first = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise MetarecError(f"{path}: not a metarec {what} file ({type(e).__name__}: {first})") from None
    if not isinstance(blob, dict):
        raise MetarecError(f"{path}: not a metarec {what} file (holds a {type(blob).__name__}, not a mapping)")
    return blob
