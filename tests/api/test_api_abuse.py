"""The API under abuse (issue 18), against the API process as the container runs it: bodies bounded while
they are read, before authentication."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from vibecraft_api.auth import Tenant
from vibecraft_api.uploads import own_key, safe_filename, upload_key
from vibecraft_common.spec import AUDIO_S3_PATTERN, OUTPUT_URL_PATTERN, S3_KEY_SEGMENT

from tests.api.conftest import ApiSystem, ServerThread, TenantHandle
from tests.api.utils import MiB, SseEvent, assert_problem, parse_sse, vm
from tests.conftest import Cluster
from tests.harness import wait_for

JSON_ENDPOINTS = ("/v1/videos", "/v1/uploads", "/v1/uploads/multipart/complete")
HUGE = 300 * 1000 * 1000  # bytes a client offers
CHUNK = b"x" * (64 * 1024)


def post_until_answered(url: str, path: str, *, declared: bool, total: int = HUGE, headers: str = "",
                        first: bytes = CHUNK) -> tuple[int, dict[str, object], int]:
    """POST `total` bytes (no key unless `headers` has one), with or without Content-Length (then chunked), on a
    raw socket: a sender thread writes until the server answers or stops reading. (status, body, bytes sent)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port), timeout=120)
    length = f"Content-Length: {total}" if declared else "Transfer-Encoding: chunked"
    headers = headers or "Content-Type: application/json\r\n"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: api\r\n{headers}{length}\r\n\r\n".encode())
    sent, stop = 0, threading.Event()

    def send() -> None:
        nonlocal sent
        try:
            while sent < total and not stop.is_set():
                data = (first if sent == 0 else CHUNK)[: total - sent]
                sock.sendall(data if declared else b"%x\r\n%s\r\n" % (len(data), data))
                sent += len(data)
            if not declared:
                sock.sendall(b"0\r\n\r\n")
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
    assert status < 300 or b"application/problem+json" in head.lower(), head
    return status, json.loads(body), sent


def _length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


@pytest.mark.cluster
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
    print(f"6 x 300 MB refused in {time.monotonic() - started:.1f} s; API peak RSS grew {peak_growth_kb} kB")
    assert peak_growth_kb < 10 * 1024


# Keys naming alice's uploads, or looking as if they did, that must not be taken for one (issue 18).
OWN = "uploads/alice/0123456789abcdef0123456789abcdef/song.mp3"
TRAVERSALS = [
    "uploads/alice/../bob/0123456789abcdef0123456789abcdef/song.mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/../../bob/x/song.mp3",
    "uploads/alice/%2e%2e/bob/0123456789abcdef0123456789abcdef/song.mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/%2e%2e%2fsong.mp3",
    "uploads/alice//0123456789abcdef0123456789abcdef/song.mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/..\\..\\bob.mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/song.mp3\n",
    "uploads/alice/0123456789abcdef0123456789abcdef/so\x00ng.mp3",
    "uploads/alice/./0123456789abcdef0123456789abcdef/song.mp3",
    "/uploads/alice/0123456789abcdef0123456789abcdef/song.mp3",
    "uploads/alicebob/0123456789abcdef0123456789abcdef/song.mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/song..mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/so ng.mp3",
    "uploads/alice/0123456789abcdef0123456789abcdef/.hidden",
]


def re2_matches(pattern: str, text: str) -> bool:
    """`pattern` as RE2 (the API server's CEL, pydantic) reads it: `$` is the end of the text (in Python's re
    it also matches before a final newline)."""
    return re.search(pattern.removesuffix("$") + r"\Z", text) is not None


def test_one_key_grammar_for_what_a_tenant_names() -> None:
    alice = Tenant(name="alice", namespace="vc-alice", key_id="k")
    assert own_key(alice, OWN) and own_key(alice, upload_key("alice", "My Song (final).mp3"))
    assert [k for k in TRAVERSALS if own_key(alice, k)] == []
    # The same grammar in the CRD's s3:// URLs (its CEL rules are made from these patterns).
    assert re2_matches(AUDIO_S3_PATTERN, f"s3://vibecraft/{OWN}")
    assert re2_matches(OUTPUT_URL_PATTERN, "s3://vibecraft/videos/a/")
    assert [k for k in TRAVERSALS if re2_matches(AUDIO_S3_PATTERN, f"s3://vibecraft/{k}")] == [
        "uploads/alicebob/0123456789abcdef0123456789abcdef/song.mp3"]  # well-formed: whose it is, is the VAP's call
    for bad in ("s3://vibecraft/videos/../bob/", "s3://vibecraft/videos//x/", "s3://vibecraft/videos/%2e%2e/"):
        assert not re2_matches(OUTPUT_URL_PATTERN, bad), bad
    # Whatever name a client sends, the key the API makes from it is in the grammar.
    for name in ("..", "...mp3", "a..b.mp3", "._.x", "x.", "C:\\Users\\me\\..\\song.mp3", "\x00\n.mp3",
                 "%2e%2e", "ü.mp3", "a" * 300 + "..mp3", "_" * 10, "-.-.mp3"):
        assert re.fullmatch(S3_KEY_SEGMENT, safe_filename(name)), (name, safe_filename(name))


@pytest.mark.cluster
def test_traversal_keys_are_422(new_tenant: Callable[..., TenantHandle]) -> None:
    t = new_tenant()
    for key in TRAVERSALS:
        key = key.replace("alice", t.name)
        problem = assert_problem(t.client.post("/v1/videos", json={"audio": {"key": key}}),
                                 HTTPStatus.UNPROCESSABLE_ENTITY, "invalid-input")
        assert problem["errors"][0]["field"] == "audio.key", (key, problem)


@pytest.mark.cluster
def test_streamed_uploads_are_capped_per_tenant_and_memory_stays_bounded(
        api_process: tuple[subprocess.Popen[bytes], str], new_tenant: Callable[..., TenantHandle]) -> None:
    """20 parallel 64 MiB streamed uploads from one key: 2 (the per-tenant cap) stream, 18 get 429 with
    Retry-After at once; the API process stays under 200 MB RSS (each stream holds about two 8 MiB parts)."""
    proc, url = api_process
    t = new_tenant()
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
    headers = f"Authorization: Bearer {t.key}\r\nContent-Type: audio/mpeg\r\n"
    results: list[tuple[int, dict[str, object], int]] = []

    def upload() -> None:
        results.append(post_until_answered(url, "/v1/uploads/file?filename=song.mp3", declared=True,
                                           total=64 * MiB, headers=headers, first=b"\xff\xfb\x90\x64" + CHUNK[4:]))

    threads = [threading.Thread(target=upload) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    statuses = sorted(status for status, _, _ in results)
    refused = [body for status, body, _ in results if status == 429]
    print(f"20 streamed uploads: {statuses.count(201)} created, {len(refused)} refused; "
          f"API peak RSS {vm(proc.pid, 'VmHWM') // 1024} MB")
    assert len(results) == 20 and statuses.count(201) == 2 and len(refused) == 18, statuses
    assert all(b["type"] == "https://vibecraft.io/problems/too-many-uploads" for b in refused), refused[0]
    assert vm(proc.pid, "VmHWM") < 200 * 1024


@pytest.mark.cluster
def test_a_presigned_put_takes_exactly_the_declared_size_and_tickets_are_rate_limited(
        new_tenant: Callable[..., TenantHandle]) -> None:
    t = new_tenant()
    body = b"\xff\xfb\x90\x64" + bytes(1000)
    ticket = t.client.post("/v1/uploads", json={"filename": "a.mp3", "contentType": "audio/mpeg",
                                                "sizeBytes": len(body)}).json()
    put = httpx.put(ticket["url"], content=body + b"!", headers=ticket["headers"])  # one byte more than declared
    assert put.status_code == HTTPStatus.FORBIDDEN, put.text  # refused by the storage server: signature
    assert httpx.put(ticket["url"], content=body[:-1], headers=ticket["headers"]).status_code == HTTPStatus.FORBIDDEN
    assert httpx.put(ticket["url"], content=body, headers=ticket["headers"]).status_code == HTTPStatus.OK
    made = t.client.post("/v1/videos", json={"audio": {"key": ticket["key"]}})
    assert made.status_code == HTTPStatus.CREATED, made.text
    # A ticket flood from one key: the burst (20) goes through, then 429 with Retry-After.
    answers = [t.client.post("/v1/uploads", json={"filename": "b.mp3", "contentType": "audio/mpeg", "sizeBytes": 9})
               for _ in range(100)]
    created = sum(a.status_code == HTTPStatus.CREATED for a in answers)
    limited = [a for a in answers if a.status_code == HTTPStatus.TOO_MANY_REQUESTS]
    assert created < 30 and created + len(limited) == 100 and int(limited[0].headers["Retry-After"]) >= 1
    assert "Too many upload tickets" in limited[0].json()["detail"]


@pytest.mark.cluster
def test_event_streams_are_capped_per_tenant_and_memory_stays_flat(
        api_process: tuple[subprocess.Popen[bytes], str], new_tenant: Callable[..., TenantHandle]) -> None:
    """1000 event streams at once from one tenant: 20 (the per-tenant cap) open, 980 get 429 at once; the
    API's peak memory barely moves; closed streams free their places."""
    proc, url = api_process
    t = new_tenant()
    headers = {"Authorization": f"Bearer {t.key}"}
    video = httpx.post(f"{url}/v1/videos", headers=headers, json={"audio": {"url": "https://example.com/a.mp3"}})
    assert video.status_code == HTTPStatus.CREATED, video.text
    path = f"/v1/videos/{video.json()['id']}/events"
    Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
    before = vm(proc.pid, "VmRSS")
    host, port = urlsplit(url).hostname, urlsplit(url).port
    opened: list[socket.socket] = []
    statuses: list[int] = []
    try:
        for _ in range(1000):
            sock = socket.create_connection((host, port), timeout=30)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {t.key}\r\n\r\n".encode())
            status = int(sock.recv(4096).split(b" ", 2)[1])
            statuses.append(status)
            if status == HTTPStatus.OK:
                opened.append(sock)  # held open: a stream following the video
            else:
                sock.close()
        growth = vm(proc.pid, "VmHWM") - before
        print(f"1000 streams: {statuses.count(200)} open, {statuses.count(429)} refused; peak RSS +{growth} kB")
        assert (statuses.count(200), statuses.count(429)) == (20, 980)
        assert growth < 10 * 1024
    finally:
        for sock in opened:
            sock.close()
    def status_now() -> int:
        with httpx.stream("GET", f"{url}{path}", headers=headers, timeout=5) as resp:
            return resp.status_code  # (the stream itself is not read)

    again = wait_for(lambda: (code := status_now()) != HTTPStatus.TOO_MANY_REQUESTS and code,
                     timeout=30, interval=0.5, what="closed streams to free their places")
    assert again == HTTPStatus.OK


@pytest.mark.cluster
def test_a_stream_ends_after_its_lifetime_and_a_reconnect_resumes_from_last_event_id(
        api_system: ApiSystem, new_tenant: Callable[..., TenantHandle]) -> None:
    t = new_tenant()
    video = t.client.post("/v1/videos", json={"audio": {"url": "https://example.com/a.mp3"}}).json()
    with ServerThread(api_system.settings(event_stream_max_seconds=1.5)) as server, \
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {t.key}"}) as client:
        def follow(**headers: str) -> tuple[list[SseEvent], float]:
            started = time.monotonic()
            with client.stream("GET", f"/v1/videos/{video['id']}/events", headers=headers,
                               timeout=httpx.Timeout(10, read=30)) as resp:
                assert resp.status_code == HTTPStatus.OK
                events = list(parse_sse(resp.iter_lines()))
            return events, time.monotonic() - started

        events, lasted = follow()
        assert [e.event for e in events] == ["video"] and 1.4 < lasted < 10  # closed at its lifetime, no `end`
        again, _ = follow(**{"Last-Event-ID": events[0].id or ""})
        assert again == []  # nothing changed since that event: not sent again


@pytest.mark.cluster
def test_a_tenant_namespace_quota_is_a_clear_429(cluster: Cluster, new_tenant: Callable[..., TenantHandle]) -> None:
    """The chart's api.tenantQuota (a ResourceQuota) bounds what a tenant keeps; the API says so plainly."""
    t = new_tenant()
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "vibecraft-tenant"},
             "spec": {"hard": {"count/musicvideos.vibecraft.io": "1"}}}
    cluster.kubectl("apply", "-n", t.namespace, "-f", "-", input=json.dumps(quota))
    wait_for(lambda: "count/musicvideos.vibecraft.io" in cluster.kubectl(
        "get", "resourcequota", "vibecraft-tenant", "-n", t.namespace, "-o", "jsonpath={.status.used}").stdout,
        timeout=60, what=lambda: "the quota controller to count the namespace: " + cluster.kubectl(
            "get", "resourcequota", "vibecraft-tenant", "-n", t.namespace, "-o", "json").stdout[-1500:])
    first = t.client.post("/v1/videos", json={"audio": {"url": "https://example.com/a.mp3"}})
    assert first.status_code == HTTPStatus.CREATED, first.text
    problem = assert_problem(t.client.post("/v1/videos", json={"audio": {"url": "https://example.com/b.mp3"}}),
                             HTTPStatus.TOO_MANY_REQUESTS, "quota-exceeded")
    assert "as many videos as its quota allows" in problem["detail"] and "limited: count/musicvideos" in problem["detail"]


@pytest.mark.s3
def test_the_sweeper_aborts_stale_multipart_uploads_and_expires_old_songs(api_system: ApiSystem) -> None:
    """What a bucket lifecycle rule does, for servers without one: a week later the song is gone and the
    multipart upload a ticket began and nobody finished is aborted; today both are left alone."""
    from datetime import UTC, datetime, timedelta

    from vibecraft_api.storage import Storage
    from vibecraft_api.sweeper import sweep

    settings = api_system.settings()
    storage, s3 = Storage(settings), api_system.s3.client()
    root = f"uploads/sweep{time.time_ns()}/"
    song, pending = f"{root}{'0' * 32}/song.mp3", f"{root}{'1' * 32}/big.wav"
    s3.put_object(Bucket=api_system.s3.bucket, Key=song, Body=b"\xff\xfb\x90\x64")
    upload_id = s3.create_multipart_upload(Bucket=api_system.s3.bucket, Key=pending)["UploadId"]
    s3.upload_part(Bucket=api_system.s3.bucket, Key=pending, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)

    def listed() -> tuple[list[str], list[str]]:
        objects = s3.list_objects_v2(Bucket=api_system.s3.bucket, Prefix=root).get("Contents") or []
        uploads = s3.list_multipart_uploads(Bucket=api_system.s3.bucket, Prefix=root).get("Uploads") or []
        return [o["Key"] for o in objects], [u["Key"] for u in uploads]

    today = asyncio.run(sweep(storage, settings, root=root))
    assert (today.aborted_uploads, today.deleted_songs) == (0, 0) and listed() == ([song], [pending])
    later = asyncio.run(sweep(storage, settings, datetime.now(UTC) + timedelta(days=8), root=root))
    assert (later.aborted_uploads, later.deleted_songs) == (1, 1)
    assert listed() == ([], [])
