"""Telling a failed attempt's cause apart from its Job and Pod dicts (pure)."""

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from vibecraft_common.resource import EXIT_MEMORY_GUARD, EXIT_REASONS, PERMANENT_EXIT_CODES

from vibecraft_operator.constants import (
    CONTAINER_NAME,
    JOB_COMPLETE,
    JOB_FAILED,
    POD_FAILED,
    R_DEADLINE,
    R_DISK_FULL,
    R_DISRUPTED,
    R_ERROR,
    R_MEMORY_GUARD,
    R_OOM_KILLED,
    R_POD_DELETED,
    R_POD_VANISHED,
    R_PROBABLE_OOM,
)
from vibecraft_operator.timeutil import parse_time

SIGKILL_EXIT = 137
MAX_MESSAGE = 1024
# Pod-level reasons the kubelet/node lifecycle sets when the node, not the render, went away.
NODE_REASONS = frozenset({"NodeLost", "Shutdown", "Terminated", "NodeShutdown", "Evicted", "Preempting"})
# The kubelet's eviction messages when the pod itself used more local storage than it was allowed
# (pkg/kubelet/eviction/helpers.go): its own fault, unlike "The node was low on resource".
OWN_STORAGE_MESSAGES = ("Usage of EmptyDir volume", "exceeded its local ephemeral storage limit",
                        "Pod ephemeral local storage usage exceeds")


class FailureKind(enum.Enum):
    """What the operator does about a failed attempt."""

    OOM = "oom"  # retry with more memory, up to maxMemory; doesn't use the retry budget
    DISRUPTION = "disruption"  # eviction, preemption, node loss, deleted pod: retry, not counted
    RETRYABLE = "retryable"  # a renderer or unknown error: retry with backoff while retries last
    PERMANENT = "permanent"  # retrying cannot help (bad audio, usage error)
    DEADLINE = "deadline"  # spec.deadlineSeconds is used up


@dataclass(frozen=True)
class Failure:
    """A classified failure: kind, a CamelCase reason, a human message, the exit code if any."""

    kind: FailureKind
    reason: str
    message: str
    exit_code: int | None = None

    @property
    def counts_against_retries(self) -> bool:
        """Only failures the render itself caused use up spec.retries."""
        return self.kind is FailureKind.RETRYABLE


def job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The Job's condition of `kind` if it is True."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def job_finished(job: Mapping[str, Any]) -> str | None:
    """"Complete" or "Failed" once the Job is finished (its pods are terminal), else None."""
    for kind in (JOB_COMPLETE, JOB_FAILED):
        if job_condition(job, kind):
            return kind
    return None


def decisive_pod(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod whose end decided the Job: the newest failed one, else the newest."""
    if not pods:
        return None
    newest = sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    failed = [p for p in newest if (p.get("status") or {}).get("phase") == POD_FAILED]
    return (failed or newest)[-1]


def renderer_termination(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The renderer container's `state.terminated` (or lastState's), if it terminated."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ordered = sorted(statuses, key=lambda s: s.get("name") != CONTAINER_NAME)
    for status in ordered:
        for key in ("state", "lastState"):
            terminated = (status.get(key) or {}).get("terminated")
            if terminated:
                return dict(terminated)
    return None


def disruption_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's DisruptionTarget condition (eviction, preemption, node loss), if True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            return dict(cond)
    return None


def own_storage_eviction(pod: Mapping[str, Any]) -> str | None:
    """The kubelet's message when it evicted the pod for outgrowing its own storage limits, else None."""
    status = pod.get("status") or {}
    message = str(status.get("message") or "").strip()
    if status.get("reason") == "Evicted" and any(m in message for m in OWN_STORAGE_MESSAGES):
        return message
    return None


def outgrown_storage(pods: Sequence[Mapping[str, Any]]) -> Failure | None:
    """DiskFull if any of the attempt's pods was evicted for outgrowing its own storage limits."""
    for pod in pods:
        if message := own_storage_eviction(pod):
            name = (pod.get("metadata") or {}).get("name", "?")
            return Failure(FailureKind.RETRYABLE, R_DISK_FULL, _trim(f"pod {name} was evicted: {message}"))
    return None


def deleted_before_exit(pod: Mapping[str, Any], terminated: Mapping[str, Any] | None) -> bool:
    """Whether someone asked to delete the pod before its container ended (so deletion killed it)."""
    meta = pod.get("metadata") or {}
    deadline = parse_time(meta.get("deletionTimestamp"))
    if deadline is None:
        return False
    # deletionTimestamp is the end of the grace period; the request came that much earlier.
    requested = deadline - timedelta(seconds=int(meta.get("deletionGracePeriodSeconds") or 0))
    finished: datetime | None = parse_time((terminated or {}).get("finishedAt"))
    return finished is None or requested <= finished + timedelta(seconds=1)


def _trim(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def classify(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Failure:
    """Why the Job of an attempt failed, from the Job's Failed condition and its pods."""
    failed = job_condition(job, JOB_FAILED) or {}
    job_reason = str(failed.get("reason") or "")
    job_message = str(failed.get("message") or "")
    if job_reason == "DeadlineExceeded":
        return Failure(FailureKind.DEADLINE, R_DEADLINE, _trim(job_message or "the render ran out of time"))

    pod = decisive_pod(pods)
    if pod is None:
        return Failure(FailureKind.DISRUPTION, R_POD_VANISHED,
                       _trim(f"the attempt's pod disappeared before reporting an exit status ({job_reason})"))
    pod_name = (pod.get("metadata") or {}).get("name", "?")
    if outgrown := outgrown_storage([pod]):
        return outgrown  # retrying with the same limit fails the same way: it uses the retry budget
    if disruption := disruption_condition(pod):
        reason = str(disruption.get("reason") or R_DISRUPTED)
        return Failure(FailureKind.DISRUPTION, reason,
                       _trim(f"pod {pod_name} was disrupted: {disruption.get('message') or reason}"))

    terminated = renderer_termination(pod)
    if terminated is None:
        return _without_exit(pod, pod_name, job_reason, job_message)

    code = terminated.get("exitCode")
    code = int(code) if code is not None else None
    detail = str(terminated.get("message") or "").strip()
    if terminated.get("reason") == "OOMKilled":
        return Failure(FailureKind.OOM, R_OOM_KILLED,
                       _trim(f"pod {pod_name} was OOM-killed{': ' + detail if detail else ''}"), code)
    if deleted_before_exit(pod, terminated):
        return Failure(FailureKind.DISRUPTION, R_POD_DELETED,
                       _trim(f"pod {pod_name} was deleted while rendering (exit code {code})"), code)
    if code == EXIT_MEMORY_GUARD:
        return Failure(FailureKind.OOM, R_MEMORY_GUARD,
                       _trim(detail or "the renderer stopped before exceeding its memory limit"), code)
    if code in EXIT_REASONS:
        kind = FailureKind.PERMANENT if code in PERMANENT_EXIT_CODES else FailureKind.RETRYABLE
        return Failure(kind, EXIT_REASONS[code], _trim(detail or f"renderer exited with code {code}"), code)
    if code == SIGKILL_EXIT and terminated.get("reason") in (None, "", "Error"):
        return Failure(FailureKind.OOM, R_PROBABLE_OOM,
                       _trim(f"pod {pod_name} was killed (exit 137) for no other visible cause: likely OOM"),
                       code)
    reason = str(terminated.get("reason") or R_ERROR)
    return Failure(FailureKind.RETRYABLE, reason if reason != "Error" else R_ERROR,
                   _trim(detail or f"renderer exited with code {code}"), code)


def _without_exit(pod: Mapping[str, Any], pod_name: str, job_reason: str, job_message: str) -> Failure:
    """A failed pod whose container never reported an exit: deleted, node gone, or admission refused."""
    status = pod.get("status") or {}
    if deleted_before_exit(pod, None):
        return Failure(FailureKind.DISRUPTION, R_POD_DELETED, f"pod {pod_name} was deleted before it ran")
    pod_reason = str(status.get("reason") or "")
    message = _trim(str(status.get("message") or job_message or job_reason or "the pod failed"))
    if pod_reason in NODE_REASONS:
        return Failure(FailureKind.DISRUPTION, pod_reason, message)
    return Failure(FailureKind.RETRYABLE, pod_reason or job_reason or R_ERROR, message)
