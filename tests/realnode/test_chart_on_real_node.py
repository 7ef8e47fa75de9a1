"""The Helm chart as a kind or EKS user installs it, on the real node: the operator and the API run as
pods from the built images with the chart's probes, security contexts and resources; the API is
reached the way NOTES.txt says (`kubectl port-forward svc/vibecraft-api`), and a song uploaded
through it renders in a renderer pod the operator pod started.

First-user path (issue 15): until the API key Secret exists the API pod is not Ready and its events
say why, in the readiness probe's own words."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import version
from typing import Any

import httpx
import pytest
from vibecraft_localcluster.config import REPO_ROOT, find_tool

from tests.api.utils import wav_bytes
from tests.conftest import Cluster
from tests.harness import wait_for

pytestmark = pytest.mark.realnode

# Not "vibecraft": its cluster-scoped names (ClusterRole vibecraft-renderer, ...) are what crds/rbac gives
# the other tests in this shared cluster; a release containing the chart's name is its full name.
RELEASE, NAMESPACE, TENANT = "vibecraft-real", "vibecraft-system", "demo"
KEYS_SECRET = "vibecraft-api-keys"  # the chart's api.keysSecret default
API = "app.kubernetes.io/component=api"
OPERATOR = "app.kubernetes.io/component=operator"


@dataclass
class Release:
    cluster: Cluster
    key: str  # the demo tenant's, stored (hashed) in the key Secret by the second test

    @contextmanager
    def api(self) -> Iterator[httpx.Client]:
        """The API through `kubectl port-forward svc/vibecraft-api :80`, as NOTES.txt says."""
        proc = subprocess.Popen([find_tool("kubectl"), "--kubeconfig", self.cluster.kubeconfig, "port-forward",
                                 "-n", NAMESPACE, f"svc/{RELEASE}-api", ":80"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8000"
            m = re.search(r"127\.0\.0\.1:(\d+) ->", line)
            assert m, f"kubectl port-forward said: {line}"
            with httpx.Client(base_url=f"http://127.0.0.1:{m.group(1)}", timeout=30,
                              headers={"Authorization": f"Bearer {self.key}"}) as client:
                yield client
        finally:
            proc.kill()
            proc.wait()


KIND_VALUES = REPO_ROOT / "charts" / "vibecraft" / "ci" / "kind-values.yaml"


def _values(cluster: Cluster) -> dict[str, Any]:
    """On top of docs/kind.md's values: the images as build-images.sh names them (what `kind load
    image-archive` of its archives gives), this cluster's S3 instead of MinIO, and for the tenant's
    renders storage credentials the S3 server limits to the tenant's prefixes (issue 17)."""
    s3 = cluster.s3
    key, secret = cluster.lc.s3_identity(f"tenant-{TENANT}", read=[f"uploads/{TENANT}/"], write=[f"videos/{TENANT}/"])
    return {
        "image": {"registry": "localhost/", "tag": version("vibecraft")},
        # Pods and the test (presigned URLs) both reach S3 on the bridge address.
        "s3": {"endpoint": s3.endpoint, "publicEndpoint": s3.endpoint, "region": s3.region, "bucket": s3.bucket,
               "credentials": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key},
               "namespaceCredentials": {f"vc-{TENANT}": {"accessKeyId": key, "secretAccessKey": secret}}},
        "operator": {"logFormat": "full"},
    }


def _pod(cluster: Cluster, selector: str) -> dict[str, Any]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout)["items"]
    return pods[0] if pods else {}


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


@pytest.fixture(scope="module")
def release(real_cluster: Cluster) -> Iterator[Release]:
    c = real_cluster
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(_values(c), f)
        f.flush()
        # No --wait: without its key Secret the API is not Ready, and that is the first thing tested.
        res = subprocess.run([find_tool("helm"), "upgrade", "--install", RELEASE, str(REPO_ROOT / "charts" / "vibecraft"),
                              "-n", NAMESPACE, "--create-namespace", "-f", str(KIND_VALUES), "-f", f.name,
                              "--kubeconfig", c.kubeconfig],
                             capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FIRST: the API is not Ready until the Secret" in res.stdout, res.stdout
    try:
        wait_for(lambda: _ready(_pod(c, OPERATOR)), timeout=180,
                 what=lambda: f"the operator pod to be Ready\n{c.diagnose(NAMESPACE)}")
        yield Release(c, secrets.token_urlsafe(24))
    finally:
        subprocess.run([find_tool("helm"), "uninstall", RELEASE, "-n", NAMESPACE, "--kubeconfig", c.kubeconfig,
                        "--wait", "--timeout", "2m"], capture_output=True, text=True)


def test_without_a_key_the_api_pod_is_unready_and_says_why(release: Release) -> None:
    c = release.cluster

    def said() -> str | None:
        events = json.loads(c.kubectl("get", "events", "-n", NAMESPACE, "--field-selector", "reason=Unhealthy",
                                      "-o", "json").stdout)["items"]
        # Before the server listens the probe says "does not answer"; then it names the missing keys.
        return next((e["message"] for e in events if "apiKeys" in e["message"]), None)

    message = wait_for(said, timeout=120, what=lambda: f"the API's readiness event\n{c.diagnose(NAMESPACE)}")
    assert message.strip() == "Readiness probe failed: not ready: apiKeys: not loaded", message
    assert not _ready(_pod(c, API))


def test_with_a_key_the_api_is_ready_and_reached_through_its_service(release: Release) -> None:
    c = release.cluster
    c.kubectl("create", "secret", "generic", KEYS_SECRET, "-n", NAMESPACE,
              f"--from-literal={TENANT}=sha256:{hashlib.sha256(release.key.encode()).hexdigest()}")
    wait_for(lambda: _ready(_pod(c, API)), timeout=120, what=lambda: f"the API pod to be Ready\n{c.diagnose(NAMESPACE)}")
    with release.api() as api:
        listed = api.get("/v1/videos")
    assert listed.status_code == HTTPStatus.OK, listed.text
    assert listed.json()["items"] == []
    # And as other pods reach it: the Service's ClusterIP, through kube-proxy's rules (they apply to
    # the node's own traffic too, so the test can use them from here).
    ip = c.kubectl("get", "svc", f"{RELEASE}-api", "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}").stdout
    via_service = httpx.get(f"http://{ip}/v1/videos", headers={"Authorization": f"Bearer {release.key}"}, timeout=10)
    assert via_service.status_code == HTTPStatus.OK and via_service.json() == listed.json(), via_service.text


def test_a_song_uploaded_through_the_api_renders_in_pods_the_operator_pod_started(release: Release) -> None:
    c = release.cluster
    with release.api() as api:
        upload = api.post("/v1/uploads/file", params={"filename": "song.wav"}, content=wav_bytes(4.0, 22050))
        assert upload.status_code == HTTPStatus.CREATED, upload.text
        created = api.post("/v1/videos", json={"audio": {"key": upload.json()["key"]},
                                               "video": {"height": 180, "aspectRatio": "16:9", "fps": 15}})
        assert created.status_code == HTTPStatus.CREATED, created.text
        video = created.json()

        def finished() -> dict[str, Any] | None:
            got: dict[str, Any] = api.get(video["links"]["self"]).json()
            return got if got["phase"] in ("Succeeded", "Failed") else None

        start = time.monotonic()
        final = wait_for(finished, timeout=300, what=lambda: f"the video to finish\n{c.diagnose(f'vc-{TENANT}')}")
        assert final["phase"] == "Succeeded", (final, time.monotonic() - start)
        links = api.get(video["links"]["download"]).json()
    mp4 = httpx.get(links["videoUrl"]).content
    assert mp4[4:8] == b"ftyp" and len(mp4) == final["output"]["sizeBytes"]
    # ... with the tenant's scoped storage key, not the bucket-wide one the API holds.
    secret = json.loads(c.kubectl("get", "secret", "vibecraft-s3", "-n", f"vc-{TENANT}", "-o", "json").stdout)
    scoped = base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]).decode()
    assert scoped == c.lc.s3_identity(f"tenant-{TENANT}", read=[], write=[])[0] != c.s3.access_key
    # The render ran in a pod on the real node, started by the operator running as a pod.
    pods = json.loads(c.kubectl("get", "pods", "-n", f"vc-{TENANT}", "-o", "json").stdout)["items"]
    statuses = [p["status"]["containerStatuses"][0] for p in pods]
    assert statuses and all(s["imageID"] and s["state"]["terminated"]["reason"] == "Completed" for s in statuses)
    # Its progress reports got through the chart's renderer status policy (a pod of the current Job).
    log = c.pod_log(f"vc-{TENANT}", pods[-1]["metadata"]["name"], "renderer")
    accepted = re.search(r"progress: (\d+) status patches accepted", log)
    assert accepted and int(accepted[1]) > 0, log[-3000:]
    operator = _pod(c, OPERATOR)
    assert operator["spec"]["nodeName"] == c.cfg.node_name and _ready(operator)
