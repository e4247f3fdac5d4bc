"""``metarec seqrec``: the cold-start sequential benchmark of MML (Table 2) on the protocol of protocol.py.

The methods are the ``sequential`` entries of the one registry (:mod:`metarec.registry`). An entry's run
function ``run(name, data, seed, out_dir, progress, overrides, cache)`` (:func:`run_direct`, :func:`run_sml`,
:func:`run_cbml` here, :func:`metarec.seqrec.mml.run_variant`) trains and evaluates one method for one seed and
returns
``{"method", "seed", "test", "valid", "best_epoch", "train_seconds", "history", "config"}`` (metrics from
:func:`metarec.seqrec.evaluate.evaluate_seq`); ``cache`` is a dict shared by the methods of one seed (the
``sasrec`` pre-training is reused by ``ptft``); ``overrides`` are flat ``section.key`` -> value pairs
(sections ``train`` and ``model``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from metarec import registry
from metarec.config import apply_overrides, parse_entry
from metarec.errors import MetarecError
from metarec.io import writer

# torch and the models are imported inside the functions: building the CLI parser stays cheap


def run_method(name: str, data, seed: int, out_dir=None, progress=True, overrides=None, cache=None,
               device: str = "cpu") -> dict:
    """Train and evaluate the registered sequential method ``name`` for one seed on ``device`` (cpu, cuda,
    cuda:N, auto)."""
    from metarec.engine import dist
    from metarec.engine.device import resolve_device
    from metarec.report import with_core

    dev = resolve_device(device)
    if dev.type != "cpu" and dist.world() > 1:
        raise MetarecError(f"--device {dev} with several processes is not built: the ranks join with gloo on the "
                           "CPU; use one process on the GPU, or --device cpu with --nproc")
    run = registry.method(name).impl("sequential").load()
    res = run(name, data, seed, out_dir, progress, overrides, cache, device=dev)
    return with_core(res, method=res.get("method", name), family="sequential", protocol="sequential",
                     dataset=data.dataset.name)


# ------------------------------------------------------------------------------------------- helpers


def _split_overrides(overrides: dict) -> tuple[dict, dict]:
    train, model = {}, {}
    for k, v in overrides.items():
        head, _, rest = k.partition(".")
        if head == "train" and rest:
            train[rest] = v
        elif head == "model" and rest:
            model[rest] = v
        else:
            raise MetarecError(f"unknown override {k!r}: use train.KEY=VALUE or model.KEY=VALUE")
    return train, model


def _train_pool(tasks):
    import torch

    return torch.from_numpy(np.unique(np.concatenate([t.extra["seq"] for t in tasks])))


def _ckpt(out_dir: Path | None) -> Path | None:
    return None if out_dir is None else Path(out_dir) / "checkpoint.pt"


def _identity(name: str, cfg, data, out_dir: Path | None) -> dict | None:
    """What determines a sequence run besides its training config (a checkpoint resumes only on a match)."""
    if out_dir is None:
        return None
    from metarec.data.types import data_fingerprint

    return {"method": name, "model": asdict(cfg), "protocol": asdict(data.config),
            "data": data_fingerprint(data.dataset), "tasks": len(data.train)}


def _finish(name: str, seed: int, method, data, fitted: dict, t0: float, out_dir: Path | None,
            config, extra: dict | None = None) -> dict:
    from metarec.seqrec.evaluate import evaluate_seq, evaluate_seq_detail

    train_s = time.perf_counter() - t0 + fitted.get("resumed_seconds", 0.0)  # + epochs of resumed processes
    valid = fitted.get("best") or evaluate_seq(method, data.valid, data.n_items)
    test, by_query = evaluate_seq_detail(method, data.test, data.n_items) if writer() else (None, None)  # rank 0
    res = {"method": name, "seed": seed, "test": test, "valid": valid, "best_epoch": fitted.get("best_epoch", 0),
           "train_seconds": train_s, "history": fitted.get("history", []), "config": asdict(config),
           "test_by_query": by_query, **(extra or {})}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        method.save(Path(out_dir) / "model.pt", extra={"method": name, "seed": seed,
                                                        "protocol": asdict(data.config), "dataset": data.dataset.name})
    return res


def _fit_len(cfg, data):
    """The network's position table holds the protocol's longest sequence."""
    return replace(cfg, sasrec=replace(cfg.sasrec, max_len=data.config.max_len))


def _valid_fn(data):
    from metarec.seqrec.evaluate import evaluate_seq

    return lambda m: evaluate_seq(m, data.valid, data.n_items)


# ------------------------------------------------------------------------------------------- runners


def run_direct(name: str, data, seed: int, out_dir=None, progress=True, overrides=None, cache=None,
               device=None) -> dict:
    """SASRec, GRU4Rec, Full and PT-FT: one network trained on the old users' sequences, the registry entry's
    :class:`~metarec.seqrec.methods.DirectConfig` defaults deciding which (and whether it fine-tunes)."""
    import torch

    from metarec.seqrec.evaluate import evaluate_seq
    from metarec.seqrec.methods import DirectSeq, FinetuneConfig
    from metarec.seqrec.train import fit_seq

    t_over, m_over = _split_overrides(overrides or {})
    base = registry.method(name).impl("sequential").make_config()
    cfg = _fit_len(apply_overrides(replace(base, seed=seed), m_over, "model."), data)
    tcfg = apply_overrides(replace(direct_train_default(), seed=seed), t_over, "train.")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device("cpu"):  # built on the CPU (the same initial draws on every device), then moved
        method = DirectSeq(data.n_items, cfg)
    method.name = name  # the registry entry (sasrec, gru4rec, full, ptft) it saves and loads under
    tasks = method.train_tasks(data)
    method.pool = _train_pool(tasks)
    method.to(device or "cpu")
    key = repr(("direct", asdict(replace(cfg, finetune=FinetuneConfig(), seed=0)), asdict(tcfg), data.config,
                len(data.train)))
    if not cfg.pretrain:  # the support-only baseline: no training on the old users, only the fine-tuning below
        if cfg.finetune.steps == 0:
            raise MetarecError("model.pretrain=false trains nothing without model.finetune.steps > 0")
        fitted = {"history": [], "best_epoch": 0, "resumed_seconds": 0.0}
    elif cache is not None and key in cache:
        state, fitted = cache[key]
        fitted = {**fitted, "resumed_seconds": 0.0}  # the shared training is counted by its first user
        method.load_state_dict(state)
    else:
        fitted = fit_seq(method, tasks, _valid_fn(data), tcfg, checkpoint=_ckpt(out_dir), progress=progress,
                         identity=_identity(name, cfg, data, out_dir))
        if cache is not None:
            cache[key] = ({k: v.clone() for k, v in method.state_dict().items()}, fitted)
    extra = {}
    if cfg.finetune.steps > 0 and cfg.finetune.lr_grid:  # PT-FT: the fine-tuning rate chosen on meta-valid
        scores = {}
        for lr in cfg.finetune.lr_grid:
            method.config = replace(cfg, finetune=replace(cfg.finetune, lr=float(lr)))
            scores[float(lr)] = evaluate_seq(method, data.valid, data.n_items)
        best = max(scores, key=lambda r: scores[r][tcfg.select])
        method.config = cfg = replace(cfg, finetune=replace(cfg.finetune, lr=best))
        fitted = {**fitted, "best": scores[best]}
        extra = {"finetune_lr_selection": {str(k): v[tcfg.select] for k, v in scores.items()}}
    return _finish(name, seed, method, data, fitted, t0, out_dir, cfg, extra)


def run_cbml(name: str, data, seed: int, out_dir=None, progress=True, overrides=None, cache=None,
             device=None) -> dict:
    """CBML (meta-trained; its attribute width follows the dataset's item features)."""
    import torch

    from metarec.seqrec.cbml import CBML, CBMLConfig, item_attributes
    from metarec.seqrec.train import fit_seq

    t_over, m_over = _split_overrides(overrides or {})
    attrs = item_attributes(data.dataset)
    cfg = _fit_len(apply_overrides(CBMLConfig(attr_dim=attrs.shape[1], seed=seed), m_over, "model."), data)
    tcfg = apply_overrides(replace(meta_train_default(), seed=seed), t_over, "train.")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device("cpu"):  # built on the CPU (the same initial draws on every device), then moved
        method = CBML(data.n_items, cfg, pool=_train_pool(data.train), attrs=attrs).to(device or "cpu")
    method.name = name
    fitted = fit_seq(method, data.train, _valid_fn(data), tcfg, checkpoint=_ckpt(out_dir), progress=progress,
                     identity=_identity("cbml", cfg, data, out_dir))
    return _finish("cbml", seed, method, data, fitted, t0, out_dir, cfg)


def run_sml(name: str, data, seed: int, out_dir=None, progress=True, overrides=None, cache=None,
            device=None) -> dict:
    """SML: SASRec pre-trained on the early periods, then retrained period by period through the transfer net."""
    import torch

    from metarec.seqrec.evaluate import evaluate_seq
    from metarec.seqrec.protocol import window_tasks
    from metarec.seqrec.sml import SML, SMLConfig, period_tasks
    from metarec.seqrec.train import fit_seq

    t_over, m_over = _split_overrides(overrides or {})
    cfg = _fit_len(apply_overrides(SMLConfig(seed=seed), m_over, "model."), data)
    tcfg = apply_overrides(replace(direct_train_default(), seed=seed), t_over, "train.")
    if not 0 < cfg.pretrain_periods < cfg.periods:
        raise MetarecError("SML needs 0 < pretrain_periods < periods")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    periods = period_tasks(data.train_inter, cfg.periods, data.config.max_len)
    df = data.train_inter
    edges = np.quantile(df["timestamp"].to_numpy(), np.linspace(0, 1, cfg.periods + 1)[1:-1])
    early = df[np.searchsorted(edges, df["timestamp"].to_numpy(), side="right") < cfg.pretrain_periods]
    pre_tasks = window_tasks(early, data.config)
    with torch.device("cpu"):  # built on the CPU (the same initial draws on every device), then moved
        method = SML(data.n_items, cfg, pool=_train_pool(data.train)).to(device or "cpu")
    method.name = name
    fitted = fit_seq(method, pre_tasks, _valid_fn(data), tcfg, checkpoint=_ckpt(out_dir), progress=progress,
                     params=method.net.parameters(), identity=_identity("sml", cfg, data, out_dir))
    log = method.sequential_train(periods, progress=progress)
    fitted = {**fitted, "best": evaluate_seq(method, data.valid, data.n_items)}
    return _finish("sml", seed, method, data, fitted, t0, out_dir, cfg,
                   {"sml_periods": log, "pretrain_tasks": len(pre_tasks),
                    "period_tasks": [len(p) for p in periods]})


def direct_train_default():
    """Training of the non-meta networks (SASRec, GRU4Rec, Full, PT-FT's pre-training, SML's W_0)."""
    from metarec.seqrec.train import seq_train_config

    return seq_train_config(epochs=100, meta_batch=128, lr=1e-3, patience=10)


def meta_train_default():
    """Meta-training (CBML; MML 5.1.3: global rate 1e-3 within the paper's grid, early stopping on meta-valid)."""
    from metarec.seqrec.train import seq_train_config

    return seq_train_config(epochs=100, meta_batch=64, lr=1e-3, patience=10)


# ------------------------------------------------------------------------------------------- command


def cmd_seqrec(args, extra) -> None:
    from metarec.config import parse_override_args
    from metarec.data.registry import load_dataset
    from metarec.experiment import Experiment, compare, merge
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    if args.merge:
        if not args.out:
            raise MetarecError("--merge needs --out")
        merge(args.merge, args.out, args.argv)
        return
    entries = [parse_entry(e) for e in args.methods]
    known = registry.names("sequential")
    unknown = [n for n, _, _ in entries if n not in known]
    if unknown:
        raise MetarecError(f"unknown method(s) {', '.join(unknown)}: the sequential methods are {', '.join(known)}")
    over = parse_override_args(extra)
    from metarec.engine.device import resolve_device

    device = resolve_device(args.device)  # a device that is not here stops now, before the data is built
    if args.quick:
        over = {"train.epochs": 2, "train.patience": 2, **over}
    pcfg = SeqProtocolConfig(new_user_frac=args.new_user_frac, n_support=args.n_support, n_query=args.n_query,
                             max_len=args.max_len)
    data = make_seq_protocol(load_dataset(args.dataset), pcfg)
    full_train = len(data.train)
    if args.train_frac < 1.0:
        data = data.subsample_train(args.train_frac)
    st = data.stats()
    print(f"{args.dataset}: T = {st['T']}, {st['new_users']} new users ({st['new_user_share']:.1%}), "
          f"{len(data.train)}/{full_train} meta-train, {len(data.valid)} meta-valid, {len(data.test)} meta-test tasks")

    def records(seed: int, skip: set[str]):
        cache: dict = {}
        for name, label, own in entries:
            if label in skip:
                continue
            tag = (f"-frac{args.train_frac:g}" if args.train_frac < 1 else "") + (
                f"-o{hashlib.sha1(repr(sorted({**over, **own}.items())).encode()).hexdigest()[:8]}"
                if {**over, **own} else "")  # other settings, other directory (checkpoints resume)
            run_dir = Path(args.runs_dir) / Path(args.dataset).name / f"{label}-s{seed}{tag}" if args.runs_dir else None
            res = run_method(name, data, seed, run_dir, not args.quiet, {**over, **own}, cache, device=device)
            res["method"] = label
            yield res

    exp = Experiment("sequential", "sequential", args.dataset, records, extra={"protocol_stats": st},
                     drop=("history",) if args.brief_json else ())
    compare(exp, args.seeds, args.argv, args.out)


PROTOCOL_ROWS = [
    ("T (reference timestamp)", "T"), ("users", "users"), ("new users (meta-test candidates)", "new_users"),
    ("new-user share", "new_user_share"),
    ("new users with < n_support + n_query items (dropped)", "new_users_too_short"),
    ("old users", "old_users"), ("items", "items"), ("items in D_old", "old_items"),
    ("new items (first seen at or after T)", "new_items"), ("interactions", "interactions"),
    ("D_old interactions (before T)", "D_old_interactions"),
    ("old users' interactions at/after T (dropped)", "old_user_interactions_after_T_dropped"),
    ("meta-train users / interactions", ("train_users", "train_interactions")),
    ("meta-train tasks (windows)", "train.tasks"), ("meta-train mean window length", "train.seq_len_mean"),
    ("meta-train mean support targets per task", "train.support_targets_mean"),
    ("meta-valid users (tasks)", "valid.tasks"), ("meta-test users (tasks)", "test.tasks"),
    ("meta-test query targets", "test.query_targets"),
    ("meta-test query targets that are new items", "test.query_targets_new_item_share"),
    ("meta-test sequence items that are new items", "test.new_item_share_of_sequence_items"),
]


def protocol_table(stats: list[dict]) -> str:
    from metarec.report import markdown_table

    rows = []
    for label, key in PROTOCOL_ROWS:
        cells = []
        for st in stats:
            v = " / ".join(str(st[k]) for k in key) if isinstance(key, tuple) else st[key]
            cells.append(f"{v:.1%}" if isinstance(v, float) and ("share" in str(key)) else v)
        rows.append([label, *cells])
    return markdown_table(["", *[st["dataset"] for st in stats]], rows)


def cmd_seqrec_protocol(args, extra) -> None:
    from metarec.data.registry import load_dataset
    from metarec.io import write_json, write_text
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    pcfg = SeqProtocolConfig(new_user_frac=args.new_user_frac, n_support=args.n_support, n_query=args.n_query,
                             max_len=args.max_len)
    stats = [make_seq_protocol(load_dataset(name), pcfg).stats() for name in args.datasets]
    table = protocol_table(stats)
    print(table)
    if args.out:
        out = Path(args.out)
        cmdline = "metarec " + " ".join(args.argv)
        sizes = (f"warm-up (support) length n_support = {pcfg.n_support} items (so {pcfg.n_support - 1} support "
                 f"prefix targets), query length n_query = {pcfg.n_query} next items, max sequence length "
                 f"{pcfg.max_len}, meta-train windows of at most {pcfg.max_len} items (>= {pcfg.min_len}), "
                 f"meta-valid = {pcfg.valid_frac:.0%} of the old users (the latest arrivals)")
        write_text(out, f"# The MML cold-start sequential protocol: statistics\n\nCommand: `{cmdline}`\n\n"
                   f"Rules: metarec/seqrec/protocol.py (module docstring). Sizes: {sizes}. Full ranking over "
                   f"all items of the dataset; only the items of a row's own history prefix are excluded.\n\n"
                   f"{table}\n")
        write_json(out.with_suffix(".json"), {"command": cmdline, "stats": stats})
        print(f"wrote {out} and {out.with_suffix('.json')}")


def register(sub) -> None:
    s = sub.add_parser("seqrec-protocol", help="statistics of the MML cold-start sequential protocol")
    s.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    s.add_argument("--out", help="write a markdown table (and .json next to it)")
    s.add_argument("--new-user-frac", type=float, default=0.1)
    s.add_argument("--n-support", type=int, default=10)
    s.add_argument("--n-query", type=int, default=5)
    s.add_argument("--max-len", type=int, default=50)
    s.set_defaults(func=cmd_seqrec_protocol, takes_overrides=False)

    s = sub.add_parser("seqrec", help="cold-start sequential recommendation (MML protocol): methods x seeds")
    s.add_argument("--dataset", default="ml-100k")
    s.add_argument("--methods", nargs="+", default=["sasrec", "gru4rec", "full", "ptft", "sml", "cbml"],
                   help="registered methods, each optionally NAME@key=value,... (e.g. ptft@model.finetune.steps=3)")
    s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    s.add_argument("--out", help="write OUT.md and OUT.json")
    s.add_argument("--runs-dir", default="runs/seqrec", help="per-run checkpoints and model.pt ('' for none)")
    s.add_argument("--new-user-frac", type=float, default=0.1)
    s.add_argument("--n-support", type=int, default=10)
    s.add_argument("--n-query", type=int, default=5)
    s.add_argument("--max-len", type=int, default=50)
    s.add_argument("--train-frac", type=float, default=1.0, help="use a seeded fraction of the meta-train tasks")
    s.add_argument("--quick", action="store_true", help="smoke test: 2 epochs")
    s.add_argument("--brief-json", action="store_true", help="leave the per-epoch histories out of OUT.json")
    s.add_argument("--merge", nargs="+", help="no training: combine the OUT.json files of earlier runs (e.g. one "
                   "process per seed) into --out")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (cuda when one is visible)")
    s.set_defaults(func=cmd_seqrec, takes_overrides=True)
