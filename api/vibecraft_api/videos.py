"""Starting, cancelling and downloading renders: the rules between a request and a MusicVideo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from vibecraft_common.resource import LABEL_FINISHED
from vibecraft_common.spec import S3_KEY
from vibecraft_common.status import SUCCEEDED, THUMBNAIL_NAME, VIDEO_NAME

from vibecraft_api.auth import Tenant
from vibecraft_api.errors import Conflict, FieldIssue, InvalidInput, NotReady, TooManyRenders, Unavailable
from vibecraft_api.manifests import (
    ACTIVE_SELECTOR,
    ANNOTATION_REQUEST_HASH,
    LABEL_IDEMPOTENCY,
    build_musicvideo,
    idempotency_label,
    is_active,
    new_video_id,
    output_prefix,
    phase_of,
    request_hash,
)
from vibecraft_api.models.videos import DownloadLinks, VideoCreate
from vibecraft_api.musicvideos import MusicVideos
from vibecraft_api.ratelimit import RateLimiter
from vibecraft_api.settings import Settings
from vibecraft_api.storage import Storage, s3_url, split_s3_url
from vibecraft_api.uploads import check_upload, own_key

log = logging.getLogger(__name__)


@dataclass
class Renders:
    """Creation rules shared by all requests of this process: rate limits and per-tenant serialisation."""

    settings: Settings
    videos: MusicVideos
    storage: Storage
    limiter: RateLimiter
    # Count-then-create and idempotency lookups are serialised per tenant (within this replica).
    locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # The resourceVersion of this replica's last create per namespace: its lists are read from the API
    # server's cache no older than that, so they include what this replica just made.
    written: dict[str, str] = field(default_factory=dict)

    async def audio_url(self, tenant: Tenant, req: VideoCreate) -> str:
        """The spec's audio.url; an upload key must be the tenant's own, present, and audio."""
        if req.audio.url is not None:
            return req.audio.url
        key = str(req.audio.key)
        if not own_key(tenant, key):
            raise InvalidInput("audio.key: this is not one of your uploads.",
                               errors=[FieldIssue("audio.key", "is not one of your uploads")])
        found = await check_upload(self.storage, key, self.settings.max_upload_bytes)
        if found is None:
            raise InvalidInput("audio.key: there is no upload with this key (has the upload finished?).",
                               errors=[FieldIssue("audio.key", "no upload with this key (has the upload finished?)")])
        return s3_url(self.storage.bucket, key)

    async def create(self, tenant: Tenant, req: VideoCreate, idempotency_key: str | None) -> tuple[dict[str, Any], bool]:
        """The new MusicVideo and True, or the one an earlier request with the same Idempotency-Key made and False."""
        ns = tenant.namespace
        label = idempotency_label(tenant.name, idempotency_key) if idempotency_key else None
        async with self.locks[tenant.name]:
            if label:
                existing = await self._idempotent(ns, label, req)
                if existing is not None:
                    return existing, False
            # The rate limit counts videos created: a request refused further down gets its token back.
            self.limiter.check(tenant.key_id)
            try:
                audio_url = await self.audio_url(tenant, req)
                # Finished videos are labelled by the operator: a namespace of 10 000 of them is not listed.
                found = await self.videos.selected(ns, ACTIVE_SELECTOR, self.written.get(ns))
                active = sum(1 for obj in found if is_active(obj))
                if active >= self.settings.max_concurrent_renders:
                    raise TooManyRenders(active, self.settings.max_concurrent_renders)
                body = build_musicvideo(name=new_video_id(), tenant=tenant.name, req=req, bucket=self.storage.bucket,
                                        audio_url=audio_url, idempotency=label)
                created = await self.videos.create(ns, body)
                if version := str(created["metadata"].get("resourceVersion") or ""):
                    self.written[ns] = version
            except BaseException:
                self.limiter.refund(tenant.key_id)
                raise
            if label:
                created = await self._dedupe(ns, label, created)
            return created, True

    async def _idempotent(self, ns: str, label: str, req: VideoCreate) -> dict[str, Any] | None:
        found = await self.videos.selected(ns, f"{LABEL_IDEMPOTENCY}={label}", self.written.get(ns))
        if not found:
            return None
        first = min(found, key=lambda o: str(o["metadata"]["name"]))
        if (first["metadata"].get("annotations") or {}).get(ANNOTATION_REQUEST_HASH) != request_hash(req):
            raise InvalidInput("This Idempotency-Key was already used for a different request; use a new key.",
                               errors=[FieldIssue("Idempotency-Key", "was used for a different request", "header")])
        return first

    async def _dedupe(self, ns: str, label: str, created: dict[str, Any]) -> dict[str, Any]:
        """Two replicas racing on one key both create; the oldest name wins and the other deletes its own.

        Listed no older than our create: whatever the other replica created before it is in the answer.
        """
        found = await self.videos.selected(ns, f"{LABEL_IDEMPOTENCY}={label}",
                                           str(created["metadata"].get("resourceVersion") or "") or None)
        winner = min(found or [created], key=lambda o: str(o["metadata"]["name"]))
        mine = str(created["metadata"]["name"])
        if winner["metadata"]["name"] != mine:
            with contextlib.suppress(Exception):
                await self.videos.delete(ns, mine)
            return winner
        return created

    async def render_full(self, tenant: Tenant, video_id: str) -> dict[str, Any]:
        """The whole video of a preview: spec.preview set to false on the same video, so the render that
        follows takes the preview's analysis and generated images from its cache. Counts as a new render
        against the tenant's concurrent renders."""
        ns = tenant.namespace
        async with self.locks[tenant.name]:
            for attempt in range(3):  # a status write (progress) between the read and the patch: read again
                obj = await self.videos.get(ns, video_id)
                if (obj.get("metadata") or {}).get("deletionTimestamp"):
                    raise Conflict(f"Video {video_id} is being deleted.")
                if not (obj.get("spec") or {}).get("preview"):
                    raise Conflict(f"Video {video_id} is not a preview: it renders the whole song already.")
                if not is_active(obj):  # a finished preview starts a render again
                    found = await self.videos.selected(ns, ACTIVE_SELECTOR, self.written.get(ns))
                    active = sum(1 for o in found if is_active(o))
                    if active >= self.settings.max_concurrent_renders:
                        raise TooManyRenders(active, self.settings.max_concurrent_renders)
                try:
                    # The finished label goes with the change, so the next create counts this render at once.
                    patched = await self.videos.patch_spec(ns, video_id, {"preview": False},
                                                           str(obj["metadata"].get("resourceVersion") or ""),
                                                           labels={LABEL_FINISHED: None})
                except Conflict:
                    if attempt == 2:
                        raise
                    continue
                if version := str(patched["metadata"].get("resourceVersion") or ""):
                    self.written[ns] = version
                return patched
            raise AssertionError("unreachable")

    async def delete(self, tenant: Tenant, video_id: str) -> dict[str, Any] | None:
        """Cancel the render and delete the video with its files (MusicVideos.delete): the video while
        the operator removes them, None when it is gone already.

        Gone at once means no operator had put its finalizer on it, which it does before it creates any
        Job: no render can write there, and the API removes the files itself.
        """
        obj = await self.videos.delete(tenant.namespace, video_id)
        if obj is None:
            try:
                await self.storage.delete_prefix(output_prefix(tenant.name, video_id))
            except Unavailable as exc:  # the video is gone, which is what the client asked
                log.warning("files of %s/%s not deleted: %s", tenant.name, video_id, exc.detail)
        return obj

    def _output_key(self, tenant: Tenant, video_id: str, status_url: Any, name: str) -> str:
        """The output's key: status.output's URL when it points into this video's prefix, else the default."""
        prefix = output_prefix(tenant.name, video_id)
        parsed = split_s3_url(status_url) if isinstance(status_url, str) else None
        if (parsed and parsed[0] == self.storage.bucket and parsed[1].startswith(prefix)
                and re.fullmatch(S3_KEY, parsed[1])):  # the key grammar: no `..` walking out of the prefix
            return parsed[1]
        return prefix + name

    async def download(self, tenant: Tenant, video_id: str) -> DownloadLinks:
        obj = await self.videos.get(tenant.namespace, video_id)
        phase = phase_of(obj)
        if phase != SUCCEEDED:
            raise NotReady(f"The video is {phase.lower()}; it can be downloaded once it has succeeded.")
        output = (obj.get("status") or {}).get("output") or {}
        video_key = self._output_key(tenant, video_id, output.get("videoUrl"), VIDEO_NAME)
        thumb_key = self._output_key(tenant, video_id, output.get("thumbnailUrl"), THUMBNAIL_NAME)
        size = output.get("sizeBytes")
        duration = output.get("durationSeconds")
        return DownloadLinks(
            videoUrl=self.storage.presign_get(video_key, filename=f"{video_id}.mp4"),
            thumbnailUrl=self.storage.presign_get(thumb_key),
            expiresAt=datetime.now(UTC) + timedelta(seconds=self.settings.presign_expiry_seconds),
            sizeBytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
            durationSeconds=float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool)
            else None,
        )
