"""Session fixtures: one real local cluster and S3 server per test run, a namespace per test.

The cluster's node is real (localcluster/realnode.py: the kubelet v1.37 with containerd + runc, pods
run from the images built from the project's Dockerfiles): the operator, API, chart and renderer
tests all see real containers. VIBECRAFT_TEST_NODE=agent runs them on the node agent instead (pods as
host processes), the fallback for a machine that cannot run containers; tests that need real
containers then skip. The node agent's own tests (tests/localcluster) always have a cluster of their
own (`agent_cluster`).

Set VIBECRAFT_TEST_CLUSTER_DIR to the state dir of a cluster started with `make cluster-up`
to reuse it instead of starting a private one (faster when iterating).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from vibecraft_localcluster.cluster import LocalCluster
from vibecraft_localcluster.config import REPO_ROOT, ClusterConfig, Ports

from tests.harness import install_crd, kubectl

VERSION = version("vibecraft")
# What localcluster/build-images.sh tags (and the real node imports from its OCI archives).
RENDERER_IMAGE = f"localhost/vibecraft/renderer:{VERSION}"


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
        """What an operator under test needs (with tests.harness.OperatorProcess): this S3, quick resyncs."""
        return {**self.env(), "VIBECRAFT_S3_ENDPOINT": self.endpoint, "VIBECRAFT_S3_REGION": self.region,
                "VIBECRAFT_RESYNC_SECONDS": "5"}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)


class Cluster:
    """Handle on a running local cluster for tests: its kubeconfig, S3 as pods reach it, its renderer image."""

    def __init__(self, lc: LocalCluster) -> None:
        self.lc = lc
        self.cfg = c = lc.cfg
        self.kubeconfig = str(c.kubeconfig)
        self.state_dir = c.state_dir
        self.real = c.node == "kubelet"
        # One endpoint for both sides: loopback for the node agent's host processes; for real pods the
        # bridge address, which is local to the host too.
        self.s3 = S3Server(c.pod_s3_endpoint, c.s3_access_key, c.s3_secret_key, c.bucket, c.s3_region)
        # The node agent maps `vibecraft/renderer` to the host's vibecraft-render; a real node runs the built image.
        self.renderer_image = RENDERER_IMAGE if self.real else f"vibecraft/renderer:{VERSION}"

    def operator_env(self) -> dict[str, str]:
        """An operator under test whose renders run on this cluster's node, the chart's renderer image.

        CPU: a real node enforces the limit (CFS quota) and has 2 cores; 500m lets four renders run at
        once and a short real render finish in seconds (at 100m a 6 s song took ~100 s). The node agent
        does not enforce CPU, so there it only has to let the scheduler place many renders."""
        return {**self.s3.operator_env(), "VIBECRAFT_RENDERER_IMAGE": self.renderer_image,
                "VIBECRAFT_DEFAULT_CPU": "500m" if self.real else "100m"}

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(self.kubeconfig)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return kubectl(self.kubeconfig, *args, check=check, input=input)

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path, *token_args: str) -> Path:
        """A kubeconfig at `path` that authenticates as the ServiceAccount with a fresh 6 h token
        (`token_args` go to `kubectl create token`, e.g. `--bound-object-kind Pod ...`)."""
        token = self.kubectl("-n", namespace, "create", "token", account, "--duration=6h", *token_args).stdout.strip()
        cluster_entry = yaml.safe_load(Path(self.kubeconfig).read_text())["clusters"][0]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [cluster_entry],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": cluster_entry["name"], "user": account}}],
        }))
        return path

    def pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's log: through the API server and kubelet (`kubectl logs`) on a real node, the node
        agent's log file otherwise."""
        if self.real:
            return self.kubectl("logs", "-n", namespace, pod, "-c", container, check=False).stdout
        path = self.state_dir / "pod-logs" / f"{namespace}_{pod}_{container}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnose(self, namespace: str, *pods: str) -> str:
        """What a timed-out wait prints: the pods as `kubectl describe` shows them (with their events),
        the node's conditions and the kubelet's last errors. CI runs once; its output must say why."""
        out = [self.kubectl("describe", "pod", "-n", namespace, *pods, check=False).stdout[-4000:]]
        node = self.kubectl("get", "node", self.cfg.node_name, "-o",
                            "jsonpath={range .status.conditions[*]}{.type}={.status} {end}{.spec.taints}",
                            check=False)
        out.append(f"node: {node.stdout}")
        log = self.lc.logs / ("kubelet.log" if self.real else "node-agent.log")
        if log.exists():
            errors = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("E")]
            out.append(f"{log.name} errors:\n" + "\n".join(line[:400] for line in errors[-8:]))
        return "\n".join(out)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers (`-n 2 --dist loadgroup`): every test that uses the session's
    cluster (its fixtures reach `cluster`) is in one group, so one worker runs them all in order against one
    cluster, as a single process would; every other test file is a group of its own, run by whichever worker is
    free. Most cluster tests wait on the cluster (pods starting, controllers acting), so the CPU-bound renderer
    and unit tests run in that time. Without xdist the groups do nothing.

    The same test also gets the `cluster` (and `s3`) mark from its fixtures, so `-m "not cluster"` leaves out
    exactly the tests that would start a cluster, whether or not their file says so."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        uses_cluster = "cluster" in fixtures
        if uses_cluster:
            item.add_marker(pytest.mark.cluster)
        if "s3" in fixtures:
            item.add_marker(pytest.mark.s3)
        item.add_marker(pytest.mark.xdist_group(CLUSTER_GROUP if uses_cluster else item.nodeid.split("::")[0]))


CLUSTER_GROUP = "cluster"
BESIDE_NICENESS = 10


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures start anything (a cluster, a render)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, the worker running a test outside the cluster group lowers its CPU priority (and that of what
    it starts: renders, ffmpeg) so the cluster tests, the run's longest path, keep the cores when they need
    them; it takes normal priority back before a cluster test (as root; elsewhere it stays where it is)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    beside = all(m.args[:1] != (CLUSTER_GROUP,) for m in item.iter_markers("xdist_group"))
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, BESIDE_NICENESS if beside else 0)


def _build(script: str) -> None:
    res = subprocess.run(["bash", str(REPO_ROOT / "localcluster" / script)], capture_output=True, text=True)
    assert res.returncode == 0, f"{script} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def start_cluster(state: Path, node: str, node_name: str) -> LocalCluster:
    """A private cluster; a real node first gets its binaries and the images (each cached: seconds when warm)."""
    if node == "kubelet":
        _build("build-node.sh")
        _build("build-images.sh")
    lc = LocalCluster(ClusterConfig(state_dir=state, ports=Ports.random(), node_name=node_name, node=node))
    try:
        lc.up()
    except BaseException:  # what did start (etcd, S3, the API server...) must not outlive the test run
        lc.down()
        raise
    return lc


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reuse = os.environ.get("VIBECRAFT_TEST_CLUSTER_DIR")
    if reuse:
        yield Cluster(LocalCluster(ClusterConfig.load(Path(reuse))))
        return
    node = os.environ.get("VIBECRAFT_TEST_NODE", "kubelet")
    assert node in ("kubelet", "agent"), f"VIBECRAFT_TEST_NODE={node!r}: use kubelet (the default) or agent"
    lc = start_cluster(tmp_path_factory.mktemp("cluster"), node, "real-node" if node == "kubelet" else "test-node")
    try:
        yield Cluster(lc)
    finally:
        lc.down()


@pytest.fixture(scope="session")
def agent_cluster(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster whose node is the node agent (the fallback), for its own tests: the session's cluster
    when that already is one, else a second, private cluster."""
    if not cluster.real:
        yield cluster
        return
    lc = start_cluster(tmp_path_factory.mktemp("agent-cluster"), "agent", "agent-node")
    try:
        yield Cluster(lc)
    finally:
        lc.down()


@pytest.fixture(scope="session")
def s3(cluster: Cluster) -> S3Server:
    return cluster.s3


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


@contextmanager
def temporary_namespace(cluster: Cluster) -> Iterator[str]:
    """new_namespace(), deleted on exit (without waiting): what a `namespace` fixture yields."""
    name = new_namespace(cluster)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    with temporary_namespace(cluster) as name:
        yield name


def provision_renders(cluster: Cluster, s3: S3Server, namespace: str) -> None:
    """What an administrator (the Helm chart) sets up where renders run: renderer SA and RBAC, the S3 Secret."""
    docs = [d for d in yaml.safe_load_all((REPO_ROOT / "crds" / "rbac" / "renderer.yaml").read_text())
            if d and d["metadata"]["name"] != "vibecraft-operator-jobs"]  # operators under test run as admin
    for doc in docs:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "vibecraft-s3",
                    f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}")
