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


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: Path, text: str) -> None:
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
