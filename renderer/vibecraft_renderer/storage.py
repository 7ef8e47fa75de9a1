"""Reading inputs from and writing outputs to s3://, http(s)://, file:// URLs or plain paths.

Writes are atomic from a reader's point of view: S3 objects are uploaded under a temporary key,
copied to the final key and the temporary deleted; local files are written beside the target
and renamed. So a crashed or killed render never leaves a half-written object at a final key.

Each scheme is one Store subclass, chosen once per URL by location(); the module-level functions
are what the rest of the renderer calls.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlparse

from vibecraft_common.s3 import S3Url as S3Url  # re-exported: parse_url returns it
from vibecraft_common.s3 import S3UrlError, s3_client

from . import egress
from .egress import redact as redact  # re-exported: messages elsewhere name inputs by it
from .errors import DownloadError, InputNotFoundError, InputTooLargeError, RenderError, UploadError

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES: Final = 4 * 1024**3  # a 2 h WAV at 48 kHz stereo is ~1.4 GB; anything bigger is not a song
TMP_INFIX: Final = ".tmp-"  # put_file uploads to <key>.tmp-<random>, then copies it to <key>
SINGLE_COPY_LIMIT: Final = 5 * 1024**3  # S3 CopyObject limit; bigger objects need a multipart copy
# Resolving, connecting, redirects and the body of an http(s) input together, not per read: 1.4 GB (a 2 h
# WAV) needs 2.4 MB/s; a server dripping bytes fails the render after this, not at its deadline.
AUDIO_DOWNLOAD_DEADLINE_S: Final = 600.0
INPUT_ONLY: Final = "http(s) URLs are input only"
SMALL_INPUT_DEADLINE_S: Final = 60.0  # a lyrics file: kilobytes


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
        try:
            return S3Url.parse(url)
        except S3UrlError as exc:
            raise RenderError(str(exc)) from None
    if scheme in ("http", "https"):
        return HttpUrl(url)
    if scheme == "file":
        return Path(unquote(parsed.path))
    if scheme and len(scheme) > 1:  # one letter would be a Windows drive
        raise RenderError(f"unsupported URL scheme {scheme!r} in {url}")
    return Path(url).expanduser()


@functools.cache
def _client() -> Any:
    """The S3 client, from the standard AWS_* env vars (AWS_ENDPOINT_URL for SeaweedFS/MinIO)."""
    return s3_client(
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        retries=5,
    )


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


NOT_FOUND_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


def _error_code(exc: Exception) -> str | None:
    from botocore.exceptions import ClientError

    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else None


# ---------------------------------------------------------------- stores


@dataclass(frozen=True)
class Store:
    """The operations on one location. This base allows what a read-only input allows: fetch, nothing else."""

    url: str

    def fetch(self, work_dir: Path) -> Path:
        """Download the input to a fresh file in work_dir.

        InputNotFoundError (permanent) when the store says there is no such object; DownloadError
        (retried) for everything a retry may fix: no answer, 5xx, denied access.
        """
        name = Path(urlparse(self.url).path).name or "input"
        dest = work_dir / f"input-{uuid.uuid4().hex[:8]}-{name}"
        self._download(dest, DownloadError, InputNotFoundError)
        return dest

    def _download(self, dest: Path, error: type[RenderError], missing: type[RenderError]) -> None:
        """Copy the object to dest; `missing` when it does not exist, `error` for other failures."""
        raise NotImplementedError

    def read_input(self, max_bytes: int, what: str) -> bytes:
        """A small input's bytes (a lyrics file), never more than max_bytes read: InputTooLargeError past it,
        InputNotFoundError / DownloadError as for fetch."""
        raise NotImplementedError

    def join(self, name: str) -> str:
        raise RenderError("http(s) URLs cannot be written to")

    def exists(self) -> bool:
        raise RenderError(INPUT_ONLY)

    def get_file(self, dest: Path) -> None:
        raise RenderError(INPUT_ONLY)

    def get_bytes(self) -> bytes | None:
        raise RenderError(INPUT_ONLY)

    def check_writable(self) -> None:
        raise UploadError(f"output must be s3://, file:// or a path, not {self.url}")

    def put_file(self, src: Path, content_type: str | None, move: bool) -> None:
        raise UploadError(INPUT_ONLY)

    def delete_prefix(self) -> None:
        """Nothing of ours is stored there."""

    def sweep_temporaries(self) -> int:
        """Remove what an interrupted put_file of this object left (its temporaries, unfinished multipart
        uploads); how many. Only this object's: a directory may hold other renders' uploads in flight."""
        return 0

    def list_names(self) -> set[str]:
        return set()


class HttpStore(Store):
    """http(s)://: an input, streamed through the egress guard (egress.download) up to MAX_DOWNLOAD_BYTES.

    The URL is the tenant's: the guard refuses internal addresses, and every network failure reads the
    same (egress.failure_message), so the MusicVideo status cannot serve as a probe of the cluster.
    """

    def _download(self, dest: Path, error: type[RenderError], missing: type[RenderError]) -> None:
        try:
            with dest.open("wb") as fh:
                egress.download(self.url, fh, max_bytes=MAX_DOWNLOAD_BYTES, deadline_s=AUDIO_DOWNLOAD_DEADLINE_S,
                                what="audio input")  # fmt: skip
        except egress.NotFoundError as exc:  # from a host that passed the address check: nothing internal
            raise missing(str(exc)) from None
        except egress.EgressError as exc:
            raise error(str(exc)) from None

    def read_input(self, max_bytes: int, what: str) -> bytes:
        sink = io.BytesIO()
        try:
            egress.download(self.url, sink, max_bytes=max_bytes, deadline_s=SMALL_INPUT_DEADLINE_S, what=what)
        except egress.TooLargeError:
            raise InputTooLargeError(f"{what} at {redact(self.url)} is larger than {max_bytes // 1024} KiB") from None
        except egress.NotFoundError as exc:
            raise InputNotFoundError(str(exc)) from None
        except egress.EgressError as exc:
            raise DownloadError(str(exc)) from None
        return sink.getvalue()


@dataclass(frozen=True)
class LocalStore(Store):
    """A plain path or file:// URL; inputs are used in place, writes are renamed into place."""

    path: Path

    def fetch(self, work_dir: Path) -> Path:
        if not self.path.is_file():
            raise InputNotFoundError(f"input file not found: {self.path}")
        return self.path

    def read_input(self, max_bytes: int, what: str) -> bytes:
        if not self.path.is_file():
            raise InputNotFoundError(f"{what} not found: {self.path}")
        with self.path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise InputTooLargeError(f"{what} {self.path} is larger than {max_bytes // 1024} KiB")
        return data

    def join(self, name: str) -> str:
        return str(self.path / name)

    def exists(self) -> bool:
        return self.path.is_file()

    def get_file(self, dest: Path) -> None:
        shutil.copyfile(self.path, dest)

    def get_bytes(self) -> bytes | None:
        return self.path.read_bytes() if self.path.is_file() else None

    def check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-probe-{uuid.uuid4().hex[:8]}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UploadError(f"cannot write to {self.path}: {exc.strerror or exc}") from None

    def put_file(self, src: Path, content_type: str | None, move: bool) -> None:
        loc = self.path
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

    def delete_prefix(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def sweep_temporaries(self) -> int:
        swept = 0
        for tmp in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            tmp.unlink(missing_ok=True)
            swept += 1
        return swept

    def list_names(self) -> set[str]:
        return {p.name for p in self.path.iterdir() if p.is_file()} if self.path.is_dir() else set()


@dataclass(frozen=True)
class S3Store(Store):
    """s3://bucket/key through the shared client; puts go to a temporary key, then a server-side copy."""

    loc: S3Url

    @property
    def _list_prefix(self) -> str:
        """The key as a listing prefix; "/" for the bucket itself, so that a cleanup never empties a bucket."""
        return self.loc.key if self.loc.key.endswith("/") else self.loc.key + "/"

    def _download(self, dest: Path, error: type[RenderError], missing: type[RenderError]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        loc, client = self.loc, _client()
        try:
            head = client.head_object(Bucket=loc.bucket, Key=loc.key)
            if int(head.get("ContentLength", 0)) > MAX_DOWNLOAD_BYTES:
                raise error(f"{loc} is larger than {MAX_DOWNLOAD_BYTES // 1024**3} GiB")
            client.download_file(loc.bucket, loc.key, str(dest))
        except ClientError as exc:
            code = _error_code(exc)
            if code not in NOT_FOUND_CODES:  # denied, throttled, 5xx: a retry (or an admin) may fix it
                raise error(f"cannot read {loc}: {_s3_error_text(exc)}") from None
            if code != "NoSuchBucket":
                # HEAD cannot tell a missing key from a missing bucket: ask the bucket.
                try:
                    client.head_bucket(Bucket=loc.bucket)
                except ClientError as bucket_exc:
                    code = "NoSuchBucket" if _error_code(bucket_exc) in NOT_FOUND_CODES else code
            # Neither a missing key nor a misspelt bucket appears by retrying the same URL.
            what = f"bucket {loc.bucket!r} does not exist" if code == "NoSuchBucket" else "no such object"
            raise missing(f"{loc} not found ({what})") from None
        except BotoCoreError as exc:
            raise error(f"cannot read {loc}: {_s3_error_text(exc)}") from None

    def read_input(self, max_bytes: int, what: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        loc = self.loc
        try:  # the range asks for one byte more than allowed: getting it means too large, without reading more
            obj = _client().get_object(Bucket=loc.bucket, Key=loc.key, Range=f"bytes=0-{max_bytes}")
            data: bytes = obj["Body"].read(max_bytes + 1)
        except ClientError as exc:
            code = _error_code(exc)
            if code in NOT_FOUND_CODES:
                raise InputNotFoundError(f"{what} {loc} not found") from None
            if code == "InvalidRange":  # an empty object
                return b""
            raise DownloadError(f"cannot read {what} {loc}: {_s3_error_text(exc)}") from None
        except BotoCoreError as exc:
            raise DownloadError(f"cannot read {what} {loc}: {_s3_error_text(exc)}") from None
        if len(data) > max_bytes:
            raise InputTooLargeError(f"{what} {loc} is larger than {max_bytes // 1024} KiB")
        return data

    def join(self, name: str) -> str:
        return str(self.loc.join(name))

    def exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            _client().head_object(Bucket=self.loc.bucket, Key=self.loc.key)
        except ClientError:
            return False
        return True

    def get_file(self, dest: Path) -> None:
        self._download(dest, UploadError, UploadError)

    def get_bytes(self) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            obj = _client().get_object(Bucket=self.loc.bucket, Key=self.loc.key)
        except ClientError:
            return None
        data: bytes = obj["Body"].read()
        return data

    def check_writable(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        loc, client = self.loc, _client()
        probe_key = f"{loc.dir_key}.write-probe-{uuid.uuid4().hex[:8]}"
        try:
            # Whether the bucket exists (some servers, SeaweedFS among them, would create it on a put). Credentials
            # limited to a tenant's prefix may not ask (403): then the probe below tells.
            try:
                client.head_bucket(Bucket=loc.bucket)
            except ClientError as exc:
                if _error_code(exc) not in ("403", "AccessDenied", "Forbidden"):
                    raise
            # A tiny object proves we may write there.
            client.put_object(Bucket=loc.bucket, Key=probe_key, Body=b"")
            client.delete_object(Bucket=loc.bucket, Key=probe_key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise UploadError(f"cannot write to {self.url}: bucket {loc.bucket!r} does not exist") from None
            raise UploadError(f"cannot write to {self.url}: {_s3_error_text(exc)}") from None
        except BotoCoreError as exc:
            raise UploadError(f"cannot write to {self.url}: {_s3_error_text(exc)}") from None

    def put_file(self, src: Path, content_type: str | None, move: bool) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        loc, client = self.loc, _client()
        tmp_key = f"{loc.key}{TMP_INFIX}{uuid.uuid4().hex}"
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

    def delete_prefix(self) -> None:
        client = _client()
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.loc.bucket, Prefix=self._list_prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.loc.bucket, Delete={"Objects": keys, "Quiet": True})

    def sweep_temporaries(self) -> int:
        client, bucket = _client(), self.loc.bucket
        swept = 0
        # An object's put_file temporaries (<key>.tmp-*), or for a prefix every upload under it.
        uploads = self._list_prefix if self.loc.key.endswith("/") else f"{self.loc.key}{TMP_INFIX}"
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=uploads):
            for upload in page.get("Uploads") or []:
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                swept += 1
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{self.loc.key}{TMP_INFIX}"):
            for obj in page.get("Contents") or []:
                client.delete_object(Bucket=bucket, Key=obj["Key"])
                swept += 1
        return swept

    def list_names(self) -> set[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self._list_prefix
        names: set[str] = set()
        try:
            paginator = _client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.loc.bucket, Prefix=prefix, Delimiter="/"):
                names.update(o["Key"][len(prefix) :] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise UploadError(f"cannot list {self.url}: {_s3_error_text(exc)}") from None
        return names


def location(url: str) -> Store:
    """The store for a URL or path: the one place that tells the schemes apart (after parse_url)."""
    loc = parse_url(url)
    if isinstance(loc, S3Url):
        return S3Store(url, loc)
    return HttpStore(url) if isinstance(loc, HttpUrl) else LocalStore(url, loc)


# ---------------------------------------------------------------- the module's interface


def join(prefix: str, name: str) -> str:
    """Append a relative name to a prefix URL or directory path."""
    return location(prefix).join(name)


def fetch(url: str, work_dir: Path) -> Path:
    """Make the input available as a local file; plain paths are used in place."""
    return location(url).fetch(work_dir)


def read_input(url: str, max_bytes: int, what: str) -> bytes:
    """A small input (a lyrics file) read whole, at most max_bytes (Store.read_input)."""
    return location(url).read_input(max_bytes, what)


def exists(url: str) -> bool:
    """Whether an output object/file exists (used for checkpoints and caches)."""
    return location(url).exists()


def get_file(url: str, dest: Path) -> None:
    """Copy an object we wrote earlier (checkpoint, cache entry) to a local file."""
    location(url).get_file(dest)


def get_bytes(url: str) -> bytes | None:
    """Small object contents, or None when it does not exist."""
    return location(url).get_bytes()


def check_writable(prefix_url: str) -> None:
    """Fail fast, before minutes of rendering, when the output location cannot be written."""
    location(prefix_url).check_writable()


def put_file(src: Path, url: str, content_type: str | None = None, move: bool = False) -> None:
    """Atomically publish a local file at url (temp key + copy + delete on S3, rename locally)."""
    location(url).put_file(src, content_type, move)


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
    store = location(prefix_url)
    try:
        store.delete_prefix()
    except Exception as exc:  # cleanup must never fail a finished render
        log.warning("could not delete %s: %s", prefix_url, exc)


def sweep_temporaries(*urls: str) -> int:
    """After the outputs are published: remove what interrupted uploads of these objects (or, for a prefix
    ending in "/", multipart uploads under it) left behind, e.g. an attempt killed inside its final upload.
    Failures only cost storage, so they are logged."""
    swept = 0
    for url in urls:
        try:
            swept += location(url).sweep_temporaries()
        except Exception as exc:  # cleanup must never fail a finished render
            log.warning("could not sweep temporaries of %s: %s", url, exc)
    if swept:
        log.info("removed %d temporaries left by interrupted uploads", swept)
    return swept


def list_names(prefix_url: str) -> set[str]:
    """Names directly under a prefix (checkpoint discovery)."""
    return location(prefix_url).list_names()
