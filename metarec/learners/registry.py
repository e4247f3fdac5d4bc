"""The explicit registry of learners: name -> class, config class, default config, one-line summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metarec.ctr.backbone import warmup_only
from metarec.engine.inner import InnerConfig
from metarec.learners.baselines import BiasConfig, BiasModel, ItemPop
from metarec.learners.emcdr import EMCDR, EMCDRConfig
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig
from metarec.learners.foldin import FoldIn, FoldInConfig
from metarec.learners.lwa import LWA, LWAConfig
from metarec.learners.mamo import MAMO, MAMOConfig
from metarec.learners.metaemb import MetaEmb, MetaEmbConfig
from metarec.learners.metafold import MetaFold, MetaFoldConfig
from metarec.learners.mwuf import MWUF, MWUFConfig
from metarec.learners.neumf import NeuMF, NeuMFConfig
from metarec.learners.nlba import NLBA, NLBAConfig
from metarec.learners.s2meta import S2Meta, S2MetaConfig
from metarec.learners.scenario_ft import ScenarioFT, ScenarioFTConfig
from metarec.learners.scenario_itempop import ScenarioItemPop
from metarec.learners.tanp import TaNP, TaNPConfig


@dataclass(frozen=True)
class LearnerSpec:
    name: str
    cls: type
    config_cls: type
    default: Callable[[], object]
    summary: str
    # what `metarec tune` searches: config key -> ("log", lo, hi) | ("float", lo, hi) | ("int", lo, hi) |
    # ("cat", [choices]); keys under train. and learner. only; None: the learner is not tunable
    space: dict | None = None


# search spaces (metarec/tuning.py); epochs are capped so that one tune fits a few CPU minutes on ml-100k
_LR = ("log", 1e-4, 1e-2)  # the outer (Adam) rate
_EPOCHS = ("int", 5, 30)  # an upper bound: early stopping on meta-valid (train.patience) still applies
_MAML_SPACE = {"train.lr": _LR, "learner.inner.lr": ("log", 1e-4, 1e-1), "train.epochs": _EPOCHS}
# the fold-in's factorisation (alpha: the implicit view's confidence, inert in the explicit view)
_FOLDIN_SPACE = {"rank": ("cat", [8, 16, 32, 64]), "reg": ("log", 0.5, 100.0), "reg_bias": ("log", 0.5, 50.0),
                 "alpha": ("log", 1.0, 50.0)}


def _named(cls, name):
    return type(cls.__name__ + "_" + name.replace("-", "_"), (cls,), {"name": name})


LEARNERS: dict[str, LearnerSpec] = {
    "melu": LearnerSpec(
        "melu", FeatureMLP, FeatureMLPConfig,
        lambda: FeatureMLPConfig(inner=InnerConfig(steps=1, lr=5e-6, first_order=False)),
        "MeLU (KDD'19): MAML over the decision MLP of user/item feature embeddings, second order",
        space={**_MAML_SPACE, "learner.inner.steps": ("int", 1, 3)}),
    "noadapt": LearnerSpec(
        "noadapt", _named(FeatureMLP, "noadapt"), FeatureMLPConfig,
        lambda: FeatureMLPConfig(train_mode="pooled", inner=InnerConfig(steps=0)),
        "the MeLU network trained on all meta-train interactions, no adaptation",
        space={"train.lr": _LR, "train.epochs": _EPOCHS}),
    "ptft": LearnerSpec(
        "ptft", _named(FeatureMLP, "ptft"), FeatureMLPConfig,
        lambda: FeatureMLPConfig(train_mode="pooled", inner=InnerConfig(steps=5, lr=1e-2, first_order=True)),
        "pretrain the MeLU network on pooled data, fine-tune its MLP on each support set (SGD)",
        space={**_MAML_SPACE, "learner.inner.steps": ("int", 1, 10)}),
    "metasgd": LearnerSpec(
        "metasgd", _named(FeatureMLP, "metasgd"), FeatureMLPConfig,
        lambda: FeatureMLPConfig(inner=InnerConfig(steps=1, lr=1e-3, first_order=False, learn_lr="per_param")),
        "Meta-SGD (Li et al. 2017) on the MeLU network: MAML with a learned inner rate per parameter entry",
        space=_MAML_SPACE),
    "metacs": LearnerSpec(
        "metacs", _named(FeatureMLP, "metacs"), FeatureMLPConfig,
        lambda: FeatureMLPConfig(inner=InnerConfig(steps=1, lr=1e-3, first_order=False, learn_lr="scalar")),
        "MetaCS (Bharadhwaj 2019) on the MeLU network: MAML with one learned scalar inner rate",
        space=_MAML_SPACE),
    "itempop": LearnerSpec("itempop", ItemPop, BiasConfig, BiasConfig,
                           "item popularity (ranking) / shrunk item mean (rating)",
                           space={"learner.reg_item": ("log", 0.1, 100.0)}),
    "bias": LearnerSpec("bias", BiasModel, BiasConfig, BiasConfig,
                        "global mean + item bias (meta-train) + the new user's offset from the support set",
                        space={"learner.reg_item": ("log", 0.1, 100.0), "learner.reg_user": ("log", 0.1, 100.0)}),
    "foldin": LearnerSpec("foldin", FoldIn, FoldInConfig, FoldInConfig,
                          "matrix factorisation by ALS on meta-train (biased; iALS in the implicit view), the "
                          "newcomer folded in by one batched ridge solve on the support set; new items from a "
                          "ridge map of their attributes",
                          space={f"learner.{k}": v for k, v in _FOLDIN_SPACE.items()}),
    "metafold": LearnerSpec("metafold", MetaFold, MetaFoldConfig, MetaFoldConfig,
                            "fold-in as the inner loop: the closed-form ridge solve on the support set, with the "
                            "item side (from ALS), per-dimension penalties and a profile prior meta-trained "
                            "through it (exact second order); metarec's own design",
                            space={**{f"learner.start.{k}": v for k, v in _FOLDIN_SPACE.items()},
                                   "train.lr": ("log", 1e-4, 3e-3), "train.epochs": ("int", 2, 20),
                                   "learner.anchor": ("log", 0.1, 100.0)}),
    "lwa": LearnerSpec("lwa", LWA, LWAConfig, LWAConfig,
                       "LWA (NIPS'17): logistic regression whose weights are a0*R0 + a1*R1, R = the support set's "
                       "mean negative/positive item embeddings",
                       space={"train.lr": ("log", 1e-4, 3e-2), "learner.coef": ("cat", ["scalar", "vector"]),
                              "train.epochs": _EPOCHS}),
    "nlba": LearnerSpec("nlba", NLBA, NLBAConfig, NLBAConfig,
                        "NLBA (NIPS'17): shared MLP over item features whose layer biases are generated from the "
                        "support set's mean negative/positive item embeddings",
                        space={"train.lr": _LR, "train.epochs": _EPOCHS}),
    "mamo": LearnerSpec("mamo", MAMO, MAMOConfig, MAMOConfig,
                        "MAMO (KDD'20): MAML whose init is personalised by profile/fast-weight memories, with a "
                        "preference memory for the decision layer (defaults: the authors' configs.py)",
                        space={"train.lr": _LR, "learner.inner.lr": ("log", 1e-3, 1e-1),
                               "train.epochs": ("int", 3, 20)}),
    "tanp": LearnerSpec("tanp", TaNP, TaNPConfig, TaNPConfig,
                        "TaNP (WWW'21): neural process over the support set, decoder FiLM-modulated by a clustered "
                        "task embedding; no inner steps (defaults: the authors' train_TaNP.py)",
                        space={"train.lr": _LR, "learner.lam": ("log", 0.01, 1.0), "train.epochs": _EPOCHS}),
    "metaemb": LearnerSpec("metaemb", MetaEmb, MetaEmbConfig, warmup_only("metaemb"),
                           "Meta-Embedding (SIGIR'19): new items' ID embeddings generated from their attributes on a "
                           "frozen DeepFM; item warm-up protocol only (`metarec warmup`)"),
    "mwuf": LearnerSpec("mwuf", MWUF, MWUFConfig, warmup_only("mwuf"),
                        "MWUF (SIGIR'21): meta scaling/shifting networks warm cold item ID embeddings on a frozen "
                        "DeepFM; item warm-up protocol only (`metarec warmup`)"),
    "s2meta": LearnerSpec("s2meta", S2Meta, S2MetaConfig, S2MetaConfig,
                          "s²Meta (KDD'19): learned init + LSTM update controller + REINFORCE stop controller over "
                          "pretrained MF embeddings; scenario protocol only (`metarec scenario`)"),
    "scenario-itempop": LearnerSpec("scenario-itempop", ScenarioItemPop, BiasConfig, BiasConfig,
                                    "item popularity in the scenario's training data (`metarec scenario`)"),
    "neumf": LearnerSpec("neumf", NeuMF, NeuMFConfig, NeuMFConfig,
                         "NeuMF (WWW'17): GMF + MLP over ID embeddings, pretrained parts, trained on pooled data"),
    "scenario-ft": LearnerSpec("scenario-ft", ScenarioFT, ScenarioFTConfig, ScenarioFTConfig,
                               "s²Meta's recommender trained on pooled meta-train scenarios, SGD fine-tuning on "
                               "D_train (`metarec scenario`)"),
    "emcdr": LearnerSpec("emcdr", EMCDR, EMCDRConfig, EMCDRConfig,
                         "EMCDR (IJCAI'17): MLP mapping of source to target user factors, per scenario "
                         "(`metarec scenario`)"),
}
