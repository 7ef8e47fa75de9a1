"""Pure builders of MusicVideo status merge-patches; every key they write is declared in the CRD.

status.progress.stage belongs to the renderer (vibecraft_common.status.STAGES): the operator clears it
and says what it is doing in the progress message and the Progressing condition's reason.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from vibecraft_common.status import CANCELLED, FAILED, PENDING, QUEUED, RUNNING, SUCCEEDED

from vibecraft_operator.classify import Failure
from vibecraft_operator.constants import (
    COND_PROGRESSING,
    COND_READY,
    COND_SUSPENDED,
    R_ACCEPTED,
    R_CANCELLED,
    R_JOB_CREATED,
    R_KUEUE,
    R_RESUMED,
    R_RETRYING,
    R_SPEC_CHANGED,
    R_SUCCEEDED,
    R_SUSPENDED,
)
from vibecraft_operator.timeutil import format_time

Status = Mapping[str, Any]
Patch = dict[str, Any]
# Merge-patch nulls: the renderer's fields of status.progress, removed between attempts.
CLEARED_PROGRESS: Patch = {"stage": None, "percent": None, "framesDone": None, "framesTotal": None, "etaSeconds": None,
                           "predictions": None, "chunks": None}


def with_condition(
    conditions: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The condition list with one condition set; lastTransitionTime moves only when status flips."""
    value = "True" if status else "False"
    new = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
        "observedGeneration": generation,
    }
    result: list[dict[str, Any]] = []
    for cond in conditions:
        if cond.get("type") != type_:
            result.append(dict(cond))
            continue
        if cond.get("status") == value and cond.get("lastTransitionTime"):
            new["lastTransitionTime"] = cond["lastTransitionTime"]
    result.append(new)
    return sorted(result, key=lambda c: str(c.get("type")))


def conditions_patch(
    status: Status, generation: int, now: datetime, *updates: tuple[str, bool, str, str]
) -> list[dict[str, Any]]:
    """Apply several (type, status, reason, message) updates to status.conditions."""
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    for type_, value, reason, message in updates:
        conditions = with_condition(conditions, type_=type_, status=value, reason=reason,
                                    message=message, generation=generation, now=now)
    return conditions


def condition(status: Status, type_: str) -> Mapping[str, Any] | None:
    """status.conditions[type==type_], if present."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _step(status: Status, generation: int, now: datetime, message: str, *updates: tuple[str, bool, str, str],
          progress: Patch | None = None, **fields: Any) -> Patch:
    """What most builders write: fields, the progress message and condition updates (type, status,
    reason, message). The renderer's progress is cleared (no attempt is rendering at this moment, and
    a stale "32 % composing" beside a suspended or queued render would mislead)."""
    return {
        "observedGeneration": generation,
        **fields,
        "progress": {**CLEARED_PROGRESS, "message": message, **(progress or {})},
        "conditions": conditions_patch(status, generation, now, *updates),
    }


def accepted(status: Status, *, spec_hash: str, generation: int, now: datetime) -> Patch:
    """First sight of a MusicVideo: Pending, counters at zero."""
    return {
        "phase": PENDING,
        "specHash": spec_hash,
        "observedGeneration": generation,
        "attempts": 0,
        "failedAttempts": 0,
        "conditions": conditions_patch(
            status, generation, now,
            (COND_READY, False, R_ACCEPTED, "no video rendered yet"),
            (COND_PROGRESSING, True, R_ACCEPTED, "waiting to be admitted"),
        ),
    }


def restarted(status: Status, *, spec_hash: str, generation: int, now: datetime) -> Patch:
    """The spec changed: forget the old render's results and budget, start over (attempts go on)."""
    message = f"spec changed (generation {generation}): rendering again"
    return _step(status, generation, now, message,
                 (COND_READY, False, R_SPEC_CHANGED, message), (COND_PROGRESSING, True, R_SPEC_CHANGED, message),
                 progress={"percent": 0}, phase=PENDING, specHash=spec_hash, failedAttempts=0, memoryLimit=None,
                 nextAttemptAt=None, startedAt=None, finishedAt=None, output=None, analysis=None,
                 stage=None, chunks=None)  # a split render's chunks are its slots: the new spec decides them


def observed(generation: int) -> Patch:
    """Only acknowledge a generation (nothing else to do for it)."""
    return {"observedGeneration": generation}


def queued(status: Status, *, reason: str, message: str, generation: int, now: datetime) -> Patch:
    """Waiting for a render slot (or for Kueue)."""
    return _step(status, generation, now, message, (COND_PROGRESSING, True, reason, message), phase=QUEUED)


def launched(
    status: Status,
    *,
    attempt: int,
    job_name: str,
    memory: str,
    kueue: bool,
    generation: int,
    now: datetime,
) -> Patch:
    """A Job was created for attempt `attempt` (suspended, for Kueue to admit, if `kueue`)."""
    message = (f"Job {job_name} waits for Kueue admission" if kueue
               else f"attempt {attempt}: Job {job_name} created with {memory} memory")
    patch = _step(status, generation, now, message, (COND_PROGRESSING, True, R_KUEUE if kueue else R_JOB_CREATED, message),
                  phase=QUEUED if kueue else RUNNING, attempts=attempt, jobName=job_name, memoryLimit=memory,
                  nextAttemptAt=None)
    if not kueue and not status.get("startedAt"):
        patch["startedAt"] = format_time(now)
    return patch


def kueue_admitted(status: Status, *, job_name: str, generation: int, now: datetime) -> Patch:
    """Kueue un-suspended the Job: the render runs."""
    message = f"Kueue admitted Job {job_name}"
    patch = _step(status, generation, now, message, (COND_PROGRESSING, True, R_JOB_CREATED, message), phase=RUNNING)
    if not status.get("startedAt"):
        patch["startedAt"] = format_time(now)
    return patch


def progressing(status: Status, *, reason: str, message: str, generation: int, now: datetime) -> Patch:
    """What the attempt's pod is doing (scheduling trouble, image pulls, rendering)."""
    return {
        "observedGeneration": generation,
        "conditions": conditions_patch(status, generation, now, (COND_PROGRESSING, True, reason, message)),
    }


def last_failure(failure: Failure, *, attempt: int, now: datetime) -> dict[str, Any]:
    """status.lastFailure for a classified failure of attempt `attempt`."""
    record: dict[str, Any] = {
        "reason": failure.reason,
        "message": failure.message,
        "time": format_time(now),
        "attempt": attempt,
        "kind": failure.kind.value,
    }
    if failure.exit_code is not None:
        record["exitCode"] = failure.exit_code
    return record


def retrying(
    status: Status,
    *,
    failure: Failure,
    attempt: int,
    failed_attempts: int,
    memory: str,
    next_attempt_at: datetime,
    message: str,
    generation: int,
    now: datetime,
) -> Patch:
    """The attempt failed and another one follows at `next_attempt_at` (phase stays Running)."""
    return _step(status, generation, now, message, (COND_PROGRESSING, True, R_RETRYING, message),
                 phase=RUNNING, lastFailure=last_failure(failure, attempt=attempt, now=now),
                 failedAttempts=failed_attempts, memoryLimit=memory, nextAttemptAt=format_time(next_attempt_at))


def failed(
    status: Status,
    *,
    reason: str,
    message: str,
    failure: Failure,
    attempt: int,
    generation: int,
    now: datetime,
) -> Patch:
    """The render failed for good (until the spec changes).

    Always with status.lastFailure (`failure`, of attempt `attempt`): it is what `kubectl get mv -o wide`
    shows as REASON and what the API reports, so no render ends Failed without saying why.
    """
    patch = _ended(status, FAILED, message, reason=reason, ready=False, generation=generation, now=now)
    patch["lastFailure"] = last_failure(failure, attempt=attempt, now=now)
    return patch


def succeeded(
    status: Status,
    *,
    output: Mapping[str, Any],
    analysis: Mapping[str, Any] | None,
    message: str,
    generation: int,
    now: datetime,
) -> Patch:
    """The render finished; its outputs as far as S3 could tell."""
    patch = _ended(status, SUCCEEDED, message, reason=R_SUCCEEDED, ready=True, generation=generation, now=now,
                   progress={"percent": 100, "etaSeconds": 0})
    patch["output"] = dict(output)
    if analysis:
        patch["analysis"] = dict(analysis)
    return patch


def cancelled(status: Status, *, message: str, generation: int, now: datetime) -> Patch:
    """Deleted before it finished: what watchers see between the delete and the object's removal."""
    return _ended(status, CANCELLED, message, reason=R_CANCELLED, ready=False, generation=generation, now=now)


def _ended(status: Status, phase: str, message: str, *, reason: str, ready: bool, generation: int, now: datetime,
           progress: Patch | None = None) -> Patch:
    """What every terminal phase writes: finished now, nothing more to progress or retry."""
    return _step(status, generation, now, message, (COND_READY, ready, reason, message),
                 (COND_PROGRESSING, False, reason, message), progress=progress, phase=phase,
                 finishedAt=format_time(now), nextAttemptAt=None)


def suspended(status: Status, *, message: str, generation: int, now: datetime) -> Patch:
    """spec.suspend: no Job runs; the render resumes (as a new attempt) when it is cleared."""
    return _step(status, generation, now, message, (COND_SUSPENDED, True, R_SUSPENDED, message),
                 (COND_PROGRESSING, False, R_SUSPENDED, message), phase=PENDING, nextAttemptAt=None)


def resumed(status: Status, *, generation: int, now: datetime) -> Patch:
    """spec.suspend was cleared: back to admission."""
    message = "resumed: waiting to be admitted"
    return _step(status, generation, now, message, (COND_SUSPENDED, False, R_RESUMED, message),
                 (COND_PROGRESSING, True, R_RESUMED, message), phase=PENDING)


def attempt_skipped(attempt: int) -> Patch:
    """Burn an attempt number whose Job name is unusable, so the next launch uses the next one."""
    return {"attempts": attempt}



