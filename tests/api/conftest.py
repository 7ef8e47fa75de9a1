"""API fixtures: the API's ServiceAccount (api/rbac.yaml, for real), a live server, tenants (the CRD: tests/conftest.py).

The API under test authenticates as the `vibecraft-api` ServiceAccount bound by api/rbac.yaml, so a
missing permission fails the tests as it would fail in a cluster.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from vibecraft_api.main import create_app
from vibecraft_api.settings import Settings

from tests.conftest import Cluster, S3Server
from tests.harness import ROOT, Service, free_port, wait_for

RBAC = ROOT / "api" / "rbac.yaml"
SECRET_NAME = "vibecraft-api-keys"
MiB = 1024 * 1024

# The shared server's limits (tests rely on them).
MAX_UPLOAD = 6 * MiB
PART = 5 * MiB
RATE_PER_MINUTE = 2.0
BURST = 4
MAX_RENDERS = 3
CORS_ORIGIN = "https://app.example"


@dataclass
class ApiSystem:
    """Where the API's own things live: its namespace, ServiceAccount kubeconfig, key Secret, tenant prefix."""

    namespace: str
    kubeconfig: Path
    prefix: str
    cluster: Cluster
    s3: S3Server

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kubeconfig": str(self.kubeconfig),
            "s3_bucket": self.s3.bucket, "s3_endpoint": self.s3.endpoint, "s3_region": self.s3.region,
            "s3_access_key_id": self.s3.access_key, "s3_secret_access_key": self.s3.secret_key,
            "s3_addressing_style": "path",
            "keys_secret_name": SECRET_NAME, "keys_secret_namespace": self.namespace,
            "keys_miss_reload_seconds": 0.0, "keys_reload_seconds": 2.0,
            "namespace_prefix": self.prefix,
            "max_upload_bytes": MAX_UPLOAD, "upload_part_bytes": PART, "multipart_threshold_bytes": PART,
            "rate_limit_per_minute": RATE_PER_MINUTE, "rate_limit_burst": BURST,
            "max_concurrent_renders": MAX_RENDERS,
            "cors_origins": [CORS_ORIGIN],
            "presign_expiry_seconds": 300,
        }
        values.update(overrides)
        return Settings(**values)

    def env(self, **overrides: Any) -> dict[str, str]:
        """The same settings as VIBECRAFT_API_* env vars (for a server in a subprocess)."""
        out = {}
        for name, value in self.settings(**overrides).model_dump().items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            out[f"VIBECRAFT_API_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
        return out


def _rbac_for(namespace: str, suffix: str) -> str:
    """api/rbac.yaml moved to a test namespace, cluster-scoped names suffixed (a reused cluster stays clean)."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    for doc in docs:
        meta = doc["metadata"]
        if "namespace" in meta:
            meta["namespace"] = namespace
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] += suffix
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] += suffix
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="session")
def api_system(cluster: Cluster, s3: S3Server, crd: None, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ApiSystem]:
    suffix = uuid.uuid4().hex[:6]
    ns = f"vcapi-{suffix}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("apply", "-f", "-", input=_rbac_for(ns, "-" + suffix))
    cluster.kubectl("-n", ns, "create", "secret", "generic", SECRET_NAME)
    kubeconfig = cluster.service_account_kubeconfig(ns, "vibecraft-api", tmp_path_factory.mktemp("api") / "kubeconfig")
    yield ApiSystem(ns, kubeconfig, f"vct{suffix[:4]}-", cluster, s3)
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", f"vibecraft-api-{suffix}", check=False)


class ServerThread:
    """uvicorn serving an app in a thread of the test process (streaming works as in production)."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(self._started, timeout=30, interval=0.05, what="the API server to start")
        return self

    def _started(self) -> bool:
        assert self.thread.is_alive(), "the API server failed to start"
        return bool(self.server.started)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@pytest.fixture(scope="session")
def api_server(api_system: ApiSystem) -> Iterator[ServerThread]:
    with ServerThread(api_system.settings()) as server:
        yield server


@pytest.fixture(scope="session")
def scoped_api_server(cluster: Cluster, api_system: ApiSystem, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[ServerThread]:
    """A second API as the Helm chart binds it: no cluster-wide RoleBinding, only the key Secret's Role.

    The chart binds the MusicVideo ClusterRole per tenant namespace, so here the API may touch no
    namespace at all: every tenant looks like one whose namespace (and RoleBinding) is missing.
    """
    account = "vibecraft-api-scoped"
    cluster.kubectl("-n", api_system.namespace, "create", "serviceaccount", account)
    cluster.kubectl("-n", api_system.namespace, "create", "rolebinding", f"{account}-keys", "--role=vibecraft-api-keys",
                    f"--serviceaccount={api_system.namespace}:{account}")
    kubeconfig = cluster.service_account_kubeconfig(api_system.namespace, account,
                                                    tmp_path_factory.mktemp("scoped-api") / "kubeconfig")
    with ServerThread(api_system.settings(kubeconfig=str(kubeconfig))) as server:
        yield server


@dataclass
class TenantHandle:
    """A tenant with its API key and an httpx client that sends it."""

    name: str
    key: str
    namespace: str
    client: httpx.Client

    def ns_get(self, cluster: Cluster, name: str) -> dict[str, Any]:
        from kubernetes import client

        obj: dict[str, Any] = client.CustomObjectsApi(cluster.api_client()).get_namespaced_custom_object(
            "vibecraft.io", "v1alpha1", self.namespace, "musicvideos", name)
        return obj


def add_key(cluster: Cluster, system: ApiSystem, tenant: str, value: str) -> None:
    """Add a tenant's key to the Secret (as an administrator would)."""
    encoded = base64.b64encode(value.encode()).decode()
    cluster.kubectl("-n", system.namespace, "patch", "secret", SECRET_NAME, "--type=merge",
                    "-p", f'{{"data": {{"{tenant}": "{encoded}"}}}}')


@pytest.fixture
def new_tenant(cluster: Cluster, api_system: ApiSystem, api_server: ServerThread
               ) -> Iterator[Callable[..., TenantHandle]]:
    """Make tenants: namespace created, key (hashed in the Secret) added; namespaces deleted afterwards."""
    made: list[TenantHandle] = []

    def make(role: str = "t", *, provision: bool = True, hashed: bool = True) -> TenantHandle:
        name = f"{role}{secrets.token_hex(3)}"
        key = f"vc_{secrets.token_urlsafe(24)}"
        namespace = api_system.prefix + name
        if provision:
            cluster.kubectl("create", "namespace", namespace)
        add_key(cluster, api_system, name, f"sha256:{hashlib.sha256(key.encode()).hexdigest()}" if hashed else key)
        client = httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        handle = TenantHandle(name, key, namespace, client)
        made.append(handle)
        return handle

    yield make
    for t in made:
        t.client.close()
        cluster.kubectl("delete", "namespace", t.namespace, "--wait=false", check=False)


@pytest.fixture
def anon(api_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=30) as client:
        yield client


@pytest.fixture
def admin(cluster: Cluster) -> Any:
    """An admin kubernetes ApiClient (to play the operator's and renderer's part)."""
    return cluster.api_client()


@pytest.fixture
def api_process(api_system: ApiSystem) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m vibecraft_api` (what the container runs) in a subprocess (its memory can be measured),
    limits raised for big files."""
    port = free_port()
    env = {**os.environ, **api_system.env(host="127.0.0.1", port=port, max_upload_bytes=600 * MiB,
                                          upload_part_bytes=8 * MiB, multipart_threshold_bytes=64 * MiB,
                                          log_level="warning")}
    url = f"http://127.0.0.1:{port}"
    api = Service([sys.executable, "-m", "vibecraft_api"], env, url + "/healthz", name="the API process")
    api.start(timeout=30, interval=0.1)
    assert api.proc is not None
    try:
        yield api.proc, url
    finally:
        api.stop(timeout=10)
