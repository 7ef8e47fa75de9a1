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
def kube(request: pytest.FixtureRequest) -> tuple[Any, str]:
    try:
        return request.getfixturevalue("cluster"), request.getfixturevalue("namespace")
    except pytest.FixtureLookupError:
        pytest.skip("no `cluster` fixture (tests/conftest.py) in this checkout")


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
