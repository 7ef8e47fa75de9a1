"""Liveness and readiness."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the dependencies answer; 503 when one does not."""

    status: Literal["ready", "unready"]
    checks: dict[str, str] = Field(examples=[{"kubernetes": "ok", "s3": "ok"}])
