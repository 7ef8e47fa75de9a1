"""The local S3 server is a real S3 API: boto3 streams a 100 MB object both ways."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import S3Server

STREAM = textwrap.dedent("""
    import hashlib, io, json, resource, sys, boto3
    from boto3.s3.transfer import TransferConfig
    endpoint, key, secret, bucket = sys.argv[1:5]
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")
    SIZE, CHUNK = 100 * 1024 * 1024, 1024 * 1024

    class Generated(io.RawIOBase):
        # A file-like source that produces bytes on demand: nothing is held in memory.
        def __init__(self):
            self.pos = 0
            self.sha = hashlib.sha256()
        def readable(self):
            return True
        def read(self, n=-1):
            n = min(CHUNK if n is None or n < 0 else n, SIZE - self.pos)
            block = bytes([(self.pos // CHUNK) % 251]) * n
            self.pos += n
            self.sha.update(block)
            return block

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    src = Generated()
    cfg = TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=2)
    s3.upload_fileobj(src, bucket, "big/object.bin", Config=cfg)
    head = s3.head_object(Bucket=bucket, Key="big/object.bin")
    body = s3.get_object(Bucket=bucket, Key="big/object.bin")["Body"]
    got = hashlib.sha256()
    for chunk in body.iter_chunks(CHUNK):
        got.update(chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": head["ContentLength"], "same": got.hexdigest() == src.sha.hexdigest(),
                      "rss_growth_mb": (peak - base) / 1024}))
""")


def test_boto3_streams_100mb_object(s3: S3Server) -> None:
    out = subprocess.run([sys.executable, "-c", STREAM, s3.endpoint, s3.access_key, s3.secret_key, s3.bucket],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["size"] == 100 * 1024 * 1024
    assert result["same"], "downloaded bytes differ from uploaded"
    # Streaming holds a few multipart chunks at a time, never the whole 100 MB.
    assert result["rss_growth_mb"] < 60, result
