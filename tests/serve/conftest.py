"""Models trained once on the tiny synthetic log for the serving tests (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarec.cli import main
from tests.conftest import synthetic_frames, write_atomic

FAST = ["--split.by=random", "--tasks.min_inter=14", "--train.epochs=2", "--quiet"]


@pytest.fixture(scope="session")
def served_runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_HOME", str(root / "home"))
        inter, users, items = synthetic_frames()
        data = str(write_atomic(root / "tiny", "tiny", inter, users, items).parent)
        runs = {}
        implicit = ["--view", "implicit", "--threshold=3", "--tasks.min_inter=8"]
        for name, extra in (("melu", []), ("bias", []), ("melu-implicit", implicit)):
            out = root / name
            assert main(["train", "--learner", name.split("-")[0], "--dataset", data, "--out", str(out), *FAST,
                         *extra]) == 0
            runs[name] = out
        assert main(["seqrec", "--dataset", data, "--methods", "sasrec", "--seeds", "0", "--quick", "--quiet",
                     "--runs-dir", str(root / "seq"), "--n-support", "5", "--n-query", "3", "--max-len", "12"]) == 0
        runs["sasrec"] = next((root / "seq").rglob("model.pt")).parent
        runs["data"] = Path(data)
        yield runs
