"""Deleting a MusicVideo (kubectl or the API) cleans its S3 output prefix: checkpoints and cache always,
partial outputs unless the render succeeded. End to end on the local cluster with the real local S3."""

from __future__ import annotations

import time
from typing import Any

import pytest
from vibecraft_common.resource import ANNOTATION_DELETE_OUTPUTS, FINISHED, GROUP, LABEL_FINISHED, LABEL_NAME, PLURAL, VERSION

from tests.conftest import Cluster, S3Server
from tests.harness import OperatorProcess, wait_for
from tests.operator.test_operator_e2e import _gone, create_mv, finished_status, get_mv, manifest, phase

pytestmark = pytest.mark.cluster

OUTPUTS = ["analysis.json", "thumbnail.jpg", "video.mp4"]
LEFTOVERS = ["segments/3f9a2c/manifest.json", "segments/3f9a2c/seg-00001.mp4", "cache/analysis-3f9a2c.json"]


def keys_under(s3: S3Server, prefix: str) -> list[str]:
    """Every key under `prefix` (relative to it), sorted."""
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return sorted(obj["Key"].removeprefix(prefix) for page in pages for obj in page.get("Contents") or [])


def uploads_under(s3: S3Server, prefix: str) -> list[str]:
    """The keys of multipart uploads begun under `prefix` and neither completed nor aborted."""
    pages = s3.client().get_paginator("list_multipart_uploads").paginate(Bucket=s3.bucket, Prefix=prefix)
    return sorted(u["Key"] for page in pages for u in page.get("Uploads") or [])


def put(s3: S3Server, prefix: str, names: list[str]) -> None:
    for name in names:
        s3.client().put_object(Bucket=s3.bucket, Key=prefix + name, Body=b"partial")


def test_kubectl_delete_mid_render_removes_checkpoints_cache_and_partial_outputs(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any) -> None:
    custom, _, _ = apis
    ns = operator.namespace
    prefix = f"e2e/{ns}/midway/"
    neighbour = f"e2e/{ns}/midway-other/"  # shares the name's first letters: must survive
    create_mv(custom, ns, manifest("midway", style={"prompt": "sleep:300"},
                                   output={"url": f"s3://{s3.bucket}/{prefix}"}))
    wait_for(lambda: phase(custom, ns, "midway") == "Running", what="phase Running")
    put(s3, prefix, [*LEFTOVERS, "video.mp4"])  # what a killed render leaves: checkpoints, a partial video
    put(s3, neighbour, LEFTOVERS[:1])
    assert keys_under(s3, prefix) == sorted([*LEFTOVERS, "video.mp4"])

    cluster.kubectl("delete", "musicvideo", "midway", "-n", ns, "--wait=false")
    wait_for(lambda: _gone(lambda: get_mv(custom, ns, "midway")), timeout=120,
             what="MusicVideo deleted (finalizer released)")
    wait_for(lambda: keys_under(s3, prefix) == [], timeout=30,
             what=lambda: f"nothing under {prefix}, still: {keys_under(s3, prefix)}")
    assert keys_under(s3, neighbour) == LEFTOVERS[:1]


def test_deleting_a_succeeded_render_keeps_its_outputs_but_not_its_checkpoints(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any) -> None:
    custom, _, _ = apis
    ns = operator.namespace
    prefix = f"e2e/{ns}/done/"
    create_mv(custom, ns, manifest("done", style={"prompt": "ok"}, output={"url": f"s3://{s3.bucket}/{prefix}"}))
    assert finished_status(custom, ns, "done")["phase"] == "Succeeded"
    put(s3, prefix, LEFTOVERS)

    cluster.kubectl("delete", "musicvideo", "done", "-n", ns, "--wait=false")
    wait_for(lambda: _gone(lambda: get_mv(custom, ns, "done")), timeout=120,
             what="MusicVideo deleted (finalizer released)")
    wait_for(lambda: keys_under(s3, prefix) == OUTPUTS, timeout=30,
             what=lambda: f"only the outputs under {prefix}, got: {keys_under(s3, prefix)}")


def test_a_video_marked_to_go_with_its_files_leaves_nothing_not_even_an_open_upload(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any) -> None:
    """Deleted while its render writes segments and has a multipart upload of video.mp4 open (what the API's
    videos carry, ANNOTATION_DELETE_OUTPUTS): the render is stopped before S3 is cleaned, so nothing
    reappears, and the open upload is aborted."""
    custom, _, core = apis
    ns = operator.namespace
    prefix = f"e2e/{ns}/purged/"
    body = manifest("purged", style={"prompt": "write:120"}, output={"url": f"s3://{s3.bucket}/{prefix}"})
    body["metadata"]["annotations"] = {ANNOTATION_DELETE_OUTPUTS: "true"}
    create_mv(custom, ns, body)
    wait_for(lambda: len(keys_under(s3, prefix)) >= 3 and uploads_under(s3, prefix), timeout=120,
             what="the render writing segments with an upload open")
    cluster.kubectl("delete", "musicvideo", "purged", "-n", ns, "--wait=false")
    wait_for(lambda: _gone(lambda: get_mv(custom, ns, "purged")), timeout=120,
             what="MusicVideo deleted (finalizer released)")
    # Gone means purged: checked at once and again a few seconds later (a render still running would write).
    for _ in range(2):
        assert keys_under(s3, prefix) == [] and uploads_under(s3, prefix) == []
        time.sleep(3)
    assert core.list_namespaced_pod(ns, label_selector=f"{LABEL_NAME}=purged").items == []


def test_a_finished_video_is_labelled_and_goes_after_its_ttl(
        operator: OperatorProcess, cluster: Cluster, s3: S3Server, apis: Any) -> None:
    custom, _, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("brief", style={"prompt": "sleep:2,ok"}, ttlSecondsAfterFinished=8,
                                   output={"url": f"s3://{s3.bucket}/e2e/{ns}/brief/"}))
    create_mv(custom, ns, manifest("kept", style={"prompt": "sleep:2,ok"},
                                   output={"url": f"s3://{s3.bucket}/e2e/{ns}/kept/"}))
    assert finished_status(custom, ns, "brief")["phase"] == "Succeeded"
    finished_at = time.monotonic()
    wait_for(lambda: (get_mv(custom, ns, "brief")["metadata"].get("labels") or {}).get(LABEL_FINISHED) == FINISHED,
             timeout=30, what="the finished label")
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, label_selector=f"!{LABEL_FINISHED}")
    assert "brief" not in [o["metadata"]["name"] for o in listed["items"]]
    wait_for(lambda: _gone(lambda: get_mv(custom, ns, "brief")), timeout=60, what="deleted after its TTL")
    waited = time.monotonic() - finished_at
    assert waited >= 5, f"deleted {waited:.1f}s after it finished, before its 8 s TTL"
    assert finished_status(custom, ns, "kept")["phase"] == "Succeeded"  # no TTL: kept
    assert not _gone(lambda: get_mv(custom, ns, "kept"))
