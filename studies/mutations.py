"""Issue 18 point 8: apply each realistic bug (a mutation) to a temporary copy of the package and show that the
test suite now fails. A script, not a test (it runs the whole suite once per mutation: several minutes).

    OMP_NUM_THREADS=1 .venv/bin/python studies/mutations.py [--out docs/reliability_mutations.md] [--only NAME]

Each mutation is one exact text replacement (it must match once, so the script notices when the code moves).
The copy holds metarec/, tests/ and pyproject.toml; pytest runs there with ``-x`` and reports which test caught it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (file, text, replacement, what the bug does)
MUTATIONS = {
    "vocab-on-all": ("metarec/data/features.py",
                     'users = ds.users.iloc[np.unique(train_inter["user"].to_numpy())]\n'
                     '    items = ds.items.iloc[np.unique(train_inter["item"].to_numpy())]',
                     "users = ds.users\n    items = ds.items",
                     "feature vocabularies fitted on all users and items, not meta-train only (leakage)"),
    "no-rng-restore": ("metarec/engine/train.py", 'torch.set_rng_state(ck["torch_rng"])', "pass",
                       "resume without torch.set_rng_state"),
    "ndcg-over-padding": ("metarec/evaluation/evaluate.py", "M.query_ndcg_at_k(pred, true, mask, k,",
                          "M.query_ndcg_at_k(pred, true, np.ones_like(mask), k,",
                          "evaluate_rating computes query nDCG over padded query slots"),
    "exclude-support-negatives": ("metarec/evaluation/evaluate.py", "b.s_mask & (b.s_rating > 0), pos_of",
                                  "b.s_mask, pos_of",
                                  "evaluate_ranking excludes support negatives as well as positives"),
    "item-newness-gt": ("metarec/splits.py", "item_new = np.nan_to_num(years, nan=-1) >= year_ref",
                        "item_new = np.nan_to_num(years, nan=-1) > year_ref",
                        "item newness `>=` turned into `>` (items of year Y are old)"),
    "stale-checkpoint": ("metarec/engine/train.py", "if fingerprint(theirs) != fingerprint(ident):",
                         'if theirs.get("train") != ident.get("train"):',
                         "resume when only the train.* settings match (issue 18 point 1)"),
    "unsafe-load": ("metarec/io.py", 'blob = torch.load(path, map_location="cpu", weights_only=True)',
                    'blob = torch.load(path, map_location="cpu", weights_only=False)',
                    "model files and checkpoints unpickled with weights_only=False (point 2)"),
    "no-train-checks": ("metarec/engine/train.py",
                        'check(self, "train", pos_int=("epochs", "meta_batch", "patience")',
                        'None and check(self, "train", pos_int=("epochs", "meta_batch", "patience")',
                        "TrainConfig accepts epochs 0, lr NaN, ... (point 3)"),
}


def copy_tree(dest: Path) -> None:
    for name in ("metarec", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def run_suite(where: Path, timeout: int) -> tuple[int, str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(where)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests"], cwd=where,
                       env=env, capture_output=True, text=True, timeout=timeout)
    failed = re.findall(r"^FAILED (\S+)", p.stdout, flags=re.M)
    return p.returncode, failed[0] if failed else p.stdout.strip().splitlines()[-1], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "reliability_mutations.md"))
    ap.add_argument("--only", nargs="+", choices=list(MUTATIONS))
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        copy_tree(base)
        code, last, secs = run_suite(base, args.timeout)
        print(f"unmutated: exit {code} ({last}, {secs:.0f} s)", flush=True)
        if code != 0:
            sys.exit("the unmutated suite fails; fix it first")
        for name in args.only or MUTATIONS:
            f, old, new, what = MUTATIONS[name]
            d = Path(tmp) / name
            shutil.copytree(base, d)
            text = (d / f).read_text()
            if text.count(old) != 1:
                sys.exit(f"{name}: the text to mutate occurs {text.count(old)} times in {f}")
            (d / f).write_text(text.replace(old, new))
            code, caught, secs = run_suite(d, args.timeout)
            verdict = "caught" if code != 0 else "SURVIVED"
            rows.append((name, what, verdict, caught if code != 0 else "-"))
            print(f"{name}: {verdict} by {caught} ({secs:.0f} s)", flush=True)
            shutil.rmtree(d)
    lines = ["# Mutations of issue 18: each realistic bug fails the suite", "",
             "Produced by `studies/mutations.py` (each mutation applied to a copy of the package; the whole default "
             "suite run with `-x`; the first failing test is named).", "",
             "| mutation | the bug | verdict | first failing test |", "|---|---|---|---|"]
    lines += [f"| {n} | {w} | {v} | `{c}` |" for n, w, v, c in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    if any(v != "caught" for _, _, v, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
