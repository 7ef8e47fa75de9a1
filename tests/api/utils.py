"""Factories and helpers for the API tests: audio bytes, SSE parsing, status patches, problem checks."""

from __future__ import annotations

import io
import json
import math
import struct
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
from vibecraft_common.resource import GROUP, PLURAL, VERSION

from tests.harness import wait_for

PROBLEM_JSON = "application/problem+json"
MiB = 1024 * 1024


def wav_bytes(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """A real (tiny) WAV file: a 440 Hz tone."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate)))
        w.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return buf.getvalue()


def mp3_like(size: int) -> bytes:
    """`size` bytes starting with an ID3 tag header (enough for the magic-bytes check)."""
    head = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    return (head + bytes(range(256)) * (size // 256 + 1))[:size]


def audio_stream(total: int, chunk: int = MiB) -> Iterator[bytes]:
    """`total` bytes generated on the fly: an MP3 frame-sync start, then filler (never all in memory)."""
    block = b"\xff\xfb\x90\x64" + bytes(chunk - 4)
    filler = bytes(chunk)
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield (block if sent == 0 else filler)[:n]
        sent += n


def assert_problem(resp: httpx.Response, status: HTTPStatus, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and type slug); its body."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:500]}"
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers["content-type"]
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    assert "Traceback" not in resp.text
    if slug is not None:
        assert body["type"].endswith("/" + slug), body["type"]
    return body


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Events from text/event-stream lines (comments skipped)."""
    event: str = "message"
    ident: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event, "\n".join(data), ident)
            event, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                ident = value


@dataclass
class SseReader:
    """Reads an event stream in a thread until the server closes it."""

    client: httpx.Client
    url: str
    status: int | None = None
    events: list[SseEvent] = field(default_factory=list)
    error: BaseException | None = None
    opened: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> SseReader:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.opened.wait(15), "event stream did not open"
        return self

    def _run(self) -> None:
        try:
            with self.client.stream("GET", self.url, timeout=httpx.Timeout(10, read=60)) as resp:
                self.status = resp.status_code
                self.opened.set()
                for ev in parse_sse(resp.iter_lines()):
                    self.events.append(ev)
        except BaseException as exc:
            self.error = exc
        finally:
            self.opened.set()

    def wait_events(self, predicate: Any, timeout: float = 15) -> None:
        """Wait until `predicate(events so far)` holds."""
        wait_for(lambda: predicate(self.events), timeout=timeout, interval=0.02,
                 what=lambda: f"the events to match; events so far: {[e.event for e in self.events]}")

    def join(self, timeout: float = 20) -> list[SseEvent]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not end the stream"
        assert self.error is None, repr(self.error)
        return self.events


def patch_status(api_client: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    """What the operator/renderer would write, through the status subresource (as an admin)."""
    from kubernetes import client

    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def vm(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in kB (VmHWM: peak resident set size)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")
