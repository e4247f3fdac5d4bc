"""``metarec tune``: search a learner's registered space with Optuna, selecting on meta-valid tasks only.

One tune = one learner on one dataset, protocol, view and seed. The data are prepared once; every trial trains
the learner with the sampled settings (``LearnerSpec.space``, keys under ``train.`` and ``learner.``) on top
of the base settings (the registry defaults, a preset, explicit overrides) and scores it by the learner's
``train.select`` metric on the meta-valid tasks. Meta-test tasks are never evaluated (``evaluate_test=False``).

The study lives in SQLite (``OUT/study.db``): rerunning the same command after a kill resumes it and runs only
the trials still missing (``--trials`` counts complete trials; a trial the kill interrupted is marked failed and
run again). The sampler is TPE, seeded with ``seed`` plus the number of trials already in the study, so a tune
that is not interrupted is reproducible and a resumed one does not replay the first samples. One tune per OUT
at a time.

Outputs, rewritten atomically after every trial: ``OUT/tune.json`` (the settings, every trial's parameters and
meta-valid metrics, the best, the commands and code versions) and ``OUT/tune.md`` (the trials ranked by the
metric). ``preset_name`` also stores the best settings as a named preset (:mod:`metarec.presets`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from metarec import pipeline
from metarec.errors import MetarecError

KINDS = ("log", "float", "int", "cat")


@dataclass(frozen=True)
class TuneConfig:
    learner: str
    trials: int
    dataset: str = "ml-100k"
    protocol: str = "user-cold"
    view: str = "explicit"
    seed: int = 0
    extra_seeds: tuple[int, ...] = ()  # more seeds: a trial scores the mean meta-valid metric over seed + these
    timeout: float | None = None  # seconds after which no new trial starts (the running one finishes)
    preset: str | None = "auto"  # the base settings: a preset name, "auto" (the working default) or None
    overrides: dict = field(default_factory=dict)  # fixed explicit overrides: they win and are not searched


def _scalar(value):
    """A command-line override as the JSON scalar it spells ("16" -> 16, "8.2" -> 8.2), other text as is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _seeds_text(cfg: TuneConfig) -> str:
    if not cfg.extra_seeds:
        return f"seed {cfg.seed}"
    return "seeds " + ", ".join(map(str, (cfg.seed, *cfg.extra_seeds))) + " (the mean of their meta-valid metrics)"


def learner_space(learner: str) -> dict:
    """The registered search space of ``learner``; a clear error for a learner that has none."""
    from metarec.learners.registry import LEARNERS

    if learner not in LEARNERS:
        raise MetarecError(f"unknown learner {learner!r}: registered learners are {', '.join(LEARNERS)}")
    space = LEARNERS[learner].space
    if not space:
        tunable = [n for n, s in LEARNERS.items() if s.space]
        raise MetarecError(f"learner {learner!r} has no search space (not tunable); tunable learners: "
                           f"{', '.join(tunable)}")
    for key, spec in space.items():
        if not key.startswith(("train.", "learner.")):
            raise MetarecError(f"{learner}: search key {key!r}: a space holds train.* and learner.* keys only "
                               "(the data are prepared once per tune)")
        if not isinstance(spec, tuple | list) or not spec or spec[0] not in KINDS:
            raise MetarecError(f"{learner}: search key {key!r}: {spec!r} is not one of {', '.join(KINDS)}")
    return dict(space)


def suggest(trial, space: dict) -> dict:
    """One trial's settings from ``space`` (see :data:`KINDS`)."""
    out = {}
    for key, spec in space.items():
        kind = spec[0]
        if kind == "cat":
            out[key] = trial.suggest_categorical(key, list(spec[1]))
        elif kind == "int":
            out[key] = trial.suggest_int(key, int(spec[1]), int(spec[2]))
        else:
            out[key] = trial.suggest_float(key, float(spec[1]), float(spec[2]), log=kind == "log")
    return out


def _in_space(value, spec) -> bool:
    if spec[0] == "cat":
        return value in list(spec[1])
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return spec[1] <= value <= spec[2] and (spec[0] != "int" or float(value).is_integer())


def _jsonable_space(space: dict) -> dict:
    return {k: [v[0], list(v[1])] if v[0] == "cat" else list(v) for k, v in space.items()}


def tune(cfg: TuneConfig, out: Path, command: str = "", preset_name: str | None = None,
         presets_path: Path | None = None, progress: bool = True, ds=None) -> dict:
    """Run (or resume) the tune described by ``cfg`` in ``out``; returns the tune.json record.

    ``ds``: a dataset object in place of loading ``cfg.dataset`` by name (tests). ``presets_path``: the preset
    store the base preset is read from and ``preset_name`` written to (default: the shipped one).
    """
    import optuna

    from metarec import presets as _presets
    from metarec.engine.train import lower_is_better
    from metarec.io import code_version

    version = code_version()  # the code that runs, before anything can change the working tree
    if cfg.trials < 1:
        raise MetarecError("--trials must be at least 1")
    space = learner_space(cfg.learner)
    fixed = [k for k in space if k in cfg.overrides]
    for k in fixed:  # an explicit override fixes that setting: it is not searched
        del space[k]
    if not space:
        raise MetarecError(f"the overrides fix every setting of {cfg.learner}'s search space: nothing to tune")
    new_store = preset_name and presets_path is not None and not Path(presets_path).exists()
    store = {} if new_store else _presets.load_store(presets_path)  # --preset-name may start a new store
    preset, base_over = _presets.resolve(store, cfg.learner, cfg.preset, cfg.dataset, cfg.protocol, cfg.view)

    seeds = (cfg.seed, *cfg.extra_seeds)
    if len(set(seeds)) != len(seeds) or any(x < 0 for x in seeds):
        raise MetarecError(f"--seeds must be distinct non-negative integers, got {' '.join(map(str, seeds))}")

    def configs(params: dict, seed: int = cfg.seed) -> tuple:
        """A trial's configs: the base preset's overrides (as recorded at the start), the fixed overrides, the
        sampled ``params``; the run is labelled with the base preset."""
        r, lc = pipeline.make_config(cfg.learner, cfg.dataset, cfg.protocol, seed, cfg.view,
                                     {**base_over, **cfg.overrides, **params})
        return replace(r, preset=preset), lc

    metric = configs({})[0].train.select
    direction = "minimize" if lower_is_better(metric) else "maximize"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    study = optuna.create_study(study_name="metarec-tune", storage=f"sqlite:///{(out / 'study.db').resolve()}",
                                load_if_exists=True, direction=direction)
    recorded = study.user_attrs.get("identity")
    if recorded is not None and cfg.preset == _presets.AUTO:
        # resuming without --preset: keep the base the study began with, even if the working default has changed
        # since (e.g. this very tune stored it with --preset-name default)
        preset, base_over = recorded["preset"], recorded["base"]
    identity = {"learner": cfg.learner, "dataset": cfg.dataset, "protocol": cfg.protocol, "view": cfg.view,
                "seed": cfg.seed, "preset": preset, "base": base_over, "overrides": cfg.overrides,
                "space": _jsonable_space(space), "metric": metric}
    if cfg.extra_seeds:  # (absent for one seed, so the studies made before the option still resume)
        identity["seeds"] = list(seeds)
    if recorded is None:
        study.set_user_attr("identity", identity)
    elif recorded != _roundtrip(identity):
        diff = sorted(k for k in identity if recorded.get(k) != _roundtrip(identity)[k])
        raise MetarecError(f"{out / 'study.db'} holds another tune (it differs in {', '.join(diff)}); "
                           "choose another --out")
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)  # killed mid-trial
    invocations = [*study.user_attrs.get("invocations", []), {"command": command, "code": version}]
    study.set_user_attr("invocations", invocations)

    n_done = _count(study, optuna.trial.TrialState.COMPLETE)
    n_startup = max(3, min(10, cfg.trials // 3))
    study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(study.trials), n_startup_trials=n_startup)
    if not study.trials:  # the search starts from the base preset's values where they lie in the space
        start = {k: v for k, v in base_over.items() if k in space and _in_space(v, space[k])}
        if start:
            study.enqueue_trial(start)

    preps = {s: pipeline.prepare(configs({}, s)[0], ds) for s in seeds}  # once per tune: trials reuse the tasks
    pretrained: dict = {s: {} for s in seeds}  # pooled pretrainings shared by trials that differ in fine-tuning

    def objective(trial) -> float:
        params = suggest(trial, space)
        t0 = time.perf_counter()
        valids, epochs = [], []
        for s in seeds:
            t_run, t_lcfg = configs(params, s)
            res = pipeline.train_and_evaluate(t_run, t_lcfg, progress=False, prep=preps[s], pretrained=pretrained[s],
                                              evaluate_test=False)
            valids.append(res["valid"])
            epochs.append(res["best_epoch"])
        valid = {k: float(sum(v[k] for v in valids) / len(valids)) for k in valids[0]}  # mean over the seeds
        value = float(valid[metric])
        trial.set_user_attr("valid", valid)
        trial.set_user_attr("best_epoch", epochs[0] if len(epochs) == 1 else epochs)
        if cfg.extra_seeds:
            trial.set_user_attr("valid_per_seed", [float(v[metric]) for v in valids])
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        if progress:
            shown = "  ".join(f"{k}={_fmt(v)}" for k, v in params.items())
            n = _count(study, optuna.trial.TrialState.COMPLETE) + 1
            print(f"trial {trial.number} ({n}/{cfg.trials}): valid {metric} {value:.4f}  {shown}  "
                  f"(best epoch {' '.join(map(str, epochs))}, {time.perf_counter() - t0:.1f} s)", flush=True)
        return value if math.isfinite(value) else float("nan")  # NaN: optuna records a failed trial

    def after_trial(study, trial) -> None:  # the files follow the study, so a kill loses nothing written
        _write(study, cfg, out, identity, metric, direction, n_startup)

    remaining = cfg.trials - n_done
    if remaining > 0:
        if progress and n_done:
            print(f"resuming {out / 'study.db'}: {n_done} trials complete, {remaining} to run", flush=True)
        study.optimize(objective, n_trials=remaining, timeout=cfg.timeout, callbacks=[after_trial],
                       gc_after_trial=False)
    elif progress:
        print(f"{out / 'study.db'} already has {n_done} complete trials", flush=True)
    record = _write(study, cfg, out, identity, metric, direction, n_startup)
    if record["best"] is None:
        raise MetarecError(f"no trial of {cfg.learner} completed; see {out / 'tune.md'}")
    if preset_name:
        best = record["best"]
        fixed_over = {k: _scalar(v) for k, v in cfg.overrides.items() if k.startswith(("train.", "learner."))}
        entry = {"overrides": {**base_over, **fixed_over, **best["params"]},
                 "when": {"dataset": cfg.dataset, "view": cfg.view}, "command": command, "code": version,
                 "note": (f"tuned by `metarec tune`: {record['complete']} trials of TPE on {cfg.dataset} "
                          f"{cfg.protocol} {cfg.view} {_seeds_text(cfg)}; best meta-valid {metric} "
                          f"{best['value']:.4f} (trial {best['number']})")}
        path = _presets.save_preset(presets_path, cfg.learner, preset_name, entry)
        record["preset_written"] = {"name": preset_name, "store": str(path)}
        if progress:
            print(f"stored preset {cfg.learner}/{preset_name} in {path}")
    return record


def _roundtrip(obj):
    """``obj`` as it reads back from the study's JSON user attributes (tuples become lists)."""
    import json

    return json.loads(json.dumps(obj))


def _count(study, state) -> int:
    return sum(t.state == state for t in study.get_trials(deepcopy=False))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _write(study, cfg: TuneConfig, out: Path, identity: dict, metric: str, direction: str, n_startup: int) -> dict:
    """tune.json and tune.md from the study as it stands."""
    import optuna

    from metarec.io import write_json, write_text
    from metarec.report import markdown_table

    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            continue
        trials.append({"number": t.number, "state": t.state.name, "params": t.params,
                       "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                       "valid": t.user_attrs.get("valid"), "best_epoch": t.user_attrs.get("best_epoch"),
                       "seconds": t.user_attrs.get("seconds")})
        if "valid_per_seed" in t.user_attrs:
            trials[-1]["valid_per_seed"] = t.user_attrs["valid_per_seed"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    sign = 1.0 if direction == "minimize" else -1.0
    ranked = sorted(complete, key=lambda t: (sign * t["value"], t["number"]))
    best = ranked[0] if ranked else None
    invocations = study.user_attrs.get("invocations", [])
    record = {**identity, "direction": direction, "trials_requested": cfg.trials, "complete": len(complete),
              "sampler": {"name": "TPESampler", "seed": cfg.seed, "n_startup_trials": n_startup,
                          "note": "a resumed tune reseeds with seed + the number of trials already in the study"},
              "command": invocations[-1]["command"] if invocations else "",
              "code": invocations[-1]["code"] if invocations else "unknown", "invocations": invocations,
              "best": best, "trials": trials}
    write_json(out / "tune.json", record)

    keys = list(identity["space"])
    rows = [[i + 1, t["number"], f"{t['value']:.4f}", *(_fmt(t["params"].get(k, "")) for k in keys),
             t["best_epoch"], f"{t['seconds']:.1f}" if t["seconds"] is not None else ""]
            for i, t in enumerate(ranked)]
    rows += [["-", t["number"], t["state"].lower(), *(_fmt(t["params"].get(k, "")) for k in keys), "", ""]
             for t in trials if t["state"] != "COMPLETE"]
    fixed = {k: v for k, v in {**identity["base"], **identity["overrides"]}.items() if k not in identity["space"]}
    base = (f"preset `{identity['preset']}`" if identity["preset"] else "the registry defaults") + (
        f"; fixed: {', '.join(f'{k}={v}' for k, v in fixed.items())}" if fixed else "")
    runs = "\n".join(f"    {i['command']}    (code {i['code']})" for i in invocations)
    best_line = (f"Best: trial {best['number']}, meta-valid {metric} {best['value']:.4f}: "
                 + ", ".join(f"`{k}={v}`" for k, v in best["params"].items())) if best else "No trial completed."
    text = (f"# Tuning {cfg.learner}: {cfg.dataset}, {cfg.protocol}, {cfg.view} view, {_seeds_text(cfg)}\n\n"
            f"Made by (code version in brackets; more than one line: the tune was resumed):\n\n{runs}\n\n"
            f"{len(complete)} of {cfg.trials} trials complete; TPE (seed {cfg.seed}, {n_startup} random start "
            f"trials); base: {base}. Selection on the meta-valid tasks only ({metric}, "
            f"{'lower' if direction == 'minimize' else 'higher'} is better); meta-test was not evaluated.\n\n"
            f"{best_line}\n\n"
            + markdown_table(["rank", "trial", f"valid {metric}", *keys, "best epoch", "seconds"], rows) + "\n")
    write_text(out / "tune.md", text)
    return record
