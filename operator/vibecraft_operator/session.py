"""kopf's own HTTP session to the API server, with its non-watch requests bounded.

kopf's built-in session has no connection limit, and each object's worker patches on its own (the
finalizer of every new MusicVideo, kopf's annotations): when the watch delivers a few hundred new
MusicVideos at once (a tenant's batch, an operator restart over unfinalized objects), a few hundred
PATCHes run at once, each on a new TLS connection that stays in the pool until it idles out (~0.3 MB
each: SSL buffers and the read buffer). Measured in bench_operator_latency.py's backlog round: up to
1000 sockets and 460 MB RSS for what 16 connections do as fast. This session is kopf's own (same
credentials, TLS and proxy settings, from `kopf.login_via_client`) plus a middleware that lets at
most API_CALLS requests run at once; watches are long polls, one per resource and namespace, so
they are not counted (counting them could starve every other request).
"""

import asyncio
import warnings
from typing import Any

import aiohttp
import kopf

API_CALLS = 16  # kopf's requests (other than watches) in flight at once; the sync client has its own pool
READ_BUFFER = 64 * 1024  # bytes per connection (aiohttp's default is 256 KiB): events are a few KiB


class Throttle:
    """A client middleware: at most `limit` non-watch requests in flight."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None  # made on first use, inside the event loop

    async def __call__(self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        if request.url.query.get("watch") in ("true", "1"):
            return await handler(request)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        async with self._slots:
            return await handler(request)


def bounded_session(info: kopf.ConnectionInfo, limit: int = API_CALLS) -> kopf.AiohttpSession:
    """What kopf would build from `info` (auth.py's APIContext), with the throttle."""
    with warnings.catch_warnings():  # as kopf does: basic auth is deprecated in aiohttp, still supported
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        read_bufsize=READ_BUFFER,
        middlewares=(Throttle(limit),),
    )
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server, priority=info.priority,
                               default_namespace=info.default_namespace, expiration=info.expiration)


async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's login through the kubernetes client's configuration (kubeconfig or in-cluster), as by
    default, handing kopf a bounded session instead of its credentials."""
    info = kopf.login_via_client(**kwargs)
    return None if info is None else bounded_session(info)
