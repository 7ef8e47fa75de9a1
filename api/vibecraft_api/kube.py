"""A small asyncio Kubernetes API client on aiohttp: JSON requests and watch streams.

Why not the official `kubernetes` package: it is synchronous (a thread per call and per watch) and
importing it costs ~55 MB of RSS, a third of the memory budget of an API replica. Why aiohttp and
not httpx: per Kubernetes GET it costs 0.56 ms of CPU against 1.96 ms for httpx over HTTP/2 and
3.45 ms over HTTP/1.1 (measured at concurrency 16), and that call is most of the work behind
GET /v1/videos/{id}. Configuration covers in-cluster ServiceAccounts and kubeconfig files (client
certificates, bearer tokens, token files and exec credential plugins such as `aws eks get-token`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

from vibecraft_api.errors import KubeError

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0  # kubelet rotates projected tokens well before they expire
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)
MAX_EVENT_BYTES = 4 * 1024 * 1024  # one watch event (one object) per line


class Credentials(Protocol):
    """Something that yields the current Authorization header value."""

    def header(self) -> str: ...


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to authenticate to it."""

    server: str
    ssl: ssl.SSLContext | bool  # False: do not verify (insecure-skip-tls-verify)
    auth: Credentials | None


@dataclass(frozen=True)
class StaticAuth:
    """A fixed header value (token or basic credentials from a kubeconfig)."""

    value: str

    def header(self) -> str:
        return self.value


class TokenFileAuth:
    """Bearer token read from a file and re-read periodically (rotated ServiceAccount tokens)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._token = ""
        self._read_at = 0.0

    def header(self) -> str:
        if time.monotonic() - self._read_at > TOKEN_REREAD_SECONDS or not self._token:
            self._token = self.path.read_text().strip()
            self._read_at = time.monotonic()
        return f"Bearer {self._token}"


class ExecAuth:
    """client.authentication.k8s.io exec plugin; the token is cached until shortly before it expires."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.command = [str(spec["command"]), *[str(a) for a in spec.get("args") or []]]
        self.env = {**os.environ, **{str(e["name"]): str(e["value"]) for e in spec.get("env") or []}}
        self.api_version = str(spec.get("apiVersion", "client.authentication.k8s.io/v1"))
        self._token = ""
        self._expires = 0.0

    def header(self) -> str:
        if self._token and time.time() < self._expires - 60:
            return f"Bearer {self._token}"
        # Runs rarely (once per token lifetime); blocking the loop for that moment is acceptable.
        env = {**self.env, "KUBERNETES_EXEC_INFO": json.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": {"interactive": False}})}
        out = subprocess.run(self.command, env=env, capture_output=True, text=True, check=True, timeout=60).stdout
        status = json.loads(out).get("status", {})
        self._token = str(status["token"])
        expiry = status.get("expirationTimestamp")
        self._expires = datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp() if expiry else time.time() + 300
        return f"Bearer {self._token}"


def _load_pem(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl only loads client certificates from files: write them 0600, load, delete."""
    with tempfile.TemporaryDirectory(prefix="vibecraft-api-") as tmp:
        cert_path, key_path = Path(tmp, "client.crt"), Path(tmp, "client.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(data)
        ctx.load_cert_chain(cert_path, key_path)


def _data_or_file(section: Mapping[str, Any], name: str, base: Path) -> bytes | None:
    if section.get(f"{name}-data"):
        return base64.b64decode(section[f"{name}-data"])
    if section.get(name):
        return (base / str(section[name])).read_bytes()
    return None


def _credentials(user: Mapping[str, Any], base: Path) -> Credentials | None:
    if user.get("token"):
        return StaticAuth(f"Bearer {user['token']}")
    if user.get("tokenFile"):
        return TokenFileAuth(base / str(user["tokenFile"]))
    if user.get("exec"):
        return ExecAuth(user["exec"])
    if user.get("username"):
        pair = f"{user['username']}:{user.get('password', '')}".encode()
        return StaticAuth("Basic " + base64.b64encode(pair).decode())
    return None


def from_kubeconfig(path: Path, context: str | None = None) -> KubeConfig:
    """The current (or named) context of a kubeconfig file."""
    doc = yaml.safe_load(path.read_text()) or {}
    base = path.parent
    name = context or doc.get("current-context")
    ctx = next((c["context"] for c in doc.get("contexts") or [] if c.get("name") == name), None)
    if ctx is None:
        raise ValueError(f"{path}: context {name!r} not found")
    cluster = next((c["cluster"] for c in doc.get("clusters") or [] if c.get("name") == ctx.get("cluster")), None)
    user: dict[str, Any] = next((u["user"] for u in doc.get("users") or [] if u.get("name") == ctx.get("user")), {}) or {}
    if cluster is None:
        raise ValueError(f"{path}: cluster {ctx.get('cluster')!r} not found")
    tls: ssl.SSLContext | bool
    if cluster.get("insecure-skip-tls-verify"):
        tls = False
    else:
        tls = ssl.create_default_context()
        ca = _data_or_file(cluster, "certificate-authority", base)
        if ca:
            tls.load_verify_locations(cadata=ca.decode())
        cert, key = _data_or_file(user, "client-certificate", base), _data_or_file(user, "client-key", base)
        if cert and key:
            _load_pem(tls, cert, key)
    return KubeConfig(server=str(cluster["server"]).rstrip("/"), ssl=tls, auth=_credentials(user, base))


def in_cluster(sa_dir: Path = SA_DIR, env: Mapping[str, str] = os.environ) -> KubeConfig:
    """The pod's ServiceAccount: token and CA mounted by the kubelet, address from the service env vars."""
    host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    ctx = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    return KubeConfig(server=f"https://{host}:{port}", ssl=ctx, auth=TokenFileAuth(sa_dir / "token"))


def load_config(kubeconfig: str | None) -> KubeConfig:
    """An explicit kubeconfig, else the in-cluster ServiceAccount, else $KUBECONFIG or ~/.kube/config."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig).expanduser())
    if "KUBERNETES_SERVICE_HOST" in os.environ and (SA_DIR / "token").exists():
        return in_cluster()
    env = os.environ.get("KUBECONFIG", "")
    path = Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"
    return from_kubeconfig(path.expanduser())


def _error(status: int, reason: str, raw: bytes) -> KubeError:
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    details = body.get("details")
    details = details if isinstance(details, dict) else {}
    causes = [{k: str(v) for k, v in c.items()} for c in details.get("causes") or [] if isinstance(c, dict)]
    return KubeError(status, str(body.get("reason") or reason),
                     str(body.get("message") or raw[:500].decode(errors="replace")), causes, str(details.get("kind") or ""))


def _query(params: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (params or {}).items()}


class Kube:
    """JSON over the Kubernetes REST API; raises KubeError for any failure (code 0 when unreachable).

    Sessions are created on first use, inside the running event loop (aiohttp binds them to it).
    """

    def __init__(self, config: KubeConfig, *, max_connections: int = 64, max_watches: int = 1000) -> None:
        self.server = config.server
        self.config = config
        self.max_connections = max_connections
        self.max_watches = max_watches
        self._http: aiohttp.ClientSession | None = None
        self._watch_http: aiohttp.ClientSession | None = None

    def _session(self, limit: int, **kwargs: Any) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.config.ssl, limit=limit),
            headers={"Accept": "application/json", "User-Agent": "vibecraft-api"}, **kwargs)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = self._session(self.max_connections, timeout=REQUEST_TIMEOUT)
        return self._http

    @property
    def watch_http(self) -> aiohttp.ClientSession:
        # Watches get their own connections: each holds one for minutes, and requests must never queue
        # behind them for the request session's connection limit.
        if self._watch_http is None:
            self._watch_http = self._session(self.max_watches, read_bufsize=MAX_EVENT_BYTES // 2)
        return self._watch_http

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self.config.auth.header()} if self.config.auth else {}

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None) -> dict[str, Any]:
        """One request; the decoded JSON object on 2xx (a PATCH is a JSON merge patch)."""
        headers = self._headers()
        if method == "PATCH":
            headers["Content-Type"] = "application/merge-patch+json"
        try:
            async with self.http.request(method, self.server + path, params=_query(params),
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json", **headers}) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise _error(resp.status, resp.reason or "", raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from None
        data = json.loads(raw)
        return data if isinstance(data, dict) else {}

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def watch(self, path: str, params: Mapping[str, Any],
                    timeout_seconds: int) -> AsyncGenerator[dict[str, Any], None]:
        """The events ({type, object}) of one watch request until the server ends it."""
        query = _query({**params, "watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": timeout_seconds})
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=timeout_seconds + 30.0)
        try:
            async with self.watch_http.get(self.server + path, params=query, timeout=timeout,
                                           headers=self._headers()) as resp:
                if resp.status >= 300:
                    raise _error(resp.status, resp.reason or "", await resp.read())
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}") from None

    async def aclose(self) -> None:
        for session in (self._http, self._watch_http):
            if session is not None:
                await session.close()
