"""Speed of the cold-start sequential methods (issue 6): training throughput and per-new-user latency.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seqrec_bench.py [--dataset ml-100k] [--methods ...]
[--quick] [--out-dir docs/benchmarks]``; writes ``seqrec.json`` and ``seqrec.md`` in ``--out-dir``.

Workload: the MML protocol of ``metarec.seqrec.protocol`` (defaults: 10 % new users, warm-up 10, 5 queries,
max length 50) on the real dataset; untrained models with the command's default configurations (speed does
not depend on the weights).
- Training throughput: sequences (meta-train windows / tasks) per second of ``method.meta_loss(collate_seq(batch))``
  + backward + Adam step, at the method's training batch size (the step as ``fit_seq`` runs it, collation
  included); median of repeats after warm-up. SML is timed in its sequential stage (steps 1 and 2 of a
  period, per sequence of period data).
- Latency per new user: ``adapt(batch.support_only())`` + ``score`` of every item at the user's n_query
  query positions + the full-ranking metric code, for ONE user per call (the online request), median over
  meta-test users; and the batched rate (users/s at 64 users per call, the offline evaluation). SML retrains
  once on all new users' warm-up sequences (``begin_eval``); that time is reported apart, not per user.

Registry: :data:`BENCH_METHODS` maps a name to ``builder(data) -> (method, train_batch)``; modules in
``PLUGINS`` may add entries with ``BENCH_METHODS[...] = ...`` (MML adds its own).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarec.data.registry import load_dataset  # noqa: E402
from metarec.io import write_json, write_text  # noqa: E402
from metarec.report import markdown_table  # noqa: E402
from metarec.seqrec.batch import collate_seq  # noqa: E402
from metarec.seqrec.evaluate import rank_rows  # noqa: E402
from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol  # noqa: E402


def _direct(**kw):
    def build(data):
        from metarec.seqrec.methods import DirectConfig, DirectSeq, FinetuneConfig

        steps = kw.get("finetune_steps", 0)
        rest = {k: v for k, v in kw.items() if k != "finetune_steps"}
        m = DirectSeq(data.n_items, DirectConfig(finetune=FinetuneConfig(steps=steps), **rest))
        return m, 128

    return build


def _cbml(data):
    from metarec.seqrec.cbml import CBML, CBMLConfig, item_attributes

    attrs = item_attributes(data.dataset)
    return CBML(data.n_items, CBMLConfig(attr_dim=attrs.shape[1]), attrs=attrs), 64


def _sml(data):
    from metarec.seqrec.sml import SML, SMLConfig

    m = SML(data.n_items, SMLConfig())
    m.plain_flag.fill_(False)
    return m, 128


BENCH_METHODS: dict[str, Callable] = {
    "sasrec": _direct(),
    "gru4rec": _direct(net="gru4rec"),
    "full": _direct(with_supports=True),
    "ptft": _direct(finetune_steps=5),
    "sml": _sml,
    "cbml": _cbml,
}
PLUGINS = ("metarec.seqrec.mml",)


def _load_plugins():
    for mod in PLUGINS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        BENCH_METHODS.update(getattr(m, "BENCH_METHODS", {}))


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def train_throughput(name: str, method, data, batch: int, steps: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    if name == "sml":
        from metarec.seqrec.sml import period_tasks

        tasks = period_tasks(data.train_inter, method.config.periods, data.config.max_len)[-2]
        prev = method.weights()

        def step():
            chunk = [tasks[j] for j in rng.choice(len(tasks), size=min(batch, len(tasks)), replace=False)]
            hat = {k: v.clone().requires_grad_(True) for k, v in prev.items()}
            loss = method._loss_with(method.transfer(prev, hat), chunk)  # step 1 (W_hat) ...
            loss.backward()
            loss2 = method._loss_with(method.transfer(prev, {k: v.detach() for k, v in hat.items()}), chunk)
            loss2.backward()  # ... and step 2 (transfer network), one batch each
        seqs = 2 * min(batch, len(tasks))
    else:
        tasks = method.train_tasks(data)
        params = [p for p in method.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=1e-4)
        method.train()

        def step():
            chunk = [tasks[j] for j in rng.choice(len(tasks), size=min(batch, len(tasks)), replace=False)]
            loss = method.meta_loss(collate_seq(chunk))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seqs = min(batch, len(tasks))
    for _ in range(2):
        step()
    times = [sum(_timed(step, steps)) / steps for _ in range(repeats)]
    med = statistics.median(times)
    return {"batch": seqs, "step_s": med, "sequences_per_s": seqs / med}


@torch.no_grad()
def latency(name: str, method, data, users: int, repeats: int) -> dict:
    method.eval()
    tasks = data.test[:users]
    t0 = time.perf_counter()
    method.begin_eval(data.test)
    begin_s = time.perf_counter() - t0

    def request(chunk):
        b = collate_seq(chunk)
        scores = method.adapt(b.support_only()).score_next(b.seq, b.q_pos)  # (B, Q, N)
        rank_rows(scores, b, data.n_items)

    request(tasks[:1])
    per_user = [min(_timed(lambda t=t: request([t]), repeats)) for t in tasks]
    t0 = time.perf_counter()
    for i in range(0, len(data.test), 64):
        request(data.test[i: i + 64])
    batched = time.perf_counter() - t0
    return {"latency_ms_median": 1e3 * statistics.median(per_user),
            "latency_ms_p90": 1e3 * float(np.quantile(per_user, 0.9)),
            "users_per_s_batched": len(data.test) / batched, "begin_eval_s": begin_s, "users_timed": len(tasks)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out-dir", default="docs/benchmarks")
    args = p.parse_args(argv)
    _load_plugins()
    names = args.methods or list(BENCH_METHODS)
    unknown = [n for n in names if n not in BENCH_METHODS]
    if unknown:
        p.error(f"unknown method(s) {unknown}; known: {', '.join(BENCH_METHODS)}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = make_seq_protocol(load_dataset(args.dataset), SeqProtocolConfig())
    steps, repeats, users = (3, 2, 10) if args.quick else (10, 5, 50)
    rows, results = [], {}
    load0 = os.getloadavg()[0]
    for name in names:
        torch.manual_seed(0)
        method, batch = BENCH_METHODS[name](data)
        tr = train_throughput(name, method, data, batch, steps, repeats)
        la = latency(name, method, data, users, repeats)
        results[name] = {**tr, **la}
        rows.append([name, tr["batch"], f"{tr['sequences_per_s']:.0f}", f"{la['latency_ms_median']:.1f}",
                     f"{la['latency_ms_p90']:.1f}", f"{la['users_per_s_batched']:.0f}", f"{la['begin_eval_s']:.2f}"])
        print(f"{name}: {tr['sequences_per_s']:.0f} seq/s training, {la['latency_ms_median']:.1f} ms per new user",
              flush=True)
    info = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "dataset": args.dataset, "n_items": data.n_items, "test_users": len(data.test),
            "loadavg_1min_start": load0, "loadavg_1min_end": os.getloadavg()[0], "quick": args.quick}
    out = Path(args.out_dir)
    write_json(out / "seqrec.json", {"info": info, "results": results})
    table = markdown_table(["method", "train batch (seq)", "train seq/s", "latency ms / new user (median)",
                            "p90 ms", "users/s (64 per call)", "begin_eval s"], rows)
    write_text(out / "seqrec.md", f"# Cold-start sequential methods: speed\n\nProduced by `OMP_NUM_THREADS="
               f"{info['threads']} .venv/bin/python benchmarks/seqrec_bench.py{' --quick' if args.quick else ''}` "
               f"on {info['date']} ({info['machine']}, {info['threads']} thread(s), torch {info['torch']}); "
               f"{args.dataset}, {data.n_items} items, {len(data.test)} new users; 1-minute load average "
               f"{load0:.2f} at the start, {info['loadavg_1min_end']:.2f} at the end (2 shared cores).\n\n"
               f"{table}\n\nLatency = adaptation on the user's 10 warm-up items + scores of all items at its 5 "
               f"query positions + ranking, one user per call, median over {users} new users (each the best of "
               f"{repeats}); SML's retraining on all new users' warm-up sequences is paid once per serving period "
               f"(begin_eval), not per request. See the script's docstring for what is timed.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
