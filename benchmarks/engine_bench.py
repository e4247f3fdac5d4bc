"""Engine benchmark: metarec's batched inner loop against a reference-style per-task MAML loop.

Run: ``.venv/bin/python benchmarks/engine_bench.py [--quick] [--out-dir docs/benchmarks] [--profile] [--max-wait S]``
Writes ``engine.json`` (every figure + machine info) and ``engine.md`` (tables) in ``--out-dir``.

Workload
--------
Real ml-100k meta-train tasks of the user-cold protocol (split by time, seed 0), explicit ratings, MSE loss.
Tasks are sized ``TaskConfig(sizing="kshot", k_shot=K, min_inter=K+10)``: every task has exactly K support
and 10 query interactions, K in {5, 20}. Network: MeLU (``FeatureMLP``, embedding 32, head MLP (64, 64));
the fast parameters are the head's (6 tensors); the embeddings learn in the outer loop only. Meta-batch 32,
5 inner SGD steps at the MeLU local lr 5e-6, first and second order; outer optimiser Adam (lr 5e-5, fused as in
``fit``), no
gradient clipping, in both engines. Meta-batches cycle over a fixed shuffle of the full batches of 32.

(a) reference: the per-task loop of the official MeLU code (hoyeoplee/MeLU ``MeLU.global_update`` and
    ``MeLU.forward``), made differentiable. One copy of the head, ``local = copy.deepcopy(learner.head)``, is
    made once (MeLU keeps one model). Per meta-batch, ``keep = {k: v.clone()}`` of the global head state
    (MeLU's ``store_parameters``). Then for each task, one by one in Python:
      - its support/query index arrays become tensors (``torch.from_numpy``), and the encoder embeds its
        support and query pairs once (MeLU re-embeds in every forward: (a) is cheaper than the original);
      - the fast weights start as the global head parameters themselves (so that the meta-gradient reaches
        them); for each of the 5 inner steps: ``local.load_state_dict(fast)`` from step 2 on and
        ``local.state_dict()`` (MeLU's per-step reload and read of the weights), ``local.zero_grad()``, the
        support prediction ``torch.func.functional_call(local, fast, x_s)``, ``F.mse_loss``, then
        ``torch.autograd.grad(loss, fast, create_graph=second_order)`` and ``fast = fast - lr * grad``;
      - ``local.load_state_dict(fast)``, the query prediction with ``functional_call(local, fast, x_q)``, its
        ``F.mse_loss``, and ``local.load_state_dict(keep)`` (MeLU's reset of the model to the global weights).
    The meta-loss is the mean of the 32 query losses; ``zero_grad``, ``backward``, ``Adam.step``.
    ``load_state_dict`` copies values under ``no_grad`` and so cuts the graph: in the official code the
    second-order terms are lost. Here the forward passes use ``functional_call`` with the per-task dict of
    fast tensors, so the graph is kept (true second order) while the per-task Python loop, module copy and
    ``state_dict``/``load_state_dict`` traffic of the official code remain. Gradients are taken with respect
    to the head's fast weights only (MeLU also differentiates the embeddings in every inner step and then
    discards those gradients): (a) is, if anything, faster than the official code, so the speed-ups below
    are conservative.
(b) metarec: ``loss = learner.meta_loss(collate(tasks))`` (all 32 tasks adapt at once: MeLU's default fast
    path, ``FeatureMLP._adapt_lowrank``, an exact low-rank form of the first layer's adapted weights, batched
    matmuls for the rest and the support gradients written out as differentiable ops, so the outer backward
    goes through them (second order); in first order ``_adapt_lowrank_fo`` runs the same loop under
    ``no_grad`` and hands the outer graph ``w0 - lr * sum(grads)``; the generic engine,
    ``metarec.engine.inner``, is ``torch.vmap`` of ``functional_call`` with ``autograd.grad``),
    ``zero_grad``, ``backward``, ``Adam.step``. The
    ``collate`` of the Task objects into a padded ``TaskBatch`` is inside the timed step ((a) converts its
    arrays inside the timed step too).

Before any timing, the script ASSERTS on one meta-batch, for each order and K, that (a) and (b) give the same
meta-loss and the same meta-gradient of every learner parameter (``torch.allclose``, rtol 1e-4; atol 1e-8 for the
loss and, for a gradient tensor, 1e-5 times its largest entry, since float32 sums summed in another order differ
by about 1e-7 of their magnitude),
at the benchmark inner lr and at a large inner lr (1e-2) where the second-order terms are far above the
tolerance (the script checks that they are: first- and second-order meta-gradients must differ there).

Timing: ``torch.set_num_threads(2)``; warm-up steps, then the number of steps per repeat is calibrated to a
target duration, and repeats of (a) and (b) are interleaved (a, b, a, b, ...) so that slow drifts of the
machine's load hit both alike. Figures are medians over the repeats of tasks/s (meta-batch 32 / step time);
the speed-up is median(b) / median(a) (the ratio of the best repeats is reported too). Other processes
matter a lot: with 2 threads, (b)'s parallel kernels wait at every barrier for a descheduled thread, and one
busy foreign process on a 2-core machine slowed (b) by ~30x in trials while (a)'s tiny ops barely noticed.
So before each timing block the script waits (1 s probes, at most ``--max-wait`` seconds over the whole run)
until other processes use < 0.3 cores, measures the CPU used by other processes during every repeat
(``/proc/stat`` busy time minus this process's own), records it with the 1-minute load average, and flags a
contended run in both outputs.

Also measured: FLOPs of one (b) step (``torch.utils.flop_counter.FlopCounterMode`` around ``meta_loss`` +
``backward``; matmuls only, as the counter counts them) and the achieved FLOP/s as a fraction of the
machine's float32 matmul rate (best of several ``torch.mm`` of 1024x1024, 2n^3 FLOPs); peak memory of
(b) (and (a)) training (the process's peak RSS, VmHWM, is reset through ``/proc/self/clear_refs`` after
``malloc_trim``, and read after the warm-up and calibration steps; the delta over the RSS before is
reported, next to ``getrusage(RUSAGE_SELF).ru_maxrss`` of the whole process); and full-ranking evaluation
throughput, users/s, of ``evaluate_ranking(learner, tasks, candidates)`` on the user-cold meta-valid +
meta-test tasks of the default MeLU sizing, against every candidate item of the protocol.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import dataclasses
import gc
import os
import platform
import resource
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from metarec.engine.inner import InnerConfig
from metarec.evaluation.evaluate import evaluate_ranking
from metarec.io import write_json, write_text
from metarec.learners.feature_mlp import FeatureMLP, FeatureMLPConfig
from metarec.pipeline import make_config, prepare
from metarec.tasks import Task, TaskConfig, collate

COMMAND = ".venv/bin/python benchmarks/engine_bench.py"
META_BATCH = 32
INNER_STEPS = 5
INNER_LR = 5e-6  # MeLU's local lr
OUTER_LR = 5e-5  # MeLU's global lr
GRAD_ATOL = 1e-5  # times the largest |entry| of each meta-gradient tensor
CHECK_LR = 1e-2  # a large inner lr at which second-order terms dominate the tolerance
SHOTS = (5, 20)
N_QUERY = 10
CONTENDED = 0.3  # cores used by other processes above which a timing is flagged
TARGETS = {"second": 15.0, "first": 25.0}  # required speed-up (b) / (a)
THREADS = 2


# ------------------------------------------------------------------------------------------------ machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


class CpuMeter:
    """CPU used by *other* processes (in cores) over a time window: /proc/stat busy time minus our own."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _sample() -> tuple[float, int, int]:
        try:
            cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            busy = sum(int(v) for j, v in enumerate(cpu) if j not in (3, 4))  # all but idle and iowait
            own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
            return time.perf_counter(), busy, int(own[11]) + int(own[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            return time.perf_counter(), 0, 0

    def __init__(self):
        self.start = self._sample()

    def foreign_cores(self) -> float:
        t1, busy1, own1 = self._sample()
        t0, busy0, own0 = self.start
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / self.TICK / max(t1 - t0, 1e-9))


def wait_for_quiet(budget: list[float], threshold: float = CONTENDED) -> float:
    """Sleep in 1 s probes while other processes use more than ``threshold`` cores, within ``budget[0]`` s."""
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        busy = meter.foreign_cores()
        budget[0] -= 1.0
        if busy <= threshold or budget[0] <= 0:
            return busy


def machine_info() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def matmul_rate(n: int = 1024, reps: int = 10, runs: int = 7) -> float:
    """Best-of-``runs`` float32 ``torch.mm`` rate, FLOP/s (2 n^3 per product)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * n ** 3 / best


# ------------------------------------------------------------------------------------------------- memory

_LIBC = None


def _trim() -> None:
    global _LIBC
    gc.collect()
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except OSError:
        pass


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakRSS:
    """Peak RSS of a code block: VmHWM reset through /proc/self/clear_refs, minus the RSS before."""

    def __enter__(self):
        _trim()
        self.maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.rss_before = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        self.peak = _status_kb("VmHWM")
        self.maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return False

    def result(self) -> dict:
        delta = self.peak - self.rss_before if self.reset else self.maxrss_after - self.maxrss_before
        return {"rss_before_mib": self.rss_before / 1024, "peak_rss_mib": self.peak / 1024,
                "peak_delta_mib": delta / 1024, "hwm_reset": self.reset,
                "ru_maxrss_process_mib": self.maxrss_after / 1024}


# ------------------------------------------------------------------------------------------------ engines


def make_learner(ctx, first_order: bool, lr: float = INNER_LR) -> FeatureMLP:
    torch.manual_seed(0)
    cfg = FeatureMLPConfig(emb_dim=32, hidden=(64, 64),
                           inner=InnerConfig(steps=INNER_STEPS, lr=lr, first_order=first_order))
    return FeatureMLP(ctx, cfg)


class Reference:
    """(a): the official MeLU per-task loop, made differentiable (see the module docstring)."""

    def __init__(self, learner: FeatureMLP):
        self.learner = learner
        self.local = copy.deepcopy(learner.head)  # MeLU's one model copy that gets reloaded per task

    def meta_loss(self, tasks: list[Task]) -> torch.Tensor:
        learner, local = self.learner, self.local
        inner = learner.config.inner
        enc = learner.encoder
        keep = {k: v.detach().clone() for k, v in learner.head.state_dict().items()}  # store_parameters
        losses = []
        for t in tasks:
            x_s = enc.pair(torch.from_numpy(t.s_user), torch.from_numpy(t.s_item))
            x_q = enc.pair(torch.from_numpy(t.q_user), torch.from_numpy(t.q_item))
            y_s, y_q = torch.from_numpy(t.s_rating), torch.from_numpy(t.q_rating)
            fast = dict(learner.head.named_parameters())
            names = list(fast)
            for step in range(inner.steps):
                if step > 0:
                    local.load_state_dict(fast)
                local.state_dict()
                local.zero_grad()
                loss = F.mse_loss(functional_call(local, fast, (x_s,)).squeeze(-1), y_s)
                grads = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=not inner.first_order)
                fast = {k: fast[k] - inner.lr * g for k, g in zip(names, grads, strict=True)}
            local.load_state_dict(fast)
            losses.append(F.mse_loss(functional_call(local, fast, (x_q,)).squeeze(-1), y_q))
            local.load_state_dict(keep)
        return torch.stack(losses).mean()


def batched_meta_loss(learner: FeatureMLP, tasks: list[Task]) -> torch.Tensor:
    return learner.meta_loss(collate(tasks))


def make_step(kind: str, learner: FeatureMLP):
    opt = torch.optim.Adam(learner.parameters(), lr=OUTER_LR, fused=True)  # as metarec.engine.train.fit, both
    loss_fn = Reference(learner).meta_loss if kind == "a" else (lambda tasks: batched_meta_loss(learner, tasks))

    def step(tasks: list[Task]) -> float:
        loss = loss_fn(tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


# ----------------------------------------------------------------------------------------------- checking


def check_equivalence(ctx, tasks: list[Task], first_order: bool, lr: float) -> dict:
    """(a) and (b) on one meta-batch from the same weights: same meta-loss and meta-gradients, asserted."""
    la_model, lb_model = make_learner(ctx, first_order, lr), make_learner(ctx, first_order, lr)
    lb_model.load_state_dict(la_model.state_dict())
    loss_a = Reference(la_model).meta_loss(tasks)
    loss_a.backward()
    loss_a = loss_a.detach()
    loss_b = batched_meta_loss(lb_model, tasks)
    loss_b.backward()
    loss_b = loss_b.detach()
    pa, pb = dict(la_model.named_parameters()), dict(lb_model.named_parameters())
    assert torch.allclose(loss_a, loss_b, rtol=1e-4, atol=1e-8), (loss_a.item(), loss_b.item())
    worst = 0.0
    for name, p in pa.items():
        ga = p.grad if p.grad is not None else torch.zeros_like(p)
        gb = pb[name].grad if pb[name].grad is not None else torch.zeros_like(p)
        atol = GRAD_ATOL * float(gb.abs().max())  # float32 rounding of sums scales with the tensor's magnitude
        assert torch.allclose(ga, gb, rtol=1e-4, atol=atol), f"meta-gradient of {name} differs between (a) and (b)"
        worst = max(worst, float((ga - gb).abs().max() / gb.abs().max().clamp_min(1e-30)))
    grads = {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in pb.items()}
    return {"loss_a": loss_a.item(), "loss_b": loss_b.item(), "max_rel_grad_diff": worst, "grads": grads}


def check_all(ctx, tasks: list[Task]) -> dict:
    out = {}
    for lr in (INNER_LR, CHECK_LR):
        res = {order: check_equivalence(ctx, tasks, order == "first", lr) for order in ("second", "first")}
        gs, gf = res["second"].pop("grads"), res["first"].pop("grads")
        # the second-order terms must be visible above the tolerance at the large lr, else the check is blind
        gap = max(float((gs[k] - gf[k]).abs().max() / gs[k].abs().max().clamp_min(1e-30)) for k in gs)
        if lr == CHECK_LR:
            assert gap > 1e-2, f"first- and second-order meta-gradients differ by only {gap:.2e} at lr {lr}"
        out[f"lr={lr:g}"] = {**res, "second_vs_first_rel_grad_gap": gap}
    return out


# ------------------------------------------------------------------------------------------------- timing


def batches_of(tasks: list[Task], seed: int = 0) -> list[list[Task]]:
    order = np.random.default_rng(seed).permutation(len(tasks))
    n = len(tasks) // META_BATCH
    return [[tasks[j] for j in order[i * META_BATCH:(i + 1) * META_BATCH]] for i in range(n)]


class Runner:
    """Steps one engine over a cycle of meta-batches."""

    def __init__(self, step, batches):
        self.step, self.batches, self.i = step, batches, 0

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step(self.batches[self.i % len(self.batches)])
            self.i += 1
        return time.perf_counter() - t0


def time_pair(ctx, batches, first_order: bool, repeats: int, target_s: float, warmup: int,
              wait_budget: list[float]) -> dict:
    """Interleaved repeats of (a) and (b); tasks/s medians, the speed-up, and the peak RSS of each."""
    runners, calib, memory = {}, {}, {}
    for kind in ("b", "a"):
        learner = make_learner(ctx, first_order)
        runners[kind] = Runner(make_step(kind, learner), batches)
        with PeakRSS() as mem:
            runners[kind].run(warmup)
            n_cal = 1 if kind == "a" else 3
            calib[kind] = runners[kind].run(n_cal) / n_cal
        memory[kind] = mem.result()
    iters = {k: max(1, round(target_s / calib[k])) for k in runners}
    rates = {k: [] for k in runners}
    foreign = {k: [] for k in runners}
    quiet_before = wait_for_quiet(wait_budget)
    load0 = loadavg()
    for _ in range(repeats):
        for kind in ("a", "b"):
            meter = CpuMeter()
            dt = runners[kind].run(iters[kind])
            foreign[kind].append(meter.foreign_cores())
            rates[kind].append(iters[kind] * META_BATCH / dt)
    load1 = loadavg()
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    return {"tasks_per_s": med, "step_ms": {k: 1e3 * META_BATCH / v for k, v in med.items()},
            "speedup": med["b"] / med["a"], "best_tasks_per_s": best, "speedup_of_best": best["b"] / best["a"],
            "repeats": rates, "iters_per_repeat": iters, "peak_memory": memory, "loadavg_1min": [load0, load1],
            "foreign_cpu_cores": foreign, "max_foreign_cpu_cores": max(max(v) for v in foreign.values()),
            "foreign_cpu_cores_before": quiet_before,
            "contended": max(max(v) for v in foreign.values()) > CONTENDED}


def count_flops(ctx, batch: list[Task], first_order: bool) -> dict:
    learner = make_learner(ctx, first_order)
    with FlopCounterMode(display=False) as fc:
        batched_meta_loss(learner, batch).backward()
    counts = {str(op): int(v) for op, v in fc.get_flop_counts().get("Global", {}).items()}
    return {"total": int(fc.get_total_flops()), "by_op": counts}


def eval_throughput(ctx, prep, repeats: int) -> dict:
    learner = make_learner(ctx, first_order=False)
    tasks = prep.valid + prep.test
    evaluate_ranking(learner, tasks[:META_BATCH], prep.candidates)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate_ranking(learner, tasks, prep.candidates)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"users": len(tasks), "candidates": int(len(prep.candidates)), "seconds": t,
            "users_per_s": len(tasks) / t, "inner_steps": INNER_STEPS, "repeats": times}


def profile_b(ctx, batches, first_order: bool, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile

    runner = Runner(make_step("b", make_learner(ctx, first_order)), batches)
    runner.run(2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.run(5)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ------------------------------------------------------------------------------------------------ reports


def kshot_tasks(run, k: int):
    return prepare(dataclasses.replace(run, tasks=TaskConfig(sizing="kshot", k_shot=k, min_inter=k + N_QUERY)))


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# Engine benchmark", "",
             f"Produced by `{res['command']}` on {m['date']} "
             f"({m['cpu_model']}, {m['threads']} threads of {m['cpu_count']} cores, torch {m['torch']}).", "",
             "ml-100k user-cold meta-train tasks (explicit ratings, MSE), MeLU network (embedding 32, head "
             "(64, 64)), meta-batch 32, 5 inner steps (lr 5e-6), Adam (lr 5e-5). (a) is a per-task loop in "
             "the style of the official MeLU code (module copy, `load_state_dict` per task and step, "
             "`autograd.grad` per task, functional fast weights so that second order is exact); (b) is "
             "`learner.meta_loss(collate(tasks))` + backward + Adam. Both are asserted to give the same "
             "meta-loss and meta-gradients (rtol 1e-4) before timing. Tasks/s are medians of interleaved "
             "repeats; see the docstring of `benchmarks/engine_bench.py` for exactly what (a) does.", "",
             "| order | support K | (a) reference tasks/s | (b) metarec tasks/s | speed-up (b)/(a) | target | met "
             "| (b) MFLOP/step | (b) GFLOP/s | of matmul peak | (b) peak RSS delta MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["training"]:
        lines.append(
            f"| {r['order']} | {r['k_shot']} | {r['tasks_per_s']['a']:.1f} | {r['tasks_per_s']['b']:.1f} | "
            f"{r['speedup']:.1f}x | {r['target']:.0f}x | {'yes' if r['target_met'] else 'no'} | "
            f"{r['flops_per_step'] / 1e6:.0f} | {r['achieved_flops'] / 1e9:.2f} | "
            f"{100 * r['fraction_of_matmul_peak']:.1f}% | {r['peak_memory']['b']['peak_delta_mib']:.1f} |")
    ev = res["evaluation"]
    foreign = max(r["max_foreign_cpu_cores"] for r in res["training"])
    checks = [c for per_k in res["equivalence"].values() for c in per_k.values()]
    worst_diff = max(c[o]["max_rel_grad_diff"] for c in checks for o in ("second", "first"))
    gap = min(per_k[f"lr={CHECK_LR:g}"]["second_vs_first_rel_grad_gap"] for per_k in res["equivalence"].values())
    lines += ["", f"Machine float32 matmul rate (torch.mm 1024x1024, {m['threads']} threads, best of "
              f"{res['settings']['matmul_runs']} runs of 10): {res['matmul_flops'] / 1e9:.1f} GFLOP/s; (b) GFLOP/s "
              "counts the matmul FLOPs of `meta_loss` + `backward` (FlopCounterMode) over the whole step time.", "",
              f"Full-ranking evaluation (`evaluate_ranking`, melu, 5 inner steps): {ev['users']} user-cold users "
              f"(meta-valid + meta-test, MeLU sizing) against {ev['candidates']} candidate items: "
              f"{ev['users_per_s']:.1f} users/s ({ev['seconds']:.2f} s).", "",
              f"Process peak RSS (ru_maxrss) at the end: {res['ru_maxrss_mib']:.0f} MiB. Peak RSS delta: peak RSS "
              "(VmHWM, reset before) during an engine's warm-up and calibration steps minus the RSS before; for "
              "(a): " + ", ".join(f"{r['order']} K={r['k_shot']} {r['peak_memory']['a']['peak_delta_mib']:.1f} MiB"
                                  for r in res["training"]) + ".", "",
              f"Equivalence (asserted): largest relative difference between the meta-gradients of (a) and (b) "
              f"{worst_diff:.1e} (of each tensor's largest entry), meta-losses equal to rtol 1e-4; at inner lr "
              f"{CHECK_LR:g} second- and first-order meta-gradients differ by {gap:.1f} or more (relative), so the "
              "check does see the second-order terms.", "",
              f"Other processes used at most {foreign:.2f} of the {m['cpu_count']} cores during any timed repeat"
              + (" - the machine was NOT quiet: with 2 threads, (b)'s parallel kernels wait for a descheduled "
                 "thread and collapse far more than (a)'s tiny single-threaded ops, so these ratios understate "
                 "(b)." if foreign > CONTENDED else ".") + " Speed-up of the best repeats: "
              + ", ".join(f"{r['order']} K={r['k_shot']} {r['speedup_of_best']:.1f}x" for r in res["training"])
              + ".", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter repeats (a smoke run)")
    ap.add_argument("--out-dir", default="docs/benchmarks", help="where engine.json and engine.md go")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of (b)")
    ap.add_argument("--max-wait", type=float, default=60.0,
                    help="seconds in all to wait for other processes to go quiet before timing blocks")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    repeats, target_s, warmup, eval_repeats = (3, 0.6, 1, 1) if args.quick else (5, 2.5, 2, 5)
    t_start = time.perf_counter()
    wait_budget = [args.max_wait]
    machine = machine_info()
    print(f"{machine['cpu_model']}, {machine['threads']} threads, torch {machine['torch']}; "
          f"load average {loadavg():.2f}")
    matmul_runs = 3 if args.quick else 7
    peak = matmul_rate(runs=matmul_runs)
    print(f"float32 matmul rate: {peak / 1e9:.1f} GFLOP/s")

    run, _ = make_config("melu", "ml-100k", "user-cold", 0, "explicit", {})
    training, checks = [], {}
    for k in SHOTS:
        prep = kshot_tasks(run, k)
        assert {t.n_support for t in prep.train} == {k} and {t.n_query for t in prep.train} == {N_QUERY}
        batches = batches_of(prep.train)
        checks[f"K={k}"] = check_all(prep.ctx, batches[0])
        print(f"K={k}: {len(prep.train)} meta-train tasks, {len(batches)} meta-batches; (a) == (b) checked")
        for order in ("second", "first"):
            fo = order == "first"
            flops = count_flops(prep.ctx, batches[0], fo)
            r = time_pair(prep.ctx, batches, fo, repeats, target_s, warmup, wait_budget)
            step_s = r["step_ms"]["b"] / 1e3
            row = {"order": order, "k_shot": k, "n_query": N_QUERY, **r, "target": TARGETS[order],
                   "target_met": r["speedup"] >= TARGETS[order], "flops_per_step": flops["total"],
                   "flops_by_op": flops["by_op"], "achieved_flops": flops["total"] / step_s,
                   "fraction_of_matmul_peak": flops["total"] / step_s / peak}
            training.append(row)
            print(f"  {order:6s} order: (a) {r['tasks_per_s']['a']:7.1f} tasks/s  (b) {r['tasks_per_s']['b']:7.1f} "
                  f"tasks/s  speed-up {r['speedup']:5.1f}x (target {TARGETS[order]:.0f}x: "
                  f"{'met' if row['target_met'] else 'NOT met'})  other processes used up to "
                  f"{r['max_foreign_cpu_cores']:.2f} cores")
            if args.profile:
                profile_b(prep.ctx, batches, fo)

    eval_prep = prepare(run)
    ev = eval_throughput(eval_prep.ctx, eval_prep, eval_repeats)
    print(f"full-ranking evaluation: {ev['users_per_s']:.1f} users/s ({ev['users']} users x {ev['candidates']} items)")

    res = {"command": COMMAND + (" --quick" if args.quick else ""), "machine": machine,
           "settings": {"quick": args.quick, "dataset": "ml-100k", "protocol": "user-cold", "split_by": "time",
                        "view": "explicit", "loss": "mse", "emb_dim": 32, "hidden": [64, 64],
                        "meta_batch": META_BATCH, "inner_steps": INNER_STEPS, "inner_lr": INNER_LR,
                        "outer_lr": OUTER_LR, "optimizer": "Adam", "shots": list(SHOTS), "n_query": N_QUERY,
                        "repeats": repeats, "target_seconds_per_repeat": target_s, "warmup_steps": warmup,
                        "matmul_runs": matmul_runs, "max_wait_s": args.max_wait},
           "targets": TARGETS, "matmul_flops": peak, "equivalence": checks, "training": training,
           "evaluation": ev, "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "total_seconds": time.perf_counter() - t_start}

    header = f"{'order':7s} {'K':>3s} {'(a) tasks/s':>12s} {'(b) tasks/s':>12s} {'speed-up':>9s} {'target':>7s} " \
             f"{'met':>4s} {'MFLOP':>7s} {'GFLOP/s':>8s} {'%peak':>6s} {'RSS+MiB':>8s}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in training:
        print(f"{r['order']:7s} {r['k_shot']:3d} {r['tasks_per_s']['a']:12.1f} {r['tasks_per_s']['b']:12.1f} "
              f"{r['speedup']:8.1f}x {r['target']:6.0f}x {'yes' if r['target_met'] else 'no':>4s} "
              f"{r['flops_per_step'] / 1e6:7.0f} {r['achieved_flops'] / 1e9:8.2f} "
              f"{100 * r['fraction_of_matmul_peak']:5.1f}% {r['peak_memory']['b']['peak_delta_mib']:8.1f}")
    out = Path(args.out_dir)
    write_json(out / "engine.json", res)
    write_text(out / "engine.md", markdown(res))
    print(f"\nwrote {out / 'engine.json'} and {out / 'engine.md'} in {res['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
