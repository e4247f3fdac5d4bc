"""The servable models (metarec/serve/service.py): newcomers in, top-k raw ids out, and the defined edges."""

from __future__ import annotations

import pytest
import torch

from metarec.errors import MetarecError
from metarec.serve.service import Request, RequestError, ServeLimits, load_servable


@pytest.fixture(scope="module")
def melu(served_runs):
    return load_servable(served_runs["melu"])


def liked(s, n=4):
    """Raw ids of n items of the catalogue, most popular first."""
    return [str(s.raw_ids[int(j)]) for j in torch.as_tensor(s.popularity).argsort(descending=True)[:n]]


def test_a_newcomer_gets_k_unseen_known_items(melu):
    items = liked(melu)
    req = Request(items=items, ratings=[5, 4, 2, 1], profile={"gender": "F", "age": "18-24"}, k=7)
    melu.check(req)
    res = melu.run([req])[0]
    assert res.adapted_on == 4 and res.unknown == [] and res.fallback is None
    got = [i for i, _ in res.items]
    assert len(got) == 7 and not set(got) & set(items)  # what the newcomer rated is not recommended back
    assert all(i in melu.index for i in got)
    scores = [v for _, v in res.items]
    assert scores == sorted(scores, reverse=True)


def test_a_batch_gives_each_newcomer_the_answer_it_gets_alone(melu):
    pool = liked(melu, 12)
    every = [str(melu.raw_ids[int(j)]) for j in melu.candidates]
    reqs = [Request(items=pool[j:j + 3], ratings=[5, 3, 1], profile={"gender": g}, score=every)
            for j, g in zip(range(0, 9, 3), ("M", "F", "M"), strict=True)]
    reqs.append(Request(items=[], profile={"occupation": "artist"}, score=every))
    together = melu.run(reqs)
    for req, res in zip(reqs, together, strict=True):
        alone = melu.run([req])[0]
        assert [i for i, _ in alone.items] == [i for i, _ in res.items] == every
        assert [v for _, v in alone.items] == pytest.approx([v for _, v in res.items], rel=1e-5, abs=1e-6)


def test_no_interactions_answers_from_the_prior_and_says_so(melu, served_runs):
    a = melu.run([Request(items=[], profile={"gender": "F", "age": "18-24", "occupation": "artist"})])[0]
    b = melu.run([Request(items=[], profile={"gender": "M", "age": "35-44", "occupation": "engineer"})])[0]
    assert a.fallback == b.fallback == "prior" and a.adapted_on == 0
    assert [v for _, v in a.items] != pytest.approx([v for _, v in b.items])  # MeLU's prior reads the profile
    seq = load_servable(served_runs["sasrec"], dataset=str(served_runs["data"]))
    c = seq.run([Request(items=[])])[0]
    assert c.fallback == "popularity"
    assert [v for _, v in c.items] == sorted(seq.popularity[seq.candidates.numpy()], reverse=True)[:10]
    assert all(v == seq.popularity[seq.index[i]] for i, v in c.items)  # the most popular items, by their counts


def test_unknown_items_are_listed_and_left_out(melu):
    items = liked(melu, 2)
    res = melu.run([Request(items=[*items, "nope", "i9999"], ratings=[5, 4, 3, 3])])[0]
    assert res.unknown == ["nope", "i9999"] and res.adapted_on == 2
    alone = melu.run([Request(items=items, ratings=[5, 4])])[0]
    assert [v for _, v in res.items] == [v for _, v in alone.items]  # the unknown ones changed nothing


@pytest.mark.parametrize("req, needle", [
    (Request(items=["nope"], ratings=[4]), "none of the 1 interacted items is known"),
    (Request(items=["i1"] * 501, ratings=[4] * 501), "at most 500"),
    (Request(items=["i1"], ratings=[4], k=0), "k = 0"),
    (Request(items=["i1"], ratings=[4], k=101), "k = 101"),
    (Request(items=["i1"]), "give each interaction a rating"),
    (Request(items=["i1"], ratings=[9]), "outside [1, 5]"),
    (Request(items=["i1"], ratings=[float("nan")]), "finite"),
    (Request(items=["i1"], ratings=[4], profile={"shoe": "42"}), "unknown profile field(s) shoe"),
    (Request(items=["i1"], ratings=[4], score=[]), "give 1 to 1000"),
    (Request(items=["i1", "i2"], ratings=[4]), "must align"),
])
def test_edges_stop_with_one_clear_line(melu, req, needle):
    with pytest.raises(RequestError, match=None) as e:
        melu.check(req)
    assert needle in str(e.value)


def test_implicit_models_read_clicks_and_answer_the_same_request_the_same(served_runs):
    s = load_servable(served_runs["melu-implicit"])
    assert s.view == "implicit"
    req = Request(items=liked(s, 3), k=5)
    s.check(req)
    assert s.run([req])[0].items == s.run([req])[0].items  # its sampled support negatives are seeded by the request
    with pytest.raises(RequestError, match="reads clicks"):
        s.check(Request(items=liked(s, 1), ratings=[-1]))


def test_sequential_models_read_the_order(served_runs):
    s = load_servable(served_runs["sasrec"], dataset=str(served_runs["data"]))
    assert s.family == "sequential" and s.profile_fields == ()
    items = liked(s, 4)
    given = s.run([Request(items=items)])[0]
    timed = s.run([Request(items=list(reversed(items)), times=[4, 3, 2, 1])])[0]  # the same order, by time
    assert given.items == timed.items and given.adapted_on == 4
    other = s.run([Request(items=list(reversed(items)))])[0]
    assert [v for _, v in other.items] != pytest.approx([v for _, v in given.items])  # order matters
    one = s.run([Request(items=items[:1])])[0]  # one item: no support target, the item is still the context
    assert one.adapted_on == 1 and one.fallback is None and items[0] not in [i for i, _ in one.items]


def test_score_returns_the_asked_items_in_order(melu):
    items = liked(melu, 3)
    top = melu.run([Request(items=items, ratings=[5, 4, 3], k=4)])[0]
    ask = [i for i, _ in top.items][::-1] + ["nope"]
    res = melu.run([Request(items=items, ratings=[5, 4, 3], score=ask)])[0]
    assert [i for i, _ in res.items] == ask[:-1] and res.unknown == ["nope"]
    assert dict(res.items) == pytest.approx(dict(top.items))


def test_what_cannot_be_served_stops_with_one_line(tmp_path, served_runs):
    with pytest.raises(MetarecError, match="no such checkpoint"):
        load_servable(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.pt").write_bytes(b"not a model")
    with pytest.raises(MetarecError):
        load_servable(tmp_path / "bad")
    small = load_servable(served_runs["bias"], ServeLimits(slots=2))
    reqs = [Request(items=liked(small, 2), ratings=[5, 1]) for _ in range(5)]  # more newcomers than slots
    assert len(small.run(reqs)) == 5


def test_a_profile_is_encoded_as_the_feature_space_encodes_the_users(tiny_dataset):
    """The per-newcomer encoder (plain Python) gives the codes of ``encode_users`` (pandas) for every user,
    missing fields and unseen values included."""
    from metarec.data.features import fit_features

    ds = tiny_dataset
    fs = fit_features(ds, ds.inter[ds.inter["user"] < 30])  # users 30+ bring values the vocabulary lacks
    enc = fs.user_encoder()
    want = fs.encode_users(ds.users).tolist()
    got = [enc({f: ds.users.at[u, f] for f in fs.user_fields}) for u in range(ds.n_users)]
    assert got == want
    assert enc({}) == [0] * len(fs.user_fields)  # nothing given: unknown everywhere
    assert enc({"zip": "99999999", "gender": "nonsense"})[fs.user_fields.index("gender")] == 0
