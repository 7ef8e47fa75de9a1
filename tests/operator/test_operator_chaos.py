"""The operator under faults (issue 19), on the local cluster with the fake renderer.

Each test is one scenario of the chaos suite: a fault injected at the point where it hurts, and the
outcome checked from what users see (phases, Jobs, attempts). `make chaos` runs them with
VIBECRAFT_CHAOS_SCALE > 1 (more repetitions) and prints the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from vibecraft_common.resource import GROUP, LABEL_NAME, PLURAL, VERSION

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
        first = f"sleep:{max(8, 2 * len(names))},ok"  # long enough to see every queue place settle behind it
        for name in names:
            create_mv(custom, ns_a, manifest(name, style={"prompt": first if name == names[0] else "sleep:2,ok"}))
        wait_for(lambda: phase(custom, ns_a, names[0]) == "Running", what="A's first render to start")
        time.sleep(1)
        create_mv(custom, ns_b, manifest("b0", style={"prompt": "sleep:2,ok"}))

        def places() -> dict[str, Any]:
            return {n: (get_mv(custom, ns, n).get("status") or {}).get("queuePosition")
                    for ns, n in [(ns_b, "b0"), *((ns_a, n) for n in names[1:])]}

        # Places as slots will go: B's next (its tenant runs nothing), then A's in age order; timestamps have
        # whole seconds, and names break ties (queue.QueueEntry.order): a10 before a2 within one second.
        created = {n: get_mv(custom, ns_a, n)["metadata"]["creationTimestamp"] for n in names[1:]}
        waiting = sorted(names[1:], key=lambda n: (created[n], n))
        want = {"b0": 1, **{n: i for i, n in enumerate(waiting, start=2)}}
        seen: dict[str, Any] = {}
        wait_for(lambda: seen.update(places()) or seen == want, timeout=15,
                 what=lambda: f"queue places {want}, last seen {seen}")
        wide = cluster.kubectl("get", "musicvideos.vibecraft.io", "-n", ns_a, "-o", "wide").stdout
        print(wide)
        header = wide.splitlines()[0]
        assert "QUEUE" in header.split() and "STARTS-IN" in header.split(), header
        row = next(line for line in wide.splitlines() if line.startswith(waiting[0] + " "))
        at = header.index(" QUEUE ") + 1  # kubectl aligns columns; an empty cell is blanks
        assert row[at:].split()[0] == "2", row
        assert finished_status(custom, ns_b, "b0", timeout=180)["phase"] == "Succeeded"
        b_start = started_at(custom, ns_b, "b0")
        a_before = [n for n in names if started_at(custom, ns_a, n) and started_at(custom, ns_a, n) < b_start]
        print(f"B's render started after {len(a_before)} of A's {len(names)} (first come first served: {len(names)})")
        assert len(a_before) <= 2, a_before  # the one running when B came, and at most one turnover
        wait_for(lambda: all(phase(custom, ns_a, n) == "Succeeded" for n in names), timeout=180,
                 what="A's renders to finish")
        assert set(places().values()) == {None}, places()  # a started render has no queue place
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


def _restart(cluster: Cluster, component: str, down: float) -> float:
    """Stop `component` for `down` seconds and start it again; the time (epoch seconds) when it serves again."""
    cluster.lc.stop(component)
    time.sleep(down)
    cluster.lc.start(component)
    if component == "etcd":  # the API server only answers once it has its storage back
        wait_for(lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0, timeout=60,
                 what="the API server to be ready after etcd's restart")
    return time.time()


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_outages_mid_render_fail_nothing(
        component: str, operator: OperatorProcess, apis: Any, cluster: Cluster) -> None:
    """Scenarios 2 and 3: the API server stopped for 30 s (or etcd restarted) while renders run; a render
    whose Job finishes during the outage is recorded Succeeded soon (≤ 45 s) after the cluster marks its
    Job complete (which the kubelet and the Job controller take their own time to do after an outage),
    nothing fails and no Job is made twice. `make chaos`: 5 outages in a row."""
    custom, batch, _ = apis
    ns = operator.namespace
    outages = SCALE
    down = 30.0 if component == "kube-apiserver" else 2.0
    lags: list[float] = []
    names: list[str] = []
    for round_ in range(outages):
        short, long_ = f"s{round_}", f"l{round_}"
        names += [short, long_]
        create_mv(custom, ns, manifest(short, style={"prompt": "sleep:5,ok"}))  # ends during the outage
        create_mv(custom, ns, manifest(long_, style={"prompt": f"sleep:{down + 15:.0f},ok"}))  # ends after it
        wait_for(lambda pair=(short, long_): all(pod_running(apis, ns, n) for n in pair), timeout=90,
                 what="both renders' pods to run")
        back_wall = _restart(cluster, component, down)
        finished_status(custom, ns, short, timeout=180)
        seen = time.time()
        job = _job(batch, ns, f"{short}-a1")
        assert job is not None and job.status.completion_time is not None, job
        complete = job.status.completion_time.timestamp()  # whole seconds: up to 1 s early
        # The cluster's own controllers first: the kubelet re-reports the pod and the Job controller, after
        # relisting, marks the Job complete; the operator then records it.
        lags.append(seen - complete)
        print(f"outage {round_}: the Job controller marked the Job complete {complete - back_wall:+.1f} s after the "
              f"{component} was back; the operator recorded Succeeded {seen - complete:.1f} s after that")
    statuses = {n: finished_status(custom, ns, n, timeout=180) for n in names}
    jobs = sorted(j.metadata.name for j in batch.list_namespaced_job(ns).items)
    print(f"{outages} {component} outage(s) of {down:.0f} s: {sum(s['phase'] == 'Succeeded' for s in statuses.values())}"
          f"/{len(names)} Succeeded, {len(jobs)} Jobs; the operator recorded a Job's end {max(lags):.1f} s (max) after "
          f"the cluster marked it")
    assert all(s["phase"] == "Succeeded" and s["attempts"] == 1 for s in statuses.values()), statuses
    assert jobs == sorted(f"{n}-a1" for n in names), jobs
    assert max(lags) <= 45, lags


def test_spec_edited_mid_render_keeps_at_most_one_live_job(operator: OperatorProcess, apis: Any) -> None:
    """Scenario 5: the spec edited 10 times while the render runs: sampled every 200 ms, never two live Jobs
    (the old attempt's Job is gone before the next is made) and the outputs come from the last spec."""
    custom, batch, _ = apis
    ns = operator.namespace
    create_mv(custom, ns, manifest("edited", style={"prompt": "sleep:4,ok"}))
    wait_for(lambda: phase(custom, ns, "edited") == "Running", what="the render to start")
    edits = 10 * SCALE
    rng = random.Random(5)
    most = 0
    edit_at = [time.monotonic() + rng.uniform(0.5, 2.0) * (i + 1) for i in range(edits)]
    done_editing = edit_at[-1]
    last_prompt = ""
    while time.monotonic() < done_editing + 1 or phase(custom, ns, "edited") not in ("Succeeded", "Failed"):
        if edit_at and time.monotonic() >= edit_at[0]:
            edit_at.pop(0)
            last_prompt = f"sleep:{rng.uniform(0.5, 3):.1f},ok"
            custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "edited",
                                                  {"spec": {"style": {"prompt": last_prompt}}})
        live = [j for j in batch.list_namespaced_job(ns).items
                if not j.metadata.deletion_timestamp and not (j.status.succeeded or j.status.failed)]
        running_pods = [p for p in operator_pods(apis, ns) if p.status.phase in ("Pending", "Running")
                        and not p.metadata.deletion_timestamp]
        most = max(most, len(live), len(running_pods))
        time.sleep(0.2)
        assert time.monotonic() < done_editing + 120, "the render did not finish after the last edit"
    status = get_mv(custom, ns, "edited")["status"]
    spec = get_mv(custom, ns, "edited")["spec"]
    print(f"{edits} spec edits mid-render: at most {most} live Job(s)/pod(s) at once; "
          f"{status['attempts']} attempts, phase {status['phase']}")
    assert status["phase"] == "Succeeded" and spec["style"]["prompt"] == last_prompt, status
    assert most <= 1, most
    job = _job(batch, ns, status["jobName"])
    assert job is not None and last_prompt in json.dumps(job.to_dict(), default=str), "the last spec was rendered"


def operator_pods(apis: Any, namespace: str, name: str | None = None) -> list[Any]:
    """The renderer pods in `namespace` (of MusicVideo `name`)."""
    selector = f"{LABEL_NAME}={name}" if name else LABEL_NAME
    return list(apis[2].list_namespaced_pod(namespace, label_selector=selector).items)


def pod_running(apis: Any, namespace: str, name: str) -> bool:
    """Whether a renderer pod of `name` runs (its container started: the render is under way)."""
    return any(p.status.phase == "Running" for p in operator_pods(apis, namespace, name))
