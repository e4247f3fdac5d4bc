"""Issue 18 point 8: tests that catch the realistic bugs the mutations of the issue introduced.

- leakage: newness computed here from raw timestamps and release years, and a value only a new user or item
  has, which must encode as unknown;
- resume of a learner that draws randomness (``set_rng_state`` matters);
- ``evaluate_rating`` on padded queries and ``evaluate_ranking`` with support negatives, by hand.
"""

import math

import numpy as np
import pytest
import torch

from metarec.data.loaders import build_dataset
from metarec.engine.inner import InnerConfig
from metarec.engine.train import TrainConfig, fit
from metarec.evaluation.evaluate import evaluate_ranking, evaluate_rating
from metarec.learners.base import Adapted
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig
from metarec.pipeline import RunConfig, prepare
from metarec.splits import SplitConfig, make_split
from metarec.tasks import Task, TaskConfig
from tests.conftest import synthetic_frames


# ------------------------------------------------------------------------------------------------ leakage
@pytest.fixture
def marked():
    """The tiny log where the last user to arrive (u59, new by time) alone is an "astronaut" and the items of
    the newest release year (1999: i76-i79, new) alone are "Western"s."""
    inter, users, items = synthetic_frames()
    users.loc[users["user"] == "u59", "occupation"] = "astronaut"
    items.loc[items["year"] == "1999", "genres"] = "Western"
    return build_dataset("marked", inter, users, items)


@pytest.mark.parametrize("protocol", ["user-cold", "item-cold", "user-item-cold", "warm"])
def test_newness_from_raw_timestamps_and_years(marked, protocol):
    ds = marked
    split = make_split(ds, SplitConfig(protocol=protocol, by="time"))
    first = ds.inter.groupby("user")["timestamp"].min().reindex(range(ds.n_users)).to_numpy()
    years = ds.items["year"].astype(float).to_numpy()
    new_user = first >= split.t_ref  # "first seen at or after T"
    new_item = years >= split.item_year_ref  # "released in or after year Y"
    assert np.array_equal(split.user_new, new_user) and np.array_equal(split.item_new, new_item)
    # Y is the earliest year whose items (released then or later) are at most 20 % of all
    assert new_item.mean() <= 0.2 < (years >= years[years < split.item_year_ref].max()).mean()
    assert new_item.sum() == 16 and split.item_year_ref == 1996  # years 1996-1999, 4 items each
    assert 0.15 <= new_user.mean() <= 0.25
    tr = split.train
    assert not new_user[tr["user"]].any() and not new_item[tr["item"]].any()
    assert (tr["timestamp"] < split.t_ref).all()
    owners = set(split.valid["user"]) | set(split.test["user"])
    assert owners.isdisjoint(set(tr["user"]))
    ev = np.r_[split.valid["item"], split.test["item"]]
    if protocol in ("item-cold", "user-item-cold"):
        assert new_item[ev].all()
    else:
        assert not new_item[ev].any()
    if protocol in ("user-cold", "user-item-cold"):
        assert new_user[np.r_[split.valid["user"], split.test["user"]]].all()


def test_values_only_new_users_and_items_have_encode_as_unknown(marked):
    prep = prepare(RunConfig(split=SplitConfig(protocol="user-item-cold", by="time"),
                             tasks=TaskConfig(min_inter=2, n_query=1)), marked)
    fs, ctx = prep.features, prep.ctx
    assert "astronaut" not in fs.user_vocab["occupation"] and "Western" not in fs.genres
    u59 = int(np.flatnonzero(marked.users["raw_id"] == "u59")[0])
    assert ctx.user_codes[u59, fs.user_fields.index("occupation")] == 0  # unknown
    western = np.flatnonzero(marked.items["genres"] == "Western")
    assert len(western) == 4 and ctx.item_genre[western].sum() == 0  # no column for an unseen genre


# ------------------------------------------------------------------------------ resume with randomness
class RandomWeighted(FeatureMLP):
    """FeatureMLP whose meta-loss is weighted by a fresh draw of torch's RNG (as dropout or sampling would):
    a resumed run repeats an uninterrupted one only if the RNG state is restored."""

    def meta_loss(self, batch):
        return super().meta_loss(batch) * (0.5 + torch.rand(()))


CFG = FeatureMLPConfig(emb_dim=8, hidden=(16, 16), inner=InnerConfig(steps=1, lr=1e-2))


def _fit(prep, checkpoint=None, on_batch=None):
    torch.manual_seed(123)
    learner = RandomWeighted(prep.ctx, CFG)
    return fit(learner, prep.train, lambda m: evaluate_rating(m, prep.valid),
               TrainConfig(epochs=4, meta_batch=8, lr=1e-2, patience=10), checkpoint=checkpoint, progress=False,
               on_batch=on_batch)


@pytest.mark.parametrize("restore", [True, False])
def test_resume_of_a_random_learner_needs_the_rng_state(tiny_dataset, tmp_path, monkeypatch, restore):
    prep = prepare(RunConfig(split=SplitConfig(protocol="user-cold", by="random"), tasks=TaskConfig(min_inter=14)),
                   tiny_dataset)
    full = _fit(prep)

    def crash(epoch, step):
        if epoch == 2 and step == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(prep, tmp_path / "ck.pt", crash)
    if not restore:  # what a resume that forgot the RNG state would do: the test below must notice
        monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    resumed = _fit(prep, tmp_path / "ck.pt")
    assert (resumed["history"] == full["history"]) is restore


# ------------------------------------------------------------------------------------------- metrics
class TableScores:
    """Scores every (user, item) pair by ``table[item]``; item 0 (the padding index) scores highest."""

    def __init__(self, table, n_items=None):
        self.table = torch.tensor(table, dtype=torch.float32)

        class ctx:  # noqa: N801
            n_items = len(table)
        self.ctx = ctx

    def eval(self):
        return self

    def adapt(self, support):
        t = self.table
        return Adapted(support.owner, lambda users, items: t[items],
                       lambda items: t[items][None, :].expand(len(support.owner), len(items)))


def test_evaluate_rating_ignores_padded_queries():
    f32 = np.float32
    learner = TableScores([100.0, 4.0, 4.5, 1.0, 2.0])  # item 0 = padding would rank first if it were counted
    t1 = Task(0, np.array([0]), np.array([4]), np.array([3], f32), np.array([0, 0, 0]), np.array([1, 2, 3]),
              np.array([5, 3, 1], f32))
    t2 = Task(1, np.array([1]), np.array([4]), np.array([3], f32), np.array([1]), np.array([4]), np.array([2], f32))
    res = evaluate_rating(learner, [t1, t2], ks=(1, 3))  # t2's query is padded to 3 in the batch
    # errors |4-5|, |4.5-3|, |1-1|, |2-2| = 1, 1.5, 0, 0 over the 4 real queries
    assert res["mae"] == pytest.approx(2.5 / 4)
    assert res["rmse"] == pytest.approx(math.sqrt(3.25 / 4))  # 0.9013878...
    # task 1 ordered by prediction: ratings 3, 5, 1. DCG@3 = 3/log2 2 + 5/log2 3 + 1/log2 4; IDCG@3 = 5 + 3/log2 3 + 1/2
    ndcg1 = (3 + 5 / math.log2(3) + 0.5) / (5 + 3 / math.log2(3) + 0.5)
    assert ndcg1 == pytest.approx(0.90015399, abs=1e-7)
    # task 2: one real query -> nDCG 1 (counting the padding, ranked first with gain 0, would give 1/log2 3)
    assert res["ndcg@3"] == pytest.approx((ndcg1 + 1.0) / 2)
    assert res["ndcg@1"] == pytest.approx((3 / 5 + 1.0) / 2)


def test_evaluate_ranking_excludes_support_positives_only():
    """The rule (README "Metrics"): a task's support positives are excluded from its ranking (the user is known to
    have them); its sampled support negatives stay candidates, like every item the user has not interacted with."""
    f32 = np.float32
    # items: 0 pad, 1 support positive (score 10), 2 support negative (9), 3 query positive (8), 4 query negative (1),
    # 5 other (0)
    learner = TableScores([-1.0, 10.0, 9.0, 8.0, 1.0, 0.0])
    t = Task(0, np.array([0, 0]), np.array([1, 2]), np.array([1, 0], f32), np.array([0, 0]), np.array([3, 4]),
             np.array([1, 0], f32))
    res = evaluate_ranking(learner, [t], np.arange(1, 6), ks=(1, 5))
    # candidates after exclusion: 2 (9), 3 (8), 4 (1), 5 (0): the query positive 3 ranks 2nd
    assert res["recall@1"] == 0.0 and res["hit@1"] == 0.0
    assert res["recall@5"] == 1.0
    assert res["mrr@5"] == pytest.approx(1 / 2)
    assert res["ndcg@5"] == pytest.approx(1 / math.log2(3))
