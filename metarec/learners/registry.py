"""The explicit registry of learners: name -> class, config class, default config, one-line summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metarec.engine.inner import InnerConfig
from metarec.learners.baselines import BiasConfig, BiasModel, ItemPop
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig


@dataclass(frozen=True)
class LearnerSpec:
    name: str
    cls: type
    config_cls: type
    default: Callable[[], object]
    summary: str


def _named(cls, name):
    return type(cls.__name__ + "_" + name.replace("-", "_"), (cls,), {"name": name})


LEARNERS: dict[str, LearnerSpec] = {
    "melu": LearnerSpec(
        "melu", FeatureMLP, FeatureMLPConfig,
        lambda: FeatureMLPConfig(inner=InnerConfig(steps=1, lr=5e-6, first_order=False)),
        "MeLU (KDD'19): MAML over the decision MLP of user/item feature embeddings, second order"),
    "noadapt": LearnerSpec(
        "noadapt", _named(FeatureMLP, "noadapt"), FeatureMLPConfig,
        lambda: FeatureMLPConfig(train_mode="pooled", inner=InnerConfig(steps=0)),
        "the MeLU network trained on all meta-train interactions, no adaptation"),
    "ptft": LearnerSpec(
        "ptft", _named(FeatureMLP, "ptft"), FeatureMLPConfig,
        lambda: FeatureMLPConfig(train_mode="pooled", inner=InnerConfig(steps=5, lr=1e-2, first_order=True)),
        "pretrain the MeLU network on pooled data, fine-tune its MLP on each support set (SGD)"),
    "itempop": LearnerSpec("itempop", ItemPop, BiasConfig, BiasConfig,
                           "item popularity (ranking) / shrunk item mean (rating)"),
    "bias": LearnerSpec("bias", BiasModel, BiasConfig, BiasConfig,
                        "global mean + item bias (meta-train) + the new user's offset from the support set"),
}
