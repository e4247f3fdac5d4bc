"""Why MWUF falls behind the base method at warm-b and warm-c on ml-100k: ablations of eq. 21 at warm-up time.

MWUF warms a new item's ID vector as ``v = raw * scale(x_i) + shift(U_i)``. Its meta networks are trained on
old items with U_i the mean of the k users of one minibatch; in the protocol, U_i is the mean over every
warm-up user seen so far (k, 2k, 3k). For one trained MWUF per seed (exactly as ``metarec warmup`` trains it),
this script runs the warm-up protocol with:

- ``mwuf``: as in the tables;
- ``mwuf, U_i of the last batch``: U_i from the latest k users only, the distribution the shifting network
  was trained on;
- ``scale only`` (shift = 0) and ``shift only`` (scale = 1);
- the ``base`` and ``mean`` methods for reference, and ``mean`` with the warm-up rate multiplied by the mean
  of scale^2 (a step on ``raw`` moves v by scale^2 * lr * grad_v: MWUF's effective rate).

These are diagnostics on the protocol's test interactions; nothing is selected with them.

Run: .venv/bin/python studies/mwuf_diagnosis.py [--dataset ml-100k] [--seeds 0 1 2]
Writes docs/results/warmup/mwuf_diagnosis_DATASET.{json,md}.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metarec.ctr.warmup import PHASES, WarmupRun, dataset_defaults, make_method, prepare_warmup, run_protocol
from metarec.data.registry import load_dataset
from metarec.io import code_version, write_json, write_text
from metarec.nets.deepfm import DeepFM, fit_backbone
from metarec.report import markdown_table


class _Variant:
    """MWUF's initialisation with eq. 21 cut down at warm-up time: "scale" (shift = 0), "shift" (scale = 1)."""

    def __init__(self, mwuf, mode: str):
        self.m, self.mode = mwuf, mode

    def init_embeddings(self, items):
        return self.m.init_embeddings(items)

    def effective(self, raw, items, user_mean):
        m = self.m
        if self.mode == "full":
            return m.effective(raw, items, user_mean)
        x = m.backbone.item_side(items).flatten(-2).detach()
        u = m.mean_user.expand(len(items), -1) if user_mean is None else user_mean
        scale = torch.ones_like(raw) if self.mode == "shift" else m.scale_net(x)
        shift = torch.zeros_like(raw) if self.mode == "scale" else m.shift_net(u.detach())
        return raw * scale + shift


def diagnose(dataset: str, seed: int) -> list[dict]:
    run = WarmupRun(warmup=dataset_defaults(dataset))
    data = prepare_warmup(load_dataset(dataset), run.warmup)
    torch.manual_seed(seed)
    backbone = DeepFM(data.ctx, run.backbone)
    b = data.split.base
    fit_backbone(backbone, b["user"].to_numpy(), b["item"].to_numpy(), b["label"].to_numpy(), run.backbone, seed,
                 progress=False)
    upd, eb = run.warmup.update, run.warmup.eval_batch
    rows = []
    for name in ("base", "mean"):
        method, _ = make_method(name, run, data, backbone, seed, progress=False)
        rows.append({"variant": name, "seed": seed, "phases": run_protocol(backbone, method, data, upd, eb)})
    mwuf, _ = make_method("mwuf", run, data, backbone, seed, progress=False)
    with torch.no_grad():
        x = backbone.item_side(data.new_items).flatten(-2)
        scale = mwuf.scale_net(x)
        shift = mwuf.shift_net(mwuf.mean_user.expand(len(data.new_items), -1))
        v0 = mwuf.init_embeddings(data.new_items)
    stats = {"scale_mean": float(scale.mean()), "scale_std": float(scale.std()),
             "shift_norm_over_v_norm": float(shift.norm(dim=1).mean() / v0.norm(dim=1).mean())}
    # the warm-up step moves v = raw * scale + shift by scale^2 * lr * grad_v: the same rate for "mean" as a control
    s2 = float((scale ** 2).mean())
    mean_init, _ = make_method("mean", run, data, backbone, seed, progress=False)
    rows.append({"variant": "mean, rate x mean(scale^2)", "seed": seed, "rate": upd.lr * s2,
                 "phases": run_protocol(backbone, mean_init, data, replace(upd, lr=upd.lr * s2), eb)})
    for mode, seen, label in (("full", "all", "mwuf"), ("full", "last", "mwuf, U_i of the last batch"),
                              ("scale", "all", "mwuf, scale only"), ("shift", "all", "mwuf, shift only")):
        phases = run_protocol(backbone, _Variant(mwuf, mode), data, upd, eb, users_seen=seen)
        extra = {"stats": stats} if label == "mwuf" else {}
        rows.append({"variant": label, "seed": seed, "phases": phases, **extra})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    cmd = (f".venv/bin/python studies/mwuf_diagnosis.py --dataset {args.dataset} "
           f"--seeds {' '.join(map(str, args.seeds))}")
    version = code_version()
    rows = [r for s in args.seeds for r in diagnose(args.dataset, s)]
    labels = list(dict.fromkeys(r["variant"] for r in rows))
    table = []
    for lab in labels:
        rs = [r for r in rows if r["variant"] == lab]
        cells = [lab]
        for ph in PHASES:
            v = np.array([r["phases"][ph]["auc"] for r in rs])
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        table.append(cells)
    stats = [r["stats"] for r in rows if "stats" in r]
    text = [f"# MWUF ablations at warm-up time, {args.dataset}", "", f"Command: `{cmd}` (code: {version})", "",
            "AUC on the new items' test interactions, mean ± std over seeds "
            f"{', '.join(map(str, args.seeds))}; one trained MWUF per seed, modified only at warm-up time. "
            "Diagnostics: nothing here selects a setting.", "",
            markdown_table(["variant", *PHASES], table), "",
            "Trained networks on the new items (mean over seeds): scale "
            f"{np.mean([s['scale_mean'] for s in stats]):.3f} (std over entries "
            f"{np.mean([s['scale_std'] for s in stats]):.3f}); |shift| / |initial vector| "
            f"{np.mean([s['shift_norm_over_v_norm'] for s in stats]):.3f}.", ""]
    out = Path(f"docs/results/warmup/mwuf_diagnosis_{args.dataset}")
    write_json(out.with_suffix(".json"), {"command": cmd, "code": version, "results": rows})
    write_text(out.with_suffix(".md"), "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
