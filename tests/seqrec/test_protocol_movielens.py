"""The sequential protocol on the real ml-100k (shared cache): about 10 % new users, no leakage."""

from __future__ import annotations

import numpy as np
import pytest

from metarec.data.registry import load_dataset
from metarec.seqrec.protocol import SeqProtocolConfig, make_seq_protocol

pytestmark = pytest.mark.integration


def test_ml100k_protocol(real_home):
    ds = load_dataset("ml-100k")
    data = make_seq_protocol(ds, SeqProtocolConfig())
    st = data.stats()
    assert 0.09 <= st["new_user_share"] <= 0.11
    assert st["test.tasks"] == st["new_users"] - st["new_users_too_short"] and st["test.tasks"] > 80
    train_users = {t.owner for t in data.train}
    assert not train_users & set(data.test_users.tolist()) and not train_users & set(data.valid_users.tolist())
    seen = np.unique(np.concatenate([t.extra["seq"] for t in data.train]))
    assert not data.new_items[seen].any() and data.old_items[seen].all()
    assert all(len(t.extra["seq"]) <= 50 for t in data.train)
