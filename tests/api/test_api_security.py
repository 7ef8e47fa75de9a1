"""Tenancy, authentication, input validation and limits: what a client must never get past."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from tests.api.conftest import (
    BURST,
    CORS_ORIGIN,
    MAX_RENDERS,
    MAX_UPLOAD,
    ApiSystem,
    ServerThread,
    TenantHandle,
    add_key,
)
from tests.api.utils import MiB, SseReader, assert_problem, mp3_like, patch_status
from tests.harness import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.s3]

SONG = {"url": "https://example.com/song.mp3"}


def new_video(t: TenantHandle, **body: Any) -> dict[str, Any]:
    resp = t.client.post("/v1/videos", json={"audio": SONG, **body})
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    result: dict[str, Any] = resp.json()
    return result


def test_a_tenant_cannot_reach_another_tenants_video(new_tenant: Callable[..., TenantHandle]) -> None:
    alice, bob = new_tenant("alice"), new_tenant("bob")
    video = new_video(alice)
    path = video["links"]["self"]
    for method, url in (("GET", path), ("GET", path + "/download"), ("GET", path + "/events"), ("DELETE", path)):
        assert_problem(bob.client.request(method, url), HTTPStatus.NOT_FOUND, "not-found")
    assert bob.client.get("/v1/videos").json()["items"] == []
    # Alice's video is untouched, and her upload keys are not usable by Bob either.
    assert alice.client.get(path).json()["phase"] == "Pending"
    upload = alice.client.post("/v1/uploads/file", params={"filename": "a.mp3"}, content=mp3_like(1000)).json()
    resp = bob.client.post("/v1/videos", json={"audio": {"key": upload["key"]}})
    problem = assert_problem(resp, HTTPStatus.UNPROCESSABLE_ENTITY)
    assert problem["errors"][0]["field"] == "audio.key"


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer nope-not-a-key-000000000", "Basic dXNlcjpwYXNz"])
def test_bad_or_missing_keys_get_401(anon: httpx.Client, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    for method, url in (("GET", "/v1/videos"), ("POST", "/v1/videos"), ("GET", "/v1/videos/mv-abc"),
                        ("POST", "/v1/uploads/file?filename=a.mp3"), ("GET", "/v1/videos/mv-abc/events")):
        resp = anon.request(method, url, headers=headers, json={"audio": SONG} if method == "POST" else None)
        assert_problem(resp, HTTPStatus.UNAUTHORIZED, "unauthorized")
        assert resp.headers["www-authenticate"].startswith('Bearer realm="vibecraft"')


def test_raw_keys_work_placeholders_do_not(new_tenant: Callable[..., TenantHandle], cluster: Any,
                                           api_system: ApiSystem, anon: httpx.Client) -> None:
    raw = new_tenant("raw", hashed=False)
    assert raw.client.get("/v1/videos").status_code == HTTPStatus.OK
    add_key(cluster, api_system, "lazy", "changeme")
    assert_problem(anon.get("/v1/videos", headers={"Authorization": "Bearer changeme"}), HTTPStatus.UNAUTHORIZED)
    # A revoked key stops working once the Secret no longer lists it.
    add_key(cluster, api_system, raw.name, f"sha256:{hashlib.sha256(b'another-key-entirely').hexdigest()}")
    wait_for(lambda: raw.client.get("/v1/videos").status_code != HTTPStatus.OK, timeout=10, interval=0.5,
             what="the revoked key to be refused")


def test_bad_input_is_422_with_field_errors(new_tenant: Callable[..., TenantHandle]) -> None:
    t = new_tenant()
    resp = t.client.post("/v1/videos", json={
        "audio": SONG, "style": {"backend": "replicate"},
        "video": {"width": 1921, "height": 1080, "fps": 120, "cutEvery": "sometimes"}, "colour": "red"})
    problem = assert_problem(resp, HTTPStatus.UNPROCESSABLE_ENTITY, "invalid-input")
    fields = {e["field"]: e for e in problem["errors"]}
    assert set(fields) == {"style", "video.width", "video.fps", "video.cutEvery", "colour"}
    assert fields["style"]["detail"] == "style.prompt is required when style.backend is replicate"
    assert fields["video.width"]["pointer"] == "#/video/width" and "multiple of 2" in fields["video.width"]["detail"]
    assert all(e["location"] == "body" for e in problem["errors"])
    assert problem["detail"].startswith("style: style.prompt is required")

    for body, field in (({"audio": {"key": "a", "url": "https://x.example/a.mp3"}}, "audio"),
                        ({"audio": {"url": "ftp://x.example/a.mp3"}}, "audio.url"),
                        ({"audio": SONG, "video": {"aspectRatio": "16:9"}}, "video"),
                        ({"audio": SONG, "deadlineSeconds": 10}, "deadlineSeconds"),
                        ({"audio": {**SONG, "bpm": 29}}, "audio.bpm"),
                        ({"audio": {**SONG, "bpm": 120, "beatOffsetSeconds": -1}}, "audio.beatOffsetSeconds"),
                        ({"audio": {**SONG, "beatOffsetSeconds": 0.5}}, "audio")):
        problem = assert_problem(t.client.post("/v1/videos", json=body), HTTPStatus.UNPROCESSABLE_ENTITY)
        assert [e["field"] for e in problem["errors"]] == [field], problem
    problem = assert_problem(t.client.post("/v1/videos", json={"audio": {"url": "ftp://x.example/a.mp3"}}),
                             HTTPStatus.UNPROCESSABLE_ENTITY, "invalid-input")
    assert problem["detail"] == "audio.url: audio.url must be an http:// or https:// URL"
    # Unparsable JSON is not a field error: 400, as the docs say.
    problem = assert_problem(t.client.post("/v1/videos", content=b"{not json", headers={"Content-Type": "application/json"}),
                             HTTPStatus.BAD_REQUEST, "bad-request")
    assert problem["detail"].startswith("The request body is not valid JSON") and "errors" not in problem
    problem = assert_problem(t.client.get("/v1/videos", params={"limit": 0, "phase": "Dancing"}),
                             HTTPStatus.UNPROCESSABLE_ENTITY)
    assert {(e["location"], e["field"]) for e in problem["errors"]} == {("query", "limit"), ("query", "phase")}
    assert_problem(t.client.get("/v1/videos/NOT_AN_ID"), HTTPStatus.UNPROCESSABLE_ENTITY)
    assert_problem(t.client.get("/v1/videos/mv-doesnotexist"), HTTPStatus.NOT_FOUND)


def test_upload_too_large_is_413(new_tenant: Callable[..., TenantHandle], api_server: ServerThread,
                                 api_system: ApiSystem) -> None:
    t = new_tenant()
    resp = t.client.post("/v1/uploads", json={"filename": "a.mp3", "contentType": "audio/mpeg",
                                              "sizeBytes": MAX_UPLOAD + 1})
    assert_problem(resp, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large")

    # A declared Content-Length over the limit is refused before the body is read (raw socket: the
    # client must not have to send 1 GB to learn that).
    with socket.create_connection(("127.0.0.1", api_server.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/uploads/file?filename=a.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t.key}\r\n"
                     f"Content-Type: audio/mpeg\r\nContent-Length: {1024 * MiB}\r\n\r\nID3".encode())
        head = sock.recv(65536).decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "application/problem+json" in head

    # Without Content-Length (chunked), the stream is cut at the limit and the multipart upload aborted.
    body = mp3_like(MAX_UPLOAD + 64 * 1024)
    resp = t.client.post("/v1/uploads/file", params={"filename": "big.mp3"},
                         content=(body[i:i + 256 * 1024] for i in range(0, len(body), 256 * 1024)))
    assert_problem(resp, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large")
    s3 = api_system.s3.client()
    prefix = f"uploads/{t.name}/"
    assert "Contents" not in s3.list_objects_v2(Bucket=api_system.s3.bucket, Prefix=prefix)
    assert not s3.list_multipart_uploads(Bucket=api_system.s3.bucket, Prefix=prefix).get("Uploads")


def test_not_audio_is_415(new_tenant: Callable[..., TenantHandle], api_system: ApiSystem) -> None:
    t = new_tenant()
    for content, ctype in ((b"%PDF-1.7 this is a document", "audio/mpeg"), (b"<html></html>", "application/octet-stream"),
                           (b"", "audio/mpeg"), (mp3_like(1000), "image/png")):
        resp = t.client.post("/v1/uploads/file", params={"filename": "x.mp3"}, content=content,
                             headers={"Content-Type": ctype})
        assert_problem(resp, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "not-audio")
    assert "Contents" not in api_system.s3.client().list_objects_v2(Bucket=api_system.s3.bucket,
                                                                    Prefix=f"uploads/{t.name}/")
    # A presigned upload of something else is caught when a video is made from it.
    ticket = t.client.post("/v1/uploads", json={"filename": "x.mp3", "contentType": "audio/mpeg", "sizeBytes": 9}).json()
    assert httpx.put(ticket["url"], content=b"not audio", headers=ticket["headers"]).status_code == HTTPStatus.OK
    assert_problem(t.client.post("/v1/videos", json={"audio": {"key": ticket["key"]}}), HTTPStatus.UNSUPPORTED_MEDIA_TYPE)


def test_rate_limit_and_concurrent_renders_are_429(new_tenant: Callable[..., TenantHandle], admin: Any) -> None:
    t = new_tenant()
    ids = [new_video(t)["id"] for _ in range(MAX_RENDERS)]
    busy = assert_problem(t.client.post("/v1/videos", json={"audio": SONG}), HTTPStatus.TOO_MANY_REQUESTS,
                          "too-many-renders")
    assert f"limit is {MAX_RENDERS}" in busy["detail"]
    patch_status(admin, t.namespace, ids[0], {"phase": "Succeeded"})
    assert BURST == MAX_RENDERS + 1  # the next one uses the last token of the burst
    new_video(t)
    patch_status(admin, t.namespace, ids[1], {"phase": "Failed"})
    resp = t.client.post("/v1/videos", json={"audio": SONG})
    problem = assert_problem(resp, HTTPStatus.TOO_MANY_REQUESTS, "rate-limited")
    assert 1 <= int(resp.headers["retry-after"]) <= 60, resp.headers["retry-after"]
    assert "try again in" in problem["detail"]
    # Another key has its own bucket.
    other = new_tenant()
    assert other.client.post("/v1/videos", json={"audio": SONG}).status_code == HTTPStatus.CREATED


@pytest.mark.parametrize("binding", ["cluster-wide", "per-namespace"])
def test_tenant_without_namespace_gets_the_same_503_everywhere_at_once(
        binding: str, new_tenant: Callable[..., TenantHandle], request: pytest.FixtureRequest) -> None:
    """Every endpoint that needs the tenant's namespace says so, in the same words.

    cluster-wide: the API may use any namespace (api/rbac.yaml), the tenant's does not exist.
    per-namespace: the API is bound per tenant namespace (the Helm chart), so it gets 403s instead.
    """
    t = new_tenant(provision=False)
    server: ServerThread = request.getfixturevalue("api_server" if binding == "cluster-wide" else "scoped_api_server")
    video = "/v1/videos/mv-0000000000000000000000"
    bodies = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {t.key}"}, timeout=30) as client:
        for method, url in (("GET", "/v1/videos"), ("GET", "/v1/videos?phase=Running"), ("POST", "/v1/videos"),
                            ("GET", video), ("DELETE", video), ("GET", video + "/download"), ("GET", video + "/events")):
            # (The events stream used to wait out its watch's 10 s sync and blame the Kubernetes API: a
            # different problem type, so the body check below catches it without timing anything.)
            resp = client.request(method, url, json={"audio": SONG} if method == "POST" else None)
            problem = assert_problem(resp, HTTPStatus.SERVICE_UNAVAILABLE, "tenant-not-provisioned")
            assert resp.headers["retry-after"]
            bodies.append((method, url, {k: v for k, v in problem.items() if k != "instance"}))
    first = bodies[0][2]
    assert "administrator" in first["detail"] and first["title"] == "Account not set up"
    assert [b for b in bodies if b[2] != first] == [], "every endpoint gives the same problem"


def test_cors(anon: httpx.Client) -> None:
    pre = anon.options("/v1/videos", headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "authorization,idempotency-key"})
    assert pre.status_code == HTTPStatus.OK
    assert pre.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "idempotency-key" in pre.headers["access-control-allow-headers"].lower()
    evil = anon.options("/v1/videos", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in evil.headers
    resp = anon.get("/healthz", headers={"Origin": CORS_ORIGIN})
    assert resp.headers["access-control-allow-origin"] == CORS_ORIGIN


def test_unknown_routes_and_methods_are_problems(anon: httpx.Client) -> None:
    assert_problem(anon.get("/v1/nothing"), HTTPStatus.NOT_FOUND)
    assert_problem(anon.put("/v1/videos"), HTTPStatus.METHOD_NOT_ALLOWED)


def test_events_of_a_missing_video_are_404_not_a_stream(new_tenant: Callable[..., TenantHandle]) -> None:
    t = new_tenant()
    reader = SseReader(t.client, "/v1/videos/mv-missing/events").start()
    reader.join()
    assert reader.status == HTTPStatus.NOT_FOUND
