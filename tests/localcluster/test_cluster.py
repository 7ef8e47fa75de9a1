"""The local cluster is real where it matters: Jobs run through the scheduler onto the node, memory
limits OOM-kill, activeDeadlineSeconds and deletion stop the process, the garbage collector cascades,
RBAC refuses. Each test runs on both nodes the local cluster can have: the real kubelet (containers
from the renderer image, as a user's cluster runs them) and the node agent (host processes, the
fallback for machines without containers), so the fallback is held to the real node's behaviour."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from vibecraft_localcluster.config import find_tool

from tests.conftest import RENDERER_IMAGE, Cluster, temporary_namespace
from tests.harness import wait_for


@pytest.fixture(scope="module", params=["real-node", "node-agent"])
def node_cluster(request: pytest.FixtureRequest, cluster: Cluster) -> Cluster:
    """The session's cluster (a real node) or the node agent's. (Not an override named `cluster`: pytest
    then tore the session's cluster down and started it again.)"""
    if request.param == "node-agent":
        return request.getfixturevalue("agent_cluster")  # type: ignore[no-any-return]
    if not cluster.real:
        pytest.skip("the session's cluster runs the node agent (VIBECRAFT_TEST_NODE=agent)")
    return cluster


@pytest.fixture
def namespace(node_cluster: Cluster) -> Iterator[str]:
    """A fresh namespace on the test's cluster, deleted afterwards (without waiting)."""
    with temporary_namespace(node_cluster) as name:
        yield name


@pytest.fixture
def image(node_cluster: Cluster) -> str:
    """An image with Python 3 and the kubernetes client: the renderer's on a real node; on the node agent
    `python` stands for the host's interpreter."""
    return RENDERER_IMAGE if node_cluster.real else "python:3.11"


def job(name: str, code: str, image: str, memory: str | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": ["python3", "-c", code]}
    if memory:
        container["resources"] = {"limits": {"memory": memory}, "requests": {"memory": memory}}
    container.update(spec.pop("container", {}))
    pod = spec.pop("pod", {})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": {
                "restartPolicy": "Never", "containers": [container], **pod}}}}


def job_condition(batch: client.BatchV1Api, ns: str, name: str) -> str | None:
    j = batch.read_namespaced_job(name, ns)
    for c in j.status.conditions or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return str(c.type)
    return None


def pods_of(core: client.CoreV1Api, ns: str, job_name: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items)


@pytest.fixture
def apis(node_cluster: Cluster) -> tuple[client.CoreV1Api, client.BatchV1Api]:
    api = node_cluster.api_client()
    return client.CoreV1Api(api), client.BatchV1Api(api)


def test_job_runs_python_to_completion(node_cluster: Cluster, namespace: str, apis: Any, image: str) -> None:
    core, batch = apis
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    code = ("import os, pathlib; print('token', os.environ['TOKEN'], 'mode', os.environ['MODE'], 'pod', "
            "os.environ['POD_NAME'], 'ns', open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()); "
            "pathlib.Path('/tmp/x').write_text('ok'); print('cwd', os.getcwd(), 'mem', os.environ['MEM_MB']); "
            "open('/dev/termination-log', 'w').write('finished fine')")
    body = job("hello", code, image, container={
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MEM_MB", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        "resources": {"limits": {"memory": "200Mi"}},
        # An emptyDir over /tmp, where the test cluster's own state (token, termination log) lives.
        "workingDir": "/tmp",
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }, pod={"volumes": [{"name": "scratch", "emptyDir": {}}]})
    batch.create_namespaced_job(namespace, body)
    result = wait_for(lambda: job_condition(batch, namespace, "hello"), what="job to finish")
    pod = pods_of(core, namespace, "hello")[0]
    assert result == "Complete", node_cluster.pod_log(namespace, pod.metadata.name, "main")
    assert pod.spec.node_name == node_cluster.cfg.node_name  # placed by the real scheduler
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (0, "Completed", "finished fine")
    log = node_cluster.pod_log(namespace, pod.metadata.name, "main")
    assert f"token s3cr3t mode fast pod {pod.metadata.name} ns {namespace}" in log
    assert "cwd /tmp mem 200" in log


def test_memory_limit_oom_kills(namespace: str, apis: Any, image: str) -> None:
    core, batch = apis
    code = "x = []\nwhile True: x.append(bytearray(8 * 1024 * 1024))"
    batch.create_namespaced_job(namespace, job("hog", code, image, memory="64Mi"))
    assert wait_for(lambda: job_condition(batch, namespace, "hog"), what="job to fail") == "Failed"
    term = pods_of(core, namespace, "hog")[0].status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("OOMKilled", 137)


def test_nonzero_exit_and_unknown_image(namespace: str, apis: Any, image: str) -> None:
    core, batch = apis
    batch.create_namespaced_job(namespace, job("fails", "import sys; print('bad'); sys.exit(3)", image))
    assert wait_for(lambda: job_condition(batch, namespace, "fails")) == "Failed"
    term = pods_of(core, namespace, "fails")[0].status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("Error", 3)

    body = job("nope", "print(1)", image)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/does/not-exist:1"

    batch.create_namespaced_job(namespace, body)

    def pull_failed() -> str | None:  # the kubelet alternates ErrImagePull and ImagePullBackOff
        pods = pods_of(core, namespace, "nope")
        sts = pods[0].status.container_statuses if pods else None
        reason = sts[0].state.waiting.reason if sts and sts[0].state.waiting else None
        return reason if reason in ("ErrImagePull", "ImagePullBackOff") else None

    wait_for(pull_failed, timeout=120, what="ErrImagePull")
    assert job_condition(batch, namespace, "nope") is None  # waiting for its image, not failed


def test_active_deadline_and_pod_deletion_stop_the_process(node_cluster: Cluster, namespace: str, apis: Any,
                                                           image: str) -> None:
    core, batch = apis
    sleeper = ("import time, signal, sys\n"
               "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(0)))\n"
               "print('started', flush=True)\ntime.sleep(600)")
    batch.create_namespaced_job(namespace, job("deadline", sleeper, image, activeDeadlineSeconds=3))
    assert wait_for(lambda: job_condition(batch, namespace, "deadline"), what="deadline") == "Failed"
    j = batch.read_namespaced_job("deadline", namespace)
    assert any(c.reason == "DeadlineExceeded" for c in j.status.conditions or [])

    core.create_namespaced_pod(namespace, {"metadata": {"name": "sleepy"}, "spec": {
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "main", "image": image, "command": ["python3", "-c", sleeper]}]}})
    wait_for(lambda: "started" in node_cluster.pod_log(namespace, "sleepy", "main"), what="pod to start")
    assert core.read_namespaced_pod("sleepy", namespace).status.phase == "Running"
    # A real node's logs go with the pod: follow them (kubectl logs -f) through the deletion.
    follow = subprocess.Popen([find_tool("kubectl"), f"--kubeconfig={node_cluster.kubeconfig}", "logs", "-f",
                               "-n", namespace, "sleepy"], stdout=subprocess.PIPE, text=True) \
        if node_cluster.real else None
    core.delete_namespaced_pod("sleepy", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleepy", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="pod deletion")
    if follow:
        log, _ = follow.communicate(timeout=30)
    else:
        log = node_cluster.pod_log(namespace, "sleepy", "main")
    assert "got SIGTERM" in log


def test_garbage_collector_cascades(namespace: str, apis: Any, image: str) -> None:
    core, batch = apis
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    # Leaves at SIGTERM (as PID 1 in a container it would otherwise sit out its grace period).
    body = job("child", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
               "time.sleep(600)", image)
    body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                            "uid": owner.metadata.uid}]
    batch.create_namespaced_job(namespace, body)
    wait_for(lambda: pods_of(core, namespace, "child"), what="job pod")
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def all_gone() -> bool:
        try:
            batch.read_namespaced_job("child", namespace)
            return False
        except ApiException as exc:
            return exc.status == 404 and not pods_of(core, namespace, "child")

    wait_for(all_gone, what="cascade delete of job and pod")


def test_rbac_refuses_service_account_without_grants(node_cluster: Cluster, namespace: str, apis: Any, image: str) -> None:
    core, _ = apis
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token("nobody", namespace, {"spec": {}}).status.token
    cfg = client.Configuration()
    cfg.host = node_cluster.cfg.server
    cfg.ssl_ca_cert = str(node_cluster.state_dir / "pki" / "ca.crt")
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = client.CoreV1Api(client.ApiClient(cfg))
    with pytest.raises(ApiException) as err:
        as_nobody.list_namespaced_pod(namespace)
    assert err.value.status == 403
    # ...and a Role + RoleBinding is what opens it.
    rbac = client.RbacAuthorizationV1Api(node_cluster.api_client())
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "read-pods"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": "read-pods"}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
        "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}]})
    wait_for(lambda: _can_list(as_nobody, namespace), what="RBAC grant to take effect")


def _can_list(api: client.CoreV1Api, ns: str) -> bool:
    try:
        api.list_namespaced_pod(ns)
    except ApiException:
        return False
    return True


def test_pod_authenticates_as_its_service_account(node_cluster: Cluster, namespace: str, apis: Any, image: str) -> None:
    core, batch = apis
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "worker"}})
    code = ("from kubernetes import client, config\nconfig.load_incluster_config()\n"
            "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n"
            "try:\n    client.CoreV1Api().list_namespaced_secret(ns)\n"
            "    print('LISTED')\nexcept client.ApiException as e:\n    print('STATUS', e.status)\n")
    body = job("whoami", code, image)
    body["spec"]["template"]["spec"]["serviceAccountName"] = "worker"
    batch.create_namespaced_job(namespace, body)
    assert wait_for(lambda: job_condition(batch, namespace, "whoami")) == "Complete"
    pod = pods_of(core, namespace, "whoami")[0]
    assert "STATUS 403" in node_cluster.pod_log(namespace, pod.metadata.name, "main")


def test_second_up_is_a_noop_and_taken_port_is_reported(node_cluster: Cluster, tmp_path: Any) -> None:
    import socket

    from vibecraft_localcluster.cluster import ClusterError, LocalCluster
    from vibecraft_localcluster.config import ClusterConfig, Ports

    before = node_cluster.lc.running()
    node_cluster.lc.up()
    assert node_cluster.lc.running() == before

    ports = Ports.random()
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.apiserver))
        held.listen()
        other = LocalCluster(ClusterConfig(state_dir=tmp_path / "other", ports=ports, node_name="other"))
        with pytest.raises(ClusterError, match=f"{ports.apiserver}.*already in use"):
            other.up()
    assert not any(other.running().values())
