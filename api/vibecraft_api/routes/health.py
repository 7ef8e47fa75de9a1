"""/healthz and /readyz for the kubelet's probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from vibecraft_common.resource import GROUP, VERSION

from vibecraft_api.deps import RuntimeDep
from vibecraft_api.errors import KubeError, ProblemError
from vibecraft_api.models.health import Health, Readiness

router = APIRouter(tags=["health"])

CHECK_TIMEOUT = 3.0


async def _check(probe: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT)
    except TimeoutError:
        return "timeout"
    except KubeError as exc:
        return f"error: {exc.code} {exc.reason}"
    except ProblemError as exc:
        return f"error: {exc.detail}"
    return "ok"


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (liveness)."""
    return Health()


@router.get("/readyz", response_model=Readiness,
            responses={503: {"model": Readiness, "description": "A dependency does not answer"}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Ready to serve: the Kubernetes API serves MusicVideos, S3 answers, API keys are loaded."""
    # Discovery of the CRD's group version: allowed for every authenticated identity, and fails if the CRD is missing.
    kube, s3 = await asyncio.gather(_check(rt.kube.get(f"/apis/{GROUP}/{VERSION}")), _check(rt.storage.ping()))
    checks = {"kubernetes": kube, "s3": s3, "apiKeys": "ok" if rt.keys.loaded else "not loaded"}
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
