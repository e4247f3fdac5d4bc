"""evaluate_ranking on a hand-made scorer: support items excluded, non-candidates ignored, hand-checked."""

import numpy as np
import pytest

from metarec.evaluation.evaluate import evaluate_ranking
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
