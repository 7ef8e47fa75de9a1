"""Reading inputs from and writing outputs to s3://, http(s)://, file:// URLs or plain paths.

Writes are atomic from a reader's point of view: S3 objects are uploaded under a temporary key,
copied to the final key and the temporary deleted; local files are written beside the target
and renamed. So a crashed or killed render never leaves a half-written object at a final key.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlparse

from .errors import DownloadError, RenderError, UploadError

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES: Final = 4 * 1024**3  # a 2 h WAV at 48 kHz stereo is ~1.4 GB; anything bigger is not a song
SINGLE_COPY_LIMIT: Final = 5 * 1024**3  # S3 CopyObject limit; bigger objects need a multipart copy
HTTP_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class S3Url:
    """s3://bucket/key"""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class HttpUrl:
    """http(s)://... (input only)"""

    url: str

    def __str__(self) -> str:
        return self.url


Location = S3Url | HttpUrl | Path


def parse_url(url: str) -> Location:
    """Classify a URL or plain path."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        if not parsed.netloc:
            raise RenderError(f"s3 URL without bucket: {url}")
        return S3Url(parsed.netloc, parsed.path.lstrip("/"))
    if scheme in ("http", "https"):
        return HttpUrl(url)
    if scheme == "file":
        return Path(unquote(parsed.path))
    if scheme and len(scheme) > 1:  # one letter would be a Windows drive
        raise RenderError(f"unsupported URL scheme {scheme!r} in {url}")
    return Path(url).expanduser()


def redact(url: str) -> str:
    """A URL fit for logs and status: no query string (presigned URLs carry credentials there)."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        host = parsed.hostname or ""
        return parsed._replace(query="", fragment="", netloc=host + (f":{parsed.port}" if parsed.port else "")).geturl()
    return url


def join(prefix: str, name: str) -> str:
    """Append a relative name to a prefix URL or directory path."""
    loc = parse_url(prefix)
    if isinstance(loc, S3Url):
        base = loc.key if (loc.key.endswith("/") or not loc.key) else loc.key + "/"
        return str(S3Url(loc.bucket, base + name))
    if isinstance(loc, HttpUrl):
        raise RenderError("http(s) URLs cannot be written to")
    return str(loc / name)


@functools.cache
def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS_* env vars (AWS_ENDPOINT_URL for SeaweedFS/MinIO)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(
        region_name=region,
        signature_version="s3v4",
        # Self-hosted S3 endpoints (127.0.0.1:8333, seaweedfs.svc:8333) have no per-bucket DNS names.
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def _s3_error_text(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        if code in ("404", "NoSuchKey", "NotFound"):
            return "object not found"
        if code == "NoSuchBucket":
            return "bucket does not exist"
        return f"{code}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _bucket_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchBucket"


# ---------------------------------------------------------------- reading


def fetch(url: str, work_dir: Path) -> Path:
    """Make the input available as a local file; plain paths are used in place."""
    loc = parse_url(url)
    if isinstance(loc, Path):
        if not loc.is_file():
            raise DownloadError(f"input file not found: {loc}")
        return loc
    name = Path(urlparse(url).path).name or "input"
    dest = work_dir / f"input-{uuid.uuid4().hex[:8]}-{name}"
    if isinstance(loc, S3Url):
        _s3_download(loc, dest, DownloadError)
    else:
        _http_download(loc.url, dest)
    return dest


def _s3_download(loc: S3Url, dest: Path, error: type[RenderError]) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    try:
        head = client.head_object(Bucket=loc.bucket, Key=loc.key)
        if int(head.get("ContentLength", 0)) > MAX_DOWNLOAD_BYTES:
            raise error(f"{loc} is larger than {MAX_DOWNLOAD_BYTES // 1024**3} GiB")
        client.download_file(loc.bucket, loc.key, str(dest))
    except ClientError as exc:
        if not _bucket_missing(exc) and exc.response.get("Error", {}).get("Code") in ("404", "NotFound"):
            # HEAD cannot tell a missing key from a missing bucket: ask the bucket.
            try:
                client.head_bucket(Bucket=loc.bucket)
            except ClientError:
                raise error(f"cannot read {loc}: bucket {loc.bucket!r} does not exist") from None
        raise error(f"cannot read {loc}: {_s3_error_text(exc)}") from None
    except BotoCoreError as exc:
        raise error(f"cannot read {loc}: {_s3_error_text(exc)}") from None


def _http_download(url: str, dest: Path) -> None:
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=HTTP_TIMEOUT_S) as resp:
            if resp.status_code >= 400:
                raise DownloadError(f"cannot download {redact(url)}: HTTP {resp.status_code}")
            size = 0
            with dest.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise DownloadError(f"{redact(url)} is larger than {MAX_DOWNLOAD_BYTES // 1024**3} GiB")
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise DownloadError(f"cannot download {redact(url)}: {type(exc).__name__}: {str(exc)[:200]}") from None


def exists(url: str) -> bool:
    """Whether an output object/file exists (used for checkpoints and caches)."""
    loc = parse_url(url)
    if isinstance(loc, Path):
        return loc.is_file()
    if isinstance(loc, HttpUrl):
        raise RenderError("http(s) URLs are input only")
    from botocore.exceptions import ClientError

    try:
        s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
    except ClientError:
        return False
    return True


def get_file(url: str, dest: Path) -> None:
    """Copy an object we wrote earlier (checkpoint, cache entry) to a local file."""
    loc = parse_url(url)
    if isinstance(loc, Path):
        shutil.copyfile(loc, dest)
    elif isinstance(loc, S3Url):
        _s3_download(loc, dest, UploadError)
    else:
        raise RenderError("http(s) URLs are input only")


def get_bytes(url: str) -> bytes | None:
    """Small object contents, or None when it does not exist."""
    loc = parse_url(url)
    if isinstance(loc, Path):
        return loc.read_bytes() if loc.is_file() else None
    if isinstance(loc, HttpUrl):
        raise RenderError("http(s) URLs are input only")
    from botocore.exceptions import ClientError

    try:
        obj = s3_client().get_object(Bucket=loc.bucket, Key=loc.key)
    except ClientError:
        return None
    data: bytes = obj["Body"].read()
    return data


# ---------------------------------------------------------------- writing


def check_writable(prefix_url: str) -> None:
    """Fail fast, before minutes of rendering, when the output location cannot be written."""
    loc = parse_url(prefix_url)
    if isinstance(loc, HttpUrl):
        raise UploadError(f"output must be s3://, file:// or a path, not {prefix_url}")
    if isinstance(loc, Path):
        try:
            loc.mkdir(parents=True, exist_ok=True)
            probe = loc / f".write-probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UploadError(f"cannot write to {loc}: {exc.strerror or exc}") from None
        return
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    prefix = loc.key if (loc.key.endswith("/") or not loc.key) else loc.key + "/"
    probe_key = f"{prefix}.write-probe-{uuid.uuid4().hex[:8]}"
    try:
        client.head_bucket(Bucket=loc.bucket)
        # HEAD only proves the bucket exists; a tiny object proves we may write there.
        client.put_object(Bucket=loc.bucket, Key=probe_key, Body=b"")
        client.delete_object(Bucket=loc.bucket, Key=probe_key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise UploadError(f"cannot write to {prefix_url}: bucket {loc.bucket!r} does not exist") from None
        raise UploadError(f"cannot write to {prefix_url}: {_s3_error_text(exc)}") from None
    except BotoCoreError as exc:
        raise UploadError(f"cannot write to {prefix_url}: {_s3_error_text(exc)}") from None


def put_file(src: Path, url: str, content_type: str | None = None, move: bool = False) -> None:
    """Atomically publish a local file at url (temp key + copy + delete on S3, rename locally)."""
    loc = parse_url(url)
    if isinstance(loc, HttpUrl):
        raise UploadError("http(s) URLs are input only")
    if isinstance(loc, Path):
        try:
            loc.parent.mkdir(parents=True, exist_ok=True)
            tmp = loc.with_name(f".{loc.name}.tmp-{uuid.uuid4().hex[:8]}")
            if move:
                try:
                    os.replace(src, tmp)
                except OSError:  # other filesystem
                    shutil.copyfile(src, tmp)
            else:
                shutil.copyfile(src, tmp)
            os.replace(tmp, loc)
        except OSError as exc:
            raise UploadError(f"cannot write {loc}: {exc.strerror or exc}") from None
        return
    _s3_put(src, loc, content_type)


def _s3_put(src: Path, loc: S3Url, content_type: str | None) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client()
    tmp_key = f"{loc.key}.tmp-{uuid.uuid4().hex}"
    extra = {"ContentType": content_type} if content_type else {}
    try:
        client.upload_file(str(src), loc.bucket, tmp_key, ExtraArgs=extra or None)  # multipart when big
        source = {"Bucket": loc.bucket, "Key": tmp_key}
        # The copy keeps the temporary object's metadata (ContentType included).
        if src.stat().st_size < SINGLE_COPY_LIMIT:
            client.copy_object(Bucket=loc.bucket, Key=loc.key, CopySource=source)
        else:
            client.copy(source, loc.bucket, loc.key)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise UploadError(f"cannot upload {loc}: {_s3_error_text(exc)}") from None
    finally:
        try:
            client.delete_object(Bucket=loc.bucket, Key=tmp_key)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete temporary object s3://%s/%s: %s", loc.bucket, tmp_key, exc)


def put_bytes(data: bytes, url: str, work_dir: Path, content_type: str | None = None) -> None:
    """Atomically publish small contents (JSON, cache entries)."""
    tmp = work_dir / f"put-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(data)
    try:
        put_file(tmp, url, content_type=content_type, move=True)
    finally:
        tmp.unlink(missing_ok=True)


def delete_prefix(prefix_url: str) -> None:
    """Remove a checkpoint prefix after success; failures only cost storage, so they are logged."""
    loc = parse_url(prefix_url)
    try:
        if isinstance(loc, Path):
            shutil.rmtree(loc, ignore_errors=True)
            return
        if isinstance(loc, HttpUrl):
            return
        client = s3_client()
        prefix = loc.key if loc.key.endswith("/") else loc.key + "/"
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=loc.bucket, Delete={"Objects": keys, "Quiet": True})
    except Exception as exc:  # cleanup must never fail a finished render
        log.warning("could not delete %s: %s", prefix_url, exc)


def list_names(prefix_url: str) -> set[str]:
    """Names directly under a prefix (checkpoint discovery)."""
    loc = parse_url(prefix_url)
    if isinstance(loc, Path):
        return {p.name for p in loc.iterdir() if p.is_file()} if loc.is_dir() else set()
    if isinstance(loc, HttpUrl):
        return set()
    from botocore.exceptions import BotoCoreError, ClientError

    prefix = loc.key if loc.key.endswith("/") else loc.key + "/"
    names: set[str] = set()
    try:
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=prefix, Delimiter="/"):
            names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
    except (ClientError, BotoCoreError) as exc:
        raise UploadError(f"cannot list {prefix_url}: {_s3_error_text(exc)}") from None
    return names
