"""Issue 18 point 3: every setting's domain is checked when the config is built, before any data is loaded."""

import pytest

from metarec.cli import main
from metarec.config import apply_overrides
from metarec.engine.train import TrainConfig
from metarec.errors import MetarecError
from metarec.learners.feature_mlp import FeatureMLPConfig


@pytest.mark.parametrize("key,value,needle", [
    ("epochs", "0", "train.epochs must be a positive whole number, got 0"),
    ("epochs", "-3", "train.epochs must be a positive whole number, got -3"),
    ("epochs", "2.5", "takes a whole number, got 2.5"),
    ("patience", "0", "train.patience must be a positive whole number"),
    ("meta_batch", "0", "train.meta_batch must be a positive whole number"),
    ("lr", "nan", "train.lr takes a finite number, got nan"),
    ("lr", "-1e-3", "train.lr must be a finite number > 0"),
    ("lr", "inf", "train.lr takes a finite number"),
    ("weight_decay", "-0.1", "train.weight_decay must be a finite number >= 0"),
    ("clip", "-5", "train.clip must be a finite number >= 0"),
    ("select", "rsme", "unknown train.select 'rsme'"),
    ("select", "ndcg@0", "unknown train.select"),
])
def test_train_config_domain(key, value, needle):
    with pytest.raises(MetarecError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        apply_overrides(TrainConfig(), {key: value}, "train.")


def test_good_values_still_parse():
    cfg = apply_overrides(TrainConfig(), {"epochs": "1e3", "clip": "0", "select": "recall@20", "lr": "1e-3"})
    assert cfg.epochs == 1000 and isinstance(cfg.epochs, int) and cfg.clip == 0.0 and cfg.select == "recall@20"


@pytest.mark.parametrize("value,expected", [("64,64", (64, 64)), ("[32, 16]", (32, 16)), ("128", (128,)),
                                            (" 8 , 4 ", (8, 4))])
def test_list_fields_parse_from_the_command_line(value, expected):
    assert apply_overrides(FeatureMLPConfig(), {"hidden": value}, "learner.").hidden == expected


@pytest.mark.parametrize("over,needle", [
    ({"hidden": "64,0"}, "learner.hidden must be a list of positive whole numbers"),
    ({"hidden": "64,x"}, "takes a number, got 'x'"),
    ({"hidden": "6.5"}, "learner.hidden takes a list of whole numbers"),
    ({"emb_dim": "0"}, "learner.emb_dim must be a positive whole number"),
    ({"loss": "hinge"}, "unknown learner.loss 'hinge'"),
    ({"train_mode": "magic"}, "unknown learner.train_mode"),
    ({"inner": {"steps": "-1"}}, "inner.steps must be a whole number >= 0, got -1"),
    ({"inner": {"lr": "nan"}}, "inner.lr takes a finite number"),
    ({"inner": {"learn_lr": "sometimes"}}, "unknown inner.learn_lr 'sometimes'"),
])
def test_learner_config_domain(over, needle):
    with pytest.raises(MetarecError, match=needle.replace(".", r"\.")):
        apply_overrides(FeatureMLPConfig(), over, "learner.")


@pytest.mark.parametrize("argv,needle", [
    (["train", "--train.epochs=0"], "train.epochs must be a positive whole number"),
    (["train", "--learner.inner.steps=-1"], "inner.steps must be a whole number >= 0"),
    (["train", "--train.select=nope"], "unknown train.select"),
    (["train", "--learner.hidden=64,64", "--train.epochs=0"], "train.epochs"),
    (["train", "--negatives=0", "--view", "implicit"], "negatives must be a positive whole number"),
    (["compare", "--learners", "bias", "melu@train.lr=-1"], "train.lr must be a finite number > 0"),
    (["compare", "--learners", "bias", "melu@learner.inner.learn_lr=x"], "unknown inner.learn_lr"),
    (["curve", "--learners", "bias", "--ks", "0", "3"], "--ks takes support sizes >= 1"),
])
def test_bad_settings_stop_before_any_data_is_read(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "no-such-dataset")  # a data error would come first if data were read first
    assert main([*argv, "--dataset", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err
    assert not any(tmp_path.iterdir())  # nothing written


def test_split_k_shot_zero_is_refused(tmp_path, capsys):
    assert main(["split", str(tmp_path), "--k-shot", "0"]) == 2
    assert "k_shot >= 1" in capsys.readouterr().err
