"""The Python API, mirroring ``metarec train --protocol P --learner L``: ``metarec.run(...)`` trains one registered
method on one protocol and returns the trained model with its results.

    >>> import metarec
    >>> r = metarec.run("foldin", protocol="user-cold", dataset="ml-100k", seed=0)   # doctest: +SKIP
    >>> r.result["test"]["rmse"], r.model.adapt                                      # doctest: +SKIP

Every family runs through its own runner, exactly as the command line does (same defaults, presets and
numbers); the model is the one the run saved, loaded back by its registry name (so what you get is what a later
``metarec evaluate`` would load). The item warm-up family trains its methods inside the protocol run and saves
none: there ``model`` is None and ``result`` holds every phase's metrics.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec import registry
from metarec.models import load_model

__all__ = ["RunResult", "run"]


@dataclass
class RunResult:
    model: Any  # the trained learner (rating, scenario) or sequence model (sequential); None for warm-up
    result: dict  # the run's record: test and meta-valid metrics, configs, timings
    out: Path | None  # where model.pt / results.json were written (None: nowhere, the run used a temporary folder)


def run(learner: str, protocol: str = "user-cold", dataset: str = "ml-100k", seed: int = 0, *,
        overrides: dict | None = None, view: str = "explicit", preset: str | None = "auto",
        task_file: str | Path | None = None, sequential: dict | None = None, out: str | Path | None = None,
        progress: bool = False) -> RunResult:
    """Train and evaluate ``learner`` on ``protocol`` (see ``metarec learners``) for one seed.

    ``overrides``: flat ``section.key`` settings, as ``--section.key=value`` on the command line (rating family:
    ``train``, ``split``, ``tasks``, ``learner``; scenario: ``train``, ``scenarios``, ``mf``, ``learner``;
    warm-up: ``warmup``, ``backbone``, ``train``, ``metaemb``, ``mwuf``; sequential: ``train``, ``model``).
    ``view``, ``preset`` and ``task_file`` (protocol ``tasks``) are the rating family's; ``sequential`` sets the
    sequential protocol (``SeqProtocolConfig`` fields, e.g. ``{"n_support": 10, "max_len": 50}``).
    ``out``: keep model.pt and results.json there (default: a temporary folder, removed after loading).
    """
    registry.require(learner, protocol)  # one line for an unknown name or protocol, or a protocol off the method's
    family = registry.family_of(protocol)
    over = dict(overrides or {})
    if out is not None:
        return _run(family, learner, protocol, dataset, seed, over, view, preset, task_file, sequential,
                    Path(out), progress)
    with tempfile.TemporaryDirectory(prefix="metarec-run-") as tmp:
        res = _run(family, learner, protocol, dataset, seed, over, view, preset, task_file, sequential,
                   Path(tmp) / "run", progress)
    res.out = None
    return res


def _run(family, learner, protocol, dataset, seed, over, view, preset, task_file, sequential, out: Path,
         progress: bool) -> RunResult:
    if family == "rating":
        from metarec.pipeline import make_config, train_and_evaluate

        if task_file is not None:
            over["split.task_file"] = str(task_file)
        rc, lcfg = make_config(learner, dataset, protocol, seed, view, over, preset=preset)
        result = train_and_evaluate(rc, lcfg, out_dir=out, progress=progress)
        return RunResult(load_model(out)[0], result, out)
    if family == "scenario":
        from metarec.scenario_run import make_run, run_scenario

        rc, lcfg = make_run(learner, dataset, seed, over)
        result = run_scenario(rc, lcfg, out_dir=out, progress=progress)
        return RunResult(load_model(out)[0], result, out)
    if family == "warmup":
        from metarec.config import apply_overrides
        from metarec.ctr.warmup import WarmupRun, dataset_defaults, run_seed
        from metarec.data.registry import load_dataset
        from metarec.io import write_json

        rc = apply_overrides(WarmupRun(warmup=dataset_defaults(dataset)), over)
        results, info = run_seed(load_dataset(dataset), rc, [learner], seed, progress=progress)
        result = {**results[0], "run": info}
        write_json(out / "results.json", result)
        return RunResult(None, result, out)
    from metarec.data.registry import load_dataset
    from metarec.seqrec.command import run_method
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    data = make_seq_protocol(load_dataset(dataset), SeqProtocolConfig(**(sequential or {})))
    result = run_method(learner, data, seed, out, progress, over, {})
    return RunResult(load_model(out)[0], result, out)
