"""SML (Zhang et al. SIGIR'20, "How to Retrain Recommender System? A Sequential Meta-Learning Method"), as
MML runs it (5.1.2): "we first train a recommender on the data of old users and retrain this model on the
newly collected data of new users following the SML method". The recommender is SASRec.

- Periods: D_old (the meta-train users' interactions before T) is cut into ``periods`` equal-count time
  periods by the targets' timestamps; period t's data D_t are the next-item targets that fall in it (each
  predicted from the user's preceding items, up to ``max_len``).
- W_0: SASRec trained on the first ``pretrain_periods`` periods (the usual training, selected on meta-valid).
- Transfer component f_Theta (SML 3.2): for every parameter tensor, viewed as rows of length d, the stack
  [W_{t-1}; W_hat_t; W_{t-1} * W_hat_t] (3 x d) goes through a (3 x 1) convolution with ``channels[0]``
  filters, a 1 x 1 convolution with ``channels[1]``, and a two-layer MLP back to d (GELU between). One
  transfer network for the item embeddings and one for every other parameter (SML has one per user/item
  embedding table).
- Sequential training (SML Algorithm 1), for t = pretrain_periods .. periods-1:
  1. W_hat_t: from W_{t-1}, ``hat_steps`` Adam steps on L(f_Theta(W_{t-1}, W_hat_t) | D_t) w.r.t. W_hat_t;
  2. Theta: ``transfer_steps`` Adam steps on L(f_Theta(W_{t-1}, W_hat_t) | D_{t+1}) (the next period: SML's
     "future performance"), for every t with a next period;
  3. W_t = f_Theta(W_{t-1}, W_hat_t).
- Serving (meta-valid / meta-test): the new users' warm-up sequences are the new period's data: step 1 on
  them from W_last, then W_new = f_Theta(W_last, W_hat); W_new scores every query. One model for all new
  users (retraining, not per-user adaptation).

Open choices: ``residual=True`` makes the transfer output W_hat + f(...) with f's last layer initialised at
zero (training starts from "keep the retrained weights"); with only a handful of periods a transfer learned
from scratch (SML's original, ``residual=False``) destroys the pretrained model. The product input is the
plain element-wise product (the released code also divides it by ||W_{t-1}||). Losses are BPR.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from metarec.learners.base import Adapted
from metarec.nets.sasrec import SASRec, SASRecConfig
from metarec.seqrec.batch import collate_seq
from metarec.seqrec.functional import flat_mean, position_losses
from metarec.seqrec.methods import SeqMethod, seq_adapted
from metarec.seqrec.protocol import prefix_task
from metarec.tasks import Task


@dataclass(frozen=True)
class SMLConfig:
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    loss: str = "bpr"
    periods: int = 8
    pretrain_periods: int = 4
    hat_steps: int = 20
    hat_lr: float = 1e-3
    transfer_steps: int = 20
    transfer_lr: float = 1e-3
    batch: int = 128
    channels: tuple = (10, 5)
    hidden: int = 128
    residual: bool = True
    seed: int = 0


class Transfer(nn.Module):
    """f_Theta on rows: prev, hat (R, d) -> (R, d)."""

    def __init__(self, d: int, channels=(10, 5), hidden: int = 128, residual: bool = True):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(1, channels[0], (3, 1))
        self.conv2 = nn.Conv2d(channels[0], channels[1], (1, 1))
        self.fc1 = nn.Linear(channels[1] * d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        if residual:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, prev: Tensor, hat: Tensor) -> Tensor:
        x = torch.stack([prev, hat, prev * hat], dim=1)[:, None]  # (R, 1, 3, d)
        x = F.gelu(self.conv1(x))  # (R, c1, 1, d)
        x = F.gelu(self.conv2(x))  # (R, c2, 1, d)
        out = self.fc2(F.gelu(self.fc1(x.flatten(1))))  # (R, d)
        return hat + out if self.residual else out


class SML(SeqMethod):
    def __init__(self, n_items: int, config: SMLConfig = SMLConfig(), pool: Tensor | None = None):
        super().__init__(n_items, config, pool)
        d = config.sasrec.dim
        self.net = SASRec(n_items, config.sasrec)
        self.transfer_item = Transfer(d, config.channels, config.hidden, config.residual)
        self.transfer_dense = Transfer(d, config.channels, config.hidden, config.residual)
        # before the sequential stage the method behaves as the plain pretrained SASRec (saved with the state)
        self.register_buffer("plain_flag", torch.tensor(True))
        self._serving: dict[str, Tensor] | None = None

    @property
    def plain(self) -> bool:
        return bool(self.plain_flag)

    # ------------------------------------------------------------------------------------ pieces
    def weights(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.net.named_parameters()}

    def transfer(self, prev: dict[str, Tensor], hat: dict[str, Tensor]) -> dict[str, Tensor]:
        d = self.config.sasrec.dim
        out = {}
        for k, p in prev.items():
            t = self.transfer_item if k == "item_emb.weight" else self.transfer_dense
            out[k] = t(p.reshape(-1, d), hat[k].reshape(-1, d)).reshape(p.shape)
        return out

    def _loss_with(self, w: dict[str, Tensor], tasks: list[Task]) -> Tensor:
        per, mask = position_losses(lambda s, p, i: functional_call(self.net, w, (s, p, i)), collate_seq(tasks),
                                    "all", self.config.loss, self.pool)
        return flat_mean(per, mask)

    def _batches(self, tasks: list[Task], rng: np.random.Generator):
        size = self.config.batch
        while True:
            order = rng.permutation(len(tasks))
            for i in range(0, len(tasks), size):
                yield [tasks[j] for j in order[i: i + size]]

    def retrain(self, prev: dict[str, Tensor], tasks: list[Task], rng: np.random.Generator) -> dict[str, Tensor]:
        """Step 1: W_hat from W_prev by ``hat_steps`` Adam steps on L(f(W_prev, W_hat) | tasks)."""
        hat = {k: v.clone().requires_grad_(True) for k, v in prev.items()}
        opt = torch.optim.Adam(list(hat.values()), lr=self.config.hat_lr)
        with torch.enable_grad():
            for chunk in itertools.islice(self._batches(tasks, rng), self.config.hat_steps):
                loss = self._loss_with(self.transfer(prev, hat), chunk)
                grads = torch.autograd.grad(loss, list(hat.values()))  # W_hat only; Theta is fixed here
                for p, g in zip(hat.values(), grads, strict=True):
                    p.grad = g
                opt.step()
        return {k: v.detach() for k, v in hat.items()}

    # ------------------------------------------------------------------------------------ training
    def meta_loss(self, batch) -> Tensor:
        """Pre-training loss of W_0 (the plain SASRec objective)."""
        per, mask = position_losses(self.net, batch, "all", self.config.loss, self.pool)
        return flat_mean(per, mask)

    def sequential_train(self, period_tasks: list[list[Task]], progress: bool = True) -> list[dict]:
        """SML Algorithm 1 over the periods after pre-training; leaves W_last in ``self.net``."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 4242])
        params = list(self.transfer_item.parameters()) + list(self.transfer_dense.parameters())
        opt = torch.optim.Adam(params, lr=cfg.transfer_lr)
        log = []
        todo = [t for t in range(cfg.pretrain_periods, len(period_tasks)) if period_tasks[t]]
        self.train()
        for t in tqdm(todo, desc="SML periods", leave=False, disable=not progress):
            prev = self.weights()
            hat = self.retrain(prev, period_tasks[t], rng)
            nxt = period_tasks[t + 1] if t + 1 < len(period_tasks) else []
            losses = []
            for chunk in itertools.islice(self._batches(nxt, rng), cfg.transfer_steps if nxt else 0):
                loss = self._loss_with(self.transfer(prev, hat), chunk)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                losses.append(loss.item())
            with torch.no_grad():
                new = self.transfer(prev, hat)
                for k, p in self.net.named_parameters():
                    p.copy_(new[k])
            log.append({"period": t, "next_period_loss": float(np.mean(losses)) if losses else None})
        self.plain_flag.fill_(False)
        return log

    # ------------------------------------------------------------------------------------ serving
    def begin_eval(self, tasks: list[Task]) -> None:
        if self.plain:
            self._serving = None
            return
        support = [prefix_task(t.owner, t.extra["seq"][: len(t.extra["s_pos"]) + 1]) for t in tasks
                   if len(t.extra["s_pos"]) >= 2]
        prev = self.weights()
        rng = np.random.default_rng([self.config.seed, 77])
        gen_state = torch.get_rng_state()
        torch.manual_seed(self.config.seed)  # the retraining's negatives: evaluation is deterministic
        hat = self.retrain(prev, support, rng) if support else prev
        torch.set_rng_state(gen_state)
        with torch.no_grad():
            self._serving = self.transfer(prev, hat)

    def adapt(self, batch) -> Adapted:
        if self._serving is None:
            return seq_adapted(batch, lambda seq, pos: self.net(seq, pos))
        w = self._serving
        return seq_adapted(batch, lambda seq, pos: functional_call(self.net, w, (seq, pos)))


def period_tasks(train_inter: pd.DataFrame, periods: int, max_len: int) -> list[list[Task]]:
    """D_old cut into ``periods`` equal-count periods of targets; per period and user one task whose support
    positions are the user's targets in that period (with up to ``max_len`` preceding items as context)."""
    df = train_inter.sort_values(["user", "timestamp", "item"], kind="stable")
    ts = df["timestamp"].to_numpy()
    edges = np.quantile(ts, np.linspace(0, 1, periods + 1)[1:-1])
    per = np.searchsorted(edges, ts, side="right")  # (n,) period of each interaction
    items, users = df["item"].to_numpy(), df["user"].to_numpy()
    bounds = np.r_[0, np.flatnonzero(np.diff(users)) + 1, len(df)]
    out: list[list[Task]] = [[] for _ in range(periods)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        seq_all, p_all, u = items[lo:hi], per[lo:hi], int(users[lo])
        for t in np.unique(p_all[1:]):
            idx = np.flatnonzero(p_all == t)
            idx = idx[idx >= 1]
            end = int(idx.max()) + 1
            start = max(0, end - max_len)
            s_pos = idx[idx - start >= 1] - start
            if len(s_pos) == 0:
                continue
            seq = seq_all[start:end]
            e = np.array([], dtype=np.int64)
            out[int(t)].append(Task(u, np.full(len(s_pos), u), seq[s_pos], np.ones(len(s_pos), np.float32),
                                    e, e, np.array([], np.float32),
                                    extra={"seq": seq, "s_pos": s_pos, "q_pos": e}))
    return out


