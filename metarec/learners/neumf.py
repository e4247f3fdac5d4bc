"""NeuMF (He et al., WWW'17, "Neural Collaborative Filtering"), the general-domain baseline of s²Meta.

GMF (element-wise product of ``mf_dim`` user and item embeddings) and an MLP tower (concatenated user and
item embeddings, ``layers`` = (64, 32, 16, 8): a 64-wide input and ReLU layers of 32, 16, 8) fused by one
linear output on their concatenated last vectors. s²Meta A.3.2: "we use the pre-training suggested by the
author, with embedding size of MF model set to 8 and MLP layers set to [64, 32, 16, 8]". Pretraining
(:func:`fit_neumf`): GMF and MLP are trained alone (``component="gmf"`` / ``"mlp"``), then NeuMF starts from
their weights, the output layer being their output weights concatenated and halved (alpha = 0.5), and is
trained again. Trained on pooled interactions (``train_mode="pooled"``): in the scenario protocol every
training interaction of every scenario and of the source domain ("we train a single model on all the
scenarios"), with sampled negatives and binary cross-entropy; in the user-cold pipeline the pooled
meta-train interactions (``bce`` in the implicit view, ``mse`` on ratings), without the pretraining stage
(only ``metarec scenario`` runs :func:`fit_neumf`); there a new user's ID embedding is untrained. No adaptation:
the support set of a task is not used (its interactions are in the training pool of the scenario protocol).

Open choices: Adam for every stage (NCF uses SGD after pretraining), the library's outer loop with model
selection on meta-valid for each stage; item ids never seen in training keep their random embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from metarec.engine.inner import masked_task_loss
from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context, Learner
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class NeuMFConfig:
    mf_dim: int = 8
    layers: tuple[int, ...] = (64, 32, 16, 8)
    component: str = "neumf"  # "neumf", or "gmf" / "mlp" alone (pretraining)
    pretrain: bool = True  # fit_neumf: pretrain GMF and MLP first
    train_mode: str = "pooled"
    loss: str = "mse"  # the pipelines switch to "bce" for implicit feedback
    inner: None = None  # no inner loop; the field lets pipeline.train_and_evaluate key its pooled pretraining

    def __post_init__(self):
        if self.component not in ("neumf", "gmf", "mlp"):
            raise MetarecError(f"neumf: unknown component {self.component!r}: choose neumf, gmf or mlp")
        if len(self.layers) < 2 or self.layers[0] % 2:
            raise MetarecError("neumf: layers need an even input width and at least one hidden layer")


class NeuMF(Learner):
    name = "neumf"

    def __init__(self, ctx: Context, config: NeuMFConfig):
        super().__init__(ctx, config)
        self.loss_kind = config.loss
        c = config.component
        half = config.layers[0] // 2
        width = 0
        if c in ("neumf", "gmf"):
            self.gmf_user = nn.Embedding(ctx.n_users, config.mf_dim)
            self.gmf_item = nn.Embedding(ctx.n_items, config.mf_dim)
            width += config.mf_dim
        if c in ("neumf", "mlp"):
            self.mlp_user = nn.Embedding(ctx.n_users, half)
            self.mlp_item = nn.Embedding(ctx.n_items, half)
            layers = []
            for a, b in zip(config.layers[:-1], config.layers[1:], strict=True):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.mlp = nn.Sequential(*layers)
            width += config.layers[-1]
        for e in self.modules():
            if isinstance(e, nn.Embedding):
                nn.init.normal_(e.weight, std=0.01)
        self.predict = nn.Linear(width, 1)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """users, items (...,) -> logits (...,)."""
        parts = []
        if hasattr(self, "gmf_user"):
            parts.append(self.gmf_user(users) * self.gmf_item(items))
        if hasattr(self, "mlp"):
            parts.append(self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], -1)))
        return self.predict(torch.cat(parts, -1)).squeeze(-1)

    def load_pretrained(self, gmf: NeuMF, mlp: NeuMF, alpha: float = 0.5) -> None:
        """NCF's initialisation of NeuMF from pretrained GMF and MLP models."""
        with torch.no_grad():
            for name in ("gmf_user", "gmf_item"):
                getattr(self, name).weight.copy_(getattr(gmf, name).weight)
            for name in ("mlp_user", "mlp_item"):
                getattr(self, name).weight.copy_(getattr(mlp, name).weight)
            self.mlp.load_state_dict(mlp.mlp.state_dict())
            self.predict.weight.copy_(torch.cat([alpha * gmf.predict.weight, (1 - alpha) * mlp.predict.weight], 1))
            self.predict.bias.copy_(alpha * gmf.predict.bias + (1 - alpha) * mlp.predict.bias)

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        users = torch.cat([batch.s_user, batch.q_user], 1)  # (B, S+Q)
        pred = self(users, torch.cat([batch.s_item, batch.q_item], 1))
        target = torch.cat([batch.s_rating, batch.q_rating], 1)
        mask = torch.cat([batch.s_mask, batch.q_mask], 1)
        m = mask.to(pred.dtype)
        per = masked_task_loss(pred, target, mask, self.loss_kind) * m.sum(1)
        return per.sum() / m.sum()  # mean over interactions

    def adapt(self, support: TaskBatch) -> Adapted:
        owners = support.owner

        def score(users: Tensor, items: Tensor) -> Tensor:
            return self(users, items)

        def score_items(items: Tensor) -> Tensor:
            B, N = len(owners), len(items)
            return self(owners[:, None].expand(B, N), items[None, :].expand(B, N))

        return Adapted(owners, score, score_items)


def fit_neumf(make: Callable[[NeuMFConfig], NeuMF], config: NeuMFConfig, fit_fn: Callable[[NeuMF], dict]
              ) -> tuple[NeuMF, dict]:
    """NCF's schedule: GMF and MLP alone (if ``config.pretrain``), then NeuMF initialised from them.

    ``make(cfg)`` builds a learner, ``fit_fn(learner)`` trains it (the library's outer loop) and returns its
    record. Returns the trained NeuMF and its record (with the pretraining records under ``pretrain``).
    """
    model = make(config)
    if not config.pretrain or config.component != "neumf":
        return model, fit_fn(model)
    parts, records = {}, {}
    for comp in ("gmf", "mlp"):
        parts[comp] = make(replace(config, component=comp))
        records[comp] = fit_fn(parts[comp])
    model.load_pretrained(parts["gmf"], parts["mlp"])
    record = fit_fn(model)
    record["pretrain"] = {k: {"best_epoch": v["best_epoch"], "best": v["best"]} for k, v in records.items()}
    return model, record
