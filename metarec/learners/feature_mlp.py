"""The MeLU network (Lee et al. KDD'19, survey 5.1) and the learners built on it.

Embeddings of user fields (age, gender, occupation, zip prefix) and item fields (release decade, genres as
a multi-hot bag) are concatenated and fed to a decision MLP. Only the MLP is adapted per task (its weights
are the fast parameters); the embeddings learn in the outer loop only, as in MeLU.

Learners on this network:
- ``melu``: MAML over the MLP, second order by default (the paper's settings: embedding 32, two hidden
  layers of 64, local lr 5e-6, global lr 5e-5, meta-batch 32, one local step).
- ``noadapt``: the same network trained on all meta-train interactions (support and query pooled), used
  as is on new tasks.
- ``ptft``: ``noadapt``'s pretraining, then fine-tuning of the MLP on each task's support set (plain SGD).
- ``metasgd`` / ``metacs``: MAML with learnable per-parameter (Meta-SGD) or scalar (MetaCS) inner rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from metarec.engine.inner import InnerConfig, batched_call, expand_fast, inner_loop, masked_task_loss, sgd_step
from metarec.learners.base import Adapted, Context, Learner, by_task_chunks
from metarec.nets.features import FeatureEncoder
from metarec.nets.mlp import mlp
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class FeatureMLPConfig:
    emb_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    item_id: bool = False  # add an item-ID embedding (index 0 for items unseen in meta-train)
    fast_path: bool = True  # exact low-rank first layer + batched matmuls (see _adapt_lowrank); else vmap
    inner: InnerConfig = field(default_factory=InnerConfig)
    train_mode: str = "maml"  # "maml": meta-train through the inner loop; "pooled": plain supervised
    loss: str = "mse"  # "mse" for ratings, "bce" for implicit feedback
    # explicit only: the network predicts the residual of the bias model (mu + b_i from meta-train, b_u from the
    # support set, both shrunk as in ``bias``), which measures how much of MeLU's gap to ``bias`` is structural
    residual: bool = False

    def __post_init__(self):
        from metarec.checks import check

        check(self, "learner", pos_int=("emb_dim",), pos_list=("hidden",),
              choices={"train_mode": ("maml", "pooled"), "loss": ("mse", "bce")})
        if self.residual and self.loss != "mse":
            from metarec.errors import MetarecError

            raise MetarecError("learner.residual anchors the network on the bias model: explicit view only")


class FeatureMLP(Learner):
    name = "melu"

    def __init__(self, ctx: Context, config: FeatureMLPConfig):
        super().__init__(ctx, config)
        self.loss_kind = config.loss
        self.encoder = FeatureEncoder(ctx, config.emb_dim, config.item_id)
        self.head = mlp(self.encoder.user_dim + self.encoder.item_dim, config.hidden)
        inner = config.inner
        if inner.learn_lr == "scalar":
            self.inner_lr = nn.Parameter(torch.tensor(float(inner.lr)))
        elif inner.learn_lr == "per_param":
            self.inner_lr = nn.ParameterDict(
                {k.replace(".", "_"): nn.Parameter(torch.full_like(v, inner.lr))
                 for k, v in self.head.named_parameters()})
        elif inner.learn_lr != "none":
            raise ValueError(f"unknown learn_lr {inner.learn_lr!r}")
        if config.residual:  # the bias model the network is anchored on (fitted by ``prefit``)
            self.register_buffer("base_mu", torch.zeros(()))
            self.register_buffer("base_item", torch.zeros(ctx.n_items))

    def prefit(self, train_inter) -> None:
        if self.config.residual:
            from metarec.learners.baselines import BiasConfig, item_biases

            mu, bi = item_biases(train_inter, self.ctx.n_items, BiasConfig().reg_item)
            self.base_mu.fill_(mu)
            self.base_item.copy_(bi)

    def _base(self, support: TaskBatch) -> tuple[Tensor, Tensor]:
        """The bias model's user offsets (B,) from the support set, and its item part mu + b_i (n_items,)."""
        from metarec.learners.baselines import BiasConfig, user_offsets

        return user_offsets(support, self.base_mu, self.base_item, BiasConfig().reg_user), self.base_mu + self.base_item

    def _residualise(self, batch: TaskBatch) -> tuple[TaskBatch, Tensor, Tensor]:
        """The batch with the bias model's prediction subtracted from every support and query rating."""
        bu, item = self._base(batch)
        return (replace(batch, s_rating=batch.s_rating - bu[:, None] - item[batch.s_item],
                        q_rating=batch.q_rating - bu[:, None] - item[batch.q_item]), bu, item)

    # --- the functional pieces -------------------------------------------------------------------------
    def fast_init(self) -> dict[str, Tensor]:
        return dict(self.head.named_parameters())

    def _lr(self):
        if self.config.inner.learn_lr == "scalar":
            return self.inner_lr
        if self.config.inner.learn_lr == "per_param":
            return {k: self.inner_lr[k.replace(".", "_")] for k, _ in self.head.named_parameters()}
        return self.config.inner.lr

    def _head(self, fast: dict[str, Tensor], x: Tensor) -> Tensor:
        """x: (B, N, D) -> (B, N) with task b using its adapted head (either representation)."""
        if "C" in fast:
            return self._apply_lowrank(fast, x)
        return batched_call(self.head, fast, x).squeeze(-1)

    def _adapt_fast(self, x_s: Tensor, batch: TaskBatch, steps: int, first_order: bool) -> dict[str, Tensor]:
        """Adapt the head of every task of ``batch`` on its support set, whose features are x_s (B, S, D)."""
        if self.config.fast_path and self.config.inner.learn_lr != "per_param" and steps > 0 and self.config.hidden:
            if first_order:
                return self._adapt_lowrank_fo(x_s, batch, steps)
            return self._adapt_lowrank(x_s, batch, steps)
        fast = expand_fast(self.fast_init(), len(batch))

        def support_loss(f):
            return masked_task_loss(self._head(f, x_s), batch.s_rating, batch.s_mask, self.loss_kind)  # (B,)

        return inner_loop(fast, support_loss, steps, self._lr(), first_order)

    # --- the fast path ----------------------------------------------------------------------------------
    def _later(self) -> list[str]:
        """Names of the head's parameters after its first layer ("2.weight", "2.bias", ...)."""
        return [k for k, _ in self.head.named_parameters()][2:]

    def _adapt_lowrank(self, x_s: Tensor, batch: TaskBatch, steps: int) -> dict[str, Tensor]:
        """The same MAML inner loop as ``inner_loop`` over the head, without per-task copies of layer 1 and
        with the support gradients written out by hand (``_support_grads``) instead of ``autograd.grad``.

        The first layer's input (the support embeddings x_s) is fixed during the inner loop, so each SGD
        step changes its weights by ``-lr * delta^T x_s``, delta (B, S, H) being the gradient of the support
        loss with respect to the layer's pre-activations. After any number of steps the task's weights are
        ``W0 - C^T x_s`` with ``C`` the lr-scaled sum of those deltas, and the layer's output on inputs x is
        ``x W0^T + b0 - (x x_s^T) C``: one shared matmul plus small (S x S) per-task products instead of
        B copies of the (H x D) matrix. With inputs ``[x, 1]`` the bias update is part of the same term
        (``gram + 1`` in the loop, ``b0 - sum(C)`` at the end). The later layers keep per-task weights
        (B, out, in) in batched matmuls. Every operation is differentiable, so the query loss
        back-propagates through the updates: true second order (tests: a hand-unrolled loop, finite
        differences, the generic vmap engine).
        """
        lr = self._lr()
        later = self._later()
        w0, b0 = self.head[0].weight, self.head[0].bias  # (H, D), (H,)
        state = expand_fast({k: v for k, v in self.head.named_parameters() if k in later}, x_s.shape[0])
        z0_init = x_s @ w0.T + b0  # (B, S, H) shared first-layer projection
        gram1 = torch.bmm(x_s, x_s.transpose(1, 2)) + 1.0  # (B, S, S)
        scale, neg_target = self._support_scale(batch, z0_init.dtype)
        c = z0_init.new_zeros(z0_init.shape)  # (B, S, H)
        for _ in range(steps):
            z0 = torch.baddbmm(z0_init, gram1, c, alpha=-1.0)  # (B, S, H)
            grads, delta = self._support_grads(state, z0, scale, neg_target)
            c = sgd_step(c, delta, -lr)
            state = {k: sgd_step(state[k], grads[k], lr) for k in later}
        state["0.bias"] = b0 - c.sum(1)  # (B, H)
        return {**state, "C": c, "xs": x_s}

    def _support_scale(self, batch: TaskBatch, dtype) -> tuple[Tensor, Tensor]:
        """(B, S) factors with d(task loss)/d(pred) = pred' * scale + neg_target (pred' = sigmoid for bce)."""
        m = batch.s_mask.to(dtype)
        scale = m / m.sum(-1, keepdim=True).clamp_min(1.0)  # d(task mean)/d(entry)
        if self.loss_kind == "mse":
            scale = 2.0 * scale  # d (pred - y)^2 / d pred = 2 (pred - y)
        elif self.loss_kind != "bce":  # bce with logits: d/d pred = sigmoid(pred) - y
            raise ValueError(f"unknown loss {self.loss_kind!r}")
        return scale, -batch.s_rating.to(dtype) * scale

    def _support_grads(self, w: dict[str, Tensor], z0: Tensor, scale: Tensor, neg_target: Tensor):
        """Forward and hand-written backward of the masked support loss through the layers after the first.

        w: per-task weights of those layers, name -> (B, ...); z0 (B, S, H): first-layer pre-activations.
        Returns (gradients of the summed task losses by name, delta = gradient w.r.t. z0 (B, S, H)). Only
        differentiable out-of-place ops, so it serves the second-order loop (under autograd) and the
        first-order one (under no_grad) alike.
        """
        later = self._later()
        hidden, (w_out, b_out) = later[:-2], later[-2:]  # per-task hidden layers; the output unit
        z, hs = [z0], []
        for j in range(0, len(hidden), 2):
            hs.append(torch.relu(z[-1]))
            z.append(torch.baddbmm(w[hidden[j + 1]][:, None, :], hs[-1], w[hidden[j]].transpose(1, 2)))
        hs.append(torch.relu(z[-1]))
        pred = (hs[-1] * w[w_out]).sum(-1) + w[b_out]  # (B, S)
        out = pred if self.loss_kind == "mse" else torch.sigmoid(pred)
        d = torch.addcmul(neg_target, out, scale)  # (B, S) d loss / d pred
        grads = {w_out: torch.bmm(d[:, None, :], hs[-1]), b_out: d.sum(1, keepdim=True)}  # (B, 1, in), (B, 1)
        dz = torch.ops.aten.threshold_backward(d[..., None] * w[w_out], z[-1], 0)  # (B, S, in): relu'
        for j in range(len(hidden) - 2, -1, -2):
            wk, bk = hidden[j], hidden[j + 1]
            grads[wk] = torch.bmm(dz.transpose(1, 2), hs[j // 2])  # (B, out, in)
            grads[bk] = dz.sum(1)  # (B, out)
            dz = torch.ops.aten.threshold_backward(torch.bmm(dz, w[wk]), z[j // 2], 0)  # (B, S, in)
        return grads, dz

    def _adapt_lowrank_fo(self, x_s: Tensor, batch: TaskBatch, steps: int) -> dict[str, Tensor]:
        """First-order ``_adapt_lowrank``: the loop runs under ``no_grad`` with in-place accumulation.

        In first order (FOMAML) every inner gradient is a constant of the outer graph, so after K steps the
        fast weights are ``w0 - lr * G`` with ``G`` the detached sum of the K support gradients (and
        ``C = lr * sum(delta)``, x_s detached in it as FOMAML does). The outer graph only sees
        ``w0 - lr * G``, through which the query loss reaches the initialisation and a learnable scalar
        rate (MetaCS) exactly as with autograd. Tests compare it with the autograd engine and a
        hand-unrolled loop.
        """
        lr = self._lr()
        lr_value = float(lr.detach()) if isinstance(lr, Tensor) else float(lr)
        later = self._later()
        params = dict(self.head.named_parameters())
        B = x_s.shape[0]
        with torch.no_grad():
            xs = x_s.detach()  # (B, S, D)
            z0_init = xs @ params["0.weight"].T + params["0.bias"]  # (B, S, H)
            gram1 = torch.bmm(xs, xs.transpose(1, 2)) + 1.0  # (B, S, S)
            scale, neg_target = self._support_scale(batch, z0_init.dtype)
            w = {k: params[k].detach().expand(B, *params[k].shape).clone() for k in later}  # running weights
            total = {k: torch.zeros_like(v) for k, v in w.items()}  # summed gradients G
            delta_sum = torch.zeros_like(z0_init)  # (B, S, H)
            for _ in range(steps):
                z0 = torch.baddbmm(z0_init, gram1, delta_sum, alpha=-lr_value)  # (B, S, H)
                grads, delta = self._support_grads(w, z0, scale, neg_target)
                delta_sum += delta
                g = [grads[k] for k in later]
                torch._foreach_add_([total[k] for k in later], g)
                torch._foreach_add_([w[k] for k in later], g, alpha=-lr_value)
        state = {k: sgd_step(params[k], total[k], lr) for k in later}  # w0 - lr * G, broadcast to (B, ...)
        state["0.bias"] = sgd_step(params["0.bias"], delta_sum.sum(1), lr)  # (B, H)
        return {**state, "C": delta_sum * lr, "xs": xs}

    def _rest(self, state: dict[str, Tensor], z0: Tensor) -> Tensor:
        """Layers after the first, with per-task weights: z0 (B, N, H) pre-activations -> (B, N)."""
        h = z0
        later = self._later()
        for j in range(0, len(later) - 2, 2):
            w, b = state[later[j]], state[later[j + 1]]  # (B, out, in), (B, out)
            h = torch.baddbmm(b[:, None, :], torch.relu(h), w.transpose(1, 2))
        w, b = state[later[-2]], state[later[-1]]  # (B, 1, in), (B, 1): the output unit
        return (torch.relu(h) * w).sum(-1) + b  # (B, N); cheaper than a bmm with one output column

    def _apply_lowrank(self, state: dict[str, Tensor], x: Tensor) -> Tensor:
        """x (B, N, D) -> (B, N) through the adapted head of ``_adapt_lowrank``."""
        z0 = x @ self.head[0].weight.T + state["0.bias"][:, None, :] \
            - torch.bmm(torch.bmm(x, state["xs"].transpose(1, 2)), state["C"])  # (B, N, H)
        return self._rest(state, z0)

    # --- the learner verbs ----------------------------------------------------------------------------
    def loss_weight(self, batch: TaskBatch) -> float:
        """What ``meta_loss`` averages over: tasks, or (pooled) interactions (a data-parallel shard's weight)."""
        if self.config.train_mode == "pooled":
            return float(batch.s_mask.sum() + batch.q_mask.sum())
        return float(len(batch))

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        if self.config.residual:
            batch = self._residualise(batch)[0]
        if self.config.train_mode == "pooled":
            users = torch.cat([batch.s_user, batch.q_user], 1)  # (B, S+Q)
            x = self.encoder.pair(users, torch.cat([batch.s_item, batch.q_item], 1))
            pred = self.head(x).squeeze(-1)  # (B, S+Q)
            target = torch.cat([batch.s_rating, batch.q_rating], 1)
            mask = torch.cat([batch.s_mask, batch.q_mask], 1)
            m = mask.to(pred.dtype)
            per = masked_task_loss(pred, target, mask, self.loss_kind) * m.sum(1)
            return per.sum() / m.sum()  # mean over interactions, like minibatch SGD on pooled data
        inner = self.config.inner
        if inner.first_order:  # the support features get no gradient in first order: no graph for them
            with torch.no_grad():
                x_s = self.encoder.pair(batch.s_user, batch.s_item)  # (B, S, D)
            x_q = self.encoder.pair(batch.q_user, batch.q_item)  # (B, Q, D)
        else:
            S = batch.s_user.shape[1]
            users, items = torch.cat([batch.s_user, batch.q_user], 1), torch.cat([batch.s_item, batch.q_item], 1)
            x = self.encoder.pair(users, items)  # (B, S + Q, D)
            x_s, x_q = x[:, :S], x[:, S:]  # (B, S, D), (B, Q, D): one encoder pass for both sets
        fast = self._adapt_fast(x_s, batch, inner.steps, inner.first_order)
        return masked_task_loss(self._head(fast, x_q), batch.q_rating, batch.q_mask, self.loss_kind).mean()

    def adapt(self, support: TaskBatch) -> Adapted:
        if self.config.residual:
            support, bu, item = self._residualise(support)
            net = self._adapt_net(support)
            return Adapted(net.owners, lambda users, items: net.score(users, items) + bu[:, None] + item[items],
                           lambda items: net.score_items(items) + bu[:, None] + item[items][None, :])
        return self._adapt_net(support)

    def _adapt_net(self, support: TaskBatch) -> Adapted:
        inner = self.config.inner
        x_s = self.encoder.pair(support.s_user, support.s_item)  # (B, S, D)
        fast = self._adapt_fast(x_s, support, inner.steps, first_order=True)
        fast = {k: v.detach() for k, v in fast.items()}
        enc = self.encoder
        owners = support.owner

        def score(users: Tensor, items: Tensor) -> Tensor:
            return self._head(fast, enc.pair(users, items))

        def score_items(items: Tensor) -> Tensor:
            B, N = len(owners), len(items)
            if "C" in fast:  # the low-rank state: the first layer split into its user and item parts
                return self._score_items_lowrank(fast, enc.user(owners), enc.item(items))
            u = enc.user(owners)[:, None, :].expand(B, N, enc.user_dim)  # (B, N, Du)
            i = enc.item(items)[None].expand(B, N, enc.item_dim)  # (B, N, Di)
            return self._head(fast, torch.cat([u, i], -1))

        return Adapted(owners, score, score_items)

    def _score_items_lowrank(self, state: dict[str, Tensor], u: Tensor, i: Tensor,
                             budget: int = 1 << 17) -> Tensor:
        """Every task's owner against every item through the adapted heads of ``_adapt_lowrank``: u (B, Du)
        user features, i (N, Di) item features -> (B, N). The same function as ``_apply_lowrank`` on the
        concatenated pairs, without building them: the first layer's input is ``[u_b, i_n]``, so its shared
        part ``u_b Wu^T + i_n Wi^T`` is a (B, H) and an (N, H) product (the item side computed once for every
        task) and the low-rank correction ``([u_b, i_n] xs_b^T) C_b`` splits the same way; the per-task
        (b, N, H) activations of the later layers are computed a few tasks at a time (``budget`` floats), so
        that a batch of newcomers costs no more per newcomer than one alone."""
        du = u.shape[-1]
        w0 = self.head[0].weight  # (H, Du + Di)
        zu = u @ w0[:, :du].T + state["0.bias"]  # (B, H)
        zi = i @ w0[:, du:].T  # (N, H)
        xs, c = state["xs"], state["C"]  # (B, S, D), (B, S, H)
        ku = torch.bmm(xs[..., :du], u[:, :, None])  # (B, S, 1): u_b . xs_u[b, s]
        rest = {n: v for n, v in state.items() if n not in ("xs", "C")}

        def score(t: slice) -> Tensor:
            k = torch.matmul(i, xs[t, :, du:].transpose(1, 2)) + ku[t].transpose(1, 2)  # (b, N, S)
            z0 = zu[t, None, :] + zi[None] - torch.bmm(k, c[t])  # (b, N, H)
            return self._rest({n: v[t] for n, v in rest.items()}, z0)

        return by_task_chunks(score, u.shape[0], i.shape[0] * zi.shape[1], budget)
