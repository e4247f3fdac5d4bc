import numpy as np
import pytest

from metarec.errors import MetarecError
from metarec.splits import PROTOCOLS, SplitConfig, make_split


def _owners(df):
    return set(df["user"].unique().tolist())


def check_no_leakage(ds, split):
    cfg = split.config
    train, valid, test = split.train, split.valid, split.test
    # meta-train holds warm interactions only: no new user, no new item
    assert not split.user_new[train["user"]].any()
    assert not split.item_new[train["item"]].any()
    # owners are disjoint between the three parts
    assert not (_owners(train) & _owners(valid))
    assert not (_owners(train) & _owners(test))
    assert not (_owners(valid) & _owners(test))
    if cfg.by == "time" and cfg.train_before_t:
        assert (train["timestamp"] < split.t_ref).all()
    for part in (valid, test):
        if cfg.protocol in ("user-cold", "user-item-cold"):
            assert split.user_new[part["user"]].all()
        else:
            assert not split.user_new[part["user"]].any()
        if cfg.protocol in ("item-cold", "user-item-cold"):
            assert split.item_new[part["item"]].all()
            assert not set(part["item"].tolist()) & set(train["item"].tolist())
        else:
            assert not split.item_new[part["item"]].any()
    # no new user's interaction anywhere in meta-train, whatever the protocol
    new_users = np.flatnonzero(split.user_new)
    assert not np.isin(train["user"], new_users).any()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("by", ["time", "random"])
def test_no_leakage_synthetic(tiny_dataset, protocol, by):
    split = make_split(tiny_dataset, SplitConfig(protocol=protocol, by=by, seed=3))
    check_no_leakage(tiny_dataset, split)
    assert len(split.valid) + len(split.test) > 0


def test_time_split_new_users_arrive_after_T(tiny_dataset):
    split = make_split(tiny_dataset, SplitConfig(protocol="user-cold", by="time"))
    first = tiny_dataset.inter.groupby("user")["timestamp"].min().to_numpy()
    assert (first[split.user_new] >= split.t_ref).all()
    assert (first[~split.user_new] < split.t_ref).all()
    assert abs(split.user_new.mean() - 0.2) < 0.05
    # valid owners arrived before test owners
    fv = first[split.valid["user"].unique()].max()
    ft = first[split.test["user"].unique()].min()
    assert fv <= ft


def test_split_is_identical_for_the_same_seed(tiny_dataset):
    for by in ("time", "random"):
        a = make_split(tiny_dataset, SplitConfig(protocol="item-cold", by=by, seed=7))
        b = make_split(tiny_dataset, SplitConfig(protocol="item-cold", by=by, seed=7))
        c = make_split(tiny_dataset, SplitConfig(protocol="item-cold", by=by, seed=8))
        for x, y in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
            assert x.equals(y)
        assert np.array_equal(a.item_new, b.item_new)
        if by == "random":
            assert not np.array_equal(a.user_new, c.user_new) or not a.test.equals(c.test)


def test_candidate_items(tiny_dataset):
    s = make_split(tiny_dataset, SplitConfig(protocol="user-cold"))
    assert not s.item_new[s.candidate_items()].any()
    s = make_split(tiny_dataset, SplitConfig(protocol="item-cold"))
    assert s.item_new[s.candidate_items()].all()


@pytest.mark.parametrize("kw,match", [({"protocol": "cold"}, "unknown protocol"), ({"by": "day"}, "unknown split"),
                                      ({"new_user_frac": 1.5}, "between 0 and 1")])
def test_bad_config(kw, match):
    with pytest.raises(MetarecError, match=match):
        SplitConfig(**kw)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_users_without_interactions_in_the_view(tiny_dataset, protocol):
    """An implicit view can leave users with no positive at all: they are neither new nor owners."""
    from metarec.data.types import to_implicit
    imp = to_implicit(tiny_dataset, threshold=5)
    has = np.zeros(imp.n_users, bool)
    has[imp.inter["user"].unique()] = True
    assert not has.all()  # the case under test exists
    split = make_split(imp, SplitConfig(protocol=protocol))
    check_no_leakage(imp, split)
    assert not split.user_new[~has].any()
