"""Store metafold's presets for the states with new items (item-cold, user-item-cold).

metafold's tuned presets come from user-cold, where every candidate item has ID factors and its content map is
never used. Where candidates are new items, the content map decides, and it is trained only when ``id_dropout``
hides meta-train items' IDs during meta-training (DropoutNet's trick). This script copies each tuned explicit
``default-DATASET`` preset of metafold into ``default-DATASET-STATE`` (``"when"`` adds the protocol, so it wins in
that state) with ``learner.id_dropout`` set to the value chosen on the meta-valid tasks of seed 0 of ml-1m
item-cold, from {0, 0.3}: explicit RMSE 1.0987 -> 1.0921 at 0.3 (in user-cold 0.3 costs 0.8715 -> 0.8738, hence
per state); implicit NDCG@10 0.0463 -> 0.0390, so the implicit presets keep 0.
Run: ``.venv/bin/python docs/results/tuning/new_item_presets.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from metarec.io import code_version  # noqa: E402
from metarec.presets import PRESETS_PATH, load_store, save_preset  # noqa: E402

ID_DROPOUT = 0.3
STATES = ("item-cold", "user-item-cold")


def main() -> None:
    store = load_store(PRESETS_PATH)
    for name, entry in list(store.get("metafold", {}).items()):
        when = entry.get("when", {})
        if not name.startswith("default-") or "protocol" in when or when.get("view") != "explicit":
            continue
        for state in STATES:
            new = {"overrides": {**entry["overrides"], "learner.id_dropout": ID_DROPOUT},
                   "when": {**when, "protocol": state},
                   "command": ".venv/bin/python docs/results/tuning/new_item_presets.py",
                   "code": code_version(),
                   "note": f"{name} (tuned on user-cold) with learner.id_dropout={ID_DROPOUT} for the {state} state "
                           "(chosen on ml-1m item-cold meta-valid, seed 0; see the script)"}
            save_preset(PRESETS_PATH, "metafold", f"{name}-{state}", new)
            print(f"metafold/{name}-{state}")


if __name__ == "__main__":
    main()
