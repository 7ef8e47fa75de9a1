"""S3 I/O: reading a finished render's outputs back (tolerant), and cleaning a deleted render's prefix."""

import json
from collections.abc import Mapping
from typing import Any

from vibecraft_common.s3 import S3Url, S3UrlError, s3_client
from vibecraft_common.status import ANALYSIS_NAME, VIDEO_NAME, summary_of

from vibecraft_operator.errors import OutputsUnavailable
from vibecraft_operator.reconcile import Cleanup, Outputs, default_outputs, output_prefix
from vibecraft_operator.settings import Settings

MAX_ANALYSIS_BYTES = 4 * 1024 * 1024


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key)."""
    try:
        loc = S3Url.parse(url)
    except S3UrlError as exc:
        raise OutputsUnavailable(str(exc)) from None
    return loc.bucket, loc.key


def _client(settings: Settings) -> Any:
    """The operator's S3 client: few retries and short timeouts (it must not hold up a reconcile)."""
    timeout = settings.outputs_timeout_seconds
    return s3_client(settings.s3_endpoint, settings.s3_region, retries=2, connect_timeout=timeout, read_timeout=timeout)


def fetch_outputs(spec: Mapping[str, Any], settings: Settings) -> Outputs:
    """The outputs of a successful render; whatever S3 refuses becomes a warning, never an error."""
    from botocore.exceptions import BotoCoreError, ClientError  # here: boto3 is slow to import, needed on success only

    base = default_outputs(spec)
    output: dict[str, Any] = dict(base.output)
    if not settings.fetch_outputs:
        return base
    try:
        client = _client(settings)
        bucket, key = split_s3_url(f"{output_prefix(spec)}/{VIDEO_NAME}")
        head = client.head_object(Bucket=bucket, Key=key)
        output["sizeBytes"] = int(head.get("ContentLength") or 0)
        written = head.get("LastModified")
        bucket, key = split_s3_url(str(output["analysisUrl"]))
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_ANALYSIS_BYTES)
        doc = json.loads(body)
        if not isinstance(doc, Mapping):
            raise OutputsUnavailable(f"{ANALYSIS_NAME} is not a JSON object")
        analysis, duration = summary_of(doc)
        if duration is not None:
            output["durationSeconds"] = round(duration, 3)
        return Outputs(output, analysis or None, video_written=written)
    except (BotoCoreError, ClientError, OutputsUnavailable, ValueError) as exc:
        return Outputs(output, None, f"could not read the render's outputs from S3: {exc}")


def delete_objects(cleanup: Cleanup, settings: Settings) -> int:
    """Delete everything under `cleanup.prefixes` (listed page by page, deleted 1000 keys a request) and
    `cleanup.objects`, and abort the multipart uploads begun under `cleanup.uploads`; how many keys and
    uploads that was.

    Raises botocore's errors (the caller retries, then gives up with a warning).
    """
    client = _client(settings)
    deleted = 0
    for url in cleanup.prefixes:
        bucket, prefix = split_s3_url(url)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents") or []]
            if keys:
                deleted += _delete_batch(client, bucket, keys)
    for url in cleanup.objects:
        bucket, key = split_s3_url(url)
        client.delete_object(Bucket=bucket, Key=key)  # a missing key is not an error
        deleted += 1
    for url in cleanup.uploads:
        bucket, prefix = split_s3_url(url)
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads") or []:
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                deleted += 1
    return deleted


def _delete_batch(client: Any, bucket: str, keys: list[dict[str, str]]) -> int:
    """DeleteObjects for up to 1000 keys; a key the server could not delete is an error (retried)."""
    resp = client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    errors = [e for e in resp.get("Errors") or [] if e.get("Code") != "NoSuchKey"]
    if errors:
        first = errors[0]
        raise OSError(f"S3 did not delete {len(errors)} of {len(keys)} keys "
                      f"({first.get('Key')}: {first.get('Code')} {first.get('Message')})")
    return len(keys)
