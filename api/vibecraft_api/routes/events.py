"""/v1/videos/{id}/events: Server-Sent Events following a render until it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from vibecraft_api.deps import SettingsDep, SubscriptionDep
from vibecraft_api.manifests import phase_of, to_public
from vibecraft_api.models.videos import TERMINAL, StreamEnd
from vibecraft_api.routes import AUTHED, problems

router = APIRouter(prefix="/v1/videos", tags=["videos"])

RECONNECT_MS = 5000
SSE_EXAMPLE = (
    "retry: 5000\nevent: video\nid: 48213\ndata: {\"id\":\"mv-0lq3k2j9a7x1c9d2e4f6\",\"phase\":\"Running\","
    "\"progress\":{\"stage\":\"frames\",\"percent\":42.5}, ...}\n\n"
    "event: video\nid: 48290\ndata: {\"id\":\"mv-0lq3k2j9a7x1c9d2e4f6\",\"phase\":\"Succeeded\", ...}\n\n"
    "event: end\ndata: {\"id\":\"mv-0lq3k2j9a7x1c9d2e4f6\",\"phase\":\"Succeeded\",\"reason\":\"finished\"}\n\n"
)


def _version(obj: dict[str, Any]) -> int | None:
    """resourceVersion as a number for ordering (etcd's are; if one is not, nothing is skipped)."""
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return int(rv) if isinstance(rv, str) and rv.isdigit() else None


@router.get("/{id}/events", response_class=EventSourceResponse, responses={
    200: {"description": "`video` events (the whole video as JSON, id = its version) on every change, then one "
                         "`end` event; the stream closes after it. Idle streams get `: ping` comments.",
          "content": {"text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}}},
    **problems(*AUTHED, 404, 429)})
async def video_events(stream: SubscriptionDep, settings: SettingsDep,
                       last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
                       ) -> AsyncIterator[ServerSentEvent]:
    """Follow a video's phase and progress live until the render ends (succeeded, failed or cancelled).

    A stream lasts at most VIBECRAFT_API_EVENT_STREAM_MAX_SECONDS; then it closes without an `end` event and
    the client reconnects (EventSource does so itself, sending Last-Event-ID: a video unchanged since that
    event is not sent again)."""
    sub, obj = stream
    last = _version(obj)
    if last is None or last_event_id != str(last):
        yield ServerSentEvent(event="video", id=str(last or ""), retry=RECONNECT_MS,
                              raw_data=to_public(obj, settings.s3_bucket).model_dump_json())
    deadline = asyncio.get_running_loop().time() + settings.event_stream_max_seconds
    while phase_of(obj) not in TERMINAL:
        try:
            event = await asyncio.wait_for(sub.next(), deadline - asyncio.get_running_loop().time())
        except TimeoutError:
            return  # the lifetime is up: the client reconnects

        if event.type == "DELETED":
            yield ServerSentEvent(event="end", raw_data=StreamEnd(id=sub.name, phase=phase_of(obj),
                                                                  reason="deleted").model_dump_json())
            return
        version = _version(event.object)
        if version is not None and last is not None and version <= last:
            continue  # already sent (the watch and the initial read overlap)
        obj, last = event.object, version
        yield ServerSentEvent(event="video", id=str(version or ""),
                              raw_data=to_public(obj, settings.s3_bucket).model_dump_json())
    yield ServerSentEvent(event="end", raw_data=StreamEnd(id=sub.name, phase=phase_of(obj),
                                                          reason="finished").model_dump_json())
