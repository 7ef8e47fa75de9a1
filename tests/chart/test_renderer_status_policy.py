"""The renderer's ServiceAccount may patch a MusicVideo's status subresource (RBAC cannot say which
fields, nor which MusicVideo); the chart's policy lets it change only status.progress, only while the
MusicVideo is Running, and only from a pod of that MusicVideo's current Job (issue 17). Checked on the real
kube-apiserver with tokens bound to pods, as the kubelet gives each renderer pod. The same install checks
that the operator may create Jobs only in the render namespaces."""

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
from tests.harness import kubectl, wait_for

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
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The chart with one render namespace (its renderer ServiceAccount and RoleBinding); its operator watches elsewhere."""
    suffix = uuid.uuid4().hex[:5]
    name, system, ns = f"vc{suffix}", f"vc-sys-{suffix}", f"renders-{suffix}"
    cluster.kubectl("create", "namespace", ns)
    # (The renderer NetworkPolicy is on, so the real API server validates it; the local CNI does not enforce it.)
    values = {"s3": {"existingSecret": ""}, "api": {"enabled": False},
              "renderer": {"namespaces": [ns], "networkPolicy": {"enabled": True}},
              "operator": {"watchNamespaces": ["no-such-namespace"]}, "tenancy": {"enabled": False}}
    vf: Path = tmp_path_factory.mktemp("status-policy") / "values.json"
    vf.write_text(json.dumps(values))
    helm("install", name, str(CHART), "-n", system, "--create-namespace", "-f", str(vf), kubeconfig=cluster.kubeconfig)
    try:
        yield ns, system
    finally:
        helm("uninstall", name, "-n", system, kubeconfig=cluster.kubeconfig, check=False)
        cluster.kubectl("delete", "namespace", system, ns, "--wait=false", check=False)


def _renderer_pod(cluster: Cluster, ns: str, name: str) -> list[str]:
    """A pod as a renderer Job would name it (never scheduled: it only has to exist, so that a token can be
    bound to it); returns the `kubectl create token` arguments binding a token to it."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"serviceAccountName": SA, "nodeSelector": {"vibecraft.io/no-such-node": "true"},
                    "containers": [{"name": "renderer", "image": "localhost/vibecraft/never-runs:0"}]}}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    uid = cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.metadata.uid}").stdout
    return ["--bound-object-kind", "Pod", "--bound-object-name", name, "--bound-object-uid", uid]


def _patch(cluster: Cluster, ns: str, status: dict[str, Any], *, who: Path | str | None, mv: str = "song"
           ) -> tuple[int, str]:
    """Patch `mv`'s status as the operator (who=None), as a renderer pod (the kubeconfig of its pod-bound
    token) or impersonating the renderer's ServiceAccount (who="impersonate": a token bound to no pod)."""
    args = ["patch", "mv", mv, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status})]
    if who is None:
        res = cluster.kubectl(*args, check=False)
    elif who == "impersonate":
        res = cluster.kubectl(*args, "--as", f"system:serviceaccount:{ns}:{SA}", check=False)
    else:
        res = kubectl(str(who), *args, check=False)
    return res.returncode, " ".join(res.stderr.split())


def test_each_renderer_changes_only_its_own_progress_and_only_while_running(
        cluster: Cluster, crd: None, release: tuple[str, str], tmp_path: Path) -> None:
    ns, _ = release
    for name in ("song", "other"):
        mv = {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": name},
              "spec": {"audio": {"url": f"s3://vibecraft/songs/{name}.ogg"},
                       "output": {"url": f"s3://vibecraft/videos/{name}/"}}}
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(mv))
    # Renderer pods' tokens: song's attempts 1 and 2, an Indexed pod of attempt 2, other's attempt 1, and a
    # pod whose name starts with song's Job name but is not one of its pods.
    pods = ("song-a1-b2c4d", "song-a2-f5g6h", "song-a2-3-j7k8l", "other-a1-m9n2p", "song-a2-x-q4r5s")
    kc = {pod: cluster.service_account_kubeconfig(ns, SA, tmp_path / pod, *_renderer_pod(cluster, ns, pod))
          for pod in pods}
    current, indexed, earlier, neighbour, lookalike = (kc["song-a2-f5g6h"], kc["song-a2-3-j7k8l"],
                                                       kc["song-a1-b2c4d"], kc["other-a1-m9n2p"],
                                                       kc["song-a2-x-q4r5s"])
    progress = {"progress": {"percent": 40.0, "stage": "composing"}}

    # No phase yet: not started. (The API server takes a moment to pick a new policy up.)
    rc, err = wait_for(lambda: (res := _patch(cluster, ns, progress, who=current))[0] != 0 and res,
                       timeout=30, interval=0.5, what="the policy to refuse")
    assert "only while its MusicVideo is Running; song is not started" in err, err
    for mv, job in (("song", "song-a2"), ("other", "other-a1")):  # as the operator
        assert _patch(cluster, ns, {"phase": "Running", "attempts": int(job[-1]), "jobName": job},
                      who=None, mv=mv)[0] == 0

    rc, err = _patch(cluster, ns, progress, who=current)
    assert rc == 0, err
    assert _patch(cluster, ns, {"progress": {"percent": 41.0}}, who=indexed)[0] == 0
    for forged in ({"phase": "Succeeded"}, {"attempts": 7}, {"lastFailure": {"reason": "X", "message": "y"}},
                   {"output": {"videoUrl": "s3://vibecraft/videos/b/video.mp4"}}, {"replicatePredictions": 0}):
        rc, err = _patch(cluster, ns, {**progress, **forged}, who=current)
        assert rc != 0 and "may change only status.progress" in err, (forged, err)

    # Someone else's renderer: the same ServiceAccount, but not a pod of song's current Job.
    for who, pod in ((neighbour, "pod other-a1-m9n2p"), (earlier, "pod song-a1-b2c4d"),
                     (lookalike, "pod song-a2-x-q4r5s"), ("impersonate", "this token is not bound to a pod")):
        rc, err = _patch(cluster, ns, {"progress": {"percent": 66.0}}, who=who)
        assert rc != 0 and f"only for its own MusicVideo: {pod} does not run song's current Job" in err, (pod, err)
    assert _patch(cluster, ns, {"progress": {"percent": 12.0}}, who=neighbour, mv="other")[0] == 0  # its own

    assert _patch(cluster, ns, {"phase": "Succeeded"}, who=None)[0] == 0  # the operator ends it
    rc, err = _patch(cluster, ns, {"progress": {"percent": 99.0}}, who=current)  # a late renderer
    assert rc != 0 and "song is Succeeded" in err, err
    got = json.loads(cluster.kubectl("get", "mv", "song", "-n", ns, "-o", "json").stdout)["status"]
    assert (got["phase"], got["attempts"], got["progress"]["percent"]) == ("Succeeded", 2, 41.0)


def test_the_operator_creates_jobs_only_in_render_namespaces(cluster: Cluster, release: tuple[str, str]) -> None:
    """The same install: the operator's ServiceAccount reads Jobs everywhere but creates and deletes them
    only where the chart bound vibecraft-operator-jobs (a Job runs any image as any ServiceAccount there)."""
    ns, system = release
    (account,) = [a for a in cluster.kubectl("get", "serviceaccounts", "-n", system, "-o", "name").stdout.split()
                  if a.endswith("-operator")]
    operator = f"system:serviceaccount:{system}:{account.removeprefix('serviceaccount/')}"

    def can(verb: str, namespace: str) -> str:
        res = cluster.kubectl("auth", "can-i", verb, "jobs.batch", "-n", namespace, "--as", operator, check=False)
        return res.stdout.strip()

    assert [can(v, ns) for v in ("create", "delete", "watch")] == ["yes", "yes", "yes"]
    assert [can(v, system) for v in ("create", "delete")] == ["yes", "yes"]  # the release namespace renders too
    assert [can(v, "kube-system") for v in ("create", "delete", "watch")] == ["no", "no", "yes"]
