"""/v1/videos: start renders, read them, cancel them, download the result."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from vibecraft_api.deps import (
    IdempotencyKey,
    MetricsDep,
    PreviewQuery,
    RendersDep,
    SettingsDep,
    TenantDep,
    VideoId,
    VideosDep,
)
from vibecraft_api.manifests import phase_of, to_public
from vibecraft_api.models.videos import DownloadLinks, Phase, VideoCreate, VideoPublic, VideosPublic
from vibecraft_api.routes import AUTHED, problems

router = APIRouter(prefix="/v1/videos", tags=["videos"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=VideoPublic,
             responses={200: {"model": VideoPublic, "description": "Replay of an earlier request with this Idempotency-Key"},
                        201: {"headers": {"Location": {"description": "The video", "schema": {"type": "string"}}}},
                        **problems(*AUTHED, 413, 415, 429)})
async def create_video(req: VideoCreate, tenant: TenantDep, renders: RendersDep, settings: SettingsDep,
                       metrics: MetricsDep, response: Response,
                       idempotency_key: IdempotencyKey = None, preview: PreviewQuery = False) -> VideoPublic:
    """Start rendering a video for an uploaded song (audio.key) or a song URL (audio.url); with ?preview=true
    a quick preview first (POST /v1/videos/{id}/render then renders the whole video)."""
    if preview:
        req = req.model_copy(update={"preview": True})
    obj, created = await renders.create(tenant, req, idempotency_key)
    video = to_public(obj, settings.s3_bucket)
    response.headers["Location"] = video.links.self
    if created:
        metrics.videos_created.inc()
    else:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return video


@router.get("", response_model=VideosPublic, responses=problems(*AUTHED, 410))
async def list_videos(tenant: TenantDep, videos: VideosDep, settings: SettingsDep,
                      limit: Annotated[int, Query(ge=1, le=100, description="Page size")] = 20,
                      continue_: Annotated[str | None, Query(alias="continue", max_length=4096,
                                                             description="Token from the previous page")] = None,
                      phase: Annotated[Phase | None, Query(description="Only videos in this phase")] = None,
                      ) -> VideosPublic:
    """Your videos, oldest first, a page at a time."""
    items, token = await videos.page(tenant.namespace, limit=limit, token=continue_,
                                     keep=lambda obj: phase is None or phase_of(obj) == phase)
    return VideosPublic.model_validate({"items": [to_public(o, settings.s3_bucket) for o in items], "continue": token})


@router.get("/{id}", response_model=VideoPublic, responses=problems(*AUTHED, 404))
async def get_video(id: VideoId, tenant: TenantDep, videos: VideosDep, settings: SettingsDep) -> VideoPublic:
    """One video and the state of its render."""
    return to_public(await videos.get(tenant.namespace, id), settings.s3_bucket)


@router.delete("/{id}", status_code=status.HTTP_202_ACCEPTED, response_model=VideoPublic,
               responses={202: {"description": "Deletion started: GET the video until it answers 404 (until then "
                                               "it shows `deleting: true` and counts as a render in progress)",
                                "headers": {"Location": {"description": "The video", "schema": {"type": "string"}}}},
                          204: {"description": "The video was already gone with its files"},
                          **problems(*AUTHED, 404)})
async def delete_video(id: VideoId, tenant: TenantDep, renders: RendersDep, settings: SettingsDep,
                       response: Response) -> VideoPublic | Response:
    """Cancel the render if it runs, then delete the video and all its files.

    The render is stopped and its pods waited for before the files go, so nothing reappears; that
    takes seconds to a few minutes, during which the video is still listed with `deleting: true`.
    """
    obj = await renders.delete(tenant, id)
    if obj is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    video = to_public(obj, settings.s3_bucket)
    response.headers["Location"] = video.links.self
    return video


@router.post("/{id}/render", status_code=status.HTTP_202_ACCEPTED, response_model=VideoPublic,
             responses=problems(*AUTHED, 404, 409, 429))
async def render_full_video(id: VideoId, tenant: TenantDep, renders: RendersDep, settings: SettingsDep) -> VideoPublic:
    """Render the whole video of a preview (409 when it is not one); its analysis and images are reused."""
    return to_public(await renders.render_full(tenant, id), settings.s3_bucket)


@router.get("/{id}/download", response_model=DownloadLinks, responses=problems(*AUTHED, 404, 409))
async def download_video(id: VideoId, tenant: TenantDep, renders: RendersDep) -> DownloadLinks:
    """Presigned links to the MP4 and its thumbnail (409 until the render has succeeded)."""
    return await renders.download(tenant, id)
