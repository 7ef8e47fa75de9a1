"""Start and stop the local control plane (etcd, kube-apiserver, controller-manager, scheduler), the
node and the S3 server as host processes on loopback. The node is real by default (realnode.py: the
kubelet with containerd + runc, pods from the built images); the node agent (node_agent.py, pods as host
processes) is the fallback for machines that cannot run containers (VIBECRAFT_NODE=agent)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from . import certs
from .config import REPO_ROOT, ClusterConfig, cache_root, default_node, find_tool, port_free

COMPONENTS = ("etcd", "s3", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent")
REAL_NODE_COMPONENTS = ("etcd", "s3", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
                        "kubelet", "kube-proxy")


class ClusterError(RuntimeError):
    """The local cluster could not be started; the message says what to do."""


def _say(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def ensure_binaries() -> None:
    """Build (once, cached outside the clone) the control-plane binaries and helm."""
    for script, probe in (("build-k8s.sh", "kube-apiserver"), ("build-helm.sh", "helm")):
        if not Path(find_tool(probe)).exists():
            res = subprocess.run(["bash", str(REPO_ROOT / "localcluster" / script)])
            if res.returncode != 0:
                raise ClusterError(f"building {probe} failed: see the output above ({script})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class LocalCluster:
    """One cluster instance: a state dir with certs, data, logs and pid files."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.dir = cfg.state_dir
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"

    @classmethod
    def for_user(cls, state_dir: Path) -> LocalCluster:
        """The cluster `make demo` and `vibecraft-cluster` work on: the one saved in `state_dir`, its node
        the kind default_node() asks for (switched only while nothing of it runs), else a new one."""
        node = default_node()
        if not (state_dir / "cluster.json").exists():
            return cls(ClusterConfig(state_dir, node=node))
        lc = cls(ClusterConfig.load(state_dir))
        if lc.cfg.node != node and not any(lc.running().values()):
            lc = cls(dataclasses.replace(lc.cfg, node=node))
        return lc

    # ---- process bookkeeping -------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self._pidfile(name).read_text())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    @property
    def components(self) -> tuple[str, ...]:
        return REAL_NODE_COMPONENTS if self.cfg.node == "kubelet" else COMPONENTS

    def running(self) -> dict[str, int | None]:
        return {name: self.pid(name) for name in self.components}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
        log.close()
        self._pidfile(name).write_text(str(proc.pid))

    def _wait(self, name: str, check: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid(name) is None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} exited during start-up; last log lines:\n{tail}")
            try:
                if check():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.3)
        raise ClusterError(f"{name} did not become ready in {timeout:.0f}s; see {self.logs / name}.log")

    # ---- health probes -------------------------------------------------------------------
    def _https_ok(self, port: int, path: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        ctx.check_hostname = False
        if port != self.cfg.ports.apiserver:
            ctx.verify_mode = ssl.CERT_NONE  # components serve self-signed certs
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=3) as r:
            return bool(r.status == 200)

    def _http_ok(self, url: str) -> bool:
        with urllib.request.urlopen(url, timeout=3) as r:
            return bool(r.status < 500)

    # ---- start -----------------------------------------------------------------------------
    def _check_ports(self) -> None:
        p = self.cfg.ports
        wanted = {
            "etcd": [p.etcd, p.etcd_peer],
            "kube-apiserver": [p.apiserver],
            "kube-controller-manager": [p.controller_manager],
            "kube-scheduler": [p.scheduler],
            "kubelet": [p.kubelet, p.kubelet_healthz] if self.cfg.node == "kubelet" else [],
            "kube-proxy": [p.kube_proxy_metrics, p.kube_proxy_healthz] if self.cfg.node == "kubelet" else [],
            "s3": [p.s3, p.weed_master, p.weed_volume, p.weed_filer, p.weed_master_grpc, p.weed_volume_grpc,
                   p.weed_filer_grpc, p.s3_grpc, p.s3_iceberg, p.s3_lance],
        }
        for name, ports in wanted.items():
            if self.pid(name) is not None:
                continue
            taken = [port for port in ports if not port_free(port)]
            if taken:
                raise ClusterError(
                    f"port(s) {taken} needed by {name} are already in use on 127.0.0.1; stop what holds "
                    f"them (ss -ltnp) or run with other ports (VIBECRAFT_CLUSTER_DIR=... for a second cluster)")

    def up(self) -> None:
        """Start whatever is not running yet; a second call is a no-op."""
        state = self.running()
        if all(state.values()):
            _say(f"already running (state in {self.dir})")
            self.print_summary()
            return
        ensure_binaries()
        if self.cfg.node == "kubelet":  # before starting anything: the machine's one real node may be taken
            from .realnode import NodeError, RealNode

            try:
                RealNode(self.cfg).claim()
            except NodeError as exc:
                raise ClusterError(str(exc)) from None
        self._check_ports()
        self.cfg.save()
        certs.ensure_certs(self.pki, self.cfg.node_name)
        self._write_kubeconfigs()
        p = self.cfg.ports
        if not state["etcd"]:
            self._start_etcd()
        if not state["s3"]:
            self._start_s3()
        if not state["kube-apiserver"]:
            self._start_apiserver()
        if not state["kube-controller-manager"]:
            self._spawn("kube-controller-manager", [
                find_tool("kube-controller-manager"),
                f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
                "--bind-address=127.0.0.1", f"--secure-port={p.controller_manager}",
                f"--cert-dir={self.dir / 'cm-certs'}",
                "--controllers=*", "--leader-elect=false", "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.pki / 'sa.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
                f"--cluster-signing-key-file={self.pki / 'ca.key'}",
                "--concurrent-job-syncs=10", "--concurrent-gc-syncs=20",
                # A quota on a custom resource (the chart's count/musicvideos.vibecraft.io) is counted once
                # the quota controller has discovered the CRD; recount every 15 s, not every 5 min.
                "--resource-quota-sync-period=15s",
            ])
        if not state["kube-scheduler"]:
            self._spawn("kube-scheduler", [
                find_tool("kube-scheduler"),
                f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.dir / 'scheduler.kubeconfig'}",
                "--bind-address=127.0.0.1", f"--secure-port={p.scheduler}", "--leader-elect=false",
            ])
        if self.cfg.node == "kubelet":
            self._start_real_node(state)
        elif not state["node-agent"]:
            self._spawn("node-agent", [
                sys.executable, "-m", "vibecraft_localcluster.node_agent", "--state-dir", str(self.dir),
            ])
        self._wait("kube-controller-manager", lambda: self._https_ok(p.controller_manager, "/healthz"))
        self._wait("kube-scheduler", lambda: self._https_ok(p.scheduler, "/healthz"))
        self._wait("kubelet" if self.cfg.node == "kubelet" else "node-agent", self._node_ready, timeout=60)
        self._wait("kube-apiserver", self._default_sa_exists, timeout=60)
        self.print_summary()

    def _start_real_node(self, state: dict[str, int | None]) -> None:
        from .realnode import RealNode

        node = RealNode(self.cfg)
        node.prepare()
        if not state["containerd"]:
            self._spawn("containerd", node.containerd_argv())
        self._wait("containerd", node.containerd_ready, timeout=60)
        self.import_images()
        if not state["kubelet"]:
            self._spawn("kubelet", node.kubelet_argv())
        if not state["kube-proxy"]:
            self._spawn("kube-proxy", node.kube_proxy_argv())

    def import_images(self) -> None:
        """Load the images localcluster/build-images.sh exported (and pause) into the real node's containerd.
        `up` does it when it starts containerd; call it again after rebuilding images on a running cluster."""
        from .realnode import RealNode

        archives = sorted((cache_root() / "images").glob("*.oci.tar")) if (cache_root() / "images").is_dir() else []
        RealNode(self.cfg).import_images(archives)

    def _write_kubeconfigs(self) -> None:
        for stem in ("admin", "controller-manager", "scheduler", "node"):
            text = certs.kubeconfig(self.cfg.server, self.pki / "ca.crt", self.pki / f"{stem}.crt",
                                    self.pki / f"{stem}.key", user=stem)
            (self.dir / f"{stem}.kubeconfig").write_text(text)
        (self.dir / "kubeconfig").write_text((self.dir / "admin.kubeconfig").read_text())

    def _start_etcd(self) -> None:
        p = self.cfg.ports
        self._spawn("etcd", [
            find_tool("etcd"), "--name=vibecraft", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p.etcd}", f"--advertise-client-urls=http://127.0.0.1:{p.etcd}",
            f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
            f"--initial-cluster=vibecraft=http://127.0.0.1:{p.etcd_peer}",
            "--unsafe-no-fsync",  # a throwaway dev cluster; fsync on every write costs seconds per test
            "--quota-backend-bytes=4294967296",
        ])
        self._wait("etcd", lambda: self._http_ok(f"http://127.0.0.1:{p.etcd}/health"))

    def _start_s3(self) -> None:
        p, c = self.cfg.ports, self.cfg
        data = self.dir / "s3"
        data.mkdir(parents=True, exist_ok=True)
        identities_file = self.dir / "s3-identities.json"
        if not identities_file.exists():  # a restart keeps the scoped identities made by s3_identity()
            identities_file.write_text(json.dumps({"identities": [{
                "name": "vibecraft",
                "credentials": [{"accessKey": c.s3_access_key, "secretKey": c.s3_secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]}))
        self._spawn("s3", [
            find_tool("weed"), "server", f"-dir={data}", "-ip=127.0.0.1",
            # Real pods reach S3 over the pod bridge, so then it listens beyond loopback.
            f"-ip.bind={'0.0.0.0' if c.node == 'kubelet' else '127.0.0.1'}",
            "-master.telemetry=false", "-iam=false",
            # Small volumes and a fixed count: the default (30 GB volumes, count from free disk) finds no
            # room for a volume on a machine with under ~200 GB free.
            "-master.volumeSizeLimitMB=1024", "-volume.max=200",
            f"-master.port={p.weed_master}", f"-master.port.grpc={p.weed_master_grpc}",
            f"-volume.port={p.weed_volume}", f"-volume.port.grpc={p.weed_volume_grpc}",
            f"-filer.port={p.weed_filer}", f"-filer.port.grpc={p.weed_filer_grpc}",
            "-s3", f"-s3.port={p.s3}", f"-s3.port.grpc={p.s3_grpc}", f"-s3.port.iceberg={p.s3_iceberg}",
            f"-s3.port.lance={p.s3_lance}", f"-s3.config={self.dir / 's3-identities.json'}",
        ])
        self._wait("s3", self._ensure_bucket, timeout=90)

    def s3_identity(self, name: str, *, read: list[str], write: list[str]) -> tuple[str, str]:
        """Credentials the S3 server itself limits to key prefixes of the bucket: get/head under `read`
        and `write`, put/delete/list under `write` (SeaweedFS actions `Read:<bucket>/<prefix>*`, …).
        What a tenant's renders get instead of the bucket-wide key (docs/security.md). Idempotent: the
        same name returns the same keys. The S3 server picks the change up from its filer at once."""
        path = self.dir / "s3-identities.json"
        config = json.loads(path.read_text())
        for ident in config["identities"]:
            if ident["name"] == name:
                cred = ident["credentials"][0]
                return str(cred["accessKey"]), str(cred["secretKey"])
        bucket = self.cfg.bucket
        actions = [f"Read:{bucket}/{p}*" for p in [*read, *write]]
        actions += [f"{verb}:{bucket}/{p}*" for p in write for verb in ("Write", "List")]
        key, secret = f"vc-{name}"[:32], secrets.token_urlsafe(24)
        config["identities"].append({"name": name, "credentials": [{"accessKey": key, "secretKey": secret}],
                                     "actions": actions})
        path.write_text(json.dumps(config))
        # The running server reloads identities written to its filer (the -s3.config file is read at start).
        url = f"http://127.0.0.1:{self.cfg.ports.weed_filer}/etc/iam/identity.json"
        body, ctype = _multipart("identity.json", json.dumps(config).encode())
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        self._await_s3_key(key, secret)
        return key, secret

    def _await_s3_key(self, key: str, secret: str, timeout: float = 20.0) -> None:
        """Wait until the S3 server knows a new key (it reloads identities from its filer shortly after
        they are written): the keys s3_identity returns work at once."""
        import boto3
        from botocore.exceptions import ClientError

        client = boto3.client("s3", endpoint_url=self.cfg.s3_endpoint, aws_access_key_id=key,
                              aws_secret_access_key=secret, region_name=self.cfg.s3_region)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.list_objects_v2(Bucket=self.cfg.bucket, MaxKeys=1)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidAccessKeyId":
                    return  # known (AccessDenied outside its prefixes is fine)
                if time.monotonic() > deadline:
                    raise ClusterError(f"the S3 server did not load the identity of {key} in {timeout:.0f} s") from None
            time.sleep(0.2)

    def _ensure_bucket(self) -> bool:
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=self.cfg.s3_endpoint, aws_access_key_id=self.cfg.s3_access_key,
                          aws_secret_access_key=self.cfg.s3_secret_key, region_name=self.cfg.s3_region,
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        if self.cfg.bucket not in names:
            s3.create_bucket(Bucket=self.cfg.bucket)
        # Listing works before the volume server has joined the master; only a write proves S3 is ready.
        s3.put_object(Bucket=self.cfg.bucket, Key=".vibecraft-ready", Body=b"ok")
        s3.delete_object(Bucket=self.cfg.bucket, Key=".vibecraft-ready")
        return True

    def _start_apiserver(self) -> None:
        p, pki = self.cfg.ports, self.pki
        if self.cfg.node == "kubelet":
            # Real pods reach the API server as the `kubernetes` Service (10.96.0.1:443, through
            # kube-proxy) whose endpoint is the pod bridge's address, so it listens beyond loopback.
            from .realnode import BRIDGE_IP

            where = ["--bind-address=0.0.0.0", f"--advertise-address={BRIDGE_IP}", "--endpoint-reconciler-type=lease"]
        else:  # loopback may not be advertised as the kubernetes Service endpoint
            where = ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]
        self._spawn("kube-apiserver", [
            find_tool("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p.etcd}",
            *where, f"--secure-port={p.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction,PodSecurity,Priority,DefaultTolerationSeconds,"
            "LimitRanger,ServiceAccount,ResourceQuota,DefaultStorageClass,MutatingAdmissionWebhook,"
            "ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,NamespaceLifecycle",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            "--profiling=false",
            "--event-ttl=1h",
            # kubectl logs/exec/port-forward: the apiserver dials the real kubelet at its InternalIP with
            # the admin client certificate (the kubelet authorizes it with a SubjectAccessReview).
            *([
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki / 'admin.crt'}", f"--kubelet-client-key={pki / 'admin.key'}",
            ] if self.cfg.node == "kubelet" else []),
        ])
        self._wait("kube-apiserver", lambda: self._https_ok(p.apiserver, "/readyz"), timeout=120)

    def _node_ready(self) -> bool:
        out = self.kubectl("get", "node", self.cfg.node_name, "-o",
                           "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return out.strip() == "True"

    def _default_sa_exists(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default", "-o", "name",
                            check=False).strip() != ""

    def kubectl(self, *args: str, check: bool = True) -> str:
        res = subprocess.run([find_tool("kubectl"), f"--kubeconfig={self.cfg.kubeconfig}", *args],
                             capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def print_summary(self) -> None:
        c = self.cfg
        node = ("real kubelet + containerd" if c.node == "kubelet"
                else "process node agent; logs: vibecraft-cluster logs POD")
        print(
            f"local cluster up (Kubernetes v{os.environ.get('K8S_VERSION', '1.37.2')}, state in {self.dir})\n"
            f"  kube-apiserver   {c.server}   (etcd 127.0.0.1:{c.ports.etcd})\n"
            f"  controller-mgr   127.0.0.1:{c.ports.controller_manager}   scheduler 127.0.0.1:{c.ports.scheduler}\n"
            f"  node             {c.node_name} ({node})\n"
            f"  S3               {c.s3_endpoint}  bucket={c.bucket} key={c.s3_access_key}\n"
            f"export KUBECONFIG={c.kubeconfig}", flush=True)

    # ---- stop ------------------------------------------------------------------------------
    def stop(self, name: str) -> None:
        """Stop one component (e.g. the scheduler, so pods stay unscheduled); `up` starts it again."""
        pid = self.pid(name)
        if pid is None:
            return
        # The node agent stops its pods first. The S3 server (SeaweedFS) was measured to outlast a 10 s grace after
        # SIGTERM at every teardown; what it holds is scratch data, so it gets 2 s.
        _stop_group(pid, {"node-agent": 30.0, "s3": 2.0}.get(name, 10.0))
        self._pidfile(name).unlink(missing_ok=True)
        _say(f"stopped {name} (pid {pid})")

    def start(self, name: str) -> None:
        """Start one stopped control-plane component again, on its old ports and data (etcd or the API server:
        the chaos suite restarts them under a running operator); waits until it serves."""
        starters = {"etcd": self._start_etcd, "kube-apiserver": self._start_apiserver}
        if name not in starters:
            raise ClusterError(f"start {name}: only {', '.join(starters)} can be started alone; use up()")
        if self.pid(name) is None:
            starters[name]()
            _say(f"started {name} (pid {self.pid(name)})")

    def down(self) -> None:
        """Stop every component (node agent first, so it can stop its pods) and leave nothing behind."""
        for name in reversed(self.components):
            self.stop(name)
        if self.cfg.node == "kubelet":
            from .realnode import RealNode

            RealNode(self.cfg).cleanup()
            return
        from .cgroups import kill_all_pods

        kill_all_pods(self.cfg.node_name)


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file (what the SeaweedFS filer takes for an upload)."""
    boundary = secrets.token_hex(16)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _stop_group(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
