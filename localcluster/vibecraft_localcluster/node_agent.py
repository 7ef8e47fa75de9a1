"""The one stand-in: a kubelet that runs pod containers as host processes.

It registers a Node with the machine's real capacity, keeps its lease and heartbeat, watches the
Pods the real scheduler binds to it and runs each container as a process in its own mount
namespace and memory cgroup, writing phase and containerStatuses back like a kubelet.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from .cgroups import MemoryCgroup, node_root, tree_rss_bytes
from .config import K8S_VERSION, REPO_ROOT, ClusterConfig, venv_bin
from .images import repository, resolve_command

log = logging.getLogger("node-agent")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 24 * 3600
TOKEN_TRIES = 6  # ~3 s of asking before a token refusal becomes a config error
FINISHED_REMEMBERED = 10000


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PodFailed(Exception):
    """The pod cannot start (bad image, missing secret, unsupported volume)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ContainerRun:
    """One running container process and what is known about how it ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.cgroup: MemoryCgroup | None = None
        self.limit: int | None = None
        self.watchdog_oom = False
        self.started_at = ""
        self.restarts = 0
        self.last_state: dict[str, Any] = {}
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}


class PodRunner(threading.Thread):
    """Runs one pod from start to a terminal phase (or until deleted)."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = agent.state_dir / "pods" / self.uid
        self.stop_event = threading.Event()
        self.stop_reason: tuple[str, str] | None = None
        self.grace = 30.0
        self.containers = [ContainerRun(c["name"]) for c in pod["spec"]["containers"]]
        self.start_time = pod.get("status", {}).get("startTime") or now()
        self.lock = threading.Lock()

    # ---- status ------------------------------------------------------------------------------
    def _container_status(self, spec: dict[str, Any], run: ContainerRun) -> dict[str, Any]:
        running = "running" in run.state
        st: dict[str, Any] = {
            "name": run.name, "image": spec["image"], "imageID": f"local://{spec['image']}",
            "containerID": f"process://{self.uid}/{run.name}", "ready": running, "started": running,
            "restartCount": run.restarts, "state": run.state,
        }
        if run.last_state:
            st["lastState"] = run.last_state
        return st

    def patch_status(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        specs = self.pod["spec"]["containers"]
        statuses = [self._container_status(s, r) for s, r in zip(specs, self.containers, strict=True)]
        ready = "True" if phase == "Running" and all("running" in r.state for r in self.containers) else "False"
        t = now()
        status: dict[str, Any] = {
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "startTime": self.start_time, "containerStatuses": statuses,
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": ready, "lastTransitionTime": t},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": t},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            ],
        }
        if reason:
            status["reason"] = reason
        if message:
            status["message"] = message
        with self.lock:
            try:
                self.agent.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("status patch for %s/%s failed: %s", self.ns, self.name, exc.reason)

    # ---- preparing volumes, env and the token ------------------------------------------------
    def _secret(self, name: str, optional: bool = False) -> dict[str, str]:
        data = self._read("secret", self.agent.core.read_namespaced_secret, name, optional)
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _configmap(self, name: str, optional: bool = False) -> dict[str, str]:
        return self._read("configmap", self.agent.core.read_namespaced_config_map, name, optional)

    def _read(self, kind: str, read: Callable[[str, str], Any], name: str, optional: bool) -> dict[str, str]:
        """A Secret's or ConfigMap's data; a missing one fails the pod as kubelet does, unless optional."""
        try:
            obj = read(name, self.ns)
        except ApiException as exc:
            if optional and exc.status == 404:
                return {}
            raise PodFailed("CreateContainerConfigError", f'{kind} "{name}" not found') from exc
        return dict(obj.data or {})

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        for prefix, src in (("metadata.labels", meta.get("labels", {})),
                            ("metadata.annotations", meta.get("annotations", {}))):
            if path.startswith(prefix + "['"):
                return str(src.get(path[len(prefix) + 2:-2], ""))
        raise PodFailed("CreateContainerConfigError", f"unsupported fieldRef {path}")

    def _env(self, c: dict[str, Any]) -> dict[str, str]:
        image = self.agent.images.get(repository(c["image"]), {})
        env: dict[str, str] = {**image.get("env", {}),
            "PATH": f"{venv_bin()}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir / "home"), "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.agent.api_port),
            "LANG": "C.UTF-8",
        }
        for var, src in image.get("env_dirs", {}).items():
            dst = self.dir / "image-dirs" / c["name"] / var
            if Path(src).is_dir() and not dst.exists():
                shutil.copytree(src, dst)
            dst.mkdir(parents=True, exist_ok=True)
            env[var] = str(dst)
        for src in c.get("envFrom", []):
            prefix = src.get("prefix", "")
            if "secretRef" in src:
                data = self._secret(src["secretRef"]["name"], src["secretRef"].get("optional", False))
            else:
                data = self._configmap(src["configMapRef"]["name"], src["configMapRef"].get("optional", False))
            env.update({prefix + k: v for k, v in data.items()})
        for e in c.get("env", []):
            if "valueFrom" not in e:
                env[e["name"]] = _expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            key_ref = next(((k, vf[k]) for k in ("secretKeyRef", "configMapKeyRef") if k in vf), None)
            if key_ref:
                kind, ref = key_ref
                read = self._secret if kind == "secretKeyRef" else self._configmap
                data = read(ref["name"], ref.get("optional", False))
                if ref["key"] in data:
                    env[e["name"]] = data[ref["key"]]
                elif not ref.get("optional", False):
                    source = "Secret" if kind == "secretKeyRef" else "ConfigMap"
                    raise PodFailed("CreateContainerConfigError",
                                    f'couldn\'t find key {ref["key"]} in {source} {self.ns}/{ref["name"]}')
            elif "fieldRef" in vf:
                env[e["name"]] = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                ref = vf["resourceFieldRef"]
                kind, _, rname = ref["resource"].partition(".")
                val = parse_quantity(c.get("resources", {}).get(kind, {}).get(rname, "0"))
                env[e["name"]] = str(math.ceil(val / parse_quantity(ref.get("divisor", "1"))))
        return env

    def _service_account(self) -> Path:
        """Files an in-cluster client expects (token bound to this pod, CA, namespace)."""
        sa_dir = self.dir / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"spec": {"expirationSeconds": TOKEN_SECONDS,  # no audiences: the API server's own
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid}}}
        for attempt in range(TOKEN_TRIES):
            try:
                tr = self.agent.core.create_namespaced_service_account_token(sa, self.ns, body)
                break
            except ApiException as exc:
                # The node authorizer learns of a pod's binding a moment after the scheduler makes
                # it, so a fresh pod's first token request may be refused: ask again before failing.
                if exc.status not in (403, 404) or attempt == TOKEN_TRIES - 1:
                    raise PodFailed("CreateContainerConfigError",
                                    f"service account token for {sa}: {exc.reason}") from exc
                if self.stop_event.wait(0.1 * 2 ** attempt):
                    raise PodFailed("CreateContainerConfigError", "pod deleted") from exc
        (sa_dir / "token").write_text(tr.status.token)
        shutil.copy(self.agent.ca_file, sa_dir / "ca.crt")
        (sa_dir / "namespace").write_text(self.ns)
        return Path(sa_dir)

    def _volumes(self) -> dict[str, Path]:
        vols: dict[str, Path] = {}
        for v in self.pod["spec"].get("volumes", []):
            d = self.dir / "volumes" / v["name"]
            d.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in v:
                pass
            elif "hostPath" in v:
                d = Path(v["hostPath"]["path"])
            elif "secret" in v or "configMap" in v:
                if "secret" in v:
                    data = self._secret(v["secret"]["secretName"], v["secret"].get("optional", False))
                    items = v["secret"].get("items")
                else:
                    data = self._configmap(v["configMap"]["name"], v["configMap"].get("optional", False))
                    items = v["configMap"].get("items")
                for key, path in ([(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]):
                    (d / path).parent.mkdir(parents=True, exist_ok=True)
                    (d / path).write_text(data.get(key, ""))
            elif "projected" in v and v["name"].startswith("kube-api-access"):
                d = self._service_account()
            else:
                raise PodFailed("CreateContainerConfigError", f"volume {v['name']}: type not supported by node agent")
            vols[v["name"]] = d
        return vols

    # ---- running -------------------------------------------------------------------------------
    def _launch(self, c: dict[str, Any], run: ContainerRun, vols: dict[str, Path], argv: list[str],
                env: dict[str, str]) -> None:
        mounts: list[tuple[str, str]] = []
        for m in c.get("volumeMounts", []):
            src = vols[m["name"]]
            if m.get("subPath"):
                src = src / m["subPath"]
                src.mkdir(parents=True, exist_ok=True)
            mounts.append((str(src), m["mountPath"]))
        if self.pod["spec"].get("automountServiceAccountToken") is not False and not any(
                m[1] == SA_DIR for m in mounts):
            mounts.append((str(self._service_account()), SA_DIR))
        term = self.dir / "termination" / run.name
        term.parent.mkdir(parents=True, exist_ok=True)
        term.write_text("")
        mounts.append((str(term), c.get("terminationMessagePath", "/dev/termination-log")))
        # A volume mounted over a directory that holds other mounts' sources (e.g. an emptyDir at /tmp
        # while this agent's state dir is under /tmp) would hide them: mount those last, parents first.
        sources = [src for src, _ in mounts]  # (a list being sorted looks empty to its key function)

        def covers(target: str) -> bool:
            return any(src.startswith(target.rstrip("/") + "/") for src in sources)

        mounts.sort(key=lambda m: (covers(m[1]), m[1].count("/")))
        (self.dir / "home").mkdir(parents=True, exist_ok=True)
        limit = c.get("resources", {}).get("limits", {}).get("memory")
        run.limit = int(parse_quantity(limit)) if limit else None
        run.cgroup, run.watchdog_oom = None, False
        if self.agent.cgroup_root is not None:
            root, version = self.agent.cgroup_root
            run.cgroup = MemoryCgroup(root, version, f"{self.uid}_{run.name}_{run.restarts}", run.limit)
        spec_file = self.dir / f"launch-{run.name}.json"
        spec_file.write_text(json.dumps({
            "cgroup_procs": str(run.cgroup.procs_file) if run.cgroup else None,
            "mounts": mounts, "workdir": c.get("workingDir"), "argv": argv, "env": env,
            "image_paths": sorted({str(REPO_ROOT), sys.prefix, sys.base_prefix}),
        }))
        logf = open(self.agent.log_path(self.ns, self.name, run.name), "ab")  # noqa: SIM115
        prefix = ["unshare", "--mount", "--propagation", "private", "--"] if self.agent.can_unshare else []
        run.proc = subprocess.Popen([*prefix, sys.executable, "-m", "vibecraft_localcluster.launch",
                                     str(spec_file)], stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        run.started_at = now()
        run.state = {"running": {"startedAt": run.started_at}}

    def _terminated(self, c: dict[str, Any], run: ContainerRun) -> dict[str, Any]:
        assert run.proc is not None
        rc = run.proc.returncode
        code = 128 - rc if rc < 0 else rc
        oom = run.watchdog_oom or (run.cgroup is not None and run.cgroup.oom_killed())
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        msg = (self.dir / "termination" / run.name).read_text(errors="replace").strip()
        if not msg and code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = self.agent.log_path(self.ns, self.name, run.name).read_text(errors="replace").splitlines()
            msg = "\n".join(lines[-80:])[-2048:]
        term: dict[str, Any] = {"exitCode": 137 if oom else code, "reason": reason, "startedAt": run.started_at,
                                "finishedAt": now(), "containerID": f"process://{self.uid}/{run.name}"}
        if msg:
            term["message"] = msg[:4096]
        if run.cgroup:
            run.cgroup.remove()
        return {"terminated": term}

    def _signal_all(self, sig: int) -> None:
        for run in self.containers:
            if run.proc and run.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.proc.pid, sig)
            if sig == signal.SIGKILL and run.cgroup:
                run.cgroup.kill()

    def stop(self, reason: tuple[str, str] | None, grace: float) -> None:
        if not self.stop_event.is_set():
            log.info("stopping pod %s/%s (grace %.0fs, %s)", self.ns, self.name, grace, reason or "deleted")
            self.stop_reason, self.grace = reason, grace
            self.stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s crashed the runner", self.ns, self.name)
            try:  # events about this pod are ignored from now on: leave it terminal, not Running
                self._terminate_all()
                self.agent._orphan(self.pod, delete=False)
            except Exception as exc:
                log.warning("could not mark pod %s/%s failed: %s", self.ns, self.name, exc)
        finally:
            self.agent.forget(self.uid)

    def _run(self) -> None:
        spec = self.pod["spec"]
        restart = spec.get("restartPolicy", "Always")
        while True:  # like a kubelet, keep retrying config errors (a Secret may appear later)
            try:
                argvs = []  # images first, as a kubelet pulls before it builds the container config
                for c in spec["containers"]:
                    argv = resolve_command(c["image"], c.get("command"), c.get("args"), self.agent.images)
                    if argv is None:
                        raise PodFailed("ErrImagePull", f'failed to pull image "{c["image"]}": not known to the '
                                        f"local node agent (known: {', '.join(sorted(self.agent.images))})")
                    argvs.append(argv)
                vols = self._volumes()
                prepared = [(c, run, argv, self._env(c))
                            for c, run, argv in zip(spec["containers"], self.containers, argvs, strict=True)]
                break
            except PodFailed as exc:
                for run in self.containers:
                    run.state = {"waiting": {"reason": exc.reason, "message": str(exc)}}
                self.patch_status("Pending")
                if self.stop_event.wait(3):
                    self.patch_status("Failed")
                    self._finish_deletion()
                    return
        for c, run, argv, env in prepared:
            self._launch(c, run, vols, argv, env)
        log.info("pod %s/%s started: %s", self.ns, self.name, [p[2] for p in prepared])
        self.patch_status("Running")
        deadline = spec.get("activeDeadlineSeconds")
        started = time.monotonic()
        finished: dict[str, dict[str, Any]] = {}
        while len(finished) < len(prepared):
            if self.stop_event.wait(0.2):
                break
            if deadline and time.monotonic() - started > deadline:
                self.stop(("DeadlineExceeded", f"Pod was active on the node longer than the specified deadline"
                                               f" ({deadline}s)"), float(spec.get("terminationGracePeriodSeconds", 30)))
                break
            changed = False
            for c, run, argv, env in prepared:
                if run.name in finished or run.proc is None:
                    continue
                if run.proc.poll() is None:
                    if run.limit and run.cgroup is None and tree_rss_bytes(run.proc.pid) > run.limit:
                        run.watchdog_oom = True  # no writable cgroup: enforce the limit ourselves
                        os.killpg(run.proc.pid, signal.SIGKILL)
                    continue
                run.state = self._terminated(c, run)
                changed = True
                code = run.state["terminated"]["exitCode"]
                if restart == "Always" or (restart == "OnFailure" and code != 0):
                    run.last_state, run.restarts = run.state, run.restarts + 1
                    run.state = {"waiting": {"reason": "CrashLoopBackOff"}}
                    self.patch_status("Running")
                    if self.stop_event.wait(min(2 ** min(run.restarts, 5), 30)):
                        break
                    self._launch(c, run, vols, argv, env)
                else:
                    finished[run.name] = run.state
            if changed:
                self.patch_status("Running")
        if self.stop_event.is_set():
            self._terminate_all()
            codes = [r.state.get("terminated", {}).get("exitCode", 137) for r in self.containers]
            # Terminal phase first: the Job controller only drops its tracking finalizer from a
            # terminal pod, so the final delete would hang otherwise.
            phase = "Succeeded" if not self.stop_reason and all(c == 0 for c in codes) else "Failed"
            self.patch_status(phase, *(self.stop_reason or (None, None)))
            if not self.stop_reason:  # deleted (a deadline keeps the failed pod around)
                self._finish_deletion()
            return
        failed = any(s["terminated"]["exitCode"] != 0 for s in finished.values())
        log.info("pod %s/%s %s", self.ns, self.name, "failed" if failed else "succeeded")
        self.patch_status("Failed" if failed else "Succeeded")

    def _terminate_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        end = time.monotonic() + self.grace
        while time.monotonic() < end and any(r.proc and r.proc.poll() is None for r in self.containers):
            time.sleep(0.1)
        self._signal_all(signal.SIGKILL)
        for c, run in zip(self.pod["spec"]["containers"], self.containers, strict=True):
            if run.proc is not None:
                run.proc.wait()
                if "running" in run.state:
                    run.state = self._terminated(c, run)

    def fail_and_delete(self) -> None:
        """A deleted pod that never ran: terminal phase, then gone."""
        if self.pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            self.patch_status("Failed")
        self._finish_deletion()

    def _finish_deletion(self) -> None:
        """The kubelet's last word on a deleted pod: remove it for good."""
        try:
            # With a body, the API server ignores query parameters: the grace period goes in it.
            self.agent.core.delete_namespaced_pod(self.name, self.ns, body={
                "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
            log.info("pod %s/%s stopped and removed", self.ns, self.name)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("final delete of pod %s/%s failed: %s", self.ns, self.name, exc.reason)


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values."""
    for k, v in env.items():
        value = value.replace(f"$({k})", v)
    return value


class NodeAgent:
    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg = cfg
        self.state_dir = cfg.state_dir
        self.node = cfg.node_name
        self.api_port = cfg.ports.apiserver
        self.issuer = "https://kubernetes.default.svc.cluster.local"
        self.ca_file = cfg.state_dir / "pki" / "ca.crt"
        api = config.new_client_from_config(str(cfg.state_dir / "node.kubeconfig"))
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.runners: dict[str, PodRunner] = {}
        # Pods whose runner has finished: a watch event queued before the end must not start them again.
        self.finished: OrderedDict[str, None] = OrderedDict()
        self.runners_lock = threading.Lock()
        self.cgroup_root = node_root(self.node)
        self.can_unshare = os.geteuid() == 0 and shutil.which("unshare") is not None
        from .images import load_images

        self.images = load_images()
        (self.state_dir / "pod-logs").mkdir(parents=True, exist_ok=True)

    def log_path(self, ns: str, pod: str, container: str) -> Path:
        return self.state_dir / "pod-logs" / f"{ns}_{pod}_{container}.log"

    def forget(self, uid: str) -> None:
        with self.runners_lock:
            self.runners.pop(uid, None)
            self.finished[uid] = None
            while len(self.finished) > FINISHED_REMEMBERED:
                self.finished.popitem(last=False)

    # ---- node registration and heartbeat -----------------------------------------------------
    def _capacity(self) -> dict[str, str]:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))
        return {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
                "ephemeral-storage": f"{shutil.disk_usage(self.state_dir).total // 1024}Ki"}

    def register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "local-process"}}}
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self) -> None:
        t = now()
        cap = self._capacity()
        cond = [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "node agent is posting ready status"},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "ok"},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "ok"},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "ok"},
        ]
        for c in cond:
            c.update(lastHeartbeatTime=t, lastTransitionTime=t)
        status = {"capacity": cap, "allocatable": cap, "conditions": cond,
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node}],
                  "nodeInfo": {"kubeletVersion": f"v{K8S_VERSION}", "kubeProxyVersion": "", "operatingSystem": "linux",
                               "architecture": "amd64", "containerRuntimeVersion": "process://vibecraft-node-agent",
                               "kernelVersion": os.uname().release, "osImage": "host", "machineID": "", "systemUUID": "",
                               "bootID": ""}}
        self.core.patch_node_status(self.node, {"status": status})
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": micro_now()}}
        try:
            self.coord.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": lease["spec"]})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat_loop(self) -> None:
        while True:
            time.sleep(10)
            try:
                self.heartbeat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    # ---- pods --------------------------------------------------------------------------------
    def handle(self, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status", {})
        uid = meta["uid"]
        with self.runners_lock:
            runner = self.runners.get(uid)
            if uid in self.finished:  # the event may predate the end: trust what the runner did
                if meta.get("deletionTimestamp"):
                    threading.Thread(target=PodRunner(self, pod)._finish_deletion, daemon=True).start()
                return
            if meta.get("deletionTimestamp"):
                if runner:
                    runner.stop(None, float(meta.get("deletionGracePeriodSeconds") or 30))
                elif status.get("phase") in ("Succeeded", "Failed") or not status.get("containerStatuses"):
                    threading.Thread(target=PodRunner(self, pod).fail_and_delete, daemon=True).start()
                else:
                    self._orphan(pod, delete=True)
                return
            if runner or status.get("phase") in ("Succeeded", "Failed"):
                return
            if status.get("containerStatuses") and any(
                    "running" in cs.get("state", {}) for cs in status["containerStatuses"]):
                self._orphan(pod, delete=False)  # we restarted and lost the process
                return
            runner = PodRunner(self, pod)
            self.runners[uid] = runner
        runner.start()

    def _orphan(self, pod: dict[str, Any], delete: bool) -> None:
        """A pod whose process this agent no longer has, like a kubelet after a crash."""
        runner = PodRunner(self, pod)
        for run in runner.containers:
            run.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                        "message": "The container could not be located when the pod was terminated",
                                        "finishedAt": now()}}
        runner.patch_status("Failed")
        if delete:
            runner._finish_deletion()

    def run(self) -> None:
        self.register()
        threading.Thread(target=self._heartbeat_loop, daemon=True).start()
        log.info("node %s registered; cgroup=%s unshare=%s", self.node, self.cgroup_root, self.can_unshare)
        selector = f"spec.nodeName={self.node}"
        api = self.core.api_client
        while True:
            try:
                pods = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for p in pods.items:
                    self.handle(api.sanitize_for_serialization(p))
                w = watch.Watch()
                for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                   resource_version=pods.metadata.resource_version, timeout_seconds=300):
                    obj = api.sanitize_for_serialization(ev["object"])
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self.handle(obj)
                    elif ev["type"] == "DELETED":
                        with self.runners_lock:
                            r = self.runners.get(obj["metadata"]["uid"])
                        if r:
                            r.stop(None, 0)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("pod watch failed: %s", exc.reason)
                    time.sleep(1)
            except Exception as exc:
                log.warning("pod watch error: %s", exc)
                time.sleep(1)

    def shutdown(self) -> None:
        with self.runners_lock:
            runners = list(self.runners.values())
        for r in runners:
            r.stop(None, 5)
            r._terminate_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='{"time":"%(asctime)s","level":"%(levelname)s","msg":"%(message)s"}')
    agent = NodeAgent(ClusterConfig.load(args.state_dir))

    def _term(*_: Any) -> None:
        agent.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, _term)
    agent.run()


if __name__ == "__main__":
    main()
