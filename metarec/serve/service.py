"""A trained model answering newcomers: raw item ids in, top-k raw item ids out, adapted in one vectorised call.

Framework-free (the HTTP app is ``metarec/serve/app.py``): :func:`load_servable` reads a run directory written by
``metarec train``/``compare --save`` (rating family) or by the sequential runners, with ``weights_only`` (no
unpickling), rebuilds what the model knows about users and items from its recorded run configuration (the
dataset's raw ids and titles, the feature vocabulary fitted on meta-train), and checks that the data did not
change since training. ``Servable.run(requests)`` adapts to every request of a batch at once (``learner.adapt``
on one support batch, then ``adapted.score_items`` over the candidate items): the micro-batcher hands it the
requests that arrived together.

A newcomer of the rating family takes one of ``slots`` user rows appended to the model's users: their profile
fields (age, gender, occupation, zip) are encoded with the meta-train vocabulary (unseen values: unknown) and
written there (``Learner.set_user_codes``) before the batch adapts. The sequential models read the newcomer's
items in order (by ``t`` when every interaction has one, else as given) and rank the item that comes next.

Defined behaviour at the edges (each a :class:`RequestError`, HTTP 422, with one clear message):
- no interactions: the model's own prior when it has one (its adaptation on an empty support set: for MeLU and
  the other feature models, the profile alone; for the bias model, the item biases), flagged ``fallback:
  "prior"``; models that cannot adapt on nothing (the sequential ones) answer by meta-train popularity, flagged
  ``fallback: "popularity"``;
- unknown item ids are listed in ``unknown`` and left out; when interactions were given and none is known, the
  request stops (422): an answer from nothing would look like one from the user's items;
- explicit models need a rating for every interaction, within the dataset's rating range; implicit models read
  every interaction as a click (a given rating must be positive) and draw their support negatives as in
  training, seeded by the request, so the same request gets the same answer;
- more than ``max_interactions`` interactions, k outside 1..``max_k``, more than ``max_items`` items to score,
  an unknown profile field: 422.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from metarec.errors import MetarecError

__all__ = ["ServeLimits", "Request", "Result", "RequestError", "Servable", "load_servable"]


@dataclass(frozen=True)
class ServeLimits:
    max_interactions: int = 500
    max_k: int = 100
    max_items: int = 1000  # items one /score request may ask for
    slots: int = 64  # newcomers one batch adapts together at most (the micro-batch cap)


class RequestError(MetarecError):
    """A request the model cannot answer as asked (HTTP 422), with the reason in one line."""


@dataclass
class Request:
    items: list[str]  # the newcomer's interactions: raw item ids, in the order given
    ratings: list[float | None] = field(default_factory=list)  # aligned with items (None: not given)
    times: list[float | None] = field(default_factory=list)  # aligned with items (None: not given)
    profile: dict[str, str] = field(default_factory=dict)
    k: int = 10
    exclude: list[str] = field(default_factory=list)
    score: list[str] | None = None  # /score: the items to score (instead of a top-k)


@dataclass
class Result:
    items: list[tuple[str, float]]  # (raw item id, score), best first (top-k) or in the order asked (score)
    adapted_on: int  # known interactions the model adapted on
    unknown: list[str]  # raw ids not in the model's items, left out
    fallback: str | None = None  # "prior" or "popularity" when there was nothing to adapt on


def _seed_of(req: Request) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(req.items).encode()).digest()[:4], "little")


class Servable:
    """One loaded model and its item catalogue; ``run(requests)`` answers a batch (not thread-safe: one
    worker at a time, the micro-batcher's)."""

    def __init__(self, learner, *, path: Path, dataset: str, view: str, raw_ids: np.ndarray, titles: list[str],
                 candidates: np.ndarray, popularity: np.ndarray, limits: ServeLimits, features=None,
                 n_users: int = 0, rating_range: tuple[float, float] = (1.0, 5.0), negatives: int = 0,
                 protocol: str = ""):
        self.learner = learner.eval()
        self.name = learner.name
        self.family = learner.family or "rating"
        self.path, self.dataset, self.view, self.protocol = path, dataset, view, protocol
        self.raw_ids = raw_ids
        self.titles = titles
        self.index = {str(r): j for j, r in enumerate(raw_ids)}
        self.candidates = torch.as_tensor(candidates, dtype=torch.long)
        self._position = {int(c): j for j, c in enumerate(self.candidates.tolist())}  # item -> its candidate slot
        self.popularity = popularity.astype(np.float64)
        self.limits = limits
        self.features = features
        self.n_users = n_users  # the slots start here
        self.rating_range = rating_range
        self.negatives = negatives
        self._lower_titles = [t.lower() for t in titles]
        self._encode_user = features.user_encoder() if features is not None else None
        self.fallback = "prior"  # what the probe tries
        self.fallback = "popularity" if self.family == "sequential" else self._probe_prior()

    @property
    def profile_fields(self) -> tuple[str, ...]:
        return tuple(self.features.user_fields) if self.features is not None else ()

    def describe(self) -> dict:
        return {"name": self.name, "family": self.family, "view": self.view, "dataset": self.dataset,
                "protocol": self.protocol, "items": int(len(self.candidates)), "profile_fields":
                list(self.profile_fields), "no_interactions": self.fallback, "path": str(self.path)}

    # --- the catalogue --------------------------------------------------------------------------------
    def title(self, j: int) -> str:
        return self.titles[j]

    def search(self, q: str, limit: int = 20) -> list[tuple[str, str]]:
        """(raw id, title) of items whose title (or raw id) contains ``q`` (case-insensitive), most popular first."""
        q = q.strip().lower()
        hits = [j for j, t in enumerate(self._lower_titles) if q in t or q == str(self.raw_ids[j]).lower()]
        hits.sort(key=lambda j: -self.popularity[j])
        return [(str(self.raw_ids[j]), self.titles[j]) for j in hits[:limit]]

    # --- answering --------------------------------------------------------------------------------------
    def check(self, req: Request) -> None:
        """Stop a request the model cannot answer (422), before it joins a batch."""
        lim = self.limits
        if len(req.items) > lim.max_interactions:
            raise RequestError(f"{len(req.items)} interactions: at most {lim.max_interactions} per request")
        if req.score is None and not 1 <= req.k <= lim.max_k:
            raise RequestError(f"k = {req.k}: choose 1 to {lim.max_k}")
        if req.score is not None and not 1 <= len(req.score) <= lim.max_items:
            raise RequestError(f"{len(req.score)} items to score: give 1 to {lim.max_items}")
        for name, col in (("ratings", req.ratings), ("times", req.times)):
            if col and len(col) != len(req.items):
                raise RequestError(f"{name} must align with the interactions")
        bad = sorted(set(req.profile) - set(self.profile_fields))
        if bad:
            fields = ", ".join(self.profile_fields) or "none"
            raise RequestError(f"unknown profile field(s) {', '.join(bad)}: {self.name} reads {fields}")
        known = [i for i in req.items if i in self.index]
        if req.items and not known:
            raise RequestError(f"none of the {len(req.items)} interacted items is known to {self.name} (raw ids of "
                               f"{self.dataset}; GET /v1/items?q= searches them)")
        if self.family != "sequential":
            ratings = req.ratings or [None] * len(req.items)
            for item, r in zip(req.items, ratings, strict=True):
                if r is not None and not math.isfinite(r):
                    raise RequestError(f"item {item}: the rating must be a finite number")
                if self.view == "explicit" and item in self.index:
                    lo, hi = self.rating_range
                    if r is None:
                        raise RequestError(f"item {item}: {self.name} reads explicit ratings; give each interaction "
                                           f"a rating in [{lo:g}, {hi:g}]")
                    if not lo <= r <= hi:
                        raise RequestError(f"item {item}: rating {r:g} outside [{lo:g}, {hi:g}]")
                if self.view == "implicit" and r is not None and r <= 0:
                    raise RequestError(f"item {item}: {self.name} reads clicks (implicit feedback); a rating, when "
                                       "given, must be positive")

    @torch.no_grad()
    def run(self, reqs: list[Request]) -> list[Result]:
        """Answer a batch of checked requests with one adaptation of the model."""
        out: list[Result | None] = [None] * len(reqs)
        for a in range(0, len(reqs), self.limits.slots):
            chunk = reqs[a: a + self.limits.slots]
            scores, meta = (self._seq_scores if self.family == "sequential" else self._rating_scores)(chunk)
            for j, (req, (s, (n, unknown, seen))) in enumerate(zip(chunk, zip(scores, meta, strict=True),
                                                                   strict=True)):
                out[a + j] = self._answer(req, s, n, unknown, seen)
        return [r for r in out if r is not None]

    def _answer(self, req: Request, s: torch.Tensor, n: int, unknown: list[str], seen: set[int]) -> Result:
        """One request's result from its (C,) candidate scores (None: nothing to adapt on, popularity)."""
        fallback = None
        if n == 0:
            fallback = self.fallback
            if fallback == "popularity" or s is None:
                s = torch.as_tensor(self.popularity[self.candidates.numpy()])
        if req.score is not None:
            pos = self._position
            items = [(i, float(s[pos[self.index[i]]])) for i in req.score if i in self.index
                     and self.index[i] in pos]
            unknown = unknown + [i for i in req.score if i not in self.index or self.index[i] not in pos]
            return Result(items, n, unknown, fallback)
        drop = seen | {self.index[i] for i in req.exclude if i in self.index}
        s = s.clone().double()
        if drop:
            mask = torch.isin(self.candidates, torch.tensor(sorted(drop), dtype=torch.long))
            s[mask] = -math.inf
        k = min(req.k, int(torch.isfinite(s).sum()))
        top = torch.topk(s, k)
        items = [(str(self.raw_ids[int(self.candidates[j])]), float(v)) for v, j in zip(top.values, top.indices,
                                                                                         strict=True)]
        return Result(items, n, unknown, fallback)

    # --- the rating family ------------------------------------------------------------------------------
    def _rating_tasks(self, reqs: list[Request]):
        from metarec.tasks import Task

        tasks, meta, profiles = [], [], []
        for b, req in enumerate(reqs):
            slot = self.n_users + b
            ratings = req.ratings or [None] * len(req.items)
            last: dict[int, float] = {}  # an item given twice: its last rating counts
            unknown = []
            for item, r in zip(req.items, ratings, strict=True):
                if item in self.index:
                    last[self.index[item]] = 1.0 if self.view == "implicit" else float(r)
                else:
                    unknown.append(item)
            items = np.array(list(last), dtype=np.int64)
            vals = np.array(list(last.values()), dtype=np.float32)
            if self.view == "implicit" and len(items) and self.negatives:
                rng = np.random.default_rng(_seed_of(req))
                pool = np.setdiff1d(self.candidates.numpy(), items)
                neg = rng.choice(pool, size=min(len(pool), self.negatives * len(items)), replace=False)
                items = np.concatenate([items, neg])
                vals = np.concatenate([vals, np.zeros(len(neg), dtype=np.float32)])
            empty = np.zeros(0, dtype=np.int64)
            tasks.append(Task(slot, np.full(len(items), slot), items, vals, empty, empty,
                              np.zeros(0, dtype=np.float32)))
            meta.append((len(last), unknown, set(last)))
            profiles.append({f: req.profile.get(f) for f in self.profile_fields})
        return tasks, meta, profiles

    def _rating_scores(self, reqs: list[Request]):
        from metarec.tasks import collate

        tasks, meta, profiles = self._rating_tasks(reqs)
        users = torch.arange(self.n_users, self.n_users + len(reqs))
        if self.features is not None and self.profile_fields:
            self.learner.set_user_codes(users, torch.tensor([self._encode_user(p) for p in profiles],
                                                            dtype=torch.long))
        if self.fallback == "popularity" and all(m[0] == 0 for m in meta):
            return [None] * len(reqs), meta
        scores = self.learner.adapt(collate(tasks)).score_items(self.candidates)  # (B, C)
        return list(scores), meta

    def _probe_prior(self) -> str:
        """Whether the model answers from an empty support set (its prior) or popularity must."""
        try:
            s = self._rating_scores([Request(items=[])])[0][0]
        except Exception:  # noqa: BLE001 - any failure means: no prior to answer from
            return "popularity"
        return "prior" if s is not None and bool(torch.isfinite(s).all()) else "popularity"

    # --- the sequential family --------------------------------------------------------------------------
    def _seq_scores(self, reqs: list[Request]):
        from metarec.seqrec.batch import collate_seq
        from metarec.tasks import Task

        tasks, meta, rows = [], [], []
        for b, req in enumerate(reqs):
            order = list(range(len(req.items)))
            times = req.times or [None] * len(req.items)
            if req.items and all(t is not None for t in times):
                order.sort(key=lambda j: (times[j], j))
            seq = [self.index[req.items[j]] for j in order if req.items[j] in self.index]
            unknown = [i for i in req.items if i not in self.index]
            meta.append((len(seq), unknown, set(seq)))
            if seq:
                empty = np.zeros(0, dtype=np.int64)
                tasks.append(Task(b, empty, empty, np.zeros(0, np.float32), empty, empty, np.zeros(0, np.float32),
                                  extra={"seq": np.array(seq), "s_pos": np.arange(1, len(seq)), "q_pos": empty}))
                rows.append(b)
        out: list = [None] * len(reqs)
        if tasks:
            batch = collate_seq(tasks)
            adapted = self.learner.adapt(batch.support_only())
            nxt = adapted.score_next(batch.seq, (batch.length - 1)[:, None])[:, 0]  # (B, n_items) after the last
            for j, b in enumerate(rows):
                out[b] = nxt[j, self.candidates]
        return out, meta


def load_servable(run_dir: str | Path, limits: ServeLimits = ServeLimits(), dataset: str | None = None) -> Servable:
    """The model of a run directory (or its model.pt), ready to answer newcomers. One line for anything else.
    ``dataset``: where a sequential model's items are (its file records the dataset's name; a dataset given as a
    directory must be named again, as for ``metarec evaluate --dataset``)."""
    from metarec.models import load_model

    path = Path(run_dir)
    learner, extra = load_model(path)
    extra = extra if isinstance(extra, dict) else {}
    if learner.family == "sequential":
        return _load_sequential(learner, extra, path, limits, dataset)
    if learner.family == "warmup" or "split" not in (extra.get("run_config") or {}):
        raise MetarecError(f"{path}: a {learner.family or 'scenario'} model; `metarec serve` serves the rating "
                           "family (`metarec train`) and the sequential one")
    return _load_rating(learner, extra, path, limits)


def _load_rating(learner, extra: dict, path: Path, limits: ServeLimits) -> Servable:
    from metarec.config import config_from_dict
    from metarec.data.registry import load_dataset
    from metarec.data.types import data_fingerprint
    from metarec.nets.context import Context
    from metarec.pipeline import RatingProtocol, RunConfig

    try:
        run = config_from_dict(RunConfig, extra["run_config"])
    except TypeError as e:
        raise MetarecError(f"{path}: its run config is not one of this version ({e})") from None
    raw = load_dataset(run.dataset)
    ds, split, _, fs, _ = RatingProtocol.of(run).context(raw)
    recorded = extra.get("data_fingerprint")
    if recorded is not None and recorded != data_fingerprint(ds):
        raise MetarecError(f"{path}: the data of {run.dataset} changed since this model was trained")
    ctx = learner.ctx
    slots = torch.zeros(limits.slots, ctx.user_codes.shape[1], dtype=ctx.user_codes.dtype)
    wide = Context(torch.cat([ctx.user_codes, slots]), ctx.item_codes, ctx.item_genre, ctx.user_cards,
                   ctx.item_cards, ctx.item_ids)
    try:  # the same learner with newcomer rows after the training users
        served = type(learner).from_saved(wide.state(), learner.config, learner.state_dict())
        served.load_state_dict(learner.state_dict())
    except RuntimeError as e:
        raise MetarecError(f"{path}: {learner.name} cannot take newcomers (its parameters are sized by the "
                           f"training users: {str(e).splitlines()[0][:120]})") from None
    served.name = learner.name
    pop = np.bincount(split.train["item"].to_numpy(), minlength=ds.n_items)
    r = raw.inter["rating"].to_numpy()
    return Servable(served, path=path, dataset=run.dataset, view=run.view, raw_ids=ds.items["raw_id"].astype(str)
                    .to_numpy(), titles=_titles(ds), candidates=np.asarray(split.candidate_items()), popularity=pop,
                    limits=limits, features=fs, n_users=ctx.n_users, rating_range=(float(r.min()), float(r.max())),
                    negatives=run.negatives, protocol=run.split.protocol)


def _load_sequential(learner, extra: dict, path: Path, limits: ServeLimits, dataset: str | None) -> Servable:
    from metarec.data.registry import load_dataset

    dataset = dataset or extra.get("dataset")
    if not dataset:
        raise MetarecError(f"{path}: the model file records no dataset to serve its items from")
    ds = load_dataset(dataset)
    if ds.n_items != learner.n_items:
        raise MetarecError(f"{path}: the model has {learner.n_items} items, {dataset} has {ds.n_items}")
    pool = learner.pool.numpy()  # the items of its training data: what it can rank
    pop = np.bincount(ds.inter["item"].to_numpy(), minlength=ds.n_items)
    return Servable(learner, path=path, dataset=str(dataset), view="sequential",
                    raw_ids=ds.items["raw_id"].astype(str).to_numpy(), titles=_titles(ds), candidates=pool,
                    popularity=pop, limits=limits, protocol="sequential")


def _titles(ds) -> list[str]:
    if "title" in ds.items:
        return [str(t) if isinstance(t, str) else str(r) for t, r in zip(ds.items["title"], ds.items["raw_id"],
                                                                         strict=True)]
    return [str(r) for r in ds.items["raw_id"]]
