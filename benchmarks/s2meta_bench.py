"""s²Meta benchmark: meta-training throughput (scenarios/s) and peak memory, and evaluation throughput.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/s2meta_bench.py [--dataset ml-100k] [--steps 4]
[--out-dir docs/benchmarks]``. Writes ``s2meta.json`` (every figure + machine info) and ``s2meta.md``.

Workload: the scenario protocol of ``metarec scenario`` (default config, seed 0) on the dataset; MF
embeddings from the cache (computed first if missing, not timed). One meta-training step is
``learner.meta_loss(collate(meta_batch))``, ``backward``, gradient clipping and an Adam step, as in
``metarec.engine.train.fit``; meta-batches cycle over the meta-train scenarios in a fixed order. Variants:
the complete learner as initialised (learned stop, T_max 40: the number of inner steps varies with the stop
policy, it is reported; trained policies ran about 30 steps on ml-100k), FixedStep (exactly 20 inner steps),
FixedStep with activation checkpointing (``checkpoint=True``: the memory it saves and the time it costs), and
exactly 40 steps (the T_max workload). Timing: one warm-up step, then ``--steps`` timed steps; scenarios/s =
scenarios / wall time. Peak memory: the process's peak RSS (VmHWM, reset through ``/proc/self/clear_refs`` after
``malloc_trim``) during the timed steps minus the RSS before them. Evaluation: ``evaluate_scenarios`` over
the meta-test scenarios (adaptation + ranking of every scenario item for every test user).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import PeakRSS  # noqa: E402  (one peak-RSS meter for every benchmark)

from metarec.io import write_json, write_text
from metarec.learners.s2meta import S2Meta, S2MetaConfig
from metarec.report import markdown_table
from metarec.scenario_run import make_run, prepare
from metarec.scenarios import evaluate_scenarios
from metarec.tasks import collate


def bench_training(prep, cfg: S2MetaConfig, meta_batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    learner = S2Meta(prep.ctx, cfg)
    learner.set_embeddings(prep.users, prep.items)
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    tasks = prep.data.train
    batches = [collate([tasks[(j * meta_batch + b) % len(tasks)] for b in range(meta_batch)]) for j in range(steps + 1)]

    def step(batch):
        loss = learner.meta_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        return learner.last_steps

    step(batches[0])
    inner = []
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for b in batches[1:]:
            inner.append(step(b))
        wall = time.perf_counter() - t0
    return {"meta_batch": meta_batch, "steps": steps, "seconds": wall, "scenarios_per_s": steps * meta_batch / wall,
            "mean_inner_steps": sum(inner) / len(inner), "peak_rss_delta_mib": mem.result()["peak_delta_mib"],
            "hwm_reset": mem.reset, "coordinates": sum(int(torch.tensor(s).prod()) for s in learner.shapes.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--meta-batch", type=int, nargs="+", default=[4])
    ap.add_argument("--out-dir", default="docs/benchmarks")
    args = ap.parse_args()
    t_start = time.perf_counter()
    run, lcfg = make_run("s2meta", args.dataset, 0, {})
    prep = prepare(run)
    variants = {"complete (untrained stop policy)": lcfg, "FixedStep 20": replace(lcfg, stop="fixed"),
                "FixedStep 20, checkpointing": replace(lcfg, stop="fixed", checkpoint=True),
                "40 steps (T_max)": replace(lcfg, stop="fixed", fixed_steps=lcfg.max_steps)}
    rows, train = [], []
    for name, cfg in variants.items():
        for B in args.meta_batch:
            r = {"variant": name, **bench_training(prep, cfg, B, args.steps)}
            train.append(r)
            rows.append([name, B, f"{r['mean_inner_steps']:.1f}", f"{r['scenarios_per_s']:.2f}",
                         f"{r['seconds'] / r['steps']:.2f}", f"{r['peak_rss_delta_mib']:.0f}"])
            print(rows[-1], flush=True)
    torch.manual_seed(0)
    learner = S2Meta(prep.ctx, lcfg)
    learner.set_embeddings(prep.users, prep.items)
    t0 = time.perf_counter()
    ev = evaluate_scenarios(learner, prep.data.test, prep.data.train_codes)
    ev_s = time.perf_counter() - t0
    info = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_1min": os.getloadavg()[0]}
    res = {"dataset": args.dataset, "scenarios": prep.data.describe(), "learner_config": asdict(lcfg),
           "training": train, "evaluation": {"scenarios": ev["tasks"], "users": ev["users"], "seconds": ev_s,
                                             "scenarios_per_s": ev["tasks"] / ev_s, "users_per_s": ev["users"] / ev_s,
                                             "inner_steps": ev.get("inner_steps")},
           "machine": info, "total_seconds": time.perf_counter() - t_start}
    out = Path(args.out_dir)
    write_json(out / "s2meta.json", res)
    table = markdown_table(["variant", "meta-batch", "inner steps", "scenarios/s", "s/meta-step",
                            "peak RSS delta MiB"], rows)
    write_text(out / "s2meta.md", "\n".join([
        "# s²Meta benchmark", "",
        f"Produced by `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/s2meta_bench.py --dataset {args.dataset} "
        f"--steps {args.steps} --meta-batch {' '.join(map(str, args.meta_batch))}` on {info['date']} "
        f"({info['threads']} thread(s), torch {info['torch']}, 1-minute load {info['load_avg_1min']:.2f} on a shared "
        "2-core machine).", "",
        f"{args.dataset} scenario protocol, seed 0: {len(prep.data.train)} meta-train scenarios, recommender of "
        f"{train[0]['coordinates']} parameters (coordinates of the update LSTMs), T_max {lcfg.max_steps}. One "
        "meta-step = meta_loss + backward + clipping + Adam over the meta-batch; the coordinate-wise LSTMs run on "
        "all scenarios' coordinates at once. Peak RSS delta: VmHWM (reset before) during the timed steps minus the "
        "RSS before them.", "", table, "",
        f"Evaluation (adaptation + ranking every scenario item for every test user, untrained learner): "
        f"{ev['tasks']} meta-test scenarios, {ev['users']} users in {ev_s:.1f} s "
        f"({ev['tasks'] / ev_s:.2f} scenarios/s, {ev['users'] / ev_s:.0f} users/s).", ""]))
    print(table)
    print(f"wrote {out / 's2meta.md'} and {out / 's2meta.json'}")


if __name__ == "__main__":
    main()
