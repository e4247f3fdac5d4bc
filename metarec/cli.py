"""The ``metarec`` command. Every sub-command has ``--help``; bad input gives one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metarec.errors import MetarecError


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="a built-in dataset (see `metarec datasets`), a directory of RecBole "
                   "atomic files, or a CSV/parquet log with --user-col and --item-col")
    p.add_argument("--user-col", help="log files: the user id column")
    p.add_argument("--item-col", help="log files: the item id column")
    p.add_argument("--rating-col", help="log files: the rating/label column (default: every row is a positive)")
    p.add_argument("--time-col", help="log files: the timestamp column (default: row order)")
    p.add_argument("--dedupe", action="store_true", help="keep the latest of duplicate (user, item) rows "
                   "instead of stopping")
    p.add_argument("--implicit", action="store_true", help="implicit view: positives only, rating = 1")
    p.add_argument("--threshold", type=float, default=None,
                   help="implicit view: ratings >= this are positives (default 4, as `train --view implicit`)")
    p.add_argument("--rating-range", type=float, nargs=2, metavar=("LO", "HI"),
                   help="refuse ratings outside [LO, HI] (ratings must always be finite)")


def _load(args):
    from pathlib import Path

    from metarec.data.registry import DATASETS, load_atomic, load_dataset, load_log_dataset
    from metarec.data.types import to_implicit

    if args.user_col or args.item_col:
        if not (args.user_col and args.item_col):
            raise MetarecError("a log file needs both --user-col and --item-col")
        ds = load_log_dataset(args.dataset, args.user_col, args.item_col, args.rating_col, args.time_col,
                              dedupe=args.dedupe, rating_range=args.rating_range)
    elif args.dataset in DATASETS:
        ds = load_dataset(args.dataset)
        if args.rating_range:
            lo, hi = args.rating_range
            r = ds.inter["rating"]
            if ((r < lo) | (r > hi)).any():
                raise MetarecError(f"{args.dataset}: {int(((r < lo) | (r > hi)).sum())} rating(s) outside "
                                   f"--rating-range {lo:g} {hi:g}")
    elif Path(args.dataset).exists():
        if Path(args.dataset).suffix in (".csv", ".tsv", ".parquet", ".txt"):
            raise MetarecError(f"{args.dataset}: name its columns with --user-col and --item-col "
                               "(and --rating-col, --time-col)")
        ds = load_atomic(Path(args.dataset), dedupe=args.dedupe, rating_range=args.rating_range)
    else:
        ds = load_dataset(args.dataset)  # raises the unknown-dataset error
    if args.implicit or args.threshold is not None:
        threshold = 4.0 if args.threshold is None else args.threshold  # as `train --view implicit` (threshold 4)
        ds = to_implicit(ds, threshold)
        if ds.n_inter == 0:
            raise MetarecError(f"the implicit view with threshold {threshold} keeps no interaction")
    return ds


def cmd_datasets(args) -> None:
    import json

    from metarec.data.registry import DATASETS, cache_dir, cache_state
    from metarec.report import markdown_table

    rows = []
    for name, spec in DATASETS.items():
        cached = cache_state(cache_dir(name))
        if cached == "ok":
            meta = json.loads((cache_dir(name) / "meta.json").read_text())
            size, state = (meta["users"], meta["items"], meta["interactions"]), "prepared"
        elif cached.startswith("damaged"):
            size, state = spec.expected, f"cache {cached} (the next use rebuilds it)"
        else:
            size, state = spec.expected, "not prepared (sizes as published)"
        rows.append([name, *size, spec.source, state, spec.description])
    print(markdown_table(["dataset", "users", "items", "interactions", "source", "state", "about"], rows))


def cmd_prepare(args) -> None:
    from metarec.data.registry import DATASETS, cache_dir, load_dataset
    from metarec.report import markdown_table

    if args.user_col or args.item_col:  # a log of the user's: read, validate, index once, cache under a name
        from metarec.data.registry import load_log_dataset, save_dataset

        if not (args.user_col and args.item_col):
            raise MetarecError("a log file needs both --user-col and --item-col")
        name = args.name or Path(args.dataset).stem
        if name in DATASETS or not name or "/" in name or name.startswith("."):
            raise MetarecError(f"--name {name!r}: choose a plain name that is not a built-in dataset's")
        ds = load_log_dataset(args.dataset, args.user_col, args.item_col, args.rating_col, args.time_col,
                              dedupe=args.dedupe)
        ds = type(ds)(name=name, inter=ds.inter, users=ds.users, items=ds.items, implicit=ds.implicit)
        save_dataset(ds, cache_dir(name))
        print(f"{args.dataset}: cached as {name!r} in {cache_dir(name)} (use --dataset {name})")
        print(markdown_table(["statistic", "value"], [[k, v] for k, v in ds.stats().items()]))
        return
    if args.dataset not in DATASETS:
        raise MetarecError(f"unknown dataset {args.dataset!r}: built-in datasets are {', '.join(DATASETS)}; a log "
                           "file needs --user-col and --item-col")
    ds = load_dataset(args.dataset, refresh=args.refresh)
    print(f"{args.dataset}: cached in {cache_dir(args.dataset)}")
    print(markdown_table(["statistic", "value"], [[k, v] for k, v in ds.stats().items()]))


def cmd_split(args) -> None:
    from metarec.report import markdown_table, split_rows
    from metarec.splits import SplitConfig, make_split
    from metarec.tasks import TaskConfig

    if args.protocol == "tasks":
        raise MetarecError("`metarec split` builds the rating states' splits; a task file is a split already (train on "
                           "it with `metarec train --protocol tasks --task-file FILE`)")
    split_cfg = SplitConfig(protocol=args.protocol, by=args.by, new_user_frac=args.new_user_frac,
                            new_item_frac=args.new_item_frac, seed=args.seed)
    task_cfg = TaskConfig(kind="user", sizing="melu" if args.k_shot is None else "kshot",
                          k_shot=5 if args.k_shot is None else args.k_shot,
                          min_inter=args.min_inter, max_inter=args.max_inter, n_query=args.n_query,
                          seed=args.seed)
    ds = _load(args)
    split = make_split(ds, split_cfg)
    header, rows = split_rows(ds, split, task_cfg)
    if all(r[1] == 0 for r in rows[1:]):
        raise MetarecError(f"{ds.name}: the {args.protocol} split with owners of {task_cfg.min_inter}-"
                           f"{task_cfg.max_inter} interactions leaves no evaluation tasks")
    print(" ".join(f"{k}={v}" for k, v in split.describe().items()))
    print(markdown_table(header, rows))
    if args.export_tasks:  # the same tasks `metarec train` builds for this split, as a task file (protocol tasks)
        from metarec.task_files import write_task_file
        from metarec.tasks import build_tasks

        parts = {p: build_tasks(df, task_cfg, desc=p) for p, df in zip(("train", "valid", "test"),
                                                                      split.parts.values(), strict=True)}
        write_task_file(args.export_tasks, ds, parts, train_log=split.train)
        print(f"wrote {args.export_tasks} (run it with `metarec train --protocol tasks --task-file "
              f"{args.export_tasks} --dataset {args.dataset}`)")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    from metarec.splits import PROTOCOLS, SPLIT_BY

    p.add_argument("--protocol", default="user-cold", help=f"one of {', '.join(PROTOCOLS)}")
    p.add_argument("--by", default="time", help=f"one of {', '.join(SPLIT_BY)}")
    p.add_argument("--new-user-frac", type=float, default=0.2)
    p.add_argument("--new-item-frac", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-inter", type=int, default=13, help="task owners need at least this many interactions")
    p.add_argument("--max-inter", type=int, default=100, help="... and at most this many")
    p.add_argument("--n-query", type=int, default=10)
    p.add_argument("--k-shot", type=int, default=None, help="fixed K-shot support (default: MeLU sizing)")
    p.add_argument("--export-tasks", metavar="FILE.json",
                   help="also write the split's tasks as a task file (the tasks protocol reads it back)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="metarec", description="Meta-learning for cold-start recommendation.",
                epilog="--debug (anywhere on the line): print the traceback of an internal error instead of saving it.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("datasets", help="the built-in datasets with their sizes")
    s.set_defaults(func=cmd_datasets)

    s = sub.add_parser("prepare", help="fetch, convert, cache a built-in dataset (or your CSV/parquet log) and "
                       "print statistics")
    s.add_argument("dataset", help="a built-in dataset, or a CSV/parquet log with --user-col and --item-col")
    s.add_argument("--refresh", action="store_true", help="convert again even if cached")
    s.add_argument("--user-col", help="log files: the user id column")
    s.add_argument("--item-col", help="log files: the item id column")
    s.add_argument("--rating-col", help="log files: the rating/label column (default: every row is a positive)")
    s.add_argument("--time-col", help="log files: the timestamp column (default: row order)")
    s.add_argument("--dedupe", action="store_true", help="keep the latest of duplicate (user, item) rows")
    s.add_argument("--name", help="log files: the name to cache it under, then `--dataset NAME` everywhere "
                   "(default: the file's stem)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("split", help="build a cold-start split and its tasks; print their statistics")
    _add_data_args(s)
    _add_split_args(s)
    s.set_defaults(func=cmd_split)

    from metarec import commands

    commands.register(sub)
    __import__("metarec.ctr.command", fromlist=["register"]).register(sub)  # metarec warmup
    __import__("metarec.seqrec.command", fromlist=["register"]).register(sub)  # metarec seqrec
    __import__("metarec.scenario_run", fromlist=["register"]).register(sub)  # metarec scenario (s²Meta)
    s = sub.add_parser("demo", help="the main job: MeLU and the baselines on ml-100k user-cold, as a table")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save", default="runs/demo", help="where the trained models go, for `metarec serve` ('' for "
                   "nowhere)")
    s.set_defaults(func=commands.cmd_demo, takes_overrides=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (:class:`MetarecError`, an unusable file or folder): one line ``metarec: error:
    ...`` and exit 2. Anything else is a bug: one line ``metarec: internal error: ...`` with the path of a file
    holding the traceback, exit 1; ``--debug`` (anywhere on the line) or ``METAREC_DEBUG=1`` raises it instead.
    Functions called directly (tests) raise their exceptions as usual."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("METAREC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    from metarec.launch import in_worker, launch, take_nproc

    try:
        nproc, argv = take_nproc(argv)
        if nproc > 1:
            if not argv or argv[0] != "train":
                raise MetarecError("--nproc runs `metarec train` on several processes; other commands run in one")
            return launch(nproc, argv)
    except MetarecError as e:
        print(f"metarec: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    parser = build_parser()
    typed = argv  # what the records' provenance shows: the line as given, not as routed
    try:
        argv = route(argv)
    except MetarecError as e:
        print(f"metarec: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = typed
    try:
        if in_worker():  # one rank of a multi-process run: join the group; rank 0 alone prints
            from metarec.engine import dist

            dist.init_from_env()
            if not dist.is_main():
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
        if getattr(args, "takes_overrides", None) is None:
            args.func(args)
        else:
            args.func(args, extra)
    except MetarecError as e:
        print(f"metarec: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metarec: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the environment, not a bug: a full disk, an unwritable --out or METAREC_HOME, ...
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"metarec: error: {_one_line(e.strerror or str(e))}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the last line of defence: a bug, reported in one line
        if debug:
            raise
        path = _save_traceback()
        print(f"metarec: internal error: {type(e).__name__}: {_one_line(str(e))[:300]} (a bug; traceback in {path}, "
              "or rerun with --debug)", file=sys.stderr)
        return 1
    return 0


# the family runners behind `train|compare|evaluate|merge --protocol P` for the non-rating protocols
_FAMILY_COMMAND = {"warmup": ["warmup"], "scenario": ["scenario"], "sequential": ["seqrec"]}


def route(argv: list[str]) -> list[str]:
    """One grammar for every protocol family: ``metarec train|compare|evaluate|merge --protocol P --learner(s) ...``.

    The rating protocols (the four rating states and ``tasks``) run in ``metarec train``/``compare`` themselves;
    for ``warmup``, ``scenario`` and ``sequential`` the line is handed to that family's runner (``metarec warmup``,
    ``metarec scenario ...``, ``metarec seqrec``, which stay as aliases), with ``--learner(s)`` for its
    ``--methods`` and ``--seed`` for ``--seeds``; ``merge`` is one command for every family (``metarec/experiment.py``
    writes and merges every family's records). The other flags are the family's own (``--help`` after the
    alias lists them). Any other line is returned unchanged."""
    from metarec import registry

    if not argv or argv[0] not in ("train", "compare", "evaluate", "merge"):
        return argv
    cmd, rest, proto = argv[0], [], None
    it = iter(range(1, len(argv)))
    for i in it:
        a = argv[i]
        if a == "--protocol" and i + 1 < len(argv):
            proto = argv[i + 1]
            next(it, None)
        elif a.startswith("--protocol="):
            proto = a.split("=", 1)[1]
        else:
            rest.append(a)
    family = registry.PROTOCOLS.get(proto or "")
    if family in (None, "rating"):
        return argv  # the rating runner (an unknown protocol stops there with the list)
    if cmd == "evaluate":  # the model file says its family
        if family == "warmup":
            raise MetarecError("the warmup protocol evaluates within its run (`metarec compare --protocol warmup`); "
                               "it saves no model to evaluate again")
        return ["evaluate", *rest]
    if cmd == "merge":  # one merge for every family: the records say theirs
        return ["merge", *rest]
    if family == "scenario":
        return ["scenario", cmd, *rest]
    if cmd == "train" and not any(a == "--learner" or a.startswith("--learner=") for a in rest):
        raise MetarecError(f"`metarec train --protocol {proto}` needs --learner (one of "
                           f"{', '.join(registry.for_protocol(proto))})")
    renamed = {"--learner": "--methods", "--learners": "--methods", "--seed": "--seeds"}
    out = []
    for a in rest:
        flag, eq, val = a.partition("=")
        out.append(renamed[flag] + eq + val if flag in renamed else a)
    return [*_FAMILY_COMMAND[family], *out]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _save_traceback() -> str:
    """Write the current exception's traceback to a file (METAREC_HOME/logs, else the temp folder); its path."""
    import tempfile
    import traceback

    from metarec.io import metarec_home

    text = traceback.format_exc()
    for folder in (metarec_home() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="metarec-crash-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return name
        except OSError:
            continue
    return "(no writable folder)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``metarec: error: ...`` (exit 2), the usage left to --help."""

    def error(self, message):
        self.exit(2, f"metarec: error: {message} (see `{self.prog} --help`)\n")


if __name__ == "__main__":
    sys.exit(main())
