"""The whole path with nothing simulated: upload → API → MusicVideo → real operator → real renderer Job → SSE → download.

The operator runs as a subprocess for the tenant's namespace; the renderer runs as a pod through the
local cluster's node: a real container of the renderer image started by the kubelet (or, with
VIBECRAFT_TEST_NODE=agent, vibecraft-render as a host process). Skipped when the operator
package is not importable.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import TenantHandle
from tests.api.utils import SseReader, wav_bytes
from tests.conftest import Cluster, S3Server, provision_renders
from tests.harness import OperatorProcess, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.s3]


@pytest.fixture
def operator(cluster: Cluster, s3: S3Server, tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """Start an operator for a namespace (as many as called for); all are stopped afterwards."""
    if importlib.util.find_spec("vibecraft_operator.main") is None:
        pytest.skip("vibecraft_operator is not installed")
    operators: list[OperatorProcess] = []
    log = tmp_path / "operator.log"

    def start(namespace: str) -> None:
        op = OperatorProcess(cluster.kubeconfig, [namespace], log,
                             env={**cluster.operator_env(), "VIBECRAFT_LOG_FORMAT": "plain"})
        operators.append(op)
        op.start()

    yield start
    for op in operators:
        op.stop()
    print(f"--- operator log ---\n{log.read_text()[-4000:] if log.exists() else ''}")


def test_upload_render_follow_download(new_tenant: Callable[..., TenantHandle], cluster: Cluster, s3: S3Server,
                                       operator: Callable[[str], None]) -> None:
    t = new_tenant("e2e")
    provision_renders(cluster, s3, t.namespace)
    operator(t.namespace)

    song = wav_bytes(3.0, 22050)
    upload = t.client.post("/v1/uploads/file", params={"filename": "song.wav"}, content=song)
    assert upload.status_code == HTTPStatus.CREATED, upload.text
    resp = t.client.post("/v1/videos", json={
        "audio": {"key": upload.json()["key"], "bpm": 97, "beatOffsetSeconds": 0.25},
        "style": {"backend": "procedural", "seed": 1},
        "video": {"height": 72, "aspectRatio": "16:9", "fps": 10, "preset": "ultrafast"}})
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    video = resp.json()

    reader = SseReader(t.client, video["links"]["events"]).start()
    events = reader.join(150)  # a real render: imports, analysis, encoding
    phases = [e.json()["phase"] for e in events if e.event == "video"]
    final = t.client.get(video["links"]["self"]).json()
    assert phases[-1] == "Succeeded", (phases, final.get("failure"), cluster.kubectl(
        "-n", t.namespace, "get", "pods,jobs", "-o", "wide", check=False).stdout)
    assert "Running" in phases
    assert any(0 < ((e.json().get("progress") or {}).get("percent") or 0) < 100
               for e in events if e.event == "video" and e.json()["phase"] == "Running"), \
        f"the renderer's progress reached the stream: {[e.json().get('progress') for e in events]}"
    assert events[-1].event == "end"

    assert final["output"]["sizeBytes"] > 1000 and final["analysis"]
    # The tempo the client gave went through the MusicVideo to the renderer and back.
    assert (final["analysis"]["tempo"], final["analysis"]["tempoSource"], final["analysis"]["confidence"]) == \
        (97.0, "given", 1.0)
    links = t.client.get(video["links"]["download"]).json()
    mp4 = httpx.get(links["videoUrl"]).content
    assert len(mp4) == final["output"]["sizeBytes"] and mp4[4:8] == b"ftyp"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                            "-show_entries", "format=duration", "-of", "json", "-"], input=mp4, capture_output=True,
                           check=True)
    info = json.loads(probe.stdout)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert abs(float(info["format"]["duration"]) - 3.0) < 0.2
    assert httpx.get(links["thumbnailUrl"]).content[:2] == b"\xff\xd8"
    # Deleting: 202 while the operator removes the files (the finished video too: the API made it), then 404.
    deleted = t.client.delete(video["links"]["self"])
    assert deleted.status_code == HTTPStatus.ACCEPTED and deleted.json()["deleting"] is True, deleted.text
    wait_for(lambda: t.client.get(video["links"]["self"]).status_code == HTTPStatus.NOT_FOUND, timeout=120,
             what="the deleted video to go")
    prefix = f"videos/{t.name}/{video['id']}/"
    assert "Contents" not in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)


def test_a_preview_then_the_whole_video(new_tenant: Callable[..., TenantHandle], cluster: Cluster, s3: S3Server,
                                        operator: Callable[[str], None]) -> None:
    """POST /v1/videos?preview=true renders 15 s of a 20 s song; POST …/render then renders all 20 s as the same
    video (its analysis from the preview's cache); a video that is not a preview answers 409."""
    t = new_tenant("preview")
    provision_renders(cluster, s3, t.namespace)
    operator(t.namespace)
    upload = t.client.post("/v1/uploads/file", params={"filename": "song.wav"}, content=wav_bytes(20.0, 22050))
    assert upload.status_code == HTTPStatus.CREATED, upload.text
    body = {"audio": {"key": upload.json()["key"]}, "video": {"height": 72, "aspectRatio": "16:9", "fps": 10}}
    resp = t.client.post("/v1/videos", params={"preview": "true"}, json=body)
    assert resp.status_code == HTTPStatus.CREATED and resp.json()["preview"] is True, resp.text
    video = resp.json()

    def finished() -> dict[str, Any] | None:
        got = t.client.get(video["links"]["self"]).json()
        return got if got["phase"] in ("Succeeded", "Failed") else None

    done = wait_for(finished, timeout=150, what="the preview")
    assert done["phase"] == "Succeeded" and abs(done["output"]["durationSeconds"] - 15.0) < 0.15, done
    again = t.client.post(f"{video['links']['self']}/render")
    assert again.status_code == HTTPStatus.ACCEPTED and again.json()["preview"] is False, again.text
    assert t.client.post(f"{video['links']['self']}/render").status_code == HTTPStatus.CONFLICT  # not a preview now
    wait_for(lambda: (v := finished()) is not None and abs(v["output"]["durationSeconds"] - 20.0) < 0.15, timeout=150,
             what="the whole video")
    pods = cluster.kubectl("-n", t.namespace, "get", "pods", "-o", "name", check=False).stdout.split()
    logs = "".join(cluster.pod_log(t.namespace, p.removeprefix("pod/"), "renderer") for p in pods)
    assert "the song's analysis from an earlier render" in logs, logs[-3000:]
