"""Data-parallel meta-training (metarec/engine/dist.py): two gloo processes on this CPU give the run of one process
with the same global meta-batch, up to float rounding; rank 0 alone writes; the pieces are checked by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarec.engine import dist
from metarec.io import load_torch
from metarec.launch import take_nproc
from tests.conftest import synthetic_frames, write_atomic


@pytest.fixture
def tiny_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return write_atomic(tmp_path / "tiny", "tiny", inter, users, items)


def _metarec(args: list[str], home) -> subprocess.CompletedProcess:
    env = {**os.environ, "METAREC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "metarec", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _same_weights(a, b):
    """Equal up to float rounding: the gradients' sums run in another order, and Adam divides a weight's step by
    its gradient's scale, so a weight whose gradient is nearly 0 can move by up to ~lr * 1e-3 differently; every
    other weight agrees to 1e-6."""
    sa, sb = load_torch(a)["state"], load_torch(b)["state"]
    assert sa.keys() == sb.keys()
    close = total = 0
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-4, rtol=1e-4, msg=k)
        close += int(((sa[k] - sb[k]).abs() <= 1e-6).sum())
        total += sa[k].numel()
    assert close >= 0.999 * total


def test_shards_cover_a_meta_batch_in_order():
    idx = np.arange(10)
    assert [dist.shard(idx, 3, r).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [len(dist.shard(idx[:1], 2, r)) for r in range(2)] == [1, 0]  # a rank may get nothing


def test_nproc_flag_is_taken_off_the_line():
    assert take_nproc(["train", "--nproc", "2", "--learner", "melu"]) == (2, ["train", "--learner", "melu"])
    assert take_nproc(["train", "--nproc=3"]) == (3, ["train"])
    assert take_nproc(["train"]) == (1, ["train"])


@pytest.mark.parametrize("bad", ["0", "two"])
def test_bad_nproc_is_one_line(bad, tmp_path):
    p = _metarec(["train", "--nproc", bad, "--learner", "bias"], tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--nproc" in p.stderr


def test_two_ranks_train_melu_as_one_process(tiny_dir, tmp_path):
    """MeLU (second order) on a rating protocol: 2 ranks = 1 process, with a meta-batch of 7 (uneven shards)."""
    common = ["train", "--learner", "melu", "--dataset", str(tiny_dir), "--protocol", "user-cold", "--quiet",
              "--split.by=random", "--tasks.min_inter=14", "--train.epochs=3", "--train.meta_batch=7",
              "--train.lr=1e-2", "--learner.inner.steps=2"]
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        p = _metarec([*common, "--nproc", str(n), "--out", str(out)], tmp_path / "home")
        assert p.returncode == 0, p.stderr[-2000:]
        runs[n] = json.loads((out / "results.json").read_text())
        assert p.stdout.count("saved ") == 1  # rank 0 alone reports
    assert sorted(p.name for p in (tmp_path / "n2").iterdir()) == ["checkpoint.pt", "model.pt", "results.json"]
    for k in ("rmse", "mae"):
        assert runs[2]["test"][k] == pytest.approx(runs[1]["test"][k], rel=1e-5)
    assert [h["train_loss"] for h in runs[2]["history"]] == pytest.approx(
        [h["train_loss"] for h in runs[1]["history"]], rel=1e-5)
    assert runs[2]["best_epoch"] == runs[1]["best_epoch"]
    _same_weights(tmp_path / "n1" / "model.pt", tmp_path / "n2" / "model.pt")


def test_checkpoints_pass_between_one_and_two_ranks(tiny_dir, tmp_path):
    """A 2-rank run's checkpoint is one process's (rank 0 writes it, with the run's identity): run again on 1
    process it resumes, and run again on 2 ranks rank 0 reads it and every rank starts from it."""
    common = ["train", "--learner", "melu", "--dataset", str(tiny_dir), "--protocol", "user-cold", "--quiet",
              "--split.by=random", "--tasks.min_inter=14", "--train.meta_batch=8", "--train.lr=1e-2",
              "--learner.inner.steps=1", "--train.epochs=2", "--out", str(tmp_path / "run")]
    home = tmp_path / "home"
    first = _metarec([*common, "--nproc", "2"], home)
    assert first.returncode == 0, first.stderr[-2000:]
    rmse = json.loads((tmp_path / "run" / "results.json").read_text())["test"]["rmse"]
    for n in (1, 2):
        again = _metarec([*common, "--nproc", str(n)], home)
        assert again.returncode == 0, again.stderr[-2000:]
        assert again.stderr.count("resuming") == 1  # rank 0 alone reads (and says so)
        assert json.loads((tmp_path / "run" / "results.json").read_text())["test"]["rmse"] == pytest.approx(rmse)


def test_two_ranks_train_sasrec_as_one_process(tiny_dir, tmp_path):
    """The sequential family on the same loop: SASRec with the full-softmax loss and no dropout (no random draw
    in the loss), its loss averaged over target positions (loss_weight), 2 ranks = 1 process."""
    runs = {}
    for n in (1, 2):
        p = _metarec(["train", "--protocol", "sequential", "--learner", "sasrec", "--dataset", str(tiny_dir),
                      "--seed", "0", "--quiet", "--out", str(tmp_path / f"s{n}"), "--runs-dir", str(tmp_path / f"r{n}"),
                      "--new-user-frac", "0.3", "--train.epochs=2", "--train.meta_batch=7", "--model.loss=ce",
                      "--model.sasrec.dropout=0", "--nproc", str(n)], tmp_path / "home")
        assert p.returncode == 0, p.stderr[-2000:]
        runs[n] = json.loads((tmp_path / f"s{n}.json").read_text())["results"][0]
    for k, v in runs[1]["test"].items():
        assert runs[2]["test"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    m1, m2 = (next((tmp_path / f"r{n}").rglob("model.pt")) for n in (1, 2))
    _same_weights(m1, m2)


def test_a_failing_rank_stops_the_run_with_one_line(tmp_path):
    p = _metarec(["train", "--nproc", "2", "--learner", "melu", "--dataset", str(tmp_path / "nowhere")],
                 tmp_path / "home")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "metarec: error:" in p.stderr and "Traceback" not in p.stderr


def test_allreduce_keeps_none_gradients_and_sums_the_rest():
    """In a (one-rank) gloo group: a parameter without a gradient stays without one (Adam must skip it, as in one
    process); the others come back summed, in their own shape and dtype; the loss weights sum."""
    import socket

    import torch.distributed as tdist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        a, b, c = (torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.zeros(4)),
                   torch.nn.Parameter(torch.ones(1)))
        (a * 2).sum().backward()
        c.grad = torch.tensor([0.5])
        dist.allreduce_grads([a, b, c])
        assert b.grad is None
        torch.testing.assert_close(a.grad, torch.full((2, 3), 2.0))
        torch.testing.assert_close(c.grad, torch.tensor([0.5]))
        assert dist.allreduce_sum([1.5, 2.0]) == [1.5, 2.0]
        assert dist.broadcast_object({"x": 1}) == {"x": 1} and dist.is_main()
    finally:
        tdist.destroy_process_group()


def _rank_fit(r: int, port: int, workdir: str, crash_epoch: int) -> None:
    """One rank of a 2-rank MeLU fit on the tiny log (spawned); ``crash_epoch``: fail at that epoch's first step."""
    import torch.distributed as tdist

    from metarec.data.loaders import build_dataset
    from metarec.engine.train import fit
    from metarec.evaluation.evaluate import evaluate_rating
    from metarec.io import save_torch
    from tests.engine.test_train import CFG, TCFG

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=2)
    try:
        learner, prep = _tiny_melu(build_dataset, CFG)

        def crash(epoch, step):
            if epoch == crash_epoch and step == 0:
                raise RuntimeError("killed")

        fit(learner, prep.train, lambda m: evaluate_rating(m, prep.valid), TCFG, checkpoint=Path(workdir) / "ck.pt",
            progress=False, on_batch=crash)
        save_torch(Path(workdir) / "final.pt", {"state": learner.state_dict()})
    finally:
        tdist.destroy_process_group()


def _tiny_melu(build_dataset, cfg):
    from metarec.learners.feature_mlp import FeatureMLP
    from metarec.pipeline import RunConfig, prepare
    from metarec.splits import SplitConfig
    from metarec.tasks import TaskConfig

    inter, users, items = synthetic_frames()
    prep = prepare(RunConfig(split=SplitConfig(protocol="user-cold", by="random"), tasks=TaskConfig(min_inter=14)),
                   build_dataset("tiny", inter, users, items))
    torch.manual_seed(123)
    return FeatureMLP(prep.ctx, cfg), prep


def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_one_process_run(tmp_path):
    """Killed at the start of its third epoch, a 2-rank run resumes from rank 0's checkpoint (every rank gets its
    state) and ends where one uninterrupted process ends."""
    import socket

    import torch.multiprocessing as mp

    from metarec.data.loaders import build_dataset
    from metarec.engine.train import fit
    from metarec.evaluation.evaluate import evaluate_rating
    from metarec.io import save_torch
    from tests.engine.test_train import CFG, TCFG

    learner, prep = _tiny_melu(build_dataset, CFG)
    fit(learner, prep.train, lambda m: evaluate_rating(m, prep.valid), TCFG, progress=False)
    save_torch(tmp_path / "one.pt", {"state": learner.state_dict()})

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    with pytest.raises(Exception, match="killed"):
        mp.spawn(_rank_fit, args=(port(), str(tmp_path), 2), nprocs=2, join=True)
    assert load_torch(tmp_path / "ck.pt", "checkpoint")["state"]["epoch"] == 2
    mp.spawn(_rank_fit, args=(port(), str(tmp_path), -1), nprocs=2, join=True)
    _same_weights(tmp_path / "one.pt", tmp_path / "final.pt")
