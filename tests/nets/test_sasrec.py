"""SASRec / GRU4Rec: causality, the functional contract, fast weights through functional_call and vmap."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from metarec.engine.inner import expand_fast
from metarec.nets.gru4rec import GRU4Rec
from metarec.nets.sasrec import SASRec, SASRecConfig
from metarec.seqrec.functional import vcall

N = 30


def _seq(B=3, L=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, N + 1, (B, L), generator=g)


@pytest.mark.parametrize("make", [lambda: SASRec(N, SASRecConfig(max_len=10, heads=2)), lambda: GRU4Rec(N)])
def test_changing_a_later_item_never_changes_earlier_outputs(make):
    torch.manual_seed(0)
    net = make().eval()
    seq = _seq()
    pos = torch.arange(8).expand(3, 8)
    out = net(seq, pos)  # (B, L, N)
    assert out.shape == (3, 8, N)
    changed = seq.clone()
    changed[:, 5] = (changed[:, 5] % N) + 1
    out2 = net(changed, pos)
    assert torch.allclose(out[:, :5], out2[:, :5], atol=1e-6)
    assert not torch.allclose(out[:, 5:], out2[:, 5:], atol=1e-4)
    # right padding does not change the real positions either
    padded = torch.cat([seq, torch.zeros(3, 2, dtype=torch.long)], dim=1)
    assert torch.allclose(net(padded, pos), out, atol=1e-6)


def test_item_subset_scores_match_the_full_ranking():
    torch.manual_seed(0)
    net = SASRec(N, SASRecConfig(max_len=10)).eval()
    seq, pos = _seq(), torch.tensor([[7], [3], [0]])
    full = net(seq, pos)  # (B, 1, N)
    items = torch.tensor([[[4, 0, 29]], [[1, 2, 3]], [[5, 5, 6]]])  # (B, 1, 3)
    assert torch.allclose(net(seq, pos, items), torch.take_along_dim(full, items, dim=-1), atol=1e-6)
    assert torch.allclose(net(seq[0], pos[0]), full[0], atol=1e-6)  # unbatched call = one task


def test_functional_call_with_fast_parameters_equals_the_module():
    torch.manual_seed(0)
    net = SASRec(N, SASRecConfig(max_len=10)).eval()
    names = net.fast_names()
    assert names and all(n.startswith(("trm.blocks", "trm.emb_norm")) for n in names)
    assert "item_emb.weight" not in names and "trm.pos_emb.weight" not in names
    assert "trm.pos_emb.weight" in SASRec(N, SASRecConfig(fast="theta+pos")).fast_names()
    seq, pos = _seq(), torch.arange(8).expand(3, 8)
    params = dict(net.named_parameters())
    fast = {n: params[n] for n in names}
    assert torch.allclose(functional_call(net, fast, (seq, pos), strict=False), net(seq, pos), atol=1e-6)
    # per-task fast weights through vmap: equal to calling each task with its own weights
    per_task = {n: torch.stack([p + 0.05 * b * torch.randn_like(p) for b in range(3)]) for n, p in fast.items()}
    out = vcall(net, per_task, seq, pos)  # (B, L, N)
    for b in range(3):
        one = functional_call(net, {n: v[b] for n, v in per_task.items()}, (seq[b:b + 1], pos[b:b + 1]),
                              strict=False)
        assert torch.allclose(out[b], one[0], atol=1e-5)
    assert not torch.allclose(out[1], out[0], atol=1e-4)
    same = vcall(net, expand_fast(fast, 3), seq, pos)
    assert torch.allclose(same, net(seq, pos), atol=1e-5)


def test_attention_bias_enters_before_the_scale():
    torch.manual_seed(0)
    net = SASRec(N, SASRecConfig(max_len=10)).eval()
    seq = _seq(B=1)
    h0 = net.encode(seq)
    h1 = net.encode(seq, bias=torch.zeros(8, 8))
    assert torch.allclose(h0, h1, atol=1e-6)
    big = torch.zeros(8, 8)
    big[:, 0] = 1e4  # every position attends (almost) only to the first item
    blk = net.trm.blocks[0]
    x = torch.randn(1, 8, 64)
    a = blk(x, bias=big)
    assert a.shape == (1, 8, 64) and not torch.allclose(a, blk(x), atol=1e-3)


def test_dropout_under_vmap_draws_per_task():
    torch.manual_seed(0)
    net = SASRec(N, SASRecConfig(max_len=10, dropout=0.5)).train()
    params = dict(net.named_parameters())
    fast = expand_fast({n: params[n] for n in net.fast_names()}, 2)
    seq = _seq(B=1).expand(2, 8)
    out = vcall(net, fast, seq, torch.arange(8).expand(2, 8))
    assert not torch.allclose(out[0], out[1])
