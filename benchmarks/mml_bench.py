"""MML speed: inference cost per request against the paper's O(n^2 d L + c) (4.5), and training throughput.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mml_bench.py [--quick] [--threads 1] [--out-dir docs/benchmarks]``
Writes ``mml.json`` (every figure) and ``mml.md`` (tables) in ``--out-dir``.

Workload (synthetic, so that n and c can be varied freely; weights random, which does not change the cost):
the full MML network of ``metarec.seqrec.mml`` (ID learner with feature-aware attention over one text
modality of 384-d features, a text learner, the fusion layer, the generator with K = 10 neighbours;
d = 64, 2 blocks, 1 head, max_len 50), 5 local SGD steps at meta-test as in training.

(1) Latency of one request (one new user, batch 1): a sequence of n items whose support is the first n - 1
    prefixes, ``new_share`` of them new items. Timed parts:
    - generator: exact top-K retrieval (matmul + topk over the c_old trained items, or faiss IndexFlatIP
      when faiss-cpu is installed; the pool's unit vectors / index are built once, outside the timing, as a
      server keeps them) for the sequence's new items, and their generated embeddings (eq. 14-17);
    - adaptation: the 5 local steps of every learner on the support prefixes (``_adapt_theta``);
    - ranking: the learners' outputs at the last position, scores of all c items, the fusion (eq. 9-13).
    Grids: n in {10, 25, 50} at c = 10,000, and c in {1,000, 10,000, 30,000} at n = 50 (building a model
    precomputes every item's neighbours, c x c_old dot products: 100,000 items would take minutes here).
(2) Throughput of batched requests: 64 new users per call, n = 15 (the protocol's 10 warm-up + 5 query
    items), c = 1,682 and 3,706 (ml-100k, ml-1m): users per second of adapt + score at 5 query positions.
(3) Training throughput: stage 1 (meta-learners, MAML second and first order) tasks/s on meta-batches of 32
    sequences of 50 items, c = 1,682; stage 2 (generator) and stage 3 (fusion) likewise.

Timing: ``torch.set_num_threads(--threads)`` (default 1); warm-up, then the median of ``--repeats`` repeats of
the process's CPU time (``time.process_time``): with one thread this is what the call takes on an idle core,
whereas wall time on the shared 2-core machine mostly measures the other processes (the load average is
recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from metarec.engine.inner import InnerConfig
from metarec.nets.mml_net import MMLNetConfig
from metarec.seqrec.batch import collate_seq
from metarec.seqrec.generator import Retriever
from metarec.seqrec.mml import MMLConfig, MMLModel
from metarec.tasks import Task


def make_model(n_items: int, new_share: float = 0.1, seed: int = 0, first_order: bool = False) -> MMLModel:
    torch.manual_seed(seed)
    feats = {"text": torch.randn(n_items, 384)}
    n_old = int(round(n_items * (1 - new_share)))
    cfg = MMLConfig(net=MMLNetConfig(), inner=InnerConfig(steps=5, lr=1e-3, first_order=first_order))
    model = MMLModel(n_items, cfg, pool=torch.arange(n_old), feats=feats)
    model.ready[:] = True
    model.eval()
    return model


def make_tasks(n_items: int, n_tasks: int, length: int, n_query: int, new_share: float, seed: int) -> list[Task]:
    rng = np.random.default_rng(seed)
    n_old = int(round(n_items * (1 - new_share)))
    tasks = []
    for u in range(n_tasks):
        is_new = rng.random(length) < new_share
        old = rng.integers(0, n_old, length)
        seq = np.where(is_new, rng.integers(n_old, n_items, length), old) if n_old < n_items else old
        pos = np.arange(1, length)
        s_pos, q_pos = pos[:-n_query], pos[-n_query:]
        ones = np.ones(len(s_pos), np.float32)
        tasks.append(Task(u, np.full(len(s_pos), u), seq[s_pos], ones, np.full(n_query, u), seq[q_pos],
                          np.ones(n_query, np.float32), extra={"seq": seq, "s_pos": s_pos, "q_pos": q_pos}))
    return tasks


def timed(fn, repeats: int, warmup: int = 2) -> float:
    """Median CPU seconds of this process per call (one thread: the time an idle core would take; wall time
    on the shared 2-core machine mostly measures the other processes)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return statistics.median(out)


def request_latency(model: MMLModel, n: int, repeats: int, backend: str) -> dict:
    """One new user: generator for its new items, adaptation, full ranking at the last position."""
    task = make_tasks(model.n_items, 1, n, 1, 0.1, seed=n)[0]
    batch = collate_seq([task]).support_only()
    seq = torch.as_tensor(task.extra["seq"])
    new = seq[~model.trained[seq + 1]]  # the request's new items (item indices)
    retriever = Retriever(model.generator.feats(), model.pool, backend)  # built once, kept by a server

    def generator():
        if len(new):
            retriever.search(new, model.config.gen_k, True)
            model.generator(new)

    def adapt():
        model.adapt(batch)

    full = collate_seq([task])
    adapted = model.adapt(full.support_only())
    last = torch.tensor([[n - 2]])

    def rank():
        adapted.score(full.seq, last)

    with torch.no_grad():
        g = timed(generator, repeats)
        r = timed(rank, repeats)
    a = timed(adapt, repeats)  # the generated rows of all new items are cached by the model after the first call
    return {"n": n, "c": model.n_items, "new_items_in_request": int(len(new)), "generator_ms": 1e3 * g,
            "adapt_ms": 1e3 * a, "rank_ms": 1e3 * r, "total_ms": 1e3 * (g + a + r)}


def batched_users(model: MMLModel, repeats: int) -> dict:
    tasks = make_tasks(model.n_items, 64, 15, 5, 0.1, seed=1)
    batch = collate_seq(tasks)

    def run():
        adapted = model.adapt(batch.support_only())
        adapted.score_next(batch.seq, batch.q_pos)

    t = timed(run, repeats)
    return {"c": model.n_items, "users": 64, "seconds": t, "users_per_s": 64 / t}


def training_throughput(n_items: int, repeats: int) -> list[dict]:
    tasks = make_tasks(n_items, 32, 50, 1, 0.0, seed=2)
    batch = collate_seq(tasks)
    out = []
    for label, stage, fo in (("stage 1, MAML second order", 1, False), ("stage 1, MAML first order", 1, True),
                             ("stage 2, generator", 2, False), ("stage 3, fusion", 3, False)):
        model = make_model(n_items, first_order=fo)
        model.train()
        model.set_stage(stage)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-3)

        def step(model=model, opt=opt):
            loss = model.meta_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = timed(step, repeats)
        out.append({"what": label, "c": n_items, "meta_batch": 32, "seq_len": 50, "step_s": t, "tasks_per_s": 32 / t})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a smaller grid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out-dir", default="docs/benchmarks")
    ap.add_argument("--only", choices=["all", "latency"], default="all",
                    help="latency: rerun the per-request table only, keep the rest of OUT_DIR/mml.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.repeats
    try:
        import faiss  # noqa: F401

        backends = ["exact", "faiss"]
    except ImportError:
        backends = ["exact"]
    previous = Path(args.out_dir) / "mml.json"
    keep = json.loads(previous.read_text()) if args.only == "latency" and previous.is_file() else None
    ns = [10, 25, 50]
    cs = [1_000, 10_000] if args.quick else [1_000, 10_000, 30_000]
    latency = []
    models = {c: make_model(c) for c in sorted(set(cs) | {10_000})}
    for backend in backends:
        for n in ns:
            latency.append({"backend": backend, **request_latency(models[10_000], n, reps, backend)})
        for c in cs:
            if c != 10_000:
                latency.append({"backend": backend, **request_latency(models[c], 50, reps, backend)})
    if keep is not None:  # --only latency: keep the other sections of the previous run
        batched, training = keep["batched"], keep["training"]
    else:
        batched = [batched_users(make_model(c), reps) for c in (1_682, 3_706)]
        training = training_throughput(1_682, reps)
    record = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
              "clock": "process CPU time, median of repeats", "load_average": os.getloadavg(),
              "threads": args.threads, "machine": platform.processor() or platform.machine(),
              "latency": latency, "batched": batched, "training": training}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mml.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "mml.md").write_text(render(record))
    print(render(record))


def render(r: dict) -> str:
    lines = ["# MML speed", "",
             f"Produced by `OMP_NUM_THREADS={r['threads']} .venv/bin/python benchmarks/mml_bench.py "
             f"--threads {r['threads']}` on {r['when']} (torch {r['torch']}, {r['threads']} thread(s); times are "
             f"the process's CPU time, median of repeats, since the machine was shared: 1-minute load average "
             f"{r['load_average'][0]:.1f} on 2 cores). "
             "Synthetic workload, full MML network (ID learner with feature-aware attention + text learner, "
             "fusion, generator K=10; d=64, 2 blocks, 5 local steps); see the script's docstring.", "",
             "## One request (one new user): generator + adaptation + full ranking", "",
             "The paper's cost per request is O(nKd) (generator) + O(n^2 d L) (learners) + O(ndh + c) (fusion and "
             "ranking). The generator column is the per-request exact top-K retrieval + generation for the "
             "request's own new items (the model also caches the generated rows of all new items between calls, "
             "so `adapt` itself does not regenerate them).", "",
             "| retrieval | n | c | new items | generator ms | adapt ms | rank ms | total ms |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["latency"]:
        lines.append(f"| {x['backend']} | {x['n']} | {x['c']:,} | {x['new_items_in_request']} | "
                     f"{x['generator_ms']:.2f} | {x['adapt_ms']:.1f} | {x['rank_ms']:.2f} | {x['total_ms']:.1f} |")
    lines += ["", "## Batched requests (64 new users, 10 warm-up + 5 query items each)", "",
              "| c | seconds per call | users/s |", "|---|---|---|"]
    for x in r["batched"]:
        lines.append(f"| {x['c']:,} | {x['seconds']:.3f} | {x['users_per_s']:.0f} |")
    lines += ["", "## Training throughput (meta-batch 32, sequences of 50 items, c = 1,682)", "",
              "| stage | seconds per step | tasks/s |", "|---|---|---|"]
    for x in r["training"]:
        lines.append(f"| {x['what']} | {x['step_s']:.3f} | {x['tasks_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
