"""The HTTP API (metarec/serve/app.py) through FastAPI's test client: every endpoint and every edge."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from metarec.serve.app import ServeConfig, create_app
from metarec.serve.batcher import MicroBatcher
from metarec.serve.service import load_servable


@pytest.fixture(scope="module")
def servables(served_runs):
    return [load_servable(served_runs["melu"]), load_servable(served_runs["bias"]),
            load_servable(served_runs["sasrec"], dataset=str(served_runs["data"]))]


@pytest.fixture
def client(servables):
    with TestClient(create_app(servables)) as c:
        yield c


def popular(s, n):
    return [str(s.raw_ids[int(j)]) for j in s.popularity.argsort()[::-1][:n]]


def test_recommend_answers_with_titles_scores_and_provenance(client, servables):
    items = popular(servables[0], 3)
    r = client.post("/v1/recommend", json={"interactions": [{"item": i, "rating": 5} for i in items], "k": 4,
                                           "profile": {"gender": "F", "age": "18-24"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "melu" and body["adapted_on"] == 3 and body["unknown_items"] == []
    assert body["fallback"] is None and body["latency_ms"] > 0
    assert len(body["items"]) == 4 and all(x["title"].startswith("Movie ") for x in body["items"])
    assert not {x["item"] for x in body["items"]} & set(items)


def test_each_model_answers_by_name_and_the_models_are_listed(client, servables):
    models = client.get("/v1/models").json()
    assert [m["name"] for m in models["models"]] == ["melu", "bias", "sasrec"]
    assert models["models"][2]["family"] == "sequential" and models["batching"]["window_ms"] == 2.0
    for name in ("bias", "sasrec"):
        r = client.post("/v1/recommend", json={"model": name, "interactions": [
            {"item": popular(servables[1], 1)[0], "rating": 4, "t": 1}]})
        assert r.status_code == 200 and r.json()["model"] == name
    assert client.get("/healthz").json() == {"status": "ok", "models": ["melu", "bias", "sasrec"]}


def test_score_and_search(client, servables):
    items = popular(servables[0], 3)
    r = client.post("/v1/score", json={"interactions": [{"item": items[0], "rating": 4}],
                                       "items": [items[1], items[2], 17, "nope"]})
    body = r.json()
    assert r.status_code == 200 and [x["item"] for x in body["scores"]] == [items[1], items[2]]
    assert body["unknown_items"] == ["17", "nope"]
    found = client.get("/v1/items", params={"q": "movie 7"}).json()["items"]
    assert {"item": "i7", "title": "Movie 7"} in found and all("movie 7" in x["title"].lower() for x in found)


def test_no_interactions_is_flagged(client):
    body = client.post("/v1/recommend", json={"profile": {"occupation": "artist"}}).json()
    assert body["fallback"] == "prior" and body["adapted_on"] == 0 and len(body["items"]) == 10
    body = client.post("/v1/recommend", json={"model": "sasrec"}).json()
    assert body["fallback"] == "popularity"


@pytest.mark.parametrize("payload, needle", [
    ({"interactions": [{"item": "nope", "rating": 4}]}, "none of the 1 interacted items is known"),
    ({"interactions": [{"item": "i1", "rating": 4}], "k": 0}, "k = 0"),
    ({"interactions": [{"item": "i1", "rating": 4}], "k": 1000}, "k = 1000"),
    ({"interactions": [{"item": "i1", "rating": 4}] * 501}, "at most 500"),
    ({"interactions": [{"item": "i1"}]}, "give each interaction a rating"),
    ({"interactions": [{"item": "i1", "rating": 7}]}, "outside [1, 5]"),
    ({"interactions": [{"item": "i1", "rating": 4}], "profile": {"shoe": "42"}}, "unknown profile field"),
    ({"model": "nope"}, "model 'nope' is not served"),
    ({"k": "ten"}, "k: Input should be a valid integer"),
    ({"interactions": "i1"}, "interactions: Input should be a valid list"),
    ({"interactions": [{"item": "i1", "rating": "good"}]}, "interactions.0.rating"),
    ({"interactions": [{"item": "i1", "rating": 4, "colour": "red"}]}, "Extra inputs are not permitted"),
    ({"interactions": [{"item": [1], "rating": 4}]}, "interactions.0.item"),
])
def test_bad_requests_get_a_422_with_one_clear_line(client, payload, needle):
    r = client.post("/v1/recommend", json=payload)
    assert r.status_code == 422 and needle in r.json()["error"], r.text
    assert "\n" not in r.json()["error"]


def test_malformed_json_oversized_bodies_and_wrong_methods_are_4xx(servables):
    with TestClient(create_app(servables, ServeConfig(max_body=2000))) as c:
        r = c.post("/v1/recommend", content=b'{"interactions": [', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "JSON" in r.json()["error"]
        big = json.dumps({"interactions": [{"item": "i1", "rating": 4}] * 200})
        r = c.post("/v1/recommend", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "over 2000 bytes" in r.json()["error"]

        def chunks():  # no Content-Length: the limit holds on the bytes as they stream in
            yield big.encode()

        r = c.post("/v1/recommend", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/recommend").status_code == 405
        assert c.get("/v1/items").status_code == 422  # q is required
        assert c.get("/nowhere").status_code == 404


def test_the_api_key_guards_the_api_not_the_health_check(servables):
    with TestClient(create_app(servables, ServeConfig(api_key="s3cret"))) as c:
        assert c.post("/v1/recommend", json={}).status_code == 401
        assert c.post("/v1/recommend", json={}, headers={"X-API-Key": "wrong"}).json()["error"].startswith("missing")
        assert c.post("/v1/recommend", json={}, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_metrics_count_requests_latency_and_batches(client):
    client.post("/v1/recommend", json={"k": 3})
    client.post("/v1/recommend", json={"k": 0})
    text = client.get("/metrics").text
    assert 'metarec_requests_total{endpoint="/v1/recommend",status="200"}' in text
    assert 'metarec_requests_total{endpoint="/v1/recommend",status="422"}' in text
    assert 'metarec_request_seconds_bucket{endpoint="/v1/recommend",le="0.005"}' in text
    assert 'metarec_batch_size_count{model="melu"}' in text


def test_the_page_and_the_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>metarec" in page.text and "/v1/recommend" in page.text
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/score", "/v1/items", "/v1/models", "/healthz", "/metrics"} <= set(spec["paths"])


def test_the_batcher_adapts_concurrent_requests_together_and_answers_each_its_own():
    sizes: list[int] = []

    def fn(xs):
        return [x * 10 for x in xs]

    async def go(window, n):
        b = MicroBatcher(fn, window_ms=window, max_batch=8, on_batch=sizes.append)
        out = await asyncio.gather(*(b.submit(x) for x in range(n)))
        await b.close()
        return out

    assert asyncio.run(go(20.0, 20)) == [x * 10 for x in range(20)]
    assert max(sizes) == 8 and sum(sizes) == 20  # the cap holds, every request answered once
    sizes.clear()
    assert asyncio.run(go(0.0, 5)) == [0, 10, 20, 30, 40] and sizes == [1] * 5  # off: one at a time


def test_a_failing_batch_fails_its_requests_not_the_batcher():
    calls = []

    def fn(xs):
        calls.append(list(xs))
        if 13 in xs:
            raise RuntimeError("boom")
        return xs

    async def go():
        b = MicroBatcher(fn, window_ms=5.0, max_batch=4)
        bad = await asyncio.gather(b.submit(13), return_exceptions=True)
        good = await b.submit(1)
        await b.close()
        return bad, good

    bad, good = asyncio.run(go())
    assert isinstance(bad[0], RuntimeError) and good == 1


def test_a_lone_request_does_not_wait_out_the_window():
    """The window is waited out only when requests overlap: one client, one request at a time, is answered at
    once (a 2-second window would show)."""
    import time

    async def go():
        b = MicroBatcher(lambda xs: xs, window_ms=2000.0, max_batch=8)
        t0 = time.perf_counter()
        for x in range(3):
            assert await b.submit(x) == x
        took = time.perf_counter() - t0
        await b.close()
        return took

    assert asyncio.run(go()) < 1.0


def test_no_body_gets_a_500(servables):
    """Fuzzed bodies (any JSON, and near-valid requests with odd values) never get a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8)
    anyjson = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                          max_size=4), max_leaves=12)
    item = st.one_of(st.sampled_from(["i1", "i2", "i40", "nope", ""]), st.integers(-5, 100))
    inter = st.fixed_dictionaries({"item": item}, optional={"rating": scalars, "t": scalars})
    near = st.fixed_dictionaries({}, optional={
        "model": st.sampled_from(["melu", "bias", "sasrec", "x"]) | scalars, "k": scalars | st.integers(-3, 200),
        "interactions": st.lists(inter, max_size=6) | anyjson, "profile": st.dictionaries(
            st.sampled_from(["age", "gender", "zip", "shoe"]), scalars, max_size=3) | anyjson,
        "exclude": st.lists(item, max_size=3) | anyjson, "items": st.lists(item, max_size=3) | anyjson})

    with TestClient(create_app(servables)) as c:
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=anyjson | near, path=st.sampled_from(["/v1/recommend", "/v1/score"]))
        def check(body, path):
            r = c.post(path, content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"})
            assert r.status_code < 500, (body, r.text)

        check()
