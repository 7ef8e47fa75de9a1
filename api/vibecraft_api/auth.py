"""API keys → tenants, from a Kubernetes Secret reloaded in the background.

Secret data: key = tenant name, value = the SHA-256 of the API key as 64 hex digits, optionally
prefixed `sha256:` (recommended: the Secret never holds a usable key), or the raw key (at least 16
characters, not 64 hex digits); several keys per tenant (rotation), one per line.
Only SHA-256 digests are kept in memory and they are compared with hmac.compare_digest.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass

from vibecraft_api.errors import KubeError, Unavailable
from vibecraft_api.kube import Kube
from vibecraft_api.settings import Settings, is_placeholder

log = logging.getLogger(__name__)

TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HASHED = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")  # 64 hex digits are always a digest
MIN_RAW_KEY_LENGTH = 16


@dataclass(frozen=True)
class Tenant:
    """Who is calling: the tenant, its namespace, and a non-secret id of the key used (rate limits, logs)."""

    name: str
    namespace: str
    key_id: str


def digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def parse_secret(data: dict[str, str], prefix: str) -> dict[bytes, str]:
    """Key digest → tenant from a Secret's base64 `data`; bad entries are skipped with a warning."""
    keys: dict[bytes, str] = {}
    for tenant, encoded in sorted(data.items()):
        if not TENANT.match(tenant) or len(prefix + tenant) > 63:
            log.warning("API keys: skipping %r: a tenant must be a DNS label (with the prefix, at most 63 chars)", tenant)
            continue
        try:
            text = base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            log.warning("API keys: skipping tenant %s: value is not base64 UTF-8", tenant)
            continue
        for line in (ln.strip() for ln in text.splitlines()):
            if not line:
                continue
            if m := HASHED.match(line):
                key_digest = bytes.fromhex(m.group(1))
            elif len(line) < MIN_RAW_KEY_LENGTH or is_placeholder(line):
                log.warning("API keys: skipping a key of tenant %s: raw keys must be real and >= %d chars",
                            tenant, MIN_RAW_KEY_LENGTH)
                continue
            else:
                key_digest = digest(line)
            if keys.get(key_digest, tenant) != tenant:
                log.warning("API keys: a key is listed for both %s and %s; keeping %s", keys[key_digest], tenant,
                            keys[key_digest])
                continue
            keys[key_digest] = tenant
    return keys


class KeyStore:
    """The current key → tenant table; `authenticate` never raises for a bad key, it returns None."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.prefix = settings.namespace_prefix
        self.path = f"/api/v1/namespaces/{settings.keys_secret_namespace}/secrets/{settings.keys_secret_name}"
        self.reload_seconds = settings.keys_reload_seconds
        self.miss_reload_seconds = settings.keys_miss_reload_seconds
        self.entries: list[tuple[bytes, str]] = []
        self.loaded = False
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the Secret now (raises KubeError when it cannot be read; the old table stays)."""
        secret = await self.kube.get(self.path)
        keys = parse_secret(secret.get("data") or {}, self.prefix)
        self.entries = list(keys.items())
        self._loaded_at = time.monotonic()
        if not self.loaded:
            log.info("API keys: %d keys for %d tenants", len(keys), len(set(keys.values())))
        self.loaded = True

    async def _reload_after_miss(self) -> bool:
        """Reload once for a burst of unknown keys, at most every miss_reload_seconds; True if reloaded."""
        started = time.monotonic()
        async with self._lock:
            if self._loaded_at >= started:
                return True  # another request reloaded while we waited
            if time.monotonic() - self._loaded_at < self.miss_reload_seconds:
                return False
            try:
                await self.load()
            except KubeError as exc:
                log.warning("API keys: reload failed: %s", exc)
                return False
            return True

    def _match(self, key_digest: bytes) -> str | None:
        found = None
        for candidate, tenant in self.entries:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(candidate, key_digest):
                found = tenant
        return found

    async def authenticate(self, api_key: str) -> Tenant | None:
        key_digest = digest(api_key)
        tenant = self._match(key_digest)
        if tenant is None and await self._reload_after_miss():
            tenant = self._match(key_digest)
        if tenant is None:
            if not self.loaded:
                raise Unavailable("API keys are not loaded yet; try again shortly.")
            return None
        return Tenant(name=tenant, namespace=self.prefix + tenant, key_id=key_digest.hex()[:16])

    async def run_reloader(self) -> None:
        """Reload every reload_seconds until cancelled; failures keep the previous keys."""
        while True:
            try:
                await self.load()
            except KubeError as exc:
                log.warning("API keys: cannot read the Secret (keeping %d keys): %s", len(self.entries), exc)
            await asyncio.sleep(self.reload_seconds)
