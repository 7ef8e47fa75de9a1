"""What `helm install` tells a first user: the API needs a key before it is Ready, and how to make one."""

from __future__ import annotations

import uuid

from tests.chart.test_chart import CHART, helm
from tests.conftest import Cluster


def _notes(cluster: Cluster, namespace: str, *sets: str) -> str:
    res = helm("install", f"vc{uuid.uuid4().hex[:5]}", str(CHART), "-n", namespace, "--dry-run=server",
               *[a for s in sets for a in ("--set", s)], kubeconfig=str(cluster.kubeconfig))
    return res.stdout.split("NOTES:", 1)[1]


def test_notes_say_first_that_the_api_needs_a_key(cluster: Cluster, namespace: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"  # the chart creates the tenant's namespace: one no other test owns
    notes = _notes(cluster, namespace, f"api.tenants={{{tenant}}}")
    first = notes.split("Render your first music video", 1)[0]
    assert "FIRST: the API is not Ready until the Secret vibecraft-api-keys holds an API key" in first
    assert f"kubectl create secret generic vibecraft-api-keys -n {namespace}" in first
    assert f"--from-literal={tenant}=sha256:" in first


def test_notes_do_not_nag_once_the_keys_secret_exists(cluster: Cluster, namespace: str) -> None:
    tenant = f"t{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "secret", "generic", "vibecraft-api-keys", "-n", namespace,
                    f"--from-literal={tenant}=sha256:" + "0" * 64)
    assert "FIRST:" not in _notes(cluster, namespace, f"api.tenants={{{tenant}}}")


def test_notes_warn_when_a_tenant_gets_the_bucket_wide_storage_key(cluster: Cluster, namespace: str) -> None:
    a, b = f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
    sets = (f"api.tenants={{{a},{b}}}", "s3.credentials.accessKeyId=ADMIN", "s3.credentials.secretAccessKey=S")
    warned = _notes(cluster, namespace, *sets, f"s3.namespaceCredentials.vc-{a}.accessKeyId=A",
                    f"s3.namespaceCredentials.vc-{a}.secretAccessKey=AS")
    assert f"WARNING: the tenant namespaces vc-{b} get the bucket-wide storage key" in warned, warned
    both = {f"s3.namespaceCredentials.vc-{t}.{k}={v}" for t in (a, b) for k, v in (("accessKeyId", t),
                                                                                 ("secretAccessKey", "x"))}
    assert "WARNING" not in _notes(cluster, namespace, *sets, *sorted(both))
