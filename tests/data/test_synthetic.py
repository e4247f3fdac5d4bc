"""The synthetic log of the scale benchmark: seeded, the asked size, no duplicate pair, the shape of a real log;
and the benchmark itself at its CI size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from metarec.data.loaders import build_dataset
from metarec.data.synthetic import SyntheticConfig, synthetic_log


def test_synthetic_log_is_seeded_sized_and_shaped_like_a_real_log():
    cfg = SyntheticConfig(n_inter=50_000, seed=3)
    a, b = synthetic_log(cfg), synthetic_log(cfg)
    assert a.equals(b)
    assert not a.equals(synthetic_log(SyntheticConfig(n_inter=50_000, seed=4)))
    assert len(a) == 50_000 and not a.duplicated(["user", "item"]).any()
    assert a["user"].nunique() == 5_000 and a["item"].nunique() <= 250
    assert set(np.unique(a["rating"])) <= {1, 2, 3, 4, 5}
    per_item = a["item"].value_counts().to_numpy()
    per_user = a["user"].value_counts().to_numpy()
    assert per_item[: len(per_item) // 10].sum() > 0.3 * len(a)  # popular items dominate
    assert np.median(per_user) <= 6 and per_user.max() >= 50  # most users are light, a few heavy
    ds = build_dataset("syn", a)  # string ids and integer timestamps: a log the readers take as it is
    assert ds.n_inter == len(a) and ds.n_users == 5_000


def test_scale_bench_runs_at_its_ci_size(tmp_path):
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_bench.py"
    p = subprocess.run([sys.executable, str(bench), "--sizes", "200k", "--stages", "prepare-csv", "prepare-parquet",
                        "split", "tasks", "--work", str(tmp_path / "w"), "--out-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rec = json.loads((tmp_path / "out" / "scale.json").read_text())
    for st in ("prepare-csv", "prepare-parquet", "split", "tasks"):
        m = rec["measured"][f"200k/{st}"]
        assert "error" not in m and m["seconds"] > 0 and m["peak_gib"] > 0
    assert rec["measured"]["200k/prepare-csv"]["interactions"] == 200_000
    assert rec["measured"]["200k/tasks"]["tasks"]["meta-train"] > 0
    md = (tmp_path / "out" / "scale.md").read_text()
    assert "| prepare-csv |" in md and "Command:" in md
