"""RFC 9457 problem details: the body of every error response."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    """One invalid field of the request."""

    pointer: str = Field(description="JSON Pointer into the request body, or the parameter's name",
                         examples=["#/video/width"])
    field: str = Field(description="Dotted path of the field", examples=["video.width"])
    location: str = Field(description="body, query, path or header", examples=["body"])
    detail: str = Field(description="What is wrong, in words a user can read",
                        examples=["Input should be less than or equal to 7680"])


class Problem(BaseModel):
    """An error, as application/problem+json (RFC 9457)."""

    type: str = Field(description="URI naming the kind of problem",
                      examples=["https://vibecraft.io/problems/invalid-input"])
    title: str = Field(description="Short summary of the kind of problem", examples=["Invalid input"])
    status: int = Field(description="HTTP status code", examples=[422])
    detail: str | None = Field(default=None, description="What happened, for this request; safe to show to users",
                               examples=["video.width: Input should be less than or equal to 7680"])
    instance: str | None = Field(default=None, description="The request path", examples=["/v1/videos"])
    errors: list[FieldError] | None = Field(default=None, description="Invalid fields (validation errors only)")
