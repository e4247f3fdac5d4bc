"""Domain checks for the frozen config dataclasses, run by their ``__post_init__``: a bad setting stops with
one line (:class:`MetarecError`) when the config is built, before any data is loaded or any epoch runs.

Every field's value must have its default's type (an int field takes an int, not 2.5; a float field a finite
number; a tuple field a tuple); the rules named in :func:`check` add the domain.
"""

from __future__ import annotations

import dataclasses
import math
import re

from metarec.errors import MetarecError

# meta-valid metrics a run can select on: error metrics, AUC, log-loss, and ranking metrics at a cut-off
METRIC = re.compile(r"^(mae|rmse|loss|logloss|auc|(precision|recall|hit|ndcg(_[a-z0-9]+)?|mrr)@[1-9][0-9]*)$")


def _name(section: str, field: str) -> str:
    return f"{section}.{field}" if section else field


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_types(cfg, section: str = "") -> None:
    """Each field's value has the type of its default (None defaults and untyped defaults are not checked)."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        key = _name(section, f.name)
        if default is None or dataclasses.is_dataclass(default):
            continue
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise MetarecError(f"{key} takes true or false, got {v!r}")
        elif _is_int(default):
            if not _is_int(v):
                raise MetarecError(f"{key} takes a whole number, got {v!r}")
        elif isinstance(default, float):
            if not _is_real(v) or not math.isfinite(v):
                raise MetarecError(f"{key} takes a finite number, got {v!r}")
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise MetarecError(f"{key} takes a name, got {v!r}")
        elif isinstance(default, tuple):
            if not isinstance(v, tuple):
                raise MetarecError(f"{key} takes a list such as 64,64, got {v!r}")
            for x in v:
                if not _is_real(x) or not math.isfinite(x) or (default and all(map(_is_int, default))
                                                                and not _is_int(x)):
                    raise MetarecError(f"{key} takes a list of {'whole ' if all(map(_is_int, default)) else ''}"
                                       f"numbers, got {v!r}")


def check(cfg, section: str = "", *, pos_int=(), nonneg_int=(), pos=(), nonneg=(), frac=(), pos_list=(),
          choices: dict | None = None) -> None:
    """Types (:func:`check_types`), then: ``pos_int`` >= 1, ``nonneg_int`` >= 0, ``pos`` > 0 (finite),
    ``nonneg`` >= 0, ``frac`` in [0, 1], ``pos_list`` a list of integers >= 1, ``choices`` {field: allowed
    names (a collection) or a compiled pattern}."""
    check_types(cfg, section)
    for f in pos_int:
        v = getattr(cfg, f)
        if not _is_int(v) or v < 1:
            raise MetarecError(f"{_name(section, f)} must be a positive whole number, got {v!r}")
    for f in nonneg_int:
        v = getattr(cfg, f)
        if not _is_int(v) or v < 0:
            raise MetarecError(f"{_name(section, f)} must be a whole number >= 0, got {v!r}")
    for f in pos:
        v = getattr(cfg, f)
        if not _is_real(v) or not math.isfinite(v) or v <= 0:
            raise MetarecError(f"{_name(section, f)} must be a finite number > 0, got {v!r}")
    for f in nonneg:
        v = getattr(cfg, f)
        if not _is_real(v) or not math.isfinite(v) or v < 0:
            raise MetarecError(f"{_name(section, f)} must be a finite number >= 0, got {v!r}")
    for f in frac:
        v = getattr(cfg, f)
        if not _is_real(v) or not 0 <= v <= 1:
            raise MetarecError(f"{_name(section, f)} must lie between 0 and 1, got {v!r}")
    for f in pos_list:
        v = getattr(cfg, f)
        if not isinstance(v, tuple) or not all(_is_int(x) and x >= 1 for x in v):
            raise MetarecError(f"{_name(section, f)} must be a list of positive whole numbers (e.g. 64,64), "
                               f"got {v!r}")
    for f, allowed in (choices or {}).items():
        v = getattr(cfg, f)
        ok = bool(allowed.match(v)) if isinstance(v, str) and isinstance(allowed, re.Pattern) else v in allowed
        if not ok:
            known = ("a metric such as rmse, mae, auc, logloss, ndcg@10, recall@20"
                     if isinstance(allowed, re.Pattern) else "one of " + ", ".join(map(str, allowed)))
            raise MetarecError(f"unknown {_name(section, f)} {v!r}: choose {known}")
