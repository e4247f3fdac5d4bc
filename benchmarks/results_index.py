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
             "excluded. Findings on MeLU: [melu_investigation.md](melu_investigation.md).", "",
             "Provenance: the explicit tables, the item-ID table, the rate selection, the adaptation measurement and "
             "the support-size curve were produced with the code before commit 87de036, the ml-100k implicit "
             "table at 9398d81. Two later changes alter the "
             "numbers a rerun gives (not their meaning): MeLU's exact low-rank fast path (equal to the vmap engine "
             "up to float32 rounding, which training amplifies) and the seeding fix (a learner's initialisation "
             "used to depend on the learners run before it in the same `compare`; each record is reproducible "
             "at its commit). The ml-1m implicit tables are not produced yet.", ""]
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text())
        if "results" not in data:
            continue
        res = data["results"]
        first = res[0]
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
        parts += [f"## {first['dataset']}, {first['protocol']}, {first['view']} "
                  f"([{path.stem}.md]({path.stem}.md))", "",
                  f"{first['test']['tasks']} meta-test tasks, seeds {seeds}.", "",
                  markdown_table(["learner", *metrics, "seeds"], rows), ""]
    write_text(root / "README.md", "\n".join(parts))
    print(f"wrote {root / 'README.md'}")


if __name__ == "__main__":
    main()
