"""Admission under the cluster-wide and per-namespace limits, oldest first."""

from vibecraft_operator.queue import Ledger, Limits, QueueEntry, admit, queue_entry

from tests.operator.operator_factories import musicvideo


def entry(uid, phase="Pending", namespace="a", created=None, **kw):
    return QueueEntry(uid=uid, namespace=namespace, name=uid, created=created or f"2025-01-01T00:00:{uid[-2:]}Z",
                      phase=phase, **kw)


def test_unlimited_admits_everyone():
    entries = [entry(f"mv{i:02}") for i in range(10)]
    assert all(admit(e, entries, Limits()).admitted for e in entries)


def test_cluster_limit_admits_the_oldest_waiting_first():
    running = [entry("mv01", "Running"), entry("mv02", "Running")]
    waiting = [entry("mv05", "Queued"), entry("mv03", "Queued"), entry("mv04")]
    limits = Limits(cluster=3)
    admitted = [e.uid for e in waiting if admit(e, running + waiting, limits).admitted]
    assert admitted == ["mv03"]
    refused = admit(waiting[0], running + waiting, limits)
    assert not refused.admitted and "3 may run cluster-wide" in refused.message


def test_full_cluster_admits_nobody():
    entries = [entry("mv01", "Running"), entry("mv02")]
    assert not admit(entries[1], entries, Limits(cluster=1)).admitted


def test_a_full_namespace_does_not_block_other_namespaces():
    entries = [
        entry("mv01", "Running", namespace="a"),
        entry("mv02", namespace="a"),
        entry("mv03", namespace="b"),
    ]
    limits = Limits(cluster=5, namespace=1)
    assert not admit(entries[1], entries, limits).admitted
    assert "1 may run in this namespace" in admit(entries[1], entries, limits).message
    assert admit(entries[2], entries, limits).admitted


def test_suspended_kueue_and_finished_renders_take_no_slot_and_are_not_admitted_here():
    entries = [
        entry("mv01", "Succeeded"),
        entry("mv02", "Failed"),
        entry("mv03", "Pending", suspended=True),
        entry("mv04", "Queued", kueue=True),
        entry("mv05"),
    ]
    assert admit(entries[4], entries, Limits(cluster=1)).admitted
    assert not admit(entries[2], entries, Limits(cluster=1)).admitted


def test_equal_timestamps_break_ties_by_namespace_and_name():
    same = "2025-01-01T00:00:00Z"
    entries = [entry("b", created=same), entry("a", created=same)]
    assert admit(entries[1], entries, Limits(cluster=1)).admitted
    assert not admit(entries[0], entries, Limits(cluster=1)).admitted


def test_the_target_is_taken_from_the_fresh_read_not_the_index():
    stale = [entry("mv01", "Queued"), entry("mv02", "Pending")]
    fresh = entry("mv02", "Pending")
    assert not admit(fresh, stale, Limits(cluster=1)).admitted  # mv01 is older
    assert admit(entry("mv01", "Queued"), stale, Limits(cluster=1)).admitted


def test_ledger_overrides_stale_index_phases_and_drops_vanished_objects():
    ledger = Ledger()
    ledger.note("mv01", "Running")
    ledger.note("gone", "Running")
    entries = ledger.entries([entry("mv01", "Queued"), entry("mv02")])
    assert [e.phase for e in entries] == ["Running", "Pending"]
    assert not admit(entries[1], entries, Limits(cluster=1)).admitted
    assert ledger.entries([]) == []
    assert ledger.entries([entry("gone", "Queued")])[0].phase == "Queued"  # forgotten above


def test_queue_entry_from_a_body():
    mv = musicvideo(status={"phase": "Queued"}, queueName="q")
    e = queue_entry(mv)
    assert (e.namespace, e.name, e.phase, e.kueue, e.suspended) == ("default", "demo", "Queued", True, False)
    assert e.created == "2025-01-01T12:00:00Z"
    assert queue_entry(musicvideo(suspend=True)).suspended


def resumed_after_suspend():
    """A render suspended while running (its Job deleted), then spec.suspend cleared again."""
    from tests.operator.operator_factories import applied, job, step

    mv = musicvideo()
    mv = applied(mv, step(mv))
    mv = applied(mv, step(mv))  # attempt 1 runs
    mv["spec"]["suspend"], mv["metadata"]["generation"] = True, 2
    mv = applied(mv, step(mv, job_=job(mv)))
    mv["spec"]["suspend"], mv["metadata"]["generation"] = False, 3
    return mv


def test_a_resumed_render_wants_a_slot_and_takes_a_free_one_at_once():
    """Resume with nothing else running: Resumed then JobCreated, never `Queued: waiting for older renders`.

    What the runtime does in one step: admission from the fresh read of the object itself, then
    decide_folded() (which folds the Resumed step into the launch after it).
    """
    from vibecraft_operator.reconcile import Observation, decide_folded

    from tests.operator.operator_factories import T0, settings

    mv = resumed_after_suspend()
    entry = queue_entry(mv)
    for limits in (Limits(), Limits(cluster=1), Limits(namespace=1)):
        admission = admit(entry, [entry], limits)
        plan = decide_folded(Observation(mv, None, [], T0, admission), settings())
        assert [e.reason for e in plan.events] == ["Resumed", "JobCreated"], plan.events
        assert plan.create_job is not None and plan.status["phase"] == "Running"
    assert entry.waiting and not entry.suspended  # its Suspended condition is stale once spec.suspend is cleared


def test_a_resumed_render_queues_behind_older_waiting_renders_only():
    mv = resumed_after_suspend()
    entry = queue_entry(mv)
    older = QueueEntry(uid="older", namespace="default", name="older", created="2024-01-01T00:00:00Z", phase="Queued")
    younger = QueueEntry(uid="younger", namespace="default", name="younger", created="2026-01-01T00:00:00Z",
                         phase="Pending")
    assert not admit(entry, [older, entry], Limits(cluster=1)).admitted
    assert admit(entry, [younger, entry], Limits(cluster=1)).admitted
    assert not admit(younger, [younger, entry], Limits(cluster=1)).admitted  # the resumed one is older
    assert admit(older, [older, entry], Limits(cluster=1)).admitted
