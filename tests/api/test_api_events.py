"""Event streams share one Kubernetes watch per namespace; health, readiness and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from vibecraft_api.kube import Kube, load_config
from vibecraft_api.watches import NamespaceWatch, Subscription, WatchEvent, WatchHub

from tests.api.conftest import ApiSystem, ServerThread, TenantHandle
from tests.api.utils import SseReader, patch_status
from tests.harness import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.s3]


def no_subscribers(hub: WatchHub, namespace: str) -> bool:
    return namespace not in hub.watches or not hub.watches[namespace].subscriber_count


def test_many_streams_share_one_watch(new_tenant: Callable[..., TenantHandle], api_server: ServerThread,
                                      admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    t = new_tenant()
    kube = api_server.runtime.kube
    calls: list[str] = []
    real_watch = kube.watch

    def counting_watch(path: str, params: Any, timeout: int) -> AsyncGenerator[dict[str, Any], None]:
        calls.append(path)
        return real_watch(path, params, timeout)  # type: ignore[no-any-return]

    monkeypatch.setattr(kube, "watch", counting_watch)
    ids = [t.client.post("/v1/videos", json={"audio": {"url": f"https://example.com/{i}.mp3"}}).json()["id"]
           for i in range(2)]
    readers = [SseReader(t.client, f"/v1/videos/{ids[i % 2]}/events").start() for i in range(6)]
    for r in readers:
        r.wait_events(lambda evs: len(evs) >= 1)
    hub = api_server.runtime.hub
    assert hub.watches[t.namespace].subscriber_count == 6
    assert [c for c in calls if f"/namespaces/{t.namespace}/" in c] == [
        f"/apis/vibecraft.io/v1alpha1/namespaces/{t.namespace}/musicvideos"], "one watch for six streams"

    for video_id in ids:
        patch_status(admin, t.namespace, video_id, {"phase": "Running", "progress": {"percent": 50}})
        patch_status(admin, t.namespace, video_id, {"phase": "Cancelled"})
    for i, r in enumerate(readers):
        events = r.join()
        assert [e.json()["phase"] for e in events if e.event == "video"][-1] == "Cancelled"
        assert all(e.json()["id"] == ids[i % 2] for e in events), "a stream only carries its own video"
        assert events[-1].event == "end"
    # Streams unsubscribe as their responses finish.
    wait_for(lambda: no_subscribers(hub, t.namespace), timeout=5, interval=0.05, what="the subscriptions to end (leaked?)")


def test_health_readiness_metrics(anon: httpx.Client, new_tenant: Callable[..., TenantHandle]) -> None:
    assert anon.get("/healthz").json() == {"status": "ok"}
    ready = anon.get("/readyz")
    assert ready.status_code == HTTPStatus.OK, ready.text
    assert ready.json() == {"status": "ready", "checks": {"kubernetes": "ok", "s3": "ok", "apiKeys": "ok"}}
    t = new_tenant()
    t.client.get("/v1/videos/mv-nothere")
    text = anon.get("/metrics").text
    assert 'vibecraft_api_requests_total{method="GET",route="/v1/videos/{id}",status="404"}' in text
    assert 'vibecraft_api_request_duration_seconds_bucket{le="0.005",method="GET",route="/healthz"}' in text
    assert "vibecraft_api_watches" in text and "vibecraft_api_event_streams" in text
    assert "mv-nothere" not in text, "route templates, not paths"


def test_openapi_documents_problems_and_examples(anon: httpx.Client) -> None:
    doc = anon.get("/openapi.json").json()
    create = doc["paths"]["/v1/videos"]["post"]
    assert set(create["responses"]) >= {"200", "201", "401", "413", "415", "422", "429", "503"}
    assert list(create["responses"]["422"]["content"]) == ["application/problem+json"]
    assert "Retry-After" in create["responses"]["429"]["headers"]
    assert doc["components"]["schemas"]["VideoCreate"]["examples"]
    assert doc["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    events = doc["paths"]["/v1/videos/{id}/events"]["get"]["responses"]
    assert "text/event-stream" in events["200"]["content"]
    assert list(events["404"]["content"]) == ["application/problem+json"]


def test_a_client_that_goes_away_unsubscribes(new_tenant: Callable[..., TenantHandle],
                                              api_server: ServerThread) -> None:
    t = new_tenant()
    video_id = t.client.post("/v1/videos", json={"audio": {"url": "https://example.com/a.mp3"}}).json()["id"]
    hub = api_server.runtime.hub
    with httpx.Client(base_url=api_server.url, headers=t.client.headers) as client, \
            client.stream("GET", f"/v1/videos/{video_id}/events") as resp:
        assert resp.status_code == HTTPStatus.OK
        lines = resp.iter_lines()  # keep a reference: a discarded iterator closes the response (a disconnect)
        assert next(lines) == "event: video"
        assert hub.watches[t.namespace].subscriber_count == 1
    wait_for(lambda: no_subscribers(hub, t.namespace), timeout=5, interval=0.05,
             what="the subscription to end with its client")


def test_relist_after_an_expired_version_resends_state(new_tenant: Callable[..., TenantHandle],
                                                       api_system: ApiSystem) -> None:
    """What a watch does on 410 Gone: every subscriber gets its object's current state, or DELETED."""
    t = new_tenant()
    video_id = t.client.post("/v1/videos", json={"audio": {"url": "https://example.com/a.mp3"}}).json()["id"]

    async def relist() -> tuple[list[WatchEvent], list[WatchEvent]]:
        hub = WatchHub(Kube(load_config(str(api_system.kubeconfig))))
        watch = NamespaceWatch(hub, t.namespace)
        present, gone = Subscription(watch, video_id), Subscription(watch, "mv-gone")
        watch.subscribers = {video_id: {present}, "mv-gone": {gone}}
        rv = await watch._relist()
        assert rv.isdigit()
        await hub.kube.aclose()
        return [present.queue.get_nowait() for _ in range(present.queue.qsize())], \
            [gone.queue.get_nowait() for _ in range(gone.queue.qsize())]

    present, gone = asyncio.run(relist())
    assert [(e.type, e.object["metadata"]["name"]) for e in present] == [("SYNC", video_id)]
    assert [e.type for e in gone] == ["DELETED"]
