"""s²Meta: the scenario-specific sequential meta learner (Du et al., KDD'19, section 4, Algorithm 1).

Recommender (4.1): fixed pretrained user and item embeddings (:mod:`metarec.nets.mf`), concatenated and mapped
by three ReLU layers, each half as wide as the one before (128 -> 64 -> 32 -> 16 for d = 64, A.2), then a
linear output ``f = w^T z`` (eq. 4; no output bias). ``arch="mapping"`` is the mapping module of 5.4: two
towers (d -> d/2 -> d/4 -> d/8, ReLU between, linear last) map the user and the item embedding separately
and the score is their dot product. Loss: hinge with margin 1 on (u, i, i⁻) triples (eq. 2, 3, 5).

Meta learner M (4.2), parameters omega = {omega_R, omega_u, omega_s}:
- omega_R: the shared initial recommender parameters theta^(0) (4.2.1);
- update controller omega_u (4.2.2, eq. 7, 8): for every parameter tensor of the recommender (a parameter
  group) one LSTM cell (hidden 16) applied coordinate-wise, reading the eq.-12-preprocessed gradient,
  loss and parameter value (6 inputs), and issuing the input gate alpha and the forget gate beta:
  ``theta^(t) = beta * theta^(t-1) - alpha * grad``;
- stop controller omega_s (4.2.3, eq. 9): an LSTM cell (hidden 18) on the preprocessed loss and gradient
  L2 norm (4 inputs) giving the stop probability p^(t); the process stops at step t with probability p^(t).

Training (4.2.4, Algorithm 1), vectorised over the B scenarios of a meta-batch (per-task parameters are
(B, ...) tensors, the coordinate-wise LSTMs run on (B * numel, .) rows; no per-task module copies):
- higher-order terms ignored as in the paper: every inner gradient (and loss) is computed on detached
  parameters, so the meta-gradient of the test loss reaches omega_R and omega_u through the update rule
  (the gates, and the parameter input of the LSTMs) only;
- omega_s by REINFORCE with the return of eq. 10, ``Q^(t) = L_test(theta^(t-1)) - L_test(theta^(T))``, and
  the update of eq. 11 on ``ln(1 - p^(t))`` of every step at which learning went on (stopping at T+1 has
  return 0). Algorithm 1 (line 20) writes ``L_test(theta^(j))`` instead of ``theta^(j-1)``; we follow
  eq. 10, which credits an action with its own reward. The surrogate ``-sum_t Q^(t) ln(1 - p^(t))`` is added
  to the test loss (weight ``stop_weight``), so one optimiser step does lines 17 and 22.

Open choices (the paper is silent): the inner batch B^(t) is ``inner_batch`` D_train positives, each with
one of its pre-sampled negatives drawn afresh every step (default: all 64, so only the negatives vary);
``max_steps`` (T_max) 40; L_test during meta-training is the hinge loss on ``query_sample`` random D_test
triples of the scenario (the same ones for every step of an episode); the gate heads start at an input
gate of 0.1 and a forget gate of 0.999 (0.1 rather than 0.01 chosen on meta-valid scenarios), the stop
head at p = sigmoid(-3) (about 20 expected steps), so that early meta-training does not stop after one
step; the outer optimiser is the library's Adam, lr 3e-3 chosen on meta-valid (the paper: SGD, lr 1e-4,
weight decay 1e-5). At evaluation the stop decisions and batches are drawn from a generator seeded by
``seed`` and the scenario (``eval_stop="sample"``, the stochastic policy) or the process stops when
p > 0.5 (``"greedy"``). Ablations of Table 4: ``init="random"`` (RandInit: a fresh default initialisation
per scenario), ``update="sgd"`` (FixedLr: SGD with ``sgd_lr`` 0.01), ``stop="fixed"`` (FixedStep: exactly
``fixed_steps`` = 20 steps). Memory grows with steps x parameters x LSTM width (about 0.9 GB for 4 ml-100k
scenarios and 40 steps); ``checkpoint=True`` recomputes every LSTM step in the backward pass instead, which
roughly halves the peak and doubles the CPU time (measured in benchmarks/s2meta_bench.py).

Beyond the paper (issue 17): ``init="pooled"`` (PT + s²Meta) starts omega_R at FT's network, the same
recommender trained on the pooled meta-train scenarios by FT's recipe (a stage 0 the scenario runner trains,
:func:`metarec.scenario_run.pooled_start`), then meta-trains omega_R and the controllers from there; the start
(with the untrained controllers) competes in the model selection as epoch 0. On ml-1m FT's pooled network was
the better starting point than the meta-trained omega_R (docs/results/s2meta/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from metarec.engine.inner import inner_loop
from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context, Learner
from metarec.scenarios import split_triples
from metarec.tasks import TaskBatch

ARCHS = ("interaction", "mapping")


@dataclass(frozen=True)
class S2MetaConfig:
    emb_dim: int = 64
    arch: str = "interaction"  # "interaction" (4.1) or "mapping" (5.4)
    margin: float = 1.0
    init: str = "learned"  # "learned" (omega_R), "random" (RandInit) or "pooled" (omega_R starts at FT's network)
    update: str = "lstm"  # "lstm" (eq. 7, 8) or "sgd" (FixedLr)
    sgd_lr: float = 0.01
    stop: str = "learned"  # "learned" (eq. 9-11) or "fixed" (FixedStep)
    fixed_steps: int = 20
    max_steps: int = 40  # T_max
    update_hidden: int = 16
    stop_hidden: int = 18
    p: float = 10.0  # eq. 12
    inner_batch: int = 64
    query_sample: int = 512
    stop_weight: float = 1.0
    stop_bias: float = -3.0
    input_gate: float = 0.1  # initial input gate (selected on meta-valid: 0.01 vs 0.1, see docs/results/s2meta)
    forget_gate: float = 0.999
    eval_stop: str = "sample"  # "sample" or "greedy"
    checkpoint: bool = False  # recompute each LSTM step in the backward pass (less memory, 2x the CPU time)
    seed: int = 0

    def __post_init__(self):
        for f, ok in (("arch", ARCHS), ("init", ("learned", "random", "pooled")), ("update", ("lstm", "sgd")),
                      ("stop", ("learned", "fixed")), ("eval_stop", ("sample", "greedy"))):
            if getattr(self, f) not in ok:
                raise MetarecError(f"s2meta: unknown {f} {getattr(self, f)!r}: choose one of {', '.join(ok)}")
        if self.emb_dim % 8 or self.max_steps < 1 or self.fixed_steps < 1 or self.inner_batch < 1:
            raise MetarecError("s2meta: emb_dim must be a multiple of 8; max_steps, fixed_steps, inner_batch >= 1")


# ----------------------------------------------------------------------------------------- recommender


def recommender_shapes(arch: str, d: int) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the recommender (the groups of the update controller)."""
    shapes: dict[str, tuple[int, ...]] = {}
    if arch == "interaction":
        w = [2 * d, d, d // 2, d // 4]  # input, then three hidden layers each half the previous
        for j in range(3):
            shapes[f"h{j}.weight"], shapes[f"h{j}.bias"] = (w[j + 1], w[j]), (w[j + 1],)
        shapes["out.weight"] = (1, w[3])
    else:
        w = [d, d // 2, d // 4, d // 8]
        for side in ("u", "i"):
            for j in range(3):
                shapes[f"{side}{j}.weight"], shapes[f"{side}{j}.bias"] = (w[j + 1], w[j]), (w[j + 1],)
    return shapes


def default_init(shapes: dict[str, tuple[int, ...]], batch: int, generator: torch.Generator | None = None,
                 ) -> dict[str, Tensor]:
    """nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, (B, ...)."""
    out = {}
    for k, s in shapes.items():
        fan_in = s[1] if len(s) == 2 else shapes[k.replace("bias", "weight")][1]
        bound = 1.0 / math.sqrt(fan_in)
        out[k] = (torch.rand(batch, *s, generator=generator) * 2 - 1) * bound
    return out


def _layers(theta: dict[str, Tensor], x: Tensor, prefix: str, last_relu: bool) -> Tensor:
    """Three per-task linear layers: x (B, N, in) -> (B, N, out)."""
    for j in range(3):
        w, b = theta[f"{prefix}{j}.weight"], theta[f"{prefix}{j}.bias"]  # (B, out, in), (B, out)
        x = torch.baddbmm(b[:, None, :], x, w.transpose(1, 2))
        if j < 2 or last_relu:
            x = torch.relu(x)
    return x


def recommend(arch: str, theta: dict[str, Tensor], eu: Tensor, ei: Tensor) -> Tensor:
    """Scores of pairs with per-task parameters: eu, ei (B, N, d) -> (B, N)."""
    if arch == "interaction":
        z = _layers(theta, torch.cat([eu, ei], -1), "h", last_relu=True)  # (B, N, d/4)
        return (z * theta["out.weight"]).sum(-1)  # (B, N); out.weight (B, 1, d/4)
    return (_layers(theta, eu, "u", False) * _layers(theta, ei, "i", False)).sum(-1)


def recommend_grid(arch: str, theta: dict[str, Tensor], eu: Tensor, ei: Tensor, budget: int = 1 << 18) -> Tensor:
    """Scores of every user against every item with per-task parameters: eu (B, U, d), ei (B, N, d) -> (B, U, N);
    equal to ``recommend`` on the flattened grid. The interaction module's first layer splits into a user part
    and an item part computed once each (W [eu; ei] = W_u eu + W_i ei), the rest runs on chunks of users of at
    most ``budget`` hidden activations (small enough to stay in cache: 2x faster than 64 MB chunks); the mapping
    module is two towers and a batched product."""
    if arch != "interaction":
        return torch.bmm(_layers(theta, eu, "u", False), _layers(theta, ei, "i", False).transpose(1, 2))
    d = eu.shape[-1]
    w0, b0 = theta["h0.weight"], theta["h0.bias"]  # (B, H, 2d), (B, H)
    a = torch.bmm(eu, w0[:, :, :d].transpose(1, 2))  # (B, U, H) user part
    c = torch.baddbmm(b0[:, None, :], ei, w0[:, :, d:].transpose(1, 2))  # (B, N, H) item part + bias
    B, U, H = a.shape
    N = c.shape[1]
    step = max(1, budget // max(1, B * N * H))
    out = []
    for lo in range(0, U, step):
        z = torch.relu(a[:, lo:lo + step, None, :] + c[:, None, :, :]).reshape(B, -1, H)  # (B, u*N, H)
        for j in (1, 2):
            w, b = theta[f"h{j}.weight"], theta[f"h{j}.bias"]
            z = torch.relu(torch.baddbmm(b[:, None, :], z, w.transpose(1, 2)))
        out.append((z * theta["out.weight"]).sum(-1).reshape(B, -1, N))  # (B, u, N)
    return torch.cat(out, 1)


def pair_hinge(arch: str, theta: dict[str, Tensor], user_emb: Tensor, item_emb: Tensor, users: Tensor, pos: Tensor,
               neg: Tensor, mask: Tensor, margin: float = 1.0) -> Tensor:
    """(B,) mean hinge loss of eq. 3 over the masked triples (u, i, i⁻); users, pos, neg, mask (B, N)."""
    N = users.shape[1]
    uu = user_emb[torch.cat([users, users], 1)]  # (B, 2N, d)
    f = recommend(arch, theta, uu, item_emb[torch.cat([pos, neg], 1)])  # (B, 2N)
    loss = torch.relu(margin - f[:, :N] + f[:, N:])  # (B, N)
    m = mask.to(loss.dtype)
    return (loss * m).sum(1) / m.sum(1).clamp_min(1.0)


def preprocess(x: Tensor, p: float) -> Tensor:
    """Eq. 12 (Andrychowicz et al.): x -> (log|x| / p, sgn x) if |x| >= e^-p else (-1, e^p x); (...,) -> (..., 2)."""
    a = x.abs()
    big = a >= math.exp(-p)
    first = torch.where(big, torch.log(a.clamp_min(math.exp(-p))) / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([first, second], -1)


# ----------------------------------------------------------------------------------------- controllers


class UpdateController(nn.Module):
    """One coordinate-wise LSTM cell and gate head per parameter group (eq. 8)."""

    def __init__(self, groups: list[str], hidden: int, p: float, input_gate: float, forget_gate: float):
        super().__init__()
        self.p = p
        self.key = {g: g.replace(".", "_") for g in groups}
        self.cells = nn.ModuleDict({self.key[g]: nn.LSTMCell(6, hidden) for g in groups})
        self.heads = nn.ModuleDict({self.key[g]: nn.Linear(hidden, 2) for g in groups})  # (input, forget) logits
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.01)
            with torch.no_grad():
                head.bias.copy_(torch.tensor([_logit(input_gate), _logit(forget_gate)]))

    def step(self, group: str, theta: Tensor, grad: Tensor, loss_in: Tensor, h: Tensor, c: Tensor
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """theta, grad (B, *s); loss_in (B, 2); h, c (B * n, H). Returns the updated theta (B, *s), h, c and the
        gates alpha, beta (B, n)."""
        B = theta.shape[0]
        n = theta[0].numel()
        x = torch.cat([preprocess(grad.reshape(B, n), self.p), loss_in[:, None, :].expand(B, n, 2),
                       preprocess(theta.reshape(B, n), self.p)], -1)  # (B, n, 6)
        h, c = self.cells[self.key[group]](x.reshape(B * n, 6), (h, c))  # (B * n, H)
        gates = torch.sigmoid(self.heads[self.key[group]](h)).reshape(B, n, 2)
        alpha, beta = gates[..., 0], gates[..., 1]  # (B, n)
        new = beta * theta.reshape(B, n) - alpha * grad.reshape(B, n)  # eq. 7
        return new.reshape(theta.shape), h, c, alpha, beta


class StopController(nn.Module):
    """The stop LSTM of eq. 9: preprocessed loss and gradient norm -> stop probability."""

    def __init__(self, hidden: int, p: float, bias: float):
        super().__init__()
        self.p = p
        self.cell = nn.LSTMCell(4, hidden)
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.head.bias.fill_(bias)

    def step(self, loss: Tensor, gnorm: Tensor, state) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = torch.cat([preprocess(loss, self.p), preprocess(gnorm, self.p)], -1)  # (B, 4)
        h, c = self.cell(x, state)  # (B, H)
        return torch.sigmoid(self.head(h)).squeeze(-1), (h, c)  # (B,)


def reinforce_surrogate(q_loss: list[Tensor], log_cont: list[Tensor]) -> Tensor:
    """(B,) ``-sum_t Q^(t) ln(1 - p^(t))``: its gradient is minus the REINFORCE update of eq. 11.

    ``q_loss[t]`` (B,) is L_test(theta^(t)) (the last entry is each task's final loss, carried forward after
    it stopped); ``log_cont[t]`` (B,) is ln(1 - p^(t+1)) where the task went on at step t+1, else 0. The
    return of the decision at step t+1 is Q^(t+1) = L_test(theta^(t)) - L_test(theta^(T)) (eq. 10).
    """
    final = q_loss[-1]  # (B,)
    ret = torch.stack([q - final for q in q_loss[:len(log_cont)]], 1)  # (B, T)
    return -(ret.detach() * torch.stack(log_cont, 1)).sum(1)


def _keep_stopped(cont: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for the tasks that go on (cont (B,) True), ``old`` for those that stopped."""
    if bool(cont.all()):
        return new
    return torch.where(cont.view(-1, *[1] * (new.dim() - 1)), new, old)


def _logit(q: float) -> float:
    return math.log(q / (1 - q))


# ------------------------------------------------------------------------------------------- learner


class ScenarioRecommender(Learner):
    """What s²Meta and the FT baseline share: the fixed pretrained user and item embeddings (buffers, set once
    by ``set_embeddings``), the recommender's parameter shapes, and scoring / hinge loss under per-task
    parameters theta. ``config`` needs ``emb_dim``, ``arch`` and ``margin``."""

    loss_kind = "hinge"

    def __init__(self, ctx: Context, config):
        super().__init__(ctx, config)
        d = config.emb_dim
        self.register_buffer("user_emb", torch.zeros(ctx.n_users, d))
        self.register_buffer("item_emb", torch.zeros(ctx.n_items, d))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.shapes = recommender_shapes(config.arch, d)

    def set_embeddings(self, users: Tensor, items: Tensor) -> None:
        """The pretrained (fixed) embedding matrices U (n_users, d) and I (n_items, d)."""
        if users.shape != self.user_emb.shape or items.shape != self.item_emb.shape:
            raise MetarecError(f"embeddings of shapes {tuple(users.shape)}, {tuple(items.shape)} do not fit "
                               f"{tuple(self.user_emb.shape)}, {tuple(self.item_emb.shape)}")
        self.user_emb.copy_(users)
        self.item_emb.copy_(items)
        self.ready.fill_(True)

    def _check_ready(self) -> None:
        if not bool(self.ready):
            raise MetarecError(f"{self.name} runs on scenario tasks with pretrained embeddings: use "
                               f"`metarec scenario train --learner {self.name}`")

    def score_pairs(self, theta: dict[str, Tensor], users: Tensor, items: Tensor) -> Tensor:
        """users, items (B, N) -> (B, N) under per-task parameters theta."""
        return recommend(self.config.arch, theta, self.user_emb[users], self.item_emb[items])

    def score_grid(self, theta: dict[str, Tensor], users: Tensor, items: Tensor) -> Tensor:
        """users (B, U), items (B, N) -> (B, U, N) under per-task parameters theta."""
        return recommend_grid(self.config.arch, theta, self.user_emb[users], self.item_emb[items])

    def _hinge(self, theta: dict[str, Tensor], users: Tensor, pos: Tensor, neg: Tensor, mask: Tensor) -> Tensor:
        return pair_hinge(self.config.arch, theta, self.user_emb, self.item_emb, users, pos, neg, mask,
                          self.config.margin)

    def adapted_from(self, theta: dict[str, Tensor], owners: Tensor) -> Adapted:
        """Scoring closed over B scenarios' (detached) parameters; scenario tasks have no owner to rank for."""
        theta = {k: v.detach() for k, v in theta.items()}

        def score(users: Tensor, items: Tensor) -> Tensor:
            return self.score_pairs(theta, users, items)

        def score_items(items: Tensor) -> Tensor:
            raise MetarecError("scenario tasks are owned by scenarios, not users: score (user, item) pairs")

        def score_grid(users: Tensor, items: Tensor) -> Tensor:
            return self.score_grid(theta, users, items)

        return Adapted(owners, score, score_items, score_grid)


class S2Meta(ScenarioRecommender):
    name = "s2meta"

    def __init__(self, ctx: Context, config: S2MetaConfig):
        super().__init__(ctx, config)
        if config.init != "random":
            init = default_init(self.shapes, 1)
            self.omega_r = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(v[0]) for k, v in init.items()})
        if config.update == "lstm":
            self.updater = UpdateController(list(self.shapes), config.update_hidden, config.p, config.input_gate,
                                            config.forget_gate)
        if config.stop == "learned":
            self.stopper = StopController(config.stop_hidden, config.p, config.stop_bias)

    @property
    def pooled_start(self) -> bool:  # type: ignore[override]
        """``init="pooled"``: omega_R starts at the FT network (a stage 0 trained on the pooled meta-train
        scenarios, FT's recipe) before meta-training, and that start competes in the model selection."""
        return self.config.init == "pooled"

    @property
    def select_start(self) -> bool:  # type: ignore[override]
        return self.pooled_start

    def set_start(self, params: dict[str, Tensor]) -> None:
        """omega_R := ``params`` (recommender parameter name -> tensor of its shape, e.g. FT's network)."""
        if set(params) != set(self.shapes):
            raise MetarecError(f"s2meta start: expected the parameters {sorted(self.shapes)}")
        with torch.no_grad():
            for k, v in params.items():
                self.omega_r[k.replace(".", "_")].copy_(v.reshape(self.shapes[k]))

    # --- pieces ------------------------------------------------------------------------------------------
    def _initial(self, B: int, gens: list[torch.Generator] | None) -> dict[str, Tensor]:
        if self.config.init != "random":
            return {k: self.omega_r[k.replace(".", "_")].unsqueeze(0).expand(B, *s) for k, s in self.shapes.items()}
        if gens is None:
            return default_init(self.shapes, B)
        per = [default_init(self.shapes, 1, g) for g in gens]
        return {k: torch.cat([p[k] for p in per]) for k in self.shapes}

    def _plan(self, B: int, P: int, K: int, T: int, owners: Tensor, train: bool):
        """Random numbers of a learning episode: batch picks (B, T, P), negative slots (B, T, P), stop draws
        (B, T), and per-task generators at evaluation (seeded by config.seed and the scenario)."""
        if train:
            return torch.rand(B, T, P), torch.randint(K, (B, T, P)), torch.rand(B, T), None
        gens = [torch.Generator().manual_seed(self.config.seed * 1_000_003 + int(o)) for o in owners]
        pick = torch.stack([torch.rand(T, P, generator=g) for g in gens])
        slot = torch.stack([torch.randint(K, (T, P), generator=g) for g in gens])
        draw = torch.stack([torch.rand(T, generator=g) for g in gens])
        return pick, slot, draw, gens

    def _update(self, theta, grads, loss, cont, states, gates_out):
        """One update of every parameter group; tasks with cont False keep their parameters."""
        cfg = self.config
        new = {}
        if cfg.update == "sgd":
            for k, v in theta.items():
                new[k] = _keep_stopped(cont, v - cfg.sgd_lr * grads[k], v)
            return new
        loss_in = preprocess(loss, cfg.p)  # (B, 2)
        for k, v in theta.items():
            B, n = v.shape[0], v[0].numel()
            if states.get(k) is None:
                z = v.new_zeros(B * n, cfg.update_hidden)
                states[k] = (z, z)
            h, c = states[k]
            if cfg.checkpoint and torch.is_grad_enabled():
                upd, h, c, alpha, beta = checkpoint(self.updater.step, k, v, grads[k], loss_in, h, c,
                                                    use_reentrant=False)
            else:
                upd, h, c, alpha, beta = self.updater.step(k, v, grads[k], loss_in, h, c)
            states[k] = (h, c)
            new[k] = _keep_stopped(cont, upd, v)
            if gates_out is not None:
                gates_out.setdefault(k, []).append((alpha.detach().mean(1), beta.detach().mean(1)))
        return new

    def _episode(self, batch: TaskBatch, train: bool, trace: bool = False) -> dict:
        """Algorithm 1 lines 4-16 on every scenario of ``batch`` at once."""
        cfg = self.config
        B = len(batch)
        n_pos = ((batch.s_rating > 0) & batch.s_mask).sum(1)  # (B,)
        n_neg = ((batch.s_rating <= 0) & batch.s_mask).sum(1)
        K = max(1, int((n_neg // n_pos.clamp_min(1)).min()))
        us, ip, ineg, ms = split_triples(batch.s_user, batch.s_item, batch.s_rating, batch.s_mask, K)
        P = us.shape[1]
        T = cfg.fixed_steps if cfg.stop == "fixed" else cfg.max_steps
        pick, slot, draw, gens = self._plan(B, P, K, T, batch.owner, train)
        theta = self._initial(B, gens)
        N = min(cfg.inner_batch, P)
        q = self._query_sample(batch) if train else None
        states: dict = {}
        log_cont: list[Tensor] = []
        q_loss: list[Tensor] = []
        rec: dict = {"loss": [], "stop_p": [], "gates": {}, "thetas": []} if trace else None
        if q is not None and cfg.stop == "learned":
            with torch.no_grad():
                q_loss.append(self._hinge(theta, *q))
        if trace:
            rec["thetas"].append({k: v.detach().clone() for k, v in theta.items()})
        # the episode is the engine's inner loop: the step's inner batch, the stop policy (on_step), the learned
        # update of every parameter group (rule) and the book-keeping after each step (after_step)
        outer_grad = torch.is_grad_enabled()
        run = {"alive": torch.ones(B, dtype=torch.bool), "steps": torch.zeros(B, dtype=torch.long),
               "stop_state": None, "cont": None, "loss": None}

        def support_loss(th: dict[str, Tensor], t: int) -> Tensor:  # (B,) the hinge of step t's inner batch
            neg_t = torch.gather(ineg, 2, slot[:, t, :, None]).squeeze(2)  # (B, P)
            if N < P:
                score = pick[:, t].masked_fill(~ms, -1.0)
                sel = score.topk(N, dim=1).indices  # (B, N)
                args = [torch.gather(x, 1, sel) for x in (us, ip, neg_t, ms)]
            else:
                args = [us, ip, neg_t, ms]
            return self._hinge(th, *args)

        def on_step(t: int, loss: Tensor, grads: dict[str, Tensor]) -> bool:
            loss = loss.detach()  # the controllers see the loss and the gradients as constants (no higher order)
            gnorm = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads.values()))  # (B,)
            with torch.set_grad_enabled(outer_grad):
                if cfg.stop == "learned":
                    p, run["stop_state"] = self.stopper.step(loss, gnorm, run["stop_state"])  # (B,)
                    stop = p.detach() > 0.5 if (not train and cfg.eval_stop == "greedy") else draw[:, t] < p.detach()
                else:
                    p, stop = torch.zeros(B), torch.zeros(B, dtype=torch.bool)
            cont = run["alive"] & ~stop
            if trace:
                rec["loss"].append(loss.clone())
                rec["stop_p"].append(p.detach().clone())
            if not bool(cont.any()):
                return True  # every scenario has stopped: no update
            if cfg.stop == "learned" and train:
                log_cont.append(torch.where(cont, torch.log1p(-p.clamp_max(1 - 1e-6)), torch.zeros_like(p)))
            run["cont"], run["loss"] = cont, loss
            return False

        def rule(t: int, th: dict[str, Tensor], grads: dict[str, Tensor], loss: Tensor) -> dict[str, Tensor]:
            with torch.set_grad_enabled(outer_grad):
                return self._update(th, grads, run["loss"], run["cont"], states, rec["gates"] if trace else None)

        def after_step(t: int, th: dict[str, Tensor]) -> None:
            cont = run["cont"]
            run["alive"], run["steps"] = cont, run["steps"] + cont.long()
            if q is not None and cfg.stop == "learned":
                with torch.no_grad():
                    q_loss.append(torch.where(cont, self._hinge(th, *q), q_loss[-1]))
            if trace:
                rec["thetas"].append({k: v.detach().clone() for k, v in th.items()})

        theta = inner_loop(theta, support_loss, T, 0.0, order="first" if outer_grad else "none", step_arg=True,
                           on_step=on_step, rule=rule, after_step=after_step)
        steps = run["steps"]
        out = {"theta": theta, "steps": steps, "log_cont": log_cont, "q_loss": q_loss, "query": q}
        if trace:
            out["trace"] = rec
        return out

    def _query_sample(self, batch: TaskBatch):
        """``query_sample`` random D_test triples per scenario: users, pos, neg, mask (B, Qs)."""
        n_pos = ((batch.q_rating > 0) & batch.q_mask).sum(1)
        n_neg = ((batch.q_rating <= 0) & batch.q_mask).sum(1)
        if bool((n_neg == 0).any()):
            raise MetarecError("s2meta meta-training needs queries with sampled negatives (meta-train scenarios)")
        Kq = max(1, int((n_neg // n_pos.clamp_min(1)).min()))
        uq, iq, jq, mq = split_triples(batch.q_user, batch.q_item, batch.q_rating, batch.q_mask, Kq)
        jq = torch.gather(jq, 2, torch.randint(Kq, (*jq.shape[:2], 1))).squeeze(2)  # one negative each
        Qs = min(self.config.query_sample, uq.shape[1])
        sel = torch.rand(mq.shape).masked_fill(~mq, -1.0).topk(Qs, dim=1).indices  # (B, Qs)
        return tuple(torch.gather(x, 1, sel) for x in (uq, iq, jq, mq))

    # --- the learner verbs -------------------------------------------------------------------------------
    def meta_loss(self, batch: TaskBatch) -> Tensor:
        self._check_ready()
        ep = self._episode(batch, train=True)
        test = self._hinge(ep["theta"], *ep["query"])  # (B,) L_test(theta^(T)), eq. 2
        loss = test.mean()
        if self.config.stop == "learned" and ep["log_cont"]:
            loss = loss + self.config.stop_weight * reinforce_surrogate(ep["q_loss"], ep["log_cont"]).mean()
        self.last_steps = ep["steps"].float().mean().item()
        return loss

    def adapt(self, support: TaskBatch) -> Adapted:
        self._check_ready()
        with torch.no_grad():
            ep = self._episode(support, train=False)
        self.last_steps = ep["steps"].float().mean().item()
        return self.adapted_from(ep["theta"], support.owner)

    def learning_trace(self, support: TaskBatch) -> dict:
        """Figure 2: per step, the training loss and stop probability (B,), the mean gates of every group,
        and the parameters theta^(0..T)."""
        self._check_ready()
        with torch.no_grad():
            ep = self._episode(support, train=False, trace=True)
        return {**ep["trace"], "steps": ep["steps"]}
