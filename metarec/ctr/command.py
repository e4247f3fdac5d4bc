"""``metarec warmup``: the item warm-up protocol (cold, warm-a, warm-b, warm-c) for several methods and seeds.

Writes OUT.md (mean ± std over seeds of AUC and log-loss per phase and method) and OUT.json (every number,
the split and the full configuration), atomically.
"""

from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from metarec.errors import MetarecError


def cmd_warmup(args, extra) -> None:
    from metarec.commands import run_overrides
    from metarec.config import apply_overrides
    from metarec.ctr.warmup import METHODS, WarmupRun, dataset_defaults, run_seed
    from metarec.data.registry import load_dataset
    from metarec.experiment import Experiment, compare

    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise MetarecError(f"unknown warm-up method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    if len(set(args.methods)) != len(args.methods) or len(set(args.seeds)) != len(args.seeds):
        raise MetarecError("--methods and --seeds must not repeat an entry")
    run = apply_overrides(WarmupRun(warmup=dataset_defaults(args.dataset)), run_overrides(args, extra))
    ds = load_dataset(args.dataset)
    bar = tqdm(total=len(args.seeds) * (1 + len(args.methods)), desc="warm-up", disable=args.quiet)
    runs: list = []  # per seed: its split, backbone and configuration

    def records(seed: int, skip: set[str]):
        def step(what):
            bar.set_postfix_str(f"seed {seed}: {what} done")
            bar.update(1)

        methods = [m for m in args.methods if m not in skip]
        if not methods:
            return []
        res, info = run_seed(ds, run, methods, seed, progress=not args.quiet, on_step=step)
        runs.append({"seed": seed, **info})
        return res

    try:
        compare(Experiment("warmup", "warmup", args.dataset, records, runs=runs), args.seeds, args.argv, args.out)
    finally:
        bar.close()


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
