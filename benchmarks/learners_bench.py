"""Meta-training throughput and peak memory of every task-based learner (issue 4's benchmark record).

Run: ``.venv/bin/python benchmarks/learners_bench.py [--quick] [--out-dir docs/benchmarks] [--learners A B ...]``
Writes ``learners.json`` and ``learners.md`` in ``--out-dir``.

Workload: real ml-100k user-cold meta-train tasks (split by time, seed 0, MeLU sizing: 13 to 100
interactions, 10 query), the view each learner's paper uses (explicit ratings + MSE, or implicit feedback
with 4 sampled negatives per positive + BCE), each learner with its registered defaults. One timed step is
``collate`` of 32 tasks + ``meta_loss`` + ``backward`` + ``Adam.step`` (what ``fit`` does per meta-batch);
figures are medians over repeats of tasks/s, after warm-up steps, with 2 threads (``--threads``). Peak
memory: the growth of the process's peak RSS (VmHWM reset before) over the warm-up and timed steps.
Adaptation: tasks/s of ``adapt`` + full-ranking ``score_items`` over all candidate items, under
``no_grad``, meta-batches of 32. The CPU used by other processes during the timings is recorded: a
contended figure is flagged.

MetaEmb and MWUF (view ``warmup``) work on items, under their papers' protocol: ml-100k item warm-up
(``metarec warmup`` defaults), tasks = old items with two disjoint minibatches of k interactions, a frozen
DeepFM backbone (trained for one epoch here: the speed does not depend on its quality). Their training step
is the same collate + meta_loss + backward + Adam; "adapt" is the warm-up update of 32 new items' ID vectors
on their first warm-up batch and the scores of those k (user, item) pairs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import CONTENDED, CpuMeter, PeakRSS, machine_info, wait_for_quiet  # noqa: E402

from metarec.io import write_json, write_text  # noqa: E402
from metarec.learners.registry import LEARNERS  # noqa: E402
from metarec.pipeline import make_config, prepare  # noqa: E402
from metarec.tasks import collate  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/learners_bench.py"
META_BATCH = 32
THREADS = 2
# learner -> the view its paper evaluates (issue 4: user-cold methods beside MeLU)
WORKLOADS = {"melu": "explicit", "metasgd": "explicit", "metacs": "explicit", "mamo": "explicit",
             "tanp": "explicit", "lwa": "implicit", "nlba": "implicit", "noadapt": "explicit",
             "metaemb": "warmup", "mwuf": "warmup"}


def batches(tasks: list, seed: int = 0) -> list[list]:
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(tasks), generator=g).tolist()
    return [[tasks[j] for j in order[i:i + META_BATCH]] for i in range(0, len(order) - META_BATCH + 1, META_BATCH)]


def warmup_workload(preps: dict) -> dict:
    """ml-100k item warm-up: data, a one-epoch backbone, the old items' meta-training tasks (shared by both)."""
    if "warmup" not in preps:
        from dataclasses import replace

        from metarec.ctr.warmup import WarmupRun, dataset_defaults, item_tasks, prepare_warmup
        from metarec.data.registry import load_dataset
        from metarec.nets.deepfm import DeepFM, fit_backbone

        run = WarmupRun(warmup=dataset_defaults("ml-100k"))
        run = replace(run, backbone=replace(run.backbone, epochs=1))
        data = prepare_warmup(load_dataset("ml-100k"), run.warmup)
        torch.manual_seed(0)
        bb = DeepFM(data.ctx, run.backbone)
        b = data.split.base
        fit_backbone(bb, b["user"].to_numpy(), b["item"].to_numpy(), b["label"].to_numpy(), run.backbone, 0,
                     progress=False)
        users, labels = data.phases[0]  # (N, k): the first warm-up batch of every new item
        preps["warmup"] = {"run": run, "data": data, "backbone": bb,
                           "train": item_tasks(b, data.split.old_items, run.warmup.k, 0),
                           "new": (data.new_items, users, labels)}
    return preps["warmup"]


def warmup_learner(name: str, w: dict):
    from dataclasses import replace

    from metarec.learners.metaemb import MetaEmb
    from metarec.learners.mwuf import MWUF

    run = w["run"]
    cfg = replace(getattr(run, name), backbone=run.backbone, update=run.warmup.update)
    cls = {"metaemb": MetaEmb, "mwuf": MWUF}[name]
    return cls(w["data"].ctx, cfg, backbone=w["backbone"])


def warmup_adapt_rate(learner, w: dict) -> tuple[float, int, int]:
    """Items/s of the warm-up update on each new item's first batch plus the scores of its k pairs."""
    from metarec.tasks import Task

    items, users, labels = w["new"]
    tasks = [Task(int(i), u.numpy(), np.full(len(u), int(i)), y.numpy(), u.numpy(), np.full(len(u), int(i)),
                  y.numpy()) for i, u, y in zip(items, users, labels, strict=True)]
    t0 = time.perf_counter()
    with torch.no_grad():
        for j in range(0, len(tasks), META_BATCH):
            b = collate(tasks[j:j + META_BATCH])
            learner.adapt(b).score(b.q_user, b.q_item)
    return len(tasks) / (time.perf_counter() - t0), len(tasks), int(users.shape[1])


def bench_one(name: str, view: str, preps: dict, repeats: int, steps: int, budget: list[float]) -> dict:
    torch.manual_seed(0)
    if view == "warmup":
        w = warmup_workload(preps)
        learner, train_tasks = warmup_learner(name, w), w["train"]
    else:
        run, lcfg = make_config(name, "ml-100k", "user-cold", 0, view, {})
        if view not in preps:
            preps[view] = prepare(run)
        prep = preps[view]
        torch.manual_seed(0)
        learner, train_tasks = LEARNERS[name].cls(prep.ctx, lcfg), prep.train
    opt = torch.optim.Adam([p for p in learner.parameters() if p.requires_grad], lr=1e-4, fused=True)
    bs = batches(train_tasks)

    def step(tasks):
        opt.zero_grad(set_to_none=True)
        learner.meta_loss(collate(tasks)).backward()
        opt.step()

    wait_for_quiet(budget)
    with PeakRSS() as mem:
        for j in range(3):
            step(bs[j % len(bs)])
        rates, foreign = [], []
        for r in range(repeats):
            meter = CpuMeter()
            t0 = time.perf_counter()
            for j in range(steps):
                step(bs[(r * steps + j) % len(bs)])
            rates.append(steps * META_BATCH / (time.perf_counter() - t0))
            foreign.append(meter.foreign_cores())
    if view == "warmup":
        adapt_rate, n_eval, n_cand = warmup_adapt_rate(learner, w)
    else:
        eval_tasks = prep.valid + prep.test
        items = torch.as_tensor(prep.candidates)
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(eval_tasks), META_BATCH):
                learner.adapt(collate(eval_tasks[i:i + META_BATCH])).score_items(items)
        adapt_rate, n_eval, n_cand = len(eval_tasks) / (time.perf_counter() - t0), len(eval_tasks), len(items)
    n_params = sum(p.numel() for p in learner.parameters() if p.requires_grad)
    return {"learner": name, "view": view, "tasks_per_s": statistics.median(rates), "repeats": rates,
            "peak_rss_delta_mib": mem.result()["peak_delta_mib"], "params": n_params,
            "adapt_rank_tasks_per_s": adapt_rate, "eval_tasks": n_eval, "candidates": n_cand,
            "max_foreign_cpu_cores": max(foreign), "contended": max(foreign) > CONTENDED,
            "summary": LEARNERS[name].summary}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Learners benchmark", "",
             f"Produced by `{res['command']}` on {m['date']} ({m['cpu_model']}, {m['threads']} threads of "
             f"{m['cpu_count']} cores, torch {m['torch']}).", "",
             "ml-100k user-cold meta-train tasks (MeLU sizing), meta-batch 32, each learner with its registered "
             "defaults and its paper's view. Training: collate + meta_loss + backward + Adam per meta-batch "
             "(median of repeats). Adapt + rank: adaptation to the meta-valid + meta-test tasks and scores of "
             "every candidate item, under no_grad. MetaEmb and MWUF (view warmup): ml-100k item warm-up tasks "
             "(an old item's two minibatches of k = 10) on a frozen DeepFM; adapt = the warm-up update of new "
             "items' ID vectors on their first batch and the scores of its k pairs (items/s). See the script's "
             "docstring for details.", "",
             "| learner | view | train tasks/s | adapt + full-ranking tasks/s | peak RSS growth MiB "
             "| trainable parameters | other processes (cores) |",
             "|---|---|---|---|---|---|---|"]
    for r in res["results"]:
        flag = " (contended)" if r["contended"] else ""
        lines.append(f"| {r['learner']} | {r['view']} | {r['tasks_per_s']:.0f} | {r['adapt_rank_tasks_per_s']:.0f} | "
                     f"{r['peak_rss_delta_mib']:.1f} | {r['params']:,} | {r['max_foreign_cpu_cores']:.2f}{flag} |")
    lines += ["", "Figures from a shared two-core machine vary between runs; compare rows of one run only.", "",
              "The fold-in learners (`foldin`, `metafold`) against MeLU, PT-FT and TaNP on adapt + full ranking of "
              "every ml-1m meta-test user, one thread: [fullrank.md](fullrank.md) "
              "(`.venv/bin/python benchmarks/fullrank_bench.py`)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (a smoke run)")
    ap.add_argument("--out-dir", default="docs/benchmarks")
    ap.add_argument("--learners", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--max-wait", type=float, default=60.0, help="seconds in all to wait for a quiet machine")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="torch threads (1 on a busy machine: two-thread kernels collapse under contention)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats, steps = (2, 3) if args.quick else (5, 8)
    budget, preps, results = [args.max_wait], {}, []
    for name in args.learners:
        r = bench_one(name, WORKLOADS[name], preps, repeats, steps, budget)
        results.append(r)
        print(f"{name:8s} {r['view']:8s} train {r['tasks_per_s']:8.1f} tasks/s  adapt+rank "
              f"{r['adapt_rank_tasks_per_s']:8.1f} tasks/s  peak RSS +{r['peak_rss_delta_mib']:.1f} MiB"
              f"{'  (contended)' if r['contended'] else ''}")
    res = {"command": COMMAND + (" --quick" if args.quick else "") +
           (f" --threads {args.threads}" if args.threads != THREADS else "") +
           (f" --learners {' '.join(args.learners)}" if args.learners != list(WORKLOADS) else ""),
           "machine": machine_info(), "meta_batch": META_BATCH, "repeats": repeats, "steps_per_repeat": steps,
           "results": results}
    out = Path(args.out_dir)
    write_json(out / "learners.json", res)
    write_text(out / "learners.md", markdown(res))
    print(f"wrote {out / 'learners.json'} and {out / 'learners.md'}")


if __name__ == "__main__":
    main()
