"""Dependencies as Annotated aliases, so a route reads `async def get_video(tenant: TenantDep, ...)`.

All are `async def`: FastAPI runs plain `def` dependencies in its thread pool, a thread hop per
dependency per request (as plain functions they cost ~30% of GET /v1/videos/{id} throughput).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vibecraft_api.auth import KeyStore, Tenant
from vibecraft_api.errors import TooManyStreams, Unauthorized
from vibecraft_api.metrics import Metrics
from vibecraft_api.models.videos import VIDEO_ID
from vibecraft_api.musicvideos import MusicVideos
from vibecraft_api.runtime import Runtime
from vibecraft_api.settings import Settings
from vibecraft_api.storage import Storage
from vibecraft_api.uploads import UploadGate
from vibecraft_api.videos import Renders
from vibecraft_api.watches import Subscription, WatchHub

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey", description="`Authorization: Bearer <API key>`")


async def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _part(name: str) -> Callable[[Runtime], Awaitable[Any]]:
    """A dependency returning one of the runtime's parts (async: see the module docstring)."""
    async def part(rt: RuntimeDep) -> Any:
        return getattr(rt, name)
    part.__name__ = f"get_{name}"
    return part


SettingsDep = Annotated[Settings, Depends(_part("settings"))]
VideosDep = Annotated[MusicVideos, Depends(_part("videos"))]
StorageDep = Annotated[Storage, Depends(_part("storage"))]
KeysDep = Annotated[KeyStore, Depends(_part("keys"))]
HubDep = Annotated[WatchHub, Depends(_part("hub"))]
RendersDep = Annotated[Renders, Depends(_part("renders"))]
MetricsDep = Annotated[Metrics, Depends(_part("metrics"))]
UploadGateDep = Annotated[UploadGate, Depends(_part("uploads"))]


async def current_tenant(keys: KeysDep,
                         creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Tenant:
    """The tenant owning the bearer API key; 401 (with WWW-Authenticate) otherwise."""
    if creds is None or not creds.credentials:
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    tenant = await keys.authenticate(creds.credentials)
    if tenant is None:
        raise Unauthorized("The API key is invalid or has been revoked.")
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
VideoId = Annotated[str, Path(pattern=VIDEO_ID, max_length=63, description="Video id",
                              examples=["mv-0lq3k2j9a7x1c9d2e4f6"])]
PreviewQuery = Annotated[bool, Query(description="Render a short preview first (spec.preview): 15 s from the most "
                                                  "energetic section at 360p, in seconds; POST /v1/videos/{id}/render "
                                                  "then renders the whole video")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Any unique string (e.g. a UUID): retrying the POST with it returns the same video")]


async def video_subscription(id: VideoId, tenant: TenantDep, hub: HubDep, videos: VideosDep,
                             settings: SettingsDep) -> AsyncIterator[tuple[Subscription, dict[str, object]]]:
    """Subscribed to the video's events, then its current state (404 or 503 before the stream starts).

    The video is read first, so a missing video or tenant namespace is answered as GET /v1/videos/{id}
    answers it, at once, without starting a watch; and again once subscribed, so no change is missed.
    """
    await videos.get(tenant.namespace, id)
    # Counted and registered with no await in between (subscribe registers before it awaits).
    if hub.namespace_subscriber_count(tenant.namespace) >= settings.max_event_streams_per_tenant:
        raise TooManyStreams(f"You have {settings.max_event_streams_per_tenant} event streams open (the limit); "
                             "close one, or poll GET /v1/videos/{id}.")
    if hub.subscriber_count >= settings.max_event_streams:
        raise TooManyStreams("The API has as many event streams open as it can; try again shortly.")
    sub = await hub.subscribe(tenant.namespace, id)
    try:
        obj = await videos.get(tenant.namespace, id)
        yield sub, obj
    finally:
        sub.close()


SubscriptionDep = Annotated[tuple[Subscription, dict[str, object]], Depends(video_subscription)]
