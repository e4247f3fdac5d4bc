"""MML: feature-aware attention, generator retrieval, fusion, the batched inner loop, training, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.engine.inner import InnerConfig
from metarec.learners.base import load_learner
from metarec.nets.mml_net import Fusion, MMLNetConfig, SeqLearner, pad_row
from metarec.nets.sasrec import CausalTransformer, SASRecConfig
from metarec.seqrec.batch import collate_seq
from metarec.seqrec.generator import ItemEmbeddingGenerator, topk_similar
from metarec.seqrec.mml import MMLConfig, MMLModel, variant_config
from metarec.tasks import build_sequence_tasks
from tests.conftest import require

N_ITEMS = 30
NET = MMLNetConfig(dim=8, blocks=2, heads=2, inner_size=8, dropout=0.0, max_len=12, fusion_hidden=6)


def tiny_tasks(n_users=10, seed=0):
    """Users walk through the items in steps of 1 or 2 from a random start: a learnable next-item pattern."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        i, n = int(rng.integers(N_ITEMS)), int(rng.integers(5, 12))
        for t in range(n):
            rows.append((u, i, t))
            i = (i + int(rng.integers(1, 3))) % (N_ITEMS - 3)  # the last 3 items are never seen: "new"
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return build_sequence_tasks(frame, min_len=3, max_len=NET.max_len, n_query=None)


def tiny_feats(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(N_ITEMS, 6, generator=g)}


def trained_mask():
    m = np.ones(N_ITEMS, dtype=bool)
    m[-3:] = False
    return m


INNER = InnerConfig(steps=2, lr=0.5, first_order=False)


def tiny_model(variant="mml", inner=INNER, seed=0, gen_p0=0.1):
    torch.manual_seed(seed)
    cfg = variant_config(variant, MMLConfig(net=NET, inner=inner, gen_k=4, gen_p0=gen_p0))
    pool = torch.from_numpy(np.flatnonzero(trained_mask()))
    return MMLModel(N_ITEMS, cfg, pool=pool, feats=tiny_feats())


# ------------------------------------------------------------------------------- feature-aware attention
def _copy_into_sasrec(lr: SeqLearner) -> CausalTransformer:
    trm = CausalTransformer(SASRecConfig(dim=NET.dim, blocks=NET.blocks, heads=NET.heads, inner=NET.inner_size,
                                         dropout=0.0, max_len=NET.max_len))
    names = {"emb_ln": "emb_norm", "ln1": "norm1", "ln2": "norm2", "f1": "ff1", "f2": "ff2"}
    src = dict(lr.named_parameters())
    with torch.no_grad():
        for n, p in trm.named_parameters():
            mine = n
            for a, b in names.items():
                mine = mine.replace(b, a)
            p.copy_(src[mine])
    return trm.eval()


def test_feature_aware_attention_reduces_to_vanilla_attention_with_zero_bias_weights():
    torch.manual_seed(0)
    lr = SeqLearner("id", N_ITEMS, NET, bias_feats={m: pad_row(f) for m, f in tiny_feats().items()})
    with torch.no_grad():
        for p in lr.parameters():  # non-trivial weights everywhere (LayerNorms included)
            p.add_(0.3 * torch.randn_like(p))
        for w in lr.pair.values():
            w.zero_()
        for blk in lr.blocks:  # SASRec passes one bias to every block: give the blocks the same head scales
            blk.head_bias.copy_(lr.blocks[0].head_bias)
    batch = collate_seq(tiny_tasks())
    valid = batch.seq > 0
    x = lr.embed(batch.seq, lr.table())
    theta = dict(lr.named_parameters())
    sims = lr.sims(batch.seq)
    assert all(s.abs().max() > 0 for s in sims.values())
    mine = lr.encode(theta, x, valid, sims, training=False)
    ref = _copy_into_sasrec(lr)(lr.item_emb(batch.seq))  # SASRec's vanilla causal attention, same weights
    assert torch.allclose(mine[valid], ref[valid], atol=1e-5)
    # and with non-zero pair weights the bias enters every head as eq. 3-4 say (vs SASRec's bias argument)
    with torch.no_grad():
        lr.pair["text"].copy_(torch.randn(NET.max_len, NET.max_len))
    L = batch.seq.shape[1]
    biased = lr.encode(theta, x, valid, sims, training=False)
    b_f = sims["text"] * lr.pair["text"][:L, :L]  # (B, L, L)
    ref_b = _copy_into_sasrec(lr)(lr.item_emb(batch.seq), b_f[:, None] * lr.blocks[0].head_bias[None, :, None, None])
    assert torch.allclose(biased[valid], ref_b[valid], atol=1e-5)
    assert (biased[valid] - mine[valid]).abs().max() > 1e-3


def test_encode_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = tiny_model()
    batch = collate_seq(tiny_tasks())
    ctx = model._contexts(batch.seq, model._id_table(None))
    theta = model._theta()
    h = model._encode_all(theta, ctx, batch.seq > 0, False)["id"]
    seq2 = batch.seq.clone()
    seq2[:, 4:] = 0  # drop everything after position 3
    ctx2 = model._contexts(seq2, model._id_table(None))
    h2 = model._encode_all(theta, ctx2, seq2 > 0, False)["id"]
    assert torch.allclose(h[:, :4], h2[:, :4], atol=1e-5)


# ----------------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_generator_topk_equals_brute_force(backend):
    if backend == "faiss":
        require("faiss")
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(40, 5, generator=g), torch.randn(40, 7, generator=g)]
    feats[1][3] = 0.0  # an item without a picture: cosine 0 in that modality
    pool = torch.arange(0, 40, 2)  # only even items are "old"
    queries = torch.arange(40)
    idx, sim = topk_similar(feats, queries, pool, k=5, exclude_self=True, backend=backend)
    a = [f.numpy().astype(np.float64) for f in feats]
    for q in range(40):
        scores = []
        for o in pool.tolist():
            if o == q:
                continue
            cos = []
            for x in a:
                nq, no = np.linalg.norm(x[q]), np.linalg.norm(x[o])
                cos.append(0.0 if nq == 0 or no == 0 else float(x[q] @ x[o] / (nq * no)))
            scores.append((sum(cos) / len(cos), o))
        best = sorted(scores, reverse=True)[:5]
        assert idx[q].tolist() == [o for _, o in best]
        assert np.allclose(sim[q].numpy(), [s for s, _ in best], atol=1e-5)


def test_generator_forward_matches_equations():
    torch.manual_seed(0)
    feats = {"image": torch.randn(12, 4), "text": torch.randn(12, 3)}
    gen = ItemEmbeddingGenerator(feats, dim=5, k=3)
    gen.fit_neighbours(torch.arange(8))
    out = gen(torch.tensor([9, 2]))
    for row, z in enumerate([9, 2]):
        nb = gen.neighbours[z]
        assert z not in nb.tolist() and all(o < 8 for o in nb.tolist())
        parts = []
        for m in ("image", "text"):
            y = gen.proj[m].weight  # (5, D)
            yz, yo = y @ feats[m][z], feats[m][nb] @ y.T  # (5,), (K, 5)
            w = gen.att[m].weight[0]
            logits = torch.stack([w @ torch.cat([yz, yo[j]]) for j in range(3)])
            a = torch.softmax(logits, 0)
            parts.append(torch.relu(yz + (a[:, None] * yo).sum(0)))
        assert torch.allclose(out[row], torch.stack(parts).mean(0), atol=1e-6)


# -------------------------------------------------------------------------------------------- fusion
def test_fusion_weights_sum_to_one_and_depend_on_the_states():
    torch.manual_seed(0)
    fusion = Fusion(NET)
    h = torch.randn(4, 9, NET.dim)
    pos = torch.tensor([[2, 8], [0, 5], [3, 3], [8, 1]])
    states = torch.stack([fusion.prefix_states(h, pos), fusion.prefix_states(2 * h.flip(1), pos)], -2)  # (B, P, 2, ·)
    a = fusion.weights(states)
    assert a.shape == (4, 2, 2)
    assert torch.allclose(a.sum(-1), torch.ones(4, 2), atol=1e-6)
    assert (a >= 0).all() and a.std() > 0
    # the prefix state of position t keeps outputs 0..t only
    st = fusion.prefix_states(h, pos).view(4, 2, NET.max_len, NET.dim)
    assert torch.equal(st[0, 0, :3], h[0, :3]) and (st[0, 0, 3:] == 0).all()


def test_fused_scores_are_the_attention_weighted_normalised_scores():
    model = tiny_model()
    batch = collate_seq(tiny_tasks())
    scores, states = model._group_outputs(batch, model._id_table(None), batch.q_pos)
    fused = model._fuse(scores, states, use_attention=True)
    a = model.fusion.weights(torch.stack([states["id"], states["text"]], -2))
    expect = a[..., :1] * Fusion.normalise(scores["id"]) + a[..., 1:] * Fusion.normalise(scores["text"])
    assert torch.allclose(fused, expect, atol=1e-5)
    mean = model._fuse(scores, states, use_attention=False)
    assert torch.allclose(mean, (Fusion.normalise(scores["id"]) + Fusion.normalise(scores["text"])) / 2, atol=1e-6)


# -------------------------------------------------------------------------------------------- inner loop
def test_batched_inner_loop_equals_per_task_unrolled_second_order():
    steps, lr = 2, 0.5
    model = tiny_model(inner=InnerConfig(steps=steps, lr=lr, first_order=False))
    tasks = tiny_tasks()[:4]
    batch = collate_seq(tasks)
    torch.manual_seed(3)
    neg = model._negatives(batch.target)
    ctx = model._contexts(batch.seq, model._id_table(None))
    fast = model._adapt_theta(ctx, batch, neg, training=False, first_order=False)
    query = model._bpr(fast, ctx, batch, neg, batch.q_mask, False)  # (B,)
    probe = [model.learners["id"].item_emb.weight, model.learners["text"].proj.weight,
             model.learners["id"].blocks[0].q.weight, model.learners["id"].pair["text"]]
    g_batched = torch.autograd.grad(query.mean(), probe, retain_graph=True)

    theta0 = model._theta()
    per_task_losses = []
    for b in range(len(tasks)):
        sub = collate_seq([tasks[b]])
        L = sub.seq.shape[1]
        ctx_b = {k: (x[b:b + 1, :L], {m: s[b:b + 1, :L, :L] for m, s in sims.items()}, t)
                 for k, (x, sims, t) in ctx.items()}
        theta = dict(theta0)
        for _ in range(steps):  # hand-unrolled SGD on this task alone
            loss = model._bpr(theta, ctx_b, sub, neg[b:b + 1, :L], sub.s_mask, False).sum()
            names = list(theta)
            grads = torch.autograd.grad(loss, [theta[n] for n in names], create_graph=True, allow_unused=True)
            theta = {n: theta[n] if g is None else theta[n] - lr * g for n, g in zip(names, grads, strict=True)}
        for n in fast:
            assert torch.allclose(fast[n][b], theta[n], atol=1e-5), n
        per_task_losses.append(model._bpr(theta, ctx_b, sub, neg[b:b + 1, :L], sub.q_mask, False).sum())
    g_ref = torch.autograd.grad(torch.stack(per_task_losses).mean(), probe)
    for a, b in zip(g_batched, g_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert g_batched[2].abs().max() > 0


def test_first_order_drops_the_second_order_term():
    batch = collate_seq(tiny_tasks()[:4])
    grads = {}
    for fo in (False, True):
        model = tiny_model(inner=InnerConfig(steps=2, lr=0.5, first_order=fo))
        torch.manual_seed(5)
        loss = model._meta_loss(batch)
        grads[fo] = torch.autograd.grad(loss, model.learners["id"].blocks[0].q.weight)[0]
    assert not torch.allclose(grads[False], grads[True])


# ------------------------------------------------------------------------------------ training & I/O
@pytest.mark.parametrize("variant", ["mml", "ptft-mml", "mml-id"])
def test_stage_one_loss_decreases(variant):
    model = tiny_model(variant)
    batch = collate_seq(tiny_tasks())
    model.set_stage(1)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    losses = []
    for step in range(24):
        torch.manual_seed(step % 4)  # a few fixed negative draws
        loss = model.meta_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])


def test_generator_and_fusion_stages_train_only_their_parameters():
    model = tiny_model(gen_p0=0.5)
    batch = collate_seq(tiny_tasks())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for stage in (2, 3):
        model.set_stage(stage)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        first = None
        for step in range(25):
            torch.manual_seed(step % 3)
            loss = model.meta_loss(batch)
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < first
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == n.startswith(("generator.", "fusion.")), n


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    batch = collate_seq(tiny_tasks())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.ready[:] = True
    s1 = model.adapt(batch).score_next(batch.seq, batch.q_pos)
    model.save(tmp_path / "m.pt", extra={"k": 1})
    loaded, extra = load_learner(tmp_path / "m.pt")
    s2 = loaded.adapt(batch).score_next(batch.seq, batch.q_pos)
    assert extra == {"k": 1}
    assert s1.shape == (len(batch), batch.q_pos.shape[1], N_ITEMS)
    assert torch.equal(s1, s2)
    assert torch.equal(loaded.generator.neighbours, model.generator.neighbours)


def test_adaptation_changes_the_scores_and_generator_fills_new_items():
    model = tiny_model()
    batch = collate_seq(tiny_tasks())
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(torch.randn_like(p))
    model.ready[0] = True
    table = model._eval_table()
    new_codes = torch.arange(N_ITEMS - 3, N_ITEMS) + 1
    assert torch.allclose(table[new_codes], model.generator(new_codes - 1))
    assert torch.equal(table[1:N_ITEMS - 3], model.learners["id"].item_emb.weight[1:N_ITEMS - 3])
    adapted = model.adapt(batch).score_next(batch.seq, batch.q_pos)
    frozen = tiny_model(inner=InnerConfig(steps=0))
    frozen.load_state_dict(model.state_dict())
    assert not torch.allclose(adapted, frozen.adapt(batch).score_next(batch.seq, batch.q_pos))


def test_variants_build_the_right_group():
    assert set(tiny_model("mml").learners) == {"id", "text"}
    assert tiny_model("mml-nogen").generator is None
    assert tiny_model("mml-nofusion").fusion is None and set(tiny_model("mml-nofusion").learners) == {"id", "text"}
    m = tiny_model("mml-main")
    assert set(m.learners) == {"id"} and m.generator is not None
    m = tiny_model("mml-id")
    assert set(m.learners) == {"id"} and m.generator is None and not m.learners["id"].bias_names
    assert tiny_model("ptft-mml").config.train_mode == "pooled"


# ---------------------------------------------------------------------------------------- end to end
def char_encoder(texts):
    """A tiny deterministic text encoder (character counts) standing in for MiniLM in tests."""
    out = np.zeros((len(texts), 12), np.float32)
    for r, t in enumerate(texts):
        for c in t.lower():
            out[r, ord(c) % 12] += 1.0
    return out


def test_run_variant_end_to_end_and_reload(tiny_dataset, tmp_path):
    from metarec import registry
    from metarec.learners.base import load_learner
    from metarec.seqrec.evaluate import evaluate_seq
    from metarec.seqrec.mml import run_variant
    from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

    assert {"mml", "mml-nogen", "mml-nofusion", "mml-main", "mml-id", "ptft-mml"} <= set(registry.names("sequential"))
    data = make_seq_protocol(tiny_dataset, SeqProtocolConfig(n_support=5, n_query=3, max_len=20, valid_frac=0.2))
    over = {"model.net.dim": 8, "model.net.fusion_hidden": 4, "train.epochs": 1, "train.meta_batch": 64,
            "model.inner.steps": 1}
    res = run_variant("mml", data, 0, tmp_path / "run", False, over, text_encoder=char_encoder, text_name="chars")
    assert set(res["stages"]) == {"meta", "gen_train", "fusion_train"}
    assert 0.0 <= res["test"]["ndcg@10"] <= 1.0 and res["test"]["rows"] == 3 * len(data.test)
    assert res["modalities"] == ["text"]
    method, extra = load_learner(tmp_path / "run" / "model.pt")
    assert extra["method"] == "mml" and bool(method.ready.all())
    again = evaluate_seq(method, data.test, data.n_items)
    assert again == res["test"]


def test_generated_table_is_cached_until_the_weights_change():
    model = tiny_model()
    model.ready[0] = True
    t1 = model._eval_table()
    assert model._eval_table() is t1
    with torch.no_grad():
        model.generator.proj["text"].weight.mul_(2.0)
    t2 = model._eval_table()
    assert t2 is not t1 and not torch.equal(t1, t2)
    with torch.no_grad():
        model.learners["id"].item_emb.weight.add_(1.0)
    assert not torch.equal(model._eval_table()[1], t2[1])
