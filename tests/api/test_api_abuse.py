"""The API under abuse (issue 18), against the API process as the container runs it: bodies bounded while
they are read, before authentication."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.api.utils import MiB, vm

pytestmark = [pytest.mark.cluster]

JSON_ENDPOINTS = ("/v1/videos", "/v1/uploads", "/v1/uploads/multipart/complete")
HUGE = 300 * 1000 * 1000  # bytes a client offers
CHUNK = b"x" * (64 * 1024)


def post_until_answered(url: str, path: str, *, declared: bool) -> tuple[int, dict[str, object], int]:
    """POST HUGE bytes without a key, with or without Content-Length (then chunked), on a raw socket: a
    sender thread writes until the server answers or stops reading. (status, problem body, bytes sent)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port), timeout=30)
    length = f"Content-Length: {HUGE}" if declared else "Transfer-Encoding: chunked"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n{length}\r\n\r\n".encode())
    sent, stop = 0, threading.Event()

    def send() -> None:
        nonlocal sent
        frame = CHUNK if declared else b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
        try:
            while sent < HUGE and not stop.is_set():
                sock.sendall(frame)
                sent += len(CHUNK)
        except OSError:  # the server answered and closed: what we want
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    response = b""
    try:
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < _length(response):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    finally:
        stop.set()
        sock.close()
        sender.join(10)
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/problem+json" in head.lower(), head
    return status, json.loads(body), sent


def _length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def test_huge_bodies_are_refused_while_read_before_authentication(
        api_process: tuple[subprocess.Popen[bytes], str]) -> None:
    """300 MB without a key to each JSON endpoint, declared and chunked: 413 problem+json at once, the body
    never read past the 64 KiB limit, so the API's memory does not move (it used to read the body whole
    before the key check: 256Mi limit, OOM-killed)."""
    proc, url = api_process
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM from now on (start-up peaks do not count)
    before = vm(proc.pid, "VmRSS")
    started = time.monotonic()
    for path in JSON_ENDPOINTS:
        for declared in (True, False):
            status, problem, sent = post_until_answered(url, path, declared=declared)
            assert (status, problem["type"]) == (413, "https://vibecraft.io/problems/body-too-large"), problem
            assert problem["detail"] == "The request body is larger than the limit of 64 KiB."
            assert sent < 64 * MiB, f"{path}: the client could send {sent} bytes: the server kept reading"
    peak_growth_kb = vm(proc.pid, "VmHWM") - before
    print(f"6 × 300 MB refused in {time.monotonic() - started:.1f} s; API peak RSS grew {peak_growth_kb} kB")
    assert peak_growth_kb < 10 * 1024
