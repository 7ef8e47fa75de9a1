"""A second local cluster whose node is real: containerd + runc + CNI and the kubelet v1.37, running
the images built from the project's Dockerfiles (localcluster/realnode.py, build-node.sh,
build-images.sh). Module-scoped: started once for the tests in this directory."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from vibecraft_localcluster.cluster import LocalCluster
from vibecraft_localcluster.config import REPO_ROOT, ClusterConfig, Ports

from tests.harness import kubectl

RENDERER_IMAGE = f"localhost/vibecraft/renderer:{version('vibecraft')}"


class RealCluster:
    def __init__(self, lc: LocalCluster) -> None:
        self.lc, self.cfg = lc, lc.cfg
        self.kubeconfig = str(lc.cfg.kubeconfig)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, check=check, input=input)

    def s3(self) -> Any:
        import boto3

        c = self.cfg
        return boto3.client("s3", endpoint_url=c.s3_endpoint, aws_access_key_id=c.s3_access_key,
                            aws_secret_access_key=c.s3_secret_key, region_name=c.s3_region)


def _build(script: str) -> None:
    res = subprocess.run(["bash", str(REPO_ROOT / "localcluster" / script)], capture_output=True, text=True)
    assert res.returncode == 0, f"{script} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    _build("build-node.sh")
    _build("build-images.sh")
    state: Path = tmp_path_factory.mktemp("realcluster")
    lc = LocalCluster(ClusterConfig(state_dir=state, ports=Ports.random(), node_name="real-node", node="kubelet"))
    lc.up()
    try:
        yield RealCluster(lc)
    finally:
        lc.down()
