"""One Kubernetes watch per namespace, fanned out to every event stream that follows a video there.

A NamespaceWatch starts with its first subscriber and stops `linger` seconds after its last one
left (a reconnecting browser does not restart it). It resumes from the last resourceVersion after a
dropped connection; when that is too old (410 Gone) it lists the namespace again and hands every
subscriber the current object (or a DELETED event), so no terminal phase is ever missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from vibecraft_api.errors import KubeError, Unavailable
from vibecraft_api.kube import Kube
from vibecraft_api.musicvideos import LIST_PAGE, collection, unavailable

log = logging.getLogger(__name__)

QUEUE_SIZE = 32  # events carry the whole object, so dropping the oldest on overflow loses nothing final
WATCH_SECONDS = 290  # the API server ends each watch request after this; we resume from the last version
SYNC_TIMEOUT = 10.0


@dataclass(frozen=True)
class WatchEvent:
    """ADDED, MODIFIED, DELETED, or SYNC (the current object after a re-list)."""

    type: str
    object: dict[str, Any]


class Subscription:
    """The events of one video for one client."""

    def __init__(self, watch: NamespaceWatch, name: str) -> None:
        self.watch = watch
        self.name = name
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.closed = False

    def deliver(self, event: WatchEvent) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(event)

    async def next(self) -> WatchEvent:
        return await self.queue.get()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.watch.remove(self)


class NamespaceWatch:
    """The shared watch of one namespace."""

    def __init__(self, hub: WatchHub, namespace: str) -> None:
        self.hub = hub
        self.namespace = namespace
        self.subscribers: dict[str, set[Subscription]] = {}
        self.synced = asyncio.Event()
        # Set once the first sync succeeded or the API server refused it (`refused`): subscribers stop waiting.
        self.settled = asyncio.Event()
        self.refused: KubeError | None = None
        self.task: asyncio.Task[None] | None = None
        self._stop: asyncio.TimerHandle | None = None

    def add(self, sub: Subscription) -> None:
        if self._stop is not None:
            self._stop.cancel()
            self._stop = None
        self.subscribers.setdefault(sub.name, set()).add(sub)
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"watch {self.namespace}")

    def remove(self, sub: Subscription) -> None:
        subs = self.subscribers.get(sub.name)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.subscribers[sub.name]
        if not self.subscribers and self._stop is None:
            self._stop = asyncio.get_running_loop().call_later(self.hub.linger, self.stop)

    def stop(self) -> None:
        if self.subscribers:
            return
        self.hub.watches.pop(self.namespace, None)
        if self.task is not None:
            self.task.cancel()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self.subscribers.values())

    def _dispatch(self, event: WatchEvent) -> None:
        name = str((event.object.get("metadata") or {}).get("name"))
        for sub in list(self.subscribers.get(name, ())):
            sub.deliver(event)

    async def _relist(self) -> str:
        """Every subscriber gets its object's current state (or DELETED); the list's resourceVersion."""
        path, token, seen = collection(self.namespace), "", set()
        while True:
            params: dict[str, Any] = {"limit": LIST_PAGE, **({"continue": token} if token else {})}
            page = await self.hub.kube.get(path, params)
            for obj in page.get("items") or []:
                seen.add(obj["metadata"]["name"])
                self._dispatch(WatchEvent("SYNC", obj))
            token = page["metadata"].get("continue") or ""
            if not token:
                break
        for name in set(self.subscribers) - seen:
            self._dispatch(WatchEvent("DELETED", {"metadata": {"name": name}}))
        return str(page["metadata"]["resourceVersion"])

    async def _run(self) -> None:
        path = collection(self.namespace)
        rv: str | None = None
        first = True
        backoff = 0.5
        while True:
            try:
                if rv is None:
                    if first:
                        # Subscribers read their object after the watch is synced: a cheap list for the version.
                        page = await self.hub.kube.get(path, {"limit": 1})
                        rv = str(page["metadata"]["resourceVersion"])
                    else:
                        rv = await self._relist()
                    first = False
                    self.refused = None
                    self.synced.set()
                    self.settled.set()
                timeout = WATCH_SECONDS + random.randint(0, 20)
                async with contextlib.aclosing(self.hub.kube.watch(path, {"resourceVersion": rv}, timeout)) as events:
                    async for raw in events:
                        kind, obj = str(raw.get("type")), raw.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                rv = None  # too old: list again
                                break
                            raise KubeError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind != "BOOKMARK":
                            self._dispatch(WatchEvent(kind, obj))
                backoff = 0.5
            except KubeError as exc:
                if exc.code == 410:
                    rv = None
                    continue
                if exc.code and not self.synced.is_set():
                    self.refused = exc  # an answer, not silence: waiting subscribers fail now, with its cause
                    self.settled.set()
                log.warning("watch of %s failed, retrying in %.1fs: %s", self.namespace, backoff, exc)
            except (ValueError, KeyError, TypeError) as exc:  # a malformed response: never let the watch die
                log.exception("watch of %s: unexpected response, retrying in %.1fs: %s", self.namespace, backoff, exc)
            else:
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


class WatchHub:
    """Namespace → its shared watch."""

    def __init__(self, kube: Kube, *, linger: float = 10.0) -> None:
        self.kube = kube
        self.linger = linger
        self.watches: dict[str, NamespaceWatch] = {}

    async def subscribe(self, namespace: str, name: str) -> Subscription:
        """Register for the video's events and wait until the watch runs: later changes are not missed."""
        watch = self.watches.get(namespace)
        if watch is None:
            watch = self.watches[namespace] = NamespaceWatch(self, namespace)
        sub = Subscription(watch, name)
        watch.add(sub)
        try:
            await asyncio.wait_for(watch.settled.wait(), SYNC_TIMEOUT)
        except TimeoutError:
            sub.close()
            raise Unavailable("Cannot follow the video: the Kubernetes API does not answer.") from None
        except BaseException:
            sub.close()
            raise
        if not watch.synced.is_set():
            sub.close()
            raise unavailable(watch.refused) if watch.refused else Unavailable("Cannot follow the video.")
        return sub

    @property
    def watch_count(self) -> int:
        return len(self.watches)

    def namespace_subscriber_count(self, namespace: str) -> int:
        """Open subscriptions of one tenant's namespace."""
        watch = self.watches.get(namespace)
        return 0 if watch is None else watch.subscriber_count

    @property
    def subscriber_count(self) -> int:
        return sum(w.subscriber_count for w in self.watches.values())

    async def close(self) -> None:
        tasks = [w.task for w in self.watches.values() if w.task is not None]
        self.watches.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
