"""Songs into S3: presigned tickets, streaming a request body as a multipart upload, checking an upload."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from botocore.exceptions import ClientError
from vibecraft_common.spec import S3_KEY_SEGMENT

from vibecraft_api.audio import SNIFF_BYTES, content_type, sniff
from vibecraft_api.auth import Tenant
from vibecraft_api.errors import (
    FieldIssue,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    TooManyUploads,
    UnsupportedMedia,
)
from vibecraft_api.models.uploads import (
    MultipartComplete,
    MultipartTicket,
    PresignedPart,
    UploadCreate,
    UploadPublic,
    UploadTicket,
)
from vibecraft_api.ratelimit import RateLimiter
from vibecraft_api.settings import Settings
from vibecraft_api.storage import Storage, error_code

MAX_PARTS = 10000  # S3's limit
UPLOADS_ROOT = "uploads/"  # every tenant's songs, under uploads/<tenant>/ (swept by sweeper.py)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """The last path component, reduced to one segment of the key grammar (vibecraft_common.spec.S3_KEY_SEGMENT):
    characters safe in an S3 key and a URL, single dots, none first or last."""
    def segment(text: str) -> str:
        return re.sub(r"\.{2,}", ".", text).lstrip("._").rstrip(".")

    cleaned = segment(_UNSAFE.sub("_", re.split(r"[/\\]", name)[-1]))
    if len(cleaned) > 128:
        stem, dot, ext = cleaned.rpartition(".")
        cleaned = segment((stem[: 127 - len(ext)] + dot + ext) if dot and len(ext) < 16 else cleaned[:128])
    return cleaned or "audio"


def upload_prefix(tenant: str) -> str:
    return f"{UPLOADS_ROOT}{tenant}/"


def upload_key(tenant: str, filename: str) -> str:
    return f"{upload_prefix(tenant)}{uuid.uuid4().hex}/{safe_filename(filename)}"


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The file is larger than the limit of {limit / (1024 * 1024):.0f} MiB.")


def require_audio(head: bytes) -> str:
    """The format of a file starting with `head`; UnsupportedMedia when it is empty or not audio."""
    if not head:
        raise UnsupportedMedia("The file is empty.")
    fmt = sniff(head[:SNIFF_BYTES])
    if fmt is None:
        raise UnsupportedMedia("This is not an audio file we can read (MP3, AAC/M4A, Ogg, Opus, WAV, FLAC, AIFF, WebM).")
    return fmt


async def stream_to_s3(chunks: AsyncIterator[bytes], storage: Storage, key: str, *, limit: int,
                       part_size: int) -> tuple[int, str]:
    """Copy a byte stream to S3 without holding more than ~2 parts; (size, format).

    The first bytes are checked before anything is written; files up to one part are one PUT,
    larger ones a multipart upload with one part uploading while the next is received. On any
    failure (too large, disconnect) the multipart upload is aborted, so S3 keeps nothing.
    """
    buf = bytearray()
    total, number = 0, 0
    fmt: str | None = None
    upload_id: str | None = None
    parts: list[tuple[int, str]] = []
    pending: asyncio.Task[tuple[int, str]] | None = None

    async def send(n: int, data: bytes) -> tuple[int, str]:
        assert upload_id is not None
        return n, await storage.upload_part(key, upload_id, n, data)

    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            buf += chunk
            if fmt is None and len(buf) >= SNIFF_BYTES:
                fmt = require_audio(bytes(buf[:SNIFF_BYTES]))
            while len(buf) >= part_size:
                if upload_id is None:
                    upload_id = await storage.create_multipart(key, content_type(fmt or ""))
                with memoryview(buf) as view:
                    data = bytes(view[:part_size])
                del buf[:part_size]
                if pending is not None:
                    parts.append(await pending)
                number += 1
                pending = asyncio.create_task(send(number, data))
                del data
        fmt = fmt or require_audio(bytes(buf))
        if upload_id is None:
            await storage.put(key, bytes(buf), content_type(fmt))
        else:
            if pending is not None:
                parts.append(await pending)
                pending = None
            if buf:
                parts.append(await send(number + 1, bytes(buf)))
            await storage.complete_multipart(key, upload_id, parts)
        return total, fmt
    except BaseException:
        if upload_id is not None:
            await asyncio.shield(_abort(storage, key, upload_id, pending))
        raise


async def _abort(storage: Storage, key: str, upload_id: str, pending: asyncio.Task[tuple[int, str]] | None) -> None:
    """Wait for the part in flight (S3 may keep a part that completes after the abort), then abort."""
    with contextlib.suppress(Exception):
        if pending is not None:
            await pending
    with contextlib.suppress(Exception):
        await storage.abort_multipart(key, upload_id)


@dataclass
class UploadGate:
    """What bounds uploads in one API process: presigned tickets per API key (a token bucket: each may open
    a multipart upload in S3), and streamed uploads at once, in total and per tenant (each holds memory)."""

    tickets: RateLimiter
    max_streams: int
    max_streams_per_tenant: int
    streams: dict[str, int] = field(default_factory=dict)  # tenant: streamed uploads running

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadGate:
        tickets = RateLimiter(settings.upload_tickets_per_minute, settings.upload_tickets_burst, what="upload tickets")
        return cls(tickets, settings.max_streamed_uploads, settings.max_streamed_uploads_per_tenant)

    @contextlib.contextmanager
    def stream(self, tenant: str) -> Iterator[None]:
        """A slot for one streamed upload (TooManyUploads, 429, when none is free); given back at the end."""
        if self.streams.get(tenant, 0) >= self.max_streams_per_tenant:
            raise TooManyUploads(f"You have {self.max_streams_per_tenant} uploads streaming (the limit); "
                                 "wait for one to finish, or upload with a presigned ticket (POST /v1/uploads).")
        if sum(self.streams.values()) >= self.max_streams:
            raise TooManyUploads("The API is streaming as many uploads as it can; try again shortly, or upload "
                                 "with a presigned ticket (POST /v1/uploads).")
        self.streams[tenant] = self.streams.get(tenant, 0) + 1
        try:
            yield
        finally:
            self.streams[tenant] -= 1
            if not self.streams[tenant]:
                del self.streams[tenant]


async def ticket(storage: Storage, settings: Settings, tenant: Tenant, req: UploadCreate) -> UploadTicket:
    """Presigned PUT for small files, a presigned multipart upload above the threshold.

    Each URL signs the Content-Length of what it takes (the file, or that part): the storage server
    refuses a body of any other size, so a ticket for 1 byte cannot carry 5 GiB.
    """
    if req.sizeBytes > settings.max_upload_bytes:
        raise too_large(settings.max_upload_bytes)
    key = upload_key(tenant.name, req.filename)
    expires = datetime.now(UTC) + timedelta(seconds=settings.presign_expiry_seconds)
    if req.sizeBytes <= settings.multipart_threshold_bytes:
        return UploadTicket(key=key, url=storage.presign_put(key, req.contentType, req.sizeBytes),
                            headers={"Content-Type": req.contentType}, expiresAt=expires)
    part_size = max(settings.upload_part_bytes, math.ceil(req.sizeBytes / MAX_PARTS))
    count = math.ceil(req.sizeBytes / part_size)
    upload_id = await storage.create_multipart(key, req.contentType)
    parts = [PresignedPart(partNumber=n, url=storage.presign_part(
                 key, upload_id, n, part_size if n < count else req.sizeBytes - part_size * (count - 1)))
             for n in range(1, count + 1)]
    return UploadTicket(key=key, expiresAt=expires, multipart=MultipartTicket(
        uploadId=upload_id, partSize=part_size, parts=parts,
        completeUrl="/v1/uploads/multipart/complete", abortUrl="/v1/uploads/multipart/abort"))


def own_key(tenant: Tenant, key: str) -> bool:
    """Whether `key` is one this API gives the tenant (`uploads/<tenant>/<32 hex>/<file>`), in the one key
    grammar: a prefix check alone let `uploads/alice/../bob/...` through."""
    return re.fullmatch(rf"{re.escape(upload_prefix(tenant.name))}[0-9a-f]{{32}}/{S3_KEY_SEGMENT}", key) is not None


async def check_upload(storage: Storage, key: str, limit: int) -> tuple[int, str, str] | None:
    """(size, format, content type) of an uploaded song; None if missing. Oversized/non-audio raise."""
    head = await storage.head(key)
    if head is None:
        return None
    size = int(head.get("ContentLength") or 0)
    if size > limit:
        raise too_large(limit)
    fmt = require_audio(await storage.read_head(key, SNIFF_BYTES) if size else b"")
    return size, fmt, str(head.get("ContentType") or content_type(fmt))


async def complete(storage: Storage, settings: Settings, tenant: Tenant, req: MultipartComplete) -> UploadPublic:
    """Assemble the parts, then check the result like any other upload (deleted again if refused)."""
    if not own_key(tenant, req.key):
        raise NotFound("There is no such upload.")
    try:
        await storage.complete_multipart(req.key, req.uploadId, sorted((p.partNumber, p.etag) for p in req.parts))
    except ClientError as exc:
        if error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
            raise NotFound("There is no such upload in progress (completed, aborted or expired).") from None
        raise InvalidInput(f"S3 refused the parts ({error_code(exc)}): upload every part, then list them all "
                           "with the ETags S3 returned.", errors=[FieldIssue("parts", "do not match the upload")]) from None
    try:
        found = await check_upload(storage, req.key, settings.max_upload_bytes)
    except (PayloadTooLarge, UnsupportedMedia):
        with contextlib.suppress(Exception):
            await storage.delete_prefix(req.key)
        raise
    if found is None:
        raise NotFound("There is no such upload.")
    size, fmt, ctype = found
    return UploadPublic(key=req.key, sizeBytes=size, contentType=ctype, format=fmt)


async def abort(storage: Storage, tenant: Tenant, key: str, upload_id: str) -> None:
    if not own_key(tenant, key):
        raise NotFound("There is no such upload.")
    try:
        await storage.abort_multipart(key, upload_id)
    except ClientError as exc:
        raise NotFound("There is no such upload in progress.") from exc
