"""How far can a feature-only network go in full ranking? Ties among items with identical side features.

MeLU and the other feature-based learners of issue 4 see an item only through its fields (genres, release
decade). Items with identical fields get identical scores from any such network, whatever its weights and
however it adapts, and the full-ranking metrics break ties pessimistically. This script measures that ceiling
on the implicit user-cold split (the protocol of the cold-start tables), with no training:

- the number of feature classes (distinct item field rows, exactly what the networks receive) and how many
  candidate items share the class of a test positive;
- ItemPop (meta-train counts) against class-ItemPop (every item scored by the mean count of its class: the
  best non-personalised score a feature-only network can express), under the same evaluation.

Run: .venv/bin/python studies/feature_ceiling.py [--datasets ml-100k ml-1m] [--seeds 0 1 2]
Writes docs/results/coldstart/feature_ceiling.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from metarec.evaluation.evaluate import evaluate_ranking
from metarec.io import code_version, write_json, write_text
from metarec.learners.base import Adapted
from metarec.pipeline import make_config, prepare
from metarec.report import markdown_table


class _StaticScorer:
    """A non-personalised scorer with the learner interface ``evaluate_ranking`` needs."""

    def __init__(self, ctx, item_scores: torch.Tensor):
        self.ctx, self.item_scores = ctx, item_scores  # (n_items,)

    def eval(self):
        return self

    def adapt(self, support) -> Adapted:
        B = len(support)
        return Adapted(support.owner, lambda u, i: self.item_scores[i],
                       lambda items: self.item_scores[items][None, :].expand(B, len(items)))


def feature_classes(ctx) -> np.ndarray:
    """(n_items,) class index: items with the same field codes and genre vector share a class."""
    rows = torch.cat([ctx.item_codes.float(), ctx.item_genre], dim=1).numpy()  # (n_items, F_i + G)
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)


def measure(dataset: str, seed: int) -> dict:
    run, _ = make_config("itempop", dataset, "user-cold", seed, "implicit", {})
    prep = prepare(run)
    cls = feature_classes(prep.ctx)
    n = prep.ctx.n_items
    counts = np.bincount(prep.split.train["item"].to_numpy(), minlength=n).astype(np.float64)  # (n_items,)
    class_mean = np.bincount(cls, weights=counts) / np.bincount(cls)  # (n_classes,)
    cand = np.asarray(prep.candidates)
    cand_classes = np.bincount(cls[cand], minlength=cls.max() + 1)  # candidates per class
    pos = np.concatenate([t.q_item[t.q_rating > 0] for t in prep.test])
    out = {"dataset": dataset, "seed": seed, "items": n, "candidates": len(cand),
           "feature_classes": int(len(np.unique(cls[cand]))),
           "tied_candidates_per_test_positive": float(cand_classes[cls[pos]].mean() - 1),
           "test_tasks": len(prep.test)}
    for name, scores in (("itempop", counts), ("class-itempop", class_mean[cls])):
        res = evaluate_ranking(_StaticScorer(prep.ctx, torch.as_tensor(scores, dtype=torch.float32)),
                               prep.test, prep.candidates)
        out[name] = {k: res[k] for k in ("recall@10", "recall@20", "ndcg@10")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", default="docs/results/coldstart/feature_ceiling")
    args = ap.parse_args()
    cmd = (f".venv/bin/python studies/feature_ceiling.py --datasets {' '.join(args.datasets)} "
           f"--seeds {' '.join(map(str, args.seeds))}")
    rows, records = [], []
    for d in args.datasets:
        for s in args.seeds:
            r = measure(d, s)
            records.append(r)
            rows.append([d, s, r["candidates"], r["feature_classes"], r["tied_candidates_per_test_positive"],
                         r["itempop"]["recall@10"], r["class-itempop"]["recall@10"],
                         r["itempop"]["ndcg@10"], r["class-itempop"]["ndcg@10"]])
            print(f"{d} seed {s}: {r['feature_classes']} classes over {r['candidates']} candidates, "
                  f"{r['tied_candidates_per_test_positive']:.1f} tied per positive; recall@10 itempop "
                  f"{r['itempop']['recall@10']:.4f}, class-itempop {r['class-itempop']['recall@10']:.4f}")
    header = ["dataset", "seed", "candidates", "feature classes", "candidates tied with a test positive",
              "itempop recall@10", "class-itempop recall@10", "itempop ndcg@10", "class-itempop ndcg@10"]
    text = ["# Feature-only ceiling, user-cold, implicit view", "", f"Command: `{cmd}` (code: {code_version()})", "",
            "A network that sees items only through their fields scores items of one feature class alike; "
            "ties rank pessimistically. class-itempop scores each item by the mean meta-train count of its "
            "class: the best non-personalised ranking such a network can express.", "",
            markdown_table(header, rows), ""]
    out = Path(args.out)
    write_json(out.with_suffix(".json"), {"command": cmd, "code": code_version(), "results": records})
    write_text(out.with_suffix(".md"), "\n".join(text))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
