"""Composing frozen config dataclasses: YAML files and ``--a.b=value`` overrides, passed in, never global."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from metarec.errors import MetarecError


def apply_overrides(cfg, overrides: dict, where: str = ""):
    """A copy of dataclass ``cfg`` with nested ``overrides`` ({"train": {"epochs": 3}} or {"train.epochs": 3})."""
    nested: dict = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, dict):
            nested.setdefault(head, {}).update(value)
        else:
            nested[head] = value
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in nested.items():
        if key not in names:
            raise MetarecError(f"unknown config key {where + key!r}; known: {', '.join(sorted(names))}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MetarecError(f"config key {where + key!r} is a section; set its fields, e.g. {key}.x=...")
            changes[key] = apply_overrides(current, value, where + key + ".")
        else:
            changes[key] = _coerce(value, current, where + key)
    try:
        return dataclasses.replace(cfg, **changes)
    except TypeError as e:
        raise MetarecError(f"bad config: {e}") from None


def _number(text: str, key: str):
    try:  # YAML 1.1 reads "1e-3" as a string; numbers are numbers here
        return float(text) if any(c in text.lower() for c in ".en") else int(text)
    except ValueError:
        raise MetarecError(f"config key {key!r} takes a number, got {text!r}") from None


def _coerce(value, current, key):
    if isinstance(current, tuple) and isinstance(value, str):  # a list field: "64,64", "[64, 64]", "64" or ""
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise MetarecError(f"config key {key!r}: cannot parse {value!r} as a list") from None
        else:
            value = [p.strip() for p in text.split(",")] if text else []
        if not isinstance(value, list):
            raise MetarecError(f"config key {key!r} takes a list such as 64,64, got {value!r}")
        numeric = all(isinstance(c, int | float) for c in current)  # an empty default: a list of numbers
        value = [_number(v, key) if numeric and isinstance(v, str) else v for v in value]
    if isinstance(value, str) and isinstance(current, int | float) and not isinstance(current, bool):
        try:  # YAML 1.1 reads "1e-3" as a string; numbers are numbers here
            value = float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            raise MetarecError(f"config key {key!r} takes a number, got {value!r}") from None
    if isinstance(value, str) and not isinstance(current, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise MetarecError(f"config key {key!r}: cannot parse {value!r}") from None
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise MetarecError(f"config key {key!r} takes true or false, got {value!r}")
        return value
    if isinstance(current, int | float) and not isinstance(current, bool):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MetarecError(f"config key {key!r} takes a number, got {value!r}")
        if isinstance(current, int) and not float(value).is_integer():  # never truncate 2.5 to 2
            raise MetarecError(f"config key {key!r} takes a whole number, got {value!r}")
        return type(current)(value)
    if isinstance(current, tuple):
        if value is None:
            return ()
        return tuple(value) if isinstance(value, list | tuple) else (value,)
    return value


def parse_override_args(extra: list[str]) -> dict:
    out = {}
    for a in extra:
        if not a.startswith("--") or "=" not in a:
            raise MetarecError(f"unrecognised argument {a!r}; config overrides look like --train.epochs=5")
        k, v = a[2:].split("=", 1)
        out[k] = v
    return out


def read_config_file(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise MetarecError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise MetarecError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise MetarecError(f"{p}: the config file must hold a mapping")
    return data


def config_from_dict(cls, d: dict):
    """Rebuild a (possibly nested) frozen config dataclass from ``asdict`` output. A class's ``renamed`` (old field
    name -> new) reads what older files wrote under a field's former name."""
    d = {getattr(cls, "renamed", {}).get(k, k): v for k, v in d.items()}
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        sub = default.__class__ if dataclasses.is_dataclass(default) else None
        if sub is not None and isinstance(v, dict):
            v = config_from_dict(sub, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


def parse_entry(entry: str) -> tuple[str, str, dict]:
    """A learner entry of ``compare``/``curve`` (every protocol family): ``[LABEL=]NAME[@key=value,key=value]`` ->
    (name, label, per-learner overrides). Without ``LABEL=`` the whole entry is its label; ``preset=P`` among the
    overrides names the learner's preset (the rating runner takes it out)."""
    head, at, rest = entry.partition("@")
    label, eq, name = head.partition("=")
    if not eq:
        label, name = entry, head
    own = {}
    for kv in filter(None, rest.split(",")) if at else []:
        if "=" not in kv:
            raise MetarecError(f"learner entry {entry!r}: overrides look like NAME@train.lr=1e-3,learner.inner.lr=0.01")
        k, v = kv.split("=", 1)
        own[k] = v
    return name, label, own
