"""The warm-up protocol: the split's guarantees, the meta-training tasks, and what the evaluation does."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.ctr.warmup import (
    PHASES,
    MeanInit,
    RandomInit,
    evaluate_test,
    item_tasks,
    make_warmup_split,
    run_protocol,
)
from metarec.data.types import to_implicit
from metarec.errors import MetarecError
from metarec.nets.deepfm import WarmUpdate
from tests.ctr.warmup_data import BCFG, WCFG, trained_backbone, warmup_dataset


def test_split_old_new_and_time_ordered_warmup_batches():
    ds = warmup_dataset()
    s = make_warmup_split(ds, WCFG)
    k = WCFG.k
    counts = ds.inter.groupby("item").size()
    assert len(s.old_items) and len(s.new_items)
    assert not set(s.old_items) & set(s.new_items)
    assert (counts[s.old_items] > WCFG.old_min).all()
    assert ((counts[s.new_items] >= 3 * k + WCFG.min_test) & (counts[s.new_items] <= WCFG.old_min)).all()
    assert set(s.base["item"]) == set(s.old_items)  # the backbone sees old items only
    assert not set(s.new_items) & set(s.base["item"])
    key = ["user", "item", "timestamp"]
    rows = [set(map(tuple, part[key].to_numpy().tolist())) for part in (*s.warm, s.test)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not rows[a] & rows[b]  # warm-a, -b, -c and test are disjoint
    new_inter = ds.inter[ds.inter["item"].isin(s.new_items)]
    assert sum(map(len, rows)) == len(new_inter)  # every new-item interaction is in exactly one part
    for item in s.new_items:
        parts = [p[p["item"] == item]["timestamp"].to_numpy() for p in (*s.warm, s.test)]
        assert [len(p) for p in parts[:3]] == [k, k, k] and len(parts[3]) >= WCFG.min_test
        for early, late in zip(parts, parts[1:], strict=False):
            assert early.max() <= late.min()  # warm-a before warm-b before warm-c before test
    assert set(np.unique(s.base["label"])) == {0.0, 1.0}


def test_split_rejects_implicit_data_and_impossible_thresholds():
    ds = warmup_dataset()
    with pytest.raises(MetarecError, match="explicit ratings"):
        make_warmup_split(to_implicit(ds, 4.0), WCFG)
    with pytest.raises(MetarecError, match="0 old items"):
        make_warmup_split(ds, replace(WCFG, old_min=10_000))
    with pytest.raises(MetarecError, match="old_min >= 3 k"):
        make_warmup_split(ds, replace(WCFG, old_min=10))


def test_item_tasks_are_disjoint_k_pairs_of_one_item():
    s = make_warmup_split(warmup_dataset(), WCFG)
    tasks = item_tasks(s.base, s.old_items[:3], WCFG.k, seed=0)
    per_item = s.base.groupby("item").size()
    assert len(tasks) == sum(per_item[i] // (2 * WCFG.k) for i in s.old_items[:3])
    for t in tasks:
        assert t.n_support == t.n_query == WCFG.k
        assert set(t.s_item) == set(t.q_item) == {t.owner}
        assert not set(t.s_user) & set(t.q_user)  # one rating per (user, item): disjoint minibatches
    assert item_tasks(s.base, s.old_items[:3], WCFG.k, seed=0)[0].s_user.tolist() == tasks[0].s_user.tolist()


@pytest.fixture(scope="module")
def trained():
    return trained_backbone()


def test_protocol_updates_only_new_item_vectors(trained):
    data, bb = trained
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    res = run_protocol(bb, MeanInit(bb), data, WCFG.update)
    assert list(res) == list(PHASES)
    assert all(0.0 <= r["auc"] <= 1.0 and r["logloss"] > 0 for r in res.values())
    assert all(torch.equal(before[k], v) for k, v in bb.state_dict().items())  # backbone frozen
    mean = bb.old_item_table().mean(0).expand(len(data.new_items), -1)
    assert res["cold"] == evaluate_test(bb, mean, data)
    assert res["warm-c"] != res["cold"]  # the updates changed the predictions


def test_a_zero_rate_update_leaves_every_phase_as_cold(trained):
    data, bb = trained
    res = run_protocol(bb, RandomInit(BCFG.emb_dim, 0.1, seed=3), data, WarmUpdate(lr=0.0, steps=1))
    assert all(res[p] == res["cold"] for p in PHASES)


class _Recorder(MeanInit):
    """Mean init that records the U_i the protocol passes at each phase."""

    def __init__(self, bb):
        super().__init__(bb)
        self.seen = []

    def effective(self, raw, items, user_mean):
        if user_mean is not None and (not self.seen or self.seen[-1] is not user_mean):
            self.seen.append(user_mean)
        return raw


@pytest.mark.parametrize("users_seen", ["all", "last"])
def test_protocol_user_mean_over_all_or_the_latest_warmup_users(trained, users_seen):
    data, bb = trained
    rec = _Recorder(bb)
    run_protocol(bb, rec, data, WCFG.update, users_seen=users_seen)
    batches = [bb.user_vec(users) for users, _ in data.phases]  # (N, k, d) per phase
    assert len(rec.seen) == 3
    for j, got in enumerate(rec.seen):
        want = torch.cat(batches[:j + 1], 1).mean(1) if users_seen == "all" else batches[j].mean(1)
        assert torch.allclose(got, want, atol=1e-6)


def test_warmup_on_the_new_items_lowers_their_test_loss(trained):
    data, bb = trained
    res = run_protocol(bb, RandomInit(BCFG.emb_dim, BCFG.init_std, seed=0), data, WarmUpdate(lr=1.0, steps=3))
    assert res["warm-c"]["logloss"] < res["cold"]["logloss"]
