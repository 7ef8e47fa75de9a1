"""The reconciler's I/O loop against an in-memory API: ordering, idempotency, admission races."""

import asyncio
import copy
import json
import logging
from typing import Any

import pytest
from vibecraft_operator import runtime as runtime_mod
from vibecraft_operator.queue import QueueEntry, queue_entry
from vibecraft_operator.runtime import Runtime

from tests.operator.operator_factories import merge, musicvideo, settings

LOG = logging.getLogger("test")


class FakeKube:
    """Just enough of the API server: MusicVideos, Jobs, Pods, with a call log."""

    def __init__(self) -> None:
        self.mvs: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def get_musicvideo(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_mv", name))
        mv = self.mvs.get((namespace, name))
        return copy.deepcopy(mv) if mv else None

    def patch_musicvideo_status(self, namespace: str, name: str, patch: dict[str, Any],
                                resource_version: str | None = None) -> None:
        self.calls.append(("patch_status", name))
        mv = self.mvs[(namespace, name)]
        if resource_version and resource_version != mv["metadata"].get("resourceVersion"):
            from kubernetes.client.exceptions import ApiException

            raise ApiException(status=409, reason="Conflict")
        mv["status"] = merge(mv.get("status") or {}, patch)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job else None

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.calls.append(("create_job", body["metadata"]["name"]))
        key = (namespace, body["metadata"]["name"])
        if key in self.jobs:
            return None
        self.jobs[key] = copy.deepcopy(body)
        return body

    def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete_job", name))
        self.jobs.pop((namespace, name), None)

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def events(monkeypatch):
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime_mod.kopf, "event",
                        lambda obj, *, type, reason, message: posted.append((type, reason)))
    return posted


def make(max_running: int = 0) -> tuple[Runtime, FakeKube]:
    kube = FakeKube()
    return Runtime(settings=settings(max_running=max_running), kube=kube), kube  # type: ignore[arg-type]


def add(kube: FakeKube, name: str, uid: str, second: int = 0) -> None:
    mv = musicvideo(name, uid=uid)
    mv["metadata"]["creationTimestamp"] = f"2025-01-01T12:00:{second:02}Z"
    kube.mvs[("default", name)] = mv


def snapshot(kube: FakeKube):
    entries = [queue_entry(mv) for mv in kube.mvs.values()]
    return lambda: entries  # a stale index: it never sees the operator's own writes


def test_a_new_render_is_accepted_and_its_job_created_before_the_status_says_so(events):
    rt, kube = make()
    add(kube, "demo", "u1")
    again = asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    assert again is None
    assert ("default", "demo-a1") in kube.jobs
    status = kube.mvs[("default", "demo")]["status"]
    assert status["phase"] == "Running" and status["jobName"] == "demo-a1"
    creates = kube.calls.index(("create_job", "demo-a1"))
    assert kube.calls[creates + 1] == ("patch_status", "demo")
    assert ("Normal", "JobCreated") in events


def test_concurrent_reconcilers_never_exceed_the_limit(events):
    rt, kube = make(max_running=2)
    for i in range(6):
        add(kube, f"mv{i}", f"u{i}", second=i)
    observed = snapshot(kube)

    async def all_of_them() -> None:
        await asyncio.gather(*(rt.reconcile("default", f"mv{i}", observed, LOG) for i in range(6)))

    asyncio.run(all_of_them())
    assert sorted(name for _, name in kube.jobs) == ["mv0-a1", "mv1-a1"]
    phases = [kube.mvs[("default", f"mv{i}")]["status"]["phase"] for i in range(6)]
    assert phases == ["Running", "Running", "Queued", "Queued", "Queued", "Queued"]


def test_an_existing_job_of_the_same_spec_is_adopted_after_a_restart(events):
    rt, kube = make()
    add(kube, "demo", "u1")
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    kube.mvs[("default", "demo")]["status"] = {k: v for k, v in kube.mvs[("default", "demo")]["status"].items()
                                               if k not in ("attempts", "jobName")}
    kube.mvs[("default", "demo")]["status"].update(phase="Pending", attempts=0)
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))  # "restarted" operator
    assert len(kube.jobs) == 1
    assert kube.mvs[("default", "demo")]["status"]["jobName"] == "demo-a1"


def test_a_job_name_taken_by_someone_else_is_skipped(events):
    rt, kube = make()
    add(kube, "demo", "u1")
    kube.jobs[("default", "demo-a1")] = {"metadata": {"name": "demo-a1", "ownerReferences": [{"uid": "other"}]}}
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    assert ("default", "demo-a2") in kube.jobs
    assert kube.mvs[("default", "demo")]["status"]["attempts"] == 2
    assert ("Warning", "JobNameTaken") in events


def test_a_deleted_musicvideo_ends_the_reconcile(events):
    rt, _ = make()
    assert asyncio.run(rt.reconcile("default", "gone", lambda: [], LOG)) is None


def test_queue_entries_roundtrip_through_the_index_shape():
    entry = queue_entry(musicvideo())
    assert isinstance(entry, QueueEntry) and entry.uid


def test_the_ledger_covers_what_the_index_has_not_seen_yet(events):
    """mv0 was Succeeded and is rendering again; the index still says Succeeded (takes no slot)."""
    rt, kube = make(max_running=1)
    add(kube, "mv0", "u0", second=0)
    add(kube, "mv1", "u1", second=1)
    stale = [QueueEntry("u0", "default", "mv0", "2025-01-01T12:00:00Z", "Succeeded"),
             QueueEntry("u1", "default", "mv1", "2025-01-01T12:00:01Z", "Pending")]

    async def both() -> None:
        await asyncio.gather(rt.reconcile("default", "mv0", lambda: stale, LOG),
                             rt.reconcile("default", "mv1", lambda: stale, LOG))

    asyncio.run(both())
    assert len(kube.jobs) == 1


def test_a_refused_job_is_reported_as_an_event_and_retried(events, monkeypatch):
    from kubernetes.client.exceptions import ApiException

    rt, kube = make()
    add(kube, "demo", "u1")

    def refuse(namespace, body):
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = '{"message": "exceeded quota: renders"}'
        raise exc

    monkeypatch.setattr(kube, "create_job", refuse)
    with pytest.raises(ApiException):
        asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    assert ("Warning", "JobCreateFailed") in events
    assert kube.mvs[("default", "demo")]["status"]["phase"] == "Pending"  # accepted recorded, no attempt
    assert not rt.ledger.entries(snapshot(kube)())[0].running  # slot given back


def test_a_job_refused_for_good_fails_the_render_with_the_servers_words(events, monkeypatch):
    """RBAC or an admission policy refuses the same Job however often it is asked: Failed at once (the
    deadline never started, so it would otherwise retry forever); a full quota is waited for, then the same."""
    from kubernetes.client.exceptions import ApiException

    def refusing(status: int, message: str):
        def refuse(namespace, body):
            exc = ApiException(status=status, reason="Refused")
            exc.body = json.dumps({"message": message})
            raise exc
        return refuse

    rt, kube = make()
    add(kube, "demo", "u1")
    monkeypatch.setattr(kube, "create_job", refusing(403, 'jobs.batch is forbidden: User cannot create'))
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    status = kube.mvs[("default", "demo")]["status"]
    assert status["phase"] == "Failed" and status["lastFailure"]["reason"] == "JobRefused"
    assert "jobs.batch is forbidden" in status["lastFailure"]["message"] and ("Warning", "JobRefused") in events

    rt, kube = make()
    add(kube, "quota", "u2")
    monkeypatch.setattr(kube, "create_job", refusing(403, "exceeded quota: renders, requested: count/jobs.batch=1"))
    clock = [1000.0]
    monkeypatch.setattr(runtime_mod.time, "monotonic", lambda: clock[0])
    with pytest.raises(ApiException):  # waited for: the quota frees as other work ends
        asyncio.run(rt.reconcile("default", "quota", snapshot(kube), LOG))
    assert kube.mvs[("default", "quota")]["status"]["phase"] == "Pending"
    clock[0] += 11 * 60  # past QUOTA_PATIENCE
    asyncio.run(rt.reconcile("default", "quota", snapshot(kube), LOG))
    status = kube.mvs[("default", "quota")]["status"]
    assert status["phase"] == "Failed" and "exceeded quota" in status["lastFailure"]["message"]


def test_a_new_render_costs_one_create_and_one_patch_when_the_watch_body_is_fresh(events):
    rt, kube = make()
    add(kube, "demo", "u1")
    body = copy.deepcopy(kube.mvs[("default", "demo")])
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG, seen=body))
    assert kube.calls == [("create_job", "demo-a1"), ("patch_status", "demo")]
    assert kube.mvs[("default", "demo")]["status"]["jobName"] == "demo-a1"


def test_a_watch_body_with_status_is_not_trusted(events):
    rt, kube = make()
    add(kube, "demo", "u1")
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG))
    stale = copy.deepcopy(kube.mvs[("default", "demo")])
    stale["status"] = {"phase": "Pending"}  # older than what the API server has
    kube.calls.clear()
    asyncio.run(rt.reconcile("default", "demo", snapshot(kube), LOG, seen=stale))
    assert kube.calls[0] == ("get_mv", "demo") and ("create_job", "demo-a1") not in kube.calls


def test_the_queue_publisher_writes_places_front_first_bounded_and_only_onto_the_version_it_saw(monkeypatch):
    """Places and estimates go to queued renders whose status lacks them or is off; at most QUEUE_PATCHES a
    pass, front of the queue first; a render whose version moved on meanwhile is left alone (409)."""
    monkeypatch.setattr(runtime_mod, "QUEUE_PATCHES", 3)
    rt, kube = make(max_running=1)
    add(kube, "run", "u-run", 0)
    kube.mvs[("default", "run")]["status"] = {"phase": "Running", "startedAt": "2025-01-01T12:00:00Z"}
    for i in range(1, 6):
        add(kube, f"q{i}", f"u-q{i}", i)
        kube.mvs[("default", f"q{i}")]["status"] = {"phase": "Queued"}
    for i, mv in enumerate(kube.mvs.values()):
        mv["metadata"]["resourceVersion"] = str(100 + i)
    entries = [queue_entry(mv) for mv in kube.mvs.values()]
    kube.mvs[("default", "q2")]["metadata"]["resourceVersion"] = "999"  # changed after the index saw it
    written = asyncio.run(rt.publish_queue(entries))
    places = {n: (kube.mvs[("default", n)]["status"].get("queuePosition"),
                  kube.mvs[("default", n)]["status"].get("estimatedStartSeconds")) for n in ("q1", "q2", "q3", "q4")}
    assert written == 2 and places["q2"] == (None, None) and places["q4"] == (None, None), places
    assert places["q1"][0] == 1 and places["q3"][0] == 3
    assert places["q1"][1] is not None and places["q3"][1] > places["q1"][1]
    # A second pass with what is now written: q1 and q3 are current, the rest get theirs.
    entries = [queue_entry(mv) for mv in kube.mvs.values()]
    assert asyncio.run(rt.publish_queue(entries)) == 3
    assert asyncio.run(rt.publish_queue([queue_entry(mv) for mv in kube.mvs.values()])) == 0


def test_a_freed_slot_wakes_the_reconcilers_next_in_line_not_all():
    """With 500 renders queued, a slot turnover wakes free slots + WAKE_MARGIN of them (the next in fair order),
    not every one (each would GET its MusicVideo and run an admission to learn it must wait)."""
    rt, _ = make(max_running=2)
    entries = [QueueEntry(uid=f"u{i}", namespace="default", name=f"q{i:03d}",
                          created=f"2025-01-01T00:{i // 60:02}:{i % 60:02}Z", phase="Queued") for i in range(500)]
    entries.append(QueueEntry(uid="r", namespace="default", name="run", created="2025-01-01T00:00:00Z", phase="Running"))
    rt._observed = lambda: entries
    for e in entries:
        rt.wakeups.register((e.namespace, e.name))
    rt.slot_freed()
    woken = sorted(name for (_, name), event in rt.wakeups._events.items() if event.is_set())
    assert woken == ["q000", "q001", "q002"], woken  # 1 free slot + WAKE_MARGIN, oldest first


def test_a_split_render_holds_a_slot_per_pod(events):
    """Issue 20: with 4 slots a render split over 3 pods leaves 1; a 2-pod render waits (told it needs 2), a
    1-pod render behind it too (no overtaking); the slots gauge counts pods, the running gauge renders."""
    from prometheus_client import REGISTRY

    rt, kube = make(max_running=4)
    for i, parallelism in enumerate((3, 2, 1)):
        add(kube, f"mv{i}", f"u{i}", second=i)
        kube.mvs[("default", f"mv{i}")]["spec"]["parallelism"] = parallelism
    observed = snapshot(kube)
    for i in range(3):
        asyncio.run(rt.reconcile("default", f"mv{i}", observed, LOG))
    phases = [kube.mvs[("default", f"mv{i}")]["status"]["phase"] for i in range(3)]
    assert phases == ["Running", "Queued", "Queued"]
    assert sorted(name for _, name in kube.jobs) == ["mv0-a1-p"]  # the split render's prepare stage
    assert "it needs 2" in kube.mvs[("default", "mv1")]["status"]["conditions"][0]["message"]
    rt.recount(queue_entry(mv) for mv in kube.mvs.values())
    assert REGISTRY.get_sample_value("vibecraft_render_slots_used") == 3
    assert REGISTRY.get_sample_value("vibecraft_renders_running") == 1
