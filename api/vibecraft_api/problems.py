"""Exception handlers: every error leaves as application/problem+json (RFC 9457), never as a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from vibecraft_api.errors import PROBLEM_BASE, BadRequest, BodyTooLarge, FieldIssue, ProblemError
from vibecraft_api.models.problems import FieldError, Problem

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
MAX_LISTED = 3


def problem_response(request: Request, *, status: int, title: str, type_: str, detail: str | None,
                     errors: list[FieldError] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(type=type_, title=title, status=status, detail=detail, instance=request.url.path, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field_error(issue: FieldIssue) -> FieldError:
    pointer = "#/" + issue.field.replace(".", "/") if issue.location == "body" else issue.field
    return FieldError(pointer=pointer if issue.field else "#", field=issue.field, location=issue.location,
                      detail=issue.detail)


def _summary(errors: Sequence[FieldError]) -> str:
    listed = "; ".join(f"{e.field}: {e.detail}" if e.field else e.detail for e in errors[:MAX_LISTED])
    more = f" (and {len(errors) - MAX_LISTED} more)" if len(errors) > MAX_LISTED else ""
    return listed + more


def validation_issues(raw: Sequence[Any]) -> list[FieldIssue]:
    """FastAPI/pydantic errors as (dotted field, message, location); the input value is never echoed."""
    issues = []
    for err in raw:
        loc = [str(p) for p in err.get("loc", ())]
        location = loc[0] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else "body"
        path = loc[1:] if loc and loc[0] == location else loc
        message = str(err.get("msg", "is invalid"))
        issues.append(FieldIssue(".".join(path), message.removeprefix("Value error, "), location))
    return issues


async def on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    errors = [_field_error(i) for i in exc.errors] if exc.errors else None
    return problem_response(request, status=exc.status, title=exc.title, type_=exc.type, detail=exc.detail,
                            errors=errors, headers=exc.headers)


def _unparsable(raw: Sequence[Any]) -> str | None:
    """What is wrong with a body that is not JSON at all (FastAPI's json_invalid), else None."""
    for err in raw:
        if err.get("type") == "json_invalid":
            reason = str((err.get("ctx") or {}).get("error") or "")  # the json module's words: no input echoed
            position = (err.get("loc") or ("",))[-1]
            if not reason or not isinstance(position, int):
                return "The request body is not valid JSON."
            return f"The request body is not valid JSON ({reason[:1].lower()}{reason[1:]} at character {position})."
    return None


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    unparsable = _unparsable(exc.errors())
    if unparsable is not None:
        # Not a field error: there are no fields to point at. 400, like every body the API cannot read.
        return problem_response(request, status=400, title=BadRequest.title, type_=PROBLEM_BASE + BadRequest.slug,
                                detail=unparsable)
    errors = [_field_error(i) for i in validation_issues(exc.errors())]
    return problem_response(request, status=422, title="Invalid input", type_=PROBLEM_BASE + "invalid-input",
                            detail=_summary(errors), errors=errors)


async def on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if (limit := getattr(exc, "limit", None)) is not None:  # bodylimit.BodyOverLimit
        return await on_problem(request, BodyTooLarge(limit))
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
    if exc.status_code == 404 and detail is None:
        detail = "There is no such endpoint."
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot decode at all (e.g. not UTF-8): the same problem as unparsable JSON.
        if detail == "There was an error parsing the body":
            detail = "The request body is not valid JSON (it must be UTF-8 text)."
        return problem_response(request, status=400, title=BadRequest.title, type_=PROBLEM_BASE + BadRequest.slug,
                                detail=detail, headers=dict(exc.headers or {}))
    return problem_response(request, status=exc.status_code, title=phrase, type_="about:blank", detail=detail,
                            headers=dict(exc.headers or {}))


async def on_disconnect(request: Request, exc: Exception) -> JSONResponse:
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return problem_response(request, status=400, title="Bad request", type_=PROBLEM_BASE + "disconnected",
                            detail="The request body ended early.")


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, status=500, title="Internal server error", type_=PROBLEM_BASE + "internal",
                            detail="Something went wrong on our side; try again, and contact support if it persists.")


def install(app: FastAPI) -> None:
    """Register the handlers on the app."""
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
