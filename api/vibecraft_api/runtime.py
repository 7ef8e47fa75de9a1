"""What one API process holds while it runs (clients, caches, background tasks), built by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from vibecraft_api import sweeper
from vibecraft_api.auth import KeyStore
from vibecraft_api.errors import KubeError
from vibecraft_api.kube import Kube, load_config
from vibecraft_api.metrics import Metrics
from vibecraft_api.musicvideos import MusicVideos
from vibecraft_api.ratelimit import RateLimiter
from vibecraft_api.settings import Settings
from vibecraft_api.storage import Storage
from vibecraft_api.uploads import UploadGate
from vibecraft_api.videos import Renders
from vibecraft_api.watches import WatchHub

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Shared by all requests; reached through deps.py."""

    settings: Settings
    metrics: Metrics
    kube: Kube
    videos: MusicVideos
    storage: Storage
    keys: KeyStore
    hub: WatchHub
    renders: Renders
    uploads: UploadGate
    reloader: asyncio.Task[None] | None = None
    sweeper: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Runtime:
        kube = Kube(load_config(settings.kubeconfig))
        videos = MusicVideos(kube)
        storage = Storage(settings)
        keys = KeyStore(kube, settings)
        try:
            await keys.load()
        except KubeError as exc:
            # Start anyway (readiness reports it): the Secret may be created after the API.
            log.warning("API keys not loaded at startup: %s", exc)
        hub = WatchHub(kube)
        metrics.watches.set_function(lambda: hub.watch_count)
        metrics.subscribers.set_function(lambda: hub.subscriber_count)
        renders = Renders(settings, videos, storage, RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst))
        rt = cls(settings, metrics, kube, videos, storage, keys, hub, renders, UploadGate.from_settings(settings))
        rt.reloader = asyncio.create_task(keys.run_reloader(), name="api-keys reloader")
        if settings.sweep_interval_seconds > 0:
            rt.sweeper = asyncio.create_task(sweeper.run(storage, settings, metrics), name="upload sweeper")
        return rt

    async def stop(self) -> None:
        for task in (self.reloader, self.sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.hub.close()
        await self.kube.aclose()
