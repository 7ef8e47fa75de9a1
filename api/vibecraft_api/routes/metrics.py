"""/metrics for Prometheus (serve it on the cluster network only, not through the public ingress)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vibecraft_api.deps import MetricsDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def metrics(m: MetricsDep) -> Response:
    """Request counts and latency by route template and status, watches, event streams, uploads."""
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
