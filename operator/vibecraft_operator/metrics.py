"""Prometheus metrics, served on their own port (kopf's liveness endpoint is separate)."""

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RENDERS = Counter("vibecraft_renders_total", "Renders that reached a final phase, by result.", ["result"])
RENDER_DURATION = Histogram(
    "vibecraft_render_duration_seconds",
    "Time from a render's first Job to its final phase, by result.",
    ["result"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
RUNNING = Gauge("vibecraft_renders_running", "Renders holding a render slot (phase Running).")
QUEUED = Gauge("vibecraft_renders_queued", "Renders waiting for a slot or for Kueue (phase Queued).")
OLDEST_QUEUED = Gauge(
    "vibecraft_oldest_queued_seconds", "Age of the oldest render waiting in phase Queued (0 when none wait)."
)
OOM_RETRIES = Counter("vibecraft_oom_retries_total", "Attempts retried with more memory after an OOM kill.")
RETRIES = Counter("vibecraft_retries_total", "Attempts retried, by why.", ["kind"])
RECONCILE_ERRORS = Counter(
    "vibecraft_reconcile_errors_total", "Reconcile steps that raised, by error class.", ["error"]
)
APPLY_TO_JOB = Histogram(
    "vibecraft_apply_to_job_seconds",
    "Time from a MusicVideo's creation to its first Job (includes time spent Queued).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)


# Export every result from the start, so dashboards see zeros rather than no series.
for _result in ("succeeded", "failed", "cancelled"):
    RENDERS.labels(_result)
    RENDER_DURATION.labels(_result)
for _kind in ("oom", "error", "disruption"):
    RETRIES.labels(_kind)


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a daemon thread (0 = don't)."""
    if port:
        start_http_server(port)
