"""evaluate_ranking on a hand-made scorer: support items excluded, non-candidates ignored, hand-checked."""

import numpy as np
import pytest

from metarec.errors import MetarecError
from metarec.evaluation.evaluate import evaluate_ranking, evaluate_rating
from metarec.learners.base import Adapted
from metarec.tasks import Task


class FixedScores:
    """Scores item i as -i for every owner (item 0 best), whatever the support."""

    class ctx:  # noqa: N801 - mimics Context.n_items
        n_items = 10

    def eval(self):
        return self

    def adapt(self, support):
        def score_items(items):
            return (-items.float())[None, :].expand(len(support), len(items))
        return Adapted(support.owner, None, score_items)


def test_support_excluded_and_hand_checked_recall():
    one = np.ones
    # owner 0: support items 0, 1 (excluded); query positives 2 and 7, a negative 3 (rating 0)
    t0 = Task(0, np.array([0, 0]), np.array([0, 1]), one(2, np.float32), np.array([0, 0, 0]),
              np.array([2, 7, 3]), np.array([1, 1, 0], np.float32))
    # owner 1: a support item that is no candidate (9), query positive 4
    t1 = Task(1, np.array([1]), np.array([9]), one(1, np.float32), np.array([1]), np.array([4]), one(1, np.float32))
    cands = np.arange(9)  # item 9 is not a candidate
    res = evaluate_ranking(FixedScores(), [t0, t1], cands, ks=(1, 5))
    # owner 0 ranks 2,3,4,5,6,7,8 -> item 2 at rank 1, item 7 at rank 6: recall@1 = 1/2, recall@5 = 1/2
    # owner 1 ranks 0..8 -> item 4 at rank 5: recall@1 = 0, recall@5 = 1
    assert res["recall@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert res["recall@5"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["mrr@5"] == pytest.approx((1.0 + 1 / 5) / 2)
    assert res["tasks"] == 2


class ScoreByItem:
    """Predicts rating = item index for every pair (a higher item index is ranked first)."""

    def __init__(self):
        self.adapted = 0

    def eval(self):
        return self

    def adapt(self, support):
        self.adapted += 1
        return Adapted(support.owner, lambda users, items: items.float(), None)


def test_evaluate_rating_names_the_ndcg_gain():
    one = np.ones
    # query items (2, 1, 0) rated (5, 3, 1) -> predicted 2, 1, 0: the order is perfect, but padding is in play:
    # task 1 has 2 query items, item 0 rated 4 and item 1 rated 2, predicted 0 and 1 -> order r=2, r=4
    t0 = Task(0, np.array([0]), np.array([5]), one(1, np.float32), np.zeros(3, int), np.array([2, 1, 0]),
              np.array([5, 3, 1], np.float32))
    t1 = Task(1, np.array([1]), np.array([5]), one(1, np.float32), np.ones(2, int), np.array([0, 1]),
              np.array([4, 2], np.float32))
    lin = evaluate_rating(ScoreByItem(), [t0, t1], ks=(1, 3))
    assert set(lin) >= {"ndcg@1", "ndcg@3"} and not any(k.startswith("ndcg_") for k in lin)
    L3 = np.log2(3)
    # task 0 perfect -> 1; task 1 @1: 2/4, @3 (= @2): (2 + 4/L3) / (4 + 2/L3)
    assert lin["ndcg@1"] == pytest.approx((1 + 2 / 4) / 2)
    assert lin["ndcg@3"] == pytest.approx((1 + (2 + 4 / L3) / (4 + 2 / L3)) / 2)
    ex = evaluate_rating(ScoreByItem(), [t0, t1], ks=(1, 3), ndcg_gain="exp")
    assert "ndcg@1" not in ex and "ndcg@3" not in ex
    # exp gains: task 1 has 2^4 - 1 = 15 and 2^2 - 1 = 3 -> @1: 3/15, @3: (3 + 15/L3) / (15 + 3/L3)
    assert ex["ndcg_exp@1"] == pytest.approx((1 + 3 / 15) / 2)
    assert ex["ndcg_exp@3"] == pytest.approx((1 + (3 + 15 / L3) / (15 + 3 / L3)) / 2)
    assert ex["mae"] == pytest.approx(lin["mae"]) and ex["tasks"] == 2
    bt = evaluate_rating(ScoreByItem(), [t0, t1], ks=(1,), ndcg_gain="binary_topk")
    # task 1 @1: the positive (r=4) is predicted second -> 0
    assert bt["ndcg_binary_topk@1"] == pytest.approx((1 + 0) / 2)
    learner = ScoreByItem()
    with pytest.raises(MetarecError, match="unknown nDCG gain"):
        evaluate_rating(learner, [t0, t1], ndcg_gain="exponential")
    assert learner.adapted == 0  # rejected before any task is run
