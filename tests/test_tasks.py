import numpy as np
import pytest
import torch

from metarec.errors import MetarecError
from metarec.splits import SplitConfig, make_split
from metarec.tasks import (
    Task,
    TaskConfig,
    add_negatives,
    build_scenario_tasks,
    build_sequence_tasks,
    build_tasks,
    build_time_tasks,
    collate,
    known_codes,
    sample_negatives,
    scenarios_by_attribute,
)


def test_melu_sizing(tiny_dataset):
    tasks = build_tasks(tiny_dataset.inter, TaskConfig(min_inter=20, max_inter=30, n_query=10))
    counts = tiny_dataset.inter.groupby("user").size()
    assert len(tasks) == int(((counts >= 20) & (counts <= 30)).sum())
    for t in tasks:
        assert t.n_query == 10 and t.n_support == counts[t.owner] - 10
        assert (t.s_user == t.owner).all() and (t.q_user == t.owner).all()
        assert not set(t.s_item) & set(t.q_item)


def test_kshot_shares_the_query_across_k(tiny_dataset):
    base = dict(min_inter=30, max_inter=100, n_query=10, sizing="kshot")
    t1 = build_tasks(tiny_dataset.inter, TaskConfig(k_shot=1, **base))
    t5 = build_tasks(tiny_dataset.inter, TaskConfig(k_shot=5, **base))
    assert [t.owner for t in t1] == [t.owner for t in t5]
    for a, b in zip(t1, t5, strict=True):
        assert a.n_support == 1 and b.n_support == 5
        assert np.array_equal(a.q_item, b.q_item)
        assert a.s_item[0] == b.s_item[0]


def test_time_order_puts_latest_in_query(tiny_dataset):
    tasks = build_tasks(tiny_dataset.inter, TaskConfig(order="time"))
    inter = tiny_dataset.inter.set_index(["user", "item"])["timestamp"]
    for t in tasks[:5]:
        s_ts = inter.loc[[(t.owner, i) for i in t.s_item]].to_numpy()
        q_ts = inter.loc[[(t.owner, i) for i in t.q_item]].to_numpy()
        assert s_ts.max() <= q_ts.min()


def test_item_tasks(tiny_dataset):
    tasks = build_tasks(tiny_dataset.inter, TaskConfig(kind="item", min_inter=13))
    assert tasks and all((t.s_item == t.owner).all() for t in tasks)


def test_collate_ragged():
    def task(owner, s, q):
        return Task(owner, np.full(s, owner), np.arange(1, s + 1), np.full(s, 3.0, np.float32),
                    np.full(q, owner), np.arange(100, 100 + q), np.full(q, 4.0, np.float32))

    b = collate([task(1, 2, 3), task(2, 5, 1), task(3, 0, 2)])
    assert b.s_item.shape == (3, 5) and b.q_item.shape == (3, 3)
    assert b.s_mask.tolist() == [[True, True, False, False, False], [True] * 5, [False] * 5]
    assert b.q_mask.sum(1).tolist() == [3, 1, 2]
    assert b.s_item[0].tolist() == [1, 2, 0, 0, 0]
    assert b.s_rating.dtype == torch.float32 and b.s_item.dtype == torch.long
    assert float(b.s_rating[b.s_mask].sum()) == 3.0 * 7
    assert float(b.q_rating[~b.q_mask].abs().sum()) == 0.0
    with pytest.raises(MetarecError):
        collate([])


def test_negatives_never_known_positives(tiny_dataset):
    inter = tiny_dataset.inter
    known = known_codes(inter)
    rng = np.random.default_rng(0)
    owners = np.repeat(np.arange(tiny_dataset.n_users), 50)
    neg = sample_negatives(owners, np.arange(tiny_dataset.n_items), 3, rng, known)
    pos = set(zip(inter["user"], inter["item"], strict=True))
    assert not any((o, n) in pos for o, row in zip(owners, neg, strict=True) for n in row)
    # seeded
    again = sample_negatives(owners, np.arange(tiny_dataset.n_items), 3, np.random.default_rng(0), known)
    assert np.array_equal(neg, again)


def test_negative_sampling_fails_cleanly_when_impossible():
    import pandas as pd
    inter = pd.DataFrame({"user": [0, 0], "item": [0, 1]})
    with pytest.raises(MetarecError, match="negative sampling"):
        sample_negatives(np.array([0]), np.array([0, 1]), 1, np.random.default_rng(0), known_codes(inter))


def test_add_negatives(tiny_dataset):
    tasks = build_tasks(tiny_dataset.inter, TaskConfig())[:3]
    out = add_negatives(tasks, known_codes(tiny_dataset.inter), np.arange(tiny_dataset.n_items), 2, seed=0)
    for t, o in zip(tasks, out, strict=True):
        assert o.n_query == 3 * t.n_query and (o.q_rating[t.n_query:] == 0).all()


def test_time_tasks(tiny_dataset):
    tasks = build_time_tasks(tiny_dataset.inter, 5)
    assert len(tasks) == 4
    assert np.array_equal(tasks[0].q_item, tasks[1].s_item)


def test_sequence_tasks_prefix_augmentation(tiny_dataset):
    tasks = build_sequence_tasks(tiny_dataset.inter)
    t = tasks[0]
    seq = t.extra["seq"]
    n = len(seq)
    assert t.n_support == n - 2 and t.n_query == 1  # n-1 prefixes: n-2 support, the last one query
    assert t.q_item[0] == seq[-1]
    assert np.array_equal(t.s_item, seq[1:-1])
    new = build_sequence_tasks(tiny_dataset.inter, n_query=5)[0]
    assert new.n_query == 5 and np.array_equal(new.q_item, new.extra["seq"][-5:])


def test_scenario_tasks(tiny_dataset):
    sc = scenarios_by_attribute(tiny_dataset.items, "genres", min_items=10, max_items=60)
    assert sc and all(10 <= len(v) <= 60 for v in sc.values())
    combo = scenarios_by_attribute(tiny_dataset.items, "genres+year", min_items=1, max_items=1000)
    assert any(" x " in k for k in combo)
    source_users = np.arange(0, tiny_dataset.n_users, 2)
    tasks = build_scenario_tasks(tiny_dataset.inter, sc, source_users, n_train=16)
    for t in tasks:
        assert t.n_support == 16 and np.isin(t.s_user, source_users).all()
        assert np.isin(t.s_item, t.extra["items"]).all() and np.isin(t.q_item, t.extra["items"]).all()


def test_tasks_from_split_are_reproducible(tiny_dataset):
    s = make_split(tiny_dataset, SplitConfig(protocol="user-cold", by="random", seed=1))
    a = build_tasks(s.train, TaskConfig(seed=1))
    b = build_tasks(s.train, TaskConfig(seed=1))
    assert all(np.array_equal(x.q_item, y.q_item) for x, y in zip(a, b, strict=True))
