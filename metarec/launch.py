"""``metarec train --nproc N``: N local processes of one data-parallel run (see :mod:`metarec.engine.dist`).

The launcher starts ``python -m metarec <the same line without --nproc>`` N times with the environment torchrun
would set (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``), so the
ranks meet on the loopback interface only. Rank 0 prints as one process would; the others print nothing unless
they fail. If any rank fails the others are stopped, and the launcher exits with the first failure's code and
its one line (never a traceback). Each rank gets ``OMP_NUM_THREADS`` = cores / N unless it is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from metarec.errors import MetarecError

__all__ = ["take_nproc", "launch", "in_worker"]


def take_nproc(argv: list[str]) -> tuple[int, list[str]]:
    """``(N, argv without --nproc N)``; N = 1 when the flag is absent. A bad value stops with one line."""
    out, n, i = [], 1, 0
    while i < len(argv):
        a = argv[i]
        if a == "--nproc" or a.startswith("--nproc="):
            val = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if "=" in a else 2
            try:
                n = int(val)
            except ValueError:
                raise MetarecError(f"--nproc takes a number of processes, got {val!r}") from None
            if n < 1:
                raise MetarecError(f"--nproc must be at least 1, got {n}")
            continue
        out.append(a)
        i += 1
    return n, out


def in_worker() -> bool:
    """This process is one rank of a multi-process run (started by the launcher or by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n: int, argv: list[str]) -> int:
    """Run ``metarec <argv>`` as ``n`` ranks on this machine; the exit code of the run."""
    if in_worker():
        raise MetarecError("--nproc inside a multi-process run (WORLD_SIZE is set): give the processes to torchrun "
                           "or to --nproc, not both")
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // n))
    base = {**os.environ, "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": threads}
    logs = Path(tempfile.mkdtemp(prefix="metarec-ranks-"))
    procs = []
    for r in range(n):
        env = {**base, "RANK": str(r), "LOCAL_RANK": str(r), "GROUP_RANK": "0"}
        err = None if r == 0 else open(logs / f"rank{r}.err", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, "-m", "metarec", *argv], env=env,
                                       stdout=None if r == 0 else subprocess.DEVNULL, stderr=err), err))
    failed: tuple[int, int] | None = None
    try:
        while any(p.poll() is None for p, _ in procs):
            for r, (p, _) in enumerate(procs):
                if p.returncode not in (None, 0) and failed is None:
                    failed = (r, p.returncode)
            if failed is not None:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        failed = (-1, 130)
    for p, _ in procs:  # a failed rank leaves the others waiting in a collective: stop them
        if p.poll() is None:
            p.terminate()
    for p, err in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if err is not None:
            err.close()
    if failed is None:
        failed = next(((r, p.returncode) for r, (p, _) in enumerate(procs) if p.returncode != 0), None)
    try:
        if failed is None:
            return 0
        r, code = failed
        if r > 0 and procs[0][0].returncode in (0, None, -15):  # rank 0 said nothing about it: say it here
            lines = (logs / f"rank{r}.err").read_text(errors="replace").strip().splitlines()
            print(f"metarec: error: rank {r} of {n} failed (exit {code}): "
                  f"{lines[-1] if lines else 'no message'}", file=sys.stderr)
        return code if code and code > 0 else 1
    finally:
        for f in logs.glob("*"):
            f.unlink()
        logs.rmdir()
