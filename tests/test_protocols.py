"""metarec.protocols: one interface over the four families' protocols; its evaluation is the runners' own."""

from __future__ import annotations

import pytest

from metarec import protocols, registry
from metarec.cli import main
from metarec.errors import MetarecError
from tests.conftest import synthetic_frames, write_atomic


def test_every_registered_protocol_has_one():
    for name, family in registry.PROTOCOLS.items():
        over = {"split.task_file": "x.json"} if name == "tasks" else {}
        p = protocols.get(name, seed=3, overrides=over)
        assert p.family == family and p.name == name
        assert p.train_default().seed == 3
        for attr in ("prepare", "collate", "evaluate", "describe"):
            assert callable(getattr(p, attr))


def test_rating_protocol_evaluates_as_the_runner(tiny_dataset):
    from metarec.pipeline import make_config, prepare, train_and_evaluate

    run, lcfg = make_config("bias", "tiny", "user-cold", 0, "explicit", {})
    res = train_and_evaluate(run, lcfg, prep=prepare(run, tiny_dataset), progress=False, out_dir=None)
    p = protocols.get("user-cold", seed=0)
    data = p.prepare(tiny_dataset)
    from metarec.learners.baselines import BiasModel

    model = BiasModel(data.ctx, lcfg)
    model.fit_direct(data.split.train)
    assert p.evaluate(model, data, "test") == res["test"]
    assert p.describe(data)["protocol"] == "user-cold" and len(p.collate(data.test[:2])) == 2


def test_overrides_and_bad_input():
    p = protocols.get("item-cold", overrides={"split.by": "random", "tasks.k_shot": 3, "view": "implicit"})
    assert (p.split.by, p.tasks.k_shot, p.view, p.train_default().select) == ("random", 3, "implicit", "ndcg@10")
    assert protocols.get("sequential", overrides={"n_support": 4}).config.n_support == 4
    with pytest.raises(MetarecError, match="unknown protocol"):
        protocols.get("nope")
    with pytest.raises(MetarecError, match="unknown config key"):
        protocols.get("scenario", overrides={"nope": 1})


def test_sequential_protocol_evaluates_as_the_runner(tiny_dataset, tmp_path):
    from metarec.models import load_model
    from metarec.seqrec.command import run_method

    p = protocols.get("sequential", overrides={"n_support": 5, "n_query": 3, "max_len": 12})
    data = p.prepare(tiny_dataset)
    res = run_method("sasrec", data, 0, tmp_path / "run", False, {"train.epochs": 1}, {})
    model, _ = load_model(tmp_path / "run")
    assert p.evaluate(model, data, "test") == res["test"]


def test_stats_command(tmp_path, capsys):
    d = write_atomic(tmp_path / "tiny", "tiny", *synthetic_frames())
    assert main(["stats", "--protocol", "user-cold", "--dataset", str(d)]) == 0
    out = capsys.readouterr().out
    assert "user-cold (rating family)" in out and "tasks: train" in out
    assert main(["stats", "--protocol", "sequential", "--dataset", str(d), "--n_support=5", "--n_query=3"]) == 0
    assert "sequential (sequential family)" in capsys.readouterr().out
    assert main(["stats", "--protocol", "sequential", "--dataset", str(d), "--nope=1"]) == 2
