"""The contract every registry entry keeps, on every protocol it declares, on tiny data: one epoch trains and
evaluates, the saved model reloads and predicts exactly what it predicted before saving, and the same seed gives
the same numbers. Parametrised over metarec.registry itself, so a new entry is tested the day it is added."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec import registry
from metarec.learners.base import Learner
from metarec.models import load_model

RATING_CASES = [(n, p) for n in registry.names("rating") for p in registry.method(n).protocols
                if registry.PROTOCOLS[p] == "rating"]
# learner-specific sizes that keep one epoch on tiny data to a second (the mathematics untouched)
SMALL = {"mamo": {"learner.emb_dim": 8}, "tanp": {"learner.emb_dim": 8}, "metafold": {"learner.start.iters": 2},
         "foldin": {"learner.iters": 2}}


def _has_core(res: dict, name: str, family: str, protocol: str) -> None:
    """One result schema: every family's record starts with the shared core."""
    from metarec.report import RESULT_CORE

    assert list(res)[:4] == list(RESULT_CORE[:4]) and set(RESULT_CORE) <= set(res)
    assert (res["method"], res["family"], res["protocol"]) == (name, family, protocol)
    assert isinstance(res["test"], dict) and isinstance(res["valid"], dict) and res["train_seconds"] >= 0


def test_every_entry_resolves():
    for m in registry.METHODS.values():  # every entry's names resolve (classes, configs, run functions)
        for impl in m.impls.values():
            assert callable(impl.load()) and (not impl.config or impl.make_config() is not None)
            assert not impl.model or registry.resolve(impl.model)


@pytest.fixture(scope="module")
def rating_data(tmp_path_factory):
    from tests.conftest import synthetic_frames, write_atomic

    d = write_atomic(tmp_path_factory.mktemp("contract"), "tiny", *synthetic_frames(n_users=80, n_items=60))
    return str(d)


def _rating_run(name, protocol, data_dir, tmp_path):
    from metarec.pipeline import make_config, prepare

    over = {"train.epochs": 1, "tasks.min_inter": 4, "tasks.n_query": 2, **SMALL.get(name, {})}
    if protocol == "tasks":  # the user-cold split of the same data, exported as a task file
        from metarec.task_files import write_task_file

        run, _ = make_config(name, data_dir, "user-cold", 0, "explicit", over)
        p = prepare(run)
        path = tmp_path / "tasks.json"
        if not path.exists():
            write_task_file(path, p.dataset, {"train": p.train, "valid": p.valid, "test": p.test}, p.split.train)
        over["split.task_file"] = str(path)
    return make_config(name, data_dir, protocol, 0, "explicit", over)


@pytest.mark.parametrize("name, protocol", RATING_CASES)
def test_rating_entries(name, protocol, rating_data, tmp_path):
    from metarec.pipeline import evaluator, prepare, train_and_evaluate

    run, lcfg = _rating_run(name, protocol, rating_data, tmp_path)
    prep = prepare(run)
    res = train_and_evaluate(run, lcfg, out_dir=tmp_path / "run", progress=False, prep=prep)
    assert np.isfinite(res["test"]["rmse"]) and res["test"]["tasks"] == len(prep.test)
    _has_core(res, name, "rating", protocol)
    learner, extra = load_model(tmp_path / "run")
    assert isinstance(learner, Learner) and learner.name == name
    with torch.no_grad():
        again = evaluator(run, prep)(learner, prep.test)
    assert again == res["test"]  # the reloaded model predicts exactly the same
    twice = train_and_evaluate(run, lcfg, progress=False, prep=prepare(run))
    assert twice["test"] == res["test"]  # same seed, same numbers


@pytest.mark.parametrize("name", registry.names("scenario"))
def test_scenario_entries(name, tmp_path):
    from metarec.scenario_run import _evaluator, make_run, prepare, run_scenario
    from tests.learners.test_scenario_baselines import tiny_overrides
    from tests.test_scenarios import scenario_dataset

    run, lcfg = make_run(name, "tiny", 0, {**tiny_overrides(name), "train.epochs": 1})
    prep = prepare(run, scenario_dataset())
    res = run_scenario(run, lcfg, prep=prep, out_dir=tmp_path / "run", progress=False)
    _has_core(res, name, "scenario", "scenario")
    learner, _ = load_model(tmp_path / "run")
    again = _evaluator(run, prep)(learner, prep.data.test)
    assert {k: again[k] for k in ("recall@10", "recall@20", "recall@50")} == \
           {k: res["test"][k] for k in ("recall@10", "recall@20", "recall@50")}
    twice = run_scenario(run, lcfg, prep=prepare(run, scenario_dataset()), progress=False)
    assert twice["test"] == res["test"]


@pytest.mark.parametrize("name", registry.names("warmup"))
def test_warmup_entries(name, tmp_path):
    from metarec.ctr.warmup import WarmupRun, make_method, run_seed
    from tests.ctr.warmup_data import BCFG, WCFG, trained_backbone, warmup_dataset

    run = WarmupRun(warmup=WCFG, backbone=BCFG)
    run = replace(run, train=replace(run.train, epochs=1))
    res, _ = run_seed(warmup_dataset(), run, [name], 0, progress=False)
    again, _ = run_seed(warmup_dataset(), run, [name], 0, progress=False)
    assert res[0]["phases"] == again[0]["phases"]  # same seed, same numbers
    assert 0.0 <= res[0]["phases"]["cold"]["auc"] <= 1.0
    _has_core(res[0], name, "warmup", "warmup")
    assert res[0]["test"]["auc@warm-c"] == res[0]["phases"]["warm-c"]["auc"]
    if registry.METHODS[name].impls["warmup"].config:  # a trained learner (MetaEmb, MWUF): save and reload
        data, bb = trained_backbone()
        method, _ = make_method(name, run, data, bb, 0, progress=False)
        method.save(tmp_path / "m.pt")
        back, _ = load_model(tmp_path / "m.pt")
        assert torch.equal(back.init_embeddings(data.new_items), method.init_embeddings(data.new_items))


@pytest.fixture(scope="module")
def seq_data():
    from metarec.data.loaders import build_dataset
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol
    from tests.conftest import synthetic_frames

    return make_seq_protocol(build_dataset("tiny", *synthetic_frames()),
                             SeqProtocolConfig(n_support=5, n_query=3, max_len=20, valid_frac=0.2))


SEQ_SMALL = {"mml": {"model.net.dim": 8, "model.net.fusion_hidden": 4, "model.inner.steps": 1, "train.meta_batch": 64},
             "cbml": {"train.meta_batch": 64},
             "sml": {"model.periods": 3, "model.pretrain_periods": 1, "model.hat_steps": 2, "model.transfer_steps": 2}}


@pytest.mark.parametrize("name", registry.names("sequential"))
def test_sequential_entries(name, seq_data, tmp_path, monkeypatch):
    import metarec.seqrec.modality as modality
    from metarec.seqrec.command import run_method
    from metarec.seqrec.evaluate import evaluate_seq
    from tests.seqrec.test_mml import char_encoder

    real = modality.item_modalities  # MML's text learner on a tiny character encoder instead of MiniLM
    monkeypatch.setattr(modality, "item_modalities", lambda ds, cfg, **kw: real(ds, cfg, text_encoder=char_encoder,
                                                                              text_name="chars"))
    mml_family = registry.method(name).impl("sequential").target.endswith(":run_variant")
    over = {"train.epochs": 1, "train.patience": 1, **(SEQ_SMALL["mml"] if mml_family else SEQ_SMALL.get(name, {}))}
    res = run_method(name, seq_data, 0, tmp_path / "run", False, over, {})
    assert 0.0 <= res["test"]["ndcg@10"] <= 1.0
    _has_core(res, name, "sequential", "sequential")
    method, extra = load_model(tmp_path / "run")  # one loader for every family
    assert isinstance(method, Learner) and extra["method"] == name and method.name == name
    assert evaluate_seq(method, seq_data.test, seq_data.n_items) == res["test"]
    twice = run_method(name, seq_data, 0, None, False, over, {})
    assert twice["test"] == res["test"]
