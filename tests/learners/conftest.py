"""Fixtures shared by the learner tests: tiny user-cold task sets from the synthetic log."""

import pytest

from metarec.pipeline import RunConfig, prepare
from metarec.splits import SplitConfig
from metarec.tasks import TaskConfig
from tests.learners.common import user_cold_prep


@pytest.fixture
def prep(tiny_dataset):
    """Explicit ratings, user-cold, random split, users with at least 14 interactions."""
    run = RunConfig(split=SplitConfig(protocol="user-cold", by="random"), tasks=TaskConfig(min_inter=14))
    return prepare(run, tiny_dataset)


@pytest.fixture
def implicit(tiny_dataset):
    """Implicit feedback (rating >= 3), user-cold, 4 positives per query."""
    return user_cold_prep(tiny_dataset, "implicit")
