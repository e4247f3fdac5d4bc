"""Reference-equivalence tests of the batched inner loop: against a hand-unrolled per-task loop, against
finite differences (true second order), and first order against second order."""

import numpy as np
import pytest
import torch

from metarec.engine.inner import InnerConfig
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig
from metarec.pipeline import RunConfig, prepare
from metarec.splits import SplitConfig
from metarec.tasks import TaskConfig, collate


@pytest.fixture
def prep(tiny_dataset):
    run = RunConfig(split=SplitConfig(protocol="user-cold", by="random"), tasks=TaskConfig(min_inter=14))
    return prepare(run, tiny_dataset)


def make(prep, steps=3, lr=0.05, first_order=False, learn_lr="none", hidden=(8, 8), fast_path=True, loss="mse"):
    torch.manual_seed(0)
    cfg = FeatureMLPConfig(emb_dim=4, hidden=hidden, fast_path=fast_path, loss=loss,
                           inner=InnerConfig(steps=steps, lr=lr, first_order=first_order, learn_lr=learn_lr))
    return FeatureMLP(prep.ctx, cfg).double()


def ragged_batch(prep, n=6):
    tasks = prep.train[:n]
    # make the support sizes ragged on purpose
    from metarec.tasks import Task
    out = []
    for j, t in enumerate(tasks):
        k = 2 + 3 * j
        out.append(Task(t.owner, t.s_user[:k], t.s_item[:k], t.s_rating[:k], t.q_user, t.q_item, t.q_rating))
    assert len({t.n_support for t in out}) == n
    b = collate(out)
    b.s_rating, b.q_rating = b.s_rating.double(), b.q_rating.double()
    return out, b


def hand_unrolled_loss(model, tasks, steps, lr, first_order):
    """Plain per-task MAML with explicit tensors, no engine code: the reference."""
    names = [n for n, _ in model.head.named_parameters()]
    total = 0.0
    for t in tasks:
        w = [p for _, p in model.head.named_parameters()]
        xs = model.encoder.pair(torch.as_tensor(t.s_user), torch.as_tensor(t.s_item))
        xq = model.encoder.pair(torch.as_tensor(t.q_user), torch.as_tensor(t.q_item))
        ys, yq = torch.as_tensor(t.s_rating).double(), torch.as_tensor(t.q_rating).double()

        def f(w, x):
            h = x
            n_lin = len(w) // 2
            for j in range(n_lin):
                h = h @ w[2 * j].T + w[2 * j + 1]
                if j < n_lin - 1:
                    h = torch.relu(h)
            return h.squeeze(-1)

        for _ in range(steps):
            loss = ((f(w, xs) - ys) ** 2).mean()
            g = torch.autograd.grad(loss, w, create_graph=not first_order)
            w = [wi - lr * gi for wi, gi in zip(w, g, strict=True)]
        total = total + ((f(w, xq) - yq) ** 2).mean()
    assert len(names) == 6
    return total / len(tasks)


FAST_PATH = pytest.mark.parametrize("fast_path", [True, False], ids=["lowrank", "vmap"])


@FAST_PATH
@pytest.mark.parametrize("first_order", [False, True])
def test_batched_equals_hand_unrolled(prep, first_order, fast_path):
    model = make(prep, first_order=first_order, fast_path=fast_path)
    tasks, batch = ragged_batch(prep)
    params = list(model.parameters())
    batched = model.meta_loss(batch)
    g_b = torch.autograd.grad(batched, params, allow_unused=True)
    ref = hand_unrolled_loss(model, tasks, 3, 0.05, first_order)
    g_r = torch.autograd.grad(ref, params, allow_unused=True)
    assert abs(batched.item() - ref.item()) < 1e-5 * max(1.0, abs(ref.item()))
    for a, b in zip(g_b, g_r, strict=True):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
            continue
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()


@FAST_PATH
def test_second_order_matches_finite_differences(prep, fast_path):
    model = make(prep, steps=2, lr=0.2, fast_path=fast_path)
    _, batch = ragged_batch(prep, n=3)
    w = model.head[0].weight
    loss = model.meta_loss(batch)
    (g,) = torch.autograd.grad(loss, [w])
    eps = 1e-6
    rng = np.random.default_rng(0)
    for _ in range(6):
        i, j = int(rng.integers(w.shape[0])), int(rng.integers(w.shape[1]))
        with torch.no_grad():
            w[i, j] += eps
            up = model.meta_loss(batch).item()
            w[i, j] -= 2 * eps
            down = model.meta_loss(batch).item()
            w[i, j] += eps
        fd = (up - down) / (2 * eps)
        assert abs(fd - g[i, j].item()) < 1e-6 + 1e-4 * abs(fd), (fd, g[i, j].item())


@FAST_PATH
def test_first_order_differs_from_second_order(prep, fast_path):
    _, batch = ragged_batch(prep, n=4)
    so = make(prep, steps=2, lr=0.2, fast_path=fast_path)
    fo = make(prep, steps=2, lr=0.2, first_order=True, fast_path=fast_path)
    fo.load_state_dict(so.state_dict())
    g_so = torch.autograd.grad(so.meta_loss(batch), [so.head[0].weight])[0]
    g_fo = torch.autograd.grad(fo.meta_loss(batch), [fo.head[0].weight])[0]
    assert so.meta_loss(batch).item() == pytest.approx(fo.meta_loss(batch).item(), rel=1e-12)  # same forward
    assert (g_so - g_fo).abs().max() > 1e-4 * g_so.abs().max()  # the Hessian term matters
    # with zero inner steps both are plain gradients and agree exactly
    so0, fo0 = make(prep, steps=0), make(prep, steps=0, first_order=True)
    a = torch.autograd.grad(so0.meta_loss(batch), [so0.head[0].weight])[0]
    b = torch.autograd.grad(fo0.meta_loss(batch), [fo0.head[0].weight])[0]
    assert torch.equal(a, b)


@FAST_PATH
@pytest.mark.parametrize("learn_lr", ["scalar", "per_param"])
def test_learned_inner_lr_gradient_matches_finite_differences(prep, learn_lr, fast_path):
    model = make(prep, steps=2, lr=0.1, learn_lr=learn_lr, fast_path=fast_path)
    _, batch = ragged_batch(prep, n=3)
    lr_param = model.inner_lr if learn_lr == "scalar" else model.inner_lr["4_bias"]
    (g,) = torch.autograd.grad(model.meta_loss(batch), [lr_param])
    idx = () if learn_lr == "scalar" else (0,)
    eps = 1e-6
    with torch.no_grad():
        lr_param[idx] += eps
        up = model.meta_loss(batch).item()
        lr_param[idx] -= 2 * eps
        down = model.meta_loss(batch).item()
        lr_param[idx] += eps
    fd = (up - down) / (2 * eps)
    assert g[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)
    assert abs(fd) > 1e-8


def test_first_order_learned_scalar_lr_gradient_agrees_across_paths(prep):
    """In first order the lr gradient is not the total derivative (FD does not apply); the hand-written
    first-order loop and the autograd engine must still give the same one."""
    _, batch = ragged_batch(prep, n=4)
    grads = []
    for fast_path in (True, False):
        model = make(prep, steps=3, lr=0.1, learn_lr="scalar", fast_path=fast_path, first_order=True)
        grads.append(torch.autograd.grad(model.meta_loss(batch), [model.inner_lr])[0])
    assert grads[0].abs() > 1e-6
    assert torch.allclose(grads[0], grads[1], rtol=1e-8)


@FAST_PATH
def test_adapt_changes_predictions_and_matches_meta_loss_forward(prep, fast_path):
    model = make(prep, steps=3, lr=0.05, fast_path=fast_path)
    _, batch = ragged_batch(prep, n=4)
    with torch.no_grad():
        adapted = model.adapt(batch)
        pred = adapted.score(batch.q_user, batch.q_item)  # (B, Q)
    m = batch.q_mask.double()
    loss = (((pred - batch.q_rating) ** 2 * m).sum(1) / m.sum(1)).mean()
    assert loss.item() == pytest.approx(model.meta_loss(batch).item(), rel=1e-10)
    model0 = make(prep, steps=0, fast_path=fast_path)
    with torch.no_grad():
        pred0 = model0.adapt(batch).score(batch.q_user, batch.q_item)
    assert (pred0 - pred).abs().max() > 1e-6
    # score_items of the owners agrees with pairwise scores
    items = batch.q_item[0, :3]
    with torch.no_grad():
        full = adapted.score_items(items)  # (B, 3)
        pair = adapted.score(batch.q_user[:, :1].expand(-1, 3), items[None].expand(len(batch), 3))
    assert torch.allclose(full, pair)


@pytest.mark.parametrize("hidden", [(8, 8), (8,), (8, 6, 4), ()])
@pytest.mark.parametrize("loss", ["mse", "bce"])
@pytest.mark.parametrize("first_order", [False, True])
def test_lowrank_and_vmap_paths_agree(prep, first_order, loss, hidden):
    """The exact low-rank first layer (first order: its hand-written backward) and the generic vmap engine:
    same loss, same meta-gradients, for both losses and several depths."""
    fast = make(prep, first_order=first_order, loss=loss, hidden=hidden)
    slow = make(prep, first_order=first_order, fast_path=False, loss=loss, hidden=hidden)
    _, batch = ragged_batch(prep, n=5)
    if loss == "bce":
        batch.s_rating, batch.q_rating = (batch.s_rating > 3).double(), (batch.q_rating > 3).double()
    lf, ls = fast.meta_loss(batch), slow.meta_loss(batch)
    gf = torch.autograd.grad(lf, list(fast.parameters()), allow_unused=True)
    gs = torch.autograd.grad(ls, list(slow.parameters()), allow_unused=True)
    assert lf.item() == pytest.approx(ls.item(), rel=1e-10)
    for a, b in zip(gf, gs, strict=True):
        if a is not None or b is not None:
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_a_whole_parameter_rule_with_a_stop_and_hooks_equals_the_hand_loop():
    """``rule`` (a learned update over all parameters, with state across steps), ``on_step`` ending the loop and
    ``after_step``: the numbers of the same loop written by hand, and the gradient of the rule's parameter by
    finite differences (first order: the support gradients are constants)."""
    from metarec.engine.inner import inner_loop

    torch.manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64)  # (B, N) three tasks
    y = torch.randn(3, 5, dtype=torch.float64)
    w0 = torch.randn(3, 5, dtype=torch.float64)
    a = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)  # the rule's learned parameter

    def loss_fn(f):
        return ((f["w"] * x - y) ** 2).mean(1)  # (B,)

    def run(a, stop_at=2, record=None):
        mem = {"m": torch.zeros_like(w0)}

        def rule(t, fast, grads, loss):  # momentum with a learned rate, stateful across steps
            mem["m"] = 0.5 * mem["m"] + grads["w"]
            return {"w": fast["w"] - a * mem["m"] / (1 + t)}

        def on_step(t, loss, grads):
            return t == stop_at  # ends before step stop_at's update

        after = (lambda t, f: record.append(f["w"].detach().clone())) if record is not None else None
        return inner_loop({"w": w0}, loss_fn, 5, 0.0, order="first", rule=rule, on_step=on_step, after_step=after)

    seen: list = []
    out = run(a, record=seen)["w"]
    w, m = w0.clone(), torch.zeros_like(w0)
    for t in range(2):  # by hand: steps 0 and 1 update, step 2 stops
        wl = w.detach().requires_grad_(True)
        g = torch.autograd.grad(loss_fn({"w": wl}).sum(), wl)[0]
        m = 0.5 * m + g
        w = w - a * m / (1 + t)
        assert torch.equal(seen[t], w.detach())
    assert len(seen) == 2 and torch.allclose(out, w)
    query = lambda w: ((w * x - 2 * y) ** 2).sum()  # noqa: E731
    (grad_a,) = torch.autograd.grad(query(out), a)
    eps = 1e-6

    def q_first_order(av):  # first order: gradients at the points the loop reached, held constant
        w, m = w0.clone(), torch.zeros_like(w0)
        for t in range(2):
            wl = w.detach().requires_grad_(True)
            g = torch.autograd.grad(loss_fn({"w": wl}).sum(), wl)[0]
            m = 0.5 * m + g
            w = w - av * m / (1 + t)
        return query(w)

    # the derivative through the rule's parameter with the support gradients as constants (those of a)
    gs, w = [], w0.clone()
    m = torch.zeros_like(w0)
    for t in range(2):
        wl = w.detach().requires_grad_(True)
        gs.append(torch.autograd.grad(loss_fn({"w": wl}).sum(), wl)[0])
        m = 0.5 * m + gs[-1]
        w = (w - a * m / (1 + t)).detach()

    def q_fixed(av):
        w, m = w0.clone(), torch.zeros_like(w0)
        for t in range(2):
            m = 0.5 * m + gs[t]
            w = w - av * m / (1 + t)
        return query(w)

    fd = (q_fixed(a.detach() + eps) - q_fixed(a.detach() - eps)) / (2 * eps)
    assert torch.allclose(grad_a, fd, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(grad_a, (q_first_order(a.detach() + eps) - q_first_order(a.detach() - eps)) / (2 * eps),
                              rtol=1e-3)  # the full derivative (gradients moving with a) is another number
    none: list = []
    assert torch.equal(run(a, stop_at=0, record=none)["w"], w0) and none == []  # stopped before any update


@pytest.mark.parametrize("hidden", [(8, 8), (8,), (8, 6, 4)])
@pytest.mark.parametrize("budget", [1, 1 << 20])  # one task at a time, all at once
def test_item_split_scoring_equals_the_pairs(prep, hidden, budget):
    """``score_items`` on the low-rank state (first layer split into its user and item parts, the item side
    computed once, tasks in chunks) gives the numbers of the adapted head on the concatenated pairs."""
    model = make(prep, steps=2, lr=0.05, hidden=hidden)
    _, batch = ragged_batch(prep, n=5)
    items = torch.arange(prep.ctx.n_items)
    with torch.no_grad():
        x_s = model.encoder.pair(batch.s_user, batch.s_item)
        state = model._adapt_fast(x_s, batch, 2, first_order=True)
        got = model._score_items_lowrank(state, model.encoder.user(batch.owner), model.encoder.item(items), budget)
        B, N = len(batch), len(items)
        pairs = model.encoder.pair(batch.owner[:, None].expand(B, N), items[None].expand(B, N))
        want = model._apply_lowrank(state, pairs)  # (B, N)
    assert got.shape == (B, N) and torch.allclose(got, want, rtol=1e-10, atol=1e-10)
