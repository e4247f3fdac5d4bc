"""``metarec scenario``: s²Meta's scenario-specific protocol end to end (Du et al. KDD'19, 5.1 and A.4).

One run: dataset -> scenarios (:mod:`metarec.scenarios`) -> pretrained MF embeddings (:mod:`metarec.nets.mf`,
cached) -> learner -> training with the library's outer loop (``metarec.engine.train.fit``; model selection
on meta-valid scenarios by Recall@20) -> adapt-time hyperparameters chosen on meta-valid where a learner
declares ``adapt_grid`` (FT, EMCDR) -> Recall@10/20/50 on meta-test scenarios -> ``model.pt`` and
``results.json``. Meta-test scenarios are touched once, at the end.

What each learner trains on (A.4: "all the comparative methods use the same training data"):
- ``s2meta``: episodes on meta-train scenarios (D_train -> scenario-specific learning -> hinge loss on
  D_test), each meta-train scenario ``repeat`` times per epoch;
- ``scenario-ft``: the same network trained on the pooled meta-train scenario interactions, fine-tuned on
  D_train;
- ``neumf``: every training interaction (source domain, scenario-only users, every D_train, meta-train
  D_test) with sampled negatives, GMF and MLP pretrained first;
- ``scenario-itempop``: counts over the same pool; ``emcdr``: no training, fitted per scenario.

Sub-commands: ``stats``, ``train``, ``evaluate``, ``compare`` (markdown + JSON, mean ± std over seeds) and
``trace`` (the learning process of Figure 2 as a PNG). Each seed draws its own scenario split, D_train
samples, scenario-only users, embeddings and initialisation.
"""

from __future__ import annotations

import itertools
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from metarec import registry
from metarec.config import apply_overrides, config_from_dict, parse_entry
from metarec.data.registry import load_dataset
from metarec.data.types import data_fingerprint
from metarec.engine.train import TrainConfig, fit, train_learner
from metarec.errors import MetarecError
from metarec.io import write_json
from metarec.learners.base import Context, Learner, load_learner
from metarec.learners.registry import LEARNERS
from metarec.nets.mf import MFConfig, pretrained_embeddings
from metarec.report import markdown_table, with_core
from metarec.scenarios import ScenarioConfig, ScenarioData, evaluate_scenarios, prepare_scenarios
from metarec.tasks import Task, sample_negatives

SCENARIO_LEARNERS = registry.names("scenario")  # s2meta, scenario-itempop, neumf, scenario-ft, emcdr
METRICS = ("recall@10", "recall@20", "recall@50")

TRAIN_DEFAULTS = {
    "s2meta": TrainConfig(epochs=10, meta_batch=4, lr=3e-3, patience=4, select="recall@20"),
    "neumf": TrainConfig(epochs=20, meta_batch=16, lr=1e-3, patience=3, select="recall@20"),
    "scenario-ft": TrainConfig(epochs=20, meta_batch=16, lr=1e-3, patience=3, select="recall@20"),
}


@dataclass(frozen=True)
class ScenarioRunConfig:
    learner: str = "s2meta"
    dataset: str = "ml-100k"
    scenarios: ScenarioConfig = field(default_factory=ScenarioConfig)
    mf: MFConfig = field(default_factory=MFConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(select="recall@20"))
    repeat: int = 5  # s2meta: each meta-train scenario appears this many times per epoch
    pool_chunk: int = 256  # pooled learners: positives per pseudo-task
    pool_negatives: int = 4  # pooled learners: sampled negatives per positive
    eval_batch: int = 4
    # learners with a pooled start (s2meta learner.init=pooled): stage 0's training, FT's recipe (seed: the run's)
    start: TrainConfig = field(default_factory=lambda: TRAIN_DEFAULTS["scenario-ft"])

    def __post_init__(self):
        from metarec.checks import check

        check(self, "", pos_int=("repeat", "pool_chunk", "pool_negatives", "eval_batch"))


@dataclass
class ScenarioPrepared:
    data: ScenarioData
    users: torch.Tensor  # (n_users, d) pretrained user embeddings
    items: torch.Tensor  # (n_items, d) pretrained item embeddings
    ctx: Context


def scenario_context(n_users: int, n_items: int) -> Context:
    """Scenario learners use no side features: an empty feature context that only carries the sizes."""
    return Context(torch.zeros(n_users, 0, dtype=torch.long), torch.zeros(n_items, 0, dtype=torch.long),
                   torch.zeros(n_items, 0), [], [], None)


def make_run(learner: str, dataset: str, seed: int, overrides: dict) -> tuple[ScenarioRunConfig, object]:
    if learner not in SCENARIO_LEARNERS:
        raise MetarecError(f"{learner!r} is not a scenario learner: choose one of {', '.join(SCENARIO_LEARNERS)}")
    run = ScenarioRunConfig(learner=learner, dataset=dataset, scenarios=ScenarioConfig(seed=seed),
                            mf=MFConfig(seed=seed),
                            train=replace(TRAIN_DEFAULTS.get(learner, TrainConfig(select="recall@20")), seed=seed))
    learner_over = {k[len("learner."):]: v for k, v in overrides.items() if k.startswith("learner.")}
    run = apply_overrides(run, {k: v for k, v in overrides.items() if not k.startswith("learner.")})
    lcfg = LEARNERS[learner].default()
    fixed = {}
    if hasattr(lcfg, "emb_dim"):
        fixed["emb_dim"] = run.mf.dim
    if hasattr(lcfg, "seed"):
        fixed["seed"] = seed
    if hasattr(lcfg, "loss"):
        fixed["loss"] = "bce"
    lcfg = apply_overrides(apply_overrides(lcfg, fixed), learner_over, "learner.")
    if getattr(lcfg, "emb_dim", run.mf.dim) != run.mf.dim:
        raise MetarecError("learner.emb_dim must equal mf.dim (the pretrained embeddings); set mf.dim instead")
    return run, lcfg


def prepare(run: ScenarioRunConfig, ds=None) -> ScenarioPrepared:
    ds = ds if ds is not None else load_dataset(run.dataset)
    data = prepare_scenarios(ds, run.scenarios)
    users, items = pretrained_embeddings(data, run.mf)
    return ScenarioPrepared(data, users, items, scenario_context(data.dataset.n_users, data.dataset.n_items))


def _with_negatives(owner: int, u: np.ndarray, i: np.ndarray, candidates: np.ndarray, k: int,
                    rng: np.random.Generator, known: np.ndarray) -> Task:
    neg = sample_negatives(u, candidates, k, rng, known)  # (P, k)
    e = np.array([], dtype=np.int64)
    return Task(owner, np.r_[u, np.repeat(u, k)], np.r_[i, neg.ravel()],
                np.r_[np.ones(len(u), np.float32), np.zeros(neg.size, np.float32)], e, e, e.astype(np.float32))


def pooled_tasks(data: ScenarioData, run: ScenarioRunConfig, which: str) -> list[Task]:
    """Pseudo-tasks of pooled positives, each followed by its sampled negatives (``split_triples`` layout).

    ``which="scenarios"``: the meta-train scenarios' interactions, negatives from the same scenario;
    ``"all"``: every training interaction, negatives from all items. Negatives are never training pairs.
    """
    rng = np.random.default_rng([run.scenarios.seed, 11])
    size, k, known = run.pool_chunk, run.pool_negatives, data.train_codes
    out = []
    if which == "scenarios":
        for t in data.train:
            u = np.r_[t.s_user[t.s_rating > 0], t.q_user[t.q_rating > 0]]
            i = np.r_[t.s_item[t.s_rating > 0], t.q_item[t.q_rating > 0]]
            perm = rng.permutation(len(u))
            for lo in range(0, len(u), size):
                j = perm[lo:lo + size]
                out.append(_with_negatives(t.owner, u[j], i[j], t.extra["items"], k, rng, known))
    else:
        frame = data.training_frame()
        u, i = frame["user"].to_numpy(), frame["item"].to_numpy()
        perm = rng.permutation(len(u))
        items = np.arange(data.dataset.n_items)
        for lo in range(0, len(u), size):
            j = perm[lo:lo + size]
            out.append(_with_negatives(-1, u[j], i[j], items, k, rng, known))
    return out


def _evaluator(run: ScenarioRunConfig, prep: ScenarioPrepared):
    def ev(learner, tasks, per_scenario=False):
        return evaluate_scenarios(learner, tasks, prep.data.train_codes, batch_size=run.eval_batch,
                                  per_scenario=per_scenario)
    return ev


def select_adapt(learner, grid: dict, valid_fn, metric: str) -> list[dict]:
    """Choose adapt-time hyperparameters on meta-valid: every combination of ``grid``; keeps the best."""
    base = learner.config
    records, best, best_cfg = [], -np.inf, base
    for combo in itertools.product(*grid.values()):
        learner.config = replace(base, **dict(zip(grid, combo, strict=True)))
        val = valid_fn(learner)[metric]
        records.append({**dict(zip(grid, combo, strict=True)), metric: val})
        if val > best:
            best, best_cfg = val, learner.config
    learner.config = best_cfg
    return records


def _ft_key(run: ScenarioRunConfig, train: TrainConfig, ft_cfg) -> str:
    """Everything that determines FT's trained network (``cache`` key shared by FT and a pooled start); the
    adapt-time step count and rate count too (they score the epochs of its model selection)."""
    return repr(("ft-network", asdict(run.scenarios), asdict(run.mf), run.pool_chunk, run.pool_negatives,
                 asdict(train), ft_cfg.emb_dim, ft_cfg.arch, ft_cfg.margin, ft_cfg.steps, ft_cfg.lr))


def pooled_start(learner, run: ScenarioRunConfig, prep: ScenarioPrepared, valid_fn, checkpoint: Path | None = None,
                 progress: bool = True, identity: dict | None = None, cache: dict | None = None) -> dict:
    """Stage 0 of a learner with ``pooled_start`` (s²Meta ``init="pooled"``): FT's network, trained exactly as
    ``scenario-ft`` trains it (``run.start``, by default FT's training defaults, at this seed; the same pooled
    tasks and meta-valid selection), becomes the learner's start (``set_start``). Returns that fit's record.
    ``cache``: a dict shared by the runs of one seed; an FT run of that seed with the same training (an FT entry
    earlier in the same ``scenario compare``) hands its network over instead of training it again."""
    from metarec.learners.scenario_ft import ScenarioFT, ScenarioFTConfig

    cfg = learner.config
    ft_cfg = ScenarioFTConfig(emb_dim=cfg.emb_dim, arch=cfg.arch, margin=cfg.margin)
    train = replace(run.start, seed=run.train.seed)
    key = _ft_key(run, train, ft_cfg)
    if cache is not None and key in cache:
        params, fitted = cache[key]
        learner.set_start(params)
        return {**fitted, "shared": True}
    torch.manual_seed(run.train.seed)  # FT's own run seeds here, then builds its network
    ft = ScenarioFT(prep.ctx, ft_cfg)
    ft.set_embeddings(prep.users, prep.items)
    fitted = fit(ft, pooled_tasks(prep.data, run, "scenarios"), valid_fn, train, checkpoint=checkpoint,
                 progress=progress, identity=None if identity is None else {**identity, "stage": "pooled_start"})
    params = {k: v.detach().clone() for k, v in ft._theta(1).items()}
    learner.set_start(params)
    record = {"best_epoch": fitted["best_epoch"], "best": fitted["best"], "history": fitted["history"],
              "train": asdict(train)}
    if cache is not None:
        cache[key] = (params, record)
    return record


def run_scenario(run: ScenarioRunConfig, lcfg, prep: ScenarioPrepared | None = None, out_dir: Path | None = None,
                 progress: bool = True, label: str | None = None, cache: dict | None = None) -> dict:
    """Train (select on meta-valid), evaluate on meta-test, optionally write ``model.pt``/``results.json``.
    ``cache``: shared by the runs of one seed (FT's trained network for a pooled start, see :func:`pooled_start`)."""
    from metarec.learners.neumf import fit_neumf

    prep = prep or prepare(run)
    data = prep.data
    spec = LEARNERS[run.learner]
    ev = _evaluator(run, prep)

    def valid_fn(m):
        return ev(m, data.valid)

    def make(cfg):
        m = spec.cls(prep.ctx, cfg)
        m.set_embeddings(prep.users, prep.items)
        return m

    torch.manual_seed(run.train.seed)
    t0 = time.perf_counter()
    ckpt = out_dir / "checkpoint.pt" if out_dir is not None else None
    if run.learner == "neumf":
        pool = pooled_tasks(data, run, "all")
        learner, fitted = fit_neumf(make, lcfg, lambda m: fit(m, pool, valid_fn, run.train, progress=progress))
    else:
        learner = make(lcfg)
        identity = None if ckpt is None else {
            "run": {k: v for k, v in asdict(run).items() if k != "train"}, "learner": asdict(lcfg),
            "data": data_fingerprint(data.dataset),
            "scenarios": data.describe()}
        start = None
        if learner.pooled_start:
            start = pooled_start(learner, run, prep, valid_fn, out_dir / "checkpoint-start.pt" if out_dir else None,
                                 progress, identity, cache)
        fitted = train_learner(learner, lambda: pooled_tasks(data, run, "scenarios") if learner.pooled
                               else data.train * run.repeat, data.training_frame(), valid_fn, run.train,
                               checkpoint=ckpt, progress=progress, identity=identity)
        if start is not None:
            fitted["pretrain"] = start
        if run.learner == "scenario-ft" and cache is not None:  # a pooled start of this seed may reuse it
            cache[_ft_key(run, run.train, lcfg)] = (
                {k: v.detach().clone() for k, v in learner._theta(1).items()},
                {"best_epoch": fitted["best_epoch"], "best": fitted["best"], "history": fitted["history"],
                 "train": asdict(run.train)})
    selection = None
    if learner.adapt_grid:
        selection = select_adapt(learner, learner.adapt_grid, valid_fn, run.train.select)
        fitted["best"] = valid_fn(learner)
    train_s = time.perf_counter() - t0 + fitted.get("resumed_seconds", 0.0)  # + epochs of resumed processes
    test = ev(learner, data.test, per_scenario=True)
    per = test.pop("per_scenario")
    result = {"learner": run.learner, "label": label or run.learner, "dataset": run.dataset,
              "seed": run.scenarios.seed, "test": test, "per_scenario": per, "valid": fitted["best"],
              "best_epoch": fitted["best_epoch"], "train_seconds": train_s, "history": fitted["history"],
              "adapt_selection": selection, "run_config": asdict(run), "learner_config": asdict(learner.config),
              "scenarios": data.describe(),
              "test_scenarios": [t.extra["scenario"] for t in data.test]}
    if "pretrain" in fitted:
        result["pretrain"] = fitted["pretrain"]
    result = with_core(result, method=run.learner, family="scenario", protocol="scenario", dataset=run.dataset)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        learner.save(out_dir / "model.pt", extra={"run_config": asdict(run), "label": result["label"]})
        write_json(out_dir / "results.json", result)
    return result


# -------------------------------------------------------------------------------------------- commands


def _overrides(args, extra) -> dict:
    from metarec.commands import run_overrides as parse

    return parse(args, extra)


def _fmt_metrics(d: dict) -> str:
    return "  ".join(f"{k} {d[k]:.4f}" for k in METRICS if k in d)


def cmd_stats(args, extra) -> None:
    run, _ = make_run("s2meta", args.dataset, args.seed, _overrides(args, extra))
    data = prepare_scenarios(load_dataset(run.dataset), run.scenarios)
    print(" ".join(f"{k}={v}" for k, v in data.describe().items()))
    header, rows = data.rows()
    print(markdown_table(header, rows))


def cmd_train(args, extra) -> None:
    run, lcfg = make_run(args.learner, args.dataset, args.seed, _overrides(args, extra))
    out = Path(args.out or f"runs/scenario-{args.learner}-{args.dataset}-s{args.seed}")
    res = run_scenario(run, lcfg, out_dir=out, progress=not args.quiet)
    print(f"{args.learner} on {args.dataset} scenarios, seed {args.seed}: best epoch {res['best_epoch']}, "
          f"{res['train_seconds']:.1f} s")
    print(f"test: {_fmt_metrics(res['test'])}  ({res['test']['tasks']} scenarios, {res['test']['users']} users)")
    print(f"saved {out / 'model.pt'} and {out / 'results.json'}")


def load_run(path: Path):
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise MetarecError(f"{path}: no such checkpoint")
    learner, extra = load_learner(path)
    rc = extra.get("run_config") if isinstance(extra, dict) else None
    if not isinstance(rc, dict) or "scenarios" not in rc:
        raise MetarecError(f"{path}: not a model of `metarec scenario train` (a `metarec train` model evaluates "
                           "with `metarec evaluate`)")
    try:
        return learner, config_from_dict(ScenarioRunConfig, rc)
    except TypeError as e:
        raise MetarecError(f"{path}: its run config is not one of this version ({e})") from None


def cmd_evaluate(args, extra) -> None:
    learner, run = load_run(args.checkpoint)
    prep = prepare(run)
    res = _evaluator(run, prep)(learner, getattr(prep.data, args.part))
    print(f"{run.learner} on {run.dataset} scenarios, meta-{args.part}: {_fmt_metrics(res)}  ({res['tasks']} "
          "scenarios)")


def cmd_compare(args, extra) -> None:
    from metarec.experiment import Experiment, compare

    over = _overrides(args, extra)
    entries = [parse_entry(e) for e in args.learners]
    for name, _, own in entries:  # every entry checked before anything trains
        make_run(name, args.dataset, args.seeds[0], {**over, **own})

    def records(seed: int, skip: set[str]):
        preps: dict = {}
        cache: dict = {}  # FT's network for a pooled start of the same seed
        for name, label, own in entries:
            if label in skip:
                continue
            run, lcfg = make_run(name, args.dataset, seed, {**over, **own})
            key = repr((asdict(run.scenarios), asdict(run.mf)))
            if key not in preps:
                preps[key] = prepare(run)
            out_dir = Path(args.save) / f"{label}-s{seed}" if args.save else None
            yield run_scenario(run, lcfg, prep=preps[key], progress=not args.quiet, label=label, out_dir=out_dir,
                               cache=cache)

    compare(Experiment("scenario", "scenario", args.dataset, records), args.seeds, args.argv, args.out)


def cmd_merge(args, extra) -> None:
    """Merge the JSON of several ``compare`` runs (e.g. one per seed, run in parallel) into one table."""
    from metarec.experiment import merge

    merge(args.inputs, args.out, args.argv, labels=args.labels, title=args.title)


class _Fixed:
    """A learner stand-in whose adapt returns fixed parameters (per-step recall in ``trace``)."""

    def __init__(self, learner, theta):
        self.learner, self.theta = learner, theta

    def eval(self):
        return self

    def adapt(self, support):
        return self.learner.adapted_from(self.theta, support.owner)


def learning_process(learner, run: ScenarioRunConfig, prep: ScenarioPrepared, scenario: str | None = None) -> dict:
    """Figure 2's data for one meta-test scenario: per step the training loss, the stop probability, the
    test Recall@20 and the mean input and forget gates of every parameter group."""
    from metarec.tasks import collate

    tasks = {t.extra["scenario"]: t for t in prep.data.test}
    name = scenario or max(tasks, key=lambda k: len(np.unique(tasks[k].q_user)))
    if name not in tasks:
        raise MetarecError(f"{name!r} is not a meta-test scenario of this run: {', '.join(tasks)}")
    task = tasks[name]
    tr = learner.learning_trace(collate([task]))
    recall = [evaluate_scenarios(_Fixed(learner, th), [task], prep.data.train_codes)["recall@20"]
              for th in tr["thetas"]]
    gates = {k: {"input": [float(a[0]) for a, _ in v], "forget": [float(b[0]) for _, b in v]}
             for k, v in tr["gates"].items()}
    return {"scenario": name, "steps": int(tr["steps"][0]), "loss": [float(x[0]) for x in tr["loss"]],
            "stop_p": [float(x[0]) for x in tr["stop_p"]], "recall@20": recall, "gates": gates}


def plot_learning_process(proc: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metarec.io import atomic_path

    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    ax = axes[0]
    t = np.arange(1, len(proc["loss"]) + 1)
    ax.plot(t, proc["loss"], label="training loss", color="C0")
    ax.plot(t, proc["stop_p"], label="stop probability", color="C3")
    ax.plot(np.arange(len(proc["recall@20"])), proc["recall@20"], label="test Recall@20", color="C2")
    ax.set_xlabel("step")
    ax.set_title(f"{proc['scenario']}: stopped after {proc['steps']} steps")
    ax.legend(fontsize=8)
    panels = [("input", "weight"), ("input", "bias"), ("forget", "weight"), ("forget", "bias")]
    for ax, (gate, kind) in zip(axes[1:], panels, strict=True):
        for k, v in proc["gates"].items():
            if k.endswith(kind):
                ax.plot(np.arange(1, len(v[gate]) + 1), v[gate], label=k.rsplit(".", 1)[0])
        ax.set_title(f"mean {gate} gate, {'weights' if kind == 'weight' else 'biases'}")
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def cmd_trace(args, extra) -> None:
    learner, run = load_run(args.checkpoint)
    if type(learner).learning_trace is Learner.learning_trace:  # the declared hook's default: nothing to trace
        raise MetarecError(f"{run.learner} has no learning process to trace (s2meta has)")
    prep = prepare(run)
    proc = learning_process(learner, run, prep, args.scenario)
    out = Path(args.out)
    plot_learning_process(proc, out.with_suffix(".png"), f"s²Meta learning process on {run.dataset} (seed "
                          f"{run.scenarios.seed}), meta-test scenario {proc['scenario']}")
    write_json(out.with_suffix(".json"), {"command": "metarec " + shlex.join(args.argv), **proc})
    print(f"{proc['scenario']}: {proc['steps']} steps, test Recall@20 {proc['recall@20'][0]:.4f} -> "
          f"{proc['recall@20'][-1]:.4f}; wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")


def register(sub) -> None:
    p = sub.add_parser("scenario", help="s²Meta's scenario-specific few-shot protocol: stats, train, compare, "
                       "trace")
    ss = p.add_subparsers(dest="scenario_command", required=True, metavar="SUBCOMMAND")

    def common(s, many=False):
        s.add_argument("--dataset", default="ml-100k")
        if many:
            s.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
        else:
            s.add_argument("--seed", type=int, default=0)
        s.add_argument("--config", help="a YAML file of overrides (same keys as --a.b=value)")
        s.add_argument("--quiet", action="store_true", help="no progress bars")

    s = ss.add_parser("stats", help="the scenarios of one seed: parts, sizes, D_train, test pairs")
    common(s)
    s.set_defaults(func=cmd_stats, takes_overrides=True)

    s = ss.add_parser("train", help="train and evaluate one scenario learner; save model.pt and results.json")
    s.add_argument("--learner", default="s2meta", help=f"one of {', '.join(SCENARIO_LEARNERS)}")
    common(s)
    s.add_argument("--out", help="output directory (default runs/scenario-LEARNER-DATASET-sSEED)")
    s.set_defaults(func=cmd_train, takes_overrides=True)

    s = ss.add_parser("evaluate", help="reload a model.pt of `scenario train` and evaluate it again")
    s.add_argument("checkpoint")
    s.add_argument("--part", default="test", choices=["test", "valid"])
    s.set_defaults(func=cmd_evaluate, takes_overrides=False)

    s = ss.add_parser("compare", help="several scenario learners over seeds; markdown table + JSON")
    s.add_argument("--learners", nargs="+", default=list(SCENARIO_LEARNERS),
                   help="entries [LABEL=]NAME[@key=value,...], e.g. RandInit=s2meta@learner.init=random")
    common(s, many=True)
    s.add_argument("--out", help="write OUT.md and OUT.json")
    s.add_argument("--save", help="also save every run (model.pt, results.json) under SAVE/LABEL-sSEED")
    s.set_defaults(func=cmd_compare, takes_overrides=True)

    s = ss.add_parser("merge", help="merge the JSON files of several `scenario compare` runs into one table")
    s.add_argument("inputs", nargs="+")
    s.add_argument("--labels", nargs="+", help="keep these methods, in this order")
    s.add_argument("--title")
    s.add_argument("--out", required=True, help="write OUT.md and OUT.json")
    s.set_defaults(func=cmd_merge, takes_overrides=False)

    s = ss.add_parser("trace", help="Figure 2: the learning process of a trained s2meta on a meta-test scenario")
    s.add_argument("checkpoint", help="a run directory or model.pt of `metarec scenario train --learner s2meta`")
    s.add_argument("--scenario", help="a meta-test scenario (default: the one with most test users)")
    s.add_argument("--out", default="docs/results/s2meta/learning_process")
    s.set_defaults(func=cmd_trace, takes_overrides=False)
