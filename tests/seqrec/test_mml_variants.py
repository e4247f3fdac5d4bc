"""Issue 17's options of the registered sequential methods: a meta-train query of the last m positions (MML, CBML),
the fusion stage's selection against the plain average, PT + MAML (stage 0 on every prefix), the support-only
SASRec of MML 5.2.2, and the per-query-index test metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarec.engine.inner import InnerConfig
from metarec.seqrec.batch import collate_seq
from metarec.seqrec.evaluate import evaluate_seq, evaluate_seq_detail
from metarec.seqrec.mml import bpr_per_task
from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol, prefix_task
from tests.seqrec.test_methods import _Oracle
from tests.seqrec.test_mml import char_encoder, tiny_model, tiny_tasks


def _window_batch():
    """A window of 15 items (as the ml-100k runs cut them), a short one of 4 and one of 3, prefix-augmented."""
    return collate_seq([prefix_task(0, np.arange(15)), prefix_task(1, np.arange(20, 24)),
                        prefix_task(2, np.arange(5, 8))])


# ------------------------------------------------------------------------------------------ last m queries
def test_last_queries_gives_m_targets_at_the_new_users_positions():
    b = _window_batch()
    q = b.last_queries(5)
    # the 15-item window: support = output positions 0..8 (targets = items 1..9), query = 9..13 (items 10..14),
    # exactly a new user's task of 10 support and 5 query items
    assert torch.equal(q.q_pos[0], torch.arange(9, 14)) and bool(q.q_valid[0].all())
    assert torch.equal(torch.nonzero(q.q_mask[0]).squeeze(1), torch.arange(9, 14))
    assert torch.equal(torch.nonzero(q.s_mask[0]).squeeze(1), torch.arange(0, 9))
    assert torch.equal(torch.take_along_dim(q.target[0], q.q_pos[0], 0) - 1, torch.arange(10, 15))
    # 4 items = 3 targets: 2 queries (the last two), 1 support; 3 items = 2 targets: 1 query, 1 support
    assert q.q_valid[1].tolist() == [True, True, False, False, False] and q.q_pos[1, :2].tolist() == [1, 2]
    assert q.s_mask[1].nonzero().squeeze(1).tolist() == [0]
    assert q.q_valid[2].sum() == 1 and q.q_pos[2, 0] == 1 and q.s_mask[2].nonzero().squeeze(1).tolist() == [0]
    assert torch.equal(q.s_mask | q.q_mask, b.t_mask) and not bool((q.s_mask & q.q_mask).any())
    # m = 1 is the protocol's own split (the last prefix, section 4.4.1)
    one = b.last_queries(1)
    for f in ("s_mask", "q_mask", "q_pos", "q_valid"):
        assert torch.equal(getattr(one, f), getattr(b, f)), f
    with pytest.raises(Exception, match="at least one query"):
        b.last_queries(0)


def test_mml_stage_one_outer_loss_is_the_mean_bpr_of_the_last_m_positions():
    batch = collate_seq(tiny_tasks())
    m = 3
    model = tiny_model(inner=InnerConfig(steps=0))  # no local step: the outer loss is the query loss of Theta
    model.config = type(model.config)(**{**model.config.__dict__, "meta_query": m})
    model.set_stage(1)
    torch.manual_seed(7)
    loss = model.meta_loss(batch)
    # by hand: BPR at each row's last min(m, targets - 1) target positions, same negatives
    torch.manual_seed(7)
    neg = model._negatives(batch.target)
    ctx = model._contexts(batch.seq, model.learners["id"].item_emb.weight)
    hs = model._encode_all(model._theta(), ctx, batch.seq > 0, True)
    n = batch.t_mask.sum(1)
    mask = torch.zeros_like(batch.t_mask)
    for b in range(len(batch)):
        k = max(1, min(m, int(n[b]) - 1))
        mask[b, int(n[b]) - k: int(n[b])] = True  # targets are output positions 0..n-1
    want = sum(bpr_per_task(hs[k], ctx[k][2], batch.target, neg, mask) for k in hs).mean()
    assert torch.allclose(loss, want, atol=1e-6)
    assert mask.sum() > len(batch)  # more than one target per task really is used
    model.config = type(model.config)(**{**model.config.__dict__, "meta_query": 1})
    torch.manual_seed(7)
    assert not torch.allclose(model.meta_loss(batch), loss)


def test_cbml_meta_query_uses_the_last_m_positions(tiny_dataset):
    from metarec.nets.sasrec import SASRecConfig
    from metarec.seqrec.cbml import CBML, CBMLConfig, item_attributes

    data = make_seq_protocol(tiny_dataset, SeqProtocolConfig(n_support=5, n_query=3, max_len=12))
    attrs = item_attributes(data.dataset)
    batch = collate_seq(data.train[:8])
    losses = {}
    for m in (1, 3):
        torch.manual_seed(0)
        cfg = CBMLConfig(sasrec=SASRecConfig(dim=16, inner=16, max_len=12, dropout=0.0), attr_dim=attrs.shape[1],
                         meta_query=m)
        model = CBML(data.n_items, cfg, attrs=attrs)
        torch.manual_seed(1)
        losses[m] = model.meta_loss(batch)
        if m == 3:  # the same as handing the re-cut batch to the paper's setting
            model.config = CBMLConfig(**{**cfg.__dict__, "meta_query": 1})
            torch.manual_seed(1)
            assert torch.allclose(model.meta_loss(batch.last_queries(3)), losses[3])
    assert not torch.allclose(losses[1], losses[3])


# ------------------------------------------------------------------------------------------ per query index
def test_per_query_index_metrics_put_each_hit_at_its_index(tiny_dataset):
    data = make_seq_protocol(tiny_dataset, SeqProtocolConfig(n_support=5, n_query=3, max_len=12))

    class OneIndex(_Oracle):  # the true item first at query index 1, last at the others
        def _score(self, seq, pos):
            s = super()._score(seq, pos)
            tgt = torch.take_along_dim(seq, pos + 1, dim=1) - 1
            s.scatter_(2, tgt[..., None], -1e9)
            s[:, 1].scatter_(1, tgt[:, 1:2], 1e9)
            return s

    flat, by_query = evaluate_seq_detail(OneIndex(data.n_items, 1), data.test, data.n_items)
    assert by_query["ndcg@10"] == [0.0, 1.0, 0.0] and by_query["recall@5"] == [0.0, 1.0, 0.0]
    assert flat == evaluate_seq(OneIndex(data.n_items, 1), data.test, data.n_items)
    assert flat["ndcg@10"] == pytest.approx(np.mean(by_query["ndcg@10"]))


# ------------------------------------------------------------------------------- run_variant: fusion, PT+MAML
TINY = {"model.net.dim": 8, "model.net.fusion_hidden": 4, "train.epochs": 1, "train.meta_batch": 64,
        "model.inner.steps": 1}


@pytest.fixture
def seqdata(tiny_dataset):
    return make_seq_protocol(tiny_dataset, SeqProtocolConfig(n_support=5, n_query=3, max_len=20, valid_frac=0.2))


@pytest.mark.parametrize("fusion_epochs", [1, 2])
def test_fusion_selection_keeps_the_better_of_learned_and_average_on_meta_valid(seqdata, tmp_path, fusion_epochs):
    from metarec.learners.base import load_learner
    from metarec.seqrec.mml import run_variant

    over = {**TINY, "model.fusion_select": "valid", "fusion_train.epochs": fusion_epochs, "fusion_train.lr": 0.05}
    res = run_variant("mml", seqdata, 0, tmp_path / "run", False, over, text_encoder=char_encoder, text_name="c")
    sel = res["fusion_select"]
    best = max(sel["learned"], sel["average"])
    assert sel["chosen"] == ("learned" if sel["learned"] >= sel["average"] else "average")
    assert res["valid"]["ndcg@10"] == pytest.approx(best)  # the model ranks with the winner
    method, _ = load_learner(tmp_path / "run" / "model.pt")
    assert bool(method.ready[1]) == (sel["chosen"] == "learned")  # and is saved with it
    assert evaluate_seq(method, seqdata.valid, seqdata.n_items)["ndcg@10"] == pytest.approx(best)
    assert set(sel["test_ndcg@10"]) == {"learned", "average"}
    assert sel["test_ndcg@10"][sel["chosen"]] == res["test"]["ndcg@10"]


def test_fusion_selection_picks_the_average_when_it_is_better():
    model = tiny_model()
    model.ready[1] = True
    valid = lambda m: {"ndcg@10": 0.2 if bool(m.ready[1]) else 0.3}  # noqa: E731
    out = model._select_fusion(valid, "ndcg@10", {"ndcg@10": 0.2})
    assert out["chosen"] == "average" and not bool(model.ready[1])
    out = model._select_fusion(lambda m: {"ndcg@10": 0.1}, "ndcg@10", {"ndcg@10": 0.2})
    assert out["chosen"] == "learned" and bool(model.ready[1])


def test_pt_maml_starts_stage_one_from_the_pooled_weights(seqdata):
    from metarec.seqrec.mml import run_variant

    cache: dict = {}
    over = {**TINY, "model.net.fusion": "main", "model.net.aux": False}
    pt = run_variant("ptft-mml", seqdata, 0, None, False, {**over, "meta.lr": 0.01}, cache, char_encoder, "c")
    # PT + MAML with a frozen stage 1 (Adam at rate 1e-12): its learners are the pooled (PT-FT) ones, and its
    # stage 0 is ptft-mml's stage 1, shared through the cache (same pretrain settings as ptft-mml's meta settings)
    both = {**over, "model.init": "pooled", "pretrain.lr": 0.01, "meta.lr": 1e-12}
    res = run_variant("mml-main", seqdata, 0, None, False, both, cache, char_encoder, "c")
    assert list(res["stages"])[:2] == ["pretrain", "meta"]
    assert res["stages"]["pretrain"]["seconds"] == 0.0  # shared
    ptft_state = next(v for k, v in cache.items() if "'pooled'" in k and "mml-stage1" in k)[0]
    mine = next(v for k, v in cache.items() if "'maml'" in k and "mml-stage1" in k)[0]
    assert ptft_state.keys() == mine.keys()
    assert all(torch.allclose(ptft_state[k], mine[k], atol=1e-7) for k in mine)
    assert res["best_epoch"] in (0, 1)  # the pretrained start competes as epoch 0
    assert pt["method"] == "ptft-mml"


def test_scratch_and_one_query_keep_the_paper_stage_key(seqdata):
    """The options' defaults leave the paper's stage sharing (mml, mml-nogen, mml-nofusion) as it was."""
    from metarec.seqrec.mml import run_variant

    cache: dict = {}
    run_variant("mml", seqdata, 0, None, False, TINY, cache, char_encoder, "c")
    res = run_variant("mml-nogen", seqdata, 0, None, False, TINY, cache, char_encoder, "c")
    assert res["stages"]["meta"]["seconds"] == 0.0
    res = run_variant("mml-nogen", seqdata, 0, None, False, {**TINY, "model.meta_query": 3}, cache, char_encoder,
                      "c")
    assert res["stages"]["meta"]["seconds"] > 0.0  # another stage 1: not shared


# ------------------------------------------------------------------------------------- support-only SASRec
def test_support_only_sasrec_trains_nothing_on_the_old_users(seqdata, tmp_path):
    from metarec.learners.base import load_learner
    from metarec.seqrec.command import run_method
    from metarec.seqrec.methods import DirectConfig, DirectSeq

    over = {"model.pretrain": False, "model.finetune.params": "all", "model.finetune.steps": 3,
            "model.sasrec.dim": 16, "model.sasrec.inner": 16, "train.epochs": 1}
    res = run_method("ptft", seqdata, 0, tmp_path / "run", False, over, {})
    assert res["best_epoch"] == 0 and res["history"] == [] and "finetune_lr_selection" in res
    method, _ = load_learner(tmp_path / "run" / "model.pt")
    torch.manual_seed(0)  # the runner's initialisation: the saved weights never moved
    fresh = DirectSeq(seqdata.n_items, method.config)
    assert all(torch.equal(a, b) for a, b in zip(fresh.net.state_dict().values(), method.net.state_dict().values(),
                                                  strict=True))
    assert isinstance(method.config, DirectConfig) and not method.config.pretrain
    assert len(res["test_by_query"]["ndcg@10"]) == 3
    with pytest.raises(Exception, match="trains nothing"):
        run_method("ptft", seqdata, 0, None, False, {**over, "model.finetune.steps": 0}, {})
