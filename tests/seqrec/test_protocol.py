"""The MML cold-start sequential protocol: T, old/new users, windows with prefix augmentation, new items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec.data.loaders import build_dataset
from metarec.errors import MetarecError
from metarec.seqrec.batch import collate_seq
from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

CFG = SeqProtocolConfig(new_user_frac=0.1, valid_frac=0.1, n_support=5, n_query=3, max_len=12)


def _user_seq(ds, user):
    df = ds.inter[ds.inter["user"] == user].sort_values(["timestamp", "item"], kind="stable")
    return df["item"].to_numpy(), df["timestamp"].to_numpy()


def test_about_ten_percent_of_users_are_new_and_never_trained_on(tiny_dataset):
    data = make_seq_protocol(tiny_dataset, CFG)
    first = tiny_dataset.inter.groupby("user")["timestamp"].min()
    new = first.index[first >= data.t_ref].to_numpy()
    assert np.array_equal(np.flatnonzero(data.user_new), new)
    assert 0.08 <= len(new) / len(first) <= 0.15
    train_owners = {t.owner for t in data.train}
    valid_owners = {t.owner for t in data.valid}
    test_owners = {t.owner for t in data.test}
    assert test_owners and test_owners <= set(new.tolist())
    assert not (train_owners | valid_owners) & set(new.tolist())
    assert not train_owners & valid_owners
    assert len(valid_owners) == round(0.1 * (len(first) - len(new)))
    # meta-train only sees interactions before T
    assert (data.train_inter["timestamp"].to_numpy() < data.t_ref).all()
    # the latest-arriving eligible old users (enough interactions before T) are meta-valid
    counts = tiny_dataset.inter[tiny_dataset.inter["timestamp"] < data.t_ref].groupby("user").size()
    eligible_train = [u for u in train_owners if counts[u] >= 8]
    assert min(first[list(valid_owners)]) >= max(first[eligible_train])


def test_meta_train_windows_are_prefix_augmented_and_cover_the_old_sequence(tiny_dataset):
    data = make_seq_protocol(tiny_dataset, CFG)
    by_user: dict[int, list] = {}
    for t in data.train:
        seq, s_pos, q_pos = t.extra["seq"], t.extra["s_pos"], t.extra["q_pos"]
        n = len(seq)
        assert 3 <= n <= CFG.max_len
        assert np.array_equal(s_pos, np.arange(1, n - 1)) and np.array_equal(q_pos, [n - 1])
        assert np.array_equal(t.s_item, seq[1:n - 1]) and np.array_equal(t.q_item, seq[-1:])
        by_user.setdefault(t.owner, []).append(seq)
    for user, windows in by_user.items():
        items, ts = _user_seq(tiny_dataset, user)
        old = items[ts < data.t_ref]
        joined = np.concatenate(windows)
        assert np.array_equal(joined, old[: len(joined)])  # consecutive windows, in time order
        assert len(old) - len(joined) < CFG.min_len  # only a too-short tail may be dropped


def test_cold_tasks_are_the_first_items_warm_up_then_next_item_queries(tiny_dataset):
    data = make_seq_protocol(tiny_dataset, CFG)
    valid_owners = {t.owner for t in data.valid}
    for t in data.valid + data.test:
        items, ts = _user_seq(tiny_dataset, t.owner)
        if t.owner in valid_owners:
            items = items[ts < data.t_ref]
        assert np.array_equal(t.extra["seq"], items[:8])
        assert np.array_equal(t.extra["s_pos"], np.arange(1, 5))
        assert np.array_equal(t.extra["q_pos"], np.arange(5, 8))
    b = collate_seq(data.test[:3])
    sup = b.support_only()
    assert (sup.seq[:, 5:] == 0).all() and (sup.seq[:, :5] > 0).all() and not sup.q_mask.any()
    # output position t predicts the item at t + 1
    assert np.array_equal(b.target[0, :7].numpy(), b.seq[0, 1:8].numpy())
    assert np.array_equal(b.q_pos[0].numpy(), [4, 5, 6]) and b.s_mask[0, :4].all() and not b.s_mask[0, 4:].any()


def test_new_items_are_first_seen_after_t_and_absent_from_training():
    rows = []
    for u in range(40):  # users arrive one per day; item 99 only exists from day 37 on
        for j in range(12):
            rows.append((f"u{u}", f"i{(u + j) % 30}", "4", str(86400 * u + 60 * j)))
    rows += [(f"u{u}", "i99", "5", str(86400 * u + 30)) for u in range(37, 40)]
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    ds = build_dataset("toy", inter)
    data = make_seq_protocol(ds, SeqProtocolConfig(n_support=4, n_query=3, max_len=12))
    new_code = int(np.flatnonzero(ds.items["raw_id"].to_numpy() == "i99")[0])
    assert data.new_items[new_code] and data.new_items.sum() == 1
    assert not data.old_items[new_code]
    assert all(new_code not in t.extra["seq"] for t in data.train + data.valid)
    assert any(new_code in t.extra["seq"] for t in data.test)
    first = ds.inter.groupby("item")["timestamp"].min()
    assert (first[data.new_items[first.index]] >= data.t_ref).all()
    st = data.stats()
    assert st["new_items"] == 1 and st["new_users"] == 4 and st["test.tasks"] == 4


def test_support_tasks_and_subsample(tiny_dataset):
    data = make_seq_protocol(tiny_dataset, CFG)
    sup = data.support_tasks("test")
    assert all(len(t.extra["seq"]) == 5 and np.array_equal(t.extra["q_pos"], [4]) for t in sup)
    half = data.subsample_train(0.5, seed=1)
    assert len(half.train) == round(0.5 * len(data.train))
    assert [t.owner for t in half.train] == [t.owner for t in data.subsample_train(0.5, seed=1).train]
    with pytest.raises(MetarecError):
        data.subsample_train(0.0)


def test_bad_protocol_sizes_are_one_line_errors(tiny_dataset):
    with pytest.raises(MetarecError):
        SeqProtocolConfig(n_support=1)
    with pytest.raises(MetarecError):
        make_seq_protocol(tiny_dataset, SeqProtocolConfig(n_support=40, n_query=20, max_len=60))
