"""A 500 MB upload through the streaming endpoint keeps the API process under 150 MB RSS."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from http import HTTPStatus

import httpx
import pytest

from tests.api.conftest import ApiSystem, TenantHandle
from tests.api.utils import MiB, audio_stream, vm

pytestmark = [pytest.mark.cluster, pytest.mark.s3]

UPLOAD_BYTES = 500 * MiB
RSS_LIMIT_KB = 150 * 1024


def test_500mb_streamed_upload_stays_under_150mb_rss(api_process: tuple[subprocess.Popen[bytes], str],
                                                     new_tenant: Callable[..., TenantHandle],
                                                     api_system: ApiSystem) -> None:
    proc, url = api_process
    t = new_tenant()
    headers = {"Authorization": f"Bearer {t.key}", "Content-Type": "audio/mpeg"}
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30, read=300)) as client:
        assert client.get("/v1/videos").status_code == HTTPStatus.OK  # warm: keys loaded, clients built
        before = vm(proc.pid, "VmRSS")
        started = time.monotonic()
        resp = client.post("/v1/uploads/file", params={"filename": "long-mix.mp3"}, content=audio_stream(UPLOAD_BYTES))
        seconds = time.monotonic() - started
    assert resp.status_code == HTTPStatus.CREATED, resp.text
    peak = vm(proc.pid, "VmHWM")
    print(f"\n500 MiB streamed upload: {UPLOAD_BYTES / MiB / seconds:.0f} MiB/s, API RSS before {before / 1024:.0f} MiB, "
          f"peak (VmHWM) {peak / 1024:.0f} MiB (limit {RSS_LIMIT_KB / 1024:.0f} MiB)")
    assert peak < RSS_LIMIT_KB
    key = resp.json()["key"]
    assert resp.json()["sizeBytes"] == UPLOAD_BYTES
    s3 = api_system.s3.client()
    try:
        assert s3.head_object(Bucket=api_system.s3.bucket, Key=key)["ContentLength"] == UPLOAD_BYTES
        assert s3.get_object(Bucket=api_system.s3.bucket, Key=key, Range="bytes=0-3")["Body"].read() == b"\xff\xfb\x90\x64"
    finally:
        s3.delete_object(Bucket=api_system.s3.bucket, Key=key)
