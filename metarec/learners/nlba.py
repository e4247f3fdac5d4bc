"""NLBA, Non-Linear Bias Adaptation (Vartak et al. NIPS'17, "A Meta-Learning Perspective on Cold-Start
Recommendations for Items"; survey 5.1/5.2, parameter generation).

The base model is a neural classifier over the item embedding F(t) whose weights are shared by all tasks
and whose biases, of every hidden layer and of the output unit, are generated from the task's class
representatives R0, R1 (mean embeddings of the support set's negative and positive items, as in LWA,
``metarec/learners/lwa.py``)::

    h_0 = F(t)
    h_l = relu(W_l h_{l-1} + c_l + V0_l R0 + V1_l R1)          l = 1..L,  W_l, V0_l, V1_l, c_l shared
    P(y = 1 | t) = sigmoid(w . h_L + c + v0 . R0 + v1 . R1)

So a task changes the network only through its biases, but through the ReLUs that shifts the decision
function non-linearly. Like LWA, adaptation is one forward pass (no inner gradient step), and meta-training
back-propagates the query loss through the bias generators and F. Each layer's generated bias is one
``nn.Linear(2D, H)`` applied to [R0, R1] (its own bias is c_l); the hidden layers' shared weights W_l are
applied as one matmul for all tasks, so scoring N candidates for B tasks costs one (N x D) @ (D x H)
product plus a broadcast add, not B copies of the network.

Open choices (ours):
- F as in LWA, but without the MLP on top by default (``item_layers=()``): NLBA's own hidden layers
  already make the score non-linear in the field embeddings.
- Each generated bias has a constant part c_l (the RecBole-MetaRec reimplementation has none): a superset.
- Sizes: ``emb_dim`` 32, hidden (64, 64), as the MeLU network here (the paper's networks sit on Twitter's
  production features; nothing of them carries over to MovieLens fields).
- An empty class's representative is the zero vector.
- Implicit view (``loss="bce"``): the score is the logit. Explicit view (``loss="mse"``): a linear output
  trained with MSE, plus the task's mean support rating when ``center``, the support ratings >=
  ``threshold`` being the positive class.
- User side information is not used, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from metarec.learners.base import Context
from metarec.learners.lwa import HistoryLearner


@dataclass(frozen=True)
class NLBAConfig:
    emb_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    item_id: bool = False  # add an item-ID embedding to F (index 0 for items unseen in meta-train)
    item_layers: tuple[int, ...] = ()  # optional MLP on top of the field embeddings in F (last: linear)
    loss: str = "mse"  # "mse" (explicit ratings, linear output) or "bce" (implicit, logistic output)
    threshold: float = 4.0  # explicit view: support ratings >= threshold form the positive class
    center: bool = True  # explicit view: add the task's mean support rating to the output

    def __post_init__(self):
        from metarec.checks import check

        check(self, "learner", pos_int=("emb_dim",), pos_list=("hidden", "item_layers"),
              choices={"loss": ("mse", "bce")})


class NLBA(HistoryLearner):
    name = "nlba"

    def __init__(self, ctx: Context, config: NLBAConfig):
        super().__init__(ctx, config)
        dims = [self.dim, *config.hidden]
        self.weights = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.out = nn.Linear(dims[-1], 1, bias=False)  # w, shared
        # bias generators: [R0, R1] (2D) -> c_l + V0_l R0 + V1_l R1, one per hidden layer and the output unit
        self.bias_gen = nn.ModuleList(nn.Linear(2 * self.dim, h) for h in [*config.hidden, 1])

    def generate(self, reps: Tensor) -> list[Tensor]:
        """Class representatives (B, 2, D) -> the biases of each hidden layer (B, H_l) and the output (B, 1)."""
        r = reps.flatten(1)  # (B, 2D) = [R0, R1]
        return [g(r) for g in self.bias_gen]

    def _task_state(self, reps: Tensor, offset: Tensor) -> dict[str, Tensor]:
        biases = self.generate(reps)
        state = {f"b{j}": b for j, b in enumerate(biases[:-1])}  # (B, H_l)
        state["out"] = biases[-1].squeeze(-1) + offset  # (B,)
        return state

    def _logits(self, state: dict[str, Tensor], x: Tensor) -> Tensor:
        """x (B, N, D) or (N, D) -> (B, N). Shared weights are applied before the per-task bias broadcast."""
        h = x
        for j, lin in enumerate(self.weights):
            bias = state[f"b{j}"][:, None, :]  # (B, 1, H)
            h = torch.relu(lin(h) + bias)  # (B, N, H); (N, H) + (B, 1, H) broadcasts on the first layer
        if h.dim() == 2:  # no hidden layer and shared items: (N, D) -> (B, N, D)
            h = h.expand(state["out"].shape[0], *h.shape)
        return self.out(h).squeeze(-1) + state["out"][:, None]  # (B, N)
