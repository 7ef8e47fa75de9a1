"""The kopf handlers: thin; the reconciler does the work, Job/Pod/spec events only wake it."""

import asyncio
import logging
import platform
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
from vibecraft_common.resource import GROUP, LABEL_NAME, PLURAL, VERSION
from vibecraft_common.status import FAILED

from vibecraft_operator import heap, metrics
from vibecraft_operator.constants import ANNOTATION_MV_NAME, FINALIZER, MANAGED_BY
from vibecraft_operator.kube import Kube, load_api_client
from vibecraft_operator.queue import QueueEntry, queue_entry
from vibecraft_operator.reconcile import needs_reconciler
from vibecraft_operator.runtime import WAIT_FOR_SLOT, Runtime
from vibecraft_operator.session import login
from vibecraft_operator.settings import Settings

MAX_ERROR_BACKOFF = 300.0
EVENT_POSTERS = 8  # Kubernetes Events posted at once (kopf: one worker per object, unlimited)
EVENT_POSTER_IDLE = 0.2  # seconds a poster waits for its object's next Event before freeing its place

QueueIndex = kopf.Index[tuple[str, str], QueueEntry]


def runtime_of(memo: Any) -> Runtime:
    """The Runtime the startup hook put into the memo."""
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the operator's startup hook did not run")
    return runtime


@kopf.on.startup()
def operator_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """All kopf tuning and the operator's own state, in one place."""
    ours = memo.get("settings")
    ours = ours if isinstance(ours, Settings) else Settings()
    # Our own finalizer name instead of kopf's default, so `kubectl get -o yaml` says whose it is.
    settings.persistence.finalizer = FINALIZER
    # No handler keeps progress, but if one ever does, it must not write status.kopf (pruned by the CRD).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"kopf.{GROUP}")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=f"kopf.{GROUP}")
    # Events say who posted them.
    settings.posting.reporting_component = MANAGED_BY
    settings.posting.reporting_instance = platform.node() or "unknown"
    # kopf posts each object's Events from a worker of its own, with no limit by default: 500 renders queued
    # at once are 500 "Queued" Events in the session's API_CALLS slots (session.py) ahead of the patches
    # new renders wait for. A few posters, each gone soon after its object's last Event, post the same
    # Events in order, a little later.
    settings.posting.worker_limit = EVENT_POSTERS
    settings.posting.idle_timeout = EVENT_POSTER_IDLE
    # Watch only our own Jobs and Pods server-side: a cluster has many more than renders.
    settings.watching.label_selectors["batch", "jobs"] = LABEL_NAME
    settings.watching.label_selectors["v1", "pods"] = LABEL_NAME
    # Bounded API calls: a hung connection must not stall the operator (kopf's default is 5 minutes).
    settings.networking.request_timeout = ours.api_timeout_seconds
    settings.networking.connect_timeout = 10
    # Reconnect watches regularly and notice dead streams before the server's cache forgets events.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Leader election: one cluster-wide ClusterKopfPeering for all replicas, even namespaced ones;
    # the highest --priority works, the others pause. Without --peering NAME (mandatory), the
    # VIBECRAFT_PEERING_NAME object is used if it exists, else the operator runs standalone.
    settings.peering.clusterwide = True
    if not settings.peering.mandatory:
        settings.peering.name = ours.peering_name
    settings.peering.standalone = settings.peering.standalone or ours.standalone
    # How often kopf re-checks a reconciler that was asked to stop and has not yet.
    settings.background.cancellation_polling = 5

    memo["runtime"] = Runtime(settings=ours, kube=Kube(load_api_client(), ours.api_timeout_seconds))
    metrics.serve(ours.metrics_port)
    logger.info(f"vibecraft-operator started: image {ours.renderer_image}, max running "
                f"{ours.max_running or 'unlimited'} ({ours.max_running_per_namespace or 'unlimited'} per ns)")


@kopf.on.login()
async def api_login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's default login with a bounded HTTP session (session.py)."""
    return await login(**kwargs)


@kopf.on.startup()
async def heap_trimmer(memo: kopf.Memo, **_: Any) -> None:
    """Hand freed heap pages back to the OS every few seconds (heap.py), for as long as the operator runs."""
    memo["heap_trimmer"] = asyncio.get_running_loop().create_task(heap.trim_forever(), name="heap trimmer")


@kopf.on.cleanup()
async def stop_heap_trimmer(memo: kopf.Memo, **_: Any) -> None:
    """The trimmer goes with the operator."""
    task = memo.get("heap_trimmer")
    if isinstance(task, asyncio.Task):
        task.cancel()


@kopf.index(GROUP, VERSION, PLURAL)
def musicvideo_queue(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[tuple[str, str], QueueEntry]:
    """Every MusicVideo's queue entry, for admission (kopf fills it before any reconciler starts)."""
    return {(namespace or "", name): queue_entry(body)}


# On stop (finished, suspended, deleted, pausing), kopf only sets `stopped` for 60 s: the step in
# flight completes (a bare cancellation could fall between a status patch and its events), then
# the loop exits. Only a reconciler stuck past that is cancelled (and given 10 s more).
@kopf.daemon(GROUP, VERSION, PLURAL, when=needs_reconciler, cancellation_backoff=60, cancellation_timeout=10)
async def musicvideo_reconciler(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: Any,
    logger: kopf.Logger,
    musicvideo_queue: QueueIndex | None = None,
    **_: Any,
) -> None:
    """One per active MusicVideo: reconcile, then sleep until woken (or the resync period passes)."""
    runtime = runtime_of(memo)
    namespace = namespace or ""
    key = (namespace, name)
    index = musicvideo_queue
    if index is None:
        raise RuntimeError("kopf did not pass the musicvideo_queue index")
    runtime.wakeups.register(key)

    def observed() -> Iterable[QueueEntry]:
        return [entry for store in index.values() for entry in store]

    errors = 0
    seen: kopf.Body | None = body  # fresh from the watch that spawned us: spares a new render one GET
    try:
        while not stopped:
            first, seen = seen, None  # only ever the first look: a retry after an error reads afresh
            try:
                again = await runtime.reconcile(namespace, name, observed, logger, stopped=lambda: bool(stopped),
                                                seen=first)
                errors = 0
            except Exception as exc:  # the edge: count, log, back off, never die (kopf won't respawn)
                errors += 1
                again = min(MAX_ERROR_BACKOFF, 2.0 ** min(errors, 9))
                metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
                level = logging.WARNING if errors < 3 else logging.ERROR
                logger.log(level, f"reconcile failed ({type(exc).__name__}: {exc}); again in {again:.0f}s",
                           exc_info=errors >= 3)
            resync = runtime.settings.resync_seconds
            if again is not None and again >= WAIT_FOR_SLOT:  # queued: woken when a slot frees
                resync = max(resync, WAIT_FOR_SLOT)
            await runtime.wakeups.sleep(key, resync if again is None else min(again, resync), stopped)
        if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
            try:
                await runtime.cancel(namespace, name, logger)
            except Exception as exc:  # the object may be gone already; its Job goes with it anyway
                logger.warning(f"could not record Cancelled ({type(exc).__name__}: {exc})")
        logger.info(stopped_message(stopped.reason, body))
    finally:
        runtime.wakeups.unregister(key)
        runtime.slot_freed()  # it may have held a render slot


def stopped_message(reason: kopf.DaemonStoppingReason | None, body: Mapping[str, Any]) -> str:
    """What the reconciler says when it stops (instead of kopf's "Daemon ... succeeded.", which it
    also says after a render failed): why, and the phase it last saw."""
    why = "stopped"
    if reason is not None:
        for flag, text in STOP_REASONS:
            if reason & flag:
                why = text
                break
    status = body.get("status") or {}
    phase = str(status.get("phase") or "no phase yet")
    failure = (status.get("lastFailure") or {}).get("reason") if phase == FAILED else None
    return f"Reconciler stopped: {why} (phase {phase}{f', {failure}' if failure else ''})"


STOP_REASONS = (
    (kopf.DaemonStoppingReason.RESOURCE_DELETED, "the MusicVideo is being deleted"),
    (kopf.DaemonStoppingReason.OPERATOR_EXITING, "the operator is exiting"),
    (kopf.DaemonStoppingReason.OPERATOR_PAUSING, "the operator pauses (another replica leads)"),
    (kopf.DaemonStoppingReason.FILTERS_MISMATCH, "nothing left to do (finished or suspended)"),
)


# kopf retries what raises (the API unavailable) a few times, then lets the finalizer go all the same.
@kopf.on.delete(GROUP, VERSION, PLURAL, retries=5, backoff=5)
async def musicvideo_cleanup(namespace: str | None, name: str, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """A deleted MusicVideo: stop its render, then clean its output prefix in S3 (runtime.clean_up)."""
    await runtime_of(memo).clean_up(namespace or "", name, logger)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def musicvideo_event(
    type: str, body: kopf.Body, namespace: str | None, name: str, uid: str, memo: Any, logger: kopf.Logger,
    musicvideo_queue: QueueIndex | None = None, **_: Any,
) -> None:
    """Spec edits wake the reconciler; a deleted MusicVideo frees its slot; every change recounts the gauges
    and keeps the finished label and the TTL's deletion up to date."""
    runtime = runtime_of(memo)
    if type == "DELETED":
        runtime.forget(uid)
        runtime.slot_freed()
    else:
        runtime.saw(body)
        if body.get("metadata", {}).get("generation") != body.get("status", {}).get("observedGeneration"):
            runtime.wakeups.wake((namespace or "", name))
        await runtime.keep_finished(body, logger)
    index = musicvideo_queue
    if index is not None:  # kopf applied this event to the index before calling us
        runtime.changed(lambda: [entry for store in index.values() for entry in store])


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_NAME: kopf.PRESENT})
async def job_event(meta: kopf.Meta, namespace: str | None, memo: Any, **_: Any) -> None:
    """A renderer Job changed: its MusicVideo's reconciler looks again."""
    _wake_owner(runtime_of(memo), meta, namespace)


@kopf.on.event("v1", "pods", labels={LABEL_NAME: kopf.PRESENT})
async def pod_event(meta: kopf.Meta, namespace: str | None, memo: Any, **_: Any) -> None:
    """A renderer Pod changed (scheduled, started, OOM-killed, evicted, deleted): wake its reconciler."""
    _wake_owner(runtime_of(memo), meta, namespace)


def _wake_owner(runtime: Runtime, meta: kopf.Meta, namespace: str | None) -> None:
    name = meta.annotations.get(ANNOTATION_MV_NAME) or meta.labels.get(LABEL_NAME)
    if name:
        runtime.wakeups.wake((namespace or "", name))
