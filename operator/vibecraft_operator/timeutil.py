"""RFC 3339 timestamps as Kubernetes writes them."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, timezone-aware, to the second (what status timestamps keep)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment: datetime) -> str:
    """`2024-05-01T12:00:00Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """A Kubernetes timestamp (or None/garbage → None)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
