"""Does MML's meta-test adaptation matter, does its learned fusion, and does its stage 1 converge? For saved
MML-family models: meta-valid and test NDCG@10 / Recall@10 with the local update as trained (5 steps at 1e-3), with
no local step, with larger local steps, and (models with a trained fusion layer) with the average of the learners'
normalised scores instead of the fusion layer (No-Fusion's rule); plus each model's stage-1 history (training BPR
loss and meta-valid NDCG@10 per meta-epoch).

Run (after `bash docs/results/mml/run_all.sh ml-1m` and the 30-epoch mml-main run of README.md):
``OMP_NUM_THREADS=1 .venv/bin/python studies/mml_adaptation.py --dataset ml-1m --max-len 15
--runs runs/seqrec/ml-1m/mml-s0-of3de38b1 runs/seqrec/ml-1m/mml-main-s0-of3de38b1 ...``
Writes docs/results/mml/adaptation_<dataset>.{json,md} (``--out`` folder, ``--name`` file stem).

Nothing is selected here: the models were selected on meta-valid when trained; this reads their valid and test
numbers under other local updates to explain the tables. The (5, 1e-3) row reproduces the recorded numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from metarec.io import code_version, write_json, write_text
from metarec.report import markdown_table

SETTINGS = ((5, 1e-3, "as trained"), (0, 1e-3, "as trained"), (5, 1e-2, "as trained"), (20, 1e-2, "as trained"),
            (5, 1e-3, "average"))  # (steps, lr, fusion); the first is the trained setting


def stage1_history(run_dir: Path) -> list[dict]:
    path = run_dir / "checkpoint-stage1.pt"
    if not path.is_file():
        return []
    state = torch.load(path, map_location="cpu", weights_only=True)["state"]
    return [{"epoch": h["epoch"], "train_loss": round(h["train_loss"], 4), "valid_ndcg@10": round(h["ndcg@10"], 4)}
            for h in state["history"]]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--max-len", type=int, default=15)
    ap.add_argument("--runs", nargs="+", required=True, help="run folders holding model.pt (and checkpoint-stage1.pt)")
    ap.add_argument("--out", default="docs/results/mml")
    ap.add_argument("--name", help="file stem under --out (default adaptation_DATASET)")
    args = ap.parse_args(argv)
    missing = [r for r in args.runs if not (Path(r) / "model.pt").is_file()]
    if missing:
        sys.exit(f"error: no model.pt in {', '.join(missing)} (run folders are under runs/seqrec/DATASET/)")

    from metarec.data.registry import load_dataset
    from metarec.learners.base import load_learner
    from metarec.seqrec.evaluate import evaluate_seq
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    data = make_seq_protocol(load_dataset(args.dataset), SeqProtocolConfig(max_len=args.max_len))
    record = {"command": "python studies/mml_adaptation.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "code": code_version(), "dataset": args.dataset, "max_len": args.max_len, "models": []}
    rows = []
    for run in map(Path, args.runs):
        entry = {"run": str(run), "history": stage1_history(run), "settings": []}
        for steps, lr, fusion in SETTINGS:
            method, _ = load_learner(run / "model.pt")
            if fusion == "average":
                if not bool(method.ready[1]):
                    continue  # no fusion layer to replace (mml-nofusion, single learners)
                method.ready[1] = False  # the learners' normalised scores averaged, as No-Fusion ranks
            method.config = dataclasses.replace(method.config,
                                                inner=dataclasses.replace(method.config.inner, steps=steps, lr=lr))
            res = {"steps": steps, "lr": lr, "fusion": fusion}
            for part in ("valid", "test"):
                m = evaluate_seq(method, getattr(data, part), data.n_items)
                res[part] = {k: m[k] for k in ("ndcg@10", "recall@10")}
            entry["settings"].append(res)
            rows.append([run.name, steps, lr, fusion, f"{res['valid']['ndcg@10']:.4f}", f"{res['test']['ndcg@10']:.4f}",
                         f"{res['test']['recall@10']:.4f}"])
            print(rows[-1], flush=True)
        entry["method"] = method.name
        record["models"].append(entry)
    out = str(Path(args.out) / (args.name or f"adaptation_{args.dataset}"))
    write_json(Path(out + ".json"), record)
    hist = [[e["run"].rsplit("/", 1)[-1], h["epoch"], h["train_loss"], h["valid_ndcg@10"]]
            for e in record["models"] for h in e["history"]]
    write_text(Path(out + ".md"), "\n".join([
        f"# MML's local update and stage-1 convergence on {args.dataset}", "",
        f"Command: `{record['command']}`", "", f"Code: {record['code']}", "",
        "Meta-valid / test NDCG@10 and test Recall@10 of saved models (selected on meta-valid when trained) under "
        "other local updates or fusion rules at meta-test; (5, 0.001, as trained) is the trained setting and "
        "reproduces the recorded numbers. `average`: the fusion layer replaced by the average of the learners' "
        "normalised scores (models with a trained fusion layer only).", "",
        markdown_table(["run", "steps", "lr", "fusion", "valid ndcg@10", "test ndcg@10", "test recall@10"], rows), "",
        "Stage-1 history per epoch: training BPR loss (MAML variants: of the query prefix under the adapted "
        "weights, summed over the group's learners; ptft-mml: of every prefix) and meta-valid NDCG@10:", "",
        markdown_table(["run", "epoch", "train loss", "valid ndcg@10"], hist), ""]))
    print(f"wrote {out}.{{json,md}}")


if __name__ == "__main__":
    main()
