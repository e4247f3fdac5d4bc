"""Run the reliability corpus (tests/corpus_cases.py) against two checkouts as a user would: every command
in a fresh process. Writes docs/reliability.md (the table case / before / after and the counts) and its JSON.

    git worktree add /tmp/before 282e76d        # the code before issue 18
    OMP_NUM_THREADS=1 .venv/bin/python studies/corpus_before_after.py --before /tmp/before --after .

Each side runs with its own PYTHONPATH, so the same interpreter and packages serve both. Setups that train a
run use the side's own code (``cli``); files are written by this script. ``CORPUS_CACHE_VERSION`` makes the
damaged-cache setup claim the cache version of the code before (1) on that side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.corpus_cases import CASES, classify, leftovers, snapshot  # noqa: E402


def runner(code_root: Path, w: Path):
    env = {**os.environ, "PYTHONPATH": str(code_root), "METAREC_HOME": str(w / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("METAREC_DEBUG", None)

    def run(argv: list[str]) -> tuple[int, str, str]:
        p = subprocess.run([sys.executable, "-c", "import sys; from metarec.cli import main; sys.exit(main())",
                            *argv], cwd=w, env=env, capture_output=True, text=True, timeout=600)
        return p.returncode, p.stdout, p.stderr
    return run


def run_side(code_root: Path, cache_version: int | None) -> dict:
    out = {}
    if cache_version is not None:
        os.environ["CORPUS_CACHE_VERSION"] = str(cache_version)
    else:
        os.environ.pop("CORPUS_CACHE_VERSION", None)
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            w = Path(tmp)
            run = runner(code_root, w)
            try:
                if case.setup is not None:
                    case.setup(w, lambda argv, run=run: run(argv)[0])
            except AssertionError as e:
                out[case.id] = {"outcome": "setup failed", "detail": str(e)}
                continue
            before = snapshot(w)
            code, so, se = run(case.args())
            outcome = classify(case, code, so, se)
            left = leftovers(w, before) if case.code != 0 else []
            tail = [x for x in se.strip().splitlines() if x.strip()]
            out[case.id] = {"outcome": outcome, "code": code, "payload_ran": (w / "PWNED").exists(),
                            "half_written": left,
                            "last_line": (tail[-1] if tail else (so.strip().splitlines() or [""])[-1])[:160]}
        print(f"{case.id}: {out[case.id]['outcome']}", file=sys.stderr, flush=True)
    return out


def counts(side: dict) -> dict:
    c = {"clear": 0, "traceback": 0, "silent": 0}
    for r in side.values():
        c[r["outcome"]] = c.get(r["outcome"], 0) + 1
    c["payload ran"] = sum(r.get("payload_ran", False) for r in side.values())
    c["half-written"] = sum(bool(r.get("half_written")) for r in side.values())
    return c


def write_doc(before: dict, after: dict, path: Path, commits: tuple[str, str]) -> None:
    cb, ca = counts(before), counts(after)
    keys = ["clear", "traceback", "silent", "payload ran", "half-written"]
    lines = [
        "# Reliability: the bad-input corpus, before and after issue 18",
        "",
        f"Every case of `tests/corpus_cases.py` ({len(CASES)} bad inputs and invocations: the command line, "
        "settings, data files, model files and checkpoints, records, and the seqrec / scenario / warmup families) run "
        "as a user would, one fresh `metarec` process each, against the code before (`" + commits[0] + "`) and after "
        "(`" + commits[1] + "`). Produced by `studies/corpus_before_after.py`; `tests/test_reliability_corpus.py` "
        "runs the same cases in-process in CI.",
        "",
        "Outcomes: **clear** = the expected exit code (2) with one `metarec: error: ...` line (argparse's usage "
        "block not counted); **traceback** = a Python traceback (or, after, `metarec: internal error`); **silent** "
        "= exit 0 or another wrong result where an error was due. *payload ran*: a pickle payload in a model or "
        "checkpoint file was executed; *half-written*: a failed command left files behind.",
        "",
        "| outcome | before | after |",
        "|---|---|---|",
        *[f"| {k} | {cb.get(k, 0)} | {ca.get(k, 0)} |" for k in keys],
        "",
        "| case | family | command | before | after |",
        "|---|---|---|---|---|",
    ]
    for case in CASES:
        b, a = before.get(case.id, {}), after.get(case.id, {})

        def cell(r):
            s = r.get("outcome", "?")
            if r.get("payload_ran"):
                s += ", payload ran"
            if r.get("half_written"):
                s += ", half-written"
            return s
        cmd = ("metarec " + case.argv.format(data="toy")).replace("|", "\\|")
        if len(cmd) > 70:
            cmd = cmd[:67] + "..."
        lines.append(f"| {case.id} | {case.family} | `{cmd}` | {cell(b)} | {cell(a)} |")
    lines += ["", "The before column's error texts (the last line of each run) are in `docs/reliability.json`.", ""]
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps({"commits": commits, "before": before, "after": after},
                                                    indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a checkout of the code before (git worktree)")
    ap.add_argument("--after", default=str(ROOT))
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability.md"))
    args = ap.parse_args()

    def commit(p):
        return subprocess.run(["git", "-C", p, "rev-parse", "--short=7", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    before = run_side(Path(args.before).resolve(), cache_version=1)
    after = run_side(Path(args.after).resolve(), cache_version=None)
    write_doc(before, after, Path(args.out), (commit(args.before), commit(args.after)))
    print(json.dumps({"before": counts(before), "after": counts(after)}))


if __name__ == "__main__":
    main()
