"""Baselines of the s²Meta protocol (NeuMF, FT, EMCDR, ItemPop) and the scenario pipeline end to end."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.engine.train import TrainConfig
from metarec.learners.base import load_learner
from metarec.learners.emcdr import EMCDR, EMCDRConfig
from metarec.learners.neumf import NeuMF, NeuMFConfig, fit_neumf
from metarec.learners.scenario_ft import ScenarioFT, ScenarioFTConfig
from metarec.nets.mf import MFConfig
from metarec.report import scenario_table
from metarec.scenario_run import (
    SCENARIO_LEARNERS,
    make_run,
    pooled_tasks,
    prepare,
    run_scenario,
    scenario_context,
)
from metarec.scenarios import prepare_scenarios
from metarec.tasks import collate
from tests.test_scenarios import TINY, scenario_dataset

TINY_OVER = {f"scenarios.{k}": v for k, v in TINY.__dict__.items() if k != "seed"}
TINY_OVER.update({"mf.dim": 8, "mf.epochs": 3, "mf.batch": 256, "train.epochs": 2, "repeat": 2, "pool_chunk": 64})


@pytest.fixture(scope="module")
def sdata():
    return prepare_scenarios(scenario_dataset(), TINY)


def _ctx(sdata):
    return scenario_context(sdata.dataset.n_users, sdata.dataset.n_items)


def _emb(sdata, d=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(sdata.dataset.n_users, d, generator=g), torch.randn(sdata.dataset.n_items, d, generator=g)


def test_emcdr_target_factors_are_the_ridge_solution(sdata):
    m = EMCDR(_ctx(sdata), EMCDRConfig(emb_dim=8, reg=0.5))
    m.set_embeddings(*_emb(sdata))
    batch = collate(sdata.test)
    users, mask, fac = m.target_factors(batch)
    t = sdata.test[0]
    u = int(users[0, 0])
    rows = t.s_user == u
    V = m.item_emb[torch.as_tensor(t.s_item[rows])]
    y = torch.as_tensor(t.s_rating[rows])
    ref = torch.linalg.solve(V.T @ V + 0.5 * torch.eye(8), V.T @ y)
    assert torch.allclose(fac[0, 0], ref, atol=1e-4)
    assert set(users[0][mask[0]].tolist()) == set(np.unique(t.s_user[t.s_rating > 0]).tolist())
    s = m.adapt(batch).score(batch.s_user[:, :4], batch.s_item[:, :4])
    assert s.shape == (len(batch), 4) and torch.isfinite(s).all()


def test_emcdr_mapping_fit_decreases_error(sdata):
    m = EMCDR(_ctx(sdata), EMCDRConfig(emb_dim=8, lr=0.05))
    m.set_embeddings(*_emb(sdata))
    users, mask, target = m.target_factors(collate(sdata.test))
    src = m.user_emb[users]

    def err(steps):
        m.config = replace(m.config, steps=steps)
        p = m.fit_mapping(src, target, mask)
        return float((((m._map(p, src) - target) ** 2).sum(-1) * mask).sum())

    assert err(200) < 0.7 * err(0)


def test_neumf_learns_and_round_trips(sdata, tmp_path):
    torch.manual_seed(0)
    m = NeuMF(_ctx(sdata), NeuMFConfig(loss="bce"))
    run, _ = make_run("neumf", "tiny", 0, TINY_OVER)
    tasks = pooled_tasks(sdata, run, "all")
    batch = collate(tasks[:8])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = m.meta_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    m.save(tmp_path / "m.pt")
    loaded, _ = load_learner(tmp_path / "m.pt")
    b = collate(sdata.test)
    assert torch.equal(m.adapt(b).score(b.q_user, b.q_item), loaded.adapt(b).score(b.q_user, b.q_item))


def test_neumf_pretraining_initialises_from_gmf_and_mlp(sdata):
    ctx = _ctx(sdata)
    made = []

    def make(cfg):
        made.append(NeuMF(ctx, cfg))
        return made[-1]

    model, rec = fit_neumf(make, NeuMFConfig(loss="bce"), lambda m: {"best_epoch": 1, "best": {}, "history": []})
    gmf, mlp = made[1], made[2]
    assert gmf.config.component == "gmf" and mlp.config.component == "mlp"
    assert torch.equal(model.gmf_user.weight, gmf.gmf_user.weight) and torch.equal(model.mlp[0].weight,
                                                                                    mlp.mlp[0].weight)
    assert torch.allclose(model.predict.weight[0, :8], 0.5 * gmf.predict.weight[0])
    assert "pretrain" in rec


def test_ft_zero_steps_is_the_global_model_and_steps_change_it(sdata):
    m = ScenarioFT(_ctx(sdata), ScenarioFTConfig(emb_dim=8, steps=0))
    m.set_embeddings(*_emb(sdata))
    batch = collate(sdata.test)
    u, i = batch.q_user[:, :10], batch.q_item[:, :10]
    base = m.adapt(batch).score(u, i)
    glob = torch.stack([m.adapt(collate([t])).score(u[b:b + 1], i[b:b + 1])[0] for b, t in enumerate(sdata.test)])
    assert torch.allclose(base, glob, atol=1e-6)
    m.config = replace(m.config, steps=10, lr=0.1)
    tuned = m.adapt(batch)
    assert not torch.allclose(base, tuned.score(u, i))
    # fine-tuning lowers the D_train hinge loss
    from metarec.scenarios import split_triples

    us, ip, jn, mk = split_triples(batch.s_user, batch.s_item, batch.s_rating, batch.s_mask, TINY.support_negatives)
    m.config = replace(m.config, steps=0)
    f0 = m.adapt(batch)
    l0 = torch.relu(1 - f0.score(us, ip) + f0.score(us, jn[:, :, 0])).mean()
    l1 = torch.relu(1 - tuned.score(us, ip) + tuned.score(us, jn[:, :, 0])).mean()
    assert l1 < l0


def tiny_overrides(name: str) -> dict:
    """Each scenario learner's settings on the tiny scenario data (also the registry contract test's)."""
    over = dict(TINY_OVER)
    if name == "s2meta":
        over.update({"learner.max_steps": 3, "learner.query_sample": 32})
    if name in ("scenario-ft", "emcdr"):
        over.update({"learner.grid_steps": "[0, 2]", "learner.grid_lr": "[0.01]"})
    return over


@pytest.mark.parametrize("name", SCENARIO_LEARNERS)
def test_pipeline_end_to_end(name, tmp_path):
    run, lcfg = make_run(name, "tiny", 0, tiny_overrides(name))
    prep = prepare(run, scenario_dataset())
    res = run_scenario(run, lcfg, prep=prep, out_dir=tmp_path / name, progress=False)
    if name in ("scenario-ft", "emcdr"):
        assert [r["steps"] for r in res["adapt_selection"]] == [0, 2]
    assert 0 <= res["test"]["recall@10"] <= res["test"]["recall@20"] <= res["test"]["recall@50"] <= 1
    saved = json.loads((tmp_path / name / "results.json").read_text())
    assert saved["test"]["recall@20"] == pytest.approx(res["test"]["recall@20"])
    learner, _ = load_learner(tmp_path / name / "model.pt")
    from metarec.scenario_run import _evaluator

    again = _evaluator(run, prep)(learner, prep.data.test)
    assert again["recall@20"] == pytest.approx(res["test"]["recall@20"])


def test_entries_and_table():
    from metarec.config import parse_entry

    assert parse_entry("s2meta") == ("s2meta", "s2meta", {})
    assert parse_entry("RandInit=s2meta@learner.init=random") == ("s2meta", "RandInit", {"learner.init": "random"})
    assert parse_entry("s2meta@learner.init=random")[1] == "s2meta@learner.init=random"
    res = [{"label": "a", "test": {"recall@10": v, "recall@20": v, "recall@50": v}, "train_seconds": 1.0}
           for v in (0.1, 0.3)]
    assert "0.2000 ± 0.1000" in scenario_table(res)


def test_make_run_checks(sdata):
    from metarec.errors import MetarecError

    with pytest.raises(MetarecError, match="not a scenario learner"):
        make_run("melu", "ml-100k", 0, {})
    with pytest.raises(MetarecError, match="mf.dim"):
        make_run("s2meta", "ml-100k", 0, {"learner.emb_dim": 16})
    run, lcfg = make_run("s2meta", "ml-100k", 2, {"mf.dim": 16})
    assert lcfg.emb_dim == 16 and lcfg.seed == 2 and run.scenarios.seed == 2 and run.train.seed == 2
    assert isinstance(run.train, TrainConfig) and run.train.select == "recall@20"
    assert isinstance(run.mf, MFConfig)


def test_merge_command(tmp_path):
    from metarec.cli import main

    def res(label, seed, v):
        return {"label": label, "seed": seed, "dataset": "tiny", "train_seconds": 1.0,
                "scenarios": {"attribute": "genres"},
                "test": {"recall@10": v, "recall@20": v, "recall@50": v, "tasks": 2}}

    (tmp_path / "a.json").write_text(json.dumps({"commands": ["metarec a"], "results": [
        {**res("X", 0, 0.1), "code": "abc123"}, res("Y", 0, 0.5)]}))
    (tmp_path / "b.json").write_text(json.dumps({"commands": ["metarec b"], "results": [res("X", 1, 0.3)]}))
    assert main(["scenario", "merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--labels", "X",
                 "--out", str(tmp_path / "m")]) == 0
    md = (tmp_path / "m.md").read_text()
    assert "0.2000 ± 0.1000" in md and "metarec a" in md and "metarec b" in md and "| Y" not in md
    assert "(code: abc123, not recorded)" in md  # each run's commit; b's record predates the field
    assert len(json.loads((tmp_path / "m.json").read_text())["results"]) == 2


def test_learning_process_picture(tmp_path):
    from metarec.scenario_run import learning_process, plot_learning_process

    over = {**TINY_OVER, "learner.max_steps": 4, "learner.query_sample": 32, "train.epochs": 1}
    run, lcfg = make_run("s2meta", "tiny", 0, over)
    prep = prepare(run, scenario_dataset())
    run_scenario(run, lcfg, prep=prep, out_dir=tmp_path / "run", progress=False)
    learner, _ = load_learner(tmp_path / "run" / "model.pt")
    proc = learning_process(learner, run, prep)
    T = proc["steps"]
    assert len(proc["recall@20"]) == T + 1 and len(proc["gates"]["h0.weight"]["input"]) == T
    assert len(proc["loss"]) == len(proc["stop_p"]) >= T and 0 <= min(proc["stop_p"]) <= max(proc["stop_p"]) <= 1
    plot_learning_process(proc, tmp_path / "lp.png", "test")
    assert (tmp_path / "lp.png").read_bytes()[:4] == b"\x89PNG"


def test_s2meta_pooled_start_is_ft_network_and_competes(tmp_path):
    """init=pooled: stage 0 trains exactly FT's network (same seed, recipe, tasks), omega_R starts there, and
    the start competes in the selection: an outer rate that wrecks meta-training leaves it in place."""
    from metarec.learners.s2meta import S2Meta
    from metarec.scenario_run import pooled_start

    ft_run, ft_cfg = make_run("scenario-ft", "tiny", 0, tiny_overrides("scenario-ft"))
    prep = prepare(ft_run, scenario_dataset())
    cache: dict = {}
    ft = run_scenario(ft_run, ft_cfg, prep=prep, out_dir=tmp_path / "ft", progress=False, cache=cache)
    ft_model, _ = load_learner(tmp_path / "ft" / "model.pt")
    over = {**tiny_overrides("s2meta"), "learner.init": "pooled", "start.epochs": 2}
    run, lcfg = make_run("s2meta", "tiny", 0, over)
    assert run.start.epochs == 2 and ft_run.train.epochs == 2
    from metarec.scenario_run import _evaluator

    ev = _evaluator(run, prep)
    m = S2Meta(prep.ctx, lcfg)
    m.set_embeddings(prep.users, prep.items)
    rec = pooled_start(m, run, prep, lambda x: ev(x, prep.data.valid), progress=False)
    assert rec["best_epoch"] == ft["best_epoch"]
    for k, v in ft_model._theta(1).items():
        torch.testing.assert_close(m.omega_r[k.replace(".", "_")].detach(), v[0], rtol=0, atol=0)
    assert m.select_start and not S2Meta(prep.ctx, replace(lcfg, init="learned")).select_start
    # the FT run of the same seed handed its network over: the same start, not trained again
    shared = S2Meta(prep.ctx, lcfg)
    got = pooled_start(shared, run, prep, lambda x: 1 / 0, progress=False, cache=cache)
    assert got["shared"] and got["best_epoch"] == rec["best_epoch"]
    for k in m.omega_r:
        torch.testing.assert_close(shared.omega_r[k], m.omega_r[k], rtol=0, atol=0)
    other = dict(cache)  # another FT training (a rate it selects its epochs with) is not that network
    with pytest.raises(ZeroDivisionError):
        pooled_start(S2Meta(prep.ctx, lcfg), replace(run, start=replace(run.start, lr=0.5)), prep, lambda x: 1 / 0,
                     progress=False, cache=other)

    # ranked by ndcg@10 (recall@20 saturates on the tiny scenarios); a tie keeps the start too
    wreck = {**over, "train.lr": 50.0, "train.epochs": 1, "train.select": "ndcg@10"}
    run, lcfg = make_run("s2meta", "tiny", 0, wreck)
    res = run_scenario(run, lcfg, prep=prep, out_dir=tmp_path / "s2", progress=False)
    assert res["pretrain"]["best_epoch"] == ft["best_epoch"] and res["best_epoch"] == 0
    saved, _ = load_learner(tmp_path / "s2" / "model.pt")
    for k, v in ft_model._theta(1).items():  # the start won: omega_R is FT's network, untouched
        torch.testing.assert_close(saved.omega_r[k.replace(".", "_")].detach(), v[0], rtol=0, atol=0)
    assert res["history"][0]["ndcg@10"] < res["valid"]["ndcg@10"]  # the epoch it beat
