"""Every error the API reports: each becomes an RFC 9457 problem (application/problem+json) at the edge."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

PROBLEM_BASE = "https://vibecraft.io/problems/"


@dataclass(frozen=True)
class FieldIssue:
    """One invalid input field: where it is (dotted path) and what is wrong, in words a user can read."""

    field: str
    detail: str
    location: str = "body"


class ProblemError(Exception):
    """Base of the errors that are shown to the client as a problem document."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None,
                 errors: list[FieldIssue] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class Unauthorized(ProblemError):
    """No API key, or one that no tenant owns."""

    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str) -> None:
        error = "invalid_token" if "invalid" in detail.lower() else "invalid_request"
        super().__init__(detail, headers={"WWW-Authenticate": f'Bearer realm="vibecraft", error="{error}"'})


class BadRequest(ProblemError):
    """A request the API cannot interpret (e.g. a mangled continue token)."""

    status, slug, title = 400, "bad-request", "Bad request"


class NotFound(ProblemError):
    """The thing does not exist, or belongs to another tenant (indistinguishable on purpose)."""

    status, slug, title = 404, "not-found", "Not found"


class NotReady(ProblemError):
    """The video is not rendered (yet): nothing to download."""

    status, slug, title = 409, "not-ready", "Video not ready"


class Conflict(ProblemError):
    """The request does not fit the video's state: not a preview, or changed meanwhile."""

    status, slug, title = 409, "conflict", "Conflict"


class Gone(ProblemError):
    """A continue token too old for the Kubernetes API to resume from."""

    status, slug, title = 410, "continue-expired", "Listing expired"


class PayloadTooLarge(ProblemError):
    """The upload is bigger than VIBECRAFT_API_MAX_UPLOAD_BYTES."""

    status, slug, title = 413, "too-large", "File too large"


class BodyTooLarge(ProblemError):
    """A request body (other than a streamed upload) beyond VIBECRAFT_API_MAX_BODY_BYTES."""

    status, slug, title = 413, "body-too-large", "Request body too large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit // 1024} KiB.",
                         headers={"Connection": "close"})


class UnsupportedMedia(ProblemError):
    """The upload is not an audio file we can render."""

    status, slug, title = 415, "not-audio", "Not an audio file"


class InvalidInput(ProblemError):
    """Input that passes the schema but not the rules that need the cluster or S3 to check."""

    status, slug, title = 422, "invalid-input", "Invalid input"


class RateLimited(ProblemError):
    """Too many renders requested in a short time by one API key."""

    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, retry_after: float, what: str = "new videos") -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(f"Too many {what} in a short time; try again in {seconds} s.",
                         headers={"Retry-After": str(seconds)})


class TooManyUploads(ProblemError):
    """Streamed uploads at their limit (per tenant, or of this API process): each holds memory."""

    status, slug, title = 429, "too-many-uploads", "Too many uploads at once"
    RETRY_AFTER: ClassVar[int] = 5

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(self.RETRY_AFTER)})


class TooManyStreams(ProblemError):
    """Event streams at their limit (per tenant, or of this API process)."""

    status, slug, title = 429, "too-many-streams", "Too many event streams"
    RETRY_AFTER: ClassVar[int] = 10

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(self.RETRY_AFTER)})


class QuotaExceeded(ProblemError):
    """The tenant namespace's ResourceQuota refused a new MusicVideo (too many kept)."""

    status, slug, title = 429, "quota-exceeded", "Quota exceeded"


class TooManyRenders(ProblemError):
    """The tenant already has the maximum number of renders in progress."""

    status, slug, title = 429, "too-many-renders", "Too many renders in progress"
    RETRY_AFTER: ClassVar[int] = 15

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"You have {active} videos rendering (the limit is {limit}). "
                         "Wait for one to finish or cancel one, then try again.",
                         headers={"Retry-After": str(self.RETRY_AFTER)})


class Unavailable(ProblemError):
    """A dependency (Kubernetes API, S3, the API key Secret) cannot be reached or refuses us."""

    status, slug, title = 503, "unavailable", "Service unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class TenantNotProvisioned(Unavailable):
    """The tenant's namespace does not exist: an administrator must create it (the API may not)."""

    slug, title = "tenant-not-provisioned", "Account not set up"


@dataclass
class KubeError(Exception):
    """A Kubernetes API request failed; `code` is the HTTP status (0 when the API was unreachable).

    `kind` is the Status' details.kind: what was not found, say (`namespaces` for a missing namespace).
    """

    code: int
    reason: str
    message: str
    causes: list[dict[str, str]] = field(default_factory=list)
    kind: str = ""

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"
