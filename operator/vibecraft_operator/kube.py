"""Thin, blocking Kubernetes API calls that speak plain dicts (run them in a thread)."""

import json
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from vibecraft_common.resource import GROUP, PLURAL, VERSION

from vibecraft_operator.errors import ApiUnavailable

MERGE_PATCH = "application/merge-patch+json"
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


API_CONNECTIONS = 16  # >= asyncio's default thread pool (min(32, cores + 4)) on the machines we run on


def load_api_client() -> client.ApiClient:
    """An API client from the in-cluster service account, else from KUBECONFIG."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    cfg = client.Configuration.get_default_copy()
    # Calls run on asyncio's worker threads; with urllib3's default pool of 4 connections the rest open
    # (and TLS-handshake) a new one per call, which dominated the operator's CPU with 1000 MusicVideos.
    cfg.connection_pool_maxsize = API_CONNECTIONS
    return client.ApiClient(cfg)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


class Kube:
    """The handful of calls the reconciler makes; ApiUnavailable for anything worth retrying."""

    def __init__(self, api: client.ApiClient, timeout: float) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._batch = client.BatchV1Api(api)
        self._core = client.CoreV1Api(api)
        self._timeout = timeout

    def _call(self, fn: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> dict[str, Any] | None:
        try:
            return _json(fn(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs))
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            if exc.status in RETRYABLE_STATUSES:
                raise ApiUnavailable(f"{fn.__name__}: HTTP {exc.status} {exc.reason}") from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnavailable(f"{fn.__name__}: {exc}") from exc

    def get_musicvideo(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The MusicVideo, or None if it is gone."""
        return self._call(self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                          missing_ok=True)

    def patch_musicvideo_status(self, namespace: str, name: str, patch: Mapping[str, Any],
                                resource_version: str | None = None) -> None:
        """Merge-patch status (None values delete keys); a vanished MusicVideo is fine.

        With `resource_version` the patch applies only to that version (409 otherwise: the caller's view was old).
        """
        body: dict[str, Any] = {"status": dict(patch)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self._call(self._custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, name,
                   body, _content_type=MERGE_PATCH, missing_ok=True)

    def patch_musicvideo_metadata(self, namespace: str, name: str, metadata: Mapping[str, Any],
                                  resource_version: str | None = None) -> None:
        """Merge-patch metadata (labels, annotations; None values delete keys); a vanished MusicVideo is fine.

        With `resource_version` the patch applies only to that version (409 otherwise: the caller's view was old).
        """
        meta = {**metadata, **({"resourceVersion": resource_version} if resource_version else {})}
        self._call(self._custom.patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                   {"metadata": meta}, _content_type=MERGE_PATCH, missing_ok=True)

    def delete_musicvideo(self, namespace: str, name: str, uid: str) -> None:
        """Delete that MusicVideo (the uid guards against a new one of the same name); gone already is fine."""
        body = {"propagationPolicy": "Background", "preconditions": {"uid": uid}}
        try:
            self._call(self._custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name,
                       body=body, missing_ok=True)
        except ApiException as exc:
            if exc.status != 409:  # 409: another object of that name now
                raise

    def list_jobs(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Jobs with all of `labels`."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = self._call(self._batch.list_namespaced_job, namespace, label_selector=selector) or {}
        return list(result.get("items") or [])

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None."""
        return self._call(self._batch.read_namespaced_job, name, namespace, missing_ok=True)

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create the Job; None if one of that name already exists (ApiException otherwise)."""
        try:
            return self._call(self._batch.create_namespaced_job, namespace, dict(body))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and (foreground) its pods first; a missing Job is fine."""
        body = {"propagationPolicy": "Foreground"}
        self._call(self._batch.delete_namespaced_job, name, namespace, body=body, missing_ok=True)

    def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Pods with all of `labels`."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = self._call(self._core.list_namespaced_pod, namespace, label_selector=selector) or {}
        return list(result.get("items") or [])

    def get_configmap_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The ConfigMap's data, or None if it does not exist."""
        result = self._call(self._core.read_namespaced_config_map, name, namespace, missing_ok=True)
        return None if result is None else dict(result.get("data") or {})

    def put_configmap_entry(self, namespace: str, name: str, key: str, value: str) -> None:
        """Set one key of the ConfigMap's data, creating the ConfigMap if needed."""
        patch = {"data": {key: value}}
        if self._call(self._core.patch_namespaced_config_map, name, namespace, patch, missing_ok=True) is None:
            body = {"metadata": {"name": name}, "data": {key: value}}
            try:
                self._call(self._core.create_namespaced_config_map, namespace, body)
            except ApiException as exc:
                if exc.status != 409:  # created meanwhile: patch it
                    raise
                self._call(self._core.patch_namespaced_config_map, name, namespace, patch)
