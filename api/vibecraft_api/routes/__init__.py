"""One APIRouter per thing; main.py includes them."""

from __future__ import annotations

from typing import Any

from vibecraft_api.models.problems import Problem

DESCRIPTIONS = {
    400: "Bad request (unparsable body or continue token)",
    401: "Missing or invalid API key",
    404: "Not found (or another tenant's)",
    409: "Conflict with the video's state",
    410: "Continue token expired",
    413: "File too large",
    415: "Not an audio file",
    422: "Invalid input; `errors` lists the fields",
    429: "Rate limit, or a concurrent-render or concurrent-upload limit; see Retry-After",
    503: "Kubernetes API or S3 unavailable; see Retry-After",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error codes; openapi.py moves their schema to application/problem+json."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": Problem, "description": DESCRIPTIONS.get(code, "Error")}
        if code in (429, 503):
            entry["headers"] = RETRY_AFTER
        if code == 401:
            entry["headers"] = WWW_AUTHENTICATE
        out[code] = entry
    return out


AUTHED = (400, 401, 422, 503)  # every authenticated route can answer these (400: unparsable body)
