"""Does s²Meta's scenario-specific learning help? Test Recall of trained s²Meta (Complete) models along their
learning process on every meta-test scenario, against the same models with no step (the meta-learned
initialisation ω_R alone), and FT's selected fine-tuning.

Run (after `bash docs/results/s2meta/run_all.sh DATASET`, which saves the models under runs/s2meta/DATASET/):
``OMP_NUM_THREADS=1 .venv/bin/python studies/s2meta_steps.py --datasets ml-100k ml-1m [--label Complete]``
Writes docs/results/s2meta/adaptation_steps.{json,md}.

For each seed's model and each meta-test scenario, the learning process is replayed exactly as at meta-test
(``learning_trace``: same controller, same stop policy) and Recall@10/20 of the scenario's test users is measured
at steps 0, 1, 2, 5, 10, 20 and at the step where the stop policy ended. Means over scenarios, as in the tables.
No selection happens here: this reads test numbers of models that were selected on meta-valid, to explain them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from metarec.io import code_version, write_json, write_text
from metarec.report import markdown_table
from metarec.scenario_run import _Fixed, load_run, prepare
from metarec.scenarios import evaluate_scenarios
from metarec.tasks import collate

STEPS = (0, 1, 2, 5, 10, 20)


def scenario_curve(learner, task, train_codes) -> dict:
    """Recall@10/20 at the STEPS (those the process reached) and at its last step, for one scenario."""
    tr = learner.learning_trace(collate([task]))
    thetas, last = tr["thetas"], int(tr["steps"][0])
    at = {s: min(s, last) for s in STEPS}  # a scenario that stopped earlier keeps its last parameters
    at["stop"] = last
    out = {}
    for key, s in at.items():
        m = evaluate_scenarios(_Fixed(learner, thetas[s]), [task], train_codes)
        out[str(key)] = {"recall@10": m["recall@10"], "recall@20": m["recall@20"]}
    return {"scenario": task.extra["scenario"], "steps": last, "at": out}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--label", default="Complete", help="the saved s2meta run label under runs/s2meta/DATASET/")
    ap.add_argument("--runs", default="runs/s2meta")
    ap.add_argument("--out", default="docs/results/s2meta/adaptation_steps")
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    version = code_version()
    rows, blob = [], {"command": "python studies/s2meta_steps.py " + " ".join(argv), "code": version,
                      "runs": []}
    for d in args.datasets:
        records = {}
        for s in args.seeds:
            rec = Path(f"docs/results/s2meta/runs/{d}_s{s}.json")
            if rec.is_file():
                records.update({(r["label"], r["seed"]): r for r in json.loads(rec.read_text())["results"]})
        for s in args.seeds:
            learner, run = load_run(Path(args.runs) / d / f"{args.label}-s{s}")
            prep = prepare(run)
            learner.eval()
            per = [scenario_curve(learner, t, prep.data.train_codes) for t in prep.data.test]
            mean = {}
            for key in ["0", "1", "2", "5", "10", "20", "stop"]:
                mean[key] = float(np.mean([p["at"][key]["recall@20"] for p in per]))
            best_fixed = max((k for k in mean if k != "stop"), key=lambda k: mean[k])
            ft = records.get(("FT", s), {})
            ft_steps = None
            if ft.get("adapt_selection"):
                b = max(ft["adapt_selection"], key=lambda x: x["recall@20"])
                ft_steps = f"{b['steps']} x {b['lr']:g}"
            train_items = np.unique(np.concatenate([t.extra["items"] for t in prep.data.train]))
            for p, t in zip(per, prep.data.test, strict=True):  # items the pooled meta-train data covers
                p["overlap"] = float(np.isin(t.extra["items"], train_items).mean())
                for lab in (args.label, "FT"):
                    p[f"{lab}_recorded_recall@20"] = records.get((lab, s), {}).get("per_scenario", {}).get(
                        p["scenario"], {}).get("recall@20")
            blob["runs"].append({"dataset": d, "seed": s, "mean_recall@20": mean, "per_scenario": per,
                                 "ft_recall@20": ft.get("test", {}).get("recall@20"), "ft_selected": ft_steps,
                                 "recorded_recall@20": records.get((args.label, s), {}).get("test", {})
                                 .get("recall@20")})
            rows.append([d, s, len(per), f"{np.mean([p['steps'] for p in per]):.1f}",
                         *(f"{mean[k]:.4f}" for k in ("0", "1", "5", "20", "stop")),
                         f"{blob['runs'][-1]['recorded_recall@20'] or float('nan'):.4f}",
                         f"{mean['stop'] - mean['0']:+.4f}", best_fixed,
                         f"{ft['test']['recall@20']:.4f}" if ft else "", ft_steps or ""])
            print(rows[-1], flush=True)
    table = markdown_table(["dataset", "seed", "scenarios", "steps taken", "R@20 step 0 (ω_R)", "step 1", "step 5",
                            "step 20", "at stop (Complete)", "recorded", "stop − step 0", "best fixed step", "FT R@20",
                            "FT steps x lr (meta-valid)"], rows)
    overlap_rows = []
    for d in args.datasets:
        pts = [(p["overlap"], p[f"{args.label}_recorded_recall@20"] - p["FT_recorded_recall@20"])
               for r in blob["runs"] if r["dataset"] == d for p in r["per_scenario"]
               if p["FT_recorded_recall@20"] is not None and p[f"{args.label}_recorded_recall@20"] is not None]
        if len(pts) < 3:
            continue
        x, y = np.array(pts).T
        med = np.median(x)
        overlap_rows.append([d, len(x), f"{np.corrcoef(x, y)[0, 1]:+.2f}", f"{med:.2f}",
                             f"{y[x <= med].mean():+.4f}", f"{y[x > med].mean():+.4f}"])
    overlap = markdown_table(["dataset", "meta-test scenarios (all seeds)", "corr(overlap, Complete − FT)",
                              "median overlap", "Complete − FT, overlap <= median", "overlap > median"],
                             overlap_rows)
    out = Path(args.out)
    write_text(out.with_suffix(".md"),
               "# s²Meta: test Recall@20 along the learning process\n\n"
               f"Command: `{blob['command']}` (code: {version})\n\n"
               "Each seed's trained Complete model (selected on meta-valid) replays its meta-test learning process "
               "per scenario; Recall@20 (mean over the scenarios of the mean over their test users) is measured "
               "with the parameters after 0, 1, 5 and 20 steps (or at the stop, for a scenario that stopped "
               "earlier) and at the step where the stop policy ended; 'recorded': the test Recall@20 of the "
               "table (the stop policy samples, so its replay may stop elsewhere). FT's row: its test "
               "Recall@20 and the fine-tuning it selected on meta-valid (0 steps = the pooled network as it "
               "is). 'best fixed step' reads test numbers and selects nothing.\n\n" + table + "\n\n"
               "## Where FT wins: item overlap with the meta-train scenarios\n\n"
               "Genre scenarios overlap: a film of a meta-test scenario can also belong to meta-train scenarios, "
               "on whose interactions FT's network is trained (pooled) and s²Meta meta-trains (episodes). "
               "'overlap' = the share of a meta-test scenario's items that are in some meta-train scenario; "
               "Complete − FT = the difference of their recorded test Recall@20 on that scenario.\n\n"
               + overlap + "\n")
    write_json(out.with_suffix(".json"), blob)
    print(table)


if __name__ == "__main__":
    main()
