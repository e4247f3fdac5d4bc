"""The Learner families' view of the one registry (:mod:`metarec.registry`): name -> class,
config class, default config, summary and tuning space, as the learners' runners consume them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from metarec import registry


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
    family: str = "rating"


def _named(cls, name):
    """A subclass that saves under ``name`` (several registry entries share one class with other defaults)."""
    return type(cls.__name__ + "_" + name.replace("-", "_"), (cls,), {"name": name})


def _spec(name: str, family: str) -> LearnerSpec:
    m = registry.METHODS[name]
    impl = m.impls[family]
    cls = impl.load()
    if getattr(cls, "name", "") != name:
        cls = _named(cls, name)
    return LearnerSpec(name, cls, impl.config_cls(), impl.make_config, m.summary, impl.space, family)


# every Learner subclass of the registry: those that `metarec train`/`compare` (rating states, task files) and
# `metarec scenario` build, and the warm-up learners (MetaEmb, MWUF) that `load_learner` reads back
LEARNERS: dict[str, LearnerSpec] = {**{n: _spec(n, "rating") for n in registry.names("rating")},
                                    **{n: _spec(n, "scenario") for n in registry.names("scenario")},
                                    **{n: _spec(n, "warmup") for n in registry.names("warmup")
                                       if registry.METHODS[n].impls["warmup"].config}}
