"""Scenario evaluation: scoring every test user against every scenario item through ``Adapted.score_grid``
against the pair-by-pair path (``Adapted.score`` on the flattened grid), same learner, same tasks.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scenario_eval_bench.py [--dataset ml-1m] [--repeats 2]
Writes docs/benchmarks/scenario_eval.{json,md}: seconds per meta-valid evaluation of an untrained s²Meta
(adaptation included), interleaved repeats, and the check that both paths give the same metrics.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from metarec.io import code_version, write_json, write_text
from metarec.learners.s2meta import S2Meta
from metarec.report import markdown_table
from metarec.scenario_run import make_run, prepare
from metarec.scenarios import evaluate_scenarios


class _PairsOnly:
    """The learner without ``score_grid``: evaluation falls back to ``score`` on the flattened pairs."""

    def __init__(self, m):
        self.m = m

    def eval(self):
        return self.m.eval()

    @property
    def last_steps(self):
        return self.m.last_steps

    def adapt(self, support):
        return replace(self.m.adapt(support), score_grid=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out-dir", default="docs/benchmarks")
    args = ap.parse_args()
    cmd = (f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scenario_eval_bench.py --dataset {args.dataset} "
           f"--repeats {args.repeats}")
    version = code_version()
    run, lcfg = make_run("s2meta", args.dataset, 0, {})
    prep = prepare(run)
    torch.manual_seed(0)
    m = S2Meta(prep.ctx, lcfg)
    m.set_embeddings(prep.users, prep.items)
    tasks = prep.data.valid
    times: dict[str, list[float]] = {"grid": [], "pairs": []}
    metrics = {}
    for _ in range(args.repeats):
        for name, learner in (("grid", m), ("pairs", _PairsOnly(m))):
            t0 = time.perf_counter()
            metrics[name] = evaluate_scenarios(learner, tasks, prep.data.train_codes)
            times[name].append(time.perf_counter() - t0)
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    same = all(abs(metrics["grid"][k] - metrics["pairs"][k]) < 1e-9 for k in metrics["grid"])
    load = os.getloadavg()[0]
    rows = [[name, f"{min(ts):.2f}", " / ".join(f"{t:.2f}" for t in ts)] for name, ts in times.items()]
    text = ["# Scenario evaluation: grid scoring against pairs", "", f"Produced by `{cmd}` (code: {version}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), 1-minute load {load:.2f} on a shared "
            "2-core machine).", "",
            f"{args.dataset} scenario protocol, seed 0: meta-valid, {metrics['grid']['tasks']} scenarios, "
            f"{metrics['grid']['users']} test users, each ranked against every item of its scenario; an untrained "
            "s²Meta (adaptation included in the time).", "",
            markdown_table(["path", "best s", "repeats (s)"], rows), "",
            f"Speed-up (best of repeats): {min(times['pairs']) / min(times['grid']):.1f}x. Same metrics on both "
            f"paths: {same}.", ""]
    out = Path(args.out_dir)
    write_json(out / "scenario_eval.json", {"command": cmd, "code": version, "load_avg_1min": load,
                                             "seconds": times, "same_metrics": same, "metrics": metrics["grid"]})
    write_text(out / "scenario_eval.md", "\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
