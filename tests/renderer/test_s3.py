"""s3:// input and output against the local S3 server (the session `s3` fixture in tests/conftest.py)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vibecraft_common.limits import LYRICS_MAX_BYTES
from vibecraft_common.resource import EXIT_BAD_LYRICS, EXIT_INPUT_NOT_FOUND, EXIT_UPLOAD_FAILED, PERMANENT_EXIT_CODES

from .helpers import count_frames, run_render

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3server(s3: Any) -> Any:
    return s3


@pytest.fixture
def run_prefix(s3server: Any) -> Iterator[str]:
    """A unique key prefix for this test, emptied afterwards."""
    run = uuid.uuid4().hex[:8]
    yield run
    client = s3server.client()
    listed = client.list_objects_v2(Bucket=s3server.bucket, Prefix=f"renderer-tests/{run}/").get("Contents", [])
    if listed:
        client.delete_objects(Bucket=s3server.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in listed]})


def test_s3_round_trip(s3server: Any, run_prefix: str, click120: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    client = s3server.client()
    run = run_prefix
    client.upload_file(str(click120[0]), s3server.bucket, f"renderer-tests/{run}/in/song.wav")
    src = f"s3://{s3server.bucket}/renderer-tests/{run}/in/song.wav"
    prefix = f"renderer-tests/{run}/out/"
    res = run_render([src, "-o", f"s3://{s3server.bucket}/{prefix}", "--width", "160", "--height", "90",
                      "--segment-seconds", "4", "-q"], env=s3server.env())  # fmt: skip
    assert res.returncode == 0, res.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3server.bucket, Prefix=prefix).get("Contents", [])}
    # The outputs, and the song's analysis kept for the next render of this output (cache/analysis/).
    assert {k for k in keys if "/cache/" not in k} == {prefix + name for name in ("video.mp4", "thumbnail.jpg",
                                                                                "analysis.json")}, keys
    assert [k.rsplit("/", 2)[-2] for k in keys if "/cache/" in k] == ["analysis"], keys
    local = tmp_path / "video.mp4"
    client.download_file(s3server.bucket, prefix + "video.mp4", str(local))
    assert count_frames(local) == 300
    head = client.head_object(Bucket=s3server.bucket, Key=prefix + "video.mp4")
    assert head["ContentType"] == "video/mp4"


def test_s3_missing_bucket_and_key(s3server: Any, click120: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """A missing input is permanent (exit 15: the operator does not retry it); a missing output bucket is an
    upload failure, found before any work."""
    env = s3server.env()
    log = tmp_path / "log"
    env["VIBECRAFT_TERMINATION_LOG"] = str(log)
    res = run_render(["s3://no-such-bucket-vc/song.wav", "-o", str(tmp_path / "o.mp4"), "-q"], env=env)
    assert res.returncode == EXIT_INPUT_NOT_FOUND
    assert log.read_text().strip() == "s3://no-such-bucket-vc/song.wav not found (bucket 'no-such-bucket-vc' does not exist)"
    missing = f"s3://{s3server.bucket}/renderer-tests/missing.wav"
    res = run_render([missing, "-o", str(tmp_path / "o.mp4"), "-q"], env=env)
    assert res.returncode == EXIT_INPUT_NOT_FOUND in PERMANENT_EXIT_CODES
    assert log.read_text().strip() == f"{missing} not found (no such object)"
    res = run_render([str(click120[0]), "-o", "s3://no-such-bucket-vc/out/", "-q"], env=env)
    assert res.returncode == EXIT_UPLOAD_FAILED
    assert "does not exist" in log.read_text()


def _click_render(s3server: Any, out: str, tmp_path: Path, seconds: float, size: tuple[int, int]) -> tuple[str, list[str]]:
    """A 120 BPM click track of `seconds` and the CLI arguments rendering it to `out` in the bucket (2 s segments)."""
    from .helpers import write_click_track

    audio = tmp_path / "song.wav"
    write_click_track(audio, 120.0, seconds)
    return out, [str(audio), "-o", f"s3://{s3server.bucket}/{out}", "--width", str(size[0]), "--height", str(size[1]),
                 "--segment-seconds", "2", "-q"]  # fmt: skip


def test_s3_resume_after_kill(s3server: Any, run_prefix: str, tmp_path: Path) -> None:
    """A fresh pod (new work dir) resumes from checkpoints stored in the bucket."""
    import os
    import subprocess

    from .helpers import RENDER, kill_when

    client = s3server.client()
    out, args = _click_render(s3server, f"renderer-tests/{run_prefix}/resume/", tmp_path, 12.0, (320, 180))
    env = {**os.environ, **s3server.env()}
    proc = subprocess.Popen([*RENDER, *args, "--work-dir", str(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def checkpoints() -> list[str]:
        listed = client.list_objects_v2(Bucket=s3server.bucket, Prefix=out + "segments/").get("Contents", [])
        return [o["Key"] for o in listed if o["Key"].endswith("seg-00000.mp4")]

    kill_when(proc, checkpoints, what="a checkpoint to reach the bucket", timeout=120, interval=0.02)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3server.bucket, Prefix=out).get("Contents", [])}
    assert out + "video.mp4" not in keys

    work2 = tmp_path / "fresh-pod"
    work2.mkdir()
    res = run_render([*args, "--work-dir", str(work2)], env=s3server.env())
    assert res.returncode == 0, res.stderr
    assert "reusing seg-00000.mp4" in res.stderr
    local = tmp_path / "v.mp4"
    client.download_file(s3server.bucket, out + "video.mp4", str(local))
    assert count_frames(local) == 12 * 30


def test_s3_split_render_in_separate_work_dirs(s3server: Any, run_prefix: str, tmp_path: Path) -> None:
    """The stages as pods run them: each in its own scratch dir, sharing only the bucket."""
    client = s3server.client()
    out, args = _click_render(s3server, f"renderer-tests/{run_prefix}/split/", tmp_path, 10.0, (160, 90))
    for n, stage in enumerate((["--chunk", "1"], ["--chunk", "0"], ["--chunk", "2"])):
        work = tmp_path / f"pod-{n}"
        work.mkdir()
        res = run_render([*args, "--stage", "segments", "--chunks", "3", *stage, "--work-dir", str(work)],
                         env={**s3server.env(), "VIBECRAFT_PLAN_WAIT_SECONDS": "1"})  # fmt: skip
        assert res.returncode == 0, res.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3server.bucket, Prefix=out).get("Contents", [])}
    assert sum(1 for k in keys if k.rsplit("/", 1)[-1].startswith("seg-")) == 5 and out + "segments/plan.json" in keys
    assert out + "video.mp4" not in keys
    (tmp_path / "pod-join").mkdir()
    res = run_render([*args, "--stage", "join", "--work-dir", str(tmp_path / "pod-join")], env=s3server.env())
    assert res.returncode == 0, res.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3server.bucket, Prefix=out).get("Contents", [])}
    assert {k for k in keys if "/cache/" not in k} == {out + name for name in ("video.mp4", "thumbnail.jpg",
                                                                             "analysis.json")}, keys
    local = tmp_path / "v.mp4"
    client.download_file(s3server.bucket, out + "video.mp4", str(local))
    assert count_frames(local) == 10 * 30


def _leftovers(client: Any, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """Temporary objects and unfinished multipart uploads under `prefix`."""
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return [k for k in keys if ".tmp-" in k], [u["Key"] for u in uploads]


@pytest.mark.chaos
def test_renderer_killed_mid_render_and_inside_its_final_upload_leaves_nothing_half_written(
        s3server: Any, run_prefix: str, tmp_path: Path) -> None:
    """Scenario 4 (issue 19), the real renderer against the real S3 server through a proxy that holds the
    server-side copy publishing video.mp4: SIGKILLed after a new checkpoint (19 times in make chaos), then inside that
    copy (its temporary object written, the final key not), and with a multipart upload of the video left
    open as a killed big upload leaves one. At most one segment is rendered again per kill, and the run
    that finishes leaves no temporary object, no open upload and no partial final object behind."""
    import os
    import subprocess
    from urllib.parse import urlparse

    from tests.fakes.flaky_proxy import FlakyProxy

    from .helpers import RENDER, kill_when, write_click_track

    scale = int(os.environ.get("VIBECRAFT_CHAOS_SCALE", "1"))
    mid_kills = 1 if scale == 1 else 4 * scale - 1  # make chaos: 19, and the one inside the final copy
    segments_total = mid_kills + 5
    client, bucket = s3server.client(), s3server.bucket
    audio = tmp_path / "song.wav"
    write_click_track(audio, 120.0, 2.0 * segments_total)
    out = f"renderer-tests/{run_prefix}/killed/"
    args = [str(audio), "-o", f"s3://{bucket}/{out}", "--width", "320", "--height", "180", "--segment-seconds", "2"]
    up = urlparse(s3server.endpoint)
    logs: list[Path] = []

    def start(env: dict[str, str]) -> subprocess.Popen[bytes]:
        work = tmp_path / f"w{len(logs)}"
        work.mkdir()
        logs.append(tmp_path / f"run{len(logs)}.log")
        with logs[-1].open("wb") as log:
            return subprocess.Popen([*RENDER, *args, "--work-dir", str(work)], env=env, stdout=log, stderr=log)

    def segments() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=out + "segments/").get("Contents", [])
        return [o["Key"] for o in listed if o["Key"].endswith(".mp4") and ".tmp-" not in o["Key"]]

    publish_video = f"PUT /{bucket}/{out}video.mp4 HTTP/1.1".encode()  # the copy to the final key (path style)
    with FlakyProxy(up.hostname or "127.0.0.1", up.port or 80, stall_on=publish_video, stall_seconds=60) as proxy:
        env = {**os.environ, **s3server.env(), "AWS_ENDPOINT_URL": proxy.endpoint}
        env.pop("VIBECRAFT_SPEC_JSON", None)
        for _ in range(mid_kills):
            before = len(segments())
            kill_when(start(env), lambda n=before: len(segments()) > n, what="one more checkpoint",
                      timeout=120, interval=0.02)
        proc = start(env)
        kill_when(proc, lambda: proxy.stalling.is_set() and _leftovers(client, bucket, out + "video.mp4")[0],
                  what="the renderer inside the copy that publishes video.mp4", timeout=180, interval=0.02)
        tmp_left, _ = _leftovers(client, bucket, out)
        assert any(k.startswith(out + "video.mp4.tmp-") for k in tmp_left), tmp_left
        keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=out).get("Contents", [])}
        assert out + "video.mp4" not in keys, "no final object until the copy completed"
        client.create_multipart_upload(Bucket=bucket, Key=out + "video.mp4.tmp-killedbigupload")
    last = start({**os.environ, **s3server.env()})
    assert last.wait(300) == 0, logs[-1].read_text()
    text = [log.read_text() for log in logs]
    rendered = sum(t.count(" rendered: seg-") for t in text)
    kills = mid_kills + 1
    print(f"renderer SIGKILLed {kills} times ({mid_kills} mid-render, 1 inside the final copy): {rendered} segment renders "
          f"for {segments_total} segments ({rendered - segments_total} again); the last run reused "
          f"{text[-1].count('reusing seg-')}; leftovers {_leftovers(client, bucket, out)}")
    assert text[-1].count("reusing seg-") == segments_total, text[-1]  # all finished before the last kill
    assert rendered - segments_total <= kills, text
    assert _leftovers(client, bucket, out) == ([], [])
    local = tmp_path / "v.mp4"
    client.download_file(bucket, out + "video.mp4", str(local))
    assert count_frames(local) == 2 * segments_total * 30


@pytest.mark.chaos
def test_storage_dropping_requests_and_stalling_the_final_copy_still_publishes_whole_objects(
        s3server: Any, run_prefix: str, tmp_path: Path) -> None:
    """Scenario 6 (issue 19): 10 % of S3 requests lost (connection closed before the server sees them) and
    the copy that publishes video.mp4 held 5 s: the render succeeds (the client's retries), and every
    final object is whole, with no temporaries left."""
    from urllib.parse import urlparse

    from tests.fakes.flaky_proxy import FlakyProxy

    from .helpers import write_click_track

    client, bucket = s3server.client(), s3server.bucket
    audio = tmp_path / "song.wav"
    write_click_track(audio, 120.0, 8.0)
    out = f"renderer-tests/{run_prefix}/flaky/"
    up = urlparse(s3server.endpoint)
    publish_video = f"PUT /{bucket}/{out}video.mp4 HTTP/1.1".encode()  # the copy to the final key (path style)
    with FlakyProxy(up.hostname or "127.0.0.1", up.port or 80, drop=0.1, seed=6, always_drop=frozenset({5}),
                    stall_on=publish_video, stall_seconds=5) as proxy:
        res = run_render([str(audio), "-o", f"s3://{bucket}/{out}", "--width", "320", "--height", "180",
                          "--segment-seconds", "2", "--work-dir", str(tmp_path)],
                         env={**s3server.env(), "AWS_ENDPOINT_URL": proxy.endpoint})
        print(f"flaky storage: {proxy.requests} requests, {proxy.dropped} dropped, the final copy stalled 5 s")
    assert res.returncode == 0, res.stderr
    assert proxy.dropped > 0 and proxy.stalled == 1, (proxy.dropped, proxy.stalled)
    assert _leftovers(client, bucket, out) == ([], [])
    local = tmp_path / "v.mp4"
    client.download_file(bucket, out + "video.mp4", str(local))
    assert count_frames(local) == 8 * 30


def test_lyrics_are_read_from_s3_and_bounded_while_reading(s3server: Any, run_prefix: str,
                                                           click120: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    """spec.lyrics.url on S3: read with a ranged GET of one byte more than LYRICS_MAX_BYTES (a bigger file is
    refused, permanently, without reading it all); a missing one is InputNotFound like a missing song."""
    client, bucket = s3server.client(), s3server.bucket
    song = f"renderer-tests/{run_prefix}/in/song.wav"
    client.upload_file(str(click120[0]), bucket, song)
    lyrics = {"ok.lrc": b"[00:01.00]Hello from the bucket\n", "big.lrc": b"[00:01.00]x\n" * (LYRICS_MAX_BYTES // 12 + 1)}
    for name, body in lyrics.items():
        client.put_object(Bucket=bucket, Key=f"renderer-tests/{run_prefix}/in/{name}", Body=body)
    out = f"s3://{bucket}/renderer-tests/{run_prefix}/out/"

    def render(name: str) -> subprocess.CompletedProcess[str]:
        return run_render([f"s3://{bucket}/{song}", "-o", out, "--width", "160", "--height", "90", "--segment-seconds",
                           "4", "--lyrics", f"s3://{bucket}/renderer-tests/{run_prefix}/in/{name}", "-q"],
                          env=s3server.env())  # fmt: skip
    res = render("ok.lrc")
    assert res.returncode == 0, res.stderr
    local = tmp_path / "v.mp4"
    client.download_file(bucket, f"renderer-tests/{run_prefix}/out/video.mp4", str(local))
    assert count_frames(local) == 300
    res = render("big.lrc")
    assert res.returncode == EXIT_BAD_LYRICS and "is larger than 128 KiB" in res.stderr, res.stderr
    res = render("missing.lrc")
    assert res.returncode == EXIT_INPUT_NOT_FOUND and "lyrics file" in res.stderr, res.stderr
