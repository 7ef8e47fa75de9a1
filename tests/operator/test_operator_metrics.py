"""The operator's /metrics tell the truth: gauges follow deletions, latencies keep sub-second resolution,
no `_created` series that read like counts, and the documented metrics port is the one the chart deploys.

The cluster tests drive real renders (tests/operator/fake_renderer.py) through the real operator, as
test_operator_e2e.py does, and read its /metrics over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import yaml
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from vibecraft_common.resource import GROUP, PLURAL, VERSION
from vibecraft_operator import runtime as runtime_mod
from vibecraft_operator.queue import queue_entry
from vibecraft_operator.timeutil import format_time, utcnow

from tests.harness import ROOT, OperatorProcess, wait_for
from tests.operator.test_operator_e2e import create_mv, finished_status, get_mv, manifest, phase
from tests.operator.test_operator_runtime import add, make, snapshot

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a /metrics text, keyed by sample name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metric(operator: OperatorProcess, name: str, **labels: str) -> float | None:
    return value(parse(operator.metrics()), name, **labels)


def shown(operator: OperatorProcess, *prefixes: str) -> Callable[[], str]:
    """For wait_for's message: the operator's current samples of these metrics."""
    return lambda: "\n".join(line for line in operator.metrics().splitlines() if line.startswith(prefixes))


def gone(custom: Any, namespace: str, name: str) -> bool:
    try:
        get_mv(custom, namespace, name)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def delete_mv(custom: Any, namespace: str, name: str) -> None:
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_for(lambda: gone(custom, namespace, name), what=f"MusicVideo {name} deleted (finalizer released)")


# In process, against test_operator_runtime's in-memory API server.

LOG = logging.getLogger("test")


@pytest.fixture
def no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_mod.kopf, "event", lambda obj, *, type, reason, message: None)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.usefixtures("no_events")
def test_the_gauges_are_a_census_of_what_exists_now() -> None:
    rt, kube = make(max_running=1)
    add(kube, "first", "u1", second=0)
    add(kube, "second", "u2", second=1)
    for name in ("first", "second"):
        asyncio.run(rt.reconcile("default", name, snapshot(kube), LOG))
    rt.recount(queue_entry(mv) for mv in kube.mvs.values())
    assert (sample("vibecraft_renders_running"), sample("vibecraft_renders_queued")) == (1, 1)
    assert sample("vibecraft_oldest_queued_seconds") > 0
    rt.recount([])  # both deleted: nothing is left to count, whatever was counted before
    assert (sample("vibecraft_renders_running"), sample("vibecraft_renders_queued")) == (0, 0)
    assert sample("vibecraft_oldest_queued_seconds") == 0


@pytest.mark.usefixtures("no_events")
def test_apply_to_job_and_render_duration_are_not_rounded_to_seconds() -> None:
    rt, kube = make()
    add(kube, "demo", "u1")
    kube.mvs[("default", "demo")]["metadata"]["creationTimestamp"] = format_time(utcnow())
    apply_sum, apply_count = sample("vibecraft_apply_to_job_seconds_sum"), sample("vibecraft_apply_to_job_seconds_count")
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    assert sample("vibecraft_apply_to_job_seconds_count") == apply_count + 1
    took = sample("vibecraft_apply_to_job_seconds_sum") - apply_sum
    assert took > 0 and took != math.floor(took), f"apply→Job observed as {took}s"  # resolution, not speed

    done = sample("vibecraft_render_duration_seconds_sum", result="cancelled")
    kube.mvs[("default", "demo")]["metadata"]["deletionTimestamp"] = format_time(utcnow())
    asyncio.run(rt.cancel("default", "demo", LOG))
    took = sample("vibecraft_render_duration_seconds_sum", result="cancelled") - done
    assert took > 0 and took != math.floor(took), f"render duration observed as {took}s"


def test_a_late_sighting_adds_the_lag_beyond_the_timestamps_resolution() -> None:
    from vibecraft_operator.runtime import Clocks

    clocks = Clocks()
    created = format_time(utcnow() - timedelta(seconds=30))  # created while the operator was down
    mv = {"metadata": {"uid": "u1", "creationTimestamp": created}, "status": {"phase": "Pending", "attempts": 0}}
    now = time.monotonic()
    clocks.saw(mv, now)
    clocks.saw(mv, now + 5)  # only the first sight counts
    latency = clocks.apply_to_job(mv, now + 0.25)
    assert latency is not None and 29 < latency <= 30.25
    assert clocks.apply_to_job(mv, now + 1) == pytest.approx(31.0, abs=1.1)  # no sighting left: the timestamp
    clocks.saw({**mv, "status": {"attempts": 1}}, now)  # it has had a Job: nothing to time
    assert clocks.size() == 0


# The resync period is longer than the waits below: the gauges must follow the deletion itself,
# not the next periodic look at some other render.
SLOW_RESYNC = {"VIBECRAFT_RESYNC_SECONDS": "60"}


@pytest.mark.cluster
@pytest.mark.parametrize("operator_settings", [SLOW_RESYNC], indirect=True)
def test_the_running_gauge_drops_to_zero_when_the_only_running_render_is_deleted(
        operator: OperatorProcess, apis: Any) -> None:
    custom, _, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("doomed", style={"prompt": "sleep:600"}))
    wait_for(lambda: phase(custom, ns, "doomed") == "Running", what="phase Running")
    wait_for(lambda: metric(operator, "vibecraft_renders_running") == 1, timeout=30,
             what=shown(operator, "vibecraft_renders_running"))
    delete_mv(custom, ns, "doomed")
    wait_for(lambda: metric(operator, "vibecraft_renders_running") == 0, timeout=20,
             what=shown(operator, "vibecraft_renders_running"))
    assert metric(operator, "vibecraft_renders_total", result="cancelled") == 1


@pytest.mark.cluster
@pytest.mark.parametrize("operator_settings", [{**SLOW_RESYNC, "VIBECRAFT_MAX_RUNNING": "1"}], indirect=True)
def test_the_queued_gauges_drop_when_the_queued_render_is_deleted(operator: OperatorProcess, apis: Any) -> None:
    """A render waiting in Queued has no reconciler of its own: its deletion must still be counted."""
    custom, _, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("holder", style={"prompt": "sleep:600"}))
    wait_for(lambda: phase(custom, ns, "holder") == "Running", what="holder Running")
    create_mv(custom, ns, manifest("waiter", style={"prompt": "ok"}))
    wait_for(lambda: phase(custom, ns, "waiter") == "Queued", what="waiter Queued")

    def queued_and_aging() -> bool:
        samples = parse(operator.metrics())
        return (value(samples, "vibecraft_renders_queued") == 1 and value(samples, "vibecraft_renders_running") == 1
                and (value(samples, "vibecraft_oldest_queued_seconds") or 0) > 0)

    watched = shown(operator, "vibecraft_renders_", "vibecraft_oldest_queued")
    wait_for(queued_and_aging, timeout=30, what=watched)
    delete_mv(custom, ns, "waiter")

    def none_queued() -> bool:
        samples = parse(operator.metrics())
        return (value(samples, "vibecraft_renders_queued") == 0 and value(samples, "vibecraft_oldest_queued_seconds") == 0
                and value(samples, "vibecraft_renders_running") == 1)

    wait_for(none_queued, timeout=20, what=watched)


@pytest.mark.cluster
def test_latencies_keep_sub_second_resolution(operator: OperatorProcess, apis: Any) -> None:
    """apply→Job and the render's duration are measured, not rounded to whole seconds (the old clock
    dropped microseconds: every apply→Job was 0.0 and no sub-second bucket was ever used). Resolution
    only: how fast is for bench/bench_operator_latency.py."""
    custom, _, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("quick", style={"prompt": "sleep:1.5,ok"}))
    status = finished_status(custom, ns, "quick", timeout=120)
    assert status["phase"] == "Succeeded", status

    def observed() -> Samples | None:
        samples = parse(operator.metrics())
        done = (value(samples, "vibecraft_apply_to_job_seconds_count") == 1
                and value(samples, "vibecraft_render_duration_seconds_count", result="succeeded") == 1)
        return samples if done else None

    samples = wait_for(observed, timeout=30,
                       what=shown(operator, "vibecraft_apply_to_job_seconds", "vibecraft_render_duration_seconds"))
    apply_sum = value(samples, "vibecraft_apply_to_job_seconds_sum")
    assert apply_sum is not None and apply_sum > 0, f"apply→Job took {apply_sum}s"
    assert apply_sum != math.floor(apply_sum), f"apply→Job {apply_sum}s is whole seconds"
    duration = value(samples, "vibecraft_render_duration_seconds_sum", result="succeeded")
    assert duration is not None and duration >= 1.5, duration
    assert duration != math.floor(duration), f"render duration {duration}s is whole seconds"


def created_series(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^[a-z_:]+_created\b", line)]


@pytest.mark.cluster
def test_the_operator_exports_no_created_series(operator: OperatorProcess) -> None:
    text = operator.metrics()
    assert "vibecraft_renders_total" in text
    assert created_series(text) == []


def test_the_api_exports_no_created_series() -> None:
    from vibecraft_api.metrics import Metrics

    m = Metrics()
    m.requests.labels("GET", "/v1/videos", "200").inc()
    m.latency.labels("GET", "/v1/videos").observe(0.01)
    m.videos_created.inc()
    text = generate_latest(m.registry).decode()
    assert "vibecraft_api_requests_total" in text
    assert created_series(text) == []


def test_the_documented_metrics_port_is_the_one_the_chart_deploys() -> None:
    from vibecraft_operator.settings import Settings

    values = yaml.safe_load((ROOT / "charts" / "vibecraft" / "values.yaml").read_text())["operator"]
    port, health = values["metricsPort"], values["healthPort"]
    assert Settings.model_fields["metrics_port"].default == port
    operator_md = (ROOT / "docs" / "operator.md").read_text()
    assert f"| `VIBECRAFT_METRICS_PORT` | `{port}` |" in operator_md
    assert f"http://0.0.0.0:{health}/healthz" in operator_md
    section = operator_md.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    assert f":{port}/metrics" in section, "the Metrics section says where to scrape"
    assert f"svc/vibecraft-operator-metrics {port}:{port}" in section
    kind_md = (ROOT / "docs" / "kind.md").read_text()
    assert f"svc/vibecraft-operator-metrics {port}:{port}" in kind_md
    eks_md = (ROOT / "docs" / "eks.md").read_text()
    assert f"(`:{port}/metrics`)" in eks_md
    for doc in (operator_md, kind_md, eks_md):
        assert not {int(p) for p in re.findall(r"operator-metrics (\d+):", doc)} - {port}
