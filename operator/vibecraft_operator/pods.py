"""What a running attempt's pod is doing, for the Progressing condition (pure)."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from vibecraft_operator.classify import decisive_pod
from vibecraft_operator.constants import POD_RUNNING, R_RENDERING
from vibecraft_operator.timeutil import parse_time

# Waiting reasons that need a human (or at least a look): surfaced as Warning events.
STUCK_REASONS = frozenset({
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",  # typically the S3 Secret is missing
    "CreateContainerError",
    "RunContainerError",
})


def stuck_since(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str, datetime] | None:
    """(reason, message, since) when the newest pod cannot start: unschedulable, its image not pulled,
    its container not created (a missing Secret); since its creation, the moment it began waiting."""
    activity = pod_activity(pods)
    pod = decisive_pod(pods)
    if activity is None or activity[0] == R_RENDERING or pod is None:
        return None
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return None if created is None else (*activity, created)


def pod_activity(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) for the newest pod: unschedulable, stuck container, or rendering."""
    pod = decisive_pod(pods)
    if pod is None:
        return None
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            reason = str(cond.get("reason") or "Unschedulable")
            return reason, f"pod {name} cannot be scheduled: {cond.get('message') or reason}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return str(waiting["reason"]), f"pod {name}: {waiting.get('message') or waiting['reason']}"
    if status.get("phase") == POD_RUNNING:
        return R_RENDERING, f"pod {name} is rendering"
    return None
