"""The renderer's ServiceAccount may patch a MusicVideo's status subresource (RBAC cannot say which
fields); the chart's policy lets it change only status.progress, and only while the MusicVideo is
Running (issue 17). Checked on the real kube-apiserver, acting as the renderer with `kubectl --as`."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import CHART, ROOT, helm, render
from tests.conftest import Cluster
from tests.harness import wait_for

pytestmark = pytest.mark.cluster
SA = "vibecraft-renderer"  # the chart's renderer.serviceAccount.name default


def test_the_policy_guards_every_status_field_but_progress() -> None:
    """One source of truth: the fields the policy keeps unchanged are the CRD's status properties."""
    crd = yaml.safe_load((ROOT / "crds" / "musicvideo.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    (policy,) = [d for d in render("default") if d["kind"] == "ValidatingAdmissionPolicy"
                 and d["metadata"]["name"].endswith("-renderer-status")]
    guarded = set(re.findall(r"object\.status\.(\w+) == oldObject", policy["spec"]["validations"][1]["expression"]))
    assert guarded == set(status) - {"progress"}


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chart with one render namespace (its renderer ServiceAccount and RoleBinding); its operator watches elsewhere."""
    suffix = uuid.uuid4().hex[:5]
    name, system, ns = f"vc{suffix}", f"vc-sys-{suffix}", f"renders-{suffix}"
    cluster.kubectl("create", "namespace", ns)
    values = {"s3": {"existingSecret": ""}, "api": {"enabled": False}, "renderer": {"namespaces": [ns]},
              "operator": {"watchNamespaces": ["no-such-namespace"]}, "tenancy": {"enabled": False}}
    vf: Path = tmp_path_factory.mktemp("status-policy") / "values.json"
    vf.write_text(json.dumps(values))
    helm("install", name, str(CHART), "-n", system, "--create-namespace", "-f", str(vf), kubeconfig=cluster.kubeconfig)
    try:
        yield ns
    finally:
        helm("uninstall", name, "-n", system, kubeconfig=cluster.kubeconfig, check=False)
        cluster.kubectl("delete", "namespace", system, ns, "--wait=false", check=False)


def _patch(cluster: Cluster, ns: str, status: dict[str, Any], *, renderer: bool) -> tuple[int, str]:
    who = ["--as", f"system:serviceaccount:{ns}:{SA}"] if renderer else []
    res = cluster.kubectl("patch", "mv", "song", "-n", ns, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}), *who, check=False)
    return res.returncode, " ".join(res.stderr.split())


def test_the_renderer_changes_only_progress_and_only_while_running(cluster: Cluster, crd: None, release: str) -> None:
    ns = release
    mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": "song"},
          "spec": {"audio": {"url": "s3://vibecraft/songs/a.ogg"}, "output": {"url": "s3://vibecraft/videos/a/"}}}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(mv))
    progress = {"progress": {"percent": 40.0, "stage": "composing"}}

    # No phase yet: not started. (The API server takes a moment to pick a new policy up.)
    rc, err = wait_for(lambda: (res := _patch(cluster, ns, progress, renderer=True))[0] != 0 and res,
                       timeout=30, interval=0.5, what="the policy to refuse")
    assert "only while its MusicVideo is Running; song is not started" in err, err
    assert _patch(cluster, ns, {"phase": "Running", "attempts": 1}, renderer=False)[0] == 0  # as the operator

    rc, err = _patch(cluster, ns, progress, renderer=True)
    assert rc == 0, err
    for forged in ({"phase": "Succeeded"}, {"attempts": 7}, {"lastFailure": {"reason": "X", "message": "y"}},
                   {"output": {"videoUrl": "s3://vibecraft/videos/b/video.mp4"}}):
        rc, err = _patch(cluster, ns, {**progress, **forged}, renderer=True)
        assert rc != 0 and "may change only status.progress" in err, (forged, err)

    assert _patch(cluster, ns, {"phase": "Succeeded"}, renderer=False)[0] == 0  # the operator ends it
    rc, err = _patch(cluster, ns, {"progress": {"percent": 99.0}}, renderer=True)  # a late renderer
    assert rc != 0 and "song is Succeeded" in err, err
    got = json.loads(cluster.kubectl("get", "mv", "song", "-n", ns, "-o", "json").stdout)["status"]
    assert (got["phase"], got["attempts"], got["progress"]["percent"]) == ("Succeeded", 1, 40.0)
