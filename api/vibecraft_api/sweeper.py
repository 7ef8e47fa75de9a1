"""The upload sweeper: what a bucket lifecycle rule does, for storage servers that have none.

Songs are uploaded under uploads/<tenant>/ and read by renders; nothing else ever deletes them, and a
multipart upload that is begun and never completed (a presigned ticket not used up, a client gone)
keeps its parts in the bucket, invisible to listings and to every size check. Each API replica sweeps
every `sweep_interval_seconds`: it aborts multipart uploads older than
`incomplete_upload_max_age_seconds` and deletes songs older than `upload_retention_seconds`. On S3
the same is a lifecycle rule (docs/eks.md); the sweep then finds nothing to do. Replicas sweeping at
once do the same idempotent deletes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vibecraft_api.errors import Unavailable
from vibecraft_api.metrics import Metrics
from vibecraft_api.settings import Settings
from vibecraft_api.storage import Storage
from vibecraft_api.uploads import UPLOADS_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swept:
    """What one sweep removed."""

    aborted_uploads: int
    deleted_songs: int


async def sweep(storage: Storage, settings: Settings, now: datetime | None = None, root: str = UPLOADS_ROOT) -> Swept:
    """One pass over `root`: abort stale multipart uploads, delete songs past their retention."""
    now = now or datetime.now(UTC)
    aborted = await storage.abort_uploads(
        root, started_before=now - timedelta(seconds=settings.incomplete_upload_max_age_seconds))
    deleted = 0
    if settings.upload_retention_seconds:
        deleted = await storage.delete_older(root, now - timedelta(seconds=settings.upload_retention_seconds))
    return Swept(aborted, deleted)


async def run(storage: Storage, settings: Settings, metrics: Metrics) -> None:
    """Sweep every sweep_interval_seconds (the first after a random part of it: replicas spread out)."""
    interval = settings.sweep_interval_seconds
    await asyncio.sleep(random.uniform(0.1, 1.0) * interval)
    while True:
        try:
            swept = await sweep(storage, settings)
            metrics.swept.labels("multipart_upload").inc(swept.aborted_uploads)
            metrics.swept.labels("song").inc(swept.deleted_songs)
            if swept.aborted_uploads or swept.deleted_songs:
                log.info("swept uploads/: %d unfinished multipart uploads aborted, %d songs past retention deleted",
                         swept.aborted_uploads, swept.deleted_songs)
        except Unavailable as exc:
            log.warning("upload sweep failed: %s", exc.detail)
        await asyncio.sleep(interval)
