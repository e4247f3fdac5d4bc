"""Evaluation, training and save/load of the sequence methods (SASRec, GRU4Rec, Full, PT-FT, SML, CBML)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from metarec.learners.base import load_learner
from metarec.nets.sasrec import SASRecConfig
from metarec.seqrec.batch import collate_seq
from metarec.seqrec.cbml import CBML, CBMLConfig, item_attributes
from metarec.seqrec.evaluate import evaluate_seq, history_mask
from metarec.seqrec.methods import DirectConfig, DirectSeq, FinetuneConfig, SeqMethod, seq_adapted
from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol
from metarec.seqrec.sml import SML, SMLConfig, Transfer, period_tasks
from metarec.seqrec.train import fit_seq, seq_train_config

CFG = SeqProtocolConfig(new_user_frac=0.1, valid_frac=0.1, n_support=5, n_query=3, max_len=12)
SMALL = SASRecConfig(dim=16, inner=16, max_len=12)


@pytest.fixture
def data(tiny_dataset):
    return make_seq_protocol(tiny_dataset, CFG)


class _Oracle(SeqMethod):
    """Scores the true next item at a fixed rank ``r`` (the r-1 items with the highest other scores first)."""

    def __init__(self, n_items, rank):
        super().__init__(n_items, {})
        self.rank = rank
        self.batch = None

    def adapt(self, batch):
        return seq_adapted(batch, self._score)

    def _score(self, seq, pos):
        B, P = pos.shape
        s = -torch.arange(self.n_items, dtype=torch.float32).repeat(B, P, 1)  # item 0 best, then 1, ...
        tgt = torch.take_along_dim(seq, (pos + 1).clamp(max=seq.shape[1] - 1), dim=1) - 1  # (B, P)
        s.scatter_(2, tgt[..., None], 1.5 - self.rank)  # just after the (rank-1) best items 0..rank-2
        return s


def test_evaluation_is_full_ranking_with_history_excluded(data):
    n = data.n_items
    r1 = evaluate_seq(_Oracle(n, 1), data.test, n)
    assert r1["recall@5"] == 1.0 and r1["mrr@5"] == 1.0 and r1["ndcg@20"] == pytest.approx(1.0)
    r7 = evaluate_seq(_Oracle(n, 7), data.test, n)
    assert r7["recall@5"] == 0.0 and r7["recall@10"] <= 1.0 and r7["rows"] == 3 * len(data.test)
    # rank is 7 unless some of the 6 better items are in the row's history (then they are removed)
    b = collate_seq(data.test)
    hist = history_mask(b, n)  # (B, Q, N)
    better_in_hist = hist[..., :6].sum(-1)[b.q_valid].numpy()  # (R,)
    tgt = (torch.take_along_dim(b.target, b.q_pos, 1) - 1)[b.q_valid].numpy()
    ranks = 7 - better_in_hist - (tgt < 6)  # a target among the first 6 items does not count against itself
    assert r7["mrr@10"] == pytest.approx(np.mean(1.0 / ranks))
    assert r7["ndcg@10"] == pytest.approx(np.mean(1.0 / np.log2(ranks + 1)))


def test_history_mask_covers_exactly_the_prefix(data):
    b = collate_seq(data.test[:2])
    h = history_mask(b, data.n_items)
    assert h.shape == (2, 3, data.n_items)
    for q in range(3):
        p = int(b.q_pos[0, q])
        assert set(torch.nonzero(h[0, q]).flatten().tolist()) == set((b.seq[0, : p + 1] - 1).tolist())


@pytest.mark.parametrize("net", ["sasrec", "gru4rec"])
def test_direct_training_loss_decreases(data, net):
    torch.manual_seed(0)
    m = DirectSeq(data.n_items, DirectConfig(net=net, sasrec=SMALL))
    batch = collate_seq(data.train[:32])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.meta_loss(batch).item()
    for _ in range(30):
        torch.manual_seed(1)  # the same negatives every step
        loss = m.meta_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    assert m.meta_loss(batch).item() < 0.7 * first


def test_fit_and_save_load_round_trip(data, tmp_path):
    torch.manual_seed(0)
    m = DirectSeq(data.n_items, DirectConfig(sasrec=SMALL, finetune=FinetuneConfig(steps=2, lr=0.1)))
    res = fit_seq(m, data.train, lambda x: evaluate_seq(x, data.valid, data.n_items),
                  seq_train_config(epochs=2, meta_batch=16), checkpoint=tmp_path / "ck.pt", progress=False)
    assert res["best_epoch"] >= 1 and (tmp_path / "ck.pt").is_file()
    m.save(tmp_path / "m.pt")
    m2, _ = load_learner(tmp_path / "m.pt")
    assert evaluate_seq(m2, data.test, data.n_items) == evaluate_seq(m, data.test, data.n_items)


def test_sequential_adapted_is_the_one_adapted(data):
    """A sequence model's ``Adapted`` scores candidate items as the next one after each support sequence: the
    same numbers as its next-item scores at the position after the last known item."""
    from metarec.learners.base import Adapted, Learner

    torch.manual_seed(0)
    m = DirectSeq(data.n_items, DirectConfig(sasrec=SMALL)).eval()
    assert isinstance(m, Learner)
    sup = collate_seq(data.test[:4]).support_only()
    with torch.no_grad():
        a = m.adapt(sup)
        assert isinstance(a, Adapted) and torch.equal(a.owners, sup.owner)
        nxt = a.score_next(sup.seq, (sup.length - 1)[:, None])[:, 0]  # (B, n_items)
        items = torch.tensor([0, 3, data.n_items - 1])
        assert torch.equal(a.score_items(items), nxt[:, items])
        pairs = torch.tensor([[2, 1], [0, 0], [5, 4], [1, 2]])
        assert torch.equal(a.score(sup.owner[:, None].expand(-1, 2), pairs), torch.gather(nxt, 1, pairs))
        # the hand-computed last position: the support sequence's last real item is the input there
        b = 0
        last = int(sup.length[b]) - 1
        assert int(sup.seq[b, last]) > 0 and (last + 1 == sup.seq.shape[1] or int(sup.seq[b, last + 1]) == 0)


def test_sequence_files_of_the_former_format_still_load(data, tmp_path):
    """Files written before the one save format (keys cls/name/n_items, a SeqTrainConfig ``batch``) load with
    the same weights and numbers."""
    from metarec.io import load_torch, save_torch

    torch.manual_seed(0)
    m = DirectSeq(data.n_items, DirectConfig(sasrec=SMALL))
    m.name = "sasrec"
    m.save(tmp_path / "new.pt", extra={"method": "sasrec"})
    blob = load_torch(tmp_path / "new.pt", "model")
    assert blob["learner"] == "sasrec" and blob["family"] == "sequential"
    assert blob["context"] == {"n_items": data.n_items}
    old = {"cls": "DirectSeq", "name": "sasrec", "n_items": data.n_items, "config": blob["config"],
           "state": blob["state"], "extra": {"method": "sasrec"}}
    save_torch(tmp_path / "old.pt", old)
    m2, extra = load_learner(tmp_path / "old.pt")
    assert m2.name == "sasrec" and extra == {"method": "sasrec"}
    assert evaluate_seq(m2, data.test, data.n_items) == evaluate_seq(m, data.test, data.n_items)


def test_train_config_reads_the_former_batch_field():
    from metarec.config import config_from_dict
    from metarec.engine.train import TrainConfig

    assert config_from_dict(TrainConfig, {"epochs": 3, "batch": 17}).meta_batch == 17


def test_ptft_adapts_on_the_support_only(data):
    torch.manual_seed(0)
    base = DirectSeq(data.n_items, DirectConfig(sasrec=SMALL)).eval()
    ft = DirectSeq(data.n_items, DirectConfig(sasrec=SMALL, finetune=FinetuneConfig(steps=3, lr=1.0))).eval()
    ft.load_state_dict(base.state_dict())
    b = collate_seq(data.test[:4])
    with torch.no_grad():
        s0 = base.adapt(b.support_only()).score_next(b.seq, b.q_pos)
        s1 = ft.adapt(b.support_only()).score_next(b.seq, b.q_pos)
        assert s1.shape == (4, 3, data.n_items) and not torch.allclose(s0, s1, atol=1e-4)
        other = collate_seq(data.test[:4])
        other.seq[:, 5:] = 1  # change the query items: the adapted weights must not move
        s2 = ft.adapt(other.support_only()).score_next(b.seq, b.q_pos)
        assert torch.allclose(s1, s2, atol=1e-6)


def test_cbml_shapes_meta_loss_and_round_trip(data, tmp_path):
    torch.manual_seed(0)
    attrs = item_attributes(data.dataset)
    assert attrs.shape[0] == data.n_items and attrs.sum(1).min() >= 1
    cfg = CBMLConfig(sasrec=SMALL, clusters=3, attr_dim=attrs.shape[1])
    m = CBML(data.n_items, cfg, attrs=attrs)
    b = collate_seq(data.train[:16])
    W, bias, assign = m.task_init(b.support_only().seq)
    assert W.shape == (16, 16, 16) and bias.shape == (16, 16) and assign.shape == (16, 3)
    assert torch.allclose(assign.sum(1), torch.ones(16))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    torch.manual_seed(3)
    first = m.meta_loss(b).item()
    for _ in range(25):
        torch.manual_seed(3)
        loss = m.meta_loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(3)
    assert m.meta_loss(b).item() < first
    assert m.gate.weight.grad is not None and m.centres.grad is not None  # the clusters are meta-trained
    # the inner loop moves the gated prediction layer on the support (a large rate makes it visible)
    sup = b.support_only()
    h = m.encode(sup.seq)
    W0, b0, _ = m.task_init(sup.seq)
    fast = CBML(data.n_items, replace(cfg, inner=replace(cfg.inner, lr=50.0)), attrs=attrs)
    fast.load_state_dict(m.state_dict())
    moved = fast._adapt_fast(sup, h)
    assert moved["W"].shape == W0.shape and (moved["W"] - W0).abs().max() > 1e-3
    assert torch.allclose(m._adapt_fast(sup, h)["W"], W0, atol=0.05)  # the paper's rate 1e-3 barely moves it
    m.save(tmp_path / "c.pt")
    m2, _ = load_learner(tmp_path / "c.pt")
    assert evaluate_seq(m2, data.test, data.n_items) == evaluate_seq(m, data.test, data.n_items)


def test_sml_transfer_periods_and_round_trip(data, tmp_path):
    torch.manual_seed(0)
    t = Transfer(16, residual=True)
    prev, hat = torch.randn(5, 16), torch.randn(5, 16)
    assert torch.allclose(t(prev, hat), hat)  # residual transfer starts as "keep the retrained weights"
    assert Transfer(16, residual=False)(prev, hat).shape == (5, 16)
    periods = period_tasks(data.train_inter, 4, CFG.max_len)
    assert len(periods) == 4 and all(periods)
    ts = data.train_inter["timestamp"].to_numpy()
    edges = np.quantile(ts, [0.25, 0.5, 0.75])
    for p, tasks in enumerate(periods):  # every support target lies in its period
        for task in tasks[:5]:
            df = data.train_inter[data.train_inter["user"] == task.owner]
            period_items = set(df["item"].to_numpy()[np.searchsorted(edges, df["timestamp"].to_numpy(), "right") == p])
            assert set(task.s_item.tolist()) <= period_items
    m = SML(data.n_items, SMLConfig(sasrec=SMALL, periods=4, pretrain_periods=2, hat_steps=2, transfer_steps=2,
                                    batch=16))
    assert m.plain
    before = {k: v.clone() for k, v in m.net.named_parameters()}
    log = m.sequential_train(periods, progress=False)
    assert [e["period"] for e in log] == [2, 3] and log[0]["next_period_loss"] is not None
    assert not m.plain and any(not torch.equal(before[k], v) for k, v in m.net.named_parameters())
    res = evaluate_seq(m, data.test, data.n_items)
    m.save(tmp_path / "s.pt")
    m2, _ = load_learner(tmp_path / "s.pt")
    assert not m2.plain and evaluate_seq(m2, data.test, data.n_items) == res


def test_full_retrain_trains_on_the_new_users_support(data):
    m = DirectSeq(data.n_items, replace(DirectConfig(), with_supports=True))
    tasks = m.train_tasks(data)
    assert len(tasks) == len(data.train) + len(data.valid) + len(data.test)
    for t, cold in zip(tasks[len(data.train):], data.valid + data.test, strict=True):
        assert t.owner == cold.owner  # the warm-up items only, never the query items
        assert np.array_equal(t.extra["seq"], cold.extra["seq"][: CFG.n_support])
