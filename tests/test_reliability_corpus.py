"""Issue 18: the reliability corpus (tests/corpus_cases.py), run in-process through ``metarec.cli.main``.

Every case must end in its expected exit code with one line ``metarec: error: ...`` (no traceback, no silent
success), leave nothing half-written, and never run code from a file. A Hypothesis property test feeds random
bytes and random malformed CSV / atomic files to the readers.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metarec.cli import main
from tests.corpus_cases import CASES, classify, leftovers, snapshot


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def quiet_cli(argv: list[str]) -> int:
    return run_main(argv)[0]


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)
    assert {c.family for c in CASES} >= {"cli", "seqrec", "scenario", "warmup"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path, monkeypatch):
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(w)
    monkeypatch.setenv("METAREC_HOME", str(w / "home"))
    monkeypatch.delenv("METAREC_DEBUG", raising=False)
    if case.setup is not None:
        case.setup(w, quiet_cli)
    before = snapshot(w)
    code, out, err = run_main(case.args())
    assert classify(case, code, out, err) == "clear", (code, out[-500:], err[-2000:])
    assert case.needle in (out if case.code == 0 else err), err
    if case.code != 0:
        assert err.count("\n") == 1 and err.startswith("metarec: error: "), err  # one line, no usage block
        assert leftovers(w, before) == [], "half-written output"
    assert not (w / "PWNED").exists(), "a file's pickle payload ran"


# ------------------------------------------------------------------------------- property-based (fuzz)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _fresh(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    if d.exists():
        for p in sorted(d.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    d.mkdir(exist_ok=True)
    return d


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_as_an_inter_file(tmp_path, data):
    d = _fresh(tmp_path, "atomic")
    (d / "x.inter").write_bytes(data)
    code, _, err = run_main(["split", str(d)])
    assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, err


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_model_or_record(tmp_path, data):
    d = _fresh(tmp_path, "files")
    (d / "model.pt").write_bytes(data)
    (d / "r.json").write_bytes(data)
    for argv in (["evaluate", str(d / "model.pt")], ["merge", str(d / "r.json"), "--out", str(d / "m")],
                 ["curve", "--replot", str(d / "r.json")]):
        code, _, err = run_main(argv)
        assert code == 2 and err.startswith("metarec: error:") and err.count("\n") == 1, (argv, err)


cell = st.one_of(st.sampled_from(["", "1", "2.5", "nan", "inf", "-1", "1e300", "u1", "i2", "a,b", "\"", " "]),
                 st.text(max_size=6))
row = st.lists(cell, min_size=0, max_size=5)


@FUZZ
@given(rows=st.lists(row, max_size=12), sep=st.sampled_from([",", "\t", ";"]))
def test_random_malformed_csv_logs(tmp_path, rows, sep):
    d = _fresh(tmp_path, "csv")
    text = "\n".join(sep.join(r) for r in [["u", "i", "r", "t"], *rows])
    (d / "log.csv").write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else None
    if not (d / "log.csv").exists():
        return
    code, _, err = run_main(["split", str(d / "log.csv"), "--user-col", "u", "--item-col", "i", "--rating-col", "r",
                             "--time-col", "t", "--by", "random", "--min-inter", "2"])
    assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, err


@FUZZ
@given(rows=st.lists(row, max_size=12), which=st.sampled_from(["inter", "user", "item"]))
def test_random_malformed_atomic_files(tmp_path, rows, which):
    from tests.corpus_cases import toy

    source = tmp_path / "source" / "toy"
    if not source.exists():  # the toy dataset, written once per test
        toy(tmp_path / "source")
    d = _fresh(tmp_path, "atomic2")
    for f in source.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    target = d / f"toy.{which}"
    lines = target.read_text().splitlines()
    try:
        target.write_text("\n".join(lines[: 1 + len(rows)] + ["\t".join(r) for r in rows]) + "\n", encoding="utf-8")
    except UnicodeEncodeError:
        return
    code, _, err = run_main(["split", str(d), "--by", "random"])
    assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, err
