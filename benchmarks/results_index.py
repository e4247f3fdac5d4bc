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


STATES = ("user-cold", "warm", "item-cold", "user-item-cold")
META = ("metafold",)  # the meta-learners of the tuned tables (the networks are meta-learners too, see below)


def _summary(res: list, metric: str, part: str = "test") -> dict:
    """label -> (mean, std, per-seed values) of ``metric`` on meta-test (``part="valid"``: meta-valid)."""
    out = {}
    for label in dict.fromkeys(r.get("label", r["learner"]) for r in res):
        v = np.array([r[part][metric] for r in res if r.get("label", r["learner"]) == label])
        out[label] = (v.mean(), v.std(), v)
    return out


def tuned_section(root: Path) -> list[str]:
    """Issue 19's tables (docs/results/tuned/): the best learner per dataset, state and view, then each table."""
    tdir = root / "tuned"
    if not tdir.is_dir():
        return []
    rows, tables = [], []
    for d in ("ml-1m", "ml-100k"):
        for view, metric, better in (("explicit", "rmse", min), ("implicit", "recall@10", max)):
            for p in STATES:
                path = tdir / f"{d}_{p}_{view}.json"
                if not path.is_file():
                    continue
                data = json.loads(path.read_text())
                res = data["results"]
                summ = _summary(res, metric)
                best = better(summ, key=lambda k: summ[k][0])
                sign = 1 if better is max else -1
                base = {k: v for k, v in summ.items() if k not in META}
                runner = better(base, key=lambda k: base[k][0]) if best in META else None
                wins = ""
                if runner is not None:
                    n = int(sum(sign * (a - b) > 0 for a, b in zip(summ[best][2], base[runner][2], strict=True)))
                    wins = f" (beats {runner} {summ[runner][0]:.4f} on {n} of {len(summ[best][2])} seeds)"
                rows.append([d, p, view, metric, f"{best} {summ[best][0]:.4f} ± {summ[best][1]:.4f}{wins}"]
                            + [f"{summ[k][0]:.4f}" if k in summ else "-" for k in ("bias", "itempop", "foldin",
                                                                                   "metafold", "ptft", "melu")])
                metrics = EXPLICIT if view == "explicit" else IMPLICIT
                per_metric = [_summary(res, m) for m in metrics]
                valid = _summary(res, metrics[0], part="valid")
                trows = [[label, *(f"{s[label][0]:.4f} ± {s[label][1]:.4f}" for s in per_metric),
                          f"{valid[label][0]:.4f}", len(valid[label][2])] for label in summ]
                rel = path.relative_to(root).with_suffix(".md").as_posix()
                tables += [f"### {d}, {p}, {view} ([{rel}]({rel}))", "",
                           f"{res[0]['test']['tasks']} meta-test tasks. Code: {data.get('code', '?')}.", "",
                           markdown_table(["learner", *metrics, f"valid {metrics[0]}", "seeds"], trows), ""]
    head = ["## Which learner for which state (tuned presets, 3 seeds)", "",
            "The tables of issue 19: each learner with its tuned working default (`metarec tune`, 30 trials on "
            "user-cold seed 0 of each dataset and view, meta-valid only; see [tuning/](tuning/README.md)), the "
            "same presets reused in every state and seed; `bash docs/results/run_tuned.sh` reruns them. Findings "
            "and the targets: [tuned/README.md](tuned/README.md). Best learner by the mean of meta-test "
            "RMSE (explicit) or Recall@10 (implicit, full ranking); the other columns are the means of the same "
            "metric.", "",
            markdown_table(["dataset", "state", "view", "metric", "best (mean ± std)", "bias", "itempop",
                            "foldin", "metafold", "ptft", "melu"], rows), ""]
    return head + tables + ["## Earlier tables (paper presets and hand-picked rates)", ""]


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
             "at HEAD differs slightly from an older record. The four-state ml-1m implicit tables exist for ItemPop, "
             "foldin and metafold (the tuned section); the networks' are not produced (their user-cold rows, "
             "Recall@10 at most 0.091, are in coldstart/).", "",
             "Other protocols: the item warm-up tables of MetaEmb and MWUF are in [warmup/](warmup/), "
             "s²Meta's scenario tables in [s2meta/](s2meta/), MML's sequential tables in [mml/](mml/).", "",
             "## Query-only nDCG: the gains, and what the reference code computes",
             "",
             "`ndcg@k` in the explicit tables is metarec's query-only nDCG with the **linear** gain: a task's"
             " query items ordered by predicted rating, gain = true rating, discount 1/log2(i+1), IDCG from "
             "the items sorted by true rating. Ties in the prediction are broken pessimistically (the lower "
             "gain first, whatever the items' positions), padding is ignored, and a query shorter than k uses"
             " all its items. `evaluate_rating(..., ndcg_gain=...)` also offers `exp` (gain 2^r - 1, reported"
             " as `ndcg_exp@k`) and `binary_topk` (`ndcg_binary_topk@k`); values under different gains are "
             "not comparable. The code used to call the linear gain the convention of MeLU and "
             "RecBole-MetaRec; their code says otherwise:",
             "- MeLU (hoyeoplee/MeLU): the official code computes no nDCG (`MeLU.py`, `model_training.py`, "
             "`main.py` and `evidence_candidate.py` train the model and select evidence candidates; nothing "
             "ranks the query items).",
             "- RecBole-MetaRec (nuster1128/RecBole-MetaRec, `recbole_metarec/MetaCollector.py` "
             "`eval_collect`, called per task by `recbole_metarec/MetaTrainer.py`; the metric is RecBole's "
             "`NDCG` in `recbole/evaluator/metrics.py`): binary. The M = max(topk) query items with the "
             "highest true rating (`torch.topk` of the label) are the positives, so pos_len = M; DCG@k = sum "
             "over the first k items by `torch.topk` of the prediction of [positive] / log2(i+1), IDCG@k = "
             "sum_{i <= min(M, k)} 1/log2(i+1). Ties, in the prediction and among true ratings at the M-th "
             "place, are whatever `torch.topk` returns; a query with fewer than M items makes `torch.topk` "
             "fail; with several k the positives are the top max(topk) for every k. Its MeLU config "
             "(`recbole_metarec/model/MeLU/MeLU.yaml`): `metrics: ['NDCG']`, `topk: 5`, 10 query items.",
             "- TaNP (IIEdm/TaNP, `TaNP/utils/scorer.py` `nDCG`/`IDCG`, at k = 5, 7, 10 from `TaNP/eval.py`):"
             " gain 2^r - 1, discount 1/log2(i+1), IDCG from the true ratings sorted descending; the order is"
             " `torch.sort` of the prediction (tie order unspecified); k beyond the query raises IndexError.",
             "- MAMO (dongmanqing/Code-for-MAMO, `utils.py` `ndcg`, k = 3): gain 2^r - 1 (labels stored as r "
             "- 1, gain 2^(y+1) - 1); the prediction is the argmax rating class, so ties are frequent (broken"
             " by `torch.sort`), and the true ratings of the predicted top k are re-sorted before the DCG: "
             "only which items reach the top k counts, not their order.",
             "",
             "So `binary_topk` is RecBole-MetaRec's NDCG@k for a single k (its MeLU config), except that true"
             " ratings tied at the k-th place share the places left (c tied items for s places: s/c each, the"
             " mean over the choices `torch.topk` could make) instead of an arbitrary pick; a ranking perfect"
             " by true rating can then score below 1, as there. `exp` is TaNP's nDCG (MAMO's up to its "
             "re-sorting of the top k). `linear` is metarec's own and stays the default, so the tables below "
             "keep their values.", ""]
    parts += tuned_section(root)
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
