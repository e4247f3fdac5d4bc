"""Metrics against values computed by hand (arithmetic in the comments) and against naive reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarec.evaluation.metrics import (
    auc,
    full_ranking_report,
    global_auc,
    hit_rate_at_k,
    logloss,
    mae,
    mean_ignore_nan,
    mrr_at_k,
    ndcg_at_k,
    positive_ranks,
    precision_at_k,
    query_ndcg_at_k,
    ranks_from_scores,
    recall_at_k,
    rmse,
)

L3 = math.log2(3)  # 1.58496...
NAN = float("nan")


def assert_rows(got, expected):
    """Per-row comparison where NaN must match NaN."""
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=1e-12)


# ------------------------------------------------------------------------------------------ rating error


def test_mae_rmse_with_padding_mask():
    pred = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]])
    true = np.array([[2.0, 2.0, 5.0], [4.0, 1.0, 9.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    # valid errors: -1, 0, -2, 0, 4 -> |.| sum 7 over 5 entries; squares 1+0+4+0+16 = 21 over 5
    assert mae(pred, true, mask) == pytest.approx(7 / 5)
    assert rmse(pred, true, mask) == pytest.approx(math.sqrt(21 / 5))
    # without the mask the padded slot (error -9) counts: |.| 16 / 6, squares 102 / 6
    assert mae(pred, true) == pytest.approx(16 / 6)
    assert rmse(pred, true) == pytest.approx(math.sqrt(102 / 6))
    assert isinstance(mae(pred, true, mask), float)


def test_mae_ignores_nan_in_padding_and_rejects_empty():
    pred = np.array([[3.0, np.nan]])
    true = np.array([[1.0, np.nan]])
    mask = np.array([[True, False]])
    assert mae(pred, true, mask) == pytest.approx(2.0)
    assert rmse(pred, true, mask) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        mae(pred, true, np.zeros((1, 2), dtype=bool))
    with pytest.raises(ValueError):
        rmse(pred, true[:, :1])


# ------------------------------------------------------------------------------------------------- ranks


def test_ranks_pessimistic_ties_and_exclusion():
    scores = np.array(
        [
            [0.9, 0.5, 0.5, 0.1, 0.7],  # 0.7 is excluded: candidates 0.9 > 0.5 = 0.5 > 0.1
            [0.2, 0.2, 0.2, 0.2, 0.2],  # all tied: every item ranked after the other 4
            [-np.inf, np.inf, 0.0, 0.0, -np.inf],
        ]
    )
    exclude = np.array(
        [
            [False, False, False, False, True],
            [False, False, False, False, False],
            [False, False, True, False, False],
        ]
    )
    rank = ranks_from_scores(scores, exclude=exclude)
    expected = np.array(
        [
            [1, 3, 3, 4, 0],  # the two 0.5s share positions 2-3 -> both get 3; excluded -> 0
            [5, 5, 5, 5, 5],
            [4, 1, 0, 2, 4],  # inf first, 0.0 second (the other 0.0 is excluded), two -inf share 3-4
        ]
    )
    np.testing.assert_array_equal(rank, expected)
    assert np.issubdtype(rank.dtype, np.integer)


def test_ranks_validation():
    scores = np.array([[0.3, 0.2, 0.1]])
    with pytest.raises(ValueError, match="excluded"):
        ranks_from_scores(scores, np.array([[True, False, False]]), np.array([[True, False, False]]))
    with pytest.raises(ValueError):
        ranks_from_scores(np.array([[np.nan, 0.2, 0.1]]))
    # NaN in an excluded slot is fine
    np.testing.assert_array_equal(
        ranks_from_scores(np.array([[np.nan, 0.2, 0.1]]), exclude=np.array([[True, False, False]])),
        [[0, 1, 2]],
    )
    with pytest.raises(ValueError):
        ranks_from_scores(np.array([0.3, 0.2]))  # 1-D


def naive_ranks(scores, exclude):
    out = np.zeros(scores.shape, dtype=np.int64)
    for b in range(scores.shape[0]):
        cand = [j for j in range(scores.shape[1]) if not exclude[b, j]]
        for j in cand:
            out[b, j] = sum(1 for i in cand if scores[b, i] >= scores[b, j])
    return out


def test_ranks_match_naive_loop_on_random_data():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 30):
        scores = rng.integers(0, 5, size=(25, n)).astype(float)  # few distinct values -> many ties
        exclude = rng.random((25, n)) < 0.3
        np.testing.assert_array_equal(
            ranks_from_scores(scores, exclude=exclude), naive_ranks(scores, exclude)
        )
    scores = rng.normal(size=(10, 50))
    exclude = rng.random((10, 50)) < 0.2
    np.testing.assert_array_equal(ranks_from_scores(scores, exclude=exclude), naive_ranks(scores, exclude))


def test_positive_ranks():
    ranks = np.array([[1, 3, 3, 4, 0], [5, 5, 5, 5, 5]])
    pos = np.array([[False, True, False, True, False], [False] * 5])
    got = positive_ranks(ranks, pos)
    np.testing.assert_array_equal(got[0], [3, 4])
    assert got[1].size == 0


# ----------------------------------------------------------------------------------- ranking metrics @ K


@pytest.fixture
def ranked():
    scores = np.array(
        [
            [0.9, 0.5, 0.5, 0.1, 0.7],  # ranks [1, 3, 3, 4, 0]; positives items 0, 2 -> ranks 1, 3
            [0.9, 0.8, 0.7, 0.1, 0.0],  # ranks [1, 2, 3, 4, 5]; positive item 3 -> rank 4
            [0.9, 0.9, 0.1, 0.0, 0.0],  # ranks [2, 2, 3, 5, 5]; positives items 0, 1 tied -> both rank 2
            [0.5, 0.4, 0.3, 0.2, 0.1],  # no positives
        ]
    )
    exclude = np.zeros((4, 5), dtype=bool)
    exclude[0, 4] = True
    positives = np.zeros((4, 5), dtype=bool)
    positives[0, [0, 2]] = True
    positives[1, 3] = True
    positives[2, [0, 1]] = True
    ranks = ranks_from_scores(scores, positives, exclude)
    np.testing.assert_array_equal(ranks[:3], [[1, 3, 3, 4, 0], [1, 2, 3, 4, 5], [2, 2, 3, 5, 5]])
    return scores, positives, exclude, ranks


def test_precision_recall_hit_at_k(ranked):
    _, pos, _, ranks = ranked
    # k=3: row0 hits {1,3} -> 2/3, row1 none (rank 4) -> 0, row2 hits {2,2} -> 2/3
    assert_rows(precision_at_k(ranks, pos, 3), [2 / 3, 0.0, 2 / 3, NAN])
    # recall = hits / #positives: 2/2, 0/1, 2/2
    assert_rows(recall_at_k(ranks, pos, 3), [1.0, 0.0, 1.0, NAN])
    assert_rows(hit_rate_at_k(ranks, pos, 3), [1.0, 0.0, 1.0, NAN])
    # k=1: row0 hit at rank 1 -> 1/1; row2's tied positives are pessimistically at rank 2 -> no hit
    assert_rows(precision_at_k(ranks, pos, 1), [1.0, 0.0, 0.0, NAN])
    assert_rows(recall_at_k(ranks, pos, 1), [1 / 2, 0.0, 0.0, NAN])
    assert_rows(hit_rate_at_k(ranks, pos, 1), [1.0, 0.0, 0.0, NAN])


def test_k_larger_than_candidates(ranked):
    _, pos, _, ranks = ranked
    # k=10 > 4 candidates of row 0: precision still divides by K -> 2/10; row1 1/10; row2 2/10
    assert_rows(precision_at_k(ranks, pos, 10), [0.2, 0.1, 0.2, NAN])
    assert_rows(recall_at_k(ranks, pos, 10), [1.0, 1.0, 1.0, NAN])
    # ndcg row0 = (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3)); row1 = (1/log2(5)) / 1
    # row2 = (1/log2(3) + 1/log2(3)) / (1 + 1/log2(3))
    assert_rows(
        ndcg_at_k(ranks, pos, 10),
        [(1 + 0.5) / (1 + 1 / L3), 1 / math.log2(5), (2 / L3) / (1 + 1 / L3), NAN],
    )
    assert_rows(mrr_at_k(ranks, pos, 10), [1.0, 1 / 4, 1 / 2, NAN])


def test_ndcg_at_k(ranked):
    _, pos, _, ranks = ranked
    # k=3, row0 ranks [1,3] of 2 positives: (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3))
    # row1: rank 4 > 3 -> 0; row2: ranks [2,2]: (1/log2(3) + 1/log2(3)) / (1 + 1/log2(3))
    assert_rows(ndcg_at_k(ranks, pos, 3), [1.5 / (1 + 1 / L3), 0.0, (2 / L3) / (1 + 1 / L3), NAN])
    # k=2: row0 only rank 1 counts: 1 / (1 + 1/log2(3)); row2 both at rank 2: (2/log2(3)) / (1 + 1/log2(3))
    assert_rows(ndcg_at_k(ranks, pos, 2), [1 / (1 + 1 / L3), 0.0, (2 / L3) / (1 + 1 / L3), NAN])
    # k=1: IDCG over min(#pos, 1) = 1 positive: row0 1/1, row2 0 (rank 2)
    assert_rows(ndcg_at_k(ranks, pos, 1), [1.0, 0.0, 0.0, NAN])


def test_ndcg_idcg_uses_min_positives_k():
    # 3 positives at ranks 1, 2, 5 out of 5; k = 2 -> IDCG over min(3, 2) = 2 slots: 1 + 1/log2(3)
    ranks = np.array([[1, 2, 3, 4, 5]])
    pos = np.array([[True, True, False, False, True]])
    assert_rows(ndcg_at_k(ranks, pos, 2), [1.0])
    # k = 5: DCG = 1 + 1/log2(3) + 1/log2(6); IDCG = 1 + 1/log2(3) + 1/log2(4)
    assert_rows(ndcg_at_k(ranks, pos, 5), [(1 + 1 / L3 + 1 / math.log2(6)) / (1 + 1 / L3 + 0.5)])


def test_mrr_at_k(ranked):
    _, pos, _, ranks = ranked
    # row0 first positive rank 1 -> 1; row1 rank 4 > 3 -> 0; row2 rank 2 -> 1/2
    assert_rows(mrr_at_k(ranks, pos, 3), [1.0, 0.0, 0.5, NAN])
    assert_rows(mrr_at_k(ranks, pos, 4), [1.0, 0.25, 0.5, NAN])


def test_metric_argument_validation(ranked):
    _, pos, _, ranks = ranked
    for fn in (precision_at_k, recall_at_k, hit_rate_at_k, ndcg_at_k, mrr_at_k):
        with pytest.raises(ValueError):
            fn(ranks, pos, 0)
        bad = ranks.copy()
        bad[0, 0] = 0  # a positive with the "excluded" sentinel
        with pytest.raises(ValueError):
            fn(bad, pos, 3)


def test_mean_ignore_nan():
    assert mean_ignore_nan([1.0, NAN, 0.0, 0.5]) == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3
    assert math.isnan(mean_ignore_nan([NAN, NAN]))
    assert math.isnan(mean_ignore_nan([]))


def test_full_ranking_report(ranked):
    scores, pos, exclude, _ = ranked
    rep = full_ranking_report(scores, pos, exclude, ks=(1, 3), metrics=("recall", "ndcg", "mrr"))
    assert list(rep) == ["recall@1", "recall@3", "ndcg@1", "ndcg@3", "mrr@1", "mrr@3"]
    # averages over the 3 rows with positives (row 3 has none)
    assert rep["recall@1"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert rep["recall@3"] == pytest.approx((1 + 0 + 1) / 3)
    assert rep["ndcg@1"] == pytest.approx((1 + 0 + 0) / 3)
    assert rep["ndcg@3"] == pytest.approx((1.5 / (1 + 1 / L3) + 0 + (2 / L3) / (1 + 1 / L3)) / 3)
    assert rep["mrr@3"] == pytest.approx((1 + 0 + 0.5) / 3)
    default = full_ranking_report(scores, pos, exclude)
    assert set(default) == {
        f"{m}@{k}" for m in ("precision", "recall", "hit", "ndcg", "mrr") for k in (5, 10, 20)
    }
    # k=5 precision: row0 2/5, row1 1/5, row2 2/5
    assert default["precision@5"] == pytest.approx((0.4 + 0.2 + 0.4) / 3)
    assert all(isinstance(v, float) for v in default.values())
    with pytest.raises(ValueError):
        full_ranking_report(scores, pos, exclude, metrics=("map",))


def test_full_ranking_report_without_exclude_penalises_support_items():
    # candidates 0.9 > 0.5: the positive (0.5) has rank 2; without excluding item 4 (score 0.7) it drops
    # to rank 3 (0.9 > 0.7 > 0.5), out of the top 2
    scores = np.array([[0.9, 0.5, 0.1, 0.05, 0.7]])
    pos = np.array([[False, True, False, False, False]])
    excl = np.array([[False, False, False, False, True]])
    assert full_ranking_report(scores, pos, excl, ks=(2,), metrics=("hit",)) == {"hit@2": 1.0}
    assert full_ranking_report(scores, pos, None, ks=(2,), metrics=("hit",)) == {"hit@2": 0.0}


# ------------------------------------------------------------------------------------- AUC and logloss


def test_auc_ties_mask_and_degenerate_rows():
    scores = np.array(
        [
            [0.9, 0.5, 0.5, 0.1, 0.99],
            [0.3, 0.3, 0.3, 0.3, 0.3],
            [0.9, 0.5, 0.5, 0.1, 0.99],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [0.1, 0.2, 0.3, 0.4, 0.5],
        ]
    )
    labels = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1],  # no negatives
            [0, 0, 0, 0, 0],  # no positives
        ],
        dtype=bool,
    )
    mask = np.ones((5, 5), dtype=bool)
    mask[0, 4] = False  # padding
    got = auc(scores, labels, mask)
    # row0 (padded 0.99 excluded), pairs (pos, neg): (.9,.5)=1 (.9,.1)=1 (.5,.5)=1/2 (.5,.1)=1 -> 3.5 / 4
    # row1: all 6 pairs tied -> 6 * 1/2 / 6 = 0.5
    # row2 (no mask): the 0.99 negative beats both positives -> 3.5 / 6
    assert_rows(got, [3.5 / 4, 0.5, 3.5 / 6, NAN, NAN])
    assert_rows(auc(scores[:1], labels[:1]), [3.5 / 6])


def test_auc_against_brute_force_pairs():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(40, 12)).astype(float)
    labels = rng.random((40, 12)) < 0.4
    mask = rng.random((40, 12)) < 0.8
    expected = []
    for b in range(40):
        p = scores[b][labels[b] & mask[b]]
        n = scores[b][~labels[b] & mask[b]]
        if p.size == 0 or n.size == 0:
            expected.append(NAN)
            continue
        total = sum(1.0 if a > c else 0.5 if a == c else 0.0 for a in p for c in n)
        expected.append(total / (p.size * n.size))
    got = auc(scores, labels, mask)
    assert np.isnan(expected).sum() < 40 and not np.isnan(expected).all()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_global_auc():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs (.35,.1)=1 (.35,.4)=0 (.8,.1)=1 (.8,.4)=1 -> 3/4
    assert global_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # tie between the positive and one negative: (1 + 1/2) / 2
    assert global_auc([0.2, 0.5, 0.5], [0, 0, 1]) == pytest.approx(0.75)
    assert math.isnan(global_auc([0.2, 0.5], [1, 1]))
    assert isinstance(global_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), float)
    with pytest.raises(ValueError):
        global_auc([[0.1, 0.2]], [[0, 1]])


def test_logloss():
    # -(ln 0.9 + ln(1 - 0.2)) / 2 = -(-0.1053605 - 0.2231436) / 2 = 0.1642520
    assert logloss([0.9, 0.2], [1, 0]) == pytest.approx(0.16425203348601)
    # p=0 for a positive and p=1 for a negative are clipped to eps: each costs -ln(1e-7) = 16.118095...
    assert logloss([0.0, 1.0], [1, 0]) == pytest.approx(16.11809565, rel=1e-6)
    # mask: only the first entry -> -ln(0.9)
    assert logloss([[0.9, 0.0]], [[1, 1]], mask=[[True, False]]) == pytest.approx(0.105360516)
    with pytest.raises(ValueError):
        logloss([1.5], [1])
    with pytest.raises(ValueError):
        logloss([0.5], [2])


# -------------------------------------------------------------------------------- query-only protocol


def test_query_ndcg_at_k_hand_values():
    pred = np.array(
        [
            [0.9, 0.8, 0.7, 0.1],  # order by pred: gains 3, 5, 4, 1
            [0.5, 0.5, 0.1, 0.0],  # tie between true 5 and true 1 -> pessimistic: 1 first, then 5, then 3
            [0.2, 0.9, 7.0, 0.0],  # only 2 valid items (padding slots 2, 3): order gains 2, 4
            [0.3, 0.2, 0.1, 0.0],  # all true ratings 0 -> IDCG 0 -> NaN
            [0.3, 0.2, 0.1, 0.0],  # no valid item -> NaN
        ]
    )
    true = np.array(
        [
            [3.0, 5.0, 4.0, 1.0],
            [5.0, 1.0, 3.0, 0.0],
            [4.0, 2.0, np.nan, 9.0],
            [0.0, 0.0, 0.0, 0.0],
            [1.0, 2.0, 3.0, 4.0],
        ]
    )
    mask = np.ones((5, 4), dtype=bool)
    mask[1, 3] = False
    mask[2, 2:] = False
    mask[4] = False
    got = query_ndcg_at_k(pred, true, mask, 3)
    # row0: DCG = 3/1 + 5/log2(3) + 4/log2(4); IDCG = 5/1 + 4/log2(3) + 3/log2(4)
    # row1: DCG = 1/1 + 5/log2(3) + 3/2;        IDCG = 5/1 + 3/log2(3) + 1/2
    # row2: k=3 > 2 valid: DCG = 2/1 + 4/log2(3); IDCG = 4/1 + 2/log2(3)
    expected = [
        (3 + 5 / L3 + 4 / 2) / (5 + 4 / L3 + 3 / 2),
        (1 + 5 / L3 + 3 / 2) / (5 + 3 / L3 + 1 / 2),
        (2 + 4 / L3) / (4 + 2 / L3),
        NAN,
        NAN,
    ]
    assert_rows(got, expected)
    # k=1 on row0: 3 / 5
    assert query_ndcg_at_k(pred[:1], true[:1], None, 1)[0] == pytest.approx(0.6)
    # k larger than N: same as k=N: (3 + 5/log2 3 + 4/2 + 1/log2 5) / (5 + 4/log2 3 + 3/2 + 1/log2 5)
    l5 = math.log2(5)
    assert query_ndcg_at_k(pred[:1], true[:1], None, 10)[0] == pytest.approx(
        (3 + 5 / L3 + 2 + 1 / l5) / (5 + 4 / L3 + 1.5 + 1 / l5)
    )


def test_query_ndcg_validation():
    with pytest.raises(ValueError):
        query_ndcg_at_k([[0.1, 0.2]], [[-1.0, 2.0]], None, 2)
    with pytest.raises(ValueError):
        query_ndcg_at_k([[0.1, 0.2]], [[1.0, 2.0]], None, 0)
    with pytest.raises(ValueError):
        query_ndcg_at_k([[np.nan, 0.2]], [[1.0, 2.0]], None, 2)


# ---------------------------------------------------------------------------- query-only nDCG: named gains
# One 3-item query, true ratings (5, 3, 1), predicted scores (3, 5, 1): the predicted order is item 1
# (r=3), item 0 (r=5), item 2 (r=1); discounts 1/log2(2) = 1, 1/log2(3) = 1/L3, 1/log2(4) = 1/2.


def test_query_ndcg_linear_gain_by_hand():
    pred, true = [[3.0, 5.0, 1.0]], [[5.0, 3.0, 1.0]]
    # DCG@3 = 3 + 5/L3 + 1/2 = 6.654649; IDCG@3 = 5 + 3/L3 + 1/2 = 7.392789; nDCG = 0.900154
    expected = (3 + 5 / L3 + 1 / 2) / (5 + 3 / L3 + 1 / 2)
    assert expected == pytest.approx(0.900154, abs=1e-6)
    assert query_ndcg_at_k(pred, true, None, 3)[0] == pytest.approx(expected)
    assert query_ndcg_at_k(pred, true, None, 3, gain="linear")[0] == pytest.approx(expected)  # the default
    # @1: 3 / 5;  @2: (3 + 5/L3) / (5 + 3/L3)
    assert query_ndcg_at_k(pred, true, None, 1)[0] == pytest.approx(0.6)
    assert query_ndcg_at_k(pred, true, None, 2)[0] == pytest.approx((3 + 5 / L3) / (5 + 3 / L3))


def test_query_ndcg_exp_gain_by_hand():
    pred, true = [[3.0, 5.0, 1.0]], [[5.0, 3.0, 1.0]]
    # gains 2^r - 1: r=5 -> 31, r=3 -> 7, r=1 -> 1
    # DCG@3 = 7 + 31/L3 + 1/2 = 27.058822; IDCG@3 = 31 + 7/L3 + 1/2 = 35.916508; nDCG = 0.753381
    expected = (7 + 31 / L3 + 1 / 2) / (31 + 7 / L3 + 1 / 2)
    assert expected == pytest.approx(0.753381, abs=1e-6)
    assert query_ndcg_at_k(pred, true, None, 3, gain="exp")[0] == pytest.approx(expected)
    # @1: 7 / 31 (the linear value would be 3/5 = 0.6)
    assert query_ndcg_at_k(pred, true, None, 1, gain="exp")[0] == pytest.approx(7 / 31)
    # a fractional rating: r = 0.5 -> 2^0.5 - 1 = 0.414214; order by pred: r=0.5, r=2 (gain 3)
    got = query_ndcg_at_k([[2.0, 1.0]], [[0.5, 2.0]], None, 2, gain="exp")[0]
    assert got == pytest.approx((math.sqrt(2) - 1 + 3 / L3) / (3 + (math.sqrt(2) - 1) / L3))


def test_query_ndcg_binary_topk_by_hand():
    pred, true = [[3.0, 5.0, 1.0]], [[5.0, 3.0, 1.0]]
    # k=1: the one positive is item 0 (r=5); predicted first is item 1 -> DCG = 0, IDCG = 1 -> 0
    assert query_ndcg_at_k(pred, true, None, 1, gain="binary_topk")[0] == 0.0
    # k=2: positives items 0, 1; predicted top 2 = items 1, 0 -> DCG = 1 + 1/L3 = IDCG -> 1
    assert query_ndcg_at_k(pred, true, None, 2, gain="binary_topk")[0] == pytest.approx(1.0)
    # 4 items, ratings (5, 4, 2, 1), scores put item 2 (r=2) first, then item 0, item 1, item 3
    # k=2: positives items 0, 1 at predicted ranks 2 and 3 -> DCG@2 = 0 + 1/L3; IDCG@2 = 1 + 1/L3
    pred4, true4 = [[0.8, 0.7, 0.9, 0.1]], [[5.0, 4.0, 2.0, 1.0]]
    assert query_ndcg_at_k(pred4, true4, None, 2, gain="binary_topk")[0] == pytest.approx((1 / L3) / (1 + 1 / L3))
    # k=3: positives items 0, 1, 2 fill predicted ranks 1-3 -> 1 (linear would be below 1)
    assert query_ndcg_at_k(pred4, true4, None, 3, gain="binary_topk")[0] == pytest.approx(1.0)
    assert query_ndcg_at_k(pred4, true4, None, 3)[0] < 0.99


def test_query_ndcg_binary_topk_true_rating_ties_share_the_places():
    # ratings (5, 4, 4, 4, 1), k=2: item 0 is a positive; one place left for the three items rated 4,
    # each gets 1/3 (the mean over which of them torch.topk would have picked). IDCG@2 = 1 + 1/L3 (2 ones).
    true = [[5.0, 4.0, 4.0, 4.0, 1.0]]
    idcg = 1 + 1 / L3
    # a ranking perfect by true rating: gains 1, 1/3 -> (1 + (1/3)/L3) / IDCG = 0.742098, below 1 as in
    # RecBole-MetaRec (where it is 1 or 0.613147 depending on torch.topk's choice: mean (1 + 2 * 0.613147) / 3)
    perfect = query_ndcg_at_k([[5.0, 4.0, 3.0, 2.0, 1.0]], true, None, 2, gain="binary_topk")[0]
    assert perfect == pytest.approx((1 + (1 / 3) / L3) / idcg)
    assert perfect == pytest.approx((1 + 2 * (1 / idcg)) / 3)
    # the order among the three tied items does not matter: same value when they are scored in reverse
    rev = query_ndcg_at_k([[5.0, 2.0, 3.0, 4.0, 1.0]], true, None, 2, gain="binary_topk")[0]
    assert rev == pytest.approx(perfect)


def test_query_ndcg_prediction_ties_are_pessimistic_for_every_gain():
    # all scores equal: the item with the lower gain comes first, i.e. true ratings ascending (1, 3, 5)
    pred, true = [[0.5, 0.5, 0.5]], [[5.0, 3.0, 1.0]]
    lin = (1 + 3 / L3 + 5 / 2) / (5 + 3 / L3 + 1 / 2)
    ex = (1 + 7 / L3 + 31 / 2) / (31 + 7 / L3 + 1 / 2)
    assert query_ndcg_at_k(pred, true, None, 3)[0] == pytest.approx(lin)
    assert query_ndcg_at_k(pred, true, None, 3, gain="exp")[0] == pytest.approx(ex)
    # binary_topk, k=1: the positive (r=5) is ranked last of the tie -> 0
    assert query_ndcg_at_k(pred, true, None, 1, gain="binary_topk")[0] == 0.0
    # a partial tie: items 0 (r=5) and 2 (r=1) tie at 0.9, item 1 (r=3) at 0.1 -> order r=1, 5, 3
    got = query_ndcg_at_k([[0.9, 0.1, 0.9]], true, None, 2)[0]
    assert got == pytest.approx((1 + 5 / L3) / (5 + 3 / L3))
    # deterministic and independent of item positions: permuting the items gives the same value
    for gain in ("linear", "exp", "binary_topk"):
        a = query_ndcg_at_k([[0.9, 0.1, 0.9]], true, None, 2, gain=gain)[0]
        b = query_ndcg_at_k([[0.9, 0.9, 0.1]], [[1.0, 5.0, 3.0]], None, 2, gain=gain)[0]
        assert a == pytest.approx(b)


def test_query_ndcg_gains_ignore_padding():
    # row 0: the 3-item query above padded to 5 slots with large scores and ratings in the padding
    pred = np.array([[3.0, 5.0, 1.0, 99.0, 98.0]])
    true = np.array([[5.0, 3.0, 1.0, 5.0, np.nan]])
    mask = np.array([[True, True, True, False, False]])
    for gain in ("linear", "exp", "binary_topk"):
        for k in (1, 2, 3):
            padded = query_ndcg_at_k(pred, true, mask, k, gain=gain)[0]
            plain = query_ndcg_at_k([[3.0, 5.0, 1.0]], [[5.0, 3.0, 1.0]], None, k, gain=gain)[0]
            assert padded == pytest.approx(plain)
    assert query_ndcg_at_k(pred, true, mask, 3, gain="exp")[0] == pytest.approx(
        (7 + 31 / L3 + 1 / 2) / (31 + 7 / L3 + 1 / 2))
    # a row with no valid item is NaN for every gain
    for gain in ("linear", "exp", "binary_topk"):
        assert np.isnan(query_ndcg_at_k(pred, true, np.zeros_like(mask), 2, gain=gain)[0])


def test_query_ndcg_k_larger_than_the_query():
    # 2 valid items (ratings 4, 2) in 4 slots, predicted order r=2 then r=4; k = 3 and 10 > 2 valid items
    pred = np.array([[0.2, 0.9, 5.0, 6.0]])
    true = np.array([[4.0, 2.0, 5.0, 5.0]])
    mask = np.array([[True, True, False, False]])
    for k in (3, 10):
        # linear: (2 + 4/L3) / (4 + 2/L3) = 0.859719 (nDCG@2)
        assert query_ndcg_at_k(pred, true, mask, k)[0] == pytest.approx((2 + 4 / L3) / (4 + 2 / L3))
        # exp: (3 + 15/L3) / (15 + 3/L3) = 0.737826
        assert query_ndcg_at_k(pred, true, mask, k, gain="exp")[0] == pytest.approx((3 + 15 / L3) / (15 + 3 / L3))
        # binary_topk: both items are positives -> 1 whatever the order
        assert query_ndcg_at_k(pred, true, mask, k, gain="binary_topk")[0] == pytest.approx(1.0)


def test_query_ndcg_all_zero_ratings():
    # linear and exp: IDCG 0 -> NaN. binary_topk: the k=1 place is shared by the 3 tied items (1/3 each);
    # the first-ranked item has gain 1/3 -> (1/3) / 1
    pred, true = [[0.3, 0.2, 0.1]], [[0.0, 0.0, 0.0]]
    assert np.isnan(query_ndcg_at_k(pred, true, None, 1)[0])
    assert np.isnan(query_ndcg_at_k(pred, true, None, 1, gain="exp")[0])
    assert query_ndcg_at_k(pred, true, None, 1, gain="binary_topk")[0] == pytest.approx(1 / 3)


def test_query_ndcg_gain_names():
    from metarec.errors import MetarecError
    from metarec.evaluation.metrics import QUERY_NDCG_GAINS, query_ndcg_name

    assert QUERY_NDCG_GAINS == ("linear", "exp", "binary_topk")
    assert query_ndcg_name(3) == "ndcg@3"
    assert query_ndcg_name(3, "exp") == "ndcg_exp@3"
    assert query_ndcg_name(5, "binary_topk") == "ndcg_binary_topk@5"
    for bad in ("Linear", "exponential", "", None):
        with pytest.raises(MetarecError, match="unknown nDCG gain"):
            query_ndcg_at_k([[0.1, 0.2]], [[1.0, 2.0]], None, 2, gain=bad)
        with pytest.raises(MetarecError):
            query_ndcg_name(3, bad)
