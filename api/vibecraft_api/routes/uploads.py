"""/v1/uploads: songs go to S3, directly (presigned) or streamed through the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from vibecraft_api import uploads
from vibecraft_api.audio import content_type
from vibecraft_api.deps import MetricsDep, SettingsDep, StorageDep, TenantDep, UploadGateDep
from vibecraft_api.errors import UnsupportedMedia
from vibecraft_api.models.uploads import MultipartAbort, MultipartComplete, UploadCreate, UploadPublic, UploadTicket
from vibecraft_api.routes import AUTHED, problems

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

ACCEPTED_TYPES = ("audio/", "application/ogg", "application/octet-stream")
BINARY_BODY = {"requestBody": {"required": True, "description": "The audio file, as the raw request body", "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "audio/*": {"schema": {"type": "string", "format": "binary"}},
}}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UploadTicket,
             responses=problems(*AUTHED, 413, 429))
async def create_upload(req: UploadCreate, tenant: TenantDep, storage: StorageDep, settings: SettingsDep,
                        gate: UploadGateDep) -> UploadTicket:
    """A presigned URL to PUT the song straight to S3 (multipart above the threshold, for large files).

    Each URL takes exactly the declared size (or that part's size): S3 refuses any other."""
    gate.tickets.check(tenant.key_id)
    return await uploads.ticket(storage, settings, tenant, req)


@router.post("/file", status_code=status.HTTP_201_CREATED, response_model=UploadPublic, openapi_extra=BINARY_BODY,
             responses=problems(*AUTHED, 413, 415, 429))
async def upload_file(request: Request, tenant: TenantDep, storage: StorageDep, settings: SettingsDep,
                      metrics: MetricsDep, gate: UploadGateDep,
                      filename: Annotated[str, Query(min_length=1, max_length=255, description="Original file name")],
                      ) -> UploadPublic:
    """Stream the request body to S3 (never buffered whole; 413 past the size limit, 415 if not audio)."""
    declared_length = request.headers.get("content-length", "")
    if declared_length.isdigit() and int(declared_length) > settings.max_upload_bytes:
        raise uploads.too_large(settings.max_upload_bytes)  # before reading a byte
    declared = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    if not declared.startswith(ACCEPTED_TYPES):
        raise UnsupportedMedia(f"Content-Type {declared} is not audio; send audio/* or application/octet-stream.")
    key = uploads.upload_key(tenant.name, filename)
    with gate.stream(tenant.name):  # a slot before a byte is read (429 when none is free)
        size, fmt = await uploads.stream_to_s3(request.stream(), storage, key, limit=settings.max_upload_bytes,
                                               part_size=settings.upload_part_bytes)
    metrics.upload_bytes.inc(size)
    return UploadPublic(key=key, sizeBytes=size, contentType=content_type(fmt), format=fmt)


@router.post("/multipart/complete", status_code=status.HTTP_201_CREATED, response_model=UploadPublic,
             responses=problems(*AUTHED, 404, 413, 415))
async def complete_multipart(req: MultipartComplete, tenant: TenantDep, storage: StorageDep,
                             settings: SettingsDep) -> UploadPublic:
    """Finish a presigned multipart upload with the ETags of its parts."""
    return await uploads.complete(storage, settings, tenant, req)


@router.post("/multipart/abort", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses=problems(*AUTHED, 404))
async def abort_multipart(req: MultipartAbort, tenant: TenantDep, storage: StorageDep) -> None:
    """Give up a presigned multipart upload."""
    await uploads.abort(storage, tenant, req.key, req.uploadId)
