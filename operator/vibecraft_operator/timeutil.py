"""RFC 3339 timestamps as Kubernetes writes them (whole seconds), and the clock they are read against."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware, with microseconds: what time has passed since a timestamp must not be rounded.

    Status timestamps keep whole seconds (format_time drops the fraction, as Kubernetes does); they
    are read against this clock. Durations this process measures itself use time.monotonic().
    """
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """`2024-05-01T12:00:00Z` (the fraction of a second dropped)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (or None/garbage → None)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
