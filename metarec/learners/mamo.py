"""MAMO: Memory-Augmented Meta-Optimization for cold-start recommendation (Dong et al., KDD'20; survey 5.1,
eqs. 8-11).

The recommendation model: the task owner's profile p_u (the concatenated embeddings of the user fields, from
:class:`FeatureEncoder`) and the item fields go through a user-embedding MLP (theta_u) and an item-embedding
MLP (theta_i); their concatenation goes through the decision layers theta_r, whose first layer is the
*memory layer* (a 2d x 2d matrix). Every part is adapted per task in a MAML local update; what MAMO adds is
a task-specific *initialisation*, read from two memories:

- feature-specific memory: the profile memory M_P (K, |p_u|) and the fast-weight memory M_W (M_U in the
  paper; K copies of the shape of theta_u). The attention of the profile over the profile memory
  ``a_u = softmax_k(cos(p_u, M_P[k]))`` (eq. 9) reads the personalised bias ``b_u = a_u^T M_W`` (eq. 8),
  and the user-embedding MLP starts from ``theta_u = phi_u - tau * b_u``;
- task-specific memory: the preference memory cube M_UI (K, 2d, 2d) gives the preference-specific weights of
  the memory layer, ``M_uI = a_u^T M_UI``: that layer's weights come from the memory only (no global
  initialisation), as in the paper; its bias is a global parameter.

The local update is ``steps`` full-batch SGD steps on the support loss over all per-task parameters
(theta_u, theta_i, theta_r, the memory layer included), vectorised over the meta-batch with per-task weights
(B, out, in) in batched matmuls: the engine's ``inner_loop`` over them (one ``autograd.grad`` of the summed
task losses per step, ``masked_task_loss``, SGD; an ``on_step`` hook keeps the first step's user gradients for
the memory); second order by default (the paper's MAML formulation), ``inner.first_order``
for FOMAML. The global parameters (phi_u, phi_i, phi_r and the field embeddings) learn in the outer loop
``fit()`` from the query loss; the attention carries the gradient back to the field embeddings.

Memory writes (outer loop, after each meta-batch's local updates, only in training mode; ``adapt`` never
writes, so evaluation is read-only and repeatable). With a_b, p_b the attention and profile of task b of a
meta-batch of B tasks (all detached):

- ``M_P  <- alpha * mean_b(a_b p_b^T)        + (1 - alpha) * M_P``   (eq. 10)
- ``M_W  <- beta  * mean_b(a_b (x) g_b)       + (1 - beta)  * M_W``   (eq. 11), g_b the gradient of task b's
  support loss with respect to theta_u at its personalised initialisation (the first local step);
- ``M_UI <- gamma * mean_b(a_b (x) M_uI,b')   + (1 - gamma) * M_UI``, M_uI,b' the memory layer's weights
  after task b's local update.

The memories are buffers: they are in ``state_dict`` (saved with the model, restored by ``load_learner``,
included in ``fit``'s checkpoints and model selection) and not touched by the optimiser. The writes are
deterministic given the order of the tasks (``fit`` seeds it).

Open choices (the paper or its released code leave them open or differ):
- the paper writes the memories after every user; here a meta-batch writes once, with the mean of its
  tasks' writes (the paper's rule applied to the batch-average task), so the update is vectorised;
- attention = softmax over the cosine similarities (eq. 9); the released code adds a K x K linear layer that
  it re-creates at random on every read, which we leave out;
- the rating is one output trained with MSE (or BCE for implicit feedback) instead of the code's softmax
  over the five rating values; the local update is full-batch SGD (the paper's equations) instead of the
  code's Adam over mini-batches of 5;
- M_W covers all of theta_u (weights and biases; the code keeps weights only); M_P ~ N(0, 1) and
  M_W ~ N(0, 0.05^2) as in the code; the M_UI slices start like ``nn.Linear`` weights
  (U(-1/sqrt(2d), 1/sqrt(2d))) instead of the code's N(0, 1), which scales the layer's outputs by ~sqrt(2d);
- activations LeakyReLU(0.1), two-layer embedding MLPs halving the width, no activation after the memory
  layer: as in the released code. Defaults (K=3, tau=0.01, alpha=0.5, beta=0.05, gamma=0.1, local lr 0.01,
  3 local steps, embedding 100) are the authors' released ``configs.py``; its global lr 0.05 (plain SGD on
  summed task gradients) is not a learner setting here: the outer loop is ``fit``'s Adam (``--train.lr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metarec.engine.inner import InnerConfig, inner_loop, masked_task_loss
from metarec.learners.base import Adapted, Context, Learner, by_task_chunks
from metarec.nets.features import FeatureEncoder
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class MAMOConfig:
    emb_dim: int = 100  # field embeddings and the user/item embedding size d (the code's embedding_dim)
    n_memory: int = 3  # K, the memory slots (n_k)
    tau: float = 0.01  # weight of the personalised bias: theta_u = phi_u - tau * b_u
    alpha: float = 0.5  # M_P update ratio
    beta: float = 0.05  # M_W update ratio
    gamma: float = 0.1  # M_UI update ratio
    leaky: float = 0.1  # LeakyReLU slope
    item_id: bool = False  # add an item-ID embedding to the item fields
    inner: InnerConfig = field(default_factory=lambda: InnerConfig(steps=3, lr=0.01, first_order=False))
    loss: str = "mse"  # "mse" for ratings, "bce" for implicit feedback

    def __post_init__(self):
        from metarec.checks import check

        check(self, "learner", pos_int=("emb_dim", "n_memory"), nonneg=("tau", "leaky"),
              frac=("alpha", "beta", "gamma"), choices={"loss": ("mse", "bce")})


USER_LAYERS = ("u0", "u1")
ITEM_LAYERS = ("i0", "i1")
RATING_LAYERS = ("r1", "out")


def _owner_rows(users: Tensor, mask: Tensor, owners: Tensor) -> bool:
    """Whether every real row of every task is its owner's (user tasks): the user tower then runs once per
    task on (B, 1, Du) instead of on every row; padded rows are masked out of every loss, so this is exact."""
    return bool(((users == owners[:, None]) | ~mask).all())


class MAMO(Learner):
    name = "mamo"

    def __init__(self, ctx: Context, config: MAMOConfig):
        super().__init__(ctx, config)
        if config.inner.learn_lr != "none":
            raise ValueError("MAMO's local learning rate is a fixed hyperparameter (inner.learn_lr='none')")
        self.loss_kind = config.loss
        d, K = config.emb_dim, config.n_memory
        self.encoder = FeatureEncoder(ctx, d, config.item_id)
        du, di = self.encoder.user_dim, self.encoder.item_dim
        self.layers = nn.ModuleDict({
            "u0": nn.Linear(du, max(1, du // 2)), "u1": nn.Linear(max(1, du // 2), d),
            "i0": nn.Linear(di, max(1, di // 2)), "i1": nn.Linear(max(1, di // 2), d),
            "r1": nn.Linear(2 * d, d), "out": nn.Linear(d, 1)})
        self.mem_bias = nn.Parameter(torch.zeros(2 * d))  # the memory layer's bias (global init)
        self.register_buffer("mem_profile", torch.randn(K, du))  # M_P
        self.user_names = [f"{n}.{p}" for n in USER_LAYERS for p in ("weight", "bias")]
        for name in self.user_names:  # M_W: one (K, *shape) buffer per parameter of theta_u
            shape = self._param(name).shape
            self.register_buffer(self._wbuf(name), 0.05 * torch.randn(K, *shape))
        bound = 1.0 / math.sqrt(2 * d)
        self.register_buffer("mem_pref", torch.empty(K, 2 * d, 2 * d).uniform_(-bound, bound))  # M_UI

    # --- parameters and memories ---------------------------------------------------------------------------
    def _param(self, name: str) -> Tensor:
        layer, kind = name.split(".")
        return getattr(self.layers[layer], kind)

    @staticmethod
    def _wbuf(name: str) -> str:
        return "mem_w_" + name.replace(".", "_")

    def read_memory(self, profile: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """profile p_u (B, Du) -> attention a (B, K), personalised bias b_u (name -> (B, *shape)) and the
        preference-specific memory-layer weights M_uI (B, 2d, 2d) (eqs. 8-9)."""
        sim = F.cosine_similarity(profile[:, None, :], self.mem_profile[None], dim=-1)  # (B, K)
        att = torch.softmax(sim, dim=-1)  # (B, K)
        B = profile.shape[0]
        bias = {}
        for name in self.user_names:
            mem = getattr(self, self._wbuf(name))  # (K, *shape)
            bias[name] = (att @ mem.flatten(1)).view(B, *mem.shape[1:])
        w_mem = (att @ self.mem_pref.flatten(1)).view(B, *self.mem_pref.shape[1:])  # (B, 2d, 2d)
        return att, bias, w_mem

    def _init_fast(self, profile: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The task-specific initialisation of every task's parameters: name -> (B, ...)."""
        att, bias, w_mem = self.read_memory(profile)
        B = profile.shape[0]
        fast = {}
        for layer in USER_LAYERS + ITEM_LAYERS + RATING_LAYERS:
            for kind in ("weight", "bias"):
                name = f"{layer}.{kind}"
                p = self._param(name)
                fast[name] = p - self.config.tau * bias[name] if name in bias else p.expand(B, *p.shape)
        fast["mem.weight"] = w_mem
        fast["mem.bias"] = self.mem_bias.expand(B, *self.mem_bias.shape)
        return att, fast

    @torch.no_grad()
    def write_memory(self, att: Tensor, profile: Tensor, user_grad: dict[str, Tensor] | None,
                     w_mem: Tensor) -> None:
        """The memory writes of one meta-batch (module docstring): att (B, K), profile (B, Du), user_grad
        name -> (B, *shape) (None: M_W is left as is), w_mem (B, 2d, 2d) the adapted memory-layer weights."""
        cfg = self.config
        B = att.shape[0]
        at = att.T / B  # (K, B): a mean over the tasks of the per-task outer products
        self.mem_profile = cfg.alpha * (at @ profile) + (1 - cfg.alpha) * self.mem_profile
        if user_grad is not None:
            for name in self.user_names:
                buf = self._wbuf(name)
                mem = getattr(self, buf)
                write = (at @ user_grad[name].flatten(1)).view(mem.shape)
                setattr(self, buf, cfg.beta * write + (1 - cfg.beta) * mem)
        write = (at @ w_mem.flatten(1)).view(self.mem_pref.shape)
        self.mem_pref = cfg.gamma * write + (1 - cfg.gamma) * self.mem_pref

    # --- the per-task network ------------------------------------------------------------------------------
    def _lin(self, f: dict[str, Tensor], name: str, x: Tensor) -> Tensor:
        """Task b's layer ``name`` on x[b]: x (B, N, in) or (N, in) shared by all tasks -> (B, N, out)."""
        return torch.matmul(x, f[name + ".weight"].transpose(1, 2)) + f[name + ".bias"][:, None, :]

    def _forward(self, f: dict[str, Tensor], xu: Tensor, xi: Tensor) -> Tensor:
        """Per-task predictions: xu (B, N or 1, Du) user fields, xi (B, N, Di) or (N, Di) item fields -> (B, N)."""
        act = self.config.leaky
        eu = F.leaky_relu(self._lin(f, "u1", F.leaky_relu(self._lin(f, "u0", xu), act)), act)  # (B, Nu, d)
        ei = F.leaky_relu(self._lin(f, "i1", F.leaky_relu(self._lin(f, "i0", xi), act)), act)  # (B, N, d)
        if eu.shape[1] != ei.shape[1]:
            eu = eu.expand(-1, ei.shape[1], -1)
        h = self._lin(f, "mem", torch.cat([eu, ei], -1))  # (B, N, 2d): the memory layer, no activation
        h = F.leaky_relu(self._lin(f, "r1", h), act)  # (B, N, d)
        return self._lin(f, "out", h).squeeze(-1)  # (B, N)

    def _local_update(self, fast: dict[str, Tensor], xu: Tensor, xi: Tensor, y: Tensor, mask: Tensor,
                      first_order: bool, want_user_grad: bool) -> tuple[dict[str, Tensor], dict | None]:
        """``inner.steps`` SGD steps on each task's support loss (xu (B, S, Du), xi (B, S, Di), y/mask (B, S)).
        Returns the adapted weights and, if asked, the first step's gradient w.r.t. theta_u (detached)."""
        cfg = self.config.inner
        kept: dict = {}

        def keep_user_grad(step, loss, grads):  # the first step's gradient w.r.t. theta_u (the memory's key)
            if step == 0 and want_user_grad:
                kept.update({k: grads[k].detach() for k in self.user_names})

        fast = inner_loop(fast, lambda f: masked_task_loss(self._forward(f, xu, xi), y, mask, self.loss_kind),
                          cfg.steps, cfg.lr, first_order, on_step=keep_user_grad)
        return fast, (kept or None) if want_user_grad else None

    # --- the learner verbs --------------------------------------------------------------------------------
    def meta_loss(self, batch: TaskBatch) -> Tensor:
        enc, S = self.encoder, batch.s_user.shape[1]
        users = torch.cat([batch.s_user, batch.q_user], 1)  # (B, S+Q)
        mask = torch.cat([batch.s_mask, batch.q_mask], 1)
        xi = enc.item(torch.cat([batch.s_item, batch.q_item], 1))  # (B, S+Q, Di)
        profile = enc.user(batch.owner)  # (B, Du)
        if _owner_rows(users, mask, batch.owner):  # user tasks: one user tower pass per task
            xu_s = xu_q = profile[:, None, :]  # (B, 1, Du)
        else:
            xu = enc.user(users)  # (B, S+Q, Du)
            xu_s, xu_q = xu[:, :S], xu[:, S:]
        att, fast = self._init_fast(profile)
        write = self.training
        fast, user_grad = self._local_update(fast, xu_s, xi[:, :S], batch.s_rating, batch.s_mask,
                                             self.config.inner.first_order, want_user_grad=write)
        pred = self._forward(fast, xu_q, xi[:, S:])  # (B, Q)
        loss = masked_task_loss(pred, batch.q_rating, batch.q_mask, self.loss_kind).mean()
        if write:
            self.write_memory(att.detach(), profile.detach(), user_grad, fast["mem.weight"].detach())
        return loss

    def adapt(self, support: TaskBatch) -> Adapted:
        enc, owners = self.encoder, support.owner
        profile = enc.user(owners)  # (B, Du)
        _, fast = self._init_fast(profile)
        own = _owner_rows(support.s_user, support.s_mask, owners)
        xu_s = profile[:, None, :] if own else enc.user(support.s_user)  # (B, 1 or S, Du)
        fast, _ = self._local_update(fast, xu_s, enc.item(support.s_item), support.s_rating, support.s_mask,
                                     first_order=True, want_user_grad=False)
        fast = {k: v.detach() for k, v in fast.items()}
        profile = profile.detach()

        def score(users: Tensor, items: Tensor) -> Tensor:
            xu = profile[:, None, :] if _owner_rows(users, torch.ones_like(users, dtype=torch.bool), owners) \
                else enc.user(users)
            return self._forward(fast, xu, enc.item(items))

        def score_items(items: Tensor) -> Tensor:
            xi = enc.item(items)  # (N, Di) shared by every task
            width = fast["mem.weight"].shape[1]  # the widest per-item activation (2d)
            return by_task_chunks(lambda t: self._forward({k: v[t] for k, v in fast.items()}, profile[t, None, :],
                                                          xi), len(owners), items.shape[0] * width)  # (B, N)

        return Adapted(owners, score, score_items)
