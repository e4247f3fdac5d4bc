"""The s²Meta scenario protocol: split disjointness, D_train, leak-freedom, layout, evaluation, MF cache."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.data.loaders import build_dataset
from metarec.learners.base import Adapted
from metarec.nets.mf import MFConfig, factorize, pretrained_embeddings
from metarec.scenarios import ScenarioConfig, _grid, codes, evaluate_scenarios, prepare_scenarios, split_triples
from metarec.tasks import collate

# 40 items of a genre with too many items (the source domain) and six scenario genres of 12 items each
TINY = ScenarioConfig(attribute="genres", min_items=10, max_items=20, n_train=8, valid_frac=0.2, test_frac=0.3,
                      target_only_frac=0.3, support_negatives=4, seed=0)


def scenario_dataset(n_users: int = 70, seed: int = 0):
    rng = np.random.default_rng(seed)
    genres = ["Big"] * 40 + [f"S{g}" for g in range(6) for _ in range(12)]
    n_items = len(genres)
    pu, qi = rng.normal(size=(n_users, 3)), rng.normal(size=(n_items, 3))
    rows = []
    for u in range(n_users):
        k = int(rng.integers(25, 45))
        p = np.exp(pu[u] @ qi.T)
        for j, i in enumerate(rng.choice(n_items, size=k, replace=False, p=p / p.sum())):
            rows.append((f"u{u}", f"i{i}", "4", str(1_000_000_000 + 3600 * (u * 50 + j))))
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    items = pd.DataFrame({"item": [f"i{i}" for i in range(n_items)], "title": [f"M{i}" for i in range(n_items)],
                          "genres": genres, "year": ["1995"] * n_items})
    return build_dataset("tiny-scenarios", inter, None, items)


@pytest.fixture
def sdata():
    return prepare_scenarios(scenario_dataset(), TINY)


def test_scenario_parts_are_disjoint_and_complete(sdata):
    names = {p: {t.extra["scenario"] for t in getattr(sdata, p)} for p in ("train", "valid", "test")}
    assert all(names.values())
    assert not (names["train"] & names["valid"]) and not (names["train"] & names["test"])
    assert not (names["valid"] & names["test"])
    kept = {k for k, v in sdata.part.items() if v != "dropped"}
    assert names["train"] | names["valid"] | names["test"] == kept == {f"S{g}" for g in range(6)}
    assert all(sdata.part[t.extra["scenario"]] == p for p in names for t in getattr(sdata, p))


def test_dtrain_is_64_style_sized_and_from_shared_users(sdata):
    ds = sdata.dataset
    src_items = set(sdata.source["item"])
    assert all(str(ds.items["genres"][i]) == "Big" for i in src_items)
    assert not sdata.shared[sdata.target_only["user"].to_numpy()].any()
    assert sdata.shared[sdata.source["user"].to_numpy()].all()
    assert (~sdata.shared).sum() > 0 and sdata.shared.sum() > 0
    seen = set()
    for t in sdata.train + sdata.valid + sdata.test:
        pos = t.s_rating > 0
        assert pos.sum() == TINY.n_train and (~pos).sum() == TINY.n_train * TINY.support_negatives
        assert sdata.shared[t.s_user].all()
        assert np.isin(t.s_item, t.extra["items"]).all()
        pairs = set(codes(t.s_user[pos], t.s_item[pos]).tolist())
        assert not pairs & seen  # D_train sets are disjoint
        seen |= pairs
        assert len(np.unique(codes(t.s_user[pos], t.s_item[pos]))) == TINY.n_train
        qpos = t.q_rating > 0
        assert sdata.shared[t.q_user].all() and np.isin(t.q_item, t.extra["items"]).all()
        if t.extra["part"] != "train":  # evaluation pairs are never training data anywhere
            assert not np.isin(codes(t.q_user[qpos], t.q_item[qpos]), sdata.train_codes).any()
            assert (t.q_rating > 0).all()
        else:
            assert (~qpos).sum() == qpos.sum() * TINY.query_negatives
        # negatives of D_train: scenario items that are no training pair of their user
        assert not np.isin(codes(t.s_user[~pos], t.s_item[~pos]), sdata.train_codes).any()


def test_reproducible_and_seed_dependent():
    ds = scenario_dataset()
    a, b = prepare_scenarios(ds, TINY), prepare_scenarios(ds, TINY)
    assert [t.extra["scenario"] for t in a.test] == [t.extra["scenario"] for t in b.test]
    assert all(np.array_equal(x.s_item, y.s_item) for x, y in zip(a.train, b.train, strict=True))
    c = prepare_scenarios(ds, ScenarioConfig(**{**TINY.__dict__, "seed": 1}))
    assert any(not np.array_equal(x.s_item, y.s_item) for x, y in zip(a.train + a.valid + a.test,
                                                                      c.train + c.valid + c.test, strict=False))


def test_user_who_rated_a_whole_scenario_is_left_out_of_it():
    # ml-1m has such a user (all 30 films of Musical x 1990s): no negative exists for the hinge triples, and
    # their test items would be ranked among nothing else. Give one shared user every item of every scenario.
    ds = scenario_dataset()
    inter = ds.inter
    u0 = int(np.flatnonzero(prepare_scenarios(ds, TINY).shared)[0])
    scen_items = np.flatnonzero([str(g) != "Big" for g in ds.items["genres"]])
    big_item = int(np.flatnonzero([str(g) == "Big" for g in ds.items["genres"]])[0])
    extra = pd.DataFrame({"user": u0, "item": np.r_[scen_items, big_item], "rating": 4.0,
                          "timestamp": int(inter["timestamp"].max()) + 1})
    full = pd.concat([inter, extra]).drop_duplicates(["user", "item"]).reset_index(drop=True)
    ds = dataclasses.replace(ds, inter=full)
    data = prepare_scenarios(ds, TINY)  # the sampler would find no negative for u0 without the rule
    assert data.shared[u0]
    for t in data.train + data.valid + data.test:
        assert u0 not in t.s_user and u0 not in t.q_user


def test_split_triples_pairs_each_positive_with_its_negatives():
    # task 0: 2 positives, k=2 negatives each; task 1: 1 positive (padded)
    user = torch.tensor([[5, 6, 5, 5, 6, 6], [7, 7, 7, 0, 0, 0]])
    item = torch.tensor([[1, 2, 10, 11, 20, 21], [3, 30, 31, 0, 0, 0]])
    rating = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]).float()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]).bool()
    u, i, j, m = split_triples(user, item, rating, mask, 2)
    assert u.tolist()[0] == [5, 6] and i.tolist()[0] == [1, 2] and j.tolist()[0] == [[10, 11], [20, 21]]
    assert m.tolist() == [[True, True], [True, False]] and j[1, 0].tolist() == [30, 31] and i[1, 0] == 3


class _Oracle(torch.nn.Module):
    """Scores a pair 1 if it is a test positive of the scenario, else a constant (or random) value."""

    def __init__(self, positives: set, ctx=None, noise=False):
        super().__init__()
        self.positives, self.noise, self.ctx = positives, noise, ctx

    def adapt(self, support):
        def score(users, items):
            c = codes(users.numpy(), items.numpy())
            s = np.isin(c, list(self.positives)).astype(np.float32)
            return torch.from_numpy(np.random.default_rng(0).random(s.shape).astype(np.float32) if self.noise else s)

        return Adapted(support.owner, score, score)


def test_evaluate_scenarios_oracle_and_constant(sdata):
    pos = set()
    for t in sdata.test:
        pos |= set(codes(t.q_user, t.q_item).tolist())
    res = evaluate_scenarios(_Oracle(pos), sdata.test, sdata.train_codes, ks=(10, 20), batch_size=2)
    assert res["recall@20"] == pytest.approx(1.0) and res["tasks"] == len(sdata.test)
    rnd = evaluate_scenarios(_Oracle(pos, noise=True), sdata.test, sdata.train_codes, ks=(10, 20))
    assert 0 < rnd["recall@10"] < 1.0
    const = evaluate_scenarios(_Oracle(set()), sdata.test, sdata.train_codes, ks=(10,))
    # ties are broken pessimistically: a constant scorer hits only users with at most 10 candidates left
    expected = []
    for t in sdata.test:
        _, _, positives, exclude = _grid(t, sdata.train_codes)
        expected.append(np.mean((~exclude).sum(1) <= 10))
    assert const["recall@10"] == pytest.approx(np.mean(expected)) and const["recall@10"] < rnd["recall@10"]


def test_factorize_fits_and_cache_round_trips(sdata, tmp_path):
    inter = sdata.source
    P, Q = factorize(inter, sdata.dataset.n_users, sdata.dataset.n_items, MFConfig(dim=8, epochs=30, batch=256))
    u, i = torch.tensor(inter["user"].to_numpy()), torch.tensor(inter["item"].to_numpy())
    pos = (P[u] * Q[i]).sum(-1).mean()
    rand = (P[u] * Q[torch.randint(sdata.dataset.n_items, (len(u),))]).sum(-1).mean()
    assert pos > rand + 0.2, (pos, rand)
    cfg = MFConfig(dim=8, epochs=2, batch=256)
    a = pretrained_embeddings(sdata, cfg)
    b = pretrained_embeddings(sdata, cfg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (sdata.dataset.n_users, 8)


def test_collated_support_keeps_layout(sdata):
    b = collate(sdata.test)
    u, i, j, m = split_triples(b.s_user, b.s_item, b.s_rating, b.s_mask, TINY.support_negatives)
    assert m.all() and u.shape == (len(sdata.test), TINY.n_train) and j.shape[-1] == TINY.support_negatives
