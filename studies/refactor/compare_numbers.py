"""Issue 14's "numbers must not move": every metric of the before and after runs of numbers.sh, side by side.

Usage: python studies/refactor/compare_numbers.py [BEFORE] [AFTER] [--tol 1e-6]
(default studies/refactor/before and studies/refactor/after). Prints one line per record with the number of
metrics compared and the largest absolute difference, writes AFTER/comparison.md, and exits 1 if any metric
differs by more than --tol or is missing on one side.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def metrics(path: Path) -> dict[str, float]:
    """Every number a record reports, keyed by (record, run, part/phase, metric)."""
    out = {}
    if path.suffix == ".txt":  # the demo's printed lines: "seed 0 NAME: mae 0.7229  rmse 0.8957 ..."
        for line in path.read_text().splitlines():
            m = re.match(r"seed (\d+) (\S+): (.*?)\s+\(", line)  # "(preset P)", or since 5ce7285 "(N s, ...)"
            if m:
                for k, v in re.findall(r"(\S+) (-?[\d.]+(?:e-?\d+)?)", m.group(3)):
                    out[f"demo/{m.group(2)}/s{m.group(1)}/{k}"] = float(v)
        return out
    blob = json.loads(path.read_text())
    for r in blob["results"]:
        name = r.get("label") or r.get("method") or r["learner"]
        key = f"{path.stem}/{name}/s{r['seed']}"
        if "phases" in r:  # warm-up
            for ph, d in r["phases"].items():
                out.update({f"{key}/{ph}/{k}": float(v) for k, v in d.items() if isinstance(v, int | float)})
            continue
        for part in ("test", "valid"):
            for k, v in (r.get(part) or {}).items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"{key}/{part}/{k}"] = float(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", nargs="?", default="studies/refactor/before")
    ap.add_argument("after", nargs="?", default="studies/refactor/after")
    ap.add_argument("--tol", type=float, default=1e-6, help="largest absolute difference accepted")
    args = ap.parse_args(argv)
    before, after = Path(args.before), Path(args.after)
    rows, bad = [], 0
    for name in ("demo.txt", "rating.json", "warmup.json", "scenario.json", "seqrec.json"):
        a, b = metrics(before / name), metrics(after / name)
        missing = sorted(set(a) ^ set(b))
        diffs = [abs(a[k] - b[k]) for k in set(a) & set(b)]
        worst = max(diffs, default=0.0)
        ok = not missing and worst <= args.tol and diffs
        bad += not ok
        rows.append(f"| {name} | {len(diffs)} | {worst:.3g} | {len(missing)} | {'same' if ok else 'DIFFERENT'} |")
        print(f"{name}: {len(diffs)} metrics, largest |difference| {worst:.3g}, {len(missing)} on one side only"
              + ("" if ok else "  <- DIFFERENT"))
        for k in missing[:5]:
            print(f"  only in {'before' if k in a else 'after'}: {k}")
    table = ("| record | metrics compared | largest abs. difference | on one side only | verdict |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    (after / "comparison.md").write_text(
        f"# Before/after the one-architecture refactoring (issue 14)\n\nCommand: `python "
        f"studies/refactor/compare_numbers.py {before} {after} --tol {args.tol:g}`\n\n{table}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
