"""OOM escalation math and quantity helpers."""

import pytest
from vibecraft_operator.quantities import (
    MI,
    escalate_memory,
    format_mebibytes,
    memory_bytes,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("current", "maximum", "expected"),
    [
        ("1Gi", "8Gi", "1536Mi"),
        ("1536Mi", "8Gi", "2304Mi"),
        ("1000Mi", "8Gi", "1500Mi"),
        ("333Mi", "8Gi", "500Mi"),  # 499.5Mi rounds up to whole Mi
        ("6Gi", "8Gi", "8192Mi"),  # 9Gi would pass the cap: the cap itself
        ("1G", "2G", "1431Mi"),  # decimal units: 1.5e9 bytes rounded up to Mi
        ("1500M", "2G", "2G"),  # a cap that is not whole Mi is kept as written, never exceeded
        ("8Gi", "8Gi", None),  # already at the cap
        ("9Gi", "8Gi", None),
    ],
)
def test_escalate_memory(current, maximum, expected):
    assert escalate_memory(current, maximum) == expected


def test_escalation_reaches_the_cap_in_a_few_steps_and_stops():
    memory, steps = "512Mi", []
    while (memory := escalate_memory(memory, "4Gi")) is not None:  # type: ignore[assignment]
        steps.append(memory)
    assert steps == ["768Mi", "1152Mi", "1728Mi", "2592Mi", "3888Mi", "4096Mi"]


def test_quantities():
    assert memory_bytes("1Gi") == 1024 * MI
    assert memory_bytes("1.5Gi") == 1536 * MI
    assert memory_bytes(1024) == 1024
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert format_mebibytes(MI + 1) == "2Mi"
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("lots")
