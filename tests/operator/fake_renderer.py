"""A stand-in for vibecraft-render in end-to-end tests: behaves as spec.style.prompt says.

Scenarios (comma-separated, `@N` limits a step to attempt N):
  oom@1        allocate far beyond the memory limit (the cgroup OOM-kills us) on attempt 1
  fail:11@1    exit 11 with a termination message on attempt 1 (any attempt without @)
  sleep:30     sleep 30 seconds
  predict:3    as the replicate backend creating 3 predictions: report them in status.progress, or fail as
               ReplicateBudgetExceeded (exit 16, nothing created) when the Job allows fewer
  write:30     for 30 seconds, as a render does: segments written one after another under
               spec.output.url, and a multipart upload of video.mp4 begun and left open
  ok           upload video.mp4, thumbnail.jpg and analysis.json to spec.output.url, exit 0
"""

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

# As vibecraft-render does: in a container the process is PID 1, which the kernel does not kill on a
# signal it has no handler for, so without this a deleted Job's pod would wait out its grace period.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

spec = json.loads(os.environ["VIBECRAFT_SPEC_JSON"])
attempt = int(os.environ["VIBECRAFT_ATTEMPT"])
assert sys.argv[1:] == ["--from-env"], sys.argv


def target() -> tuple[Any, str, str]:
    """An S3 client, the bucket and the key prefix of spec.output.url."""
    import boto3

    prefix = spec["output"]["url"].removeprefix("s3://").rstrip("/")
    bucket, _, key = prefix.partition("/")
    return boto3.client("s3"), bucket, key


def write(seconds: float) -> None:
    s3, bucket, key = target()
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=f"{key}/video.mp4")["UploadId"]
    s3.upload_part(Bucket=bucket, Key=f"{key}/video.mp4", UploadId=upload_id, PartNumber=1, Body=b"\0" * 1024)
    end, index = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        s3.put_object(Bucket=bucket, Key=f"{key}/segments/fake/seg-{index:05d}.mp4", Body=b"segment")
        index += 1
        time.sleep(0.2)


def upload() -> None:
    s3, bucket, key = target()
    s3.put_object(Bucket=bucket, Key=f"{key}/video.mp4", Body=b"\0" * 4096)
    s3.put_object(Bucket=bucket, Key=f"{key}/thumbnail.jpg", Body=b"jpg")
    analysis = {"duration": 12.5, "tempo": 128.0, "beats": [0.5, 1.0, 1.5],
                "sections": [{"start": 0.0, "end": 12.5, "label": "A"}]}
    s3.put_object(Bucket=bucket, Key=f"{key}/analysis.json", Body=json.dumps(analysis).encode())


for step in spec["style"].get("prompt", "ok").split(","):
    action, _, only = step.partition("@")
    if only and int(only) != attempt:
        continue
    name, _, arg = action.partition(":")
    if name == "oom":
        hog = [bytearray(64 * 1024**2) for _ in range(16)]  # zero-filled, so really committed
        time.sleep(30)  # not killed within a GiB: the test will notice
    elif name == "fail":
        Path(os.environ.get("VIBECRAFT_TERMINATION_LOG", "/dev/termination-log")).write_text(
            f"fake renderer failed on attempt {attempt}\n")
        sys.exit(int(arg))
    elif name == "sleep":
        time.sleep(float(arg))
    elif name == "predict":
        from vibecraft_common.resource import ENV_REPLICATE_MAX_PREDICTIONS

        wanted, allowed = int(arg), int(os.environ.get(ENV_REPLICATE_MAX_PREDICTIONS, arg))
        if wanted > allowed:
            Path(os.environ.get("VIBECRAFT_TERMINATION_LOG", "/dev/termination-log")).write_text(
                f"this render needs {wanted} new Replicate images, but its namespace's monthly prediction "
                f"budget allows {allowed} more\n")
            sys.exit(16)
        from vibecraft_renderer.progress import KubeStatusSink, Snapshot  # what the real renderer reports with

        sink = KubeStatusSink(os.environ["VIBECRAFT_MUSICVIDEO_NAME"], os.environ["VIBECRAFT_MUSICVIDEO_NAMESPACE"])
        sink.emit(Snapshot("generating", 20.0, None, None, None, f"image {wanted}/{wanted}", wanted), important=True)
        sink.close()
        assert sink.sent == 1, "the progress patch was refused"
    elif name == "write":
        write(float(arg))
    elif name == "ok":
        upload()
sys.exit(0)
