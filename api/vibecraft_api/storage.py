"""S3: presigned URLs for browsers, and the few object calls the API makes itself (off the event loop)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
from botocore.exceptions import BotoCoreError, ClientError
from vibecraft_common.s3 import S3Url, S3UrlError, s3_client

from vibecraft_api.errors import Unavailable
from vibecraft_api.settings import Settings

T = TypeVar("T")
CLIENT_ERRORS = frozenset({400, 404, 409, 416})


def s3_url(bucket: str, key: str) -> str:
    return str(S3Url(bucket, key))


def split_s3_url(url: str) -> tuple[str, str] | None:
    """`s3://bucket/key` → (bucket, key); None for anything else, a bucket or prefix without an object included."""
    try:
        loc = S3Url.parse(url)
    except S3UrlError:
        return None
    return (loc.bucket, loc.key) if loc.key else None


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class Storage:
    """One bucket. Blocking boto3 calls run in worker threads; presigning is local and runs inline."""

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        self.expiry = settings.presign_expiry_seconds
        secret = settings.s3_secret_access_key
        client = functools.partial(
            s3_client, region=settings.s3_region, addressing_style=settings.s3_addressing_style, retries=3,
            connect_timeout=5, read_timeout=60, max_pool_connections=32, checksums="when_required",
            access_key_id=settings.s3_access_key_id, secret_access_key=secret.get_secret_value() if secret else None)
        self.client: Any = client(settings.s3_endpoint)
        # Presigned URLs embed the host they were signed for: sign with the endpoint browsers reach.
        public = settings.s3_public_endpoint
        self.presigner: Any = client(public) if public else self.client

    async def _call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, Bucket=self.bucket, **kwargs))
        except ClientError as exc:
            # The caller's problem (missing object, bad part list): the caller decides what the client sees.
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in CLIENT_ERRORS:
                raise
            raise Unavailable(f"Storage refused the request ({error_code(exc) or 'error'}).") from exc
        except BotoCoreError as exc:
            raise Unavailable("Storage is unreachable; try again shortly.") from exc

    # Presigning (no network).
    # Content-Length is a signed header (SigV4): the storage server refuses a body of any other size.
    def presign_put(self, key: str, content_type: str, size: int) -> str:
        params = {"Bucket": self.bucket, "Key": key, "ContentType": content_type, "ContentLength": size}
        return str(self.presigner.generate_presigned_url("put_object", Params=params, ExpiresIn=self.expiry,
                                                         HttpMethod="PUT"))

    def presign_part(self, key: str, upload_id: str, part: int, size: int) -> str:
        params = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": part, "ContentLength": size}
        return str(self.presigner.generate_presigned_url("upload_part", Params=params, ExpiresIn=self.expiry,
                                                         HttpMethod="PUT"))

    def presign_get(self, key: str, *, filename: str | None = None) -> str:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(self.presigner.generate_presigned_url("get_object", Params=params, ExpiresIn=self.expiry))

    # Object calls.
    async def ping(self) -> None:
        await self._call(self.client.head_bucket)

    async def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when it does not exist."""
        try:
            return dict(await self._call(self.client.head_object, Key=key))
        except ClientError:
            return None

    async def read_head(self, key: str, size: int) -> bytes:
        resp = await self._call(self.client.get_object, Key=key, Range=f"bytes=0-{size - 1}")
        body = resp["Body"]
        try:
            return bytes(await anyio.to_thread.run_sync(body.read))
        finally:
            body.close()

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call(self.client.put_object, Key=key, Body=data, ContentType=content_type)

    async def create_multipart(self, key: str, content_type: str) -> str:
        resp = await self._call(self.client.create_multipart_upload, Key=key, ContentType=content_type)
        return str(resp["UploadId"])

    async def upload_part(self, key: str, upload_id: str, part: int, data: bytes) -> str:
        resp = await self._call(self.client.upload_part, Key=key, UploadId=upload_id, PartNumber=part, Body=data)
        return str(resp["ETag"])

    async def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        await self._call(self.client.complete_multipart_upload, Key=key, UploadId=upload_id,
                         MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]})

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call(self.client.abort_multipart_upload, Key=key, UploadId=upload_id)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix (page by page) and abort the multipart uploads begun under it;
        how many objects and uploads that was."""
        return await self.delete_older(prefix) + await self.abort_uploads(prefix)

    async def delete_older(self, prefix: str, before: datetime | None = None) -> int:
        """Delete the objects under prefix (last written before `before`, when given), page by page; how many."""
        gone = 0
        token: dict[str, str] = {}
        while True:
            resp = await self._call(self.client.list_objects_v2, Prefix=prefix, MaxKeys=1000, **token)
            keys = [{"Key": o["Key"]} for o in resp.get("Contents", []) if before is None or o["LastModified"] < before]
            if keys:
                await self._call(self.client.delete_objects, Delete={"Objects": keys, "Quiet": True})
                gone += len(keys)
            if not resp.get("IsTruncated"):
                return gone
            token = {"ContinuationToken": str(resp["NextContinuationToken"])}

    async def abort_uploads(self, prefix: str, *, started_before: datetime | None = None) -> int:
        """Abort the multipart uploads begun under prefix (before `started_before`, when given); how many."""
        aborted = 0
        markers: dict[str, str] = {}
        while True:
            resp = await self._call(self.client.list_multipart_uploads, Prefix=prefix, **markers)
            for upload in resp.get("Uploads", []):
                if started_before is None or upload["Initiated"] < started_before:
                    try:
                        await self.abort_multipart(upload["Key"], upload["UploadId"])
                        aborted += 1
                    except ClientError:  # completed or aborted meanwhile
                        pass
            if not resp.get("IsTruncated"):
                return aborted
            markers = {"KeyMarker": str(resp.get("NextKeyMarker") or ""),
                       "UploadIdMarker": str(resp.get("NextUploadIdMarker") or "")}
