"""The API's settings: every value comes from a VIBECRAFT_API_* env var (the Helm chart sets them)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
# S3 refuses multipart parts below 5 MiB (except the last one).
MIN_PART_BYTES = 5 * MiB
PLACEHOLDERS = frozenset({"changeme", "change-me", "changethis", "change_me", "placeholder", "secret", "password",
                          "xxx", "todo", "replace-me", "example"})
DNS_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*)?$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_placeholder(value: str) -> bool:
    """True for values that are obviously not a real secret (copied from an example file)."""
    return value.strip().lower() in PLACEHOLDERS or not value.strip()


class Settings(BaseSettings):
    """VibeCraft API settings (env prefix VIBECRAFT_API_)."""

    model_config = SettingsConfigDict(env_prefix="VIBECRAFT_API_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    kubeconfig: str | None = Field(default=None, description="kubeconfig file; default: in-cluster, then $KUBECONFIG")

    s3_bucket: str = "vibecraft"
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint URL; default: AWS_ENDPOINT_URL or AWS")
    s3_public_endpoint: str | None = Field(default=None, description="endpoint browsers reach; presigned URLs use it")
    s3_region: str | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Normally unset: boto3 reads AWS_* env vars, the web identity token (IRSA) or the instance profile.
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    keys_secret_name: str = "vibecraft-api-keys"
    keys_secret_namespace: str = "vibecraft-system"
    keys_reload_seconds: float = Field(default=30.0, ge=1.0)
    # An unknown key reloads the Secret at once (new tenants work without waiting), at most this often.
    keys_miss_reload_seconds: float = Field(default=5.0, ge=0.0)

    namespace_prefix: str = Field(default="vc-", min_length=1, max_length=40)

    max_upload_bytes: int = Field(default=1024 * MiB, ge=1)
    # Every request body but a streamed upload's (JSON): enforced while reading, before authentication.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=MiB)
    upload_part_bytes: int = Field(default=8 * MiB, ge=MIN_PART_BYTES, le=512 * MiB)
    multipart_threshold_bytes: int = Field(default=64 * MiB, ge=MIN_PART_BYTES)
    presign_expiry_seconds: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    # The upload sweeper (sweeper.py; a bucket lifecycle rule does the same on S3): every
    # sweep_interval_seconds (0: never), multipart uploads begun longer ago than
    # incomplete_upload_max_age_seconds are aborted and songs older than upload_retention_seconds
    # (0: kept) deleted.
    sweep_interval_seconds: float = Field(default=3600.0, ge=0)
    incomplete_upload_max_age_seconds: int = Field(default=24 * 3600, ge=60)
    upload_retention_seconds: int = Field(default=7 * 24 * 3600, ge=0)

    rate_limit_per_minute: float = Field(default=10.0, gt=0)
    rate_limit_burst: int = Field(default=5, ge=1)
    # Presigned upload tickets per API key (each may open a multipart upload in S3).
    upload_tickets_per_minute: float = Field(default=60.0, gt=0)
    upload_tickets_burst: int = Field(default=20, ge=1)
    # Streamed uploads (POST /v1/uploads/file) at once, in this process and per tenant: each holds up to two
    # parts (2 x upload_part_bytes) in memory, ~22 MB at the default 8 MiB parts.
    max_streamed_uploads: int = Field(default=4, ge=1)
    max_streamed_uploads_per_tenant: int = Field(default=2, ge=1)
    # Event streams (GET /v1/videos/{id}/events) open at once, in this process and per tenant, and how long
    # one lasts: then the server closes it and the client reconnects (EventSource does, with Last-Event-ID).
    max_event_streams: int = Field(default=500, ge=1)
    max_event_streams_per_tenant: int = Field(default=20, ge=1)
    event_stream_max_seconds: float = Field(default=3600.0, gt=0)
    max_concurrent_renders: int = Field(default=3, ge=1)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("kubeconfig", "s3_endpoint", "s3_public_endpoint", "s3_region", "s3_access_key_id",
                     "s3_secret_access_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """Charts often render optional values as empty strings."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept a comma-separated list as well as a JSON array."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @field_validator("namespace_prefix")
    @classmethod
    def _prefix_is_dns(cls, value: str) -> str:
        if not DNS_LABEL_PREFIX.match(value):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter or digit")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not BUCKET.match(value):
            raise ValueError("not a valid S3 bucket name")
        return value

    @field_validator("s3_secret_access_key")
    @classmethod
    def _no_placeholder_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and is_placeholder(value.get_secret_value()):
            raise ValueError("is a placeholder; set the real secret or leave it unset to use AWS_* / IRSA")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        if self.incomplete_upload_max_age_seconds <= self.presign_expiry_seconds:
            raise ValueError("incomplete_upload_max_age_seconds must be above presign_expiry_seconds (the sweeper "
                             "would abort uploads whose tickets are still valid)")
        if self.multipart_threshold_bytes < self.upload_part_bytes:
            raise ValueError("multipart_threshold_bytes must be at least upload_part_bytes")
        return self
