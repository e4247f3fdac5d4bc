"""``metarec warmup``: the item warm-up protocol (cold, warm-a, warm-b, warm-c) for several methods and seeds.

Writes OUT.md (mean ± std over seeds of AUC and log-loss per phase and method) and OUT.json (every number,
the split and the full configuration), atomically.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from tqdm.auto import tqdm

from metarec.errors import MetarecError


def cmd_warmup(args, extra) -> None:
    from metarec.commands import run_overrides
    from metarec.config import apply_overrides
    from metarec.ctr.warmup import METHODS, PHASES, WarmupRun, dataset_defaults, run_seed
    from metarec.data.registry import load_dataset
    from metarec.io import write_json, write_text

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise MetarecError(f"unknown warm-up method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    if len(set(args.methods)) != len(args.methods) or len(set(args.seeds)) != len(args.seeds):
        raise MetarecError("--methods and --seeds must not repeat an entry")
    run = apply_overrides(WarmupRun(warmup=dataset_defaults(args.dataset)), run_overrides(args, extra))
    ds = load_dataset(args.dataset)
    cmdline = "metarec " + " ".join(args.argv)
    bar = tqdm(total=len(args.seeds) * (1 + len(args.methods)), desc="warm-up", disable=args.quiet)
    results, runs = [], []
    t0 = time.perf_counter()
    for seed in args.seeds:
        def step(what, seed=seed):
            bar.set_postfix_str(f"seed {seed}: {what} done")
            bar.update(1)

        res, info = run_seed(ds, run, args.methods, seed, progress=not args.quiet, on_step=step)
        for r in res:
            tqdm.write(f"seed {seed} {r['method']}: " + "  ".join(
                f"{p} auc {r['phases'][p]['auc']:.4f} ll {r['phases'][p]['logloss']:.4f}" for p in PHASES))
        results += res
        runs.append({"seed": seed, **info})
    bar.close()
    seconds = time.perf_counter() - t0
    tables = warmup_tables(results, args.methods)
    print(tables)
    split = runs[0]["split"]
    if args.out:
        stem = Path(args.out)
        w = run.warmup
        md = (f"# Item warm-up on {args.dataset}\n\nCommand: `{cmdline}`\n\n"
              f"New items' test interactions pooled; mean ± std over seeds {', '.join(map(str, args.seeds))}. "
              f"Labels: rating >= {w.threshold:g}. Old items: > {w.old_min} interactions ({split['old_items']}); "
              f"new items: {3 * w.k + w.min_test}-{w.old_min} ({split['new_items']}); warm-up batches of k = "
              f"{w.k} per item; update: {w.update.steps} gradient step(s) of rate {w.update.lr:g} on the new "
              f"items' ID parameters, backbone (DeepFM) frozen.\n\n{tables}\n")
        write_text(stem.with_suffix(".md"), md)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        write_json(stem.with_suffix(".json"), {"command": cmdline, "dataset": args.dataset, "seconds": seconds,
                                               "peak_rss_mb": peak_mb, "runs": runs, "results": results})
        print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")


def warmup_tables(results: list[dict], methods: list[str]) -> str:
    """Two markdown tables (AUC, log-loss): a row per method, a column per phase, mean ± std over seeds."""
    from metarec.ctr.warmup import PHASES
    from metarec.report import markdown_table, mean_std_rows

    out = []
    for metric, title in (("auc", "AUC (higher is better)"), ("logloss", "log-loss (lower is better)")):
        rows = [cells for cells, _ in mean_std_rows(results, lambda r: r["method"], PHASES,
                                                    lambda r, p, metric=metric: r["phases"][p][metric], methods)]
        out.append(f"{title}\n\n" + markdown_table(["method", "seeds", *PHASES], rows))
    return "\n\n".join(out)


def register(sub) -> None:
    s = sub.add_parser("warmup", help="item-ID embedding warm-up (base, mean, metaemb, mwuf): AUC and log-loss "
                       "in the cold phase and after warm-a, -b, -c", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--dataset", default="ml-100k", help="a built-in dataset or a directory of RecBole atomic files")
    s.add_argument("--methods", nargs="+", default=["base", "mean", "metaemb", "mwuf"])
    s.add_argument("--seeds", nargs="+", type=int, default=[0])
    s.add_argument("--out", help="write OUT.md and OUT.json")
    s.add_argument("--config", help="a YAML file of overrides (sections warmup, backbone, train, metaemb, mwuf)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_warmup, takes_overrides=True)
