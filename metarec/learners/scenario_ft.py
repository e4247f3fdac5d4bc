"""FT: a global recommender fine-tuned on each scenario's D_train (the fine-tuning baseline of issue 5).

The network is s²Meta's recommender (:mod:`metarec.learners.s2meta`: the fixed pretrained user and item
embeddings concatenated, three halving ReLU layers, a linear output; or the mapping module) with ordinary
parameters. It is trained on the pooled interactions of the meta-train scenarios (their D_train and D_test,
the data s²Meta meta-trains on) with the hinge loss on (u, i, i⁻) triples, each positive with sampled
negatives of its scenario (``train_mode="pooled"``), and selected on meta-valid. On a new scenario it takes
``steps`` plain SGD steps with rate ``lr`` on D_train: every step uses all D_train positives, each with the
next of its pre-sampled negatives (deterministic). ``steps`` and ``lr`` are chosen on meta-valid scenarios
over ``grid_steps`` x ``grid_lr`` (steps 0 is the global model without fine-tuning), like the grid searches of A.3.2.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from metarec.engine.inner import inner_loop, sgd_step_unfused
from metarec.errors import MetarecError
from metarec.learners.base import Adapted, Context
from metarec.learners.s2meta import ARCHS, ScenarioRecommender, default_init
from metarec.scenarios import split_triples
from metarec.tasks import TaskBatch


@dataclass(frozen=True)
class ScenarioFTConfig:
    emb_dim: int = 64
    arch: str = "interaction"
    margin: float = 1.0
    steps: int = 10
    lr: float = 0.01
    train_mode: str = "pooled"
    grid_steps: tuple[int, ...] = (0, 5, 20, 50, 100, 200)  # adapt-time grid, chosen on meta-valid
    grid_lr: tuple[float, ...] = (0.01, 0.1, 0.3)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise MetarecError(f"scenario-ft: unknown arch {self.arch!r}: choose one of {', '.join(ARCHS)}")


def _negatives_per_positive(rating: Tensor, mask: Tensor) -> int:
    n_pos = ((rating > 0) & mask).sum(1)
    n_neg = ((rating <= 0) & mask).sum(1)
    return max(1, int((n_neg // n_pos.clamp_min(1)).min()))


class ScenarioFT(ScenarioRecommender):
    name = "scenario-ft"

    def __init__(self, ctx: Context, config: ScenarioFTConfig):
        super().__init__(ctx, config)
        init = default_init(self.shapes, 1)
        self.params = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(v[0]) for k, v in init.items()})

    @property
    def adapt_grid(self) -> dict:
        return {"steps": self.config.grid_steps, "lr": self.config.grid_lr}

    def _theta(self, B: int) -> dict[str, Tensor]:
        return {k: self.params[k.replace(".", "_")].unsqueeze(0).expand(B, *s) for k, s in self.shapes.items()}

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        """Pooled training: the mean hinge loss over every (u, i, i⁻) of the chunks in ``batch`` (support)."""
        self._check_ready()
        K = _negatives_per_positive(batch.s_rating, batch.s_mask)
        u, i, j, m = split_triples(batch.s_user, batch.s_item, batch.s_rating, batch.s_mask, K)  # (B, P[, K])
        B, P = u.shape
        flat = [x[..., None].expand(B, P, K).reshape(B, P * K) for x in (u, i, m)]
        loss = self._hinge(self._theta(B), flat[0], flat[1], j.reshape(B, P * K), flat[2])  # (B,)
        w = m.sum(1).to(loss.dtype)
        return (loss * w).sum() / w.sum().clamp_min(1.0)

    def adapt(self, support: TaskBatch) -> Adapted:
        cfg = self.config
        K = _negatives_per_positive(support.s_rating, support.s_mask)
        u, i, j, m = split_triples(support.s_user, support.s_item, support.s_rating, support.s_mask, K)
        # the engine's loop, test-time only (order "none"); step t pairs each positive with its t-th negative
        theta = inner_loop(self._theta(len(support)), lambda th, t: self._hinge(th, u, i, j[:, :, t % K], m),
                           cfg.steps, cfg.lr, order="none", update=sgd_step_unfused, step_arg=True)
        return self.adapted_from(theta, support.owner)
