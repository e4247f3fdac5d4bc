"""`metarec serve` from the command line: a real server on loopback (bounded), and its one-line errors."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from metarec.cli import main
from metarec.serve.browser import free_port, serve_in_background


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_on_loopback_and_stops(served_runs, tmp_path, workers):
    port = free_port()
    env = {"METAREC_HOME": str(tmp_path / "home"), "METAREC_API_KEY": "k1"}
    proc = serve_in_background([str(served_runs["melu"]), str(served_runs["sasrec"])], port,
                               ("--dataset", str(served_runs["data"]), "--workers", workers), env)
    try:
        body = json.dumps({"interactions": [{"item": "i1", "rating": 4}], "k": 3}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/recommend", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "X-API-Key": "k1"})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["model"] == "melu" and len(answer["items"]) == 3
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
        with pytest.raises(urllib.error.HTTPError) as e:  # the key is required
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "serving melu (rating, explicit" in proc.stdout.read()


def test_serve_stops_with_one_line(served_runs, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with socket.socket() as s:  # a port in use
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", str(served_runs["bias"]), "--port", str(port)]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert main(["serve", str(served_runs["bias"]), "--workers", "0"]) == 2
    assert main(["serve", str(served_runs["bias"]), str(served_runs["bias"])]) == 2
    assert "share a name" in capsys.readouterr().err
