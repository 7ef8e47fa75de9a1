"""OpenAPI document: error responses as application/problem+json, and a description for clients."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from vibecraft_api.problems import PROBLEM_JSON

DESCRIPTION = """\
Upload songs and render music videos on Kubernetes.

Authenticate with `Authorization: Bearer <API key>`. Errors are RFC 9457 problem details
(`application/problem+json`); validation errors list the fields in `errors`. Follow a render with
Server-Sent Events on `/v1/videos/{id}/events`. See docs/api.md.
"""


def install(app: FastAPI) -> None:
    """Replace app.openapi with a cached builder that fixes up error responses."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes,
                             tags=[{"name": "uploads", "description": "Get songs into storage"},
                                   {"name": "videos", "description": "Render, follow, download, cancel"},
                                   {"name": "health", "description": "Probes and metrics"}])
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if code[0] in "45" and content:
                        # FastAPI files them under the route's media type (JSON, or text/event-stream).
                        response["content"] = {PROBLEM_JSON: next(iter(content.values()))}
                    for media in content.values():
                        media.pop("itemSchema", None)  # OpenAPI 3.2 keyword; the document is 3.1
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
