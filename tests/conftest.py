"""Session fixtures: one real local cluster and S3 server per test run, a namespace per test.

Set VIBECRAFT_TEST_CLUSTER_DIR to the state dir of a cluster started with `make cluster-up`
to reuse it instead of starting a private one (faster when iterating).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from vibecraft_localcluster.cluster import LocalCluster
from vibecraft_localcluster.config import REPO_ROOT, ClusterConfig, Ports

from tests.harness import install_crd, kubectl


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region, "AWS_ENDPOINT_URL": self.endpoint}

    def operator_env(self) -> dict[str, str]:
        """What an operator under test needs (with tests.harness.OperatorProcess): this S3, small renders."""
        return {**self.env(), "VIBECRAFT_S3_ENDPOINT": self.endpoint, "VIBECRAFT_S3_REGION": self.region,
                "VIBECRAFT_DEFAULT_CPU": "100m",  # several renders must fit the one test node
                "VIBECRAFT_RESYNC_SECONDS": "5"}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)


class Cluster:
    """Handle on the running local cluster for tests."""

    def __init__(self, lc: LocalCluster) -> None:
        self.lc = lc
        self.cfg = lc.cfg
        self.kubeconfig = str(lc.cfg.kubeconfig)
        self.state_dir = lc.cfg.state_dir

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(self.kubeconfig)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, check=check, input=input)

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        path = self.state_dir / "pod-logs" / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reuse = os.environ.get("VIBECRAFT_TEST_CLUSTER_DIR")
    if reuse:
        lc = LocalCluster(ClusterConfig.load(Path(reuse)))
        yield Cluster(lc)
        return
    state = tmp_path_factory.mktemp("cluster")
    lc = LocalCluster(ClusterConfig(state_dir=state, ports=Ports.random(), node_name="test-node"))
    lc.up()
    try:
        yield Cluster(lc)
    finally:
        lc.down()


@pytest.fixture(scope="session")
def s3(cluster: Cluster) -> S3Server:
    c = cluster.cfg
    return S3Server(c.s3_endpoint, c.s3_access_key, c.s3_secret_key, c.bucket, c.s3_region)


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The MusicVideo CRD, installed and established."""
    install_crd(cluster.kubeconfig)


def new_namespace(cluster: Cluster, prefix: str = "t") -> str:
    """Create a uniquely named namespace, ready for pods (its default ServiceAccount exists)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    # The controller-manager creates the default ServiceAccount asynchronously; pods need it.
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=30s")
    return name


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = new_namespace(cluster)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def provision_renders(cluster: Cluster, s3: S3Server, namespace: str) -> None:
    """What an administrator (the Helm chart) sets up where renders run: renderer SA and RBAC, the S3 Secret."""
    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "crds" / "rbac" / "renderer.yaml").read_text()) if d]
    for doc in docs:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "vibecraft-s3",
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")
