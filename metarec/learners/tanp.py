"""TaNP: Task-adaptive Neural Process for user cold-start recommendation (Lin et al., WWW'21; survey 5.2,
eqs. 19-20).

Each task is a stochastic process: its interactions (x, y), x the concatenated user and item embeddings
(field embeddings from :class:`FeatureEncoder`, then a two-layer MLP per side), map to a predictive
distribution through

- a latent encoder h: every pair ``[x_j, y_j]`` -> r_j (MLP), r = mean_j r_j over the task's real entries
  (masked), then ``mu, log var`` of a Gaussian over the task's latent variable z. On the context set C
  (the support set) it gives the conditional prior q(z | C); on the target set T = support + query the
  variational posterior q(z | T);
- a customisation module: the task identity network m (an MLP over ``[x_j, y_j]``, mean over the context)
  gives a task embedding o; a learnable global pool A of k cluster vectors relates tasks with a Student-t
  kernel ``c_k ∝ (1 + ||o - A_k||^2 / alpha)^(-(alpha+1)/2)`` (soft assignment, normalised over k) and the
  task-adaptive embedding is ``o' = o + c^T A``;
- an adaptive decoder g over ``[x, z]``: three hidden layers whose pre-activations are modulated by o'
  with FiLM, ``relu(gamma^l * (W^l x^l + b^l) + beta^l)``, ``gamma^l = tanh(W_g^l o')``,
  ``beta^l = tanh(W_b^l o')`` (eqs. 19-20), or with Gating-FiLM, which mixes both with a third signal
  ``eta^l = tanh(W_e^l o')`` through a gate ``delta^l = sigmoid(W_d^l o')``:
  ``gamma' = gamma * delta + eta * (1 - delta)``, ``beta' = beta * delta + eta * (1 - delta)``.

Objective (``meta_loss``, trained by ``fit()`` with no inner gradient steps), per task: the reconstruction
loss of the target set (MSE, or BCE for implicit feedback, mean over the target's real entries) under
z ~ q(z | T) (reparameterised), plus ``KL(q(z | T) || q(z | C))`` (the ELBO); averaged over the meta-batch,
plus ``lambda * KL(P || C)``, the clustering loss of the meta-batch's soft assignments C against their
sharpened target distribution ``P_bk ∝ C_bk^2 / sum_b C_bk`` (DEC-style). Adaptation (``adapt``) is one
forward pass of the encoders over the support set; predictions use the prior mean z = mu(C), so they are
deterministic.

Open choices:
- context = the support set, target = support + query (the protocol's split); the released code instead
  resamples a random context/target split of support + query for every task and step;
- the Student-t kernel uses the squared distance (as in DEC); the released code uses the plain norm;
- P is a constant target (detached), as in DEC; the released code lets its gradient flow;
- no dropout (the released default rate is 0);
- default sizes are the authors' released ``train_TaNP.py`` defaults (embeddings 32 -> 16 per side, z 32,
  encoder 64-64, task encoder 128-64 -> 64, k = 7 clusters, alpha = 1, lambda = 0.1, decoder 128-128-128,
  FiLM decoder); their outer learning rate 1e-4 (Adam) is ``--train.lr=1e-4`` here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metarec.engine.inner import masked_task_loss
from metarec.learners.base import Adapted, Context, Learner, by_task_chunks
from metarec.nets.features import FeatureEncoder
from metarec.tasks import TaskBatch

DECODERS = ("film", "gating-film", "base")


@dataclass(frozen=True)
class TaNPConfig:
    emb_dim: int = 32  # field embeddings (FeatureEncoder)
    embed_hidden: tuple[int, ...] = (32, 16)  # the user/item MLPs (first, second embedding dim)
    enc_hidden: tuple[int, ...] = (64, 64)  # latent encoder h
    z1_dim: int = 32  # r, the latent encoder's per-pair output
    z2_dim: int = 32  # hidden layer between r and (mu, log var)
    z_dim: int = 32
    task_hidden: tuple[int, ...] = (128, 64)  # task identity network m
    task_dim: int = 64
    clusters: int = 7  # k, the global pool's size
    temperature: float = 1.0  # alpha, the Student-t kernel's degrees of freedom
    lam: float = 0.1  # weight of the clustering loss
    dec_hidden: tuple[int, int, int] = (128, 128, 128)
    decoder: str = "film"  # "film", "gating-film" or "base" (no modulation)
    item_id: bool = False
    loss: str = "mse"  # "mse" for ratings, "bce" for implicit feedback

    def __post_init__(self):
        from metarec.checks import check

        check(self, "learner", pos_int=("emb_dim", "z1_dim", "z2_dim", "z_dim", "task_dim", "clusters"),
              pos_list=("embed_hidden", "enc_hidden", "task_hidden", "dec_hidden"), pos=("temperature",),
              nonneg=("lam",), choices={"decoder": ("film", "gating-film", "base"), "loss": ("mse", "bce")})


def _mlp(sizes: list[int], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_act or j < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def masked_mean(r: Tensor, mask: Tensor) -> Tensor:
    """r (B, N, D), mask (B, N) -> (B, D) mean over each task's real entries (0 for an empty task)."""
    m = mask.to(r.dtype)[..., None]  # (B, N, 1)
    return (r * m).sum(1) / m.sum(1).clamp_min(1.0)


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over the last dim: (B, Z) -> (B,)."""
    return 0.5 * ((logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0 + logvar_p - logvar_q).sum(-1)


def student_t_assign(o: Tensor, pool: Tensor, alpha: float) -> Tensor:
    """Soft assignment of task embeddings o (B, D) to the pool's k vectors (k, D): (B, k), rows sum to 1."""
    d2 = ((o[:, None, :] - pool[None]) ** 2).sum(-1)  # (B, k)
    q = (1.0 + d2 / alpha) ** (-(alpha + 1.0) / 2.0)
    return q / q.sum(-1, keepdim=True)


def clustering_loss(c: Tensor) -> Tensor:
    """DEC's KL(P || C) of a meta-batch's assignments c (B, k), P the (detached) sharpened target; batch mean."""
    p = c ** 2 / c.sum(0, keepdim=True)  # (B, k)
    p = (p / p.sum(-1, keepdim=True)).detach()
    return (p * (p.clamp_min(1e-12).log() - c.clamp_min(1e-12).log())).sum(-1).mean()


class TaNP(Learner):
    name = "tanp"

    def __init__(self, ctx: Context, config: TaNPConfig):
        super().__init__(ctx, config)
        if config.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {config.decoder!r}: choose one of {', '.join(DECODERS)}")
        self.loss_kind = config.loss
        self.encoder = FeatureEncoder(ctx, config.emb_dim, config.item_id)
        eh = list(config.embed_hidden)
        self.user_mlp = _mlp([self.encoder.user_dim, *eh], last_act=True)
        self.item_mlp = _mlp([self.encoder.item_dim, *eh], last_act=True)
        self.side_dim = eh[-1]
        x_dim = 2 * self.side_dim
        self.latent = _mlp([x_dim + 1, *config.enc_hidden, config.z1_dim], last_act=False)  # h
        self.z_hidden = nn.Linear(config.z1_dim, config.z2_dim)
        self.z_mu = nn.Linear(config.z2_dim, config.z_dim)
        self.z_logvar = nn.Linear(config.z2_dim, config.z_dim)
        self.task_net = _mlp([x_dim + 1, *config.task_hidden, config.task_dim], last_act=False)  # m
        self.pool = nn.Parameter(nn.init.xavier_uniform_(torch.empty(config.clusters, config.task_dim)))  # A
        h = list(config.dec_hidden)
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip([x_dim + config.z_dim, *h[:-1]], h, strict=True))
        self.dec_out = nn.Linear(h[-1], 1)
        signals = {"film": ("gamma", "beta"), "gating-film": ("gamma", "beta", "eta", "delta"), "base": ()}
        self.film = nn.ModuleDict({s: nn.ModuleList(nn.Linear(config.task_dim, n, bias=False) for n in h)
                                   for s in signals[config.decoder]})

    # --- the pieces -----------------------------------------------------------------------------------------
    def _sides(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """(..., ) ids -> user part and item part of x, each (..., side_dim)."""
        return self.user_mlp(self.encoder.user(users)), self.item_mlp(self.encoder.item(items))

    def _latent(self, xy: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """xy (B, N, x+1) -> mu, log var (B, Z) of q(z | the masked set)."""
        r = masked_mean(self.latent(xy), mask)  # (B, z1)
        hid = torch.relu(self.z_hidden(r))
        return self.z_mu(hid), self.z_logvar(hid)

    def task_embedding(self, xy: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Context pairs (B, N, x+1) -> task-adaptive embedding o' (B, task_dim) and assignment c (B, k)."""
        o = masked_mean(self.task_net(xy), mask)  # (B, task_dim)
        c = student_t_assign(o, self.pool, self.config.temperature)  # (B, k)
        return o + c @ self.pool, c

    def _decode(self, xu: Tensor, xi: Tensor, z: Tensor, o: Tensor) -> Tensor:
        """xu (B, N or 1, s) user part, xi (B or 1, N, s) item part, z (B, Z), o' (B, task_dim) -> (B, N).

        The first layer is applied block-wise (user, item, z columns), so a candidate list shared by all
        tasks (``score_items``) is never copied B times before the first layer."""
        s = self.side_dim
        w = self.dec[0].weight  # (h1, 2s + Z)
        h = xu @ w[:, :s].T + xi @ w[:, s:2 * s].T + (z @ w[:, 2 * s:].T + self.dec[0].bias)[:, None, :]  # (B, N, h1)
        for layer, lin in enumerate(self.dec):
            if layer > 0:
                h = lin(h)
            if self.config.decoder != "base":
                gamma = torch.tanh(self.film["gamma"][layer](o))[:, None, :]  # (B, 1, h)
                beta = torch.tanh(self.film["beta"][layer](o))[:, None, :]
                if self.config.decoder == "gating-film":
                    eta = torch.tanh(self.film["eta"][layer](o))[:, None, :]
                    delta = torch.sigmoid(self.film["delta"][layer](o))[:, None, :]
                    gamma = gamma * delta + eta * (1 - delta)
                    beta = beta * delta + eta * (1 - delta)
                h = gamma * h + beta
            h = torch.relu(h)
        return self.dec_out(h).squeeze(-1)  # (B, N)

    # --- the learner verbs --------------------------------------------------------------------------------
    def meta_loss(self, batch: TaskBatch) -> Tensor:
        S = batch.s_user.shape[1]
        xu, xi = self._sides(torch.cat([batch.s_user, batch.q_user], 1), torch.cat([batch.s_item, batch.q_item], 1))
        y = torch.cat([batch.s_rating, batch.q_rating], 1).to(xu.dtype)  # (B, T) the target set: support + query
        mask_t = torch.cat([batch.s_mask, batch.q_mask], 1)
        xy = torch.cat([xu, xi, y[..., None]], -1)  # (B, T, x+1)
        mu_c, lv_c = self._latent(xy[:, :S], batch.s_mask)  # conditional prior q(z | C)
        mu_t, lv_t = self._latent(xy, mask_t)  # posterior q(z | T)
        z = mu_t + torch.randn_like(mu_t) * (0.5 * lv_t).exp()  # (B, Z)
        o, c = self.task_embedding(xy[:, :S], batch.s_mask)
        pred = self._decode(xu, xi, z, o)  # (B, T)
        np_loss = masked_task_loss(pred, y, mask_t, self.loss_kind) + gaussian_kl(mu_t, lv_t, mu_c, lv_c)  # (B,)
        return np_loss.mean() + self.config.lam * clustering_loss(c)

    def adapt(self, support: TaskBatch) -> Adapted:
        xu, xi = self._sides(support.s_user, support.s_item)
        xy = torch.cat([xu, xi, support.s_rating[..., None].to(xu.dtype)], -1)  # (B, S, x+1)
        z, _ = self._latent(xy, support.s_mask)  # the prior mean
        o, _ = self.task_embedding(xy, support.s_mask)
        z, o = z.detach(), o.detach()
        owners = support.owner

        def score(users: Tensor, items: Tensor) -> Tensor:
            xu, xi = self._sides(users, items)
            return self._decode(xu, xi, z, o)

        def score_items(items: Tensor) -> Tensor:
            xu, xi = self._sides(owners[:, None], items[None])  # (B, 1, s), (1, N, s)
            return by_task_chunks(lambda t: self._decode(xu[t], xi, z[t], o[t]), len(owners),
                                  items.shape[0] * self.dec[0].out_features)

        return Adapted(owners, score, score_items)
