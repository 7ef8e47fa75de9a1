"""S3 object URLs and the S3 client, defined once for the API, the operator and the renderer.

All three name the same objects as `s3://bucket/key` (spec.audio.url, spec.output.url, status.output.*Url)
and talk to the same store, so they must agree on what such a URL means and on how a client reaches the
store (addressing style, signature, retries, timeouts); three copies had drifted apart on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

AddressingStyle = Literal["auto", "path", "virtual"]
ChecksumPolicy = Literal["when_supported", "when_required"]


class S3UrlError(ValueError):
    """Not an `s3://bucket[/key]` URL. A ValueError, so callers that treat any bad value alike need not know it."""


@dataclass(frozen=True)
class S3Url:
    """An object in a bucket, or a prefix of objects (an empty key, or one ending in "/"): `s3://bucket/key`."""

    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, url: str) -> S3Url:
        """`s3://bucket/key` → S3Url(bucket, key); S3UrlError for another scheme or a missing bucket.

        The key is everything after the bucket's slash, verbatim: S3 keys may contain `?`, `#`, `%` and
        repeated slashes, which a generic URL parser would cut off or decode into another object's name.
        """
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "s3":
            raise S3UrlError(f"not an s3:// URL: {url}")
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise S3UrlError(f"s3 URL without bucket: {url}")
        return cls(bucket, key)

    @property
    def dir_key(self) -> str:
        """The key as a folder-like prefix: "a/b" → "a/b/"; "a/b/" and "" (the whole bucket) unchanged."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"

    def join(self, name: str) -> S3Url:
        """The object `name` under this prefix: s3://b/p joined with video.mp4 is s3://b/p/video.mp4."""
        return S3Url(self.bucket, self.dir_key + name)


def s3_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    addressing_style: AddressingStyle | None = None,
    retries: int = 3,
    connect_timeout: float = 10,
    read_timeout: float = 60,
    max_pool_connections: int = 10,
    checksums: ChecksumPolicy | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Any:
    """A boto3 S3 client; every process that talks to S3 builds its clients here.

    endpoint_url: None or "" means AWS (or whatever AWS_ENDPOINT_URL* boto3 itself finds).
    region: None or "" leaves it to boto3 (AWS_DEFAULT_REGION, ~/.aws/config).
    addressing_style: None means "path" with an explicit endpoint, since self-hosted stores (SeaweedFS at
        127.0.0.1:8333 or seaweedfs.svc:8333, MinIO) have no per-bucket DNS names; else "auto".
    retries: retries after the first attempt, in botocore's "standard" mode (backoff with jitter; throttling
        and transient errors are retried).
    checksums: "when_required" for stores that refuse the flexible-checksum trailers newer botocore sends
        by default (not every SeaweedFS, MinIO or R2 version accepts them); None keeps botocore's default.
    access_key_id, secret_access_key: both or neither; neither uses boto3's default credential chain.
    """
    if bool(access_key_id) != bool(secret_access_key):
        raise ValueError("give both access_key_id and secret_access_key, or neither")
    import boto3  # here, not at the top: boto3 takes a good fraction of a second to import
    from botocore.config import Config

    checksum_options = (
        {"request_checksum_calculation": checksums, "response_checksum_validation": checksums} if checksums else {}
    )
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        **checksum_options,
    )
    credentials = (
        {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key} if access_key_id else {}
    )
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config, **credentials)
