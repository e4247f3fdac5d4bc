"""``metarec seqrec`` end to end on the tiny synthetic log (a few seconds), and its one-line errors."""

from __future__ import annotations

import json

from metarec import registry
from metarec.cli import main
from tests.conftest import synthetic_frames, write_atomic

ARGS = ["--seeds", "0", "--quick", "--quiet", "--runs-dir", "", "--n-support", "5", "--n-query", "3",
        "--max-len", "12"]


def _tiny_dir(tmp_path):
    inter, users, items = synthetic_frames()
    write_atomic(tmp_path / "tiny", "tiny", inter, users, items)
    return str(tmp_path / "tiny")


def test_seqrec_command_writes_markdown_and_json(tmp_path, capsys):
    from metarec.io import code_version

    out = tmp_path / "res" / "tiny"
    rc = main(["seqrec", "--dataset", _tiny_dir(tmp_path), "--methods", "sasrec", "ptft@model.finetune.steps=1",
               "--out", str(out), *ARGS, "--model.sasrec.dim=16", "--model.sasrec.inner=16"])
    assert rc == 0
    md = out.with_suffix(".md").read_text()
    assert "| sasrec" in md and "ptft@model.finetune.steps=1" in md and "recall@10" in md
    blob = json.loads(out.with_suffix(".json").read_text())
    assert [r["method"] for r in blob["results"]] == ["sasrec", "ptft@model.finetune.steps=1"]
    assert blob["protocol_stats"]["new_users"] > 0 and 0 <= blob["results"][0]["test"]["ndcg@10"] <= 1
    assert all(r["code"] == code_version() for r in blob["results"]) and f"(code: {code_version()})" in md
    # PT-FT reused the sasrec pre-training of the same seed and chose its rate on meta-valid
    assert blob["results"][1]["best_epoch"] == blob["results"][0]["best_epoch"]
    assert set(blob["results"][1]["finetune_lr_selection"]) == {"0.001", "0.01", "0.1", "1.0"}


CALLS: list = []


def dummy_run(name, data, seed, out_dir=None, progress=True, overrides=None, cache=None, device=None):
    CALLS.append((name, len(data.test), seed))
    return {"method": name, "seed": seed, "test": {f"{m}@{k}": 0.5 for m in ("recall", "mrr", "ndcg")
                                                  for k in (5, 10, 20)}, "train_seconds": 0.0}


def test_a_registry_entry_is_all_a_sequential_method_needs(tmp_path, monkeypatch):
    entry = registry.Method("dummy", "a test method", {"sequential": registry.Impl(f"{__name__}:dummy_run")})
    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, "dummy": entry})
    CALLS.clear()
    d = _tiny_dir(tmp_path)
    for seed in ("0", "1"):  # one process per seed (in the new grammar), then one merged table
        args = ["compare", "--protocol", "sequential", "--dataset", d, "--learners", "dummy", *ARGS, "--seeds", seed,
                "--out", str(tmp_path / f"s{seed}")]
        assert main(args) == 0
    assert [c[2] for c in CALLS] == [0, 1] and CALLS[0][0] == "dummy"
    assert main(["merge", "--protocol", "sequential", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"),
                 "--out", str(tmp_path / "all")]) == 0
    blob = json.loads((tmp_path / "all.json").read_text())
    assert [r["seed"] for r in blob["results"]] == [0, 1] and "| dummy  | 2 " in (tmp_path / "all.md").read_text()


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    d = _tiny_dir(tmp_path)
    assert main(["seqrec", "--dataset", d, "--methods", "nosuch", *ARGS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metarec: error: unknown method") and "\n" not in err
    assert main(["seqrec", "--dataset", d, "--methods", "sasrec", *ARGS, "--train.epochs=abc"]) == 2
    assert main(["seqrec", "--dataset", d, "--methods", "sasrec", *ARGS, "--bogus.x=1"]) == 2
    assert main(["seqrec", "--dataset", d, *ARGS, "--methods", "sasrec", "--n-support", "1"]) == 2
    capsys.readouterr()
    assert main(["compare", "--protocol", "sequential", "--dataset", d, "--learners", "sasrec", *ARGS,
                 "--device", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == "metarec: error: --device 'gpu': choose cpu, cuda, cuda:N or auto"


def test_device_flag_runs_where_it_says(tmp_path, capsys):
    """``--device auto`` is the CPU here (cuda where one is visible); the numbers are those of ``--device cpu``."""
    d = _tiny_dir(tmp_path)
    tables = []
    for dev in ("cpu", "auto"):
        out = tmp_path / dev
        assert main(["compare", "--protocol", "sequential", "--dataset", d, "--learners", "sasrec", *ARGS,
                     "--device", dev, "--out", str(out)]) == 0
        tables.append(json.loads(out.with_suffix(".json").read_text())["results"][0]["test"])
    if not __import__("torch").cuda.is_available():
        assert tables[0] == tables[1]


def test_a_saved_sequence_model_evaluates_to_its_numbers(tmp_path, capsys):
    d = _tiny_dir(tmp_path)
    runs = tmp_path / "runs"
    args = ["compare", "--protocol", "sequential", "--dataset", d, "--learners", "sasrec", *ARGS, "--runs-dir",
            str(runs), "--out", str(tmp_path / "t")]
    assert main(args) == 0
    want = json.loads((tmp_path / "t.json").read_text())["results"][0]["test"]
    (model,) = runs.rglob("model.pt")
    capsys.readouterr()
    assert main(["evaluate", str(model), "--dataset", d, "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got == want
    assert main(["evaluate", str(model.parent)]) == 2  # the dataset the file records ("tiny") is not a built-in
