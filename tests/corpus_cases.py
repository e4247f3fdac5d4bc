"""The reliability corpus of issue 18: bad inputs and invocations, each with the outcome a user must get.

Shared by ``tests/test_reliability_corpus.py`` (runs every case in-process through ``metarec.cli.main``) and
``studies/corpus_before_after.py`` (runs them as subprocesses against another checkout, to measure "before").

A case runs in an empty working folder W (the current directory; ``METAREC_HOME=W/home``). Its ``setup``
writes files there, and may run metarec commands through the ``cli`` callback it is given (so that a trained
run is made by the code under test). Placeholders: ``{data}`` is ``toy``, a tiny RecBole atomic dataset that
``setup`` functions create with :func:`toy`.

Outcomes (:func:`classify`): ``clear`` (the expected exit code; for errors one line ``metarec: error: ...``),
``traceback`` (a Python traceback or ``metarec: internal error``), ``silent`` (exit 0 where an error was due, or
another wrong outcome without a traceback).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FAST = "--split.by=random --tasks.min_inter=14 --train.epochs=1 --quiet"


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # shell-quoted arguments after `metarec`, with {data}
    setup: Callable | None = None  # setup(W: Path, cli) -> None; cli(argv: list[str]) -> int
    code: int = 2
    needle: str = ""  # must appear in the error line (or in stdout for code 0)
    family: str = "cli"

    def args(self) -> list[str]:
        return shlex.split(self.argv.format(data="toy"))


# ------------------------------------------------------------------------------------------ setups
def frames(n_users: int = 60, n_items: int = 80, seed: int = 0):
    from tests.conftest import synthetic_frames

    return synthetic_frames(n_users, n_items, seed)


def toy(w: Path, cli=None, name: str = "toy") -> Path:
    from tests.conftest import write_atomic

    inter, users, items = frames()
    return write_atomic(w / "toy", name, inter, users, items).parent


def with_toy(edit: Callable[[Path], None]):
    """A setup: the toy dataset, then ``edit(W/toy)``."""
    def setup(w, cli):
        edit(toy(w))
    return setup


def edit_lines(fname: str, fn: Callable[[list[str]], list[str]]):
    def edit(d: Path):
        p = d / fname
        p.write_text("\n".join(fn(p.read_text().splitlines())) + "\n")
    return edit


def set_field(row: int, col: int, value: str):
    def fn(lines):
        f = lines[row].split("\t")
        f[col] = value
        lines[row] = "\t".join(f)
        return lines
    return fn


def write(name: str, content: bytes | str):
    def setup(w, cli):
        p = w / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def both(*setups):
    def setup(w, cli):
        for s in setups:
            s(w, cli)
    return setup


def log_csv(text: str, name: str = "log.csv"):
    return write(name, text)


def trained(learner: str = "melu", extra: str = "", out: str = "run"):
    """A setup: the toy dataset and a run trained into W/OUT by the code under test."""
    def setup(w, cli):
        if not (w / "toy").exists():
            toy(w)
        code = cli(["train", "--learner", learner, "--dataset", "toy", "--out", out, *shlex.split(FAST),
                    *shlex.split(extra)])
        assert code == 0, f"setup training failed ({code})"
    return setup


class _Payload:
    """Unpickling runs ``open(marker, "w")``: a marker file appears only if the pickle is executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def malicious(name: str):
    def setup(w, cli):
        import torch

        (w / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"learner": _Payload(w / "PWNED"), "model": _Payload(w / "PWNED"), "config": {}}, w / name)
    return setup


def torch_blob(name: str, blob: dict):
    def setup(w, cli):
        import torch

        (w / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, w / name)
    return setup


def json_file(name: str, obj):
    return write(name, json.dumps(obj))


def damaged_cache(w, cli):
    """A cache of ml-100k whose meta.json (of the cache version of the code under test: ``CORPUS_CACHE_VERSION``,
    else today's) says it is complete, and whose parquet files are truncated."""
    import os

    from metarec.data.registry import CACHE_VERSION

    d = w / "home" / "datasets" / "ml-100k"
    d.mkdir(parents=True)
    for f in ("inter.parquet", "users.parquet", "items.parquet"):
        (d / f).write_bytes(b"PAR1" + b"\0" * 20)
    version = int(os.environ.get("CORPUS_CACHE_VERSION", CACHE_VERSION))
    (d / "meta.json").write_text(json.dumps({"version": version, "name": "ml-100k", "implicit": False,
                                             "files": {"inter.parquet": "0" * 64}}))


def change_a_rating(w, cli):
    edit_lines("toy.inter", set_field(5, 2, "1"))(w / "toy")
    edit_lines("toy.inter", set_field(6, 2, "5"))(w / "toy")


def home_is_a_file(w, cli):
    (w / "home").write_text("not a folder")


def a_file(name: str):
    return write(name, "x")


def _rec(dataset="toy", seed=0, learner="bias"):
    return {"dataset": dataset, "protocol": "user-cold", "view": "explicit", "seed": seed, "learner": learner,
            "label": learner, "test": {"rmse": 1.0, "mae": 0.8, "tasks": 3}, "valid": {"rmse": 1.0}}


# --------------------------------------------------------------------------------------------- cases
T = "train --learner melu --dataset {data} " + FAST
CASES: list[Case] = [
    # --- the command line itself
    Case("no-command", "", code=2, needle="required"),
    Case("unknown-command", "bogus", needle="invalid choice"),
    Case("bad-int-flag", "split toy --seed abc", needle="invalid int value"),
    Case("unknown-learner", "train --learner nope", needle="unknown learner 'nope'"),
    Case("unknown-config-key", "train --train.epoch=3", needle="unknown config key 'train.epoch'"),
    Case("non-number", "train --train.epochs=many", needle="takes a number"),
    Case("unknown-view", "train --view both", needle="unknown view"),
    Case("missing-config-file", "train --config missing.yaml", needle="no such config file"),
    Case("bad-yaml", "train --config bad.yaml", write("bad.yaml", "train: [1, 2\n"), needle="not valid YAML"),
    Case("yaml-list", "train --config list.yaml", write("list.yaml", "- 1\n- 2\n"), needle="must hold a mapping"),
    Case("stray-argument", "train junk", needle="unrecognised argument 'junk'"),
    Case("learners-extra", "learners --x", needle="unrecognized arguments"),
    Case("entry-syntax", "compare --learners melu@lr", needle="overrides look like"),
    Case("unknown-protocol", "train --protocol sideways --dataset {data}", toy, needle="unknown protocol"),
    Case("unknown-dataset", "split nope", needle="unknown dataset 'nope'"),
    Case("prepare-unknown", "prepare nope", needle="unknown dataset"),
    # --- settings out of their domain (point 3): refused before any data is read
    Case("epochs-0", T + " --train.epochs=0", toy, needle="train.epochs must be a positive whole number"),
    Case("epochs-neg", T + " --train.epochs=-3", toy, needle="train.epochs"),
    Case("epochs-frac", T + " --train.epochs=2.5", toy, needle="whole number, got 2.5"),
    Case("patience-0", T + " --train.patience=0", toy, needle="train.patience"),
    Case("meta-batch-0", T + " --train.meta_batch=0", toy, needle="train.meta_batch"),
    Case("lr-nan", T + " --train.lr=nan", toy, needle="train.lr"),
    Case("lr-neg", T + " --train.lr=-1e-3", toy, needle="train.lr"),
    Case("wd-neg", T + " --train.weight_decay=-0.1", toy, needle="train.weight_decay"),
    Case("clip-neg", T + " --train.clip=-5", toy, needle="train.clip"),
    Case("select-unknown", T + " --train.select=rsme", toy, needle="unknown train.select"),
    Case("select-unmeasured", T + " --train.select=auc --out r", toy, needle="is not measured"),
    Case("inner-steps-neg", T + " --learner.inner.steps=-1", toy, needle="inner.steps"),
    Case("inner-lr-nan", T + " --learner.inner.lr=nan", toy, needle="inner.lr"),
    Case("learn-lr-unknown", T + " --learner.inner.learn_lr=sometimes", toy, needle="inner.learn_lr"),
    Case("loss-unknown", T + " --learner.loss=hinge", toy, needle="learner.loss"),
    Case("hidden-zero", T + " --learner.hidden=64,0", toy, needle="learner.hidden"),
    Case("emb-dim-0", T + " --learner.emb_dim=0", toy, needle="learner.emb_dim"),
    Case("n-query-0", T + " --tasks.n_query=0", toy, needle="n_query"),
    Case("new-user-frac", T + " --split.new_user_frac=1.5", toy, needle="new_user_frac"),
    Case("negatives-0", T + " --view implicit --negatives=0", toy, needle="negatives"),
    Case("seed-neg", T + " --train.seed=-1", toy, needle="train.seed"),
    Case("protocol-twice", T + " --protocol user-cold --split.protocol=warm", toy, needle="disagree"),
    Case("compare-late-typo", "compare --dataset {data} --learners bias melu@learner.nope=1 --seeds 0 --out c "
         + FAST, toy, needle="learner.nope"),
    Case("compare-late-lr", "compare --dataset {data} --learners bias melu@train.lr=-1 --seeds 0 --out c " + FAST,
         toy, needle="train.lr"),
    Case("curve-k0", "curve --dataset {data} --learners bias --ks 0 3 --out cv " + FAST, toy, needle="--ks"),
    Case("split-k-shot-0", "split {data} --k-shot 0", toy, needle="k_shot"),
    Case("split-frac-0", "split {data} --new-user-frac 0", toy, needle="new_user_frac"),
    Case("split-by", "split {data} --by sideways", toy, needle="unknown split --by"),
    Case("split-no-tasks", "split {data} --min-inter 90 --max-inter 100", toy, needle="leaves no evaluation tasks"),
    # --- data (points 4 and 6)
    Case("dir-without-inter", "split empty", write("empty/readme.txt", "x"), needle="no .inter file"),
    Case("two-inter-files", "split {data}", with_toy(lambda d: (d / "b.inter").write_text((d / "toy.inter")
                                                                                            .read_text())),
         needle="2 .inter files"),
    Case("empty-inter", "split {data}", with_toy(lambda d: (d / "toy.inter").write_text("")), needle="empty"),
    Case("header-untyped", "split {data}", with_toy(edit_lines("toy.inter", lambda ls: ["user\titem"] + ls[1:])),
         needle="name:type"),
    Case("inter-commas", "split {data}", with_toy(edit_lines("toy.inter", lambda ls: [x.replace("\t", ",")
                                                                                       for x in ls])),
         needle="tab-separated"),
    Case("user-commas", "split {data}", with_toy(edit_lines("toy.user", lambda ls: [x.replace("\t", ",")
                                                                                     for x in ls])),
         needle="toy.user, line 1"),
    Case("item-truncated", "split {data}", with_toy(edit_lines("toy.item", lambda ls: ls[:-1] + [ls[-1][:3]])),
         needle="toy.item, line"),
    Case("rating-text", "split {data}", with_toy(edit_lines("toy.inter", set_field(3, 2, "good"))),
         needle="non-numeric or NaN rating"),
    Case("rating-nan", "split {data}", with_toy(edit_lines("toy.inter", set_field(3, 2, "nan"))),
         needle="non-numeric or NaN rating"),
    Case("rating-1e300", "split {data}", with_toy(edit_lines("toy.inter", set_field(3, 2, "1e300"))),
         needle="out of range"),
    Case("rating-range", "split {data} --rating-range 2 5", toy, needle="outside --rating-range"),
    Case("timestamp-text", "split {data}", with_toy(edit_lines("toy.inter", set_field(3, 3, "yesterday"))),
         needle="timestamp"),
    Case("duplicate-rows", "split {data}", with_toy(edit_lines("toy.inter", lambda ls: ls + [ls[1]])),
         needle="duplicate"),
    Case("inter-not-utf8", "split {data}", with_toy(lambda d: (d / "toy.inter").write_bytes(
        b"user_id:token\titem_id:token\n\xff\xfe\t1\n")), needle="not UTF-8"),
    Case("csv-no-cols", "split log.csv", log_csv("u,i,r\n1,2,3\n"), needle="--user-col"),
    Case("csv-one-col", "split log.csv --user-col u", log_csv("u,i,r\n1,2,3\n"), needle="both --user-col"),
    Case("csv-missing-col", "split log.csv --user-col u --item-col x", log_csv("u,i,r\n1,2,3\n"),
         needle="missing column"),
    Case("csv-empty", "split log.csv --user-col u --item-col i", log_csv(""), needle="log.csv"),
    Case("csv-header-only", "split log.csv --user-col u --item-col i", log_csv("u,i\n"), needle="no interactions"),
    Case("csv-missing-file", "split nolog.csv --user-col u --item-col i", needle="no such file"),
    Case("parquet-garbage", "split log.parquet --user-col u --item-col i", write("log.parquet", b"garbage"),
         needle="parquet"),
    Case("implicit-keeps-nothing", "split {data} --threshold 10", toy, needle="keeps no interaction"),
    Case("train-implicit-nothing", T + " --view implicit --threshold=10", toy, needle="keeps no interaction"),
    Case("home-is-a-file", "prepare ml-100k", home_is_a_file, needle="home"),
    Case("damaged-cache-datasets", "datasets", damaged_cache, code=0, needle="damaged"),
    # --- model files, checkpoints and run identity (points 1 and 2)
    Case("evaluate-missing", "evaluate missing.pt", needle="no such"),
    Case("evaluate-empty-dir", "evaluate run", write("run/readme.txt", "x"), needle="no such"),
    Case("evaluate-garbage", "evaluate m.pt", write("m.pt", b"garbage" * 20), needle="not a metarec model file"),
    Case("evaluate-empty-file", "evaluate m.pt", write("m.pt", b""), needle="not a metarec model file"),
    Case("evaluate-json", "evaluate m.pt", json_file("m.pt", {"learner": "melu"}), needle="not a metarec model"),
    Case("evaluate-malicious", "evaluate m.pt", malicious("m.pt"), needle="not a metarec model file"),
    Case("evaluate-unknown-learner", "evaluate m.pt", torch_blob("m.pt", {"learner": "nope", "config": {}}),
         needle="not a metarec model file"),
    Case("evaluate-changed-data", "evaluate run", both(trained("bias"), change_a_rating), needle="changed"),
    Case("scenario-evaluate-melu", "scenario evaluate run", trained("bias"), needle="scenario train",
         family="scenario"),
    Case("resume-malicious", T + " --out run", both(toy, malicious("run/checkpoint.pt")),
         needle="not a metarec checkpoint file"),
    Case("resume-garbage", T + " --out run", both(toy, write("run/checkpoint.pt", b"\x80\x04garbage")),
         needle="not a metarec checkpoint file"),
    Case("resume-other-inner-lr", T + " --out run --learner.inner.lr=1e-2", trained("melu", "--learner.inner.lr=1e-3"),
         needle="learner.inner.lr"),
    Case("resume-other-split-seed", T + " --out run --split.seed=1", trained("melu"), needle="split.seed"),
    Case("resume-other-task-seed", T + " --out run --tasks.seed=2", trained("melu"), needle="tasks.seed"),
    Case("resume-other-learner", "train --learner noadapt --dataset {data} --out run " + FAST, trained("melu"),
         needle="other settings"),
    Case("resume-other-protocol", T + " --out run --protocol warm", trained("melu"), needle="other settings"),
    Case("out-is-a-file", T + " --out f/run", both(toy, a_file("f")), needle="cannot write"),
    # --- records (merge, replot)
    Case("merge-not-utf8", "merge a.json --out m", write("a.json", b"\xff\xfe{}"), needle="not a `metarec compare`"),
    Case("merge-garbage", "merge a.json --out m", write("a.json", "{oops"), needle="not a `metarec compare`"),
    Case("merge-list", "merge a.json --out m", json_file("a.json", [1, 2]), needle="not a `metarec compare`"),
    Case("merge-bad-results", "merge a.json --out m", json_file("a.json", {"results": [{"x": 1}]}),
         needle="not a `metarec compare`"),
    Case("merge-two-datasets", "merge a.json b.json --out m",
         both(json_file("a.json", {"command": "c", "results": [_rec()]}),
              json_file("b.json", {"command": "c", "results": [_rec(dataset="other", seed=1)]})),
         needle="different runs"),
    Case("merge-duplicate", "merge a.json a.json --out m", json_file("a.json", {"command": "c", "results": [_rec()]}),
         needle="present twice"),
    Case("replot-not-utf8", "curve --replot c.json", write("c.json", b"\xff\xfe"), needle="not a `metarec curve`"),
    Case("replot-missing-keys", "curve --replot c.json", json_file("c.json", {"metric": "rmse"}),
         needle="not a `metarec curve`"),
    Case("replot-bad-curves", "curve --replot c.json", json_file("c.json", {"metric": "rmse", "curves": {"a": 3}}),
         needle="not a `metarec curve`"),
    # --- the other protocol families
    Case("seqrec-merge-not-utf8", "seqrec --merge a.json --out m", write("a.json", b"\xff\xfe"),
         needle="not a `metarec compare` record", family="seqrec"),
    Case("seqrec-merge-garbage", "seqrec --merge a.json --out m", write("a.json", "[1]"),
         needle="not a `metarec compare` record", family="seqrec"),
    Case("seqrec-epochs-0", "seqrec --dataset {data} --methods sasrec --seeds 0 --train.epochs=0 --runs-dir ''",
         toy, needle="epochs", family="seqrec"),
    Case("scenario-not-a-learner", "scenario train --learner melu --dataset {data}", toy,
         needle="not a scenario learner", family="scenario"),
    Case("scenario-lr-neg", "scenario train --learner s2meta --dataset {data} --train.lr=-1", toy,
         needle="train.lr", family="scenario"),
    Case("scenario-repeat-0", "scenario train --learner s2meta --dataset {data} --repeat=0", toy,
         needle="repeat", family="scenario"),
    Case("scenario-merge-garbage", "scenario merge a.json --out m", write("a.json", "{oops"),
         needle="not a `metarec compare` record", family="scenario"),
    Case("warmup-config-missing", "warmup --dataset {data} --config nope.yaml", toy, needle="no such config file",
         family="warmup"),
    Case("warmup-unknown-method", "warmup --dataset {data} --methods bogus --seeds 0", toy, needle="bogus",
         family="warmup"),
]


def classify(case: Case, code: int | None, out: str, err: str) -> str:
    """``clear``, ``traceback`` or ``silent`` (see the module docstring)."""
    if "Traceback (most recent call last)" in err or "internal error" in err or code == 1:
        return "traceback"
    if case.code == 0:
        return "clear" if code == 0 and case.needle in out else "silent"
    lines = [x for x in err.strip().splitlines() if x.strip() and not x.startswith(("usage:", " "))]  # argparse usage
    if code == case.code and len(lines) == 1 and re.match(r"metarec( [\w-]+)*: error:", lines[0]):
        return "clear"
    return "silent"


def leftovers(w: Path, before: set[Path]) -> list[str]:
    """Files that appeared under W during a failed command (half-written output), and any temporary."""
    now = {p for p in w.rglob("*") if p.is_file()}
    new = sorted(str(p.relative_to(w)) for p in now - before)
    return new + sorted(str(p.relative_to(w)) for p in w.rglob("*.tmp"))


def snapshot(w: Path) -> set[Path]:
    return {p for p in w.rglob("*") if p.is_file()}

