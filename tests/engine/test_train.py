"""The outer loop: learning happens, same seed same numbers, a killed run resumes to the same result."""

import pytest
import torch

from metarec.engine.inner import InnerConfig
from metarec.engine.train import TrainConfig, fit
from metarec.errors import MetarecError
from metarec.evaluation.evaluate import evaluate_rating
from metarec.learners.base import load_learner
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig
from metarec.pipeline import RunConfig, prepare, train_and_evaluate
from metarec.splits import SplitConfig
from metarec.tasks import TaskConfig, collate


@pytest.fixture
def prep(tiny_dataset):
    run = RunConfig(split=SplitConfig(protocol="user-cold", by="random"), tasks=TaskConfig(min_inter=14))
    return prepare(run, tiny_dataset)


CFG = FeatureMLPConfig(emb_dim=8, hidden=(16, 16), inner=InnerConfig(steps=2, lr=1e-2))
TCFG = TrainConfig(epochs=4, meta_batch=8, lr=1e-2, patience=10)


def run_fit(prep, tcfg=TCFG, checkpoint=None, on_batch=None):
    torch.manual_seed(123)
    learner = FeatureMLP(prep.ctx, CFG)
    out = fit(learner, prep.train, lambda m: evaluate_rating(m, prep.valid), tcfg, checkpoint=checkpoint,
              progress=False, on_batch=on_batch)
    return learner, out


def test_meta_training_lowers_the_query_loss(prep):
    torch.manual_seed(123)
    learner = FeatureMLP(prep.ctx, CFG)
    batch = collate(prep.train)
    before = learner.meta_loss(batch).item()
    learner, out = run_fit(prep)
    after = learner.meta_loss(batch).item()
    assert after < 0.5 * before
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]


def test_same_seed_same_metrics(prep):
    _, a = run_fit(prep)
    _, b = run_fit(prep)
    assert a["history"] == b["history"]


def test_killed_run_resumes_to_the_same_result(prep, tmp_path):
    _, full = run_fit(prep)
    ckpt = tmp_path / "ck.pt"

    def crash(epoch, step):
        if epoch == 2 and step == 1:
            raise KeyboardInterrupt  # killed mid-epoch, after two complete epochs

    with pytest.raises(KeyboardInterrupt):
        run_fit(prep, checkpoint=ckpt, on_batch=crash)
    assert ckpt.is_file()
    assert not list(tmp_path.glob(".*tmp*"))  # no half-written checkpoint left behind
    saved = torch.load(ckpt, weights_only=True)["state"]["seconds"]  # the two finished epochs' wall time
    learner, resumed = run_fit(prep, checkpoint=ckpt)
    assert resumed["history"] == full["history"]
    assert full["resumed_seconds"] == 0.0 and resumed["resumed_seconds"] == saved > 0  # reported in train_seconds
    with pytest.raises(MetarecError, match="holds a run with other settings: train.epochs 4 -> 5"):
        run_fit(prep, tcfg=TrainConfig(epochs=5, meta_batch=8, lr=1e-2), checkpoint=ckpt)


def test_save_and_load_give_the_same_predictions(prep, tmp_path):
    learner, _ = run_fit(prep)
    learner.save(tmp_path / "m.pt")
    back, _ = load_learner(tmp_path / "m.pt")
    b = collate(prep.test)
    with torch.no_grad():
        assert torch.equal(learner.adapt(b).score(b.q_user, b.q_item), back.adapt(b).score(b.q_user, b.q_item))
        items = torch.arange(prep.ctx.n_items)
        assert torch.equal(learner.adapt(b).score_items(items), back.adapt(b).score_items(items))


@pytest.mark.parametrize("name", ["melu", "noadapt", "ptft", "bias", "itempop"])
def test_every_learner_runs_end_to_end(tiny_dataset, name, tmp_path):
    from metarec.pipeline import make_config
    run, lcfg = make_config(name, "tiny", "user-cold", 0, "explicit",
                            {"train.epochs": 2, "split.by": "random", "tasks.min_inter": 14})
    res = train_and_evaluate(run, lcfg, out_dir=tmp_path, progress=False, prep=prepare(run, tiny_dataset))
    assert res["test"]["tasks"] > 0 and res["test"]["rmse"] > 0
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "results.json").is_file()
    back, extra = load_learner(tmp_path / "model.pt")
    assert back.name == name
    from metarec.data.features import FeatureSpace
    fs = FeatureSpace.from_dict(extra["vocabularies"])
    assert "gender" in fs.user_fields and len(extra["item_ids"]) == tiny_dataset.n_items


def test_implicit_view_full_ranking(tiny_dataset):
    from metarec.pipeline import make_config
    run, lcfg = make_config("melu", "tiny", "user-cold", 0, "implicit",
                            {"train.epochs": 2, "split.by": "random", "tasks.min_inter": 6, "threshold": 3})
    prep = prepare(run, tiny_dataset)
    assert all((t.q_rating == 0).sum() == run.negatives * (t.q_rating == 1).sum() for t in prep.test)
    res = train_and_evaluate(run, lcfg, progress=False, prep=prep)
    assert 0.0 <= res["test"]["recall@10"] <= 1.0 and "ndcg@10" in res["test"]


def test_a_run_does_not_depend_on_what_ran_before(tiny_dataset):
    """compare runs learners one after another in one process: each must start from its own seed."""
    from metarec.pipeline import make_config
    run, lcfg = make_config("melu", "tiny", "user-cold", 0, "explicit",
                            {"train.epochs": 2, "split.by": "random", "tasks.min_inter": 14})
    prep = prepare(run, tiny_dataset)
    first = train_and_evaluate(run, lcfg, progress=False, prep=prep)["test"]
    torch.rand(1000)  # anything that moves the global generator
    second = train_and_evaluate(run, lcfg, progress=False, prep=prep)["test"]
    assert first == second
