"""Figure 2 of MML (5.5): Recall@10 and Recall@20 of MML and PT-FT against the fraction of training data used.

Run (ml-100k, what docs/results/mml/ holds):
``OMP_NUM_THREADS=1 .venv/bin/python studies/mml_curve.py --dataset ml-100k --max-len 15 --fracs 0.25 0.5
--methods mml ptft-mml --seeds 0 --out docs/results/mml [--reuse RESULTS.json ...] [key=value ...]``
(docs/results/mml/README.md has the exact command and overrides used).

The protocol (T, meta-valid, meta-test) is fixed; only the meta-train tasks are subsampled (a seeded share,
``SeqData.subsample_train``) and every method is retrained on them (all three MML stages), selected on the
same meta-valid users and tested once on the same new users. ``--reuse`` takes the fraction-1.0 points from a
``metarec seqrec`` results JSON of the same protocol instead of retraining. Results are written after every run
(``curve_<dataset>.json``; finished runs are skipped when the script is started again) and plotted in
``curve_<dataset>.png`` (mean over seeds, error bars = std). Trailing ``key=value`` pairs are overrides for
every run (``train.epochs=3``, ``model.inner.lr=1e-2``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from metarec.io import code_version, record_code, write_json
from metarec.seqrec.command import run_method


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--fracs", nargs="+", type=float, default=[0.2, 0.4, 0.6, 0.8, 1.0])
    ap.add_argument("--methods", nargs="+", default=["mml", "ptft-mml"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", default="docs/results/mml")
    ap.add_argument("--max-len", type=int, default=50, help="the protocol's max_len (meta-train window length)")
    ap.add_argument("--reuse", nargs="+", default=[],
                    help="`metarec seqrec` results JSONs (a merged table or per-job records) whose runs give the "
                         "fraction-1.0 points")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = ap.parse_args(argv)
    over = dict(o.split("=", 1) for o in args.overrides)

    from metarec.data.registry import load_dataset
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    out = Path(args.out)
    path = out / f"curve_{args.dataset}.json"
    record = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    record.update(command="python studies/mml_curve.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  dataset=args.dataset, max_len=args.max_len, fracs=args.fracs, methods=args.methods,
                  seeds=args.seeds, overrides=over)
    done = {(r["method"], r["frac"], r["seed"]) for r in record["runs"]}
    for src in args.reuse:
        for r in json.loads(Path(src).read_text())["results"]:
            key = (r["method"], 1.0, r["seed"])
            if r["method"] in args.methods and r["seed"] in args.seeds and key not in done:
                record["runs"].append({"method": r["method"], "frac": 1.0, "seed": r["seed"], "test": r["test"],
                                       "train_seconds": r["train_seconds"], "reused": src,
                                       "code": record_code(r)})
                done.add(key)
    code = code_version()  # taken at the start, like every record's
    data = make_seq_protocol(load_dataset(args.dataset), SeqProtocolConfig(max_len=args.max_len))
    for frac in args.fracs:
        for seed in args.seeds:
            sub = data.subsample_train(frac, seed)
            for name in args.methods:
                if (name, frac, seed) in done:
                    continue
                t0 = time.perf_counter()
                res = run_method(name, sub, seed, None, not args.quiet, over, {})
                record["runs"].append({"method": name, "frac": frac, "seed": seed, "train_tasks": len(sub.train),
                                       "test": res["test"], "valid": res["valid"],
                                       "train_seconds": time.perf_counter() - t0, "code": code})
                done.add((name, frac, seed))
                write_json(path, record)
                print(f"{name} frac {frac} seed {seed}: recall@10 {res['test']['recall@10']:.4f} "
                      f"recall@20 {res['test']['recall@20']:.4f}", flush=True)
    write_json(path, record)
    plot(record, out / f"curve_{args.dataset}.png")
    print(f"wrote {path} and {out / f'curve_{args.dataset}.png'}")


def plot(record: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metarec.io import atomic_path

    labels = {"mml": "MML", "ptft-mml": "PT-FT (MML network)", "ptft": "PT-FT (SASRec)"}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric in zip(axes, ("recall@10", "recall@20"), strict=True):
        for name in record["methods"]:
            runs = [r for r in record["runs"] if r["method"] == name]
            fracs = sorted({r["frac"] for r in runs})
            mean = [np.mean([r["test"][metric] for r in runs if r["frac"] == f]) for f in fracs]
            std = [np.std([r["test"][metric] for r in runs if r["frac"] == f]) for f in fracs]
            ax.errorbar(fracs, mean, yerr=std, marker="o", capsize=3, label=labels.get(name, name))
        ax.set_xlabel("fraction of the meta-train tasks used")
        ax.set_ylabel(metric.replace("recall", "Recall"))
        ax.grid(alpha=0.3)
    axes[0].legend()
    seeds = ", ".join(map(str, record["seeds"]))
    fig.suptitle(f"{record['dataset']}: new users, full ranking (seeds {seeds})")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
