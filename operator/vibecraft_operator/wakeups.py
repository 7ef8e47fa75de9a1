"""Per-MusicVideo wake-up events: Job/Pod/spec changes wake the one reconciler that owns the object."""

import asyncio
import contextlib

import kopf

Key = tuple[str, str]  # (namespace, name)


class Wakeups:
    """asyncio Events keyed by MusicVideo; only objects with a running reconciler have one."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}

    def register(self, key: Key) -> None:
        """A reconciler starts for `key`."""
        self._events.setdefault(key, asyncio.Event())

    def unregister(self, key: Key) -> None:
        """The reconciler of `key` stopped."""
        self._events.pop(key, None)

    def running(self, key: Key) -> bool:
        """Whether `key` has a reconciler (one that may still be in the middle of a step)."""
        return key in self._events

    def wake(self, key: Key) -> None:
        """Make the reconciler of `key` look again now (no-op if it has none)."""
        event = self._events.get(key)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """A render slot may have freed up: every waiting reconciler looks again."""
        for event in self._events.values():
            event.set()

    async def sleep(self, key: Key, timeout: float | None, stopped: kopf.DaemonStopped) -> None:
        """Sleep until woken, stopped, or `timeout` seconds pass."""
        event = self._events.setdefault(key, asyncio.Event())

        async def until_stopped() -> None:
            await stopped.wait()

        waiters = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(until_stopped())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        event.clear()
