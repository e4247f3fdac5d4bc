"""``metarec serve``: FastAPI over the servable models (``metarec/serve/service.py``).

Endpoints (OpenAPI docs at ``/docs``):
- ``POST /v1/recommend``: a newcomer's interactions (raw item ids with a rating, clicks for implicit models, a time
  ``t`` or the given order for sequential ones), optional profile fields, ``k`` and items to exclude -> the top-k
  raw item ids with scores and titles, the model that answered, how many interactions it adapted on, the unknown
  item ids it left out, and ``fallback`` when there was nothing to adapt on;
- ``POST /v1/score``: the same newcomer, scores of the given items;
- ``GET /v1/items?q=``: title search; ``GET /v1/models``; ``GET /healthz``; ``GET /metrics`` (Prometheus: request
  counts by endpoint and status, latency histograms, micro-batch sizes); ``GET /``: a page to try it.

Bad input is a 4xx with ``{"error": "..."}``, one line: 422 for wrong types, malformed JSON and requests the model
cannot answer (see the service), 413 for bodies over ``max_body`` bytes, 401 without the API key when one is set
(header ``X-API-Key``; ``/healthz``, ``/`` and ``/docs`` stay open).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from metarec.errors import MetarecError
from metarec.serve.batcher import MicroBatcher
from metarec.serve.service import Request as Newcomer
from metarec.serve.service import RequestError, Servable, ServeLimits

__all__ = ["ServeConfig", "create_app", "app_from_env"]

ItemId = str | int


@dataclass(frozen=True)
class ServeConfig:
    window_ms: float = 2.0  # micro-batching window; 0: off (every request alone)
    max_batch: int = 32
    api_key: str | None = None  # required in X-API-Key when set
    max_body: int = 64 * 1024  # bytes
    limits: ServeLimits = field(default_factory=ServeLimits)


class Interaction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: ItemId = Field(description="the item's raw id in the model's dataset")
    rating: float | None = Field(None, description="explicit models: the rating; implicit: a click (omit or > 0)")
    t: float | None = Field(None, description="sequential models: a timestamp or position (default: given order)")


class Newcomer_(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="a served model's name (GET /v1/models); default: the first")
    interactions: list[Interaction] = Field(default_factory=list)
    profile: dict[str, str | int] = Field(default_factory=dict, description="e.g. age, gender, occupation, zip")


class RecommendBody(Newcomer_):
    k: int = 10
    exclude: list[ItemId] = Field(default_factory=list)


class ScoreBody(Newcomer_):
    items: list[ItemId]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes (declared, or counted as it streams in without a
    Content-Length) gets 413 before the app sees it; the body read so far is handed on unchanged otherwise."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.limit:
                    return await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)
            except ValueError:
                return await _error(400, "bad Content-Length header")(scope, receive, send)
        chunks, size = [], 0
        while True:  # bodies are small (the limit): read them whole, then replay
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, as the server reports it

        await self.app(scope, replay, send)


def _as_newcomer(body: Newcomer_, k: int = 10, exclude=(), score=None) -> Newcomer:
    return Newcomer(items=[str(x.item) for x in body.interactions], ratings=[x.rating for x in body.interactions],
                    times=[x.t for x in body.interactions], profile={f: str(v) for f, v in body.profile.items()},
                    k=k, exclude=[str(x) for x in exclude], score=None if score is None else [str(x) for x in score])


def create_app(servables: list[Servable], config: ServeConfig = ServeConfig()) -> FastAPI:
    """The app over loaded models (the first answers requests that name none)."""
    if not servables:
        raise MetarecError("nothing to serve")
    models = {s.name: s for s in servables}
    registry = CollectorRegistry()  # this app's metrics only (several apps in one process stay apart)
    requests = Counter("metarec_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                       registry=registry)
    latency = Histogram("metarec_request_seconds", "request latency by endpoint", ["endpoint"], registry=registry,
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
    batch_size = Histogram("metarec_batch_size", "newcomers adapted together", ["model"], registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128))
    batchers = {name: MicroBatcher(s.run, config.window_ms, config.max_batch, name=name,
                                   on_batch=lambda n, name=name: batch_size.labels(name).observe(n))
                for name, s in models.items()}

    @asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():
            await b.close()

    app = FastAPI(title="metarec serve", version="1", lifespan=lifespan,
                  description="Recommendations for a newcomer, adapted from the handful of items they rated.")


    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}"
                      + (f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""))

    @app.exception_handler(RequestError)
    async def unanswerable(request: Request, exc: RequestError):
        return _error(422, str(exc))

    def key(x_api_key: str | None = Header(None)) -> None:
        if config.api_key and not (x_api_key and secrets.compare_digest(x_api_key, config.api_key)):
            raise _Unauthorized("missing or wrong API key")

    @app.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, exc: Exception):
        return _error(401, "missing or wrong API key (header X-API-Key)")

    def pick(name: str | None) -> Servable:
        if name is None:
            return servables[0]
        if name not in models:
            raise RequestError(f"model {name!r} is not served (serving {', '.join(models)})")
        return models[name]

    async def answer(s: Servable, req: Newcomer):
        s.check(req)
        t0 = time.perf_counter()
        res = await batchers[s.name].submit(req)
        return res, (time.perf_counter() - t0) * 1000

    def item_rows(s: Servable, items):
        return [{"item": i, "score": v, "title": s.title(s.index[i])} for i, v in items]

    @app.post("/v1/recommend", dependencies=[Depends(key)])
    async def recommend(body: RecommendBody):
        s = pick(body.model)
        res, ms = await answer(s, _as_newcomer(body, body.k, body.exclude))
        return JSONResponse({"model": s.name, "items": item_rows(s, res.items), "adapted_on": res.adapted_on,
                             "unknown_items": res.unknown, "fallback": res.fallback, "latency_ms": round(ms, 3)})

    @app.post("/v1/score", dependencies=[Depends(key)])
    async def score(body: ScoreBody):
        s = pick(body.model)
        res, ms = await answer(s, _as_newcomer(body, score=body.items))
        return JSONResponse({"model": s.name, "scores": item_rows(s, res.items), "adapted_on": res.adapted_on,
                             "unknown_items": res.unknown, "fallback": res.fallback, "latency_ms": round(ms, 3)})

    @app.get("/v1/items", dependencies=[Depends(key)])
    async def items(q: str = Query(..., min_length=1, max_length=200), model: str | None = None,
                    limit: int = Query(20, ge=1, le=200)):
        s = pick(model)
        return {"model": s.name, "items": [{"item": i, "title": t} for i, t in s.search(q, limit)]}

    @app.get("/v1/models", dependencies=[Depends(key)])
    async def list_models():
        return {"models": [s.describe() for s in servables],
                "batching": {"window_ms": config.window_ms if batchers[servables[0].name].batching else 0,
                             "max_batch": config.max_batch}}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": list(models)}

    @app.get("/metrics", dependencies=[Depends(key)])
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    page = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    async def observed(scope, receive, send):
        """Counts and latency by endpoint (the route's path) and status, around everything else."""
        if scope["type"] != "http":
            return await app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def send_status(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await app(scope, receive, send_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            requests.labels(endpoint, str(status[0])).inc()
            latency.labels(endpoint).observe(time.perf_counter() - t0)

    return BodyLimit(observed, config.max_body)  # type: ignore[return-value]


class _Unauthorized(RequestError):
    pass


# --- several worker processes: each loads the models itself from the settings in the environment ----------

ENV = "METAREC_SERVE"


def settings_to_env(run_dirs: list[str], config: ServeConfig, dataset: str | None = None) -> str:
    cfg = asdict(config)
    cfg.pop("api_key")  # the key stays in its own environment variable, never in this one
    return json.dumps({"runs": run_dirs, "config": cfg, "dataset": dataset})


def app_from_env():
    """uvicorn's factory for ``--workers N``: every worker process builds the same app."""
    from metarec.config import config_from_dict
    from metarec.serve.service import load_servable

    blob = json.loads(os.environ[ENV])
    cfg = config_from_dict(ServeConfig, blob["config"])
    key_var = os.environ.get(ENV + "_KEY_VAR")
    if key_var:
        cfg = ServeConfig(cfg.window_ms, cfg.max_batch, os.environ.get(key_var) or None, cfg.max_body, cfg.limits)
    return create_app([load_servable(r, cfg.limits, blob.get("dataset")) for r in blob["runs"]], cfg)
