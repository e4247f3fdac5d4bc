"""Scenario-specific few-shot tasks (s²Meta, Du et al. KDD'19: sections 3 and 5.1, appendix A.4).

A scenario is a set of items sharing an item attribute or a combination of attributes
(:func:`metarec.tasks.scenarios_by_attribute`; default ``genres+year``: genre x release decade, an item is
in the scenario of each of its genres). Scenarios with ``min_items``..``max_items`` items are the few-shot
tasks; they are split at random into meta-train, meta-valid and meta-test scenarios. The *source domain* is
every interaction with an item that is in no kept scenario.

Users (A.4): a *shared* user has source-domain interactions; a *scenario-only* user has none. MovieLens
users rate films of every kind, so almost nobody is naturally scenario-only; ``target_only_frac`` of the
users (seeded) are therefore made scenario-only by dropping their source-domain interactions. Item
embeddings of scenario items are pretrained on the scenario-only users' interactions (A.4), user
embeddings on the source domain (:mod:`metarec.nets.mf`).

Per scenario c (A.4): ``n_train`` (64) interactions of shared users, drawn at random, form D_train (the
support of the task); the scenario's other interactions of shared users form D_test (the query). Because
genres overlap, one interaction can belong to several scenarios; no evaluation pair is ever training data:
D_train sets are disjoint, and the D_test of a meta-valid or meta-test scenario drops every pair that is
training data anywhere (the source domain, scenario-only users, every D_train, the D_test of meta-train
scenarios, on which s²Meta meta-trains). Evaluation ranks, for each test user of a scenario, all items of
the scenario except the user's training items; Recall@K over the user's D_test items. A user who has
interacted with every item of a scenario (one ml-1m user and the 30-film "Musical x 1990s") has no negative
there and is left out of that scenario (neither D_train nor D_test).

Task layout (``metarec.tasks.Task``; the owner is the scenario's index): the support holds the P = 64
D_train positives (rating 1) and then ``support_negatives`` negatives per positive (rating 0) drawn from
the scenario's items with the library's seeded sampler (never a training pair of that user), negative
``p * K + k`` belonging to positive ``p`` (the ``add_negatives`` layout); inner steps pick one of the K
for each positive (s²Meta 4.2.2 samples i⁻ at every step). Meta-train queries hold D_test's positives and
``query_negatives`` per positive in the same layout, for the hinge test loss of eq. 2; meta-valid and
meta-test queries hold positives only (evaluation is a full ranking). :func:`split_triples` reads the
layout back as (u, i, i⁻) triples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from metarec.data.types import Dataset, to_implicit
from metarec.errors import MetarecError
from metarec.evaluation import metrics as M
from metarec.tasks import CODE_STRIDE, Task, collate, member_of_sorted, sample_negatives, scenarios_by_attribute


@dataclass(frozen=True)
class ScenarioConfig:
    attribute: str = "genres+year"  # an item attribute or '+'-joined combination (scenarios_by_attribute)
    min_items: int = 30  # the paper: 100 (see the module docstring)
    max_items: int = 1000
    n_train: int = 64  # |D_train| (A.4)
    valid_frac: float = 0.2  # share of scenarios for meta-valid
    test_frac: float = 0.3  # share of scenarios for meta-test
    target_only_frac: float = 0.3  # users made scenario-only (their source interactions dropped)
    support_negatives: int = 32  # pre-sampled negatives per D_train positive
    query_negatives: int = 1  # negatives per D_test positive of meta-train scenarios (hinge test loss)
    seed: int = 0

    def __post_init__(self):
        if self.n_train < 1 or self.support_negatives < 1 or self.query_negatives < 1:
            raise MetarecError("n_train, support_negatives and query_negatives must be >= 1")
        if not (0 < self.valid_frac < 1 and 0 < self.test_frac < 1 and self.valid_frac + self.test_frac < 1):
            raise MetarecError("valid_frac and test_frac must be in (0, 1) and sum to less than 1")
        if not 0 <= self.target_only_frac < 1:
            raise MetarecError("target_only_frac must be in [0, 1)")


def codes(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.asarray(users, np.int64) * CODE_STRIDE + np.asarray(items, np.int64)


@dataclass
class ScenarioData:
    """Everything of one scenario protocol instance (dataset, config, seed)."""

    dataset: Dataset  # the implicit view (every rating is a positive, A.4 / NCF)
    config: ScenarioConfig
    scenarios: dict[str, np.ndarray]  # name -> item indices; a task's owner is the position in this dict
    part: dict[str, str]  # name -> "train" | "valid" | "test" | "dropped"
    source: pd.DataFrame  # source-domain interactions (scenario-only users removed)
    target_only: pd.DataFrame  # interactions of scenario-only users with scenario items
    shared: np.ndarray  # (n_users,) bool: users with source-domain interactions
    train: list[Task]
    valid: list[Task]
    test: list[Task]
    train_codes: np.ndarray  # sorted codes of every training pair (see the module docstring)
    known: np.ndarray  # sorted codes of every interaction

    def training_frame(self) -> pd.DataFrame:
        """Every training interaction (source, scenario-only users, all D_train, meta-train D_test)."""
        c = self.train_codes
        return pd.DataFrame({"user": c // CODE_STRIDE, "item": c % CODE_STRIDE,
                             "rating": np.ones(len(c), np.float32), "timestamp": np.zeros(len(c), np.int64)})

    def describe(self) -> dict:
        n_part = {p: sum(v == p for v in self.part.values()) for p in ("train", "valid", "test", "dropped")}
        return {"attribute": self.config.attribute, "scenarios": len(self.scenarios), **{
            f"{p}_scenarios": n for p, n in n_part.items()}, "source_interactions": len(self.source),
            "scenario_only_users": int((~self.shared).sum()), "shared_users": int(self.shared.sum()),
            "scenario_only_interactions": len(self.target_only), "seed": self.config.seed}

    def rows(self) -> tuple[list[str], list[list]]:
        """One row per kept scenario, for the statistics table."""
        header = ["scenario", "part", "items", "D_train", "test pairs", "test users"]
        rows = []
        for t in self.train + self.valid + self.test:
            pos = t.q_rating > 0
            rows.append([t.extra["scenario"], t.extra["part"], len(t.extra["items"]), int((t.s_rating > 0).sum()),
                         int(pos.sum()), len(np.unique(t.q_user[pos]))])
        return header, sorted(rows, key=lambda r: ("train valid test".split().index(r[1]), r[0]))


def _saturated(users: np.ndarray, items: np.ndarray, scenario_items: np.ndarray, n_users: int) -> np.ndarray:
    """(n_users,) mask of users who interacted with every item of the scenario (``users``, ``items``: the
    scenario's interaction rows). Such a user has no negative in the scenario: no (u, i, i⁻) triple for the
    hinge loss, and a ranking of their test items among nothing else."""
    pairs = np.unique(codes(users, items))
    per_user = np.bincount(pairs // CODE_STRIDE, minlength=n_users)  # distinct scenario items per user
    return per_user >= len(scenario_items)


def prepare_scenarios(ds: Dataset, cfg: ScenarioConfig) -> ScenarioData:
    """The s²Meta protocol on ``ds`` (see the module docstring)."""
    ds = ds if ds.implicit else to_implicit(ds)
    inter = ds.inter
    scen = scenarios_by_attribute(ds.items, cfg.attribute, cfg.min_items, cfg.max_items)
    if len(scen) < 3:
        raise MetarecError(f"{ds.name}: attribute {cfg.attribute!r} gives {len(scen)} scenarios with "
                           f"{cfg.min_items}-{cfg.max_items} items; meta-train, -valid and -test need at least 3")
    rng = np.random.default_rng([cfg.seed, 5])
    u_all, i_all = inter["user"].to_numpy(np.int64), inter["item"].to_numpy(np.int64)
    in_scen = np.zeros(ds.n_items, dtype=bool)
    for items in scen.values():
        in_scen[items] = True
    src_rows = ~in_scen[i_all]
    shared = np.zeros(ds.n_users, dtype=bool)
    shared[u_all[src_rows]] = True
    turned = rng.random(ds.n_users) < cfg.target_only_frac  # shared users made scenario-only
    shared &= ~turned
    source = inter[src_rows & shared[u_all]].reset_index(drop=True)
    target_only = inter[~src_rows & ~shared[u_all]].reset_index(drop=True)
    if len(source) == 0 or len(target_only) == 0:
        raise MetarecError(f"{ds.name}: the scenario protocol leaves no source-domain or no scenario-only "
                           "interaction; change the attribute or target_only_frac")

    names = list(scen)
    perm = rng.permutation(len(names))
    n_test = max(1, round(cfg.test_frac * len(names)))
    n_valid = max(1, round(cfg.valid_frac * len(names)))
    part = {}
    for rank, j in enumerate(perm):
        part[names[j]] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"

    # D_train: n_train shared-user interactions per scenario, disjoint across scenarios
    rows_of, dtrain = {}, {}
    taken = np.zeros(len(inter), dtype=bool)
    for name in names:
        rows = np.flatnonzero(np.isin(i_all, scen[name]) & shared[u_all])
        rows = rows[~_saturated(u_all[rows], i_all[rows], scen[name], ds.n_users)[u_all[rows]]]  # no negative
        rows_of[name] = rows
        free = rows[~taken[rows]]
        if len(free) < cfg.n_train + 1:
            part[name] = "dropped"
            continue
        pick = np.sort(rng.choice(free, size=cfg.n_train, replace=False))
        taken[pick] = True
        dtrain[name] = pick
    train_rows = taken | src_rows & shared[u_all] | ~src_rows & ~shared[u_all]
    for name in names:
        if part[name] == "train":
            train_rows[rows_of[name]] = True  # meta-train D_test: s²Meta's meta-training data
    train_codes = np.unique(codes(u_all[train_rows], i_all[train_rows]))
    known = np.unique(codes(u_all, i_all))

    out: dict[str, list[Task]] = {"train": [], "valid": [], "test": []}
    for owner, name in enumerate(names):
        p = part[name]
        if p == "dropped":
            continue
        items = scen[name]
        s = dtrain[name]
        q = np.setdiff1d(rows_of[name], s)
        if p != "train":
            q = q[~member_of_sorted(codes(u_all[q], i_all[q]), train_codes)]
        else:
            q = q[~taken[q]]
        if len(q) == 0:
            part[name] = "dropped"
            continue
        su, si = u_all[s], i_all[s]
        sneg = sample_negatives(su, items, cfg.support_negatives, rng, train_codes)  # (P, K)
        s_user = np.r_[su, np.repeat(su, cfg.support_negatives)]
        s_item = np.r_[si, sneg.ravel()]
        s_rating = np.r_[np.ones(len(su), np.float32), np.zeros(sneg.size, np.float32)]
        qu, qi = u_all[q], i_all[q]
        if p == "train":
            qneg = sample_negatives(qu, items, cfg.query_negatives, rng, known)  # (Q, Kq)
            q_user, q_item = np.r_[qu, np.repeat(qu, cfg.query_negatives)], np.r_[qi, qneg.ravel()]
            q_rating = np.r_[np.ones(len(qu), np.float32), np.zeros(qneg.size, np.float32)]
        else:
            q_user, q_item, q_rating = qu, qi, np.ones(len(qu), np.float32)
        out[p].append(Task(owner, s_user, s_item, s_rating, q_user, q_item, q_rating,
                           extra={"scenario": name, "items": items, "part": p}))
    for p in ("train", "valid", "test"):
        if not out[p]:
            raise MetarecError(f"{ds.name}: no meta-{p} scenario is left (too few shared-user interactions)")
    return ScenarioData(ds, cfg, scen, part, source, target_only, shared, out["train"], out["valid"], out["test"],
                        train_codes, known)


def split_triples(user: Tensor, item: Tensor, rating: Tensor, mask: Tensor, k: int
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(u, i, i⁻) triples from the task layout [P_b positives, then k negatives per positive].

    user, item, rating, mask: (B, W). Returns users (B, P), positives (B, P), negatives (B, P, k) and the
    mask (B, P) of real triples, P = max_b P_b.
    """
    n_pos = ((rating > 0) & mask).sum(1)  # (B,)
    P = max(1, int(n_pos.max()))
    W = user.shape[1]
    ar = torch.arange(P, device=user.device)
    m = ar[None, :] < n_pos[:, None]  # (B, P)
    neg_idx = n_pos[:, None, None] + ar[None, :, None] * k + torch.arange(k, device=user.device)  # (B, P, k)
    neg_idx = torch.where(m[..., None], neg_idx, 0).clamp_max(W - 1)
    users = user[:, :P] if W >= P else user
    pos = item[:, :P]
    neg = torch.gather(item, 1, neg_idx.reshape(len(item), -1)).reshape(neg_idx.shape)
    return users, pos, neg, m


# ------------------------------------------------------------------------------------------ evaluation


def _grid(task: Task, train_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Test users (U,), candidate items (N,), positives (U, N) and excluded training items (U, N)."""
    pos = task.q_rating > 0
    users = np.unique(task.q_user[pos])
    items = np.asarray(task.extra["items"], np.int64)
    grid = codes(np.repeat(users, len(items)), np.tile(items, len(users))).reshape(len(users), len(items))
    positives = np.isin(grid, codes(task.q_user[pos], task.q_item[pos]))
    exclude = member_of_sorted(grid, train_codes) & ~positives
    return users, items, positives, exclude


def _grid_scores(adapted, grids: list[tuple], chunk: int) -> list[np.ndarray]:
    """Per task of the batch, the (U, N) scores of its test users against its items: ``adapted.score_grid`` on
    padded (B, U) users and (B, N) items where the model offers it, else ``score`` on the flattened pairs."""
    if adapted.score_grid is not None:
        U, N = max(g[0].size for g in grids), max(g[1].size for g in grids)
        users, items = np.zeros((len(grids), U), np.int64), np.zeros((len(grids), N), np.int64)
        for b, g in enumerate(grids):
            users[b, :g[0].size], items[b, :g[1].size] = g[0], g[1]
        s = adapted.score_grid(torch.from_numpy(users), torch.from_numpy(items)).numpy()  # (B, U, N)
        return [s[b, :g[0].size, :g[1].size] for b, g in enumerate(grids)]
    sizes = [g[0].size * g[1].size for g in grids]
    flat_u = np.zeros((len(grids), max(sizes)), np.int64)
    flat_i = np.zeros_like(flat_u)
    for b, (users, items, _, _) in enumerate(grids):
        flat_u[b, :sizes[b]] = np.repeat(users, len(items))
        flat_i[b, :sizes[b]] = np.tile(items, len(users))
    fu, fi = torch.from_numpy(flat_u), torch.from_numpy(flat_i)
    scores = torch.cat([adapted.score(fu[:, c:c + chunk], fi[:, c:c + chunk])
                        for c in range(0, fu.shape[1], chunk)], 1).numpy()  # (B, max U*N)
    return [scores[b, :sizes[b]].reshape(g[0].size, g[1].size) for b, g in enumerate(grids)]


@torch.no_grad()
def evaluate_scenarios(learner, tasks: list[Task], train_codes: np.ndarray, ks=(10, 20, 50), batch_size: int = 4,
                       chunk: int = 1 << 15, per_scenario: bool = False) -> dict:
    """Recall@K of every test user of every scenario over all the scenario's items (training items of the
    user excluded), through ``learner.adapt`` and ``adapted.score_grid`` (or ``adapted.score`` on the pairs).

    ``recall@k``: mean over scenarios of the mean over their users (each scenario weighs the same);
    ``recall@k_users``: mean over all test users. ``ndcg@k`` as ``recall@k``.
    """
    learner.eval()
    grids = [_grid(t, train_codes) for t in tasks]
    order = np.argsort([g[0].size * g[1].size for g in grids], kind="stable")  # similar sizes batch together
    per: dict[int, dict] = {}
    steps: list[tuple[float, int]] = []
    for lo in range(0, len(tasks), batch_size):
        idx = order[lo:lo + batch_size]
        batch = collate([tasks[j] for j in idx])
        adapted = learner.adapt(batch)
        if getattr(learner, "last_steps", None) is not None:  # s2meta: mean scenario-specific steps
            steps.append((learner.last_steps, len(idx)))
        task_scores = _grid_scores(adapted, [grids[j] for j in idx], chunk)
        for b, j in enumerate(idx):
            users, items, positives, exclude = grids[j]
            s = task_scores[b]  # (U, N)
            ranks = M.ranks_from_scores(s, positives, exclude)
            per[int(j)] = {f"{name}@{k}": M.RANKING_METRICS[name](ranks, positives, k)
                           for name in ("recall", "ndcg") for k in ks}
    out: dict[str, Any] = {}
    for key in per[0]:
        out[key] = float(np.mean([M.mean_ignore_nan(per[j][key]) for j in range(len(tasks))]))
    for key in per[0]:
        out[f"{key}_users"] = M.mean_ignore_nan(np.concatenate([per[j][key] for j in range(len(tasks))]))
    out["tasks"] = len(tasks)
    out["users"] = int(sum(len(g[0]) for g in grids))
    if steps:
        out["inner_steps"] = float(sum(a * n for a, n in steps) / sum(n for _, n in steps))
    if per_scenario:
        out["per_scenario"] = {tasks[j].extra["scenario"]: {k: M.mean_ignore_nan(v) for k, v in per[j].items()}
                               for j in range(len(tasks))}
    return out


def config_dict(cfg: ScenarioConfig) -> dict:
    return asdict(cfg)
