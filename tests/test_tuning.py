"""metarec tune (Optuna on meta-valid, resumable) and the named presets, on the tiny synthetic dataset."""

import json
from dataclasses import replace

import pytest

from metarec import pipeline
from metarec.cli import main
from metarec.errors import MetarecError
from metarec.learners.registry import LEARNERS
from metarec.presets import AUTO, load_store, resolve
from metarec.tuning import TuneConfig, learner_space, tune
from tests.conftest import synthetic_frames, write_atomic

TINY = {"split.by": "random", "tasks.min_inter": 14}


@pytest.fixture
def data_dir(tmp_path):
    inter, users, items = synthetic_frames()
    return str(write_atomic(tmp_path / "toy", "toy", inter, users, items).parent)


def _tune(tiny_dataset, out, learner="bias", trials=2, **over):
    cfg = TuneConfig(learner=learner, trials=trials, dataset="tiny", preset=None, overrides={**TINY, **over})
    return tune(cfg, out, command="test", progress=False, ds=tiny_dataset)


# ----------------------------------------------------------------------------------------------- the tuner

def test_tune_bias_records_every_trial_and_stores_a_preset_that_reproduces_the_best(data_dir, tmp_path, capsys):
    out, store = tmp_path / "tune", tmp_path / "presets.json"
    argv = ["tune", "--learner", "bias", "--dataset", data_dir, "--trials", "3", "--out", str(out),
            "--presets", str(store), "--preset-name", "default", "--split.by=random", "--tasks.min_inter=14"]
    assert main(argv) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("trial ") for line in lines) == 3  # one progress line per trial
    rec = json.loads((out / "tune.json").read_text())
    assert rec["learner"] == "bias" and rec["metric"] == "rmse" and rec["direction"] == "minimize"
    assert rec["command"] == "metarec " + " ".join(argv) and rec["code"]
    assert len(rec["trials"]) == 3 and all(t["state"] == "COMPLETE" for t in rec["trials"])
    assert not any("test" in t for t in rec["trials"])  # a trial has no meta-test numbers
    values = [t["value"] for t in rec["trials"]]
    assert rec["best"]["value"] == min(values) and all(t["valid"]["rmse"] == t["value"] for t in rec["trials"])
    space = learner_space("bias")
    for t in rec["trials"]:
        assert set(t["params"]) == set(space)
        assert all(space[k][1] <= v <= space[k][2] for k, v in t["params"].items())
    md = (out / "tune.md").read_text()
    ranked = [float(row.split("|")[3]) for row in md.splitlines() if row.startswith("| ") and row[2].isdigit()]
    assert ranked == [round(v, 4) for v in sorted(values)]  # the table is sorted by the metric, best first
    assert (out / "study.db").is_file()
    preset = json.loads(store.read_text())["bias"]["default"]
    assert preset["overrides"] == rec["best"]["params"] and preset["command"] == rec["command"]
    assert preset["when"] == {"dataset": rec["dataset"], "view": "explicit"} and preset["code"]
    # resuming without --preset keeps the base the study began with, though the tune has since stored a default
    argv[argv.index("3")] = "4"
    assert main(argv) == 0, capsys.readouterr().err
    assert sum(line.startswith("trial ") for line in capsys.readouterr().out.splitlines()) == 1
    rec = json.loads((out / "tune.json").read_text())
    assert rec["preset"] == "" and rec["base"] == {} and rec["complete"] == 4
    assert json.loads(store.read_text())["bias"]["default"]["overrides"] == rec["best"]["params"]
    # `train` with no --preset picks that working default up and lands on the best trial's meta-valid score
    run_dir = tmp_path / "run"
    assert main(["train", "--learner", "bias", "--dataset", data_dir, "--presets", str(store), "--out", str(run_dir),
                 "--split.by=random", "--tasks.min_inter=14", "--quiet"]) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["preset"] == "default" and res["run_config"]["preset"] == "default"
    assert res["valid"]["rmse"] == pytest.approx(rec["best"]["value"], abs=1e-12)


def test_tune_a_neural_learner_at_one_epoch(tiny_dataset, tmp_path):
    rec = _tune(tiny_dataset, tmp_path / "t", learner="noadapt", trials=2, **{"train.epochs": 1})
    assert rec["complete"] == 2 and "train.epochs" not in rec["space"]  # an explicit override is not searched
    assert all(t["best_epoch"] <= 1 and set(t["params"]) == {"train.lr"} for t in rec["trials"])
    lo, hi = LEARNERS["noadapt"].space["train.lr"][1:]
    assert all(lo <= t["params"]["train.lr"] <= hi for t in rec["trials"])


def test_a_killed_tune_resumes_and_runs_only_the_missing_trials(tiny_dataset, tmp_path, monkeypatch):
    import optuna

    out = tmp_path / "t"
    first = _tune(tiny_dataset, out, trials=2)
    calls = []
    real = pipeline.train_and_evaluate
    monkeypatch.setattr(pipeline, "train_and_evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    # a kill in the middle of a trial leaves it RUNNING in the study: it is marked failed and does not count
    study = optuna.load_study(study_name="metarec-tune", storage=f"sqlite:///{out / 'study.db'}")
    study.ask()
    second = _tune(tiny_dataset, out, trials=4)
    assert len(calls) == 2 and second["complete"] == 4
    assert second["trials"][:2] == first["trials"]  # the first two trials are the same records
    assert [t["state"] for t in second["trials"]] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert len(second["invocations"]) == 2
    # the same tune again: nothing left to run
    assert _tune(tiny_dataset, out, trials=4)["complete"] == 4 and len(calls) == 2
    # the resumed sampler does not replay the first samples
    params = [json.dumps(t["params"], sort_keys=True) for t in second["trials"] if t["state"] == "COMPLETE"]
    assert len(set(params)) == 4
    # another tune in the same directory is refused
    with pytest.raises(MetarecError, match="holds another tune"):
        _tune(tiny_dataset, out, trials=4, **{"learner.use_user_offset": False})


def test_an_uninterrupted_tune_is_reproducible(tiny_dataset, tmp_path):
    a = _tune(tiny_dataset, tmp_path / "a", trials=3)
    b = _tune(tiny_dataset, tmp_path / "b", trials=3)
    strip = lambda rec: [(t["params"], t["value"]) for t in rec["trials"]]  # noqa: E731
    assert strip(a) == strip(b)


@pytest.mark.parametrize("learner,over", [("bias", {}), ("melu", {"train.epochs": 1})])
def test_tuning_selects_on_meta_valid_and_never_evaluates_meta_test(tiny_dataset, tmp_path, monkeypatch, learner,
                                                                     over):
    seen, preps = [], []
    real_prepare, real_eval = pipeline.prepare, pipeline.evaluate_rating
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: preps.append(real_prepare(*a, **k)) or preps[-1])
    monkeypatch.setattr(pipeline, "evaluate_rating", lambda m, tasks, *a, **k: seen.append(tasks) or
                        real_eval(m, tasks, *a, **k))
    rec = _tune(tiny_dataset, tmp_path / "t", learner=learner, trials=2, **over)
    assert len(preps) == 1  # the data are prepared once per tune
    prep = preps[0]
    assert seen and all(tasks is prep.valid for tasks in seen)
    assert not any(tasks is prep.test for tasks in seen)
    assert all("test" not in t for t in rec["trials"])
    # the recorder does see meta-test when a run evaluates it (so the assertion above can fail)
    run, lcfg = pipeline.make_config(learner, "tiny", "user-cold", 0, "explicit", {**TINY, **over})
    pipeline.train_and_evaluate(run, lcfg, progress=False, prep=prep)
    assert any(tasks is prep.test for tasks in seen)
    res = pipeline.train_and_evaluate(run, lcfg, progress=False, prep=prep, evaluate_test=False)
    assert res["test"] is None


def test_implicit_view_maximises_ndcg(tiny_dataset, tmp_path):
    cfg = TuneConfig(learner="itempop", trials=2, dataset="tiny", view="implicit", preset=None,
                     overrides={"split.by": "random", "tasks.min_inter": 6, "threshold": 3})
    rec = tune(cfg, tmp_path / "t", progress=False, ds=tiny_dataset)
    assert rec["metric"] == "ndcg@10" and rec["direction"] == "maximize"
    assert rec["best"]["value"] == max(t["value"] for t in rec["trials"])


def test_tune_errors_are_one_line(data_dir, tmp_path, capsys):
    assert main(["tune", "--learner", "s2meta", "--trials", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metarec: error: learner 's2meta' has no search space") and len(err.splitlines()) == 1
    assert main(["tune", "--learner", "bias", "--dataset", data_dir, "--trials", "0", "--out", str(tmp_path)]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["tune", "--learner", "bias", "--dataset", data_dir, "--trials", "2", "--out", str(tmp_path / "y"),
                 "--learner.reg_item=1", "--learner.reg_user=1"]) == 2
    assert "nothing to tune" in capsys.readouterr().err


@pytest.mark.parametrize("name", [n for n, s in LEARNERS.items() if s.space])
def test_every_search_space_names_real_settings(name):
    space = learner_space(name)
    for key, spec in space.items():
        value = spec[1][-1] if spec[0] == "cat" else spec[2]
        run, lcfg = pipeline.make_config(name, "ml-100k", "user-cold", 0, "explicit", {key: value})
        section, _, rest = key.partition(".")
        obj = run.train if section == "train" else lcfg
        for part in rest.split("."):
            obj = getattr(obj, part)
        assert obj == value, (name, key)


# ----------------------------------------------------------------------------------------------- presets

def test_paper_preset_is_exactly_todays_registry_defaults():
    store = load_store()
    assert {"melu", "bias", "ptft", "noadapt", "mamo", "tanp"} <= set(store)
    for name in store:
        for view in ("explicit", "implicit"):
            today = pipeline.make_config(name, "ml-100k", "user-cold", 0, view, {})
            paper = pipeline.make_config(name, "ml-100k", "user-cold", 0, view, {}, preset="paper")
            assert paper[0].preset == "paper"
            assert (replace(paper[0], preset=""), paper[1]) == today, (name, view)
    # MeLU's published settings, by hand
    run, lcfg = pipeline.make_config("melu", "ml-100k", "user-cold", 0, "explicit", {}, preset="paper")
    assert (run.train.lr, lcfg.inner.lr, lcfg.inner.steps, lcfg.inner.first_order) == (5e-5, 5e-6, 1, False)
    assert (lcfg.emb_dim, lcfg.hidden, run.train.meta_batch) == (32, (64, 64), 32)


def test_paper_is_available_for_a_learner_without_presets():
    run, lcfg = pipeline.make_config("lwa", "ml-100k", "user-cold", 0, "explicit", {}, preset="paper",
                                     presets={})
    assert run.preset == "paper" and lcfg == LEARNERS["lwa"].default()


STORE = {"melu": {
    "default": {"overrides": {"train.lr": 1e-3, "learner.inner.lr": 2e-3}, "when": {"view": "explicit"}},
    "default-ml-1m": {"overrides": {"train.lr": 3e-3}, "when": {"dataset": "ml-1m", "view": "explicit"}},
    "fast": {"overrides": {"train.lr": 4e-3, "train.epochs": 3}},
}}


def test_working_default_resolution_rule():
    assert resolve(STORE, "melu", AUTO, "ml-100k", "warm", "explicit") == ("default", STORE["melu"]["default"]
                                                                            ["overrides"])
    assert resolve(STORE, "melu", AUTO, "ml-1m", "user-cold", "explicit")[0] == "default-ml-1m"  # most specific
    assert resolve(STORE, "melu", AUTO, "ml-100k", "user-cold", "implicit") == ("", {})  # none matches
    assert resolve(STORE, "bias", AUTO, "ml-100k", "user-cold", "explicit") == ("", {})
    assert resolve(STORE, "melu", None, "ml-100k", "user-cold", "explicit") == ("", {})
    # a named preset applies whatever its "when" says
    assert resolve(STORE, "melu", "default-ml-1m", "ml-100k", "user-cold", "implicit")[1] == {"train.lr": 3e-3}


def test_explicit_overrides_beat_the_preset():
    run, lcfg = pipeline.make_config("melu", "ml-100k", "user-cold", 0, "explicit", {"train.lr": "5e-4"},
                                     preset="fast", presets=STORE)
    assert run.preset == "fast" and run.train.lr == 5e-4 and run.train.epochs == 3
    run, lcfg = pipeline.make_config("melu", "ml-100k", "user-cold", 0, "explicit", {}, preset=AUTO, presets=STORE)
    assert run.preset == "default" and run.train.lr == 1e-3 and lcfg.inner.lr == 2e-3
    run, lcfg = pipeline.make_config("melu", "ml-100k", "user-cold", 0, "explicit", {"learner.inner.lr": 0.5},
                                     preset=AUTO, presets=STORE)
    assert run.train.lr == 1e-3 and lcfg.inner.lr == 0.5
    with pytest.raises(MetarecError, match="--preset NAME"):
        pipeline.make_config("melu", "ml-100k", "user-cold", 0, "explicit", {"preset": "fast"})


def test_unknown_preset_is_one_line_listing_the_learners_presets(tmp_path, capsys):
    store = tmp_path / "p.json"
    store.write_text(json.dumps(STORE))
    assert main(["train", "--learner", "melu", "--preset", "nope", "--presets", str(store)]) == 2
    err = capsys.readouterr().err
    assert err == ("metarec: error: learner 'melu' has no preset 'nope'; its presets: paper, default, "
                   "default-ml-1m, fast\n")
    assert main(["compare", "--learners", "bias@preset=nope", "--presets", str(store)]) == 2
    assert "learner 'bias' has no preset 'nope'; its presets: paper" in capsys.readouterr().err
    store.write_text(json.dumps({"melu": {"x": {"when": {}}}}))
    assert main(["train", "--learner", "melu", "--presets", str(store)]) == 2
    assert "needs an \"overrides\" mapping" in capsys.readouterr().err
    store.write_text("{")
    assert main(["train", "--learner", "melu", "--presets", str(store)]) == 2
    assert "not a preset file" in capsys.readouterr().err


def test_learner_entries_name_their_preset(data_dir, tmp_path, capsys):
    from argparse import Namespace

    from metarec.commands import _entry_config

    args = Namespace(dataset="ml-100k", protocol="user-cold", view="explicit")
    name, label, run, lcfg = _entry_config("melu@preset=fast,train.lr=2e-3", args, {"train.epochs": "7"}, 0,
                                           STORE, AUTO)
    assert (name, label, run.preset) == ("melu", "melu@preset=fast,train.lr=2e-3", "fast")
    assert run.train.lr == 2e-3 and run.train.epochs == 7  # the entry and the global overrides beat the preset
    _, _, run, _ = _entry_config("melu", args, {}, 0, STORE, "paper")  # --preset paper for every entry
    assert run.preset == "paper" and run.train.lr == 5e-5
    _, _, run, _ = _entry_config("melu@preset=paper", args, {}, 0, STORE, AUTO)  # the entry's preset wins
    assert run.preset == "paper"
    # through compare: the record says which preset each run used
    store = tmp_path / "p.json"
    store.write_text(json.dumps({"bias": {"default": {"overrides": {"learner.reg_user": 1.0}}}}))
    stem = tmp_path / "cmp"
    assert main(["compare", "--dataset", data_dir, "--learners", "bias", "bias@preset=paper", "--seeds", "0",
                 "--presets", str(store), "--out", str(stem), "--split.by=random", "--tasks.min_inter=14",
                 "--quiet"]) == 0, capsys.readouterr().err
    res = json.loads(stem.with_suffix(".json").read_text())["results"]
    assert [(r["label"], r["preset"], r["learner_config"]["reg_user"]) for r in res] == [
        ("bias", "default", 1.0), ("bias@preset=paper", "paper", 5.0)]
    assert "Presets (metarec/presets.json): bias: default, bias@preset=paper: paper" in stem.with_suffix(
        ".md").read_text()


def test_shipped_presets_are_valid_and_the_demo_labels_the_paper_row():
    from metarec.commands import DEMO_LEARNERS
    from metarec.config import parse_entry

    store = load_store()
    for learner, presets in store.items():
        assert learner in LEARNERS
        for name, entry in presets.items():
            run, _ = pipeline.make_config(learner, "ml-100k", "user-cold", 0, "explicit", {}, preset=name)
            assert run.preset == name and (name == "paper" or entry.get("command")), (learner, name)
    assert "melu@preset=paper" in DEMO_LEARNERS
    for entry in DEMO_LEARNERS:
        name, _, own = parse_entry(entry)
        pipeline.make_config(name, "ml-100k", "user-cold", 0, "explicit", {k: v for k, v in own.items()
                                                                           if k != "preset"},
                             preset=own.get("preset", AUTO))


def test_a_fixed_override_is_stored_in_the_preset_as_the_number_it_spells(data_dir, tmp_path, capsys):
    out, store = tmp_path / "tune", tmp_path / "presets.json"
    argv = ["tune", "--learner", "bias", "--dataset", data_dir, "--trials", "2", "--out", str(out),
            "--presets", str(store), "--preset-name", "mine", "--split.by=random", "--tasks.min_inter=14",
            "--learner.reg_user=2.5"]
    assert main(argv) == 0, capsys.readouterr().err
    preset = json.loads(store.read_text())["bias"]["mine"]
    assert preset["overrides"]["learner.reg_user"] == 2.5 and "learner.reg_item" in preset["overrides"]
    assert preset["when"] == {"dataset": data_dir, "view": "explicit"}


def test_a_tune_over_several_seeds_scores_the_mean_of_each_seeds_meta_valid_metric(tiny_dataset, tmp_path):
    one = _tune(tiny_dataset, tmp_path / "one", trials=1)
    cfg = TuneConfig(learner="bias", trials=1, dataset="tiny", preset=None, overrides=dict(TINY), extra_seeds=(1,))
    two = tune(cfg, tmp_path / "two", command="test", progress=False, ds=tiny_dataset)
    t1, t2 = one["trials"][0], two["trials"][0]
    assert t1["params"] == t2["params"]  # the same first draw (the sampler is seeded by the first seed)
    per_seed = t2["valid_per_seed"]
    assert per_seed[0] == pytest.approx(t1["value"]) and per_seed[1] != pytest.approx(per_seed[0])
    assert t2["value"] == pytest.approx(sum(per_seed) / 2) and t2["valid"]["rmse"] == pytest.approx(t2["value"])
    assert two["seeds"] == [0, 1] and "seeds" not in one  # one seed keeps the identity of older studies
    assert "seeds 0, 1" in (tmp_path / "two" / "tune.md").read_text()


def test_tune_seeds_must_be_distinct(data_dir, tmp_path, capsys):
    assert main(["tune", "--learner", "bias", "--dataset", data_dir, "--trials", "1", "--seeds", "0", "0",
                 "--out", str(tmp_path / "x")]) == 2
    assert "distinct" in capsys.readouterr().err
