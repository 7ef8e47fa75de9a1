"""The FastAPI app: settings, middleware, error handlers and routers, assembled (no logic here)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError

from vibecraft_api import openapi, problems
from vibecraft_api.bodylimit import BodyLimitMiddleware
from vibecraft_api.metrics import Metrics, MetricsMiddleware
from vibecraft_api.routes import events, health, metrics, uploads, videos
from vibecraft_api.runtime import Runtime
from vibecraft_api.settings import Settings

CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]
CORS_EXPOSED = ["Location", "Retry-After", "Idempotent-Replayed", "WWW-Authenticate"]
GRACEFUL_SHUTDOWN_SECONDS = 5
STREAMED_BODIES = ("/v1/uploads/file",)  # bounded by max_upload_bytes while streaming, not by max_body_bytes


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; its clients and background tasks start with the lifespan."""
    settings = settings or Settings()
    m = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await Runtime.start(settings, m)
        try:
            yield
        finally:
            await app.state.runtime.stop()

    app = FastAPI(title="VibeCraft API", version="1.0.0", lifespan=lifespan, debug=False)
    for router in (uploads.router, videos.router, events.router, health.router, metrics.router):
        app.include_router(router)
    problems.install(app)
    openapi.install(app)
    # Innermost of the middlewares: a refused body is still counted and gets CORS headers.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, exempt=STREAMED_BODIES)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=CORS_HEADERS,
                           expose_headers=CORS_EXPOSED, max_age=600)
    app.add_middleware(MetricsMiddleware, metrics=m)
    return app


def main() -> None:
    """`vibecraft-api`: serve on VIBECRAFT_API_HOST:VIBECRAFT_API_PORT."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SystemExit(f"vibecraft-api: invalid VIBECRAFT_API_* settings:\n{exc}") from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Kubernetes request otherwise
    # Event streams never end on their own: on SIGTERM give them a few seconds, then close them (clients
    # reconnect to another replica) instead of waiting out the pod's whole grace period.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                proxy_headers=True, server_header=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
