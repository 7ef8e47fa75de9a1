"""Tenancy at admission (issue 17): in a governed namespace — each API tenant's, and those listed in
tenancy.namespaces — a MusicVideo that reads or writes outside the namespace's storage prefixes, hides a
traversal in its URL, or names a model or PriorityClass not allowed is refused at `kubectl apply` by the
chart's ValidatingAdmissionPolicy, on the real kube-apiserver, with a message saying what is allowed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.test_chart import CHART, helm
from tests.conftest import Cluster
from tests.harness import wait_for

pytestmark = pytest.mark.cluster


def _mv(audio: str, output: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "vibecraft.io/v1alpha1", "kind": "MusicVideo", "metadata": {"name": "mv"},
            "spec": {"audio": {"url": audio}, "output": {"url": output}, **spec}}


@pytest.fixture(scope="module")
def governed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A release with API tenants alice and bob and one kubectl team namespace; names of the namespaces."""
    suffix = uuid.uuid4().hex[:5]
    release, system, team, free = f"vc{suffix}", f"vc-sys-{suffix}", f"team-{suffix}", f"free-{suffix}"
    prefix = f"t{suffix}-"
    for ns in (team, free):
        cluster.kubectl("create", "namespace", ns)
    values = {"api": {"tenants": ["alice", "bob"], "namespacePrefix": prefix},
              "s3": {"existingSecret": ""}, "operator": {"watchNamespaces": [f"{prefix}*", team]},
              "tenancy": {"priorityClasses": ["renders-low"],
                          "namespaces": {team: {"audioPrefixes": ["s3://vibecraft/teams/a/in/"],
                                                "outputPrefixes": ["s3://vibecraft/teams/a/out/"]}}}}
    vf: Path = tmp_path_factory.mktemp("tenancy") / "values.json"
    vf.write_text(json.dumps(values))
    helm("install", release, str(CHART), "-n", system, "--create-namespace", "-f", str(vf),
         kubeconfig=cluster.kubeconfig)
    names = {"alice": f"{prefix}alice", "bob": f"{prefix}bob", "team": team, "free": free}
    for tenant in ("alice", "bob"):  # the chart's tenant quota refuses creates until it has been counted
        wait_for(lambda ns=names[tenant]: "musicvideos" in cluster.kubectl(
            "get", "resourcequota", "-n", ns, "-o", "jsonpath={.items[*].status.used}").stdout,
            timeout=90, what=f"the quota of {names[tenant]} to be counted")
    try:
        yield names
    finally:
        helm("uninstall", release, "-n", system, kubeconfig=cluster.kubeconfig, check=False)
        cluster.kubectl("delete", "namespace", system, *names.values(), "--wait=false", check=False)


def _apply(cluster: Cluster, namespace: str, mv: dict[str, Any]) -> tuple[int, str]:
    res = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(mv), check=False)
    return res.returncode, " ".join(res.stderr.split())


A_IN, A_OUT = "s3://vibecraft/uploads/alice/song.ogg", "s3://vibecraft/videos/alice/v1/"
REFUSED = [  # (namespace key, manifest, what the message must say)
    ("alice", _mv("s3://vibecraft/uploads/bob/song.ogg", A_OUT),
     "spec.audio.url s3://vibecraft/uploads/bob/song.ogg is outside this namespace's storage"),
    ("alice", _mv(A_IN, "s3://vibecraft/videos/bob/v1/"), "spec.output.url s3://vibecraft/videos/bob/v1/ is outside"),
    ("alice", _mv(A_IN, "s3://other-bucket/videos/alice/v1/"), "must start with s3://vibecraft/videos/alice/"),
    ("alice", _mv("http://169.254.169.254/latest/meta-data/song.ogg", A_OUT),
     "must start with s3://vibecraft/uploads/alice/ or https://"),
    ("alice", _mv(A_IN, A_OUT, style={"backend": "replicate", "prompt": "x", "model": "someone/expensive-model"}),
     "spec.style.model someone/expensive-model is not allowed in namespace"),
    ("alice", _mv(A_IN, A_OUT, style={"backend": "replicate", "prompt": "x", "motion": "clips",
                                      "clipModel": "someone/expensive-video-model"}),
     "spec.style.clipModel someone/expensive-video-model is not allowed in namespace"),
    ("bob", _mv(A_IN, "s3://vibecraft/videos/bob/v1/"), "spec.audio.url s3://vibecraft/uploads/alice/song.ogg is outside"),
    ("alice", _mv(A_IN, A_OUT, priorityClassName="system-cluster-critical"),
     "spec.priorityClassName system-cluster-critical is not allowed in namespace"),
    ("team", _mv("s3://vibecraft/uploads/alice/song.ogg", "s3://vibecraft/teams/a/out/x/"),
     "must start with s3://vibecraft/teams/a/in/"),
    ("team", _mv("s3://vibecraft/teams/a/in/song.ogg", "s3://vibecraft/teams/a/"),
     "must start with s3://vibecraft/teams/a/out/"),
]
# Traversal: the CRD's key grammar (issue 18) refuses these in every namespace, before the policy (whose own
# checks for `.`/`..` segments and encoded dots stay as a second wall) is asked.
REFUSED_BY_THE_CRD = [
    ("alice", _mv("s3://vibecraft/uploads/alice/../bob/song.ogg", A_OUT), "audio.url must name a bucket and an object"),
    ("alice", _mv("s3://vibecraft/uploads/alice/%2e%2e/bob/song.ogg", A_OUT), "the key made of letters, digits"),
    ("alice", _mv(A_IN, "s3://vibecraft/videos/alice/./../bob/"), "output.url must be an s3:// prefix"),
]
ACCEPTED = [
    ("alice", _mv(A_IN, A_OUT)),
    ("alice", _mv("https://example.com/song.ogg", A_OUT, priorityClassName="renders-low",
                  style={"backend": "replicate", "prompt": "x", "model": "black-forest-labs/flux-schnell"})),
    ("alice", _mv(A_IN, A_OUT, style={"backend": "replicate", "prompt": "x", "motion": "clips",
                                      "clipModel": "wan-video/wan-2.2-i2v-fast"})),
    ("bob", _mv("s3://vibecraft/uploads/bob/a.ogg", "s3://vibecraft/videos/bob/v1/video.mp4")),
    ("team", _mv("s3://vibecraft/teams/a/in/song.ogg", "s3://vibecraft/teams/a/out/x/")),
    ("free", _mv("s3://vibecraft/uploads/bob/a.ogg", "s3://vibecraft/videos/bob/")),  # not governed
]


def test_manifests_leaving_their_namespace_are_refused_with_a_message(cluster: Cluster, crd: None,
                                                                      governed: dict[str, str]) -> None:
    # The API server takes a moment to pick a new policy (and its parameters) up.
    wait_for(lambda: _apply(cluster, governed["alice"], REFUSED[0][1])[0] != 0, timeout=30, interval=0.5,
             what="the tenancy policy to take effect")
    said = [(key, *_apply(cluster, governed[key], mv)) for key, mv, _ in REFUSED]
    for (key, rc, err), (_, mv, expected) in zip(said, REFUSED, strict=True):
        assert rc != 0 and expected in err, (key, mv["spec"], err)
        assert "ValidatingAdmissionPolicy" in err, err  # the chart's policy, not the CRD's schema
    for key, mv, expected in REFUSED_BY_THE_CRD:
        rc, err = _apply(cluster, governed[key], mv)
        assert rc != 0 and expected in err and "is invalid" in err, (key, mv["spec"], err)


def test_manifests_inside_their_namespace_are_accepted(cluster: Cluster, crd: None, governed: dict[str, str]) -> None:
    for key, mv in ACCEPTED:
        rc, err = _apply(cluster, governed[key], mv)
        assert rc == 0, (key, mv["spec"], err)


def test_a_governed_namespace_without_its_parameters_refuses(cluster: Cluster, crd: None,
                                                             governed: dict[str, str]) -> None:
    """Deleting the ConfigMap does not open the namespace: the binding's parameterNotFoundAction is Deny."""
    ns = governed["bob"]
    (cm,) = json.loads(cluster.kubectl("get", "configmap", "-n", ns, "-o", "json", "-l",
                                       "app.kubernetes.io/component=operator").stdout)["items"]
    cluster.kubectl("delete", "configmap", cm["metadata"]["name"], "-n", ns)
    try:
        inside = _mv("s3://vibecraft/uploads/bob/a.ogg", "s3://vibecraft/videos/bob/v1/")
        _, err = wait_for(lambda: (res := _apply(cluster, ns, inside))[0] != 0 and res, timeout=30, interval=0.5,
                          what="the policy to refuse without its parameters")
        assert "param" in err.lower(), err
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            cm["metadata"].pop(key, None)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(cm))
