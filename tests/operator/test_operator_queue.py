"""Admission under the cluster-wide and per-namespace limits: fair between namespaces, oldest first within one."""

from datetime import UTC, datetime

from vibecraft_operator.queue import (
    Ledger,
    Limits,
    QueueEntry,
    admit,
    fair_order,
    forecast,
    queue_entry,
    typical_duration,
)

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


def test_a_tenant_flooding_the_queue_does_not_make_another_wait_for_all_of_it():
    """A runs 4 (the cluster's limit) and queues 10 more; then B queues one: B's takes the next free slot."""
    a_running = [entry(f"a{i:02}", "Running", namespace="a") for i in range(4)]
    a_waiting = [entry(f"a{i:02}", "Queued", namespace="a") for i in range(4, 14)]
    b = entry("b99", "Pending", namespace="b", created="2025-01-01T00:01:00Z")  # the newest of all
    limits = Limits(cluster=4)
    assert not admit(b, a_running + a_waiting + [b], limits).admitted  # the cluster is full
    one_done = a_running[1:] + a_waiting + [b]  # one of A's renders finished
    assert admit(b, one_done, limits).admitted
    assert not any(admit(e, one_done, limits).admitted for e in a_waiting)
    assert [e.uid for e in fair_order(one_done, limits)][:3] == ["b99", "a04", "a05"]


def test_fair_order_alternates_between_tenants_by_what_they_run_then_age():
    entries = [entry("a01", namespace="a"), entry("a02", namespace="a"), entry("a03", namespace="a"),
               entry("b04", namespace="b"), entry("c05", "Running", namespace="c"), entry("c06", namespace="c")]
    # c already runs one: a and b each get one first; then a and c run one each, and c got its slot longer
    # ago (a just got one): c, then a again.
    assert [e.uid for e in fair_order(entries, Limits())] == ["a01", "b04", "c06", "a02", "a03"]
    capped = [e.uid for e in fair_order(entries, Limits(namespace=1))]
    assert capped == ["a01", "b04"]  # c is at its cap; a gets one


def test_with_one_slot_the_slots_go_round_between_tenants():
    """Nobody runs when the slot frees, so running counts tie: the tenant that got a slot least recently
    goes first, however old the other's queue is."""
    a_done = entry("a00", "Succeeded", namespace="a", started="2025-01-01T00:00:30Z")
    a_waiting = [entry(f"a{i:02d}", "Queued", namespace="a") for i in range(1, 5)]
    b = entry("b99", "Queued", namespace="b", created="2025-01-01T00:01:00Z")
    limits = Limits(cluster=1)
    assert admit(b, [a_done, *a_waiting, b], limits).admitted
    assert not admit(a_waiting[0], [a_done, *a_waiting, b], limits).admitted
    b_done = entry("b99", "Succeeded", namespace="b", started="2025-01-01T00:01:05Z")
    assert admit(a_waiting[0], [a_done, *a_waiting, b_done], limits).admitted  # then A again


NOW = datetime(2025, 1, 1, 1, 0, 0, tzinfo=UTC)


def test_forecast_gives_places_in_fair_order_and_starts_from_slot_turnover():
    """Two slots, both running (one ends in 100 s by the renderer's ETA, one started 60 s ago of a typical
    300): A's three renders and B's one take places round robin, starting as slots free."""
    entries = [
        entry("r1", "Running", eta=100.0),
        entry("r2", "Running", started="2025-01-01T00:59:00Z"),
        *(entry(f"a{i:02}", "Queued", namespace="a") for i in range(3)),
        entry("b09", "Queued", namespace="b"),
    ]
    places = forecast(entries, Limits(cluster=2), NOW, typical=300.0)
    assert {uid: (f.position, f.start_seconds) for uid, f in places.items()} == {
        "b09": (1, 100),  # B runs nothing: the first slot to free is B's, although its render is newest
        "a00": (2, 240),  # the second slot frees at 300 - 60
        "a01": (3, 400),  # b09's slot again (100 + 300)
        "a02": (4, 540),
    }


def test_forecast_waits_for_the_namespace_cap_and_is_immediate_without_limits():
    entries = [entry("r1", "Running", namespace="a", eta=50.0), entry("q01", "Queued", namespace="a"),
               entry("q02", "Queued", namespace="b")]
    capped = forecast(entries, Limits(cluster=0, namespace=1), NOW, typical=300.0)
    assert (capped["q01"].start_seconds, capped["q02"].start_seconds) == (50, 0)
    assert {f.start_seconds for f in forecast(entries, Limits(), NOW, 300.0).values()} == {0}


def test_typical_duration_is_the_median_of_recent_successes():
    done = [entry(f"s{i:02}", "Succeeded", started="2025-01-01T00:00:00Z", finished=f"2025-01-01T00:0{m}:00Z")
            for i, m in enumerate((1, 2, 9))]
    failed = entry("f01", "Failed", started="2025-01-01T00:00:00Z", finished="2025-01-01T00:05:00Z")
    assert typical_duration([*done, failed], default=300.0) == 120.0
    assert typical_duration([failed], default=300.0) == 300.0


def test_queue_entry_reads_what_the_publisher_wrote():
    body = musicvideo(status={"phase": "Queued", "queuePosition": 3, "estimatedStartSeconds": 120,
                              "progress": {"etaSeconds": 7.5}})
    e = queue_entry(body)
    assert (e.position, e.estimate, e.eta) == (3, 120, 7)


def test_a_refused_render_learns_its_place_in_line():
    entries = [entry("mv01", "Running"), entry("mv02", "Queued"), entry("mv03", "Queued", namespace="b"),
               entry("mv04")]
    places = [admit(e, entries, Limits(cluster=1)).position for e in entries[1:]]
    assert places == [2, 1, 3]  # b runs nothing, so its render is next; then a's by age


def test_a_split_render_takes_a_slot_per_pod():
    """Issue 20: a render split over 3 pods holds 3 slots of 4; the next 2-pod render waits for them, and the
    1-pod render behind it does not overtake (no starving wide renders), though 1 slot is free."""
    limits = Limits(cluster=4, per_render=4)
    entries = [entry("mv01", "Running", slots=3), entry("mv02", "Queued", slots=2), entry("mv03", "Queued")]
    wide, narrow = (admit(e, entries, limits) for e in entries[1:])
    assert not wide.admitted and wide.position == 1 and "it needs 2" in wide.message
    assert not narrow.admitted and narrow.position == 2
    done = [entry("mv01", "Succeeded", slots=3), *entries[1:]]
    assert admit(entries[1], done, limits).admitted and admit(entries[2], done, limits).admitted


def test_slots_are_capped_so_a_wide_render_can_always_start():
    """spec.parallelism 16 under a cluster limit of 2 needs 2 slots, not 16 (it would wait forever); auto
    before its chunks are known reserves per_render; with no cluster limit anyone starts."""
    limits = Limits(cluster=2, per_render=4)
    assert limits.slots(entry("mv01", slots=16)) == 2
    assert Limits(cluster=8, per_render=4).slots(entry("mv01", slots=0)) == 4
    assert Limits(per_render=4).slots(entry("mv01", slots=16)) == 4
    assert admit(entry("mv01", slots=16), [entry("mv01", slots=16)], limits).admitted
    assert admit(entry("mv02", slots=5), [entry("mv01", "Running", slots=5), entry("mv02", slots=5)], Limits()).admitted


def test_the_namespace_cap_counts_slots():
    limits = Limits(cluster=10, namespace=3, per_render=4)
    entries = [entry("mv01", "Running", slots=2), entry("mv02", "Queued", slots=2), entry("mv03", "Queued",
                                                                                           namespace="b", slots=3)]
    assert not admit(entries[1], entries, limits).admitted  # 2 + 2 > 3
    assert admit(entries[2], entries, limits).admitted


def test_slots_of_a_body_follow_spec_then_status_chunks():
    assert queue_entry(musicvideo()).slots == 1
    assert queue_entry(musicvideo(parallelism=3)).slots == 3
    assert queue_entry(musicvideo(parallelism=3, preview=True)).slots == 1
    assert queue_entry(musicvideo(parallelism="auto")).slots == 0
    assert queue_entry(musicvideo(parallelism="auto", status={"phase": "Running", "chunks": 2})).slots == 2


def test_forecast_starts_a_wide_render_when_its_last_slot_frees():
    """Two slots: one frees at 100 s, the other at 240 s; a 2-pod render starts at 240, the 1-pod render
    behind it when the 2-pod one ends (540), not at 100 (no overtaking in the simulation either)."""
    entries = [entry("r1", "Running", eta=100.0), entry("r2", "Running", started="2025-01-01T00:59:00Z"),
               entry("q01", "Queued", slots=2), entry("q02", "Queued")]
    places = forecast(entries, Limits(cluster=2, per_render=4), NOW, typical=300.0)
    assert {uid: (f.position, f.start_seconds) for uid, f in places.items()} == {"q01": (1, 240), "q02": (2, 540)}


def test_the_ledger_gives_back_an_auto_renders_slots_before_the_index_sees_them():
    """An auto render reserved 4 slots; its prepare stage fixed 2 chunks: the 2 it gave back are free at once
    for the next render, not after the watch delivers the new status (nothing else would wake that render)."""
    limits = Limits(cluster=4, per_render=4)
    stale = [entry("mv01", "Running", slots=0), entry("mv02", "Queued", slots=2)]
    ledger = Ledger()
    assert not admit(stale[1], ledger.entries(stale), limits).admitted
    ledger.note_slots("mv01", 2)
    assert admit(stale[1], ledger.entries(stale), limits).admitted
    caught_up = [entry("mv01", "Running", slots=2), stale[1]]
    assert ledger.entries(caught_up) == caught_up and ledger._slots == {}  # the note is dropped
    ledger.note_slots("mv01", 3)
    ledger.note_slots("mv01", None)  # cleared (a spec edit): the index's view holds again
    assert ledger.entries(stale)[0].slots == 0
