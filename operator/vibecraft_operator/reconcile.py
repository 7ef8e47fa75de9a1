"""The reconciler's brain: from what is observed, the one next step to take (pure, no I/O)."""

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from vibecraft_common.limits import DEFAULT_DEADLINE_SECONDS, DEFAULT_FPS, DEFAULT_RETRIES, predictions_for
from vibecraft_common.resource import (
    ANNOTATION_DELETE_OUTPUTS,
    STAGE_ALL,
    STAGE_JOIN,
    STAGE_PREPARE,
    STAGE_SEGMENTS,
    RenderStage,
)
from vibecraft_common.status import (
    ANALYSIS_NAME,
    PENDING,
    QUEUE_FIELDS,
    QUEUED,
    RUNNING,
    SCRATCH_DIRS,
    SUCCEEDED,
    TERMINAL_PHASES,
    THUMBNAIL_NAME,
    VIDEO_NAME,
)

from vibecraft_operator import mergepatch
from vibecraft_operator import status as st
from vibecraft_operator.budget import Allowance, uses_replicate
from vibecraft_operator.classify import Failure, FailureKind, classify, job_finished, outgrown_storage
from vibecraft_operator.constants import (
    COND_PROGRESSING,
    COND_SUSPENDED,
    JOB_FAILED,
    POD_FAILED,
    POD_SUCCEEDED,
    R_AWAITING_BUDGET,
    R_CANCELLED,
    R_DEADLINE,
    R_INVALID_SPEC,
    R_JOB_CREATED,
    R_JOB_REFUSED,
    R_JOB_VANISHED,
    R_KUEUE,
    R_OOM_KILLED,
    R_QUEUED,
    R_RENDERING,
    R_REPLICATE_BUDGET,
    R_SUCCEEDED,
)
from vibecraft_operator.errors import InvalidSpec
from vibecraft_operator.jobs import build_job, chunks_for, is_split, job_name, spec_hash
from vibecraft_operator.pods import pod_activity, stuck_since
from vibecraft_operator.quantities import escalate_memory
from vibecraft_operator.queue import Admission, limits_of
from vibecraft_operator.resources import render_resources
from vibecraft_operator.settings import Settings
from vibecraft_operator.timeutil import format_time, parse_time

DEADLINE_GRACE = timedelta(seconds=120)  # the Job's own activeDeadlineSeconds should fire first
DELETION_POLL = 2.0  # seconds between checks that a deleted Job is gone
BUDGET_RECHECK = timedelta(seconds=30)  # a render waiting for others' Replicate reservations looks again


class Outcome(enum.Enum):
    """What a step meant, for metrics."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    OOM_RETRY = "oom_retry"
    RETRY = "retry"
    DISRUPTED = "disrupted"


@dataclass(frozen=True)
class Outputs:
    """What S3 says about a finished render (url fields always set; sizes when readable)."""

    output: Mapping[str, Any]
    analysis: Mapping[str, Any] | None = None
    warning: str | None = None
    video_written: datetime | None = None  # video.mp4's LastModified: the renderer uploads it last, when done


@dataclass(frozen=True)
class Observation:
    """Everything one reconcile step looks at."""

    mv: Mapping[str, Any]
    job: Mapping[str, Any] | None  # the Job named status.jobName, None if absent
    pods: Sequence[Mapping[str, Any]]  # that Job's pods
    now: datetime
    admission: Admission
    outputs: Outputs | None = None  # read from S3 when the Job completed
    replicate: Allowance | None = None  # the namespace's Replicate budget; None = no budget


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the MusicVideo."""

    type: str
    reason: str
    message: str


@dataclass
class Plan:
    """The step: patch status, create/delete a Job, post events; then look again after `again` s."""

    status: dict[str, Any] = field(default_factory=dict)
    create_job: dict[str, Any] | None = None
    delete_job: str | None = None
    events: list[Event] = field(default_factory=list)
    outcome: Outcome | None = None
    again: float | None = None  # 0 = at once; None = on the next change (or resync)
    first_job: bool = False  # the MusicVideo's first Job ever (for the apply→Job latency)
    prelude: dict[str, Any] = field(default_factory=dict)  # the folded status-only steps' patch, alone
    predictions: int | None = None  # the Replicate predictions create_job's attempt may create

    @property
    def status_only(self) -> bool:
        """A step that only records something and wants to go on at once (no Job touched)."""
        return self.again == 0 and self.create_job is None and self.delete_job is None

    def then(self, base: Mapping[str, Any], nxt: "Plan") -> "Plan":
        """This status-only step followed by `nxt`, as one step (`base`: the status both start from)."""
        return Plan(status=mergepatch.compose(base, self.status, nxt.status), create_job=nxt.create_job,
                    delete_job=nxt.delete_job, events=[*self.events, *nxt.events], outcome=self.outcome or nxt.outcome,
                    again=nxt.again, first_job=nxt.first_job, prelude=self.status, predictions=nxt.predictions)

    def info(self, reason: str, message: str) -> "Plan":
        """Add a Normal event."""
        self.events.append(Event("Normal", reason, message))
        return self

    def warn(self, reason: str, message: str) -> "Plan":
        """Add a Warning event."""
        self.events.append(Event("Warning", reason, message))
        return self


def output_prefix(spec: Mapping[str, Any]) -> str:
    """spec.output.url without its trailing slash."""
    return str((spec.get("output") or {}).get("url") or "").rstrip("/")


def names_live_job(mv: Mapping[str, Any]) -> bool:
    """Whether status.jobName is the current attempt's Job: while Running, or Queued for Kueue.

    A render Queued in our own queue may still name the Job of an attempt before a restart or a
    suspension, which must not be mistaken for its own.
    """
    phase = (mv.get("status") or {}).get("phase")
    return phase == RUNNING or (phase == QUEUED and bool((mv.get("spec") or {}).get("queueName")))


def wants_outputs(mv: Mapping[str, Any], job: Mapping[str, Any] | None) -> bool:
    """Whether this step may record a success, so S3 should be read first: the current attempt's Job
    completed, or it is gone (deleted by hand, or by its TTL while the operator was down) and only the
    outputs can tell whether it finished."""
    if not names_live_job(mv) or not (mv.get("status") or {}).get("jobName"):
        return False
    return job is None or job_finished(job) == "Complete"


def rendered_anyway(obs: Observation) -> bool:
    """The current attempt's Job vanished, but its video is in S3, written since this render started: it
    finished (the renderer uploads video.mp4 last, so its presence means done)."""
    started = parse_time((obs.mv.get("status") or {}).get("startedAt"))
    written = obs.outputs.video_written if obs.outputs is not None else None
    return started is not None and written is not None and written >= started


def job_active(job: Mapping[str, Any] | None) -> bool:
    """The Job exists and has not finished (it may be being deleted)."""
    return job is not None and job_finished(job) is None


def backoff_seconds(failed_attempts: int, settings: Settings) -> float:
    """Exponential backoff before retry number `failed_attempts` (1-based)."""
    delay = settings.retry_backoff_seconds * 2 ** max(0, failed_attempts - 1)
    return float(min(delay, settings.retry_backoff_max_seconds))


FOLDED_STEPS = 4  # status-only steps folded into the step that follows them


def decide_folded(obs: Observation, settings: Settings) -> Plan:
    """decide(), with steps that only record something (accepted, resumed, retrying...) folded into
    the step after them: a new render costs one Job create and one status patch, not two round trips more.
    """
    base = obs.mv.get("status") or {}
    plan = decide(obs, settings)
    for _ in range(FOLDED_STEPS):
        if not plan.status_only:
            break
        mv = {**obs.mv, "status": mergepatch.apply_patch(base, plan.status)}
        plan = plan.then(base, decide(replace(obs, mv=mv), settings))
    return plan


def _unqueued(base: Mapping[str, Any], plan: Plan) -> Plan:
    """A render that is not (or no longer) Queued loses its queue place: any patch setting another phase
    clears it (even if this view had none: the queue publisher may have written one since), and a stale
    one is cleared on sight."""
    phase = plan.status.get("phase", base.get("phase"))
    if phase == QUEUED:
        return plan
    if "phase" in plan.status or any(base.get(k) is not None for k in QUEUE_FIELDS):
        plan.status.update(dict.fromkeys(QUEUE_FIELDS))
    return plan


def decide(obs: Observation, settings: Settings) -> Plan:
    """The next step for one MusicVideo; calling it again after applying the plan moves on."""
    return _unqueued(obs.mv.get("status") or {}, _decide(obs, settings))


def _decide(obs: Observation, settings: Settings) -> Plan:
    mv, now = obs.mv, obs.now
    meta, spec, status = mv["metadata"], mv.get("spec") or {}, mv.get("status") or {}
    generation = int(meta.get("generation") or 0)
    phase = str(status.get("phase") or "")
    wanted = spec_hash(spec)

    if meta.get("deletionTimestamp"):
        # Being deleted: the deletion handler stops the render; a step must not start another.
        return Plan()
    if not status.get("specHash"):
        return Plan(st.accepted(status, spec_hash=wanted, generation=generation, now=now), again=0)
    if status["specHash"] != wanted:
        return _restart(obs, wanted, generation)
    if phase in TERMINAL_PHASES:
        return Plan(st.observed(generation)) if status.get("observedGeneration") != generation else Plan()

    attempt = int(status.get("attempts") or 0)
    recorded = (status.get("lastFailure") or {}).get("attempt") == attempt
    if names_live_job(mv) and attempt > 0 and status.get("jobName") and not recorded:
        return _current_attempt(obs, settings, generation, attempt)
    if spec.get("suspend"):
        return _suspend(obs, generation, job=None)
    cond = st.condition(status, COND_SUSPENDED) or {}
    if cond.get("status") == "True":
        return Plan(st.resumed(status, generation=generation, now=now), again=0).info(
            "Resumed", "spec.suspend cleared: the render continues with a new attempt")
    if job_active(obs.job):
        return _await_deletion(obs)
    if phase == RUNNING:  # a recorded failure: the next attempt follows its backoff
        next_at = parse_time(status.get("nextAttemptAt"))
        if next_at is not None and now < next_at:
            return Plan(again=(next_at - now).total_seconds())
        return _launch(obs, settings, generation, attempt)
    if spec.get("queueName") or obs.admission.admitted:
        return _launch(obs, settings, generation, attempt)
    if phase != QUEUED:
        patch = st.queued(status, reason=obs.admission.reason, message=obs.admission.message,
                          generation=generation, now=now)
        if obs.admission.position is not None:  # at once; the queue publisher keeps it (and an estimate) current
            patch.update(queuePosition=obs.admission.position, queueUpdatedAt=format_time(now))
        return Plan(patch).info(R_QUEUED, obs.admission.message)
    return Plan(st.observed(generation)) if status.get("observedGeneration") != generation else Plan()


def _restart(obs: Observation, wanted: str, generation: int) -> Plan:
    status = obs.mv.get("status") or {}
    plan = Plan(st.restarted(status, spec_hash=wanted, generation=generation, now=obs.now), again=0)
    if job_active(obs.job) and obs.job is not None:
        plan.delete_job = obs.job["metadata"]["name"]
        return plan.info("SpecChanged", f"spec changed: stopping Job {plan.delete_job}, rendering again")
    return plan.info("SpecChanged", "spec changed: rendering again")


def _await_deletion(obs: Observation) -> Plan:
    """An old Job still runs (or terminates): make sure it goes, and wait before the next one."""
    assert obs.job is not None
    meta = obs.job["metadata"]
    plan = Plan(again=DELETION_POLL)
    if not meta.get("deletionTimestamp"):
        plan.delete_job = meta["name"]
    return plan


def _suspend(obs: Observation, generation: int, job: Mapping[str, Any] | None) -> Plan:
    status = obs.mv.get("status") or {}
    cond = st.condition(status, COND_SUSPENDED) or {}
    if job is None and cond.get("status") == "True" and status.get("phase") == PENDING:
        if status.get("observedGeneration") != generation:
            return Plan(st.observed(generation))
        return Plan()
    message = "suspended" + (f": Job {job['metadata']['name']} deleted" if job else "")
    plan = Plan(st.suspended(status, message=message, generation=generation, now=obs.now))
    if job is not None:
        plan.delete_job = job["metadata"]["name"]
    return plan.info("Suspended", message)


def _current_attempt(obs: Observation, settings: Settings, generation: int, attempt: int) -> Plan:
    """The current attempt's Job exists, finished, or vanished."""
    mv, job, now = obs.mv, obs.job, obs.now
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    if job is None:
        if rendered_anyway(obs):
            return _succeeded(obs, generation, attempt).info(
                R_JOB_VANISHED, f"Job {status.get('jobName')} is gone, but the video it rendered is in S3")
        failure = Failure(FailureKind.DISRUPTION, R_JOB_VANISHED,
                          f"Job {status.get('jobName')} disappeared before it finished")
        return _failed_attempt(obs, settings, generation, attempt, failure)
    finished = job_finished(job)
    if finished == "Complete":
        stage = status.get("stage")
        if stage == STAGE_PREPARE:
            return _next_stage(obs, settings, generation, attempt, STAGE_SEGMENTS)
        if stage == STAGE_SEGMENTS:
            return _next_stage(obs, settings, generation, attempt, STAGE_JOIN)
        return _succeeded(obs, generation, attempt)
    if finished == JOB_FAILED:
        return _failed_attempt(obs, settings, generation, attempt, classify(job, obs.pods))
    if outgrown := outgrown_storage(obs.pods):
        # The kubelet's eviction sets DisruptionTarget, which the podFailurePolicy ignores so that node
        # drains cost nothing: the Job would start another pod that outgrows the same limit, forever.
        # The attempt ends here, as a DiskFull failure that uses the retry budget.
        plan = _failed_attempt(obs, settings, generation, attempt, outgrown)
        plan.delete_job = job["metadata"]["name"]
        return plan
    if spec.get("suspend"):
        return _suspend(obs, generation, job)

    job_name_ = job["metadata"]["name"]
    kueue_held = bool((job.get("spec") or {}).get("suspend"))
    phase = status.get("phase")
    if phase == RUNNING and kueue_held:
        message = f"Kueue suspended Job {job_name_} again (preempted?)"
        return Plan(st.queued(status, reason=R_KUEUE, message=message, generation=generation, now=now)).warn(
            "Requeued", message)
    if phase == QUEUED and not kueue_held:
        patch = st.kueue_admitted(status, job_name=job_name_, generation=generation, now=now)
        return Plan(patch, again=0).info("Admitted", f"Kueue admitted Job {job_name_}")

    started = parse_time(status.get("startedAt"))
    deadline = timedelta(seconds=int(spec.get("deadlineSeconds") or DEFAULT_DEADLINE_SECONDS))
    if not kueue_held and started is not None and now > started + deadline + DEADLINE_GRACE:
        message = f"the render ran past spec.deadlineSeconds ({int(deadline.total_seconds())}s)"
        plan = _give_up(obs, generation, attempt, Failure(FailureKind.DEADLINE, R_DEADLINE, message))
        plan.delete_job = job_name_
        return plan

    stuck = stuck_since(obs.pods)
    if stuck is not None and now - stuck[2] > timedelta(seconds=settings.startup_timeout_seconds):
        # It would hold its render slot until the deadline (up to 7 days) while others wait.
        reason, message, _ = stuck
        failure = Failure(FailureKind.PERMANENT, reason,
                          f"{message} (for over {settings.startup_timeout_seconds:.0f}s: the render slot is freed)")
        plan = _give_up(obs, generation, attempt, failure)
        plan.delete_job = job_name_
        return plan
    activity = pod_activity(obs.pods)
    current = st.condition(status, COND_PROGRESSING) or {}
    if activity is None or (current.get("reason"), current.get("message")) == activity:
        return Plan(st.observed(generation)) if status.get("observedGeneration") != generation else Plan()
    reason, message = activity
    plan = Plan(st.progressing(status, reason=reason, message=message, generation=generation, now=now))
    return plan if reason == R_RENDERING else plan.warn(reason, message)


def _next_stage(obs: Observation, settings: Settings, generation: int, attempt: int, stage: RenderStage) -> Plan:
    """A split render's stage finished: the attempt goes on with the next stage's Job (same attempt, memory,
    what is left of the deadline). The segments stage gets its chunk count from the frames prepare found."""
    mv, now = obs.mv, obs.now
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    resources = render_resources(spec, settings)  # valid: the attempt's first Job was built from it
    remaining = _deadline_left(spec, status, now)
    chunks = int(status.get("chunks") or 1)
    if stage == STAGE_SEGMENTS:  # never more pods than the slots the render was admitted with (status.chunks)
        frames = (status.get("progress") or {}).get("framesTotal")
        fps = int((spec.get("video") or {}).get("fps") or DEFAULT_FPS)
        reserved = int(status.get("chunks") or slot_cap(settings))
        chunks = chunks_for(spec, int(frames) if frames else None, fps, min(reserved, slot_cap(settings)))
    memory = str(status.get("memoryLimit") or resources.memory)
    # The prepare stage made every image (and was charged for them): later stages may create none, so a
    # chunk missing an image fails instead of paying again beside the budget's reservation.
    max_predictions = 0 if uses_replicate(spec) else None
    job = build_job(mv, attempt=attempt, memory=memory, cpu=resources.cpu, deadline_seconds=max(1, remaining),
                    settings=settings, stage=stage, chunks=chunks, max_predictions=max_predictions)  # fmt: skip
    name = job["metadata"]["name"]
    message = (f"attempt {attempt}: {stage} Job {name}" + (f" ({chunks} pods)" if stage == STAGE_SEGMENTS else ""))
    if spec.get("queueName"):  # each stage's Job is created suspended: Kueue admits it (Queued until then)
        message += " waits for Kueue admission"
        patch = st.queued(status, reason=R_KUEUE, message=message, generation=generation, now=now)
        patch["progress"] = {"message": message}  # the attempt goes on: its percent and predictions stay
    else:
        patch = st.progressing(status, reason=R_JOB_CREATED, message=message, generation=generation, now=now)
    patch.update(jobName=name, stage=stage, chunks=chunks)
    return Plan(patch, create_job=job).info("StageStarted", message)


def _succeeded(obs: Observation, generation: int, attempt: int) -> Plan:
    status, spec = obs.mv.get("status") or {}, obs.mv.get("spec") or {}
    outputs = obs.outputs or default_outputs(spec)
    started = parse_time(status.get("startedAt"))
    took = f" in {int((obs.now - started).total_seconds())}s" if started else ""
    message = f"rendered {outputs.output.get('videoUrl')}{took} (attempt {attempt})"
    patch = st.succeeded(status, output=outputs.output, analysis=outputs.analysis, message=message,
                         generation=generation, now=obs.now)
    plan = Plan(patch, outcome=Outcome.SUCCEEDED).info(R_SUCCEEDED, message)
    if outputs.warning:
        plan.warn("OutputsUnavailable", outputs.warning)
    return plan


def default_outputs(spec: Mapping[str, Any]) -> Outputs:
    """Output URLs without anything read from S3."""
    prefix = output_prefix(spec)
    return Outputs({"videoUrl": f"{prefix}/{VIDEO_NAME}", "thumbnailUrl": f"{prefix}/{THUMBNAIL_NAME}",
                    "analysisUrl": f"{prefix}/{ANALYSIS_NAME}"})


def _failed_attempt(
    obs: Observation, settings: Settings, generation: int, attempt: int, failure: Failure
) -> Plan:
    """Record a failed attempt, then retry (OOM: with more memory) or give up."""
    mv, now = obs.mv, obs.now
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    failed_attempts = int(status.get("failedAttempts") or 0)
    try:
        resources = render_resources(spec, settings)
    except InvalidSpec as exc:  # the operator's settings changed since the attempt started
        return _give_up(obs, generation, attempt, invalid_spec(exc))
    memory = str(status.get("memoryLimit") or resources.memory)

    def retry(delay: float, message: str, *, new_memory: str = memory, used: int = failed_attempts) -> Plan:
        patch = st.retrying(status, failure=failure, attempt=attempt, failed_attempts=used, memory=new_memory,
                            next_attempt_at=now + timedelta(seconds=delay), message=message,
                            generation=generation, now=now)
        return Plan(patch, again=delay)

    if failure.kind is FailureKind.OOM:
        bigger = escalate_memory(memory, resources.max_memory)
        if bigger is None:
            return _give_up(obs, generation, attempt, failure, reason=R_OOM_KILLED,
                            message=f"{failure.message}; already at maxMemory {resources.max_memory}")
        message = f"attempt {attempt} ran out of memory at {memory}: retrying with {bigger}"
        plan = retry(0, message, new_memory=bigger)
        plan.outcome = Outcome.OOM_RETRY
        return plan.warn(failure.reason, f"{message} (maxMemory {resources.max_memory})")
    if failure.kind is FailureKind.DISRUPTION:
        message = f"attempt {attempt} was disrupted ({failure.reason}): retrying, not counted"
        plan = retry(0, message)
        plan.outcome = Outcome.DISRUPTED
        return plan.warn("Disrupted", f"{message}: {failure.message}")
    retries = int(spec.get("retries", DEFAULT_RETRIES) or 0)
    if failure.kind is FailureKind.RETRYABLE and failed_attempts < retries:
        used = failed_attempts + 1
        delay = backoff_seconds(used, settings)
        message = f"attempt {attempt} failed ({failure.reason}): retry {used}/{retries} in {int(delay)}s"
        plan = retry(delay, message, used=used)
        plan.outcome = Outcome.RETRY
        return plan.warn("RenderFailed", f"{message}: {failure.message}")
    suffix = f" (after {retries} retries)" if failure.kind is FailureKind.RETRYABLE else ""
    return _give_up(obs, generation, attempt, failure, message=failure.message + suffix)


def invalid_spec(exc: InvalidSpec) -> Failure:
    """A spec the operator refuses: retrying cannot help until the spec changes."""
    return Failure(FailureKind.PERMANENT, R_INVALID_SPEC, str(exc))


def _give_up(
    obs: Observation, generation: int, attempt: int, failure: Failure, *, reason: str | None = None,
    message: str | None = None,
) -> Plan:
    """End the render as Failed; `failure` becomes status.lastFailure (the REASON column) in every case.

    `reason` and `message` (default: the failure's) go to the Ready condition, progress and the Event.
    """
    status = obs.mv.get("status") or {}
    reason, message = reason or failure.reason, message or failure.message
    patch = st.failed(status, reason=reason, message=message, failure=failure, attempt=attempt,
                      generation=generation, now=obs.now)
    return Plan(patch, outcome=Outcome.FAILED).warn(reason, message)


QUOTA_PATIENCE = timedelta(minutes=10)  # how long a Job refused by a ResourceQuota is tried again


def refusal_is_final(code: int, message: str, waited: timedelta) -> bool:
    """Whether the API server's refusal to create the render's Job ends the render.

    A ResourceQuota frees up as other work ends: it is waited for (QUOTA_PATIENCE), the render staying
    Pending with a JobCreateFailed event. A conflict or throttling is not a refusal. Any other 4xx
    (RBAC, an admission policy or webhook, an invalid Job) refuses the same Job again however often it
    is asked: the render fails at once with the API server's own words, instead of retrying forever
    with the deadline never started.
    """
    if code in (409, 429) or not 400 <= code < 500:
        return False
    if "exceeded quota" in message:
        return waited >= QUOTA_PATIENCE
    return True


def job_refused(mv: Mapping[str, Any], prelude: Mapping[str, Any], job: str, message: str, now: datetime) -> Plan:
    """The render fails because the API server refused its Job for good (refusal_is_final); the prelude
    (what was decided before the create) is written with it."""
    status = mv.get("status") or {}
    generation = int(mv["metadata"].get("generation") or 0)
    failure = Failure(FailureKind.PERMANENT, R_JOB_REFUSED, f"the API server refused Job {job}: {message}")
    ended = st.failed(mergepatch.apply_patch(status, prelude), reason=R_JOB_REFUSED, message=failure.message,
                      failure=failure, attempt=int(status.get("attempts") or 0), generation=generation, now=now)
    return Plan(mergepatch.compose(status, prelude, ended), outcome=Outcome.FAILED).warn(R_JOB_REFUSED, failure.message)


def _launch(obs: Observation, settings: Settings, generation: int, attempt: int) -> Plan:
    """Create the next attempt's Job (suspended for Kueue when spec.queueName is set)."""
    mv, now = obs.mv, obs.now
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    kueue = bool(spec.get("queueName"))
    try:
        resources = render_resources(spec, settings)
    except InvalidSpec as exc:
        return _give_up(obs, generation, attempt, invalid_spec(exc))
    deadline = int(spec.get("deadlineSeconds") or DEFAULT_DEADLINE_SECONDS)
    remaining = _deadline_left(spec, status, now)
    if remaining <= 0:
        message = f"spec.deadlineSeconds ({deadline}s) used up before attempt {attempt + 1}"
        return _give_up(obs, generation, attempt, Failure(FailureKind.DEADLINE, R_DEADLINE, message))
    memory = str(status.get("memoryLimit") or resources.memory)
    number = attempt + 1
    max_predictions = None
    if uses_replicate(spec):
        style = spec.get("style") or {}
        max_predictions = min(settings.replicate_max_predictions_per_render,
                              predictions_for(style.get("motion"), style.get("maxClips")))
        if (allowance := obs.replicate) is not None:
            if allowance.remaining <= 0:
                message = allowance.exhausted_message(mv["metadata"]["namespace"])
                if allowance.reserved:  # renders running now may leave some over: wait for them
                    return _await_budget(obs, generation, message)
                failure = Failure(FailureKind.PERMANENT, R_REPLICATE_BUDGET, message)
                return _give_up(obs, generation, attempt, failure)
            max_predictions = min(max_predictions, allowance.remaining)
    stage: RenderStage = STAGE_PREPARE if is_split(spec) else STAGE_ALL
    job = build_job(mv, attempt=number, memory=memory, cpu=resources.cpu, deadline_seconds=remaining,
                    settings=settings, max_predictions=max_predictions, stage=stage)
    name = job_name(mv["metadata"]["name"], number, stage)
    patch = st.launched(status, attempt=number, job_name=name, memory=memory, kueue=kueue,
                        generation=generation, now=now)
    patch.update(stage=None if stage == STAGE_ALL else stage)
    if stage == STAGE_ALL:
        patch["chunks"] = None
    elif not status.get("chunks"):  # the slots it is admitted with (a retry keeps the chunks it had)
        patch["chunks"] = chunks_for(spec, None, DEFAULT_FPS, slot_cap(settings))
    plan = Plan(patch, create_job=job, first_job=number == 1, again=None, predictions=max_predictions)
    return plan.info("JobCreated", f"attempt {number}: Job {name} ({memory} memory, {resources.cpu} cpu)")


def slot_cap(settings: Settings) -> int:
    """The most pods (slots) one render may hold (queue.Limits.cap; max_parallelism is at least 1)."""
    return limits_of(settings).cap


def _deadline_left(spec: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> int:
    """Seconds of spec.deadlineSeconds left, counted from the first attempt's start (or now)."""
    started = parse_time(status.get("startedAt")) or now
    return int(spec.get("deadlineSeconds") or DEFAULT_DEADLINE_SECONDS) - int((now - started).total_seconds())


def _await_budget(obs: Observation, generation: int, message: str) -> Plan:
    """No Replicate budget left but what running renders have reserved: look again when one ends."""
    status = obs.mv.get("status") or {}
    current = st.condition(status, COND_PROGRESSING) or {}
    again = BUDGET_RECHECK.total_seconds()
    if (current.get("reason"), current.get("message")) == (R_AWAITING_BUDGET, message):
        return Plan(again=again)
    patch = st.progressing(status, reason=R_AWAITING_BUDGET, message=message, generation=generation, now=obs.now)
    return Plan(patch, again=again).info(R_AWAITING_BUDGET, message)


def cancel(mv: Mapping[str, Any], now: datetime) -> Plan | None:
    """The MusicVideo is being deleted: record `Cancelled` unless it had already finished.

    Its Job goes with it (ownerReferences); the status is seen by watchers (`kubectl get mv -w`,
    the API's event stream) until the object is removed.
    """
    meta, status = mv["metadata"], mv.get("status") or {}
    phase = str(status.get("phase") or "")
    if phase in TERMINAL_PHASES:
        return None
    job = status.get("jobName") if names_live_job(mv) else None
    message = f"deleted while {phase or PENDING}" + (f": Job {job} stopped" if job else "")
    patch = st.cancelled(status, message=message, generation=int(meta.get("generation") or 0), now=now)
    return Plan(patch, outcome=Outcome.CANCELLED).info(R_CANCELLED, message)


def needs_reconciler(body: Mapping[str, Any], **_: Any) -> bool:
    """Whether a MusicVideo needs a running reconciler (and so kopf's finalizer) right now.

    Not when it is finished or suspended, unless a newer generation is unseen. While an unfinished
    one is being deleted, yes: kopf then holds its finalizer until the reconciler has stopped, so
    `Cancelled` is recorded before the object goes (kopf never starts a reconciler for it then).
    """
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    if meta.get("deletionTimestamp"):
        return status.get("phase") not in TERMINAL_PHASES
    settled = status.get("observedGeneration") == meta.get("generation")
    phase = status.get("phase")
    if phase in TERMINAL_PHASES:
        return not settled
    cond = st.condition(status, COND_SUSPENDED) or {}
    if spec.get("suspend") and phase == PENDING and cond.get("status") == "True":
        return not settled
    return True


@dataclass(frozen=True)
class Cleanup:
    """What deleting a MusicVideo removes from S3 (s3:// URLs): everything under `prefixes`, and `objects`;
    multipart uploads begun under `uploads` and never completed (a render killed while uploading) are aborted."""

    prefixes: tuple[str, ...]
    objects: tuple[str, ...] = ()
    uploads: tuple[str, ...] = ()
    whole: bool = False  # everything under the output prefix, the finished video too


def cleanup_on_delete(mv: Mapping[str, Any]) -> Cleanup | None:
    """The MusicVideo is being deleted: its checkpoints and cache always go, its outputs unless it succeeded,
    and everything under its output prefix when it says so (ANNOTATION_DELETE_OUTPUTS: the API's videos).

    None without an output prefix that names a key (never clean a whole bucket's segments/).
    """
    prefix = output_prefix(mv.get("spec") or {})
    bucket_and_key = prefix.removeprefix("s3://")
    if not prefix.startswith("s3://") or "/" not in bucket_and_key or not bucket_and_key.split("/", 1)[1]:
        return None
    annotations = (mv.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_DELETE_OUTPUTS) == "true":
        return Cleanup((f"{prefix}/",), uploads=(f"{prefix}/",), whole=True)
    prefixes = tuple(f"{prefix}/{name}/" for name in SCRATCH_DIRS)
    outputs = default_outputs(mv.get("spec") or {}).output
    files = tuple(str(outputs[k]) for k in ("videoUrl", "thumbnailUrl", "analysisUrl"))
    if (mv.get("status") or {}).get("phase") == SUCCEEDED:
        return Cleanup(prefixes, uploads=prefixes)
    return Cleanup(prefixes, files, uploads=prefixes + files)


def render_stopped(pods: Sequence[Mapping[str, Any]]) -> bool:
    """No renderer pod can still write to S3: every one has finished (or there are none)."""
    return all((pod.get("status") or {}).get("phase") in (POD_SUCCEEDED, POD_FAILED) for pod in pods)
