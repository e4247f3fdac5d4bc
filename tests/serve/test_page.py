"""The page at / in a real headless chromium (`make test-browser`): search, rate, watch the top 10 change."""

from __future__ import annotations

import pytest

from metarec.serve.browser import drive, free_port, serve_in_background

pytestmark = pytest.mark.browser


def test_rating_on_the_page_adapts_the_top_10(served_runs, tmp_path):
    pytest.importorskip("selenium")
    port = free_port()
    proc = serve_in_background([str(served_runs["melu"]), str(served_runs["bias"])], port,
                               env={"METAREC_HOME": str(tmp_path / "home")})
    try:
        steps = drive(f"http://127.0.0.1:{port}/", [("movie 1", 5), ("movie 2", 1), ("movie 3", 4)],
                      shot=tmp_path / "page.png")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert [s.rated.lower()[:7] for s in steps] == ["movie 1", "movie 2", "movie 3"]
    for n, s in enumerate(steps, start=1):
        assert s.status.startswith("melu, adapted on") and f"adapted on {n} rating(s)" in s.status
        assert len(s.top) == 10 and s.rated not in s.top  # what was rated is not recommended back
    assert len({tuple(s.top) for s in steps}) > 1  # the ratings moved the top 10
    assert (tmp_path / "page.png").stat().st_size > 10_000
