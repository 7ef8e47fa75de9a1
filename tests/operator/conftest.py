"""Operator suite fixtures: Kubernetes clients, a namespace ready for renders, the operator as a subprocess.

The operator (tests.harness.OperatorProcess) is scoped to the test's namespace; renders use
tests/operator/fake_renderer.py (through VIBECRAFT_RENDERER_COMMAND), whose behaviour each test picks
with spec.style.prompt. On a real node the fake runs in a real container of the renderer image (its
Python, boto3, user, read-only root and limits), its source passed with `python -c`; on the node agent
it is a host process. Parametrize `operator_settings` indirectly to change its VIBECRAFT_* env.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from kubernetes import client
from vibecraft_common.resource import GROUP, PLURAL

from tests.conftest import Cluster, S3Server, provision_renders
from tests.harness import OperatorProcess

FAKE_RENDERER = Path(__file__).with_name("fake_renderer.py")


def fake_renderer_command(cluster: Cluster) -> list[str]:
    """The fake renderer as the Job's container command (the operator appends `--from-env`)."""
    if cluster.real:
        return ["python", "-c", FAKE_RENDERER.read_text()]
    return [sys.executable, str(FAKE_RENDERER)]


def make_operator(cluster: Cluster, s3: S3Server, namespace: str, log: Path, args: Sequence[str] = ("--standalone",),
                  **settings: str) -> OperatorProcess:
    """An operator (not started) for `namespace`, with the fake renderer; `settings` ("" = the default) on top."""
    env = {**cluster.operator_env(), "VIBECRAFT_LOG_FORMAT": "full",
           "VIBECRAFT_RENDERER_COMMAND": json.dumps(fake_renderer_command(cluster)),
           "VIBECRAFT_RETRY_BACKOFF_SECONDS": "1", **settings}
    namespaces = [namespace] if isinstance(namespace, str) else list(namespace)
    return OperatorProcess(cluster.kubeconfig, namespaces, log, env=env, args=args, metrics=True)


@pytest.fixture
def apis(cluster: Cluster) -> tuple[client.CustomObjectsApi, client.BatchV1Api, client.CoreV1Api]:
    api = cluster.api_client()
    return client.CustomObjectsApi(api), client.BatchV1Api(api), client.CoreV1Api(api)


@pytest.fixture
def renderer_namespace(cluster: Cluster, s3: S3Server, namespace: str) -> str:
    """The namespace with what renders need: the renderer's ServiceAccount and RBAC (crds/rbac), the S3 Secret."""
    provision_renders(cluster, s3, namespace)
    return namespace


@pytest.fixture
def operator_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """Extra VIBECRAFT_* env for the operator (parametrize it indirectly to change)."""
    return dict(getattr(request, "param", {}))


def stop_operators(cluster: Cluster, namespace: str, *operators: OperatorProcess) -> None:
    """Delete the namespace's MusicVideos while one still runs (it releases the finalizers), then stop them all."""
    if any(op.running for op in operators):
        cluster.kubectl("delete", f"{PLURAL}.{GROUP}", "--all", "-n", namespace, "--timeout=60s", check=False)
    for op in operators:
        op.stop()


@pytest.fixture
def operator(cluster: Cluster, s3: S3Server, crd: None, renderer_namespace: str, tmp_path: Path,
             operator_settings: dict[str, str]) -> Iterator[OperatorProcess]:
    """A running operator for the test's namespace; its MusicVideos are deleted before it stops."""
    op = make_operator(cluster, s3, renderer_namespace, tmp_path / "operator.log", **operator_settings)
    op.start()
    try:
        yield op
    finally:
        stop_operators(cluster, renderer_namespace, op)
        print(f"--- operator log ({op.log}) ---\n{op.log_tail(6000)}")
