"""Large logs on one machine: every data stage of metarec on synthetic logs of 1M, 5M and 20M interactions.

Run: ``.venv/bin/python benchmarks/scale_bench.py [--sizes 1M 5M 20M] [--work DIR] [--out-dir docs/benchmarks]``
(``--sizes 200k`` is the small size for CI-sized checks). Writes ``scale.json`` and ``scale.md`` in ``--out-dir``;
finished (size, stage) measurements are kept in ``DIR/measured.json``, so a rerun after an interruption goes on
where it stopped (``--fresh`` starts over).

The log: :func:`metarec.data.synthetic.synthetic_log` (seed 0): Zipf item popularity, Pareto user activity, users
arriving over three years, 0.1 users and 0.005 items per interaction (2M users and 100k items at 20M), string ids,
written once as CSV and as parquet. Each stage runs in a fresh child process (its own peak RSS, imports included),
with one torch thread:

- ``prepare-csv`` / ``prepare-parquet``: read the log, validate and index it (``load_log_dataset``), write the
  dataset cache (``save_dataset``), as ``metarec prepare LOG --user-col ...`` does;
- ``split``: read the cache and build each rating protocol's split (warm, user-cold, item-cold, user-item-cold),
  by time and at random (8 splits, the time of each is recorded);
- ``tasks``: read the cache, the user-cold split by time, the feature context, and the user tasks of meta-train,
  meta-valid and meta-test (MeLU sizing: owners with 13-100 interactions, 10 in the query);
- ``melu-epoch``: one meta-training epoch of MeLU (second order, 5 local steps at the registry defaults) over
  every meta-train task; ``foldin-fit``: the fold-in's closed-form fit on meta-train (it has no epochs);
- ``fullrank``: adapt and rank every candidate item for each meta-test task (``evaluate_ranking``) with the
  fold-in (its factors from one ALS sweep: the ranking's cost does not depend on their values), all meta-test
  tasks; with MeLU, the first 2,000 (MeLU scores each (user, item) pair through its MLP).

The growth exponent of a stage is the least-squares slope of log(seconds) (and of log(peak memory)) against
log(interactions) over the sizes measured: 1 is linear.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"200k": 200_000, "1M": 1_000_000, "5M": 5_000_000, "20M": 20_000_000}
STAGES = ("prepare-csv", "prepare-parquet", "split", "tasks", "melu-epoch", "foldin-fit", "fullrank")
TARGET_STAGES = ("prepare-csv", "split", "tasks")  # the 20M targets: under 10 minutes and 8 GiB together
COLS = dict(user="user", item="item", rating="rating", timestamp="timestamp")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def generate(size: str, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from metarec.data.synthetic import SyntheticConfig, synthetic_log

    t0 = time.perf_counter()
    df = synthetic_log(SyntheticConfig(n_inter=SIZES[size], seed=0))
    t_gen = time.perf_counter() - t0
    table = pa.Table.from_pandas(df, preserve_index=False)
    pacsv.write_csv(table, work / f"log-{size}.csv.tmp")
    pq.write_table(table, work / f"log-{size}.parquet.tmp")
    os.replace(work / f"log-{size}.csv.tmp", work / f"log-{size}.csv")
    os.replace(work / f"log-{size}.parquet.tmp", work / f"log-{size}.parquet")
    return {"rows": len(df), "users": int(df["user"].nunique()), "items": int(df["item"].nunique()),
            "generate_s": t_gen, "csv_mb": (work / f"log-{size}.csv").stat().st_size / 1e6,
            "parquet_mb": (work / f"log-{size}.parquet").stat().st_size / 1e6}


def stage(name: str, size: str, work: Path) -> dict:
    """Run one stage in this process; returns its seconds, peak memory and what it built."""
    import torch

    torch.set_num_threads(1)
    from metarec.data.registry import load_log_dataset, read_cached, save_dataset

    cache = work / f"cache-{size}"
    out: dict = {}
    t0 = time.perf_counter()
    if name in ("prepare-csv", "prepare-parquet"):
        path = work / f"log-{size}.{'csv' if name == 'prepare-csv' else 'parquet'}"
        ds = load_log_dataset(str(path), "user", "item", "rating", "timestamp")
        out["read_s"] = time.perf_counter() - t0
        save_dataset(ds, cache if name == "prepare-csv" else work / f"cache-{size}-pq")
        out.update(users=ds.n_users, items=ds.n_items, interactions=ds.n_inter)
        seconds = time.perf_counter() - t0
    elif name == "split":
        from metarec.splits import PROTOCOLS, SplitConfig, make_split

        ds = read_cached(cache)
        out["read_s"] = time.perf_counter() - t0
        for by in ("time", "random"):
            for p in PROTOCOLS:
                t1 = time.perf_counter()
                sp = make_split(ds, SplitConfig(protocol=p, by=by))
                out[f"{p}/{by}_s"] = time.perf_counter() - t1
                out[f"{p}/{by}_rows"] = [len(sp.train), len(sp.valid), len(sp.test)]
        seconds = time.perf_counter() - t0
    else:
        from metarec.pipeline import RatingProtocol
        from metarec.splits import SplitConfig
        from metarec.tasks import build_tasks

        proto = RatingProtocol(split=SplitConfig(protocol="user-cold", by="time"))
        ds = read_cached(cache)
        t_read = time.perf_counter()
        ds, split, _, fs, ctx = proto.context(ds)
        t_ctx = time.perf_counter()
        parts = {p: build_tasks(df, proto.tasks, desc=p) for p, df in split.parts.items()}
        t_tasks = time.perf_counter()
        if name == "tasks":
            out.update(read_s=t_read - t0, split_and_context_s=t_ctx - t_read, build_s=t_tasks - t_ctx,
                       tasks={p: len(v) for p, v in parts.items()})
            seconds = t_tasks - t0
        else:
            from metarec.engine.train import TrainConfig, fit
            from metarec.evaluation.evaluate import evaluate_ranking
            from metarec.learners.registry import LEARNERS

            out["setup_s"] = t_tasks - t0  # read, split, context, tasks: measured in their own stages
            torch.manual_seed(0)
            if name == "melu-epoch":
                melu = LEARNERS["melu"].cls(ctx, LEARNERS["melu"].default())
                melu.prefit(split.train)
                t1 = time.perf_counter()
                fit(melu, parts["meta-train"], lambda m: {"rmse": 0.0}, TrainConfig(epochs=1), progress=False)
                seconds = time.perf_counter() - t1
                out["tasks"] = len(parts["meta-train"])
                out["tasks_per_s"] = len(parts["meta-train"]) / seconds
            elif name == "foldin-fit":
                foldin = LEARNERS["foldin"].cls(ctx, LEARNERS["foldin"].default())
                t1 = time.perf_counter()
                foldin.fit_direct(split.train)
                seconds = time.perf_counter() - t1
                out["train_rows"] = len(split.train)
            else:  # fullrank
                cand = split.candidate_items()
                from dataclasses import replace

                # one ALS sweep: the ranking costs the same whatever the factors' values (foldin-fit times the fit)
                foldin = LEARNERS["foldin"].cls(ctx, replace(LEARNERS["foldin"].default(), iters=1))
                foldin.fit_direct(split.train)
                melu = LEARNERS["melu"].cls(ctx, LEARNERS["melu"].default())
                melu.prefit(split.train)
                test = parts["meta-test"]
                t1 = time.perf_counter()
                with torch.no_grad():
                    res = evaluate_ranking(foldin, test, cand)
                seconds = time.perf_counter() - t1
                t2 = time.perf_counter()
                with torch.no_grad():
                    res_m = evaluate_ranking(melu, test[:2000], cand)
                out.update(candidates=len(cand), foldin_tasks=len(test), foldin_ndcg10=res["ndcg@10"],
                           melu_tasks=min(2000, len(test)), melu_s=time.perf_counter() - t2,
                           melu_ndcg10=res_m["ndcg@10"])
    out.update(seconds=seconds, peak_gib=peak_gib())
    return out


def slope(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def markdown(rec: dict) -> str:
    sizes = [s for s in rec["sizes"] if s in rec["logs"]]
    lines = [
        "# Scale: metarec's stages on synthetic logs of up to 20M interactions",
        "",
        f"Command: `{rec['command']}`  ",
        f"Code: {rec['code']} (each stage's commit is in its details below); "
        f"{rec['machine']['cpu_count']} cores ({rec['machine']['cpu_model']}), "
        f"torch {rec['machine']['torch']}, one torch thread per stage; measured {rec['machine']['date']}.",
        "",
        "Each stage runs in its own process: seconds of wall time and the process's peak resident memory (imports "
        "and the inputs it reads included). The log is `metarec.data.synthetic.synthetic_log` (seed 0); see the "
        "bench's docstring for what each stage does. `growth` is the slope of log(seconds) and of log(peak) "
        "against log(interactions) over the sizes measured (1 = linear).",
        "",
        "| log | rows | users | items | CSV MB | parquet MB | generate s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in sizes:
        g = rec["logs"][s]
        lines.append(f"| {s} | {g['rows']:,} | {g['users']:,} | {g['items']:,} | {g['csv_mb']:.0f} | "
                     f"{g['parquet_mb']:.0f} | {g['generate_s']:.1f} |")
    lines += ["", "| stage | " + " | ".join(f"{s} s | {s} GiB" for s in sizes) + " | growth (time) | growth (memory) |",
              "|---|" + "---|---|" * len(sizes) + "---|---|"]
    for st in STAGES:
        cells, xs, ts, ms = [], [], [], []
        for s in sizes:
            m = rec["measured"].get(f"{s}/{st}")
            if m is None or "error" in m:
                cells.append("n/a | n/a" if m is None else "failed | -")
                continue
            cells.append(f"{m['seconds']:.1f} | {m['peak_gib']:.2f}")
            xs.append(rec["logs"][s]["rows"])
            ts.append(m["seconds"])
            ms.append(m["peak_gib"])
        gt, gm = slope(xs, ts), slope(xs, ms)
        lines.append(f"| {st} | " + " | ".join(cells) + f" | {'-' if gt is None else f'{gt:.2f}'} | "
                     f"{'-' if gm is None else f'{gm:.2f}'} |")
    big = sizes[-1] if sizes else None
    if big:
        got = [rec["measured"].get(f"{big}/{st}") for st in TARGET_STAGES]
        if all(g and "error" not in g for g in got):
            total = sum(g["seconds"] for g in got)
            peak = max(g["peak_gib"] for g in got)
            lines += ["", f"**{big}: prepare (CSV), split (all 8) and task building take {total / 60:.1f} minutes "
                      f"together, the largest of them peaking at {peak:.2f} GiB** (targets at 20M: under 10 minutes "
                      "and under 8 GiB)."]
    lines += [
        "",
        "Reading: `fullrank` scores every candidate item for every meta-test task, so its work is (meta-test users) x "
        "(items), both of which grow with the log: a growth near 2 is the protocol's, not the code's (per task and "
        "candidate it stays flat). `foldin-fit` is ALS, O(interactions x rank^2) per sweep (10 sweeps, rank 32, "
        "float64). `other_cores` in the details is the CPU other processes used meanwhile on the two-core machine "
        "(about one core for most stages here: another job ran beside them), so absolute seconds are those of a "
        "shared machine.",
    ]
    lines += ["", "Details per stage (seconds of the parts, what was built):", ""]
    for key, m in rec["measured"].items():
        detail = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()
                  if k not in ("seconds", "peak_gib")}
        lines.append(f"- `{key}`: {json.dumps(detail)}")
    if rec.get("notes"):
        lines += ["", *rec["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "5M", "20M"], choices=list(SIZES))
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--work", type=Path, default=Path("runs/scale"), help="logs, caches and the partial record")
    ap.add_argument("--out-dir", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage before it counts as failed")
    ap.add_argument("--fresh", action="store_true", help="forget earlier measurements in --work")
    ap.add_argument("--render", type=Path, help="no measuring: rewrite scale.md in --out-dir from this scale.json")
    ap.add_argument("--stage", help=argparse.SUPPRESS)  # a child: one stage of one size
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render:
        from metarec.io import write_text

        write_text(args.out_dir / "scale.md", markdown(json.loads(args.render.read_text())))
        print(f"wrote {args.out_dir / 'scale.md'}")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage:
        res = generate(args.size, args.work) if args.stage == "generate" else stage(args.stage, args.size, args.work)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res["cpu_s"] = ru.ru_utime + ru.ru_stime  # this process's CPU, to tell the others' load apart
        print("RESULT " + json.dumps(res), flush=True)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_bench import CpuMeter, machine_info

    from metarec.io import code_version, write_json, write_text

    version = code_version()  # the code each measurement ran (a record may join runs of several commits)
    partial = args.work / "measured.json"
    rec = json.loads(partial.read_text()) if partial.is_file() and not args.fresh else {"logs": {}, "measured": {}}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}

    def child(st: str, size: str) -> dict:
        meter, t0 = CpuMeter(), time.perf_counter()
        try:
            p = subprocess.run([sys.executable, __file__, "--stage", st, "--size", size, "--work", str(args.work)],
                               capture_output=True, text=True, timeout=args.timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"over {args.timeout:.0f} s"}
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            return {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:300]}
        res = json.loads(lines[-1][len("RESULT "):])
        wall = time.perf_counter() - t0
        # CPU that processes other than this stage's used meanwhile (the meter counts the child as foreign)
        res["other_cores"] = round(max(0.0, meter.foreign_cores() - res.get("cpu_s", 0.0) / max(wall, 1e-9)), 2)
        res["code"] = version
        return res

    for size in args.sizes:
        if size not in rec["logs"] or not (args.work / f"log-{size}.parquet").is_file():
            print(f"{size}: generating the log", flush=True)
            got = child("generate", size)
            if "error" in got:
                sys.exit(f"scale_bench: generating {size} failed: {got['error']}")
            rec["logs"][size] = got
            write_json(partial, rec)
        for st in args.stages:
            key = f"{size}/{st}"
            if key in rec["measured"] and "error" not in rec["measured"][key]:
                continue
            print(f"{key} ...", end=" ", flush=True)
            rec["measured"][key] = child(st, size)
            m = rec["measured"][key]
            print(m.get("error") or f"{m['seconds']:.1f} s, {m['peak_gib']:.2f} GiB", flush=True)
            write_json(partial, rec)
    order = [s for s in SIZES if s in rec["logs"]]
    codes = sorted({m.get("code", "?") for m in rec["measured"].values()})
    rec.update(sizes=order, code=", ".join(codes), machine=machine_info(),
               command="OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_bench.py " + " ".join(sys.argv[1:]))
    rec["measured"] = {f"{s}/{st}": rec["measured"][f"{s}/{st}"] for s in order for st in STAGES
                       if f"{s}/{st}" in rec["measured"]}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "scale.json", rec)
    write_text(args.out_dir / "scale.md", markdown(rec))
    print(f"wrote {args.out_dir / 'scale.md'}")


if __name__ == "__main__":
    main()
