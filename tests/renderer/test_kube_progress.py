"""Progress reaches a real MusicVideo's status.progress (local cluster; the CRD must be installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .helpers import run_render

pytestmark = pytest.mark.cluster


@pytest.fixture
def kube(crd: None, cluster: Any, namespace: str) -> tuple[Any, str]:
    """The cluster, with the MusicVideo CRD installed and established, and a namespace of this test's."""
    return cluster, namespace


def test_status_progress_is_patched(kube: tuple[Any, str], click100: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    cluster, ns = kube
    if cluster.kubectl("get", "crd", "musicvideos.vibecraft.io", check=False).returncode != 0:
        pytest.skip("MusicVideo CRD not installed")
    mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": "song", "namespace": ns},
          "spec": {"audio": {"url": "s3://vibecraft/songs/x.ogg"}, "output": {"url": "s3://vibecraft/videos/x/"},
                   "suspend": True}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(mv))
    res = run_render(
        [str(click100[0]), "-o", str(tmp_path / "v.mp4"), "--width", "160", "--height", "90", "--fps", "10"],
        env={"VIBECRAFT_MUSICVIDEO_NAME": "song", "VIBECRAFT_MUSICVIDEO_NAMESPACE": ns,
             "KUBECONFIG": cluster.kubeconfig},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "patching" not in res.stderr  # no failed patches were logged
    got = json.loads(cluster.kubectl("get", "musicvideo", "song", "-n", ns, "-o", "json").stdout)
    progress = got["status"]["progress"]
    assert progress["stage"] == "uploading" and progress["percent"] == 100
    assert progress["framesDone"] == progress["framesTotal"] == 90
    assert got["spec"]["suspend"] is True  # the renderer never touches the spec


def test_chunk_pods_report_one_rising_total_through_real_conflicts(kube: tuple[Any, str]) -> None:
    """Issue 20: the segments stage's pods write status.progress under the resourceVersion they read. Here a
    third writer changes the MusicVideo between one chunk's read and its write, every time: the real API
    server refuses that write (409), the chunk reads again and its report still lands, and the totals
    (frames summed over the chunks, percent) only rise."""
    from kubernetes import client
    from vibecraft_common.resource import GROUP, PLURAL, VERSION
    from vibecraft_renderer.progress import KubeStatusSink, Snapshot

    cluster, ns = kube
    if cluster.kubectl("get", "crd", "musicvideos.vibecraft.io", check=False).returncode != 0:
        pytest.skip("MusicVideo CRD not installed")
    mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": "split", "namespace": ns},
          "spec": {"audio": {"url": "s3://vibecraft/songs/x.ogg"}, "output": {"url": "s3://vibecraft/videos/x/"},
                   "suspend": True, "parallelism": 2}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(mv))
    api = client.CustomObjectsApi(cluster.api_client())
    other = client.CustomObjectsApi(cluster.api_client())

    class Interloper:
        """The real API, with someone else writing between every other read and the write after it."""

        def __init__(self) -> None:
            self.reads = 0

        def get_namespaced_custom_object_status(self, *args: Any, **kw: Any) -> Any:
            got = api.get_namespaced_custom_object_status(*args, **kw)
            self.reads += 1
            if self.reads % 2:
                other.patch_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, "split", {"status": {"progress": {"message": f"noise {self.reads}"}}})
            return got

        def patch_namespaced_custom_object_status(self, *args: Any, **kw: Any) -> Any:
            return api.patch_namespaced_custom_object_status(*args, **kw)

    sinks = [KubeStatusSink("split", ns, api=Interloper(), chunk=0, chunks=2),
             KubeStatusSink("split", ns, api=api, chunk=1, chunks=2)]
    percents = []
    for done in (0, 40, 80, 100):
        for sink in sinks:
            eta = None if done == 100 else 5
            sink.emit(Snapshot("composing", 0, done, 100, eta, "", span=(10.0, 90.0), render_frames=200), important=True)
            got = api.get_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, "split")["status"]["progress"]
            percents.append(got["percent"])
    assert sinks[0].conflicts == 4 and sinks[0].refused == 0 and sinks[1].refused == 0
    assert percents == sorted(percents) and percents[-1] == 90.0
    assert got["framesDone"] == 200 and got["message"] == "2/2 chunks rendered, 2 reporting" and got["chunks"] == {
        "0": {"stage": "composing", "framesDone": 100, "framesTotal": 100},
        "1": {"stage": "composing", "framesDone": 100, "framesTotal": 100}}
