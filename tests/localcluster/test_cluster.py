"""The local cluster is real where it matters: Jobs run through scheduler and node agent,
memory limits OOM-kill, the garbage collector cascades, RBAC refuses."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import Cluster
from tests.harness import wait_for


def job(name: str, code: str, memory: str | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "python:3.11", "command": ["python3", "-c", code]}
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
def apis(cluster: Cluster) -> tuple[client.CoreV1Api, client.BatchV1Api]:
    api = cluster.api_client()
    return client.CoreV1Api(api), client.BatchV1Api(api)


def test_job_runs_python_to_completion(cluster: Cluster, namespace: str, apis: Any) -> None:
    core, batch = apis
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast"}})
    code = ("import os, pathlib; print('token', os.environ['TOKEN'], 'mode', os.environ['MODE'], 'pod', "
            "os.environ['POD_NAME'], 'ns', open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()); "
            "pathlib.Path('/tmp/x').write_text('ok'); print('cwd', os.getcwd(), 'mem', os.environ['MEM_MB']); "
            "open('/dev/termination-log', 'w').write('finished fine')")
    body = job("hello", code, container={
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
    assert result == "Complete", cluster.pod_log(namespace, pod.metadata.name, "main")
    assert pod.spec.node_name == cluster.cfg.node_name  # placed by the real scheduler
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (0, "Completed", "finished fine")
    log = cluster.pod_log(namespace, pod.metadata.name, "main")
    assert f"token s3cr3t mode fast pod {pod.metadata.name} ns {namespace}" in log
    assert "cwd /tmp mem 200" in log


def test_memory_limit_oom_kills(namespace: str, apis: Any) -> None:
    core, batch = apis
    code = "x = []\nwhile True: x.append(bytearray(8 * 1024 * 1024))"
    batch.create_namespaced_job(namespace, job("hog", code, memory="64Mi"))
    assert wait_for(lambda: job_condition(batch, namespace, "hog"), what="job to fail") == "Failed"
    term = pods_of(core, namespace, "hog")[0].status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("OOMKilled", 137)


def test_nonzero_exit_and_unknown_image(namespace: str, apis: Any) -> None:
    core, batch = apis
    batch.create_namespaced_job(namespace, job("fails", "import sys; print('bad'); sys.exit(3)"))
    assert wait_for(lambda: job_condition(batch, namespace, "fails")) == "Failed"
    term = pods_of(core, namespace, "fails")[0].status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("Error", 3)

    body = job("nope", "print(1)")
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "example.com/does/not-exist:1"

    batch.create_namespaced_job(namespace, body)

    def waiting_reason() -> str | None:
        pods = pods_of(core, namespace, "nope")
        sts = pods[0].status.container_statuses if pods else None
        return sts[0].state.waiting.reason if sts and sts[0].state.waiting else None

    assert wait_for(waiting_reason, what="ErrImagePull") == "ErrImagePull"


def test_active_deadline_and_pod_deletion_stop_the_process(cluster: Cluster, namespace: str, apis: Any) -> None:
    core, batch = apis
    sleeper = ("import time, signal, sys\n"
               "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(0)))\n"
               "print('started', flush=True)\ntime.sleep(600)")
    batch.create_namespaced_job(namespace, job("deadline", sleeper, activeDeadlineSeconds=3))
    assert wait_for(lambda: job_condition(batch, namespace, "deadline"), what="deadline") == "Failed"
    j = batch.read_namespaced_job("deadline", namespace)
    assert any(c.reason == "DeadlineExceeded" for c in j.status.conditions or [])

    core.create_namespaced_pod(namespace, {"metadata": {"name": "sleepy"}, "spec": {
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "main", "image": "python:3.11", "command": ["python3", "-c", sleeper]}]}})
    wait_for(lambda: "started" in cluster.pod_log(namespace, "sleepy", "main"), what="pod to start")
    assert core.read_namespaced_pod("sleepy", namespace).status.phase == "Running"
    core.delete_namespaced_pod("sleepy", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("sleepy", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="pod deletion")
    assert "got SIGTERM" in cluster.pod_log(namespace, "sleepy", "main")


def test_garbage_collector_cascades(namespace: str, apis: Any) -> None:
    core, batch = apis
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    body = job("child", "import time; time.sleep(600)")
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


def test_rbac_refuses_service_account_without_grants(cluster: Cluster, namespace: str, apis: Any) -> None:
    core, _ = apis
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token("nobody", namespace, {"spec": {}}).status.token
    cfg = client.Configuration()
    cfg.host = cluster.cfg.server
    cfg.ssl_ca_cert = str(cluster.state_dir / "pki" / "ca.crt")
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = client.CoreV1Api(client.ApiClient(cfg))
    with pytest.raises(ApiException) as err:
        as_nobody.list_namespaced_pod(namespace)
    assert err.value.status == 403
    # ...and a Role + RoleBinding is what opens it.
    rbac = client.RbacAuthorizationV1Api(cluster.api_client())
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


def test_pod_authenticates_as_its_service_account(cluster: Cluster, namespace: str, apis: Any) -> None:
    core, batch = apis
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "worker"}})
    code = ("from kubernetes import client, config\nconfig.load_incluster_config()\n"
            "ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\n"
            "try:\n    client.CoreV1Api().list_namespaced_secret(ns)\n"
            "    print('LISTED')\nexcept client.ApiException as e:\n    print('STATUS', e.status)\n")
    body = job("whoami", code)
    body["spec"]["template"]["spec"]["serviceAccountName"] = "worker"
    batch.create_namespaced_job(namespace, body)
    assert wait_for(lambda: job_condition(batch, namespace, "whoami")) == "Complete"
    pod = pods_of(core, namespace, "whoami")[0]
    assert "STATUS 403" in cluster.pod_log(namespace, pod.metadata.name, "main")


def test_second_up_is_a_noop_and_taken_port_is_reported(cluster: Cluster, tmp_path: Any) -> None:
    import socket

    from vibecraft_localcluster.cluster import ClusterError, LocalCluster
    from vibecraft_localcluster.config import ClusterConfig, Ports

    before = cluster.lc.running()
    cluster.lc.up()
    assert cluster.lc.running() == before

    ports = Ports.random()
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.apiserver))
        held.listen()
        other = LocalCluster(ClusterConfig(state_dir=tmp_path / "other", ports=ports, node_name="other"))
        with pytest.raises(ClusterError, match=f"{ports.apiserver}.*already in use"):
            other.up()
    assert not any(other.running().values())
