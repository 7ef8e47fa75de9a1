"""Deleting through the API under load (issue 18): 20 videos deleted at random points of their renders.

A deleted video's render is stopped and its pods waited for before its files go, so nothing written by
the render reappears under a deleted id; its open multipart uploads are aborted; `DELETE` answers 202
with the video (`deleting: true`), which keeps counting as a render in progress until it is gone (404).
The operator runs with the fake renderer (tests/operator/fake_renderer.py, `write:N`: segments written
one after another and a multipart upload of video.mp4 left open, then the outputs).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path

import httpx
import pytest
from vibecraft_common.resource import LABEL_NAME

from tests.api.conftest import ApiSystem, ServerThread, TenantHandle
from tests.conftest import Cluster, S3Server, provision_renders
from tests.harness import OperatorProcess
from tests.operator.conftest import make_operator, stop_operators
from tests.operator.test_operator_cleanup import keys_under, uploads_under

pytestmark = [pytest.mark.cluster, pytest.mark.s3]

VIDEOS = 20
DELETE_WITHIN = 25.0  # seconds after creation: before the Job, while it writes, after it succeeded
GONE_WITHIN = 60.0  # seconds from a DELETE to the video's 404 (its files gone with it)


@pytest.fixture
def roomy_api(api_system: ApiSystem) -> Iterator[ServerThread]:
    """An API that lets one tenant run all 20 renders at once."""
    with ServerThread(api_system.settings(max_concurrent_renders=VIDEOS + 5, rate_limit_per_minute=600.0,
                                          rate_limit_burst=VIDEOS + 5)) as server:
        yield server


@pytest.fixture
def tenant_operator(cluster: Cluster, s3: S3Server, new_tenant: Callable[..., TenantHandle], tmp_path: Path
                    ) -> Iterator[tuple[TenantHandle, OperatorProcess]]:
    t = new_tenant("del")
    provision_renders(cluster, s3, t.namespace)
    op = make_operator(cluster, s3, t.namespace, tmp_path / "operator.log")
    op.start()
    try:
        yield t, op
    finally:
        stop_operators(cluster, t.namespace, op)
        print(f"--- operator log ({op.log}) ---\n{op.log_tail(4000)}")


def test_twenty_deletes_at_random_points_leave_no_object_no_upload_and_no_pod(
        roomy_api: ServerThread, tenant_operator: tuple[TenantHandle, OperatorProcess], cluster: Cluster,
        s3: S3Server) -> None:
    t, _ = tenant_operator
    client = httpx.Client(base_url=roomy_api.url, headers={"Authorization": f"Bearer {t.key}"}, timeout=30)
    rng = random.Random(18)
    results: dict[str, dict[str, float | int | bool]] = {}
    errors: list[str] = []

    def one(index: int) -> None:
        try:
            resp = client.post("/v1/videos", json={"audio": {"url": "https://example.com/song.mp3"},
                                                   "style": {"backend": "procedural", "prompt": "write:15,ok"}})
            assert resp.status_code == HTTPStatus.CREATED, resp.text
            video = resp.json()
            time.sleep(rng.uniform(0, DELETE_WITHIN))
            before = client.get(video["links"]["self"]).json()["phase"]
            deleted = client.delete(video["links"]["self"])
            asked = time.monotonic()
            assert deleted.status_code in (HTTPStatus.ACCEPTED, HTTPStatus.NO_CONTENT), deleted.text
            if deleted.status_code == HTTPStatus.ACCEPTED:
                assert deleted.json()["deleting"] is True and deleted.headers["Location"] == video["links"]["self"]
            while (got := client.get(video["links"]["self"])).status_code == HTTPStatus.OK:
                assert got.json()["deleting"] is True
                assert time.monotonic() - asked < GONE_WITHIN, f"{video['id']} still there after {GONE_WITHIN:.0f}s"
                time.sleep(0.5)
            assert got.status_code == HTTPStatus.NOT_FOUND, got.text
            results[video["id"]] = {"seconds": time.monotonic() - asked, "status": deleted.status_code,
                                    "running": before == "Running"}
        except BaseException as exc:  # reported by the main thread
            errors.append(f"video {index}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(VIDEOS)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(DELETE_WITHIN + GONE_WITHIN + 60)
    assert not errors, errors
    assert len(results) == VIDEOS
    time.sleep(3)  # a render that was not stopped would write again in this time
    left = {vid: (keys_under(s3, f"videos/{t.name}/{vid}/"), uploads_under(s3, f"videos/{t.name}/{vid}/"))
            for vid in results}
    assert all(objects == [] and uploads == [] for objects, uploads in left.values()), \
        {vid: v for vid, v in left.items() if v != ([], [])}
    pods = cluster.kubectl("-n", t.namespace, "get", "pods", "-l", LABEL_NAME, "-o", "name").stdout.split()
    assert pods == [], pods
    seconds = sorted(float(r["seconds"]) for r in results.values())
    print(f"{VIDEOS} deletes: {sum(1 for r in results.values() if r['running'])} while Running, "
          f"{sum(1 for r in results.values() if r['status'] == 204)} gone at once (204); delete to 404 "
          f"median {seconds[len(seconds) // 2]:.1f}s, max {seconds[-1]:.1f}s; 0 objects, 0 uploads, 0 pods left")
