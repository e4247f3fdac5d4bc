"""Summarise every `metarec compare` record in docs/results/*.json into docs/results/README.md.

Run: .venv/bin/python benchmarks/results_index.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from metarec.io import write_text
from metarec.report import markdown_table

EXPLICIT = ("rmse", "mae", "ndcg@3")
IMPLICIT = ("recall@10", "ndcg@10", "mrr@10")


def main() -> None:
    root = Path("docs/results")
    parts = ["# Results", "",
             "Meta-test tasks; mean ± std over the seeds listed; every model selected on meta-valid tasks only.",
             "Each table links the file that holds all metrics and the exact command that produced it; "
             "`bash docs/results/run_all.sh` reruns them all. This page: "
             "`.venv/bin/python benchmarks/results_index.py`.", "",
             "Explicit view: MAE / RMSE over query ratings, nDCG@3 in the query-only protocol (query items ordered "
             "by prediction, true rating as gain). Implicit view (rating >= 4 positive, 4 sampled negatives per "
             "positive for training): full ranking over all candidate items of the protocol, support items "
             "excluded. Findings on MeLU: [melu_investigation.md](melu_investigation.md); on the implicit view "
             "of the cold-start family: [coldstart/implicit_investigation.md](coldstart/implicit_investigation.md)."
             "", "",
             "Training budget: explicit tables 20 epochs, patience 4; implicit tables that say `--valid` in their "
             "command 30 epochs, patience 10 and outer rates chosen per learner on ml-100k user-cold meta-valid "
             "([selection/ml-100k_implicit_rates.md](selection/ml-100k_implicit_rates.md)); every implicit "
             "table here uses it (the earlier ones, at lr 1e-3 and patience 4, stopped the pooled network at "
             "about half its recall).", "",
             "Provenance: each record names the code it ran (`code` in its JSON, the commit; `+dirty` when the "
             "working tree had uncommitted changes); records without it: the ml-1m explicit tables, the item-ID "
             "table, the ml-100k user-cold explicit table, the rate selection, the adaptation measurement and the "
             "support-size curve were produced before commit 87de036, the ml-100k user-cold implicit table at "
             "9398d81, the other ml-100k states and the "
             "cold-start tables at d37ce45 (the issue-4 learners then uncommitted, committed unchanged right "
             "after). Later engine changes (MeLU's exact low-rank fast path, the seeding fix, hand-written "
             "support gradients) give numbers equal up to float32 rounding, which training amplifies, so a rerun "
             "at HEAD differs slightly from an older record. The four-state ml-1m implicit tables are not produced "
             "yet.", "",
             "Other protocols: the item warm-up tables of MetaEmb and MWUF are in [warmup/](warmup/), "
             "s²Meta's scenario tables in [s2meta/](s2meta/), MML's sequential tables in [mml/](mml/).", ""]
    paths = sorted(root.glob("*.json")) + sorted((root / "coldstart").glob("*.json"))
    for path in paths:
        data = json.loads(path.read_text())
        if "results" not in data:
            continue
        res = data["results"]
        first = res[0]
        if "view" not in first:  # not a `metarec compare` record (e.g. the feature-ceiling measurement)
            continue
        metrics = EXPLICIT if first["view"] == "explicit" else IMPLICIT
        labels = list(dict.fromkeys(r.get("label", r["learner"]) for r in res))
        rows = []
        for label in labels:
            rs = [r for r in res if r.get("label", r["learner"]) == label]
            cells = [label]
            for m in metrics:
                v = np.array([r["test"][m] for r in rs])
                cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
            rows.append(cells + [len(rs)])
        seeds = sorted({r["seed"] for r in res})
        rel = path.relative_to(root).with_suffix(".md").as_posix()
        code = (f" Code: {data['code']}." if "code" in data
                else f" Code: {', '.join(data['codes'])} (merged)." if "codes" in data else "")
        parts += [f"## {first['dataset']}, {first['protocol']}, {first['view']} ([{rel}]({rel}))", "",
                  f"{first['test']['tasks']} meta-test tasks, seeds {seeds}.{code}", "",
                  markdown_table(["learner", *metrics, "seeds"], rows), ""]
    write_text(root / "README.md", "\n".join(parts))
    print(f"wrote {root / 'README.md'}")


if __name__ == "__main__":
    main()
