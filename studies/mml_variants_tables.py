"""The tables of docs/results/mml/variants.md from the records of docs/results/mml/variants.sh (issue 17).

``python studies/mml_variants_tables.py docs/results/mml/runs/ml-100k_v-*_s*.json`` prints, per method label: test
NDCG@10 / Recall@10 and meta-valid NDCG@10 (mean ± std over the seeds found, and per seed), test NDCG@10 per query
index (mean over seeds), and per seed the fusion selection and the stage-1 best epoch. Nothing is selected here.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from metarec.report import markdown_table


def main(files: list[str]) -> None:
    recs = [r for f in files for r in json.load(open(f))["results"]]
    labels = list(dict.fromkeys(r["method"] for r in recs))
    by = {m: sorted((r for r in recs if r["method"] == m), key=lambda r: r["seed"]) for m in labels}

    def ms(vals: list[float]) -> str:
        return f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if len(vals) > 1 else f"{vals[0]:.4f}"

    rows = []
    for m, rs in by.items():
        rows.append([m, ",".join(str(r["seed"]) for r in rs), ms([r["test"]["ndcg@10"] for r in rs]),
                     " / ".join(f"{r['test']['ndcg@10']:.4f}" for r in rs), ms([r["test"]["recall@10"] for r in rs]),
                     ms([r["valid"]["ndcg@10"] for r in rs]), f"{np.mean([r['train_seconds'] for r in rs]):.0f}"])
    print(markdown_table(["method", "seeds", "test ndcg@10", "per seed", "test recall@10", "valid ndcg@10",
                          "train s"], rows), end="\n\n")
    q = max(len(r["test_by_query"]["ndcg@10"]) for r in recs)
    rows = [[m, len(rs), *(f"{np.mean([r['test_by_query']['ndcg@10'][j] for r in rs]):.4f}" for j in range(q))]
            for m, rs in by.items()]
    print(markdown_table(["method", "seeds", *(f"query {j + 1} (index {10 + j})" for j in range(q))], rows),
          end="\n\n")
    rows = []
    for m, rs in by.items():
        for r in rs:
            fs = r.get("fusion_select")
            st = r.get("stages") or {}
            if fs is None and "pretrain" not in st:
                continue
            rows.append([m, r["seed"], st.get("pretrain", {}).get("best_epoch", ""),
                         st.get("meta", {}).get("best_epoch", ""),
                         f"{fs['learned']:.4f}" if fs else "", f"{fs['average']:.4f}" if fs else "",
                         fs["chosen"] if fs else "",
                         " / ".join(f"{k} {v:.4f}" for k, v in fs["test_ndcg@10"].items()) if fs else ""])
    print(markdown_table(["method", "seed", "stage-0 best epoch", "stage-1 best epoch", "valid: learned fusion",
                          "valid: average", "chosen", "test ndcg@10 (both rules)"], rows))


if __name__ == "__main__":
    main(sys.argv[1:])
