"""DeepFM backbone: shapes, the FM term against a brute-force pairwise sum, training, the warm-up update."""

import itertools

import torch

from metarec.ctr.warmup import prepare_warmup
from metarec.nets.deepfm import DeepFM, WarmUpdate, fit_backbone, sgd_update
from tests.ctr.warmup_data import BCFG, WCFG, warmup_dataset


def _data():
    return prepare_warmup(warmup_dataset(), WCFG)


def test_shapes():
    data = _data()
    torch.manual_seed(0)
    bb = DeepFM(data.ctx, BCFG)
    d = BCFG.emb_dim
    users = torch.randint(0, data.ctx.n_users, (3, 5))
    items = torch.randint(0, data.ctx.n_items, (3, 5))
    assert bb.logits(users, items, torch.randn(3, 5, d)).shape == (3, 5)
    assert bb(users[0], items[0]).shape == (5,)
    assert bb.item_side(items[:, 0]).shape == (3, bb.n_item_side, d)
    assert bb.n_item_side == 2  # decade and genres
    assert bb.user_vec(users).shape == (3, 5, d)
    assert bb.old_item_table().shape == (len(data.split.old_items), d)


def test_fm_term_is_the_sum_of_pairwise_inner_products():
    data = _data()
    torch.manual_seed(0)
    bb = DeepFM(data.ctx, BCFG).double()
    torch.nn.init.normal_(bb.user_id.weight, std=0.5)
    users = torch.randint(0, data.ctx.n_users, (6,))
    items = torch.randint(0, data.ctx.n_items, (6,))
    v = torch.randn(6, BCFG.emb_dim, dtype=torch.float64)
    side, first = bb._side(users, items)
    fields = [v] + [side[:, f] for f in range(side.shape[1])]
    assert len(fields) == bb.n_fields
    pairs = sum((a * b).sum(-1) for a, b in itertools.combinations(fields, 2))
    deep = bb.mlp(torch.cat(fields, -1)).squeeze(-1)
    torch.testing.assert_close(bb.logits(users, items, v), bb.bias + first + pairs + deep)


def test_training_lowers_the_loss_and_freezes():
    data = _data()
    torch.manual_seed(0)
    bb = DeepFM(data.ctx, BCFG)
    base = data.split.base
    hist = fit_backbone(bb, base["user"].to_numpy(), base["item"].to_numpy(), base["label"].to_numpy(), BCFG,
                        seed=0, progress=False)
    assert len(hist) == BCFG.epochs and hist[-1] < hist[0] - 0.02
    assert not any(p.requires_grad for p in bb.parameters())
    # users absent from the old items' interactions share the unknown id 0
    seen = set(base["user"].tolist())
    assert all((int(bb.user_ids[u]) > 0) == (u in seen) for u in range(data.ctx.n_users))


def test_the_update_is_per_item_and_equals_a_hand_step():
    data = _data()
    torch.manual_seed(0)
    bb = DeepFM(data.ctx, BCFG).double().requires_grad_(False)
    users, labels = data.phases[0]
    items = data.new_items[:, None].expand_as(users)
    mask = torch.ones_like(labels, dtype=torch.bool)
    labels = labels.double()
    raw = torch.randn(len(data.new_items), BCFG.emb_dim, dtype=torch.float64)
    upd = WarmUpdate(lr=0.7, steps=2)
    new, first = sgd_update(bb, raw, lambda r: r, users, items, labels, mask, upd)
    assert new.shape == raw.shape and first.shape == (len(raw),)
    for b in (0, len(raw) - 1):  # each item alone, two hand-written steps
        v = raw[b:b + 1].clone()
        for _ in range(2):
            v.requires_grad_(True)
            logits = bb.logits(users[b], items[b], v.expand(users.shape[1], -1))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[b])
            (g,) = torch.autograd.grad(loss, v)
            v = (v - 0.7 * g).detach()
        torch.testing.assert_close(new[b:b + 1], v)
