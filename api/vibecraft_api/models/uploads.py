"""Uploads: presigned tickets for direct-to-S3 uploads, and what an upload produced."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AUDIO_CONTENT_TYPE = r"^(audio/[A-Za-z0-9.+-]+|application/ogg|application/octet-stream)$"
UPLOAD_KEY = r"^uploads/[a-z0-9-]+/[0-9a-f]{32}/[A-Za-z0-9._-]{1,128}$"


class UploadCreate(BaseModel):
    """A song the client is about to upload straight to S3."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"filename": "song.mp3", "contentType": "audio/mpeg", "sizeBytes": 7340032},
    ]})

    filename: str = Field(min_length=1, max_length=255, description="Original file name (sanitized into the key)")
    contentType: str = Field(default="application/octet-stream", pattern=AUDIO_CONTENT_TYPE, max_length=127,
                             description="audio/* (or application/ogg, application/octet-stream)")
    sizeBytes: int = Field(ge=1, description="Exact size; above the multipart threshold the ticket is multipart")


class PresignedPart(BaseModel):
    """Where to PUT one part of a multipart upload."""

    partNumber: int = Field(ge=1, le=10000)
    url: str


class MultipartTicket(BaseModel):
    """Upload each part with PUT (parts of partSize bytes, the last one shorter), then complete."""

    uploadId: str
    partSize: int
    parts: list[PresignedPart]
    completeUrl: str = Field(description="POST the parts' ETags here", examples=["/v1/uploads/multipart/complete"])
    abortUrl: str = Field(examples=["/v1/uploads/multipart/abort"])


class UploadTicket(BaseModel):
    """How to upload: one presigned PUT (`url` with `headers`) or a multipart upload (`multipart`)."""

    key: str = Field(description="Use as audio.key in POST /v1/videos once uploaded",
                     examples=["uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"])
    method: Literal["PUT"] = "PUT"
    url: str | None = Field(default=None, description="Presigned PUT URL (single upload)")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers the PUT must send")
    multipart: MultipartTicket | None = None
    expiresAt: datetime


class CompletedPart(BaseModel):
    """A part the client uploaded, with the ETag header S3 answered."""

    model_config = ConfigDict(extra="forbid")

    partNumber: int = Field(ge=1, le=10000)
    etag: str = Field(min_length=1, max_length=256)


EXAMPLE_KEY = "uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"


class MultipartComplete(BaseModel):
    """Finish a multipart upload."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"key": EXAMPLE_KEY, "uploadId": "2~q9ZbU8...", "parts": [
            {"partNumber": 1, "etag": '"3858f62230ac3c915f300c664312c11f"'},
            {"partNumber": 2, "etag": '"c4ca4238a0b923820dcc509a6f75849b"'}]},
    ]})

    key: str = Field(pattern=UPLOAD_KEY, max_length=1024)
    uploadId: str = Field(min_length=1, max_length=1024)
    parts: list[CompletedPart] = Field(min_length=1, max_length=10000)


class MultipartAbort(BaseModel):
    """Give up on a multipart upload (S3 frees the parts)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"key": EXAMPLE_KEY, "uploadId": "2~q9ZbU8..."}]})

    key: str = Field(pattern=UPLOAD_KEY, max_length=1024)
    uploadId: str = Field(min_length=1, max_length=1024)


class UploadPublic(BaseModel):
    """A song in S3, ready for POST /v1/videos."""

    key: str = Field(examples=["uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"])
    sizeBytes: int
    contentType: str = Field(examples=["audio/mpeg"])
    format: str | None = Field(default=None, description="Container recognised from the first bytes", examples=["mp3"])
