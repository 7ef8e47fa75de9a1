"""A bound on request bodies, enforced while they are read and before anything else looks at them.

FastAPI reads and parses a JSON body before the API-key dependency runs, so without a bound one
unauthenticated 300 MB POST is read into memory whole. This ASGI middleware refuses a declared
Content-Length over the limit without reading a byte, and counts what an undeclared (chunked) body
delivers, failing the read as soon as it passes the limit. Streamed uploads (`/v1/uploads/file`) are
exempt: they have their own cap, checked while they stream to S3.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vibecraft_api.errors import BodyTooLarge
from vibecraft_api.models.problems import Problem

PROBLEM_JSON = b"application/problem+json"


class BodyOverLimit(HTTPException):
    """Raised from `receive` while the app reads: an HTTPException, so FastAPI passes it on unchanged
    (any other error while reading the body becomes its 400), and problems.py answers it as BodyTooLarge."""

    def __init__(self, limit: int) -> None:
        problem = BodyTooLarge(limit)
        super().__init__(413, problem.detail, headers=problem.headers)
        self.limit = limit


def problem_body(limit: int, path: str) -> bytes:
    """BodyTooLarge as problem+json (what problems.py would write), for an answer sent from here."""
    problem = BodyTooLarge(limit)
    body = Problem(type=problem.type, title=problem.title, status=problem.status, detail=problem.detail, instance=path)
    return body.model_dump_json(exclude_none=True).encode()


class BodyLimitMiddleware:
    """Request bodies of at most `limit` bytes, except on the `exempt` paths."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: Collection[str]) -> None:
        self.app, self.limit, self.exempt = app, limit, frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, send)  # not a byte of the body read
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyOverLimit(self.limit)
            return message

        await self.app(scope, bounded, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = problem_body(self.limit, scope["path"])
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", PROBLEM_JSON), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
