"""Kubernetes resource quantities: parsing, Mi rounding and the OOM escalation step."""

import math
from decimal import Decimal, InvalidOperation

from kubernetes.utils.quantity import parse_quantity as _k8s_parse_quantity

MI = 1024 * 1024
OOM_FACTOR = Decimal("1.5")


def parse_quantity(value: str | int | float) -> Decimal:
    """A quantity such as `512Mi`, `2G`, `500m` or `1` as a Decimal; ValueError if malformed."""
    try:
        return Decimal(_k8s_parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc


def memory_bytes(value: str | int | float) -> int:
    """A memory quantity in whole bytes (rounded up)."""
    return math.ceil(parse_quantity(value))


def format_mebibytes(n_bytes: int) -> str:
    """Bytes rounded up to whole mebibytes, as a quantity (`1536Mi`)."""
    return f"{max(1, math.ceil(n_bytes / MI))}Mi"


def round_up_mebibytes(n_bytes: int) -> int:
    """Bytes rounded up to a whole number of mebibytes."""
    return max(1, math.ceil(n_bytes / MI)) * MI


def escalate_memory(current: str, maximum: str) -> str | None:
    """The next attempt's memory after an OOM kill: x1.5 rounded up to Mi, capped at maximum.

    None when `current` is already at (or above) `maximum`: escalating further is not allowed.
    """
    current_b, maximum_b = memory_bytes(current), memory_bytes(maximum)
    if current_b >= maximum_b:
        return None
    grown = round_up_mebibytes(math.ceil(Decimal(current_b) * OOM_FACTOR))
    if grown >= maximum_b:
        return _as_limit(maximum)
    return format_mebibytes(grown)


def _as_limit(maximum: str) -> str:
    """The cap itself: in Mi when it is whole mebibytes, else in the user's spelling (never above it)."""
    n_bytes = memory_bytes(maximum)
    return format_mebibytes(n_bytes) if n_bytes % MI == 0 else str(maximum)
