"""The API's readiness probe prints why the pod is not ready (the kubelet shows it in the pod's events)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from vibecraft_api.models.health import Readiness
from vibecraft_api.probe import main


class _Readyz(BaseHTTPRequestHandler):
    answer: tuple[int, bytes] = (200, b"{}")

    def do_GET(self) -> None:
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    srv = HTTPServer(("127.0.0.1", 0), _Readyz)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _url(srv: HTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/readyz"


def test_ready_exits_0(server: HTTPServer, capsys: pytest.CaptureFixture[str]) -> None:
    _Readyz.answer = (200, Readiness(status="ready", checks={"s3": "ok"}).model_dump_json().encode())
    assert main([_url(server)]) == 0
    assert capsys.readouterr().out.strip() == "ready"


def test_unready_names_the_failing_checks(server: HTTPServer) -> None:
    body = Readiness(status="unready", checks={"kubernetes": "ok", "s3": "timeout", "apiKeys": "not loaded"})
    _Readyz.answer = (503, body.model_dump_json().encode())
    # As the kubelet runs it: a fresh interpreter, the module's stdout, its exit code.
    res = subprocess.run([sys.executable, "-m", "vibecraft_api.probe", _url(server)], capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stdout.strip() == "not ready: s3: timeout; apiKeys: not loaded"


def test_an_unexpected_answer_is_quoted(server: HTTPServer, capsys: pytest.CaptureFixture[str]) -> None:
    _Readyz.answer = (500, json.dumps({"detail": "boom"}).encode())
    assert main([_url(server)]) == 1
    assert capsys.readouterr().out.strip() == 'not ready: HTTP 500: {"detail": "boom"}'


def test_a_closed_port_says_the_api_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main([f"http://127.0.0.1:{port}/readyz"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"not ready: http://127.0.0.1:{port}/readyz does not answer") and "refused" in out, out
