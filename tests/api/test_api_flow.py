"""The frontend's path: upload a song, start a video, follow it live to Succeeded, download it; and list/cancel."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from tests.api.conftest import PART, ApiSystem, TenantHandle
from tests.api.utils import MiB, SseReader, assert_problem, mp3_like, patch_status, wav_bytes

pytestmark = [pytest.mark.cluster, pytest.mark.s3]

VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
THUMB_BYTES = b"\xff\xd8\xff\xe0" + b"jpeg" * 100


def create_video(t: TenantHandle, audio: dict[str, Any], **extra: Any) -> dict[str, Any]:
    resp = t.client.post("/v1/videos", json={"audio": audio, "video": {"height": 360, "aspectRatio": "16:9"}, **extra})
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    assert resp.headers["location"] == f"/v1/videos/{resp.json()['id']}"
    body: dict[str, Any] = resp.json()
    return body


def render_outputs(api_system: ApiSystem, admin: Any, t: TenantHandle, video_id: str) -> None:
    """Play operator and renderer: progress, outputs in S3, Succeeded."""
    obj = t.ns_get(api_system.cluster, video_id)
    prefix = obj["spec"]["output"]["url"]
    assert prefix == f"s3://{api_system.s3.bucket}/videos/{t.name}/{video_id}/"
    key = prefix.removeprefix(f"s3://{api_system.s3.bucket}/")
    s3 = api_system.s3.client()
    s3.put_object(Bucket=api_system.s3.bucket, Key=key + "video.mp4", Body=VIDEO_BYTES)
    s3.put_object(Bucket=api_system.s3.bucket, Key=key + "thumbnail.jpg", Body=THUMB_BYTES)
    patch_status(admin, t.namespace, video_id, {
        "phase": "Succeeded", "progress": {"stage": "uploading", "percent": 100},
        "output": {"videoUrl": prefix + "video.mp4", "thumbnailUrl": prefix + "thumbnail.jpg",
                   "analysisUrl": prefix + "analysis.json", "sizeBytes": len(VIDEO_BYTES), "durationSeconds": 1.0},
        "analysis": {"tempo": 97.0, "tempoSource": "given", "confidence": 1.0, "beats": 2}})


def test_streamed_upload_video_events_download(new_tenant: Callable[..., TenantHandle], api_system: ApiSystem,
                                               admin: Any) -> None:
    t = new_tenant()
    song = wav_bytes(1.0)
    resp = t.client.post("/v1/uploads/file", params={"filename": "My Song (live).wav"}, content=song,
                         headers={"Content-Type": "audio/wav"})
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    upload = resp.json()
    assert upload["key"].startswith(f"uploads/{t.name}/") and upload["key"].endswith("/My_Song_live_.wav")
    assert upload == {**upload, "sizeBytes": len(song), "format": "wav", "contentType": "audio/wav"}
    stored = api_system.s3.client().get_object(Bucket=api_system.s3.bucket, Key=upload["key"])["Body"].read()
    assert stored == song

    video = create_video(t, {"key": upload["key"], "bpm": 97}, style={"backend": "procedural", "seed": 3})
    assert video["phase"] == "Pending"
    # An upload is shown by its key, never by its location in S3; the API server accepted audio.bpm.
    assert video["audio"] == {"key": upload["key"], "url": None, "bpm": 97.0, "beatOffsetSeconds": None, "normalize": True}
    assert video["video"]["fps"] == 30  # the CRD's default, applied by the API server

    resp = t.client.get(f"/v1/videos/{video['id']}/download")
    assert_problem(resp, HTTPStatus.CONFLICT, "not-ready")

    reader = SseReader(t.client, video["links"]["events"]).start()
    reader.wait_events(lambda evs: len(evs) >= 1)
    assert reader.status == HTTPStatus.OK
    first = reader.events[0]
    assert first.event == "video" and first.json()["phase"] == "Pending" and first.id
    assert first.json()["audio"]["url"] is None and "s3://" not in first.data
    for percent in (10, 55):
        patch_status(admin, t.namespace, video["id"], {"phase": "Running", "attempts": 1,
                                                       "progress": {"stage": "composing", "percent": percent}})
        reader.wait_events(lambda evs, p=percent: any((e.json().get("progress") or {}).get("percent") == p
                                                   for e in evs if e.event == "video"))
    render_outputs(api_system, admin, t, video["id"])
    events = reader.join()
    phases = [e.json()["phase"] for e in events if e.event == "video"]
    assert phases[0] == "Pending" and "Running" in phases and phases[-1] == "Succeeded", phases
    assert events[-1].event == "end" and events[-1].json() == {"id": video["id"], "phase": "Succeeded",
                                                              "reason": "finished"}
    ids = [int(e.id) for e in events if e.event == "video" and e.id]
    assert ids == sorted(set(ids)), "each version is sent once, in order"

    done = t.client.get(video["links"]["self"]).json()
    assert done["phase"] == "Succeeded" and done["output"] == {"durationSeconds": 1.0, "sizeBytes": len(VIDEO_BYTES)}
    assert done["analysis"] == {"tempo": 97.0, "tempoSource": "given", "confidence": 1.0, "beats": 2,
                                "beatsPerBar": None, "sections": None}
    links = t.client.get(video["links"]["download"]).json()
    assert links["sizeBytes"] == len(VIDEO_BYTES)
    assert httpx.get(links["videoUrl"]).content == VIDEO_BYTES
    assert httpx.get(links["thumbnailUrl"]).content == THUMB_BYTES

    # A finished video's stream is its final state and the end, at once.
    again = SseReader(t.client, video["links"]["events"]).start().join()
    assert [e.event for e in again] == ["video", "end"]


def test_presigned_put_upload_then_video(new_tenant: Callable[..., TenantHandle], api_system: ApiSystem) -> None:
    t = new_tenant()
    song = mp3_like(300_000)
    ticket = t.client.post("/v1/uploads", json={"filename": "a.mp3", "contentType": "audio/mpeg",
                                                "sizeBytes": len(song)}).json()
    assert ticket["multipart"] is None and ticket["method"] == "PUT"
    put = httpx.put(ticket["url"], content=song, headers=ticket["headers"])
    assert put.status_code == HTTPStatus.OK, put.text
    video = create_video(t, {"key": ticket["key"]})
    assert video["audio"]["key"] == ticket["key"]


def test_presigned_multipart_upload(new_tenant: Callable[..., TenantHandle], api_system: ApiSystem) -> None:
    t = new_tenant()
    song = mp3_like(PART + MiB // 2)
    resp = t.client.post("/v1/uploads", json={"filename": "big.mp3", "contentType": "audio/mpeg",
                                              "sizeBytes": len(song)})
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    multipart = resp.json()["multipart"]
    assert resp.json()["url"] is None and len(multipart["parts"]) == 2
    size = multipart["partSize"]
    etags = []
    for part in multipart["parts"]:
        n = part["partNumber"]
        put = httpx.put(part["url"], content=song[(n - 1) * size: n * size])
        assert put.status_code == HTTPStatus.OK, put.text
        etags.append({"partNumber": n, "etag": put.headers["etag"]})
    key = resp.json()["key"]
    done = t.client.post(multipart["completeUrl"], json={"key": key, "uploadId": multipart["uploadId"], "parts": etags})
    assert done.status_code == HTTPStatus.CREATED, done.text
    assert done.json()["sizeBytes"] == len(song) and done.json()["format"] == "mp3"
    stored = api_system.s3.client().get_object(Bucket=api_system.s3.bucket, Key=key)["Body"].read()
    assert stored == song


def test_streamed_multipart_upload(new_tenant: Callable[..., TenantHandle], api_system: ApiSystem) -> None:
    t = new_tenant()
    song = mp3_like(PART + 12345)  # two parts, the last one short (the test server allows 6 MiB)
    resp = t.client.post("/v1/uploads/file", params={"filename": "long.mp3"},
                         content=(song[i:i + 65536] for i in range(0, len(song), 65536)),
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    stored = api_system.s3.client().get_object(Bucket=api_system.s3.bucket, Key=resp.json()["key"])["Body"].read()
    assert stored == song


def test_idempotency_key_returns_the_same_video(new_tenant: Callable[..., TenantHandle]) -> None:
    t = new_tenant()
    body = {"audio": {"url": "https://example.com/song.ogg"}, "style": {"seed": 1}}
    first = t.client.post("/v1/videos", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == HTTPStatus.CREATED
    again = t.client.post("/v1/videos", json=body, headers={"Idempotency-Key": "order-42"})
    assert again.status_code == HTTPStatus.OK and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = t.client.post("/v1/videos", json={**body, "style": {"seed": 2}}, headers={"Idempotency-Key": "order-42"})
    problem = assert_problem(other, HTTPStatus.UNPROCESSABLE_ENTITY, "invalid-input")
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    listed = t.client.get("/v1/videos").json()["items"]
    assert [v["id"] for v in listed] == [first.json()["id"]]


def test_list_paginates_and_filters_by_phase(new_tenant: Callable[..., TenantHandle], admin: Any) -> None:
    t = new_tenant()
    ids = [create_video(t, {"url": f"https://example.com/{i}.mp3"})["id"] for i in range(3)]
    patch_status(admin, t.namespace, ids[1], {"phase": "Failed", "lastFailure": {"reason": "BadAudio",
                                                                               "message": "not audio"}})
    seen, token = [], None
    while True:
        page = t.client.get("/v1/videos", params={"limit": 2, **({"continue": token} if token else {})}).json()
        assert len(page["items"]) <= 2
        seen += [v["id"] for v in page["items"]]
        token = page["continue"]
        if not token:
            break
    assert seen == ids, "every video once, oldest first"
    failed = t.client.get("/v1/videos", params={"phase": "Failed"}).json()
    assert [v["id"] for v in failed["items"]] == [ids[1]] and failed["continue"] is None
    assert failed["items"][0]["failure"]["reason"] == "BadAudio"
    pending = t.client.get("/v1/videos", params={"phase": "Pending", "limit": 1}).json()
    assert [v["id"] for v in pending["items"]] == [ids[0]] and pending["continue"]
    rest = t.client.get("/v1/videos", params={"phase": "Pending", "continue": pending["continue"]}).json()
    assert [v["id"] for v in rest["items"]] == [ids[2]] and rest["continue"] is None
    assert_problem(t.client.get("/v1/videos", params={"continue": "garbage"}), HTTPStatus.BAD_REQUEST)


def test_delete_cancels_and_removes_outputs(new_tenant: Callable[..., TenantHandle], api_system: ApiSystem,
                                           admin: Any) -> None:
    t = new_tenant()
    video = create_video(t, {"url": "https://example.com/song.mp3"})
    patch_status(admin, t.namespace, video["id"], {"phase": "Running"})
    s3 = api_system.s3.client()
    key = f"videos/{t.name}/{video['id']}/segments/0001.ts"
    s3.put_object(Bucket=api_system.s3.bucket, Key=key, Body=b"partial")
    reader = SseReader(t.client, video["links"]["events"]).start()
    reader.wait_events(lambda evs: len(evs) >= 1)
    # No operator here, so no finalizer: the video goes at once (204) and the API removes its files.
    assert t.client.delete(video["links"]["self"]).status_code == HTTPStatus.NO_CONTENT
    events = reader.join()
    assert events[-1].event == "end" and events[-1].json()["reason"] == "deleted"
    assert_problem(t.client.get(video["links"]["self"]), HTTPStatus.NOT_FOUND)
    assert_problem(t.client.delete(video["links"]["self"]), HTTPStatus.NOT_FOUND)
    assert "Contents" not in s3.list_objects_v2(Bucket=api_system.s3.bucket, Prefix=f"videos/{t.name}/{video['id']}/")
