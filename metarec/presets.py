"""Named presets: per-learner sets of config overrides kept in a JSON store (``metarec/presets.json``).

The store maps ``learner -> preset name -> entry``; an entry is ``{"overrides": {"train.lr": 0.001, ...},
"command": "...", "code": "...", "note": "...", "when": {"view": "explicit"}}`` (everything but "overrides"
is optional). Keys of "overrides" are the ``--section.field`` keys of the command line.

Which preset a run uses:

- ``--preset NAME`` (or ``LEARNER@preset=NAME`` in compare/curve): that preset, whatever its "when" says.
- ``paper``: the published settings of the learner's paper, which are exactly the registry defaults; a learner
  without a "paper" entry in the store gets the registry defaults under that name.
- no ``--preset``: the learner's *working default*, the preset named ``default`` or ``default-SOMETHING`` whose
  "when" (a mapping of run fields ``dataset``, ``protocol``, ``view`` to the value they must have; absent:
  always) matches the run; if several match, the one with the most conditions wins, then the first in the
  file. If none matches, the registry defaults (= ``paper``).

Explicit overrides (``--config``, ``--a.b=value``, ``NAME@a.b=value``) always win over the preset.
"""

from __future__ import annotations

import json
from pathlib import Path

from metarec.errors import MetarecError

PRESETS_PATH = Path(__file__).with_name("presets.json")
AUTO = "auto"  # the preset argument that means "the learner's working default, if one matches the run"
PAPER = "paper"
WHEN_KEYS = ("dataset", "protocol", "view")


def load_store(path: Path | str | None = None) -> dict:
    """The preset store at ``path`` (default: the one shipped with metarec); a missing file is an empty store."""
    p = Path(path) if path is not None else PRESETS_PATH
    if not p.is_file():
        if path is not None:
            raise MetarecError(f"{p}: no such preset file")
        return {}
    try:
        store = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MetarecError(f"{p}: not a preset file ({type(e).__name__})") from None
    if not isinstance(store, dict):
        raise MetarecError(f"{p}: a preset file maps learner -> preset name -> entry")
    for learner, presets in store.items():
        for name, entry in (presets.items() if isinstance(presets, dict) else [(None, None)]):
            if not isinstance(entry, dict) or not isinstance(entry.get("overrides"), dict):
                raise MetarecError(f"{p}: preset {learner}/{name} needs an \"overrides\" mapping")
            when = entry.get("when", {})
            if not isinstance(when, dict) or set(when) - set(WHEN_KEYS):
                raise MetarecError(f"{p}: preset {learner}/{name}: \"when\" may only name {', '.join(WHEN_KEYS)}")
    return store


def preset_names(store: dict, learner: str) -> list[str]:
    """The presets a learner can use (``paper`` always)."""
    names = list(store.get(learner, {}))
    return names if PAPER in names else [PAPER, *names]


def resolve(store: dict, learner: str, preset: str | None, dataset: str, protocol: str, view: str) -> tuple[str, dict]:
    """``(name, overrides)`` of the preset a run uses: ``preset`` None means none ("", {}), :data:`AUTO` the
    matching working default (or "" if none matches), anything else that named preset."""
    presets = store.get(learner, {})
    if preset is None:
        return "", {}
    if preset == AUTO:
        run = {"dataset": dataset, "protocol": protocol, "view": view}
        best, best_n = None, -1
        for name, entry in presets.items():
            if name != "default" and not name.startswith("default-"):
                continue
            when = entry.get("when", {})
            if all(run[k] == v for k, v in when.items()) and len(when) > best_n:
                best, best_n = name, len(when)
        return (best, dict(presets[best]["overrides"])) if best is not None else ("", {})
    if preset in presets:
        return preset, dict(presets[preset]["overrides"])
    if preset == PAPER:
        return PAPER, {}
    raise MetarecError(f"learner {learner!r} has no preset {preset!r}; its presets: "
                       f"{', '.join(preset_names(store, learner))}")


def save_preset(path: Path | str | None, learner: str, name: str, entry: dict) -> Path:
    """Add or replace preset ``name`` of ``learner`` in the store at ``path`` (atomically); returns the path."""
    from metarec.io import write_json

    if not name or name in (AUTO,) or "," in name or "=" in name:
        raise MetarecError(f"{name!r} cannot name a preset")
    p = Path(path) if path is not None else PRESETS_PATH
    store = load_store(p) if p.is_file() else {}  # read just before writing: others may have added presets
    store.setdefault(learner, {})[name] = entry
    write_json(p, store)
    return p
