"""A TCP proxy in front of the real S3 server that misbehaves on purpose (the chaos suite's storage faults).

It forwards bytes unchanged (the real server answers everything), but:
  - `drop`: each HTTP request (a chunk from the client that starts with a method) is, with this
    probability, answered by closing both connections before it reaches the server: a lost request
    (and so are the requests numbered in `always_drop`, 1 = the first: a test that needs a loss gets one);
  - `stall_on`: a request whose bytes contain this pattern is held for `stall_seconds` before it is
    forwarded (e.g. b"x-amz-copy-source", the server-side copy that publishes a final object);
    `stalling` is set meanwhile, so a test can kill the client right inside that request.
Counters say what happened. Runs its own event loop in a thread; `with FlakyProxy(...) as proxy:`.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

METHODS = (b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ")


@dataclass
class FlakyProxy:
    upstream_host: str
    upstream_port: int
    drop: float = 0.0
    stall_on: bytes | None = None
    stall_seconds: float = 5.0
    seed: int = 0
    always_drop: frozenset[int] = frozenset()
    requests: int = 0
    dropped: int = 0
    stalled: int = 0
    port: int = 0
    stalling: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: Any = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FlakyProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *_: object) -> None:
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if loop is not None:
            loop.close()

    async def _shutdown(self) -> None:
        """Stop listening and end every connection (a stalled one too) before the loop stops."""
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_w.close()
            return

        back = asyncio.ensure_future(_pump(up_r, client_w))
        try:
            await _pump(client_r, up_w, self._misbehave)
        finally:
            client_w.close()
            back.cancel()

    async def _misbehave(self, data: bytes) -> bool:
        """Before a chunk from the client is forwarded: drop the connection (False) or stall, as configured."""
        if data.startswith(METHODS):
            self.requests += 1
            lost = self.drop and self._rng.random() < self.drop
            if lost or self.requests in self.always_drop:
                self.dropped += 1
                return False
        if self.stall_on is not None and self.stall_on in data:
            self.stalled += 1
            self.stalling.set()
            await asyncio.sleep(self.stall_seconds)
            self.stalling.clear()
        return True


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                before: Callable[[bytes], Awaitable[bool]] | None = None) -> None:
    """Copy src to dst until either side closes (or `before` says to stop); then close dst."""
    try:
        while data := await src.read(65536):
            if before is not None and not await before(data):
                break
            dst.write(data)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.close()
