"""Prometheus metrics, served on their own port (kopf's liveness endpoint is separate).

The gauges are not counted up and down by events: they show the last census of all MusicVideos
(see Runtime.recount), taken whenever one is added, changed or deleted, and read at scrape time.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

RENDERS = Counter("vibecraft_renders_total", "Renders that reached a final phase, by result.", ["result"])
RENDER_DURATION = Histogram(
    "vibecraft_render_duration_seconds",
    "Time from a render's first Job to its final phase, by result.",
    ["result"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
RUNNING = Gauge("vibecraft_renders_running", "Renders holding render slots (phase Running).")
SLOTS = Gauge("vibecraft_render_slots_used",
              "Render slots the running renders hold: one per pod (a render split over 3 pods holds 3).")
QUEUED = Gauge("vibecraft_renders_queued", "Renders waiting for a slot or for Kueue (phase Queued).")
OLDEST_QUEUED = Gauge(
    "vibecraft_oldest_queued_seconds", "Age of the oldest render waiting in phase Queued (0 when none wait)."
)
REPLICATE_PREDICTIONS = Counter(
    "vibecraft_replicate_predictions_total", "Replicate predictions charged to finished attempts, by namespace.",
    ["namespace"])
REPLICATE_BUDGET_REMAINING = Gauge(
    "vibecraft_replicate_budget_remaining",
    "Replicate predictions a namespace may still create this month (namespaces with a budget; reservations of "
    "running renders not subtracted).", ["namespace"])
EXPIRED = Counter("vibecraft_musicvideos_expired_total",
                  "Finished MusicVideos deleted because their ttlSecondsAfterFinished passed.")
OOM_RETRIES = Counter("vibecraft_oom_retries_total", "Attempts retried with more memory after an OOM kill.")
RETRIES = Counter("vibecraft_retries_total", "Attempts retried, by why.", ["kind"])
RECONCILE_ERRORS = Counter(
    "vibecraft_reconcile_errors_total", "Reconcile steps that raised, by error class.", ["error"]
)
APPLY_TO_JOB = Histogram(
    "vibecraft_apply_to_job_seconds",
    "Time from a MusicVideo's creation to its first Job (includes time spent Queued; timed from when "
    "the operator first saw it, plus any lag beyond the second-resolution creationTimestamp).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)


# Export every result from the start, so dashboards see zeros rather than no series.
for _result in ("succeeded", "failed", "cancelled"):
    RENDERS.labels(_result)
    RENDER_DURATION.labels(_result)
for _kind in ("oom", "error", "disruption"):
    RETRIES.labels(_kind)


@dataclass(frozen=True)
class Census:
    """One look at all MusicVideos: how many are in the gauges' phases."""

    running: int = 0
    queued: int = 0
    oldest_queued: datetime | None = None  # creationTimestamp of the oldest render in phase Queued
    slots: int = 0  # render slots the running renders hold


_census = Census()


def publish(census: Census) -> None:
    """Make `census` what the gauges show (scrapes run in another thread: one reference, swapped whole)."""
    global _census
    _census = census


def _oldest_queued_seconds() -> float:
    oldest = _census.oldest_queued
    return max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else 0.0


RUNNING.set_function(lambda: _census.running)
SLOTS.set_function(lambda: _census.slots)
QUEUED.set_function(lambda: _census.queued)
OLDEST_QUEUED.set_function(_oldest_queued_seconds)  # ages between censuses too


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread (0 = don't).

    Without `_created` series: `vibecraft_renders_created{result="succeeded"} 1.7e9` (a start time in
    epoch seconds) reads like a count on a dashboard, and no dashboard of ours uses them.
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]
    if port:
        start_http_server(port)
