"""The operator under faults (issue 19), on the local cluster with the fake renderer.

Each test is one scenario of the chaos suite: a fault injected at the point where it hurts, and the
outcome checked from what users see (phases, Jobs, attempts). `make chaos` runs them with
VIBECRAFT_CHAOS_SCALE > 1 (more repetitions) and prints the figures.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, S3Server, provision_renders
from tests.harness import OperatorProcess, wait_for
from tests.operator.conftest import make_operator, stop_operators
from tests.operator.test_operator_e2e import _job, create_mv, finished_status, get_mv, manifest, phase

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

SCALE = int(os.environ.get("VIBECRAFT_CHAOS_SCALE", "1"))


def started_at(custom: Any, namespace: str, name: str) -> str:
    return str((get_mv(custom, namespace, name).get("status") or {}).get("startedAt") or "")


def test_a_job_deleted_after_success_while_the_operator_is_down_is_a_success(
        operator: OperatorProcess, apis: Any, cluster: Cluster) -> None:
    """Scenario 7: the Job completes and is deleted (by hand, or its TTL) while no operator runs; the
    restarted operator finds the video in S3 and records Succeeded instead of rendering again."""
    custom, batch, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("orphan", style={"prompt": "sleep:3,ok"}))
    wait_for(lambda: _job(batch, ns, "orphan-a1"), what="Job orphan-a1")
    operator.stop(signal.SIGKILL)
    wait_for(lambda: any(c.type == "Complete" and c.status == "True"
                         for c in (_job(batch, ns, "orphan-a1").status.conditions or [])),
             timeout=120, what="the Job to complete while the operator is down")
    cluster.kubectl("-n", ns, "delete", "job", "orphan-a1", "--cascade=foreground", "--timeout=60s")
    assert phase(custom, ns, "orphan") == "Running"
    operator.start()
    status = finished_status(custom, ns, "orphan", timeout=120)
    assert status["phase"] == "Succeeded" and status["attempts"] == 1, status
    assert status["output"]["sizeBytes"] == 4096  # read back from S3: the fake renderer's video
    assert batch.list_namespaced_job(ns).items == []  # nothing rendered again


@pytest.mark.parametrize("operator_settings", [{"VIBECRAFT_MAX_RUNNING": "1", "VIBECRAFT_STARTUP_TIMEOUT_SECONDS": "8"}],
                         indirect=True)
def test_an_unschedulable_render_releases_its_slot(operator: OperatorProcess, apis: Any) -> None:
    """Scenario 9: a render whose pod can never be scheduled fails after the startup timeout (reason as the
    scheduler says) and the one slot goes to the render waiting behind it."""
    custom, batch, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("huge", style={"prompt": "ok"}, resources={"cpu": "64"}))
    wait_for(lambda: phase(custom, ns, "huge") == "Running", what="the huge render to take the slot")
    create_mv(custom, ns, manifest("small", style={"prompt": "ok"}))
    wait_for(lambda: phase(custom, ns, "small") == "Queued", what="the small render to queue behind it")
    status = finished_status(custom, ns, "huge", timeout=90)
    assert status["phase"] == "Failed" and status["lastFailure"]["reason"] == "Unschedulable", status
    assert "Insufficient cpu" in status["lastFailure"]["message"]
    assert _job(batch, ns, "huge-a1") is None or _job(batch, ns, "huge-a1").metadata.deletion_timestamp
    assert finished_status(custom, ns, "small", timeout=120)["phase"] == "Succeeded"


def test_a_tenant_flooding_the_queue_does_not_hold_up_another(
        cluster: Cluster, s3: S3Server, crd: None, renderer_namespace: str, apis: Any, tmp_path: Path) -> None:
    """Scenario 8: with one slot, tenant A queues 4 renders, then tenant B one: B's starts after at most one
    slot turnover (first come, first served would make it wait for all of A's)."""
    custom, _, _ = apis
    ns_a = renderer_namespace
    ns_b = f"{ns_a}-b"
    cluster.kubectl("create", "namespace", ns_b)
    provision_renders(cluster, s3, ns_b)
    op = make_operator(cluster, s3, [ns_a, ns_b], tmp_path / "operator.log", VIBECRAFT_MAX_RUNNING="1")
    op.start()
    try:
        names = [f"a{i}" for i in range(4 * SCALE)]
        for name in names:
            create_mv(custom, ns_a, manifest(name, style={"prompt": "sleep:2,ok"}))
        wait_for(lambda: phase(custom, ns_a, names[0]) == "Running", what="A's first render to start")
        time.sleep(1)
        create_mv(custom, ns_b, manifest("b0", style={"prompt": "sleep:2,ok"}))
        assert finished_status(custom, ns_b, "b0", timeout=180)["phase"] == "Succeeded"
        b_start = started_at(custom, ns_b, "b0")
        a_before = [n for n in names if started_at(custom, ns_a, n) and started_at(custom, ns_a, n) < b_start]
        print(f"B's render started after {len(a_before)} of A's {len(names)} (first come first served: {len(names)})")
        assert len(a_before) <= 2, a_before  # the one running when B came, and at most one turnover
    finally:  # B's MusicVideos first, while the operator still runs to release their finalizers
        cluster.kubectl("delete", "musicvideos.vibecraft.io", "--all", "-n", ns_b, "--timeout=60s", check=False)
        stop_operators(cluster, ns_a, op)
        cluster.kubectl("delete", "namespace", ns_b, "--wait=false", check=False)


def test_operator_killed_at_random_points_never_duplicates_or_loses_a_render(
        operator: OperatorProcess, apis: Any) -> None:
    """Scenario 1: SIGKILL the operator at random moments while renders are created, started and finished
    (some kills land between a Job's create and the status patch that records it): every render
    succeeds with exactly one Job, and status.attempts counts the Jobs made."""
    custom, batch, _ = apis
    ns = operator.namespace
    rng = random.Random(19)
    names = [f"k{i:02d}" for i in range(5 * SCALE)]
    kills = 5 * SCALE
    for name in names:
        create_mv(custom, ns, manifest(name, style={"prompt": f"sleep:{rng.uniform(0.5, 3):.1f},ok"}))
    for _ in range(kills):
        time.sleep(rng.uniform(0.2, 3.0))
        operator.stop(signal.SIGKILL)
        operator.start()

    def all_done() -> bool:
        return all(phase(custom, ns, n) in ("Succeeded", "Failed") for n in names)

    wait_for(all_done, timeout=300, what="every render to finish")
    jobs: dict[str, list[str]] = {}
    for job in batch.list_namespaced_job(ns).items:
        jobs.setdefault(job.metadata.name.rsplit("-a", 1)[0], []).append(job.metadata.name)
    statuses = {n: get_mv(custom, ns, n)["status"] for n in names}
    print(f"{kills} operator SIGKILLs over {len(names)} renders: "
          f"{sum(s['phase'] == 'Succeeded' for s in statuses.values())}/{len(names)} Succeeded, "
          f"{sum(len(v) for v in jobs.values())} Jobs")
    assert all(s["phase"] == "Succeeded" for s in statuses.values()), statuses
    assert all(jobs.get(n) == [f"{n}-a1"] and statuses[n]["attempts"] == 1 for n in names), (jobs, statuses)
