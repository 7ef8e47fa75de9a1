"""A second local cluster whose node is real: containerd + runc + CNI and the kubelet v1.37, running
the images built from the project's Dockerfiles (localcluster/realnode.py, build-node.sh,
build-images.sh). Module-scoped: started once for the tests in this directory."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from vibecraft_localcluster.cluster import LocalCluster
from vibecraft_localcluster.config import REPO_ROOT, ClusterConfig, Ports

from tests.conftest import S3Server
from tests.harness import kubectl

RENDERER_IMAGE = f"localhost/vibecraft/renderer:{version('vibecraft')}"


class RealCluster:
    def __init__(self, lc: LocalCluster) -> None:
        self.lc, self.cfg = lc, lc.cfg
        self.kubeconfig = str(lc.cfg.kubeconfig)
        # One endpoint for both sides: the bridge address pods use is local to the host too.
        c = lc.cfg
        self.s3 = S3Server(c.pod_s3_endpoint, c.s3_access_key, c.s3_secret_key, c.bucket, c.s3_region)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, check=check, input=input)

    def diagnose(self, namespace: str, *pods: str) -> str:
        """What a timed-out wait prints: the pods as `kubectl describe` shows them (with their events),
        the node's conditions and the kubelet's last errors. CI runs once; its output must say why."""
        out = [self.kubectl("describe", "pod", "-n", namespace, *pods, check=False).stdout[-4000:]]
        node = self.kubectl("get", "node", self.cfg.node_name, "-o",
                            "jsonpath={range .status.conditions[*]}{.type}={.status} {end}{.spec.taints}",
                            check=False)
        out.append(f"node: {node.stdout}")
        log = self.lc.logs / "kubelet.log"
        errors = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("E")]
        out.append("kubelet errors:\n" + "\n".join(line[:400] for line in errors[-8:]))
        return "\n".join(out)


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
