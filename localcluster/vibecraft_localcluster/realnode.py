"""A real node for the local cluster: containerd + runc + CNI bridge + the real kubelet (v1.37).

Pods run as real containers from real images (the project's Dockerfiles, built by
localcluster/build-images.sh, imported from OCI archives since no registry is reachable), with the
kubelet's own probes, volumes, security contexts and cgroup limits. What this machine needs, each
measured here (Debian 12, cgroup v1 hybrid, root without CAP_SYS_RESOURCE):

- kubelet >= 1.35 refuses cgroup v1 unless `failCgroupV1: false`; the cgroupfs driver (no systemd).
  Debian's containerd 1.6 has no RuntimeConfig RPC, so the kubelet falls back to `cgroupDriver` (the
  fallback is removed in 1.38).
- Pods get their own parent cgroup (`cgroupRoot: /vibecraft-<node>`), created in every v1 hierarchy.
- containerd must not lower oom_score_adj (the sandbox asks for -998, which needs CAP_SYS_RESOURCE:
  runc fails with "can't get final child's PID from pipe"): `restrict_oom_score_adj = true`.
- The sandbox image is pause compiled from the k8s module's pause.c (localcluster/build-node.sh).
- Pod network: a CNI bridge on BRIDGE_IP/24, created before the kubelet so the node IP exists; the
  host (S3) is reached from pods at BRIDGE_IP, the API server as the `kubernetes` Service through
  kube-proxy (its endpoint is BRIDGE_IP).

One real node per machine at a time: the pod bridge, its subnet and kube-proxy's iptables chains are
machine-wide. A node claims the machine in CLAIM (under /run, so a reboot clears it); a second cluster
asking for a real node while the first one's runs is refused with a message naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .config import K8S_VERSION, ClusterConfig, cache_root

BRIDGE = "vc0"
POD_SUBNET = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
PAUSE_IMAGE = "localhost/pause:3.10"
CGROUP_FS = Path("/sys/fs/cgroup")
CLAIM = Path("/run/vibecraft-real-node")  # the state dir of the cluster whose real node runs here
V1_HIERARCHIES = ("memory", "pids", "systemd", "cpuset", "cpu", "cpuacct", "blkio", "devices", "freezer", "hugetlb")


class NodeError(RuntimeError):
    """The real node could not be set up; the message says what is missing."""


def k8s_bin(name: str) -> Path:
    return cache_root() / f"k8s-v{K8S_VERSION}" / "bin" / name


def pause_archive() -> Path:
    return cache_root() / f"k8s-v{K8S_VERSION}" / "pause-3.10.tar"


class RealNode:
    """Config files and start-up steps of one real node; LocalCluster spawns and stops the processes."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.state_dir / "node"
        self.socket = self.dir / "containerd" / "containerd.sock"
        self.cgroup_root = f"/vibecraft-{cfg.node_name}"

    # ---- configuration ------------------------------------------------------------------------
    def containerd_config(self) -> str:
        d = self.dir / "containerd"
        return f"""version = 2
root = "{d / 'root'}"
state = "{d / 'state'}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  # Pod network namespaces under containerd's own state dir, not /run/netns, which podman (the image
  # builds) also uses: a sandbox there was once left unremovable ("device or resource busy").
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{self.dir / 'cni'}"
"""

    def cni_config(self) -> str:
        return json.dumps({
            "cniVersion": "1.0.0",
            "name": "vibecraft",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": BRIDGE_IP}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.dir / "cni-ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }, indent=2)

    def kubelet_config(self) -> str:
        p, pki = self.cfg.ports, self.cfg.state_dir / "pki"
        return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {self.cgroup_root}
containerRuntimeEndpoint: unix://{self.socket}
address: {BRIDGE_IP}
port: {p.kubelet}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {p.kubelet_healthz}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki / 'ca.crt'}}}
authorization: {{mode: Webhook}}
failSwapOn: false
resolvConf: /etc/resolv.conf
enforceNodeAllocatable: []
rotateCertificates: false
serializeImagePulls: false
# As kind does: images here were imported, not pulled, so the kubelet must never garbage-collect
# them (containerd 1.6 does not pin the sandbox image; CI once lost pause:3.10 at 85% disk use and
# no pod could start), and disk use by other things on a dev machine must not evict pods. Sized
# emptyDirs are still enforced: local-storage eviction does not depend on these thresholds.
imageGCHighThresholdPercent: 100
# How often the kubelet measures emptyDir usage (default 1m): a pod outgrowing its sizeLimit is evicted
# within ~10 s instead of a minute, so a short render cannot finish over its limit unnoticed.
volumeStatsAggPeriod: 10s
evictionHard: {{memory.available: "100Mi", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}}
"""

    def claim(self) -> None:
        """Claim the machine's one real node, or say which cluster holds it and how to stop that one."""
        try:
            other = Path(CLAIM.read_text().strip())
        except OSError:
            other = None
        if other and other != self.cfg.state_dir and _node_running(other):
            raise NodeError(
                f"another local cluster's real node runs on this machine (state in {other}); there can be one at "
                f"a time (the pod bridge {BRIDGE}, its subnet and kube-proxy's iptables rules are machine-wide). "
                f"Stop it first: VIBECRAFT_CLUSTER_DIR={other} .venv/bin/vibecraft-cluster down "
                "(`make cluster-down` for the demo's cluster; its state is kept, `make cluster-up` brings it back)")
        CLAIM.write_text(f"{self.cfg.state_dir}\n")

    def release(self) -> None:
        with contextlib.suppress(OSError):
            if Path(CLAIM.read_text().strip()) == self.cfg.state_dir:
                CLAIM.unlink()

    def prepare(self) -> None:
        """Claim the machine, write configs, create the pod cgroup root and the bridge (idempotent)."""
        self.claim()
        missing = [str(b) for b in (k8s_bin("kubelet"), pause_archive(), Path("/usr/sbin/runc"),
                                     Path("/usr/bin/containerd"), Path("/usr/lib/cni/bridge")) if not b.exists()]
        if missing:
            raise NodeError(f"a real node needs {', '.join(missing)}: run `bash localcluster/build-node.sh` "
                            "and `apt-get install containerd runc containernetworking-plugins`")
        for sub in ("containerd/root", "containerd/state", "cni", "kubelet"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "containerd" / "config.toml").write_text(self.containerd_config())
        (self.dir / "cni" / "10-vibecraft.conflist").write_text(self.cni_config())
        (self.dir / "kubelet" / "config.yaml").write_text(self.kubelet_config())
        self._cgroup_root()
        self._bridge()

    def _cgroup_root(self) -> None:
        for name in V1_HIERARCHIES:
            base = CGROUP_FS / name
            if not base.is_dir():
                continue
            path = base / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if name == "cpuset":  # a new cpuset has no cpus or mems until given its parent's
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / f).read_text().strip():
                        (path / f).write_text((base / f).read_text())

    def _bridge(self) -> None:
        """The pod bridge with the node IP, before the kubelet starts (CNI would create it with the first pod)."""

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", *args], capture_output=True, text=True)

        if run("link", "show", BRIDGE).returncode != 0:
            res = run("link", "add", BRIDGE, "type", "bridge")
            if res.returncode != 0:
                raise NodeError(f"cannot create the pod bridge {BRIDGE}: {res.stderr.strip()}")
        if BRIDGE_IP not in run("-4", "addr", "show", BRIDGE).stdout:
            run("addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        run("link", "set", BRIDGE, "up")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    # ---- processes ----------------------------------------------------------------------------
    def containerd_argv(self) -> list[str]:
        return ["/usr/bin/containerd", "--config", str(self.dir / "containerd" / "config.toml")]

    def kubelet_argv(self) -> list[str]:
        return [
            str(k8s_bin("kubelet")), f"--config={self.dir / 'kubelet' / 'config.yaml'}",
            f"--kubeconfig={self.cfg.state_dir / 'node.kubeconfig'}", f"--hostname-override={self.cfg.node_name}",
            f"--root-dir={self.dir / 'kubelet' / 'root'}", f"--node-ip={BRIDGE_IP}",
        ]

    def kube_proxy_argv(self) -> list[str]:
        """kube-proxy (iptables mode) for ClusterIP Services, the `kubernetes` one included. It runs with the
        admin identity (a local cluster) and leaves the conntrack table size alone."""
        p = self.cfg.ports
        return [
            str(k8s_bin("kube-proxy")), f"--kubeconfig={self.cfg.state_dir / 'admin.kubeconfig'}",
            f"--hostname-override={self.cfg.node_name}", "--proxy-mode=iptables", f"--cluster-cidr={POD_SUBNET}",
            f"--metrics-bind-address=127.0.0.1:{p.kube_proxy_metrics}",
            f"--healthz-bind-address=127.0.0.1:{p.kube_proxy_healthz}", "--conntrack-max-per-core=0",
        ]

    def ctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout)

    def containerd_ready(self) -> bool:
        return self.socket.exists() and self.ctr("version", timeout=10).returncode == 0

    def import_images(self, archives: list[Path]) -> None:
        """Load OCI archives (pause, the project's images) into containerd's k8s.io namespace."""
        for archive in [pause_archive(), *archives]:
            res = self.ctr("images", "import", str(archive))
            if res.returncode != 0:
                raise NodeError(f"importing {archive} into containerd failed: {res.stderr.strip()}")

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.split()

    def cleanup(self) -> None:
        """After containerd and the kubelet stopped: kill leftover containers and their shims.

        The containers first: a runc container's processes are not the shim's children, and killing the
        shim alone left a demo's operator and API running, re-parented to init, after `cluster-down`."""
        self._kill_containers()
        res = subprocess.run(["pgrep", "-f", f"containerd-shim-runc-v2.*{self.socket}"], capture_output=True, text=True)
        for pid in res.stdout.split():
            subprocess.run(["kill", "-9", pid], capture_output=True)
        # The kubelet bind-mounts its root dir and each pod's volumes; containerd its rootfs overlays.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for target in sorted((m for m in mounts if m.startswith(f"{self.dir}/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)
        # kube-proxy's KUBE-* iptables chains, and the pod bridge.
        subprocess.run([str(k8s_bin("kube-proxy")), "--cleanup"], capture_output=True, timeout=60)
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
        _remove_kubelet_chains()
        deadline = time.monotonic() + 10
        for name in (*V1_HIERARCHIES, "unified"):  # empty pod cgroups go away; busy ones are reported by the kernel
            root = CGROUP_FS / name / self.cgroup_root.lstrip("/")
            if not root.is_dir():
                continue
            for path in [*sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True), root]:
                if path.is_dir():
                    while time.monotonic() < deadline:
                        try:
                            path.rmdir()
                            break
                        except OSError:
                            time.sleep(0.2)
        self.release()


    def _kill_containers(self, timeout: float = 10) -> None:
        """SIGKILL every process in the node's pod cgroups (each hierarchy: whichever the runtime used)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids: set[int] = set()
            for name in V1_HIERARCHIES:
                root = CGROUP_FS / name / self.cgroup_root.lstrip("/")
                for procs in root.rglob("cgroup.procs") if root.is_dir() else ():
                    with contextlib.suppress(OSError, ValueError):
                        pids.update(int(pid) for pid in procs.read_text().split())
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


def _node_running(state_dir: Path) -> bool:
    """Whether the cluster in `state_dir` still has a real node process (containerd, kubelet, kube-proxy)."""
    for name in ("containerd", "kubelet", "kube-proxy"):
        try:
            pid = int((state_dir / "run" / f"{name}.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            continue
        return True
    return False


def _remove_kubelet_chains() -> None:
    """The kubelet's own iptables chains (KUBE-FIREWALL drops non-loopback traffic to 127/8, and its
    canaries), which `kube-proxy --cleanup` leaves."""
    def ipt(*args: str) -> None:
        subprocess.run(["iptables", *args], capture_output=True)

    for hook in ("INPUT", "OUTPUT"):
        ipt("-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL")
    for table in ("filter", "nat", "mangle"):
        for chain in ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"):
            ipt("-t", table, "-F", chain)
            ipt("-t", table, "-X", chain)
