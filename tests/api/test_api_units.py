"""Pure parts of the API, without a cluster: request models, sniffing, keys, limits, builders, config."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from vibecraft_api.audio import sniff
from vibecraft_api.auth import parse_secret
from vibecraft_api.errors import BadRequest, KubeError, RateLimited
from vibecraft_api.kube import from_kubeconfig, in_cluster
from vibecraft_api.main import create_app
from vibecraft_api.manifests import build_musicvideo, is_active, new_video_id, starts_in, to_public
from vibecraft_api.models.videos import VIDEO_ID_RE, VideoCreate
from vibecraft_api.musicvideos import decode_continue, encode_continue, policy_denial
from vibecraft_api.ratelimit import RateLimiter
from vibecraft_api.settings import Settings
from vibecraft_api.uploads import safe_filename
from vibecraft_common.limits import BEAT_OFFSET_MAX_SECONDS, BPM_MAX, BPM_MIN, DEFAULT_PRESET, LYRICS_TEXT_MAX_LENGTH
from vibecraft_common.resource import ANNOTATION_DELETE_OUTPUTS

from tests.api.utils import PROBLEM_JSON, wav_bytes


@pytest.mark.parametrize(("audio", "field", "message"), [
    ({"bpm": BPM_MIN - 1}, "bpm", f"Input should be greater than or equal to {BPM_MIN:g}"),
    ({"bpm": BPM_MAX + 0.5}, "bpm", f"Input should be less than or equal to {BPM_MAX:g}"),
    ({"bpm": "fast"}, "bpm", "Input should be a valid number"),
    ({"bpm": 120, "beatOffsetSeconds": -0.5}, "beatOffsetSeconds", "Input should be greater than or equal to 0"),
    ({"bpm": 120, "beatOffsetSeconds": BEAT_OFFSET_MAX_SECONDS + 1}, "beatOffsetSeconds",
     f"Input should be less than or equal to {BEAT_OFFSET_MAX_SECONDS:g}"),
    ({"beatOffsetSeconds": 0.5}, None, "audio.beatOffsetSeconds requires audio.bpm"),
])
def test_given_tempo_bounds_and_rule(audio: dict[str, Any], field: str | None, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3", **audio}})
    (error,) = info.value.errors()
    assert error["loc"] == (("audio", field) if field else ("audio",)) and error["msg"].startswith(message), error


@pytest.mark.parametrize(("video", "message"), [
    ({"width": 640}, "video.width requires video.height"),
    ({"width": 640, "height": 360, "aspectRatio": "16:9"}, "set video.width or video.aspectRatio, not both"),
    ({"height": 360}, "video.height requires video.width or video.aspectRatio"),
    ({"aspectRatio": "1:1"}, "video.aspectRatio requires video.height"),
    ({"platform": "shorts", "height": 720, "aspectRatio": "9:16"},
     "video.platform sets the frame size: not with video.width, video.height or video.aspectRatio"),
])
def test_crd_cross_field_rules(video: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "video": video})
    assert [e["msg"] for e in info.value.errors()] == [message]


@pytest.mark.parametrize(("head", "fmt"), [
    (b"ID3\x04\x00", "mp3"), (b"\xff\xfb\x90\x64", "mp3"), (b"\xff\xf1\x50\x80", "aac"), (b"OggS\x00\x02", "ogg"),
    (wav_bytes(0.01)[:16], "wav"), (b"fLaC\x00\x00\x00\x22", "flac"), (b"\x00\x00\x00\x20ftypM4A ", "m4a"),
    (b"FORM\x00\x00\x10\x00AIFF", "aiff"), (b"\x1a\x45\xdf\xa3\x9f", "webm"),
    (b"%PDF-1.7", None), (b"\x89PNG\r\n\x1a\n", None), (b"PK\x03\x04", None), (b"", None), (b"\xff\xd8\xff\xe0", None),
    (b"RIFF\x00\x00\x00\x00AVI ", None),
])
def test_sniff(head: bytes, fmt: str | None) -> None:
    assert sniff(head) == fmt


@pytest.mark.parametrize(("name", "safe"), [
    ("song.mp3", "song.mp3"), ("../../etc/passwd", "passwd"), ("C:\\Music\\My Song.flac", "My_Song.flac"),
    ("ünïcødé.ogg", "n_c_d_.ogg"), ("...", "audio"), ("a" * 300 + ".mp3", "a" * 124 + ".mp3"),
])
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(name) == safe


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    limiter.check("k")
    limiter.check("k")
    with pytest.raises(RateLimited) as info:
        limiter.check("k")
    assert info.value.headers["Retry-After"] == "10"
    limiter.check("other")  # buckets are per key
    now[0] = 10.0
    limiter.check("k")
    limiter.refund("k")
    limiter.check("k")
    with pytest.raises(RateLimited):
        limiter.check("k")


def test_continue_tokens() -> None:
    assert decode_continue(encode_continue("abc", "", 7)) == ("abc", "", 7)
    assert decode_continue(encode_continue("", "123", 0)) == ("", "123", 0)
    for bad in ("", "garbage", base64.urlsafe_b64encode(b'{"c": 1}').decode(), encode_continue("", "x", 0),
                encode_continue("a", "", -1)):
        with pytest.raises(BadRequest):
            decode_continue(bad)


def test_parse_secret(caplog: pytest.LogCaptureFixture) -> None:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    good = hashlib.sha256(b"k1").hexdigest()
    data = {"acme": b64(f"sha256:{good}\nraw-key-long-enough-1234\n"), "short": b64("changeme"),
            "Bad_Name": b64("raw-key-long-enough-5678"), "dup": b64("raw-key-long-enough-1234"), "junk": "!!!",
            "bare": b64(hashlib.sha256(b"k2").hexdigest().upper())}  # the Helm chart's documented form
    with caplog.at_level(logging.WARNING):
        keys = parse_secret(data, "vc-")
    assert keys == {bytes.fromhex(good): "acme", hashlib.sha256(b"raw-key-long-enough-1234").digest(): "acme",
                    hashlib.sha256(b"k2").digest(): "bare"}
    assert len(caplog.records) == 4
    assert "raw-key" not in caplog.text, "keys are never logged"


def test_ids_sort_by_creation_time() -> None:
    ids = [new_video_id(ms) for ms in (1, 10**12, 10**12 + 1, 2 * 10**12)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert all(VIDEO_ID_RE.match(i) and len(i) <= 40 for i in ids)


def test_a_given_tempo_goes_into_the_spec_and_comes_back_with_the_analysis() -> None:
    req = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3", "bpm": 97, "beatOffsetSeconds": 0.42}})
    obj = build_musicvideo(name="mv-1", tenant="acme", req=req, bucket="b", audio_url="https://e.example/a.mp3")
    assert obj["spec"]["audio"] == {"url": "https://e.example/a.mp3", "bpm": 97.0, "beatOffsetSeconds": 0.42}
    plain = build_musicvideo(name="mv-2", tenant="acme", req=VideoCreate.model_validate(
        {"audio": {"url": "https://e.example/a.mp3"}}), bucket="b", audio_url="https://e.example/a.mp3")
    assert plain["spec"]["audio"] == {"url": "https://e.example/a.mp3"}
    obj["status"] = {"phase": "Succeeded",
                     "analysis": {"tempo": 97.0, "tempoSource": "given", "confidence": 1.0, "beats": 32}}
    public = to_public(obj, "b")
    assert (public.audio.bpm, public.audio.beatOffsetSeconds) == (97.0, 0.42)
    assert public.analysis is not None
    assert (public.analysis.tempo, public.analysis.tempoSource, public.analysis.confidence) == (97.0, "given", 1.0)
    assert to_public(plain, "b").audio.bpm is None


@pytest.mark.parametrize("given", [3, "auto"])
def test_parallelism_goes_into_the_spec_and_comes_back(given: int | str) -> None:
    req = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "parallelism": given})
    obj = build_musicvideo(name="mv-1", tenant="acme", req=req, bucket="b", audio_url="https://e.example/a.mp3")
    assert obj["spec"]["parallelism"] == given and to_public(obj, "b").parallelism == given
    plain = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}})
    obj = build_musicvideo(name="mv-2", tenant="acme", req=plain, bucket="b", audio_url="https://e.example/a.mp3")
    assert "parallelism" not in obj["spec"] and to_public(obj, "b").parallelism == 1


@pytest.mark.parametrize("bad", [0, 17, "many", True, 2.5, "3"])
def test_parallelism_is_refused_outside_the_crds_bounds(bad: Any) -> None:
    with pytest.raises(ValidationError):
        VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "parallelism": bad})


def test_platform_and_loudness_go_into_the_spec_and_come_back() -> None:
    req = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3", "normalize": False},
                                      "video": {"platform": "tiktok"}})
    obj = build_musicvideo(name="mv-1", tenant="acme", req=req, bucket="b", audio_url="https://e.example/a.mp3")
    assert obj["spec"]["audio"] == {"url": "https://e.example/a.mp3", "normalize": False}
    assert obj["spec"]["video"]["platform"] == "tiktok"
    public = to_public(obj, "b")
    assert public.audio.normalize is False and public.video.platform == "tiktok"
    plain = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}})
    obj = build_musicvideo(name="mv-2", tenant="acme", req=plain, bucket="b", audio_url="https://e.example/a.mp3")
    assert "normalize" not in obj["spec"]["audio"] and to_public(obj, "b").audio.normalize is True


def test_lyrics_title_and_artist_go_into_the_spec_and_come_back_without_the_text() -> None:
    req = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "title": "Crossroads",
                                      "artist": "HyperRogue", "lyrics": {"text": "[00:01.00]First line\n"}})
    obj = build_musicvideo(name="mv-1", tenant="acme", req=req, bucket="b", audio_url="https://e.example/a.mp3")
    assert obj["metadata"]["name"] == "mv-1" and obj["spec"]["output"]["url"] == "s3://b/videos/acme/mv-1/"
    assert obj["spec"]["lyrics"] == {"text": "[00:01.00]First line\n", "format": "auto"}
    assert (obj["spec"]["title"], obj["spec"]["artist"]) == ("Crossroads", "HyperRogue")
    public = to_public(obj, "b")
    assert (public.title, public.artist) == ("Crossroads", "HyperRogue")
    assert public.lyrics is not None and public.lyrics.inline and public.lyrics.url is None
    assert public.preview is False and "preview" not in obj["spec"]
    preview = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "preview": True})
    obj = build_musicvideo(name="mv-3", tenant="acme", req=preview, bucket="b", audio_url="https://e.example/a.mp3")
    assert obj["spec"]["preview"] is True and to_public(obj, "b").preview is True
    # POST …/render changed the spec of a finished preview: Pending (active) until the operator takes it up.
    obj["metadata"]["generation"], obj["status"] = 2, {"phase": "Succeeded", "observedGeneration": 1}
    assert to_public(obj, "b").phase == "Pending" and is_active(obj)
    obj["status"]["observedGeneration"] = 2
    assert to_public(obj, "b").phase == "Succeeded" and not is_active(obj)
    by_url = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"},
                                         "lyrics": {"url": "https://e.example/a.lrc", "format": "lrc"}})
    obj = build_musicvideo(name="mv-2", tenant="acme", req=by_url, bucket="b", audio_url="https://e.example/a.mp3")
    public = to_public(obj, "b")
    assert public.lyrics is not None and public.lyrics.url == "https://e.example/a.lrc" and not public.lyrics.inline


@pytest.mark.parametrize(("lyrics", "says"), [
    ({"url": "s3://other-tenant/secret.lrc"}, "lyrics.url must be an http:// or https:// URL"),
    ({"url": "https://e.example/a.lrc", "text": "[00:01.00]x"}, "lyrics needs either lyrics.url or lyrics.text"),
    ({}, "lyrics needs either lyrics.url or lyrics.text"),
    ({"text": "x" * (LYRICS_TEXT_MAX_LENGTH + 1)}, f"at most {LYRICS_TEXT_MAX_LENGTH} characters"),
    ({"text": "[00:01.00]x", "format": "ass"}, "Input should be 'auto', 'lrc', 'srt' or 'vtt'"),
])  # fmt: skip
def test_lyrics_a_tenant_cannot_send(lyrics: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "lyrics": lyrics})


def test_the_idempotency_hash_of_a_request_did_not_change_with_the_loudness_field() -> None:
    from vibecraft_api.manifests import request_hash

    plain = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}})
    explicit = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3", "normalize": True}})
    off = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3", "normalize": False}})
    before = hashlib.sha256(json.dumps(  # what request_hash gave before audio.normalize existed
        {k: v for k, v in {**plain.model_dump(mode="json", exclude_none=True),
                           "audio": {"url": "https://e.example/a.mp3"}}.items()},
        sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert request_hash(plain) == request_hash(explicit) == before != request_hash(off)


def test_build_and_read_back_a_musicvideo() -> None:
    req = VideoCreate.model_validate({"audio": {"key": "uploads/acme/" + "0" * 32 + "/a.mp3"},
                                      "style": {"backend": "replicate", "prompt": "rain"},
                                      "video": {"height": 720, "aspectRatio": "9:16"}, "retries": 0})
    obj = build_musicvideo(name="mv-1", tenant="acme", req=req, bucket="b", audio_url="s3://b/uploads/acme/x/a.mp3",
                           idempotency="abc")
    assert obj["spec"] == {"audio": {"url": "s3://b/uploads/acme/x/a.mp3"},
                           "style": {"backend": "replicate", "prompt": "rain"},
                           "video": {"height": 720, "aspectRatio": "9:16", "fps": 30, "cutEvery": "beat",
                                     "preset": DEFAULT_PRESET},
                           "output": {"url": "s3://b/videos/acme/mv-1/"}, "retries": 0}
    assert obj["metadata"]["labels"]["vibecraft.io/idempotency-key"] == "abc"
    # However it is deleted (API, TTL, kubectl), a video the API made goes with all its files.
    assert obj["metadata"]["annotations"][ANNOTATION_DELETE_OUTPUTS] == "true"
    ttl = VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}, "ttlSecondsAfterFinished": 3600})
    built = build_musicvideo(name="mv-3", tenant="acme", req=ttl, bucket="b", audio_url="https://e.example/a.mp3")
    assert built["spec"]["ttlSecondsAfterFinished"] == 3600
    assert to_public(built, "b").ttlSecondsAfterFinished == 3600
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    # Status from other components may be odd: odd parts are dropped, never a 500.
    obj["status"] = {"phase": "Exploded", "progress": {"percent": "lots"}, "attempts": True,
                     "output": {"sizeBytes": 5, "videoUrl": "s3://b/videos/acme/mv-1/video.mp4"}}
    public = to_public(obj, "b")
    assert public.phase == "Pending" and public.progress is None and public.attempts == 0
    assert public.output is not None and public.output.sizeBytes == 5
    assert public.audio.key == "uploads/acme/x/a.mp3"
    assert "videoUrl" not in public.model_dump_json()
    assert is_active(obj)
    obj["status"]["phase"] = "Failed"
    assert not is_active(obj)
    obj["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"  # its files are still being removed
    assert is_active(obj) and to_public(obj, "b").deleting
    del obj["metadata"]["deletionTimestamp"]
    obj["status"].update(replicatePredictions=7, progress={"percent": 20.0, "predictions": 2})
    public = to_public(obj, "b")  # what Replicate cost, charged and in the running attempt
    assert public.replicatePredictions == 7 and public.progress is not None and public.progress.predictions == 2


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made with openssl (stands in for the CA and a client cert)."""
    key, crt = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "1", "-subj", "/CN=test"], check=True, capture_output=True)
    return crt, key


def _kubeconfig(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://k.example:6443/", **cluster}}],
        "users": [{"name": "u", "user": user}]}))
    return path


def _auth_header(cfg: Any) -> str:
    assert cfg.auth is not None
    return str(cfg.auth.header())


def test_kubeconfig_forms(tmp_path: Path, pki: tuple[Path, Path]) -> None:
    crt, key = pki

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    embedded = from_kubeconfig(_kubeconfig(tmp_path, {"certificate-authority-data": b64(crt)},
                                           {"client-certificate-data": b64(crt), "client-key-data": b64(key)}))
    assert embedded.server == "https://k.example:6443"
    assert isinstance(embedded.ssl, ssl.SSLContext) and embedded.auth is None
    files = from_kubeconfig(_kubeconfig(tmp_path, {"certificate-authority": crt.name},
                                        {"client-certificate": crt.name, "client-key": key.name}))
    assert isinstance(files.ssl, ssl.SSLContext)
    token = from_kubeconfig(_kubeconfig(tmp_path, {"insecure-skip-tls-verify": True}, {"token": "t0ken"}))
    assert token.ssl is False and _auth_header(token) == "Bearer t0ken"
    (tmp_path / "tok").write_text("from-file\n")
    assert _auth_header(from_kubeconfig(_kubeconfig(tmp_path, {}, {"tokenFile": "tok"}))) == "Bearer from-file"
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable, "args": [
        "-c", "import json; print(json.dumps({'status': {'token': 'exec-token'}}))"]}}
    assert _auth_header(from_kubeconfig(_kubeconfig(tmp_path, {}, exec_user))) == "Bearer exec-token"


def test_in_cluster_config(tmp_path: Path, pki: tuple[Path, Path]) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes(pki[0].read_bytes())
    cfg = in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert cfg.server == "https://[fd00::1]:443"
    assert _auth_header(cfg) == "Bearer first"


def test_settings_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBECRAFT_API_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("VIBECRAFT_API_MAX_CONCURRENT_RENDERS", "7")
    s = Settings()
    assert s.cors_origins == ["https://a.example", "https://b.example"] and s.max_concurrent_renders == 7
    monkeypatch.setenv("VIBECRAFT_API_CORS_ORIGINS", '["https://c.example"]')
    assert Settings().cors_origins == ["https://c.example"]
    for bad in ({"s3_access_key_id": "AKIA", "s3_secret_access_key": "changeme"},
                {"s3_access_key_id": "AKIA"}, {"namespace_prefix": "VC_"}, {"s3_bucket": "No_Such"},
                {"upload_part_bytes": 1024}, {"multipart_threshold_bytes": 6 * 2**20, "upload_part_bytes": 8 * 2**20}):
        with pytest.raises(ValidationError):
            Settings(**bad)


def test_unexpected_errors_are_a_500_problem_without_details() -> None:
    app = create_app(Settings(cors_origins=[]))

    @app.get("/boom")  # type: ignore[untyped-decorator]
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in /srv/secret/path.py")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/boom")

    resp = asyncio.run(call())
    assert resp.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    assert resp.headers["content-type"] == PROBLEM_JSON
    assert resp.json()["type"].endswith("/internal")
    assert "hunter2" not in resp.text and "Traceback" not in resp.text and "path.py" not in resp.text


AUDIO_URL_MESSAGE = "audio.url must be an http:// or https:// URL"


@pytest.mark.parametrize("url", ["ftp://e.example/a.mp3", "e.example/a.mp3", "s3://bucket/uploads/a.mp3",
                                 "https://e.example/my song.mp3", "HTTPS://"])
def test_a_bad_audio_url_is_refused_in_plain_words(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        VideoCreate.model_validate({"audio": {"url": url}})
    (error,) = info.value.errors()
    assert error["loc"] == ("audio", "url") and error["msg"] == AUDIO_URL_MESSAGE, error
    # The schema still tells clients the rule as a pattern.
    schema = VideoCreate.model_json_schema()["$defs"]["AudioSource"]["properties"]["url"]
    assert any(s.get("pattern") == r"^https?://[^\s]+$" for s in schema["anyOf"]), schema


def _offline_app() -> Any:
    """The app without its lifespan: a fixed tenant, and no runtime parts (requests must fail before using them)."""
    from types import SimpleNamespace

    from vibecraft_api.auth import Tenant
    from vibecraft_api.deps import current_tenant

    settings = Settings(cors_origins=[])
    app = create_app(settings)
    app.state.runtime = SimpleNamespace(settings=settings, renders=None, metrics=None, keys=None, videos=None)
    app.dependency_overrides[current_tenant] = lambda: Tenant("acme", "vc-acme", "k")
    return app


def _post(app: Any, content: bytes) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post("/v1/videos", content=content, headers={"Content-Type": "application/json"})

    return asyncio.run(call())


def test_a_bad_audio_url_problem_reads_as_a_sentence() -> None:
    resp = _post(_offline_app(), b'{"audio": {"url": "ftp://e.example/a.mp3"}}')
    assert resp.status_code == HTTPStatus.UNPROCESSABLE_ENTITY and resp.headers["content-type"] == PROBLEM_JSON
    problem = resp.json()
    assert problem["type"].endswith("/invalid-input")
    assert problem["errors"] == [{"pointer": "#/audio/url", "field": "audio.url", "location": "body",
                                  "detail": AUDIO_URL_MESSAGE}]
    assert problem["detail"] == f"audio.url: {AUDIO_URL_MESSAGE}"
    assert "pattern" not in resp.text and "^https" not in resp.text


@pytest.mark.parametrize("body", [b"{not json", b'{"audio": {"url": "https://e.example/a.mp3"}', b"\xff\xfe{}",
                                  b'{"audio": {"url": "https://e.example/\xff.mp3"}}'])
def test_malformed_json_is_a_400_problem(body: bytes) -> None:
    resp = _post(_offline_app(), body)
    assert resp.status_code == HTTPStatus.BAD_REQUEST, resp.text
    assert resp.headers["content-type"] == PROBLEM_JSON
    problem = resp.json()
    assert problem["type"] == "https://vibecraft.io/problems/bad-request" and problem["title"] == "Bad request"
    assert problem["status"] == HTTPStatus.BAD_REQUEST and problem["instance"] == "/v1/videos"
    assert problem["detail"].startswith("The request body is not valid JSON"), problem
    # Well-formed JSON that breaks the schema stays a 422 with field errors.
    resp = _post(_offline_app(), b'{"audio": {"url": "https://e.example/a.mp3"}, "colour": "red"}')
    assert resp.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert [e["field"] for e in resp.json()["errors"]] == ["colour"]


def test_an_uploaded_song_is_shown_by_key_never_by_its_s3_location() -> None:
    key = "uploads/acme/" + "0" * 32 + "/a.mp3"
    uploaded = build_musicvideo(name="mv-1", tenant="acme", req=VideoCreate.model_validate({"audio": {"key": key}}),
                                bucket="b", audio_url=f"s3://b/{key}")
    public = to_public(uploaded, "b")
    assert (public.audio.key, public.audio.url) == (key, None)
    assert "s3://" not in public.model_dump_json()
    linked = build_musicvideo(name="mv-2", tenant="acme", bucket="b", audio_url="https://e.example/a.mp3",
                              req=VideoCreate.model_validate({"audio": {"url": "https://e.example/a.mp3"}}))
    assert (to_public(linked, "b").audio.key, to_public(linked, "b").audio.url) == (None, "https://e.example/a.mp3")
    # A MusicVideo made with kubectl from another bucket: still no internal location.
    uploaded["spec"]["audio"]["url"] = "s3://elsewhere/song.mp3"
    assert (to_public(uploaded, "b").audio.key, to_public(uploaded, "b").audio.url) == (None, None)


def test_following_a_video_in_a_namespace_the_api_may_not_use_fails_at_once_with_that_cause() -> None:
    """A watch the API server refuses (403: no RoleBinding, the chart's sign of an unprovisioned tenant)."""
    from vibecraft_api.errors import KubeError, TenantNotProvisioned
    from vibecraft_api.watches import WatchHub

    class Refusing:
        async def get(self, path: str, params: Any = None) -> dict[str, Any]:
            raise KubeError(403, "Forbidden", "musicvideos.vibecraft.io is forbidden")

    async def follow() -> tuple[BaseException | None, float]:
        hub = WatchHub(Refusing(), linger=0)  # type: ignore[arg-type]
        started = asyncio.get_running_loop().time()
        try:
            await hub.subscribe("vc-nobody", "mv-1")
        except Exception as exc:
            return exc, asyncio.get_running_loop().time() - started
        finally:
            await hub.close()
        return None, asyncio.get_running_loop().time() - started

    error, _ = asyncio.run(follow())
    # Before, the hub waited out its 10 s sync and raised "the Kubernetes API does not answer" instead.
    assert isinstance(error, TenantNotProvisioned), error


def test_an_admission_policy_refusal_is_the_clients_mistake_in_the_policys_words() -> None:
    """The chart's tenancy policy refusing a model answers 422 naming the field, not "account not set up"."""
    said = ("musicvideos.vibecraft.io \"x\" is forbidden: ValidatingAdmissionPolicy 'vc-vibecraft-musicvideo-tenancy' "
            "with binding 'vc-vibecraft-musicvideo-tenancy' denied request: spec.style.model a/b is not allowed in "
            "namespace vc-alice: allowed are black-forest-labs/flux-schnell")
    refused = policy_denial(KubeError(403, "Forbidden", said))
    assert refused is not None and refused.status == 422
    assert refused.detail == "spec.style.model a/b is not allowed in namespace vc-alice: allowed are " \
                             "black-forest-labs/flux-schnell"
    assert [(e.field, e.detail) for e in refused.errors] == [("style.model", refused.detail)]
    assert policy_denial(KubeError(403, "Forbidden", "musicvideos is forbidden: User cannot create")) is None


def test_a_watch_cache_not_ready_yet_falls_back_to_a_consistent_list() -> None:
    """Right after the CRD is installed (or an API server restarts) a list served from the watch cache
    answers 429 "storage is (re)initializing": counting renders then reads etcd instead of failing 503."""
    from vibecraft_api.errors import KubeError as KError
    from vibecraft_api.musicvideos import MusicVideos

    calls: list[dict[str, Any]] = []

    class Kube:
        async def get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
            calls.append(dict(params))
            if "resourceVersion" in params:
                raise KError(429, "TooManyRequests", "storage is (re)initializing")
            return {"items": [{"metadata": {"name": "mv-1"}}]}

    found = asyncio.run(MusicVideos(Kube()).selected("vc-acme", "!vibecraft.io/finished"))  # type: ignore[arg-type]
    assert [o["metadata"]["name"] for o in found] == ["mv-1"]
    assert calls == [{"labelSelector": "!vibecraft.io/finished", "resourceVersion": "0",
                      "resourceVersionMatch": "NotOlderThan"}, {"labelSelector": "!vibecraft.io/finished"}]


def test_a_queued_video_shows_its_place_and_a_start_estimate_counted_from_now() -> None:
    status = {"phase": "Queued", "queuePosition": 3, "estimatedStartSeconds": 300, "queueUpdatedAt": "2026-01-01T00:00:00Z"}
    obj = build_musicvideo(name="mv-q", tenant="acme", req=VideoCreate.model_validate(
        {"audio": {"url": "https://e.example/a.mp3"}}), bucket="b", audio_url="https://e.example/a.mp3")
    obj["status"] = status
    assert to_public(obj, "b").queuePosition == 3
    at = datetime(2026, 1, 1, 0, 2, 0, tzinfo=UTC)
    assert starts_in(status, at) == 180  # two minutes after the estimate was made
    assert starts_in(status, at + timedelta(hours=1)) == 0  # overdue: "any moment", never negative
    assert starts_in({**status, "queueUpdatedAt": "garbage"}, at) == 300
    assert starts_in({"phase": "Running"}, at) is None
