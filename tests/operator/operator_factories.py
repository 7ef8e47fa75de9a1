"""Factories for MusicVideo, Job and Pod dicts as the API server returns them (defaults applied)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from vibecraft_common.resource import API_VERSION, KIND, LABEL_ATTEMPT, LABEL_NAME
from vibecraft_operator.jobs import job_name
from vibecraft_operator.queue import Admission
from vibecraft_operator.reconcile import Observation, Plan, decide
from vibecraft_operator.settings import Settings
from vibecraft_operator.timeutil import format_time

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
UID = "11111111-2222-3333-4444-555555555555"


def settings(**overrides: Any) -> Settings:
    """Settings with test-friendly values, independent of the environment."""
    values: dict[str, Any] = {
        "renderer_image": "vibecraft/renderer:0.1.0",
        "renderer_service_account": "vibecraft-renderer",
        "s3_secret_name": "vibecraft-s3",
        "replicate_secret_name": "vibecraft-replicate",
        "s3_endpoint": "http://127.0.0.1:8333",
        "s3_region": "us-east-1",
        "default_memory": "512Mi",
        "memory_per_megapixel": "256Mi",
        "default_cpu": "1",
        "default_max_memory": "8Gi",
        "retry_backoff_seconds": 10.0,
        "retry_backoff_max_seconds": 300.0,
        "job_ttl_seconds": 3600,
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings(**values)


def spec(**overrides: Any) -> dict[str, Any]:
    """A spec with the CRD's defaults applied."""
    result: dict[str, Any] = {
        "audio": {"url": "s3://vibecraft/songs/demo.ogg"},
        "output": {"url": "s3://vibecraft/videos/demo/"},
        "style": {"backend": "procedural"},
        "video": {"fps": 30, "cutEvery": "beat", "preset": "veryfast"},
        "retries": 2,
        "deadlineSeconds": 3600,
        "suspend": False,
    }
    result.update(overrides)
    return result


def musicvideo(
    name: str = "demo",
    namespace: str = "default",
    *,
    uid: str = UID,
    generation: int = 1,
    created: datetime = T0,
    status: dict[str, Any] | None = None,
    **spec_overrides: Any,
) -> dict[str, Any]:
    """A MusicVideo body."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generation": generation,
            "creationTimestamp": format_time(created),
            "labels": {"team": "music"},
        },
        "spec": spec(**spec_overrides),
        "status": copy.deepcopy(status) if status else {},
    }


def job(
    mv: dict[str, Any],
    attempt: int = 1,
    *,
    condition: str | None = None,
    reason: str = "",
    message: str = "",
    suspended: bool = False,
    deleting: bool = False,
) -> dict[str, Any]:
    """The Job of an attempt; `condition` is None (active), "Complete" or "Failed"."""
    meta = mv["metadata"]
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"], attempt),
            "namespace": meta["namespace"],
            "labels": {LABEL_NAME: meta["name"], LABEL_ATTEMPT: str(attempt)},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                                 "uid": meta["uid"], "controller": True}],
        },
        "spec": {"suspend": suspended},
        "status": {},
    }
    if condition:
        body["status"]["conditions"] = [
            {"type": condition, "status": "True", "reason": reason, "message": message}
        ]
    if deleting:
        body["metadata"]["deletionTimestamp"] = format_time(T0)
    return body


def pod(
    name: str = "demo-a1-xyz",
    *,
    phase: str = "Failed",
    exit_code: int | None = None,
    reason: str | None = None,
    message: str = "",
    conditions: list[dict[str, Any]] | None = None,
    deleted_at: datetime | None = None,
    grace: int = 30,
    finished_at: datetime | None = None,
    waiting: str | None = None,
    pod_reason: str | None = None,
    created: datetime = T0,
) -> dict[str, Any]:
    """A renderer pod; with `exit_code` its container has terminated."""
    container: dict[str, Any] = {"name": "renderer", "state": {}}
    if exit_code is not None:
        terminated: dict[str, Any] = {"exitCode": exit_code, "message": message,
                                      "finishedAt": format_time(finished_at or T0 + timedelta(minutes=5))}
        if reason is not None:
            terminated["reason"] = reason
        container["state"] = {"terminated": terminated}
    elif waiting:
        container["state"] = {"waiting": {"reason": waiting, "message": message}}
    body: dict[str, Any] = {
        "metadata": {"name": name, "creationTimestamp": format_time(created)},
        "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": [container]},
    }
    if pod_reason:
        body["status"]["reason"] = pod_reason
    if deleted_at is not None:
        body["metadata"]["deletionTimestamp"] = format_time(deleted_at + timedelta(seconds=grace))
        body["metadata"]["deletionGracePeriodSeconds"] = grace
    return body


def step(
    mv: dict[str, Any],
    *,
    job_: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    now: datetime = T0,
    admitted: bool = True,
    cfg: Settings | None = None,
) -> Plan:
    """decide() on one observation."""
    admission = Admission(True) if admitted else Admission(False, "Queued", "waiting for a render slot")
    obs = Observation(mv=mv, job=job_, pods=pods or [], now=now, admission=admission)
    return decide(obs, cfg or settings())


def applied(mv: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The MusicVideo after the plan's status merge-patch (None deletes, like the API server)."""
    result = copy.deepcopy(mv)
    result["status"] = merge(result.get("status") or {}, plan.status)
    return result


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
