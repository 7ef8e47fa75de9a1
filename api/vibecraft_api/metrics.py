"""Prometheus metrics: requests by route template and status, plus the API's own gauges and counters."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"  # 404s for unknown paths share one label value: no cardinality from scanners


class Metrics:
    """A registry per app, so tests can build several apps in one process."""

    def __init__(self) -> None:
        # No `_created` series (a start time in epoch seconds, e.g. `vibecraft_api_videos_created_created
        # 1.7e9`): on a dashboard they read like counts. prometheus_client's switch is process-wide.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.requests = Counter("vibecraft_api_requests", "HTTP requests handled", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("vibecraft_api_request_duration_seconds",
                                 "Time to the response headers (streams are not timed to their end)",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.videos_created = Counter("vibecraft_api_videos_created", "MusicVideos created", registry=self.registry)
        self.upload_bytes = Counter("vibecraft_api_upload_bytes", "Bytes streamed to S3 by /v1/uploads/file",
                                    registry=self.registry)
        self.watches = Gauge("vibecraft_api_watches", "Shared Kubernetes watches (one per namespace followed)",
                             registry=self.registry)
        self.swept = Counter("vibecraft_api_swept", "Objects the upload sweeper removed from uploads/, by kind",
                             ["kind"], registry=self.registry)
        self.subscribers = Gauge("vibecraft_api_event_streams", "Open event streams", registry=self.registry)


def route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", UNMATCHED)) if route is not None else UNMATCHED


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware): it must not buffer streaming responses."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.latency.labels(scope["method"], route_template(scope)).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(scope["method"], route_template(scope), str(status)).inc()
