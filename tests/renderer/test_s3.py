"""s3:// input and output against the local S3 server (the session `s3` fixture in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vibecraft_common.resource import EXIT_INPUT_NOT_FOUND, EXIT_UPLOAD_FAILED, PERMANENT_EXIT_CODES

from .helpers import count_frames, run_render

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3server(request: pytest.FixtureRequest) -> Any:
    try:
        return request.getfixturevalue("s3")
    except pytest.FixtureLookupError:
        pytest.skip("no `s3` fixture (tests/conftest.py) in this checkout")


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
    assert keys == {prefix + name for name in ("video.mp4", "thumbnail.jpg", "analysis.json")}, keys
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


def test_s3_resume_after_kill(s3server: Any, run_prefix: str, tmp_path: Path) -> None:
    """A fresh pod (new work dir) resumes from checkpoints stored in the bucket."""
    import os
    import subprocess

    from .helpers import RENDER, kill_when, write_click_track

    client = s3server.client()
    audio = tmp_path / "song.wav"
    write_click_track(audio, 120.0, 12.0)
    out = f"renderer-tests/{run_prefix}/resume/"
    args = [str(audio), "-o", f"s3://{s3server.bucket}/{out}", "--width", "320", "--height", "180",
            "--segment-seconds", "2", "-q"]  # fmt: skip
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
