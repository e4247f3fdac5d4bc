"""Adapt + full ranking of every ml-1m meta-test user: the fold-in against MeLU and the other rating learners.

Run: ``.venv/bin/python benchmarks/fullrank_bench.py [--dataset ml-1m] [--repeats 5] [--out-dir docs/benchmarks]``
Writes ``fullrank.json`` and ``fullrank.md`` in ``--out-dir``.

Workload: the meta-test tasks of ``DATASET`` user-cold (split by time, seed 0, MeLU sizing), explicit view; for
each learner, ``adapt`` of the tasks in meta-batches of 64 and ``score_items`` over every candidate item, plus
the top-10 (``topk``), under ``no_grad``, one thread: what ``evaluate_ranking`` and a server do per newcomer.
The learners are fitted as their runs begin (``fit_direct`` or ``prefit``: closed-form parts) and not
meta-trained, which does not change their speed. Figures: the median over ``--repeats`` of the whole pass, and
the CPU that other processes used meanwhile (a figure taken while they used more than 0.3 cores is flagged).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import CONTENDED, CpuMeter, machine_info  # noqa: E402

from metarec.io import code_version, write_json, write_text  # noqa: E402
from metarec.learners.registry import LEARNERS  # noqa: E402
from metarec.pipeline import make_config, prepare  # noqa: E402
from metarec.tasks import collate  # noqa: E402

LEARNER_NAMES = ("bias", "foldin", "metafold", "melu", "ptft", "tanp")


def one_pass(learner, batches, cand) -> None:
    with torch.no_grad():
        for b in batches:
            torch.topk(learner.adapt(b).score_items(cand), 10, dim=1)


def bench(name: str, dataset: str, prep, repeats: int) -> dict:
    run, cfg = make_config(name, dataset, "user-cold", 0, "explicit", {}, preset="paper")
    torch.manual_seed(0)
    learner = LEARNERS[name].cls(prep.ctx, cfg)
    if learner.meta_trained:
        learner.prefit(prep.split.train)
    else:
        learner.fit_direct(prep.split.train)
    learner.eval()
    batches = [collate(prep.test[i:i + 64]) for i in range(0, len(prep.test), 64)]
    cand = torch.as_tensor(prep.candidates, dtype=torch.long)
    one_pass(learner, batches[:1], cand)  # warm-up
    times, foreign = [], []
    for _ in range(repeats):
        meter = CpuMeter()
        t0 = time.perf_counter()
        one_pass(learner, batches, cand)
        times.append(time.perf_counter() - t0)
        foreign.append(meter.foreign_cores())
    sec = statistics.median(times)
    return {"learner": name, "tasks": len(prep.test), "candidates": len(cand), "seconds": sec,
            "ms_per_task": 1e3 * sec / len(prep.test), "tasks_per_s": len(prep.test) / sec,
            "other_cores": max(foreign)}


def markdown(res: dict) -> str:
    m = res["machine"]
    rows = "\n".join(
        f"| {r['learner']} | {r['seconds']:.3f} | {r['ms_per_task']:.3f} | {r['tasks_per_s']:.0f} | "
        f"{r['other_cores']:.2f}{' (contended)' if r['other_cores'] > CONTENDED else ''} |" for r in res["rows"])
    first = res["rows"][0]
    return (f"# Adapt + full ranking of every meta-test user\n\nProduced by `{res['command']}` (code {res['code']}) "
            f"on {m['date']} ({m['cpu_model']}, 1 thread, torch {m['torch']}).\n\n{res['dataset']} user-cold "
            f"(by time, seed 0), explicit view: {first['tasks']} meta-test tasks, each adapted on its support set "
            f"and scored against all {first['candidates']} candidate items, top-10 taken; meta-batches of 64, "
            "no_grad, median of the whole pass over repeats. Learners fitted in closed form where they have such a "
            "part, not meta-trained (speed does not depend on it). See the script's docstring.\n\n"
            "| learner | seconds (all tasks) | ms per task | tasks/s | other processes (cores) |\n"
            f"|---|---|---|---|---|\n{rows}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--learners", nargs="+", default=list(LEARNER_NAMES))
    ap.add_argument("--out-dir", default="docs/benchmarks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run, _ = make_config("bias", args.dataset, "user-cold", 0, "explicit", {})
    prep = prepare(run)
    rows = []
    for name in args.learners:
        r = bench(name, args.dataset, prep, args.repeats)
        print(f"{name}: {r['seconds']:.3f} s for {r['tasks']} tasks ({r['ms_per_task']:.3f} ms/task), "
              f"other processes {r['other_cores']:.2f} cores", flush=True)
        rows.append(r)
    res = {"command": ".venv/bin/python benchmarks/fullrank_bench.py " + " ".join(sys.argv[1:]),
           "code": code_version(), "dataset": args.dataset, "machine": machine_info(), "rows": rows}
    out = Path(args.out_dir)
    write_json(out / "fullrank.json", res)
    write_text(out / "fullrank.md", markdown(res))
    print(f"wrote {out / 'fullrank.md'}")


if __name__ == "__main__":
    main()
