"""The operator's Kueue mode (spec.queueName) against a real Kueue controller (sigs.k8s.io/kueue, built from
its Go module by localcluster/build-kueue.sh, cached by version) on the local cluster.

Kueue runs out of cluster with the admin kubeconfig, as the controller-manager does here. Its webhooks
are not registered (they would need a Service the API server can reach): the operator creates its Jobs
suspended with the queue-name label already, which is what Kueue's Job webhook would make of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vibecraft_localcluster.config import REPO_ROOT, cache_root, free_port

from tests.conftest import Cluster
from tests.harness import OperatorProcess, Service, wait_for
from tests.operator.test_operator_e2e import create_mv, finished_status, manifest, phase

pytestmark = pytest.mark.cluster

KUEUE_VERSION = "0.17.0"
KUEUE_API = ("kueue.x-k8s.io", "v1beta2")


@pytest.fixture(scope="module")
def kueue(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A running Kueue controller manager for the session's cluster (Job integration only)."""
    res = subprocess.run(["bash", str(REPO_ROOT / "localcluster" / "build-kueue.sh")], capture_output=True, text=True,
                         env={"KUEUE_VERSION": KUEUE_VERSION, **os.environ})
    assert res.returncode == 0, f"build-kueue.sh failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    home = cache_root() / f"kueue-v{KUEUE_VERSION}"
    cluster.kubectl("apply", "--server-side", "-f", str(home / "crds"))
    for crd in ("workloads", "clusterqueues", "localqueues", "resourceflavors"):
        wait_for(lambda crd=crd: cluster.kubectl(
            "get", f"crd/{crd}.kueue.x-k8s.io", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
            check=False).stdout == "True", what=f"Kueue's {crd} CRD to be established")
    work = tmp_path_factory.mktemp("kueue")
    certs = work / "certs"
    certs.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kueue",
                    "-keyout", str(certs / "tls.key"), "-out", str(certs / "tls.crt")], check=True, capture_output=True)
    # Without its internal cert management, Kueue reads its metrics server's certificate from this fixed path
    # (cmd/kueue/main.go); a self-signed one will do (metrics are off).
    metrics_certs = Path("/etc/kueue/metrics/certs")
    if not (metrics_certs / "tls.crt").exists():
        metrics_certs.mkdir(parents=True, exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            shutil.copy(certs / name, metrics_certs / name)
    health = free_port()
    config = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": free_port(), "host": "127.0.0.1", "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["batch/job"]},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    argv = [str(home / "bin" / "kueue"), f"--config={work / 'config.yaml'}", f"--kubeconfig={cluster.kubeconfig}",
            "--feature-gates=VisibilityOnDemand=false"]  # its API server wants certificates at a fixed path too
    service = Service(argv, env, f"http://127.0.0.1:{health}/readyz", work / "kueue.log", name="Kueue")
    service.start(timeout=120)
    try:
        yield service
    finally:
        service.stop()
        print(f"--- Kueue log ({service.log}) ---\n{service.log_tail(4000)}")


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def queues(cluster: Cluster, namespace: str, cpu: str) -> str:
    """A ClusterQueue for `namespace` with `cpu` of nominal quota (in a cohort, as one per tenant would be),
    and the LocalQueue its MusicVideos name; returns the LocalQueue's name."""
    group, version = KUEUE_API
    api = f"{group}/{version}"
    apply(cluster,
          {"apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": "default-flavor"}},
          {"apiVersion": api, "kind": "ClusterQueue", "metadata": {"name": namespace},
           "spec": {"cohortName": "renders", "namespaceSelector": {},
                    "resourceGroups": [{"coveredResources": ["cpu", "memory", "ephemeral-storage"],
                                        "flavors": [{"name": "default-flavor", "resources": [
                                            {"name": "cpu", "nominalQuota": cpu},
                                            {"name": "memory", "nominalQuota": "64Gi"},
                                            {"name": "ephemeral-storage", "nominalQuota": "100Gi"}]}]}]}},
          {"apiVersion": api, "kind": "LocalQueue", "metadata": {"name": "renders", "namespace": namespace},
           "spec": {"clusterQueue": namespace}})
    return "renders"


def test_kueue_admits_renders_within_its_quota_one_at_a_time(
        kueue: Service, operator: OperatorProcess, apis: Any, cluster: Cluster) -> None:
    """With quota for one render (1 CPU), Kueue admits one MusicVideo's suspended Job and holds the
    other's (that MusicVideo says Queued, waiting for Kueue) until the first finishes; both succeed,
    and never do both run at once. Which one goes first is Kueue's choice: both are created within the
    same second, and creation timestamps (Kueue's FIFO key) have one-second resolution."""
    custom, batch, _ = apis
    ns = operator.namespace
    queue = queues(cluster, ns, cpu="1")
    for name in ("k1", "k2"):
        create_mv(custom, ns, manifest(name, queueName=queue, style={"prompt": "sleep:4,ok"},
                                       resources={"cpu": "1"}))
    seen_both_running = False

    def done() -> bool:
        nonlocal seen_both_running
        phases = [phase(custom, ns, n) for n in ("k1", "k2")]
        unsuspended = [j for j in batch.list_namespaced_job(ns).items
                       if not j.spec.suspend and not (j.status.succeeded or j.status.failed)]
        seen_both_running |= len(unsuspended) > 1
        return all(p in ("Succeeded", "Failed") for p in phases)

    wait_for(lambda: sorted(str(phase(custom, ns, n)) for n in ("k1", "k2")) == ["Queued", "Running"],
             timeout=90, what="Kueue to admit one render and hold the other")
    wait_for(done, timeout=180, interval=0.2, what="both renders to finish")
    statuses = {n: finished_status(custom, ns, n) for n in ("k1", "k2")}
    assert all(s["phase"] == "Succeeded" for s in statuses.values()), statuses
    assert not seen_both_running, "Kueue admitted both within quota for one"
    group, version = KUEUE_API
    workloads = custom.list_namespaced_custom_object(group, version, ns, "workloads")["items"]
    admitted = [w for w in workloads if any(c["type"] == "Admitted" and c["status"] == "True"
                                            for c in (w.get("status") or {}).get("conditions") or [])]
    assert len(workloads) == 2 and len(admitted) == 2, workloads
