"""The one registry of methods: every method of every protocol family, with the protocols it runs on.

An entry names, per protocol family it belongs to, its implementation and config class as ``"module:attr"``
strings (imported on first use, so listing the registry costs no torch import), its default settings as
overrides over the config class's defaults, its summary and its tuning space. Everything else reads it: the
CLI (``metarec learners``, ``train``/``compare --protocol P --learner L``), the runners of each family, loading a
saved model by name, ``metarec tune`` and the contract test over every entry. Adding a method is one entry here.

Families and their protocols (:data:`PROTOCOLS`):

- ``rating``: the four rating states ``warm``, ``user-cold``, ``item-cold``, ``user-item-cold`` (split by time or
  at random) and ``tasks`` (explicit task lists read from a file); implementation: a
  :class:`metarec.learners.base.Learner` subclass.
- ``warmup``: item-ID embedding warm-up on a frozen DeepFM (MetaEmb, MWUF); implementation: the method's class.
- ``scenario``: s²Meta's scenario-specific few-shot protocol; implementation: a ``Learner`` subclass.
- ``sequential``: MML's cold-start sequential protocol; implementation: the run function
  ``run(name, data, seed, out_dir, progress, overrides, cache, device=...) -> result`` (``device``: the
  ``torch.device`` it trains on), plus the model class for loading.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from metarec.errors import MetarecError

__all__ = ["RATING_STATES", "PROTOCOLS", "FAMILIES", "Impl", "Method", "METHODS", "resolve", "method", "names",
           "for_protocol", "family_of", "require"]

RATING_STATES = ("warm", "user-cold", "item-cold", "user-item-cold")
# protocol -> the family whose runner serves it
PROTOCOLS: dict[str, str] = {**{p: "rating" for p in RATING_STATES}, "tasks": "rating", "warmup": "warmup",
                             "scenario": "scenario", "sequential": "sequential"}
FAMILIES = ("rating", "warmup", "scenario", "sequential")


@dataclass(frozen=True)
class Impl:
    """One method's implementation in one protocol family."""

    target: str  # "module:attr": the learner class (rating, scenario, warmup) or run function (sequential)
    config: str = ""  # "module:attr" of its frozen config dataclass ("" when it has none)
    default: dict = field(default_factory=dict)  # overrides over the config class's defaults: the registry defaults
    space: dict | None = None  # what `metarec tune` searches (rating family; see metarec/tuning.py)
    model: str = ""  # sequential: "module:attr" of the saved model's class (loading by registry name)
    protocols: tuple[str, ...] = ()  # () = every protocol of the family

    def load(self):
        return resolve(self.target)

    def config_cls(self):
        return resolve(self.config) if self.config else None

    def make_config(self):
        """The registry default config: the config class's defaults with ``default`` applied."""
        from metarec.config import apply_overrides

        cls = self.config_cls()
        return apply_overrides(cls(), self.default) if cls is not None else None


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    impls: dict[str, Impl]  # family -> implementation

    @property
    def protocols(self) -> tuple[str, ...]:
        out = []
        for fam, impl in self.impls.items():
            out += list(impl.protocols or [p for p, f in PROTOCOLS.items() if f == fam])
        return tuple(out)

    def impl(self, family: str) -> Impl:
        if family not in self.impls:
            raise MetarecError(f"{self.name} does not run on the {family} protocols (it runs on "
                               f"{', '.join(self.protocols)})")
        return self.impls[family]


def resolve(target: str):
    """The object named by ``"module:attr"``."""
    mod, _, attr = target.partition(":")
    return getattr(importlib.import_module(mod), attr)


# ------------------------------------------------------------------------------------------------ entries

# search spaces (metarec/tuning.py); epochs are capped so that one tune fits a few CPU minutes on ml-100k
_LR = ("log", 1e-4, 1e-2)  # the outer (Adam) rate
_EPOCHS = ("int", 5, 30)  # an upper bound: early stopping on meta-valid (train.patience) still applies
_MAML_SPACE = {"train.lr": _LR, "learner.inner.lr": ("log", 1e-4, 1e-1), "train.epochs": _EPOCHS}
# the fold-in's factorisation (alpha: the implicit view's confidence, inert in the explicit view)
_FOLDIN_SPACE = {"rank": ("cat", [8, 16, 32, 64]), "reg": ("log", 0.5, 100.0), "reg_bias": ("log", 0.5, 50.0),
                 "alpha": ("log", 1.0, 50.0)}

_L = "metarec.learners."
_MLP = (_L + "feature_mlp:FeatureMLP", _L + "feature_mlp:FeatureMLPConfig")
_BIAS = _L + "baselines:BiasConfig"
_SEQ = "metarec.seqrec."
_MML = Impl(_SEQ + "mml:run_variant", _SEQ + "mml:MMLConfig", model=_SEQ + "mml:MMLModel")  # the variants: by name


def _direct(default: dict | None = None) -> Impl:
    """SASRec, GRU4Rec, Full, PT-FT: one network trained on the old users, its DirectConfig ``default``."""
    return Impl(_SEQ + "command:run_direct", _SEQ + "methods:DirectConfig", default or {},
                model=_SEQ + "methods:DirectSeq")


def _rating(target, config, default=None, space=None):
    return {"rating": Impl(target, config, default or {}, space)}


_ENTRIES = [
    # ---- rating family: the four rating states and explicit task files
    Method("melu", "MeLU (KDD'19): MAML over the decision MLP of user/item feature embeddings, second order",
           _rating(*_MLP, {"inner.steps": 1, "inner.lr": 5e-6, "inner.first_order": False},
                   {**_MAML_SPACE, "learner.inner.steps": ("int", 1, 3)})),
    Method("noadapt", "the MeLU network trained on all meta-train interactions, no adaptation",
           _rating(*_MLP, {"train_mode": "pooled", "inner.steps": 0}, {"train.lr": _LR, "train.epochs": _EPOCHS})),
    Method("ptft", "pretrain and fine-tune: the network trained on pooled data, then SGD fine-tuning on each "
           "support set (rating: the MeLU network's MLP; sequential: SASRec's Theta, rate chosen on meta-valid)",
           {"rating": Impl(*_MLP, {"train_mode": "pooled", "inner.steps": 5, "inner.lr": 1e-2,
                                   "inner.first_order": True},
                           {**_MAML_SPACE, "learner.inner.steps": ("int", 1, 10)}),
            "sequential": _direct({"finetune.steps": 5})}),
    Method("metasgd", "Meta-SGD (Li et al. 2017) on the MeLU network: MAML with a learned inner rate per parameter "
           "entry", _rating(*_MLP, {"inner.steps": 1, "inner.lr": 1e-3, "inner.first_order": False,
                                    "inner.learn_lr": "per_param"}, _MAML_SPACE)),
    Method("metacs", "MetaCS (Bharadhwaj 2019) on the MeLU network: MAML with one learned scalar inner rate",
           _rating(*_MLP, {"inner.steps": 1, "inner.lr": 1e-3, "inner.first_order": False,
                           "inner.learn_lr": "scalar"}, _MAML_SPACE)),
    Method("itempop", "item popularity (ranking) / shrunk item mean (rating)",
           _rating(_L + "baselines:ItemPop", _BIAS, space={"learner.reg_item": ("log", 0.1, 100.0)})),
    Method("bias", "global mean + item bias (meta-train) + the new user's offset from the support set",
           _rating(_L + "baselines:BiasModel", _BIAS,
                   space={"learner.reg_item": ("log", 0.1, 100.0), "learner.reg_user": ("log", 0.1, 100.0)})),
    Method("foldin", "matrix factorisation by ALS on meta-train (biased; iALS in the implicit view), the newcomer "
           "folded in by one batched ridge solve on the support set; new items from a ridge map of their attributes",
           _rating(_L + "foldin:FoldIn", _L + "foldin:FoldInConfig",
                   space={f"learner.{k}": v for k, v in _FOLDIN_SPACE.items()})),
    Method("metafold", "fold-in as the inner loop: the closed-form ridge solve on the support set, with the item "
           "side (from ALS), per-dimension penalties and a profile prior meta-trained through it (exact second "
           "order); metarec's own design",
           _rating(_L + "metafold:MetaFold", _L + "metafold:MetaFoldConfig",
                   space={**{f"learner.start.{k}": v for k, v in _FOLDIN_SPACE.items()},
                          "train.lr": ("log", 1e-4, 3e-3), "train.epochs": ("int", 2, 20),
                          "learner.anchor": ("log", 0.1, 100.0)})),
    Method("lwa", "LWA (NIPS'17): logistic regression whose weights are a0*R0 + a1*R1, R = the support set's mean "
           "negative/positive item embeddings",
           _rating(_L + "lwa:LWA", _L + "lwa:LWAConfig",
                   space={"train.lr": ("log", 1e-4, 3e-2), "learner.coef": ("cat", ["scalar", "vector"]),
                          "train.epochs": _EPOCHS})),
    Method("nlba", "NLBA (NIPS'17): shared MLP over item features whose layer biases are generated from the support "
           "set's mean negative/positive item embeddings",
           _rating(_L + "nlba:NLBA", _L + "nlba:NLBAConfig", space={"train.lr": _LR, "train.epochs": _EPOCHS})),
    Method("mamo", "MAMO (KDD'20): MAML whose init is personalised by profile/fast-weight memories, with a "
           "preference memory for the decision layer (defaults: the authors' configs.py)",
           _rating(_L + "mamo:MAMO", _L + "mamo:MAMOConfig",
                   space={"train.lr": _LR, "learner.inner.lr": ("log", 1e-3, 1e-1), "train.epochs": ("int", 3, 20)})),
    Method("tanp", "TaNP (WWW'21): neural process over the support set, decoder FiLM-modulated by a clustered task "
           "embedding; no inner steps (defaults: the authors' train_TaNP.py)",
           _rating(_L + "tanp:TaNP", _L + "tanp:TaNPConfig",
                   space={"train.lr": _LR, "learner.lam": ("log", 0.01, 1.0), "train.epochs": _EPOCHS})),
    # ---- item warm-up family
    Method("base", "the papers' base: new items' ID vectors drawn like the backbone's initial embeddings",
           {"warmup": Impl("metarec.ctr.warmup:RandomInit")}),
    Method("mean", "new items' ID vectors start at the mean of the old items' trained ID vectors",
           {"warmup": Impl("metarec.ctr.warmup:MeanInit")}),
    Method("metaemb", "Meta-Embedding (SIGIR'19): new items' ID embeddings generated from their attributes on a "
           "frozen DeepFM", {"warmup": Impl(_L + "metaemb:MetaEmb", _L + "metaemb:MetaEmbConfig")}),
    Method("mwuf", "MWUF (SIGIR'21): meta scaling/shifting networks warm cold item ID embeddings on a frozen DeepFM",
           {"warmup": Impl(_L + "mwuf:MWUF", _L + "mwuf:MWUFConfig")}),
    # ---- scenario family
    Method("s2meta", "s²Meta (KDD'19): learned init + LSTM update controller + REINFORCE stop controller over "
           "pretrained MF embeddings", {"scenario": Impl(_L + "s2meta:S2Meta", _L + "s2meta:S2MetaConfig")}),
    Method("scenario-itempop", "item popularity in the scenario's training data",
           {"scenario": Impl(_L + "scenario_itempop:ScenarioItemPop", _BIAS)}),
    Method("neumf", "NeuMF (WWW'17): GMF + MLP over ID embeddings, pretrained parts, trained on pooled data",
           {"scenario": Impl(_L + "neumf:NeuMF", _L + "neumf:NeuMFConfig")}),
    Method("scenario-ft", "s²Meta's recommender trained on pooled meta-train scenarios, SGD fine-tuning on D_train",
           {"scenario": Impl(_L + "scenario_ft:ScenarioFT", _L + "scenario_ft:ScenarioFTConfig")}),
    Method("emcdr", "EMCDR (IJCAI'17): MLP mapping of source to target user factors, per scenario",
           {"scenario": Impl(_L + "emcdr:EMCDR", _L + "emcdr:EMCDRConfig")}),
    # ---- sequential family (MML's protocol, Table 2)
    Method("sasrec", "SASRec trained on the old users' sequences (BPR), no adaptation",
           {"sequential": _direct()}),
    Method("gru4rec", "GRU4Rec (item embeddings) trained on the old users' sequences (BPR), no adaptation",
           {"sequential": _direct({"net": "gru4rec"})}),
    Method("full", "Full retrain: SASRec on the old users' sequences plus the new users' warm-up sequences",
           {"sequential": _direct({"with_supports": True})}),
    Method("sml", "SML (SIGIR'20): sequential meta-learning retraining of SASRec with a CNN transfer network over "
           "time periods", {"sequential": Impl(_SEQ + "command:run_sml", _SEQ + "sml:SMLConfig",
                                              model=_SEQ + "sml:SML")}),
    Method("cbml", "CBML (CIKM'21): item+feature self-attention, soft task clusters and a gated MAML "
           "initialisation of the prediction layer",
           {"sequential": Impl(_SEQ + "command:run_cbml", _SEQ + "cbml:CBMLConfig", model=_SEQ + "cbml:CBML")}),
    Method("mml", "MML (CIKM'22): ID learner with feature-aware attention + text/image learners, fusion, generator",
           {"sequential": _MML}),
    Method("mml-nogen", "MML without the item embedding generator (new items keep random ID embeddings; Table 4)",
           {"sequential": _MML}),
    Method("mml-nofusion", "MML with the average of the learners' normalised scores instead of the fusion layer "
           "(Table 4)", {"sequential": _MML}),
    Method("mml-main", "MML's main (ID, feature-aware) learner alone, with the generator",
           {"sequential": _MML}),
    Method("mml-id", "MML_ID: ID-only MAML over SASRec (no modality: vanilla attention, no auxiliary learner, no "
           "generator)", {"sequential": _MML}),
    Method("ptft-mml", "PT-FT with the MML network: plain training on every prefix, fine-tuning on the support",
           {"sequential": _MML}),
]

METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}
assert len(METHODS) == len(_ENTRIES), "a method name is registered twice"


def method(name: str) -> Method:
    if name not in METHODS:
        raise MetarecError(f"unknown learner {name!r}: registered methods are {', '.join(METHODS)}")
    return METHODS[name]


def names(family: str) -> tuple[str, ...]:
    """The methods of one protocol family, in registry order."""
    return tuple(n for n, m in METHODS.items() if family in m.impls)


def for_protocol(protocol: str) -> tuple[str, ...]:
    """The methods that run on ``protocol``."""
    return tuple(n for n, m in METHODS.items() if protocol in m.protocols)


def require(name: str, protocol: str) -> Method:
    """The method ``name``, after one-line stops for an unknown name, an unknown protocol, or a protocol the
    method does not run on (naming a protocol of another family it does run on)."""
    m = method(name)
    fam = family_of(protocol)
    if protocol not in m.protocols:
        other = [p for p in m.protocols if PROTOCOLS[p] != fam]
        hint = f": use --protocol {other[0]}" if other else ""
        raise MetarecError(f"{name} does not run on the {protocol} protocol (it runs on {', '.join(m.protocols)})"
                           f"{hint}; the {protocol} methods are {', '.join(for_protocol(protocol))}")
    return m


def family_of(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise MetarecError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]
