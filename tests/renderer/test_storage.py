"""URL handling, atomic local publishing, and the memory guard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from vibecraft_common.resource import EXIT_DOWNLOAD_FAILED, EXIT_INPUT_NOT_FOUND, PERMANENT_EXIT_CODES
from vibecraft_renderer import storage
from vibecraft_renderer.errors import DownloadError, InputNotFoundError, MemoryGuardError, UploadError
from vibecraft_renderer.memguard import MemoryGuard, rss_bytes


@pytest.mark.parametrize(
    ("url", "kind"),
    [("s3://b/k/x.ogg", storage.S3Url), ("https://h/x.mp3", storage.HttpUrl), ("file:///a/b.wav", Path),
     ("rel/x.wav", Path), ("/abs/x.wav", Path)],
)  # fmt: skip
def test_parse(url: str, kind: type) -> None:
    assert isinstance(storage.parse_url(url), kind)


def test_join_and_redact() -> None:
    assert storage.join("s3://b/p", "video.mp4") == "s3://b/p/video.mp4"
    assert storage.join("s3://b/p/", "video.mp4") == "s3://b/p/video.mp4"
    assert storage.join("s3://b", "video.mp4") == "s3://b/video.mp4"
    assert storage.redact("https://user:pw@host:8443/a.mp3?X-Amz-Signature=secret") == "https://host:8443/a.mp3"
    assert storage.redact("s3://b/k") == "s3://b/k"


def test_put_file_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    dest = tmp_path / "out" / "deep" / "video.mp4"
    storage.put_file(src, str(dest))
    assert dest.read_bytes() == b"x" * 1000 and src.exists()
    storage.put_file(src, str(dest), move=True)
    assert not src.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["video.mp4"]


def test_fetch_missing_file_and_unwritable_output(tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        storage.fetch(str(tmp_path / "nope.ogg"), tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(UploadError):
        storage.check_writable(str(tmp_path / "f" / "sub"))
    with pytest.raises(UploadError):
        storage.check_writable("https://example.com/out/")


def test_memory_guard_trips_over_the_limit() -> None:
    assert rss_bytes() > 0
    MemoryGuard(limit_mb=64 * 1024).check(force=True)  # far above: fine
    with pytest.raises(MemoryGuardError, match="memory guard"):
        MemoryGuard(limit_mb=1).check(force=True)
    MemoryGuard(limit_mb=None).check(force=True)  # no cgroup limit here: no-op or fine


def test_memory_guard_counts_children_nobody_named() -> None:
    """A background ffmpeg (the soundtrack encoder) counts without being passed in."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = b'x' * (300 << 20); print(flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()  # the 300 MB are resident now
        own_mb = rss_bytes() / (1 << 20)
        limit_mb = (own_mb + 150) / 0.9  # room for us, not for us + the child
        with pytest.raises(MemoryGuardError, match="memory guard"):
            MemoryGuard(limit_mb=limit_mb).check(force=True)
    finally:
        child.kill()
        child.wait()


def _stubbed_s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    """storage's S3 client, with botocore's Stubber in front of it (no server)."""
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    monkeypatch.setattr(storage, "_client", lambda: client)
    return Stubber(client)


def test_a_missing_s3_object_is_a_permanent_input_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A key that is not there will not be there on a retry: exit 15 (permanent), not 11 (retried)."""
    stub = _stubbed_s3(monkeypatch)
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    stub.add_response("head_bucket", {}, {"Bucket": "songs"})
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    stub.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    stub.add_client_error("head_object", service_error_code="403", service_message="Forbidden", http_status_code=403)
    with stub:
        with pytest.raises(InputNotFoundError, match=r"^s3://songs/a\.ogg not found \(no such object\)$") as missing:
            storage.fetch("s3://songs/a.ogg", tmp_path)
        assert missing.value.exit_code == EXIT_INPUT_NOT_FOUND in PERMANENT_EXIT_CODES
        with pytest.raises(InputNotFoundError, match="bucket 'songs' does not exist"):
            storage.fetch("s3://songs/a.ogg", tmp_path)
        with pytest.raises(DownloadError, match="403") as denied:  # may be fixed without touching the spec
            storage.fetch("s3://songs/a.ogg", tmp_path)
        assert denied.value.exit_code == EXIT_DOWNLOAD_FAILED


def test_sweeping_a_files_temporaries_leaves_other_files_alone(tmp_path: Path) -> None:
    """What an interrupted put_file of out.mp4 left goes; another render's temporary in the same directory
    (a.mp4, still uploading) and finished files stay."""
    (tmp_path / "out.mp4").write_bytes(b"done")
    (tmp_path / ".out.mp4.tmp-1a2b3c4d").write_bytes(b"half")
    (tmp_path / ".a.mp4.tmp-99999999").write_bytes(b"theirs")
    assert storage.sweep_temporaries(str(tmp_path / "out.mp4"), str(tmp_path / "missing.jpg")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.mp4.tmp-99999999", "out.mp4"]
