"""Sub-commands that train and evaluate learners: train, evaluate, compare, curve, learners, demo."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from metarec.errors import MetarecError


def _add_run_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    if many:
        p.add_argument("--learners", nargs="+", default=["melu", "noadapt", "ptft", "bias", "itempop"])
        p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    else:
        p.add_argument("--learner", default="melu", help="a registered learner (see `metarec learners`)")
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--protocol", default="user-cold",
                   help="warm, user-cold, item-cold, user-item-cold or tasks (the rating runner); warmup, scenario or "
                        "sequential hand the line to that family's runner (see `metarec learners`)")
    p.add_argument("--view", default="explicit", help="explicit (ratings) or implicit (full ranking)")
    p.add_argument("--task-file", metavar="FILE",
                   help="--protocol tasks: the split as explicit tasks (JSON, parquet or CSV; see "
                        "metarec/task_files.py), ids being the raw ids of --dataset")
    p.add_argument("--config", help="a YAML file of overrides (same keys as --a.b=value)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", default="cpu", help="cpu only for this family (cuda: the sequential protocol)")
    _add_preset_args(p)


def _cpu_only(args) -> None:
    """The rating family trains on the CPU (``auto`` picks it): any other ``--device`` stops with one line."""
    from metarec.engine.device import SEQUENTIAL_ONLY

    if args.device.strip().lower() not in ("cpu", "auto"):
        raise MetarecError(f"--device {args.device}: {SEQUENTIAL_ONLY}")


def _add_preset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", metavar="NAME",
                   help="the learner's named settings (`paper`: the published ones; default: the learner's working "
                        "default preset for this run if it has one, else paper); explicit overrides win")
    p.add_argument("--presets", metavar="FILE", help="the preset store (default: metarec/presets.json)")


def _preset_args(args) -> tuple[str, dict]:
    """(the preset to ask ``make_config`` for, the preset store) from ``--preset`` and ``--presets``."""
    from metarec.presets import AUTO, load_store

    return getattr(args, "preset", None) or AUTO, load_store(getattr(args, "presets", None))


def _entry_config(entry: str, args, over: dict, seed: int, store: dict, preset: str) -> tuple:
    """(name, label, run, learner config) of a compare/curve learner entry ``NAME[@preset=P,key=value,...]``;
    the entry's own preset and overrides win over ``--preset`` and the global overrides."""
    from metarec.config import parse_entry
    from metarec.pipeline import make_config

    name, label, own = parse_entry(entry)
    preset = own.pop("preset", preset)
    run, lcfg = make_config(name, args.dataset, args.protocol, seed, args.view, {**over, **own}, preset=preset,
                            presets=store)
    return name, label, run, lcfg


def run_overrides(args, extra) -> dict:
    from metarec.config import parse_override_args, read_config_file

    over = _flatten(read_config_file(args.config))
    over.update(parse_override_args(extra))
    if getattr(args, "task_file", None):
        over["split.task_file"] = args.task_file
    return over


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def cmd_train(args, extra) -> None:
    from metarec.io import writable_dir
    from metarec.pipeline import make_config, train_and_evaluate

    _cpu_only(args)
    preset, store = _preset_args(args)
    over = run_overrides(args, extra)
    run, lcfg = make_config(args.learner, args.dataset, args.protocol, args.seed, args.view, over,
                            preset=preset, presets=store)
    print(f"{args.learner}: " + (f"preset {run.preset}" if run.preset else "the registry defaults (= paper)")
          + (" + explicit overrides" if set(over) - {"split.task_file"} else ""), flush=True)
    default_out = f"runs/{args.learner}-{args.dataset}-{args.protocol}-{args.view}-s{args.seed}" + (
        f"-{run.preset}" if run.preset else "")  # runs of one learner with different presets do not collide
    out = Path(args.out or default_out)
    writable_dir(out)  # an unusable --out stops now, not after the first epoch
    res = train_and_evaluate(run, lcfg, out_dir=out, progress=not args.quiet, restart=args.restart)
    if res["test"] is None:  # a rank other than 0 of a multi-process run: rank 0 evaluates and reports
        return
    print(f"{run.learner} on {args.dataset} {run.split.protocol} ({run.view}), {seeds_text(run)}: best epoch "
          f"{res['best_epoch']}, {res['train_seconds']:.1f} s")
    print("test: " + "  ".join(f"{k} {v:.4f}" for k, v in res["test"].items() if k != "tasks")
          + f"  ({res['test']['tasks']} tasks)")
    print(f"saved {out / 'model.pt'} and {out / 'results.json'}")


def seeds_text(run) -> str:
    """"seed 3", or each seed when the split, task and training seeds differ (``--train.seed=1``)."""
    seeds = {"split": run.split.seed, "tasks": run.tasks.seed, "train": run.train.seed}
    if len(set(seeds.values())) == 1:
        return f"seed {run.split.seed}"
    return "seeds " + ", ".join(f"{k} {v}" for k, v in seeds.items())


def cmd_evaluate(args, extra) -> None:
    import torch

    from metarec.config import config_from_dict
    from metarec.data.types import data_fingerprint
    from metarec.pipeline import RunConfig, evaluator, prepare

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise MetarecError(f"{path}: no such checkpoint")
    from metarec.models import load_model

    learner, extra_info = load_model(path)  # any family's model by registry name; one line for anything else
    if learner.family == "sequential":
        return _evaluate_sequential(path, learner, extra_info, args)
    if args.dataset:
        raise MetarecError("--dataset is for sequence models; this model evaluates on the data it records")
    rc = extra_info.get("run_config") if isinstance(extra_info, dict) else None
    if isinstance(rc, dict) and "scenarios" in rc:  # a scenario model: its family's evaluation
        from metarec.scenario_run import cmd_evaluate as scenario_evaluate

        return scenario_evaluate(args, extra)
    if not isinstance(rc, dict) or "split" not in rc:
        raise MetarecError(f"{path}: not a model of `metarec train` or `metarec train --protocol scenario`")
    try:
        run = config_from_dict(RunConfig, rc)
    except TypeError as e:
        raise MetarecError(f"{path}: its run config is not one of this version ({e})") from None
    prep = prepare(run)
    recorded = extra_info.get("data_fingerprint")
    if recorded is not None and recorded != data_fingerprint(prep.dataset):
        if not args.allow_changed_data:
            raise MetarecError(f"{path}: the data of {run.dataset} changed since this model was trained; "
                               "use --allow-changed-data to evaluate it anyway")
        print(f"metarec: warning: the data of {run.dataset} changed since this model was trained",
              file=sys.stderr)
    with torch.no_grad():
        res = evaluator(run, prep)(learner, getattr(prep, args.part))
    print(f"{run.learner} on {run.dataset} {run.split.protocol} ({run.view}), meta-{args.part}:")
    print("  ".join(f"{k} {v:.4f}" for k, v in res.items() if k != "tasks") + f"  ({res['tasks']} tasks)")
    if args.json:
        print(json.dumps(res))


def _evaluate_sequential(path: Path, method, info: dict, args) -> None:
    """A model of the sequential protocol, on the protocol rebuilt from what the model file records."""
    from metarec.config import config_from_dict
    from metarec.data.registry import load_dataset
    from metarec.seqrec.evaluate import evaluate_seq
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    if not isinstance(info.get("protocol"), dict) or not info.get("dataset"):
        raise MetarecError(f"{path}: the model file records no protocol to evaluate it on")
    dataset = args.dataset or info["dataset"]
    try:
        pcfg = config_from_dict(SeqProtocolConfig, info["protocol"])
    except TypeError as e:
        raise MetarecError(f"{path}: its protocol config is not one of this version ({e})") from None
    data = make_seq_protocol(load_dataset(dataset), pcfg)
    if data.n_items != method.n_items:
        raise MetarecError(f"{path}: the model has {method.n_items} items, {dataset} has {data.n_items}: another "
                           "dataset (give the one it was trained on with --dataset)")
    res = evaluate_seq(method, getattr(data, args.part), data.n_items)
    print(f"{info.get('method', method.name)} on {dataset} sequential, meta-{args.part}:")
    print("  ".join(f"{k} {v:.4f}" for k, v in res.items() if isinstance(v, float)))
    if args.json:
        print(json.dumps(res))


def cmd_compare(args, extra) -> None:
    from metarec.experiment import Experiment, compare
    from metarec.pipeline import prepare, train_and_evaluate

    _cpu_only(args)
    over = run_overrides(args, extra)
    preset, store = _preset_args(args)
    for seed in args.seeds:  # every entry checked before anything trains: a typo in the last one stops at once
        for entry in args.learners:
            _entry_config(entry, args, over, seed, store, preset)
    first = _entry_config(args.learners[0], args, over, args.seeds[0], store, preset)[2]

    def records(seed: int, skip: set[str]):
        prep, pretrained = None, {}
        for entry in args.learners:
            name, label, run, lcfg = _entry_config(entry, args, over, seed, store, preset)
            if label in skip:
                continue
            if prep is None:
                prep = prepare(run)
            save = Path(args.save) / f"{label.replace('/', '_')}-s{seed}" if args.save else None
            res = train_and_evaluate(run, lcfg, out_dir=save, progress=not args.quiet, prep=prep,
                                     pretrained=pretrained)
            res["label"] = label
            yield res

    compare(Experiment("rating", first.split.protocol, args.dataset, records, valid=args.valid), args.seeds,
            args.argv, args.out)


def cmd_merge(args, extra) -> None:
    """One table from several ``compare`` records of one protocol family, dataset and protocol (e.g. one per seed,
    run in parallel); a (learner, seed) pair may appear once."""
    from metarec.experiment import merge

    merge(args.inputs, args.out, args.argv, labels=args.labels, title=args.title, valid=args.valid)


def cmd_curve(args, extra) -> None:
    """Support-size curve: a metric against K shots, one line per learner, as a PNG (and JSON)."""
    _cpu_only(args)
    from metarec.io import code_version, write_json
    from metarec.pipeline import prepare, train_and_evaluate

    if args.replot:
        return _replot(Path(args.replot))
    over = run_overrides(args, extra)
    preset, store = _preset_args(args)
    version = code_version()
    if min(args.ks) < 1:
        raise MetarecError(f"--ks takes support sizes >= 1, got {min(args.ks)}")
    for seed in args.seeds:  # every entry checked before anything trains
        for entry in args.learners:
            _entry_config(entry, args, over, seed, store, preset)
    max_k = max(args.ks)
    curves: dict[str, list] = {e: [] for e in args.learners}
    pretrained: dict[int, dict] = {s: {} for s in args.seeds}  # pooled pretraining does not depend on K
    for k in args.ks:
        preps: dict = {}
        for entry in args.learners:
            vals = []
            for seed in args.seeds:
                name, label, run, lcfg = _entry_config(entry, args, over, seed, store, preset)
                tasks = replace(run.tasks, sizing="kshot", k_shot=k, min_inter=max_k + run.tasks.n_query)
                run = replace(run, tasks=tasks)
                if seed not in preps:
                    preps[seed] = prepare(run)
                res = train_and_evaluate(run, lcfg, progress=False, prep=preps[seed], pretrained=pretrained[seed])
                vals.append(res["test"][args.metric])
            curves[label].append((k, float(np.mean(vals)), float(np.std(vals))))
            print(f"K={k} {label}: {args.metric} {np.mean(vals):.4f} ± {np.std(vals):.4f}")
    out = Path(args.out)
    title = f"{args.dataset} {args.protocol} ({args.view}), seeds {args.seeds}"
    plot_curves(curves, args.metric, title, out.with_suffix(".png"))
    write_json(out.with_suffix(".json"), {"command": "metarec " + " ".join(args.argv), "code": version,
                                          "metric": args.metric, "title": title, "curves": curves})
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


def plot_curves(curves: dict[str, list], metric: str, title: str, path: Path) -> None:
    """One line (mean, std error bars) per learner against K, log-scaled K axis, legend beside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metarec.io import atomic_path

    fig, ax = plt.subplots(figsize=(8.5, 4))
    ks = sorted({k for pts in curves.values() for k, _, _ in pts})
    for name, pts in curves.items():
        x, m, s = map(np.array, zip(*pts, strict=True))
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=name)
    ax.set_xlabel("support size K (shots)")
    ax.set_ylabel(metric)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _curve_title(command: str) -> str:
    """The title ``cmd_curve`` gives, rebuilt from a recorded command line (records older than "title")."""
    toks = command.split()

    def after(flag, default):
        return toks[toks.index(flag) + 1] if flag in toks else default

    seeds = []
    if "--seeds" in toks:
        for t in toks[toks.index("--seeds") + 1:]:
            if not t.isdigit():
                break
            seeds.append(int(t))
    return (f"{after('--dataset', 'ml-100k')} {after('--protocol', 'user-cold')} ({after('--view', 'explicit')}), "
            f"seeds {seeds or [0, 1, 2]}")


def _replot(path: Path) -> None:
    """Redraw a curve's PNG from its JSON record (no training)."""
    from metarec.io import read_record

    rec = read_record(path, "`metarec curve` record", keys=("curves", "metric"))
    curves, metric = rec["curves"], rec["metric"]
    if not isinstance(curves, dict) or not all(isinstance(p, list) and all(isinstance(x, list) and len(x) == 3
                                                                           for x in p) for p in curves.values()):
        raise MetarecError(f"{path}: not a `metarec curve` record (its curves are not lists of [K, mean, std])")
    title = rec.get("title") or _curve_title(rec.get("command", ""))
    plot_curves(curves, metric, title, path.with_suffix(".png"))
    print(f"wrote {path.with_suffix('.png')}")


def cmd_tune(args, extra) -> None:
    """Tune one learner on meta-valid (metarec/tuning.py)."""
    _cpu_only(args)
    from metarec.presets import AUTO
    from metarec.tuning import TuneConfig, tune

    seeds = args.seeds or [args.seed]
    cfg = TuneConfig(learner=args.learner, trials=args.trials, dataset=args.dataset, protocol=args.protocol,
                     view=args.view, seed=seeds[0], extra_seeds=tuple(seeds[1:]), timeout=args.timeout,
                     preset=args.preset or AUTO, overrides=run_overrides(args, extra))
    rec = tune(cfg, Path(args.out), command="metarec " + " ".join(args.argv), preset_name=args.preset_name,
               presets_path=args.presets, progress=not args.quiet)
    best = rec["best"]
    if rec["complete"] < args.trials:
        print(f"stopped after {rec['complete']} of {args.trials} trials (--timeout); the same command resumes")
    print(f"best of {rec['complete']} trials: trial {best['number']}, valid {rec['metric']} {best['value']:.4f}: "
          + " ".join(f"--{k}={v}" for k, v in best["params"].items()))
    print(f"wrote {Path(args.out) / 'tune.json'} and {Path(args.out) / 'tune.md'}")


def cmd_learners(args, extra) -> None:
    """Every registered method with the protocols it runs on (``--protocol P``: only those of P)."""
    from metarec import registry

    names = registry.for_protocol(args.protocol) if args.protocol else tuple(registry.METHODS)
    if args.protocol:
        registry.family_of(args.protocol)  # an unknown protocol stops with the list
    rows = [(n, _protocols_text(registry.method(n).protocols), registry.method(n).summary) for n in names]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for name, protos, summary in rows:
        print(f"{name.ljust(w0)}  {protos.ljust(w1)}  {summary}")


def _protocols_text(protocols: tuple[str, ...]) -> str:
    """The four rating states shortened to "rating-states"."""
    from metarec.registry import RATING_STATES

    out = list(protocols)
    if set(RATING_STATES) <= set(out):
        out = ["rating-states"] + [p for p in out if p not in RATING_STATES]
    return ",".join(out)


def cmd_stats(args, extra) -> None:
    """What any protocol builds from a dataset (metarec.protocols): its description and its parts' task counts."""
    from metarec import protocols
    from metarec.config import parse_override_args
    from metarec.data.registry import load_dataset

    over = parse_override_args(extra)
    if args.task_file:
        over["split.task_file"] = args.task_file
    p = protocols.get(args.protocol, args.seed, over, dataset=args.dataset)
    data = p.prepare(load_dataset(args.dataset))
    print(f"{p.name} ({p.family} family) on {args.dataset}, seed {args.seed}")
    for k, v in p.describe(data).items():
        print(f"  {k}: {v}")
    parts = {part: len(getattr(data, part)) for part in ("train", "valid", "test")
             if isinstance(getattr(data, part, None), list)}
    if parts:
        print("  tasks: " + ", ".join(f"{k} {v}" for k, v in parts.items()))


def cmd_demo(args, extra) -> None:
    """The main job: the fold-in learners, MeLU and the baselines on ml-100k user-cold, one seed, as a table."""
    ns = argparse.Namespace(learners=DEMO_LEARNERS, seeds=[args.seed], dataset="ml-100k", protocol="user-cold",
                            view="explicit", config=None, quiet=True, out=None, valid=False, argv=["demo"],
                            preset=None, presets=None, save=args.save or None)
    cmd_compare(ns, list(extra))
    if args.save:
        print(f"models saved under {args.save}/LEARNER-s{args.seed} (serve them: metarec serve "
              f"{args.save}/melu-s{args.seed} {args.save}/foldin-s{args.seed})")


# The learners to use (foldin, metafold), MeLU with the paper's settings (labelled as such), then each learner with
# its working default (the presets tuned on ml-100k user-cold meta-valid by `metarec tune`, docs/results/tuning/),
# on the same tasks.
DEMO_LEARNERS = ["foldin", "metafold", "melu@preset=paper", "melu", "noadapt", "ptft", "bias", "itempop"]


OVERRIDES_HELP = ("Every config field can be set with --section.field=value (sections: train, split, tasks, learner, "
                  "plus view, threshold, negatives), e.g. --train.epochs=5 --learner.inner.lr=1e-3 "
                  "--learner.hidden=64,64; `--config FILE.yaml` takes the same keys as a mapping. Bad values stop "
                  "before any data is read.")


def cmd_serve(args, extra) -> None:
    """Serve trained models to newcomers over HTTP (metarec/serve/app.py)."""
    import ipaddress
    import os
    import socket

    import torch

    from metarec.serve.app import ENV, ServeConfig, create_app, settings_to_env
    from metarec.serve.service import ServeLimits, load_servable

    if args.workers < 1 or args.max_batch < 1 or args.window_ms < 0 or args.threads < 1:
        raise MetarecError("--workers, --max-batch and --threads take numbers >= 1, --window-ms >= 0")
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    limits = ServeLimits(slots=max(args.max_batch, 1))
    config = ServeConfig(0.0 if args.no_batching else args.window_ms, args.max_batch, key or None, args.max_body,
                         limits)
    torch.set_num_threads(args.threads)
    # every model loaded (and checked) once, up front
    servables = [load_servable(r, limits, args.dataset) for r in args.runs]
    names = [s.name for s in servables]
    if len(set(names)) < len(names):
        raise MetarecError(f"two served models share a name ({', '.join(names)}): serve them from separate "
                           "processes")
    try:
        loopback = ipaddress.ip_address(socket.gethostbyname(args.host)).is_loopback
    except (OSError, ValueError):
        raise MetarecError(f"--host {args.host}: not an address of this machine") from None
    if not loopback and not key:
        print(f"metarec: warning: serving on {args.host} without an API key (set {args.api_key_env})",
              file=sys.stderr)
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        try:  # one clear line for a port in use, before any worker starts
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
        except OSError as e:
            raise MetarecError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    for s in servables:
        print(f"serving {s.name} ({s.family}, {s.view}, {s.dataset}, {len(s.candidates)} items; no interactions: "
              f"{s.fallback}) from {s.path}")
    batching = f"micro-batching {config.window_ms:g} ms, up to {config.max_batch}" if config.window_ms else \
        "no micro-batching"
    print(f"http://{args.host}:{args.port}/ (docs: /docs; {batching}; {args.workers} worker(s); "
          f"API key {'required' if key else 'off'})", flush=True)
    import uvicorn

    if args.workers == 1:
        uvicorn.run(create_app(servables, config), host=args.host, port=args.port, log_level=args.log_level)
        return
    os.environ[ENV] = settings_to_env([str(s.path) for s in servables], config, args.dataset)
    os.environ[ENV + "_KEY_VAR"] = args.api_key_env or ""
    uvicorn.run("metarec.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level)


def register(sub) -> None:
    s = sub.add_parser("train", help="train and evaluate one learner; save model.pt and results.json",
                       epilog=OVERRIDES_HELP)
    _add_run_args(s)
    s.add_argument("--out", help="output directory (default runs/LEARNER-DATASET-PROTOCOL-VIEW-sSEED[-PRESET])")
    s.add_argument("--restart", action="store_true",
                   help="discard OUT's checkpoint and train from scratch (default: resume it if its settings match)")
    s.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="meta-train on N processes of this machine, each adapting its share of every meta-batch "
                   "(data-parallel, gloo over loopback; the same steps as one process). Many machines: torchrun "
                   "--nnodes M --nproc-per-node N ... -m metarec train ... (see the README)")
    s.set_defaults(func=cmd_train, takes_overrides=True)

    s = sub.add_parser("evaluate", help="evaluate a saved model (rating, scenario or sequential) on its meta-test "
                       "(or -valid) tasks")
    s.add_argument("checkpoint", help="a model.pt written by `metarec train` or `compare --protocol P` (or its "
                   "directory)")
    s.add_argument("--part", default="test", choices=["test", "valid"])
    s.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    s.add_argument("--allow-changed-data", action="store_true",
                   help="evaluate even if the data's fingerprint differs from the one recorded at training")
    s.add_argument("--dataset", help="a sequence model: the dataset to rebuild its protocol on (default: the one "
                   "its file records; needed for a dataset given as a path)")
    s.set_defaults(func=cmd_evaluate, takes_overrides=False)

    s = sub.add_parser("compare", help="several learners over several seeds; markdown table + JSON",
                       epilog=OVERRIDES_HELP + " NAME@key=value,key=value gives one learner its own overrides.")
    _add_run_args(s, many=True)
    s.add_argument("--out", help="write OUT.md and OUT.json")
    s.add_argument("--valid", action="store_true",
                   help="also tabulate the meta-valid metrics (for selection runs: choose on these, not on test)")
    s.add_argument("--save", metavar="DIR", help="also save every run (model.pt, results.json, its checkpoint) "
                   "under DIR/LABEL-sSEED, e.g. for `metarec serve`")
    s.set_defaults(func=cmd_compare, takes_overrides=True)

    s = sub.add_parser("merge", help="one table from several compare records of any protocol (e.g. seeds run in "
                       "parallel)")
    s.add_argument("inputs", nargs="+", help="OUT.json files written by `metarec compare` (one protocol family, "
                   "dataset and protocol)")
    s.add_argument("--out", required=True, help="write OUT.md and OUT.json")
    s.add_argument("--labels", nargs="+", help="keep these rows, in this order")
    s.add_argument("--title", help="the table's title (default: the family's)")
    s.add_argument("--valid", action="store_true", help="also tabulate the meta-valid metrics (rating protocols)")
    s.set_defaults(func=cmd_merge, takes_overrides=False)

    s = sub.add_parser("serve", help="serve trained models to newcomers over HTTP (a page to try it at /)",
                       description="Recommendations for a newcomer over HTTP: POST /v1/recommend, /v1/score, GET "
                       "/v1/items?q=, /v1/models, /healthz, /metrics; OpenAPI docs at /docs; a page at /.")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or model.pt files) of `metarec "
                   "train` / `compare --save` (rating family) or of the sequential runners")
    s.add_argument("--dataset", help="sequential models trained on a dataset given as a directory: that directory "
                   "(their files record its name only)")
    s.add_argument("--host", default="127.0.0.1", help="the address to bind (default loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="worker processes (each loads the models)")
    s.add_argument("--window-ms", type=float, default=2.0, help="micro-batching: how long the first request of a "
                   "batch waits for others")
    s.add_argument("--max-batch", type=int, default=32, help="micro-batching: newcomers adapted together at most")
    s.add_argument("--no-batching", action="store_true", help="every request adapts alone")
    s.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    s.add_argument("--max-body", type=int, default=64 * 1024, help="largest request body in bytes (413 above)")
    s.add_argument("--api-key-env", default="METAREC_API_KEY", help="the environment variable holding the API key; "
                   "when it is set, /v1/* and /metrics need it in the X-API-Key header")
    s.add_argument("--log-level", default="warning", help="uvicorn's log level")
    s.set_defaults(func=cmd_serve, takes_overrides=False)

    s = sub.add_parser("curve", help="a metric against support size K for several learners, as a PNG",
                       epilog=OVERRIDES_HELP + " NAME@key=value,key=value gives one learner its own overrides.")
    _add_run_args(s, many=True)
    s.add_argument("--ks", nargs="+", type=int, default=[1, 3, 5, 10, 20])
    s.add_argument("--metric", default="rmse")
    s.add_argument("--out", default="docs/curves/support_size")
    s.add_argument("--replot", metavar="JSON", help="only redraw the PNG of a curve record (no training)")
    s.set_defaults(func=cmd_curve, takes_overrides=True)

    s = sub.add_parser("tune", help="search a learner's settings with Optuna on meta-valid tasks (resumable)")
    _add_run_args(s)
    s.add_argument("--trials", type=int, required=True, help="complete trials wanted (a rerun resumes the study)")
    s.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="start no new trial after this many seconds (the running one finishes)")
    s.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="score each trial by the mean meta-valid metric over these seeds (instead of --seed): "
                        "slower, but settings that work on one split only lose")
    s.add_argument("--out", required=True, help="output directory: study.db, tune.json, tune.md")
    s.add_argument("--preset-name", metavar="NAME",
                   help="also store the best settings as this preset of the learner (with the command)")
    s.set_defaults(func=cmd_tune, takes_overrides=True)

    s = sub.add_parser("stats", help="what a protocol of any family builds from a dataset (metarec.protocols)",
                       epilog="The protocol's config fields can be set with --key=value (rating: --split.by=random, "
                              "--tasks.k_shot=5, ...; sequential: --n_support=5; scenario: --min_items=50).")
    s.add_argument("--protocol", default="user-cold", help="any protocol `metarec learners` lists")
    s.add_argument("--dataset", default="ml-100k")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--task-file", metavar="FILE", help="--protocol tasks: the task file")
    s.set_defaults(func=cmd_stats, takes_overrides=True)

    s = sub.add_parser("learners", help="every registered method with the protocols it runs on, one line each")
    s.add_argument("--protocol", help="only the methods of this protocol")
    s.set_defaults(func=cmd_learners, takes_overrides=False)
