"""Carrying out reconcile plans: gather the observation, call decide(), apply the plan."""

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from vibecraft_common.resource import LABEL_ATTEMPT, LABEL_NAME
from vibecraft_common.status import CANCELLED, QUEUED, RUNNING

from vibecraft_operator import budget, finished, mergepatch, metrics
from vibecraft_operator.constants import (
    ANNOTATION_SPEC_HASH,
    R_JOB_NAME_TAKEN,
)
from vibecraft_operator.errors import ApiUnavailable, JobNameTaken
from vibecraft_operator.jobs import label_value, selector_labels, spec_hash
from vibecraft_operator.kube import Kube
from vibecraft_operator.outputs import delete_objects, fetch_outputs
from vibecraft_operator.queue import (
    Ledger,
    Limits,
    QueueEntry,
    admit,
    estimate_now,
    fair_order,
    forecast,
    free_slots,
    limits_of,
    queue_entry,
    typical_duration,
)
from vibecraft_operator.reconcile import (
    DELETION_POLL,
    Observation,
    Outcome,
    Plan,
    cancel,
    cleanup_on_delete,
    decide_folded,
    job_refused,
    refusal_is_final,
    render_stopped,
    wants_outputs,
)
from vibecraft_operator.settings import Settings
from vibecraft_operator.status import attempt_skipped
from vibecraft_operator.timeutil import format_time, parse_time, utcnow
from vibecraft_operator.usage import UsageBook
from vibecraft_operator.wakeups import Wakeups

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # the Job controller sets it on every pod of a Job
MAX_STEPS = 8  # steps per wake-up; a plan chain longer than this is looked at again a second later
RECOUNT_DELAY = 0.1  # seconds: a burst of MusicVideo changes costs one census, not one each
TIMESTAMP_RESOLUTION = 1.0  # seconds: Kubernetes timestamps are cut to whole seconds
CLEANUP_STOP_TIMEOUT = 120.0  # seconds a deleted render's pods get to stop before S3 is cleaned anyway
CLEANUP_RECONCILER_TIMEOUT = 75.0  # a stopping reconciler finishes its step within kopf's 60 s (+10 s cancel)
CLEANUP_ATTEMPTS = 3  # tries at cleaning S3 before giving up with a warning (deletion must not wedge)
CLEANUP_BACKOFF = 2.0  # seconds before the second try, doubling
# The queue publisher (status.queuePosition, estimatedStartSeconds): a pass at most every QUEUE_SPACING s
# after a change, else every QUEUE_REFRESH s; at most QUEUE_PATCHES per pass, the front of the queue
# first. A slot turnover shifts every queued render by one: patching them all each time would cost
# O(n²) writes to drain n; this way the writes are bounded per second, and deep places catch up.
QUEUE_SPACING = 2.0
QUEUE_REFRESH = 30.0
QUEUE_PATCHES = 20
TYPICAL_RENDER_SECONDS = 300.0  # a render's duration before any has succeeded here
ESTIMATE_SLACK = 0.25  # an estimate is rewritten when it moved by more than this share (and 30 s)
# A render queued for a slot sleeps this long between looks: it is woken when a slot frees (slot_freed),
# its spec changes or it is deleted, so its periodic look is only a safety net. At the resync period
# (30 s) 500 queued renders cost 17 GETs and admissions a second for nothing.
WAIT_FOR_SLOT = 300.0
WAKE_MARGIN = 2  # waiting reconcilers woken beyond the free slots when one frees


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether `obj` has an ownerReference to `uid`."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def api_message(exc: ApiException) -> str:
    """The API server's own message from an error response."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def as_body(obj: Mapping[str, Any]) -> kopf.Body:
    """A plain dict where kopf's API wants a Body (kopf only reads it as a mapping)."""
    return cast(kopf.Body, obj)


def census(entries: Iterable[QueueEntry], limits: Limits) -> metrics.Census:
    """The gauges' values for these MusicVideos."""
    running = queued = slots = 0
    oldest = ""
    for entry in entries:
        if entry.phase == RUNNING:
            running += 1
            slots += limits.slots(entry)
        elif entry.phase == QUEUED:
            queued += 1
            if entry.created and (not oldest or entry.created < oldest):
                oldest = entry.created
    return metrics.Census(running=running, queued=queued, oldest_queued=parse_time(oldest), slots=slots)


def seconds_since(stamp: object) -> float | None:
    """Seconds from a Kubernetes timestamp (whole seconds) to now (not rounded); None without one."""
    moment = parse_time(stamp)
    return None if moment is None else max(0.0, (utcnow() - moment).total_seconds())


@dataclass
class Clocks:
    """Monotonic instants this process saw, so latencies are not rounded to the timestamps' whole seconds.

    Only renders that may still get their first Job (`sighted`) or are rendering (`started`) are
    kept; the operator forgets a MusicVideo when it is deleted.
    """

    sighted: dict[str, tuple[float, float]] = field(default_factory=dict)  # uid: (tick, creation→sight lag)
    started: dict[str, float] = field(default_factory=dict)  # uid: tick of the plan that set startedAt

    def saw(self, body: Mapping[str, Any], tick: float) -> None:
        """The operator sees a MusicVideo; the first sight of one without a Job yet is kept."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        if uid and uid not in self.sighted and not (body.get("status") or {}).get("attempts"):
            lag = seconds_since((body.get("metadata") or {}).get("creationTimestamp"))
            self.sighted[uid] = (tick, lag or 0.0)

    def apply_to_job(self, mv: Mapping[str, Any], tick: float) -> float | None:
        """Creation to first Job: monotonic time since the first sight, plus the lag from creation to that
        sight where it exceeds what the whole-second creationTimestamp can tell (a restart, a backlog)."""
        meta = mv["metadata"]
        sighted = self.sighted.pop(str(meta.get("uid") or ""), None)
        if sighted is None:
            return seconds_since(meta.get("creationTimestamp"))
        seen, lag = sighted
        return max(0.0, tick - seen) + max(0.0, lag - TIMESTAMP_RESOLUTION)

    def note_started(self, uid: str, patch: Mapping[str, Any], tick: float) -> None:
        """A status patch was written: follow what it did to startedAt (set when a render starts, cleared on
        a restart with a new spec)."""
        if "startedAt" in patch:
            if patch["startedAt"]:
                self.started[uid] = tick
            else:
                self.started.pop(uid, None)

    def render_duration(self, mv: Mapping[str, Any], tick: float) -> float | None:
        """status.startedAt to now: monotonic if this process wrote that startedAt, else from the timestamp."""
        started = self.started.pop(str(mv["metadata"].get("uid") or ""), None)
        stamp = (mv.get("status") or {}).get("startedAt")
        if not stamp:
            return None
        return max(0.0, tick - started) if started is not None else seconds_since(stamp)

    def forget(self, uid: str) -> None:
        """The MusicVideo is gone."""
        self.sighted.pop(uid, None)
        self.started.pop(uid, None)

    def keep_only(self, uids: set[str]) -> None:
        """Drop what is kept for MusicVideos no longer seen (a deletion missed across a reconnect)."""
        for kept in (self.sighted, self.started):
            for uid in set(kept) - uids:
                del kept[uid]

    def size(self) -> int:
        """How many MusicVideos something is kept for (at most)."""
        return len(self.sighted) + len(self.started)


@dataclass
class Runtime:
    """The operator's long-lived state, kept in kopf's memo."""

    settings: Settings
    kube: Kube
    ledger: Ledger = field(default_factory=Ledger)
    wakeups: Wakeups = field(default_factory=Wakeups)
    clocks: Clocks = field(default_factory=Clocks)
    book: UsageBook = field(init=False)  # Replicate predictions per namespace and month
    _observed: Callable[[], Iterable[QueueEntry]] | None = None
    _recount: asyncio.TimerHandle | None = None
    _expiries: dict[str, asyncio.TimerHandle] = field(default_factory=dict)  # uid: the TTL's deletion
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)  # deletions under way (kept referenced)
    _refused_since: dict[str, float] = field(default_factory=dict)  # uid: first refusal of its Job (monotonic)
    _queue_changed: asyncio.Event | None = None
    _queue_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.book = UsageBook(self.kube, self.settings)

    @property
    def limits(self) -> Limits:
        """Concurrency limits from the settings."""
        return limits_of(self.settings)

    def changed(self, observed: Callable[[], Iterable[QueueEntry]]) -> None:
        """A MusicVideo was added, changed or deleted: take a census soon (one for a burst of changes)."""
        self._observed = observed
        self._queue_dirty()
        if self._recount is None:
            self._recount = asyncio.get_running_loop().call_later(RECOUNT_DELAY, self._recount_now)

    def _queue_dirty(self) -> None:
        """Something moved: the publisher makes a pass soon (started on the first change)."""
        if self._queue_changed is None:
            self._queue_changed = asyncio.Event()
        self._queue_changed.set()
        if self._queue_task is None or self._queue_task.done():
            self._queue_task = asyncio.get_running_loop().create_task(self._publish_queue_forever())

    async def _publish_queue_forever(self) -> None:
        assert self._queue_changed is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue_changed.wait(), QUEUE_REFRESH)
            self._queue_changed.clear()
            if self._observed is not None:
                try:
                    await self.publish_queue(self._observed())
                except Exception as exc:  # never dies: the next change or refresh tries again
                    metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            await asyncio.sleep(QUEUE_SPACING)

    async def publish_queue(self, observed: Iterable[QueueEntry]) -> int:
        """Write status.queuePosition and estimatedStartSeconds where they changed (see QUEUE_PATCHES);
        returns how many were written. Each patch applies only to the version the index holds, so it
        never lands on a render the reconciler has just started (whose start clears these fields)."""
        entries = self.ledger.entries(observed)
        now = utcnow()
        places = forecast(entries, self.limits, now, typical_duration(entries, TYPICAL_RENDER_SECONDS))
        stale = []
        for entry in entries:
            place = places.get(entry.uid)
            if place is None or entry.phase != QUEUED or not entry.resource_version:
                continue
            written = estimate_now(entry, now)  # what the status says, counted from now
            moved = written is None or abs(place.start_seconds - written) > max(30.0, ESTIMATE_SLACK * place.start_seconds)
            if entry.position != place.position or moved:
                stale.append((entry.position is not None, place.position, entry, place))
        stale.sort(key=lambda item: item[:2])  # new renders first (no place yet), then the front of the queue
        written = 0
        stamp = format_time(now)
        for *_, entry, place in stale[:QUEUE_PATCHES]:
            patch = {"queuePosition": place.position, "estimatedStartSeconds": place.start_seconds,
                     "queueUpdatedAt": stamp}
            try:
                await asyncio.to_thread(self.kube.patch_musicvideo_status, entry.namespace, entry.name, patch,
                                        entry.resource_version)
                written += 1
            except ApiException as exc:
                if exc.status != 409:  # 409: it changed since; its event brings the next pass
                    raise
        if len(stale) > QUEUE_PATCHES and self._queue_changed is not None:
            self._queue_changed.set()  # more to write: another pass after the spacing
        return written

    def _recount_now(self) -> None:
        if self._recount is not None:
            self._recount.cancel()
            self._recount = None
        if self._observed is not None:
            self.recount(self._observed())

    def recount(self, observed: Iterable[QueueEntry]) -> None:
        """Publish the gauges from all MusicVideos as they are now (the index, with this process's own
        phase writes that the watch has not delivered yet)."""
        entries = self.ledger.entries(observed)
        metrics.publish(census(entries, self.limits))
        if self.clocks.size() > len(entries):
            self.clocks.keep_only({entry.uid for entry in entries})

    def saw(self, body: Mapping[str, Any]) -> None:
        """The watch delivered a MusicVideo: a new render's apply→Job latency is timed from its first sight."""
        self.clocks.saw(body, time.monotonic())

    async def keep_finished(self, body: Mapping[str, Any], logger: kopf.Logger) -> None:
        """The watch delivered a MusicVideo: keep LABEL_FINISHED right, and its TTL's deletion scheduled."""
        meta = body.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace") or ""), str(meta.get("name") or ""), str(meta.get("uid") or "")
        if (patch := finished.label_patch(body)) is not None:
            try:  # only onto the version seen: an older view must not undo a newer one (its event follows)
                await asyncio.to_thread(self.kube.patch_musicvideo_metadata, namespace, name, patch,
                                        str(meta.get("resourceVersion") or "") or None)
            except (ApiException, ApiUnavailable) as exc:
                logger.debug(f"finished label not updated ({exc}); the next event tries again")
        if (old := self._expiries.pop(uid, None)) is not None:
            old.cancel()
        at = finished.expires_at(body, self.settings.ttl_seconds_after_finished)
        if at is not None:
            delay = max(0.0, (at - utcnow()).total_seconds())
            self._expiries[uid] = asyncio.get_running_loop().call_later(
                delay, self._expire, namespace, name, uid, logger)

    def _expire(self, namespace: str, name: str, uid: str, logger: kopf.Logger) -> None:
        self._expiries.pop(uid, None)

        async def delete() -> None:
            try:
                await asyncio.to_thread(self.kube.delete_musicvideo, namespace, name, uid)
            except (ApiException, ApiUnavailable) as exc:  # the next resync's event schedules it again
                logger.warning(f"ttlSecondsAfterFinished passed, but deleting {name} failed: {exc}")
                return
            metrics.EXPIRED.inc()
            logger.info(f"ttlSecondsAfterFinished passed: deleted MusicVideo {name}")

        task = asyncio.get_running_loop().create_task(delete())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, uid: str) -> None:
        """The MusicVideo `uid` is deleted."""
        if (expiry := self._expiries.pop(uid, None)) is not None:
            expiry.cancel()
        self._refused_since.pop(uid, None)
        self.ledger.forget(uid)
        self.clocks.forget(uid)
        self.book.release(uid)

    async def reconcile(
        self,
        namespace: str,
        name: str,
        observed: Callable[[], Iterable[QueueEntry]],
        logger: kopf.Logger,
        stopped: Callable[[], bool] = lambda: False,
        seen: Mapping[str, Any] | None = None,
    ) -> float | None:
        """Step until a plan says wait (or we are told to stop); seconds until the next look.

        `seen` is the body the watch just delivered: a MusicVideo nobody has written status to yet
        is used as is, so a new render's Job is created without a GET first.
        """
        for _ in range(MAX_STEPS):
            again = await self.step(namespace, name, observed, logger, seen)
            seen = None
            if again != 0 or stopped():
                return again
        return 1.0

    async def step(
        self, namespace: str, name: str, observed: Callable[[], Iterable[QueueEntry]], logger: kopf.Logger,
        seen: Mapping[str, Any] | None = None,
    ) -> float | None:
        """One observe-decide-act round."""
        kube = self.kube
        if seen is not None and not seen.get("status"):
            mv: dict[str, Any] | None = copy.deepcopy(dict(seen))
        else:
            mv = await asyncio.to_thread(kube.get_musicvideo, namespace, name)
        if mv is None:
            return None
        uid = mv["metadata"]["uid"]
        status = mv.get("status") or {}
        self.saw(mv)
        job: dict[str, Any] | None = None
        pods: list[dict[str, Any]] = []
        if status.get("jobName"):
            job = await asyncio.to_thread(kube.get_job, namespace, status["jobName"])
            if job is not None and not owned_by(job, uid):
                job = None
        if job is not None:
            attempt = int((job["metadata"].get("labels") or {}).get(LABEL_ATTEMPT) or 0)
            labels = selector_labels(name, attempt)
            if status.get("stage"):  # a split render's attempt has a Job per stage: only this one's pods count
                labels[JOB_NAME_LABEL] = job["metadata"]["name"]
            pods = await asyncio.to_thread(kube.list_pods, namespace, labels)
        outputs = None
        if wants_outputs(mv, job):
            outputs = await asyncio.to_thread(fetch_outputs, mv.get("spec") or {}, self.settings)
        metered = budget.uses_replicate(mv.get("spec") or {}) and self.book.budget(namespace) is not None
        if metered:
            await asyncio.to_thread(self.book.load)  # raises while unreadable: no Replicate Job unbudgeted

        # No await from here until the ledger notes the new phase: admission is decided atomically (and the
        # Replicate allowance with it, the reservation of what the new attempt may spend).
        entry = queue_entry(mv)
        entries = [e for e in self.ledger.entries(observed()) if e.uid != uid] + [entry]
        admission = admit(entry, entries, self.limits)
        del entries  # not held across the awaits below: hundreds of steps in flight at once each held one
        now, tick = utcnow(), time.monotonic()  # the plan's time, on both clocks (for the metrics)
        allowance = self.book.allowance(namespace, uid, now) if metered else None
        plan = decide_folded(Observation(mv, job, pods, now, admission, outputs, allowance), self.settings)
        old_phase, new_phase = str(status.get("phase") or ""), plan.status.get("phase")
        self._reserve(uid, namespace, plan, allowance)
        if new_phase:
            self.ledger.note(uid, new_phase)
        if "chunks" in plan.status:
            self.ledger.note_slots(uid, plan.status["chunks"])
        try:
            again = await self.apply(mv, plan, logger, tick)
        except BaseException:
            self.ledger.note(uid, old_phase)
            raise
        if new_phase and new_phase != old_phase:  # the gauges show it now, not only once the watch says so
            self.recount(observed())
        if (old_phase == RUNNING and new_phase and new_phase != RUNNING) or plan.status.get("chunks"):
            self.slot_freed()  # ended, or its chunks are fixed (auto reserved as many as a render may use)
        if again is None and (new_phase or old_phase) == QUEUED and not (mv.get("spec") or {}).get("queueName"):
            return WAIT_FOR_SLOT
        return again

    def slot_freed(self) -> None:
        """A render stopped holding a slot (or was deleted): wake the waiting reconcilers that may take it, the
        first ones in fair order (a few more than the free slots, in case one of them cannot start), not all
        of them: a slot turnover would otherwise cost every queued render a GET and an admission."""
        if self._observed is None or not self.limits.cluster:
            self.wakeups.wake_all()
            return
        entries = self.ledger.entries(self._observed())
        free = free_slots(entries, self.limits) or 0
        for entry in fair_order(entries, self.limits)[: free + WAKE_MARGIN]:
            self.wakeups.wake((entry.namespace, entry.name))

    def _reserve(self, uid: str, namespace: str, plan: Plan, allowance: budget.Allowance | None) -> None:
        """An attempt that ends gives back its reservation; one that starts takes what it may spend."""
        if (plan.status.get("progress") or {}).get(budget.PREDICTIONS, 0) is None:  # progress cleared
            self.book.release(uid)
        if plan.create_job is not None and allowance is not None and plan.predictions is not None:
            self.book.reserve(uid, namespace, plan.predictions)

    async def cancel(self, namespace: str, name: str, logger: kopf.Logger) -> None:
        """The MusicVideo is being deleted: say `Cancelled` if it had not finished (best effort)."""
        mv = await asyncio.to_thread(self.kube.get_musicvideo, namespace, name)
        if mv is None:
            return
        plan = cancel(mv, utcnow())
        if plan is not None:
            self.ledger.note(mv["metadata"]["uid"], CANCELLED)
            await self.apply(mv, plan, logger, time.monotonic())
            self._recount_now()
            self.slot_freed()

    async def clean_up(self, namespace: str, name: str, logger: kopf.Logger) -> None:
        """The MusicVideo is being deleted: stop its render, then clean its output prefix in S3 (best effort:
        after CLEANUP_ATTEMPTS failures a warning, and the deletion goes on).

        In this order, so nothing written by the render reappears after the clean-up: the reconciler
        stops (kopf told it to; a step in flight may still create a Job), every Job of this MusicVideo
        is deleted, its pods have stopped (bounded), and only then S3 is cleaned.
        """
        mv = await asyncio.to_thread(self.kube.get_musicvideo, namespace, name)
        if mv is None:
            return
        uid = mv["metadata"]["uid"]
        labels = {LABEL_NAME: label_value(name)}
        deadline = time.monotonic() + CLEANUP_RECONCILER_TIMEOUT
        while self.wakeups.running((namespace, name)) and time.monotonic() < deadline:
            await asyncio.sleep(DELETION_POLL / 4)
        deadline = time.monotonic() + CLEANUP_STOP_TIMEOUT
        while True:
            jobs = [j for j in await asyncio.to_thread(self.kube.list_jobs, namespace, labels) if owned_by(j, uid)]
            for job in jobs:  # ownerReferences only collect them once the MusicVideo is gone, after this finalizer
                if not job["metadata"].get("deletionTimestamp"):
                    await asyncio.to_thread(self.kube.delete_job, namespace, job["metadata"]["name"])
            if render_stopped(await asyncio.to_thread(self.kube.list_pods, namespace, labels)):
                break
            if time.monotonic() > deadline:
                logger.warning(f"the render's pods did not stop within {CLEANUP_STOP_TIMEOUT:.0f}s: cleaning S3 anyway")
                break
            await asyncio.sleep(DELETION_POLL)
        mv = await asyncio.to_thread(self.kube.get_musicvideo, namespace, name) or mv  # the phase, as last written
        cleanup = cleanup_on_delete(mv)
        if cleanup is None:
            return
        for attempt in range(1, CLEANUP_ATTEMPTS + 1):
            try:
                deleted = await asyncio.to_thread(delete_objects, cleanup, self.settings)
            except Exception as exc:  # S3 trouble of any kind: retry, then let the deletion go on
                if attempt < CLEANUP_ATTEMPTS:
                    logger.info(f"cleaning S3 failed ({type(exc).__name__}: {exc}); retrying")
                    await asyncio.sleep(CLEANUP_BACKOFF * 2 ** (attempt - 1))
                    continue
                message = (f"could not clean {', '.join(cleanup.prefixes)} after {attempt} tries "
                           f"({type(exc).__name__}: {exc}): left in S3")
                kopf.event(as_body(mv), type="Warning", reason="CleanupFailed", message=message)
                logger.warning(message)
                return
            what = ("everything under the output prefix" if cleanup.whole
                    else "the checkpoints and cache" + ("" if not cleanup.objects else ", and the unfinished outputs"))
            logger.info(f"Cleaned S3 of {what} ({deleted} objects and open uploads)")
            return

    async def apply(self, mv: Mapping[str, Any], plan: Plan, logger: kopf.Logger, tick: float | None = None,
                    ) -> float | None:
        """Delete, create, patch, post events and count, in that order (create before recording it).

        `tick` is time.monotonic() when the plan was made (the `now` of its status timestamps).
        """
        tick = time.monotonic() if tick is None else tick
        meta = mv["metadata"]
        namespace = meta["namespace"]
        if plan.delete_job:
            await asyncio.to_thread(self.kube.delete_job, namespace, plan.delete_job)
            logger.info(f"Deleted Job {plan.delete_job}")
        if plan.create_job is not None:
            try:
                await self._create_job(mv, plan.create_job, logger)
            except JobNameTaken as exc:
                attempt = int(plan.create_job["metadata"]["labels"][LABEL_ATTEMPT])
                status = mv.get("status") or {}
                skipped = mergepatch.compose(status, plan.prelude, attempt_skipped(attempt))
                self.ledger.note(meta["uid"], str(mergepatch.apply_patch(status, skipped).get("phase") or ""))
                await self._patch_status(mv, skipped, logger)
                kopf.event(as_body(mv), type="Warning", reason=R_JOB_NAME_TAKEN, message=str(exc))
                return 0
            except ApiException as exc:  # refused (quota, admission, RBAC): say so where users look
                job_name, message = plan.create_job["metadata"]["name"], api_message(exc)
                since = self._refused_since.setdefault(meta["uid"], tick) if 400 <= (exc.status or 0) < 500 else tick
                if refusal_is_final(exc.status or 0, message, timedelta(seconds=tick - since)):
                    self._refused_since.pop(meta["uid"], None)
                    self.book.release(meta["uid"])  # no Job: nothing of its Replicate allowance is spent
                    refused = job_refused(mv, plan.prelude, job_name, message, utcnow())
                    self.ledger.note(meta["uid"], str(refused.status.get("phase") or ""))
                    return await self.apply(mv, refused, logger, tick)
                if exc.status not in (409, 429) and 400 <= (exc.status or 0) < 500:
                    kopf.event(as_body(mv), type="Warning", reason="JobCreateFailed",
                               message=f"creating Job {job_name}: {message}")
                if plan.prelude:  # what was decided before the create still holds (e.g. accepted)
                    await self._patch_status(mv, plan.prelude, logger)
                raise
            self._refused_since.pop(meta["uid"], None)
            if plan.first_job:
                latency = self.clocks.apply_to_job(mv, time.monotonic())
                if latency is not None:
                    metrics.APPLY_TO_JOB.observe(latency)
        if plan.status:
            await self._patch_status(mv, plan.status, logger)
            self.clocks.note_started(meta["uid"], plan.status, tick)
        for event in plan.events:
            kopf.event(as_body(mv), type=event.type, reason=event.reason, message=event.message)
            log = logger.warning if event.type == "Warning" else logger.info
            log(f"{event.reason}: {event.message}")
        self._count(mv, plan, tick)
        return plan.again

    async def _patch_status(self, mv: Mapping[str, Any], patch: Mapping[str, Any], logger: kopf.Logger) -> None:
        """Write a status patch, with the Replicate cost of the attempt it ends (budget.charge) in the same write."""
        namespace, name = mv["metadata"]["namespace"], mv["metadata"]["name"]
        charged, spent = budget.charge(mv.get("status") or {}, patch)
        await asyncio.to_thread(self.kube.patch_musicvideo_status, namespace, name, charged)
        if spent:
            await asyncio.to_thread(self.book.charge, namespace, spent, utcnow())
            logger.info(f"Charged {spent} Replicate predictions to namespace {namespace}")

    async def _create_job(self, mv: Mapping[str, Any], job: Mapping[str, Any], logger: kopf.Logger) -> None:
        """Create the Job; an existing one of that name is fine if it is ours and renders this spec."""
        namespace, job_name = mv["metadata"]["namespace"], job["metadata"]["name"]
        created = await asyncio.to_thread(self.kube.create_job, namespace, job)
        if created is not None:
            logger.info(f"Created Job {job_name}")
            return
        existing = await asyncio.to_thread(self.kube.get_job, namespace, job_name)
        if existing is None:
            raise ApiUnavailable(f"Job {job_name} already existed but is gone now")
        hash_ = (existing["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
        if not owned_by(existing, mv["metadata"]["uid"]):
            raise JobNameTaken(f"Job {job_name} is not owned by this MusicVideo: skipping the name")
        if hash_ != spec_hash(mv.get("spec") or {}):
            await asyncio.to_thread(self.kube.delete_job, namespace, job_name)
            raise JobNameTaken(f"Job {job_name} was created for an older spec: deleted it, skipping its name")
        logger.info(f"Job {job_name} already exists (created before a restart): adopting it")

    def _count(self, mv: Mapping[str, Any], plan: Plan, tick: float) -> None:
        outcome = plan.outcome
        if outcome in (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED):
            assert outcome is not None
            metrics.RENDERS.labels(outcome.value).inc()
            seconds = self.clocks.render_duration(mv, tick)
            if seconds is not None:
                metrics.RENDER_DURATION.labels(outcome.value).observe(seconds)
        elif outcome is Outcome.OOM_RETRY:
            metrics.OOM_RETRIES.inc()
            metrics.RETRIES.labels("oom").inc()
        elif outcome is Outcome.RETRY:
            metrics.RETRIES.labels("error").inc()
        elif outcome is Outcome.DISRUPTED:
            metrics.RETRIES.labels("disruption").inc()
