"""The reconciler's decisions, step by step, on MusicVideo/Job/Pod dicts (no cluster)."""

from datetime import timedelta

import pytest
from vibecraft_common.resource import ANNOTATION_DELETE_OUTPUTS
from vibecraft_common.status import QUEUE_FIELDS
from vibecraft_operator.queue import Admission
from vibecraft_operator.reconcile import (
    Cleanup,
    Observation,
    Outcome,
    Outputs,
    cancel,
    cleanup_on_delete,
    decide,
    needs_reconciler,
    render_stopped,
    wants_outputs,
)

from tests.operator.operator_factories import T0, applied, job, musicvideo, pod, settings, step


def accepted(**kw):
    mv = musicvideo(**kw)
    return applied(mv, step(mv))


def running(memory=None, **kw):
    """A MusicVideo whose attempt 1 Job was just created."""
    mv = accepted(**kw)
    plan = step(mv)
    assert plan.create_job is not None
    return applied(mv, plan)


def cond(mv, type_):
    return next(c for c in mv["status"]["conditions"] if c["type"] == type_)


def test_first_sight_accepts_with_zero_counters():
    mv = musicvideo()
    plan = step(mv)
    assert plan.status["phase"] == "Pending"
    assert plan.status["attempts"] == 0 and plan.status["failedAttempts"] == 0
    assert plan.status["specHash"] and plan.status["observedGeneration"] == 1
    assert plan.again == 0 and plan.create_job is None


def test_admitted_render_creates_attempt_1():
    mv = accepted(video={"width": 640, "height": 360, "fps": 30})
    plan = step(mv)
    job = plan.create_job
    assert job["metadata"]["name"] == "demo-a1"
    assert plan.status["phase"] == "Running" and plan.status["attempts"] == 1
    assert plan.status["jobName"] == "demo-a1"
    assert plan.status["memoryLimit"] == "571Mi"
    assert plan.status["startedAt"] == "2025-01-01T12:00:00Z"
    assert plan.first_job
    assert [e.reason for e in plan.events] == ["JobCreated"]
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "571Mi", "cpu": "1"}


def test_spec_memory_is_used_as_is():
    mv = running(resources={"memory": "1Gi", "maxMemory": "2Gi", "cpu": "2"})
    assert mv["status"]["memoryLimit"] == "1Gi"


def test_not_admitted_waits_queued_without_churn():
    mv = accepted()
    plan = step(mv, admitted=False)
    assert plan.status["phase"] == "Queued" and plan.create_job is None and plan.again is None
    assert [e.reason for e in plan.events] == ["Queued"]
    mv = applied(mv, plan)
    assert step(mv, admitted=False).status == {}
    assert step(mv, admitted=True).create_job is not None


def test_a_render_that_queues_gets_its_place_in_the_same_patch():
    mv = accepted()
    obs = Observation(mv, None, [], T0, Admission(False, "Queued", "waiting", position=3))
    plan = decide(obs, settings())
    assert (plan.status["phase"], plan.status["queuePosition"]) == ("Queued", 3)


def test_a_queued_render_keeps_its_queue_place_until_it_starts_then_loses_it():
    mv = applied(accepted(), step(accepted(), admitted=False))
    mv["status"].update(queuePosition=2, estimatedStartSeconds=60, queueUpdatedAt="2025-01-01T12:00:00Z")
    assert step(mv, admitted=False).status == {}  # the publisher's fields stay while it waits
    plan = step(mv, admitted=True)
    assert plan.status["phase"] == "Running"
    assert {k: plan.status[k] for k in QUEUE_FIELDS} == dict.fromkeys(QUEUE_FIELDS)
    # A place written after the reconciler's view (so not in it) is cleared by the start all the same.
    assert step(applied(accepted(), step(accepted(), admitted=False)), admitted=True).status["queuePosition"] is None


def test_restart_safety_same_observation_same_job_name():
    mv = accepted()
    first, second = step(mv), step(mv)  # as if the operator died between create and status patch
    assert first.create_job == second.create_job


def test_pod_activity_updates_progressing_once():
    mv = running()
    j = job(mv)
    plan = step(mv, job_=j, pods=[pod(phase="Running")])
    assert cond(applied(mv, plan), "Progressing")["reason"] == "Rendering"
    assert not plan.events
    mv = applied(mv, plan)
    assert step(mv, job_=j, pods=[pod(phase="Running")]).status == {}
    stuck = pod(phase="Pending", waiting="ImagePullBackOff", message="no such image")
    plan = step(mv, job_=j, pods=[stuck])
    assert cond(applied(mv, plan), "Progressing")["reason"] == "ImagePullBackOff"
    assert [e.type for e in plan.events] == ["Warning"]


def test_complete_job_succeeds_with_outputs():
    mv = running()
    outputs = Outputs({"videoUrl": "s3://vibecraft/videos/demo/video.mp4", "sizeBytes": 123},
                      {"tempo": 120.0, "beats": 240, "sections": []})
    obs = Observation(mv, job(mv, condition="Complete"), [], T0 + timedelta(minutes=3), Admission(True), outputs)
    plan = decide(obs, settings())
    mv = applied(mv, plan)
    status = mv["status"]
    assert status["phase"] == "Succeeded" and plan.outcome is Outcome.SUCCEEDED
    assert status["output"]["sizeBytes"] == 123 and status["analysis"]["tempo"] == 120.0
    assert status["progress"]["percent"] == 100 and status["finishedAt"] == "2025-01-01T12:03:00Z"
    assert cond(mv, "Ready")["status"] == "True" and cond(mv, "Progressing")["status"] == "False"
    assert "in 180s" in plan.events[0].message


def test_success_without_s3_still_succeeds_with_urls():
    mv = running()
    plan = step(mv, job_=job(mv, condition="Complete"))
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["output"]["videoUrl"] == "s3://vibecraft/videos/demo/video.mp4"
    assert plan.status["output"]["thumbnailUrl"] == "s3://vibecraft/videos/demo/thumbnail.jpg"


def failed_job(mv, attempt=1, reason="BackoffLimitExceeded"):
    return job(mv, attempt, condition="Failed", reason=reason)


def test_oom_retries_at_once_with_one_and_a_half_times_the_memory():
    mv = running(resources={"memory": "1Gi", "maxMemory": "2Gi"})
    plan = step(mv, job_=failed_job(mv), pods=[pod(exit_code=137, reason="OOMKilled")])
    assert plan.outcome is Outcome.OOM_RETRY and plan.again == 0
    assert plan.status["memoryLimit"] == "1536Mi" and plan.status["failedAttempts"] == 0
    assert plan.status["lastFailure"]["reason"] == "OOMKilled" and plan.status["lastFailure"]["attempt"] == 1
    assert "retrying with 1536Mi" in plan.events[0].message
    mv = applied(mv, plan)
    plan = step(mv, job_=failed_job(mv))
    assert plan.create_job["metadata"]["name"] == "demo-a2"
    limits = plan.create_job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "1536Mi"
    mv = applied(mv, plan)
    assert mv["status"]["attempts"] == 2 and "nextAttemptAt" not in mv["status"]
    # second OOM reaches the cap, the third fails
    plan = step(mv, job_=failed_job(mv, 2), pods=[pod(exit_code=137)])
    assert plan.status["memoryLimit"] == "2048Mi"
    mv = applied(mv, plan)
    mv = applied(mv, step(mv, job_=failed_job(mv, 2)))
    plan = step(mv, job_=failed_job(mv, 3), pods=[pod(exit_code=137, reason="OOMKilled")])
    assert plan.status["phase"] == "Failed" and plan.outcome is Outcome.FAILED
    assert cond(applied(mv, plan), "Ready")["reason"] == "OOMKilled"
    assert "already at maxMemory 2Gi" in plan.status["progress"]["message"]


def test_render_errors_retry_with_backoff_then_fail():
    mv = running(retries=2)
    err = [pod(exit_code=11, message="download failed: 503")]
    plan = step(mv, job_=failed_job(mv), pods=err)
    assert plan.outcome is Outcome.RETRY and plan.status["failedAttempts"] == 1 and plan.again == 10
    assert plan.status["nextAttemptAt"] == "2025-01-01T12:00:10Z"
    mv = applied(mv, plan)
    early = step(mv, job_=failed_job(mv), now=T0 + timedelta(seconds=4))
    assert early.create_job is None and early.again == 6 and early.status == {}
    plan = step(mv, job_=failed_job(mv), now=T0 + timedelta(seconds=10))
    assert plan.create_job["metadata"]["name"] == "demo-a2"
    mv = applied(mv, plan)
    plan = step(mv, job_=failed_job(mv, 2), pods=err, now=T0 + timedelta(seconds=20))
    assert plan.status["failedAttempts"] == 2 and plan.again == 20  # backoff doubles
    mv = applied(mv, plan)
    mv = applied(mv, step(mv, job_=failed_job(mv, 2), now=T0 + timedelta(seconds=40)))
    plan = step(mv, job_=failed_job(mv, 3), pods=err, now=T0 + timedelta(seconds=50))
    assert plan.status["phase"] == "Failed"
    assert plan.status["lastFailure"]["reason"] == "DownloadFailed"
    assert plan.status["lastFailure"]["message"] == "download failed: 503"
    assert plan.status["progress"]["message"] == "download failed: 503 (after 2 retries)"


def test_permanent_errors_fail_at_once():
    mv = running(retries=5)
    plan = step(mv, job_=failed_job(mv), pods=[pod(exit_code=10, message="not audio: text/html")])
    assert plan.status["phase"] == "Failed" and plan.status["lastFailure"]["reason"] == "BadAudio"
    assert plan.status["lastFailure"]["exitCode"] == 10


def test_a_missing_input_fails_at_once_without_retries():
    mv = running(retries=2)
    missing = pod(exit_code=15, message="s3://vibecraft/songs/demo.ogg not found (no such object)")
    plan = step(mv, job_=failed_job(mv), pods=[missing])
    assert plan.status["phase"] == "Failed" and plan.create_job is None and plan.again is None
    failure = plan.status["lastFailure"]
    assert (failure["reason"], failure["kind"], failure["exitCode"]) == ("InputNotFound", "permanent", 15)
    assert plan.status["progress"]["message"] == "s3://vibecraft/songs/demo.ogg not found (no such object)"


def test_disruptions_retry_without_using_the_budget():
    mv = running(retries=0)
    evicted = pod(exit_code=137, conditions=[{"type": "DisruptionTarget", "status": "True",
                                               "reason": "PreemptionByScheduler"}])
    plan = step(mv, job_=failed_job(mv), pods=[evicted])
    assert plan.outcome is Outcome.DISRUPTED and plan.status["failedAttempts"] == 0 and plan.again == 0
    assert plan.status["phase"] == "Running"


def test_a_vanished_job_never_leaves_the_render_running_forever():
    mv = running(retries=0)
    plan = step(mv, job_=None)
    assert plan.status["lastFailure"]["reason"] == "JobVanished" and plan.outcome is Outcome.DISRUPTED
    mv = applied(mv, plan)
    plan = step(mv, job_=None)
    assert plan.create_job["metadata"]["name"] == "demo-a2"


@pytest.mark.parametrize("stuck", [
    pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "message": "0/1 nodes are available: 1 Insufficient memory."}]),
    pod(phase="Pending", waiting="ImagePullBackOff", message="no such image"),
    pod(phase="Pending", waiting="CreateContainerConfigError", message='secret "vibecraft-s3" not found'),
])
def test_a_pod_that_cannot_start_frees_its_slot_after_the_startup_timeout(stuck):
    mv = running()
    early = step(mv, job_=job(mv), pods=[stuck], now=T0 + timedelta(minutes=5))
    assert early.status.get("phase") is None and early.delete_job is None  # reported, still waited for
    late = step(mv, job_=job(mv), pods=[stuck], now=T0 + timedelta(minutes=11))  # past the default 10 min
    assert late.status["phase"] == "Failed" and late.delete_job == "demo-a1" and late.outcome is Outcome.FAILED
    failure = late.status["lastFailure"]
    assert failure["reason"] in ("Unschedulable", "ImagePullBackOff", "CreateContainerConfigError")
    assert "600s" in failure["message"]
    patient = step(mv, job_=job(mv), pods=[stuck], now=T0 + timedelta(minutes=11),
                   cfg=settings(startup_timeout_seconds=3600))
    assert patient.status.get("phase") is None


def test_a_job_gone_after_it_rendered_is_a_success_not_a_retry():
    """Deleted by hand, or by its TTL while the operator was down: the outputs decide."""
    mv = running()
    assert wants_outputs(mv, None)  # only S3 can tell
    started = T0  # running()'s startedAt
    outputs = Outputs({"videoUrl": "s3://vibecraft/videos/demo/video.mp4", "sizeBytes": 123},
                      {"tempo": 120.0}, video_written=started + timedelta(minutes=3))
    plan = decide(Observation(mv, None, [], T0 + timedelta(minutes=5), Admission(True), outputs), settings())
    assert plan.status["phase"] == "Succeeded" and plan.create_job is None and plan.outcome is Outcome.SUCCEEDED
    assert plan.status["output"]["sizeBytes"] == 123
    assert "JobVanished" in [e.reason for e in plan.events]
    # A video older than this render (an earlier spec's, before a restart) proves nothing: retried as before.
    old = Outputs(outputs.output, None, video_written=started - timedelta(minutes=1))
    plan = decide(Observation(mv, None, [], T0 + timedelta(minutes=5), Admission(True), old), settings())
    assert plan.status["lastFailure"]["reason"] == "JobVanished" and plan.status["phase"] == "Running"


def test_suspend_deletes_the_job_and_resume_starts_a_new_attempt():
    mv = running()
    j = job(mv)
    mv["spec"]["suspend"] = True
    mv["metadata"]["generation"] = 2
    plan = step(mv, job_=j)
    assert plan.delete_job == "demo-a1"
    mv = applied(mv, plan)
    assert mv["status"]["phase"] == "Pending" and cond(mv, "Suspended")["status"] == "True"
    assert step(mv, job_=job(mv, deleting=True)).status == {}
    assert not needs_reconciler(mv)
    mv["spec"]["suspend"] = False
    mv["metadata"]["generation"] = 3
    assert needs_reconciler(mv)
    plan = step(mv, job_=job(mv, deleting=True))
    assert [e.reason for e in plan.events] == ["Resumed"]
    mv = applied(mv, plan)
    waiting = step(mv, job_=job(mv, deleting=True))
    assert waiting.create_job is None and waiting.delete_job is None and waiting.again == 2.0
    plan = step(mv, job_=None)
    assert plan.create_job["metadata"]["name"] == "demo-a2"


def test_suspend_before_start_never_creates_a_job():
    mv = accepted(suspend=True)
    plan = step(mv)
    assert plan.create_job is None and plan.status["phase"] == "Pending"
    assert cond(applied(mv, plan), "Suspended")["reason"] == "Suspended"


def test_spec_change_while_running_restarts_as_a_new_attempt():
    mv = running(retries=1)
    mv["status"]["failedAttempts"] = 1
    j = job(mv)
    mv["spec"]["style"] = {"backend": "procedural", "seed": 7}
    mv["metadata"]["generation"] = 2
    plan = step(mv, job_=j)
    assert plan.delete_job == "demo-a1" and plan.status["phase"] == "Pending"
    assert plan.status["failedAttempts"] == 0 and plan.status["memoryLimit"] is None
    assert plan.status["observedGeneration"] == 2
    assert plan.status["chunks"] is None and plan.status["stage"] is None  # the new spec decides its slots
    mv = applied(mv, plan)
    assert step(mv, job_=job(mv, deleting=True)).create_job is None
    plan = step(mv, job_=None)
    assert plan.create_job["metadata"]["name"] == "demo-a2"


def test_spec_change_after_success_renders_again_and_settled_terminal_is_idle():
    mv = running()
    mv = applied(mv, step(mv, job_=job(mv, condition="Complete")))
    assert step(mv, job_=job(mv, condition="Complete")).status == {}
    assert not needs_reconciler(mv)
    mv["metadata"]["generation"] = 2
    mv["spec"]["suspend"] = True  # not a spec change for rendering
    assert needs_reconciler(mv)
    plan = step(mv)
    assert plan.status == {"observedGeneration": 2}
    mv = applied(mv, plan)
    mv["spec"]["retries"] = 5
    mv["spec"]["suspend"] = False
    mv["metadata"]["generation"] = 3
    plan = step(mv, job_=job(mv, condition="Complete"))
    assert plan.status["phase"] == "Pending" and plan.delete_job is None
    assert plan.status["output"] is None


def test_a_queued_rerender_never_mistakes_the_old_job_for_its_own():
    mv = running()
    done = job(mv, condition="Complete")
    mv = applied(mv, step(mv, job_=done))
    mv["spec"]["video"] = {"fps": 24, "cutEvery": "bar", "preset": "veryfast"}
    mv["metadata"]["generation"] = 2
    mv = applied(mv, step(mv, job_=done))
    mv = applied(mv, step(mv, job_=done, admitted=False))
    assert mv["status"]["phase"] == "Queued" and mv["status"]["jobName"] == "demo-a1"
    assert step(mv, job_=done, admitted=False).status == {}
    plan = step(mv, job_=done, admitted=True)
    assert plan.create_job["metadata"]["name"] == "demo-a2"


def test_a_queued_resumed_render_does_not_see_its_deleted_job_as_vanished():
    mv = running()
    mv["spec"]["suspend"] = True
    mv = applied(mv, step(mv, job_=job(mv)))
    mv["spec"]["suspend"] = False
    mv = applied(mv, step(mv))
    mv = applied(mv, step(mv, admitted=False))
    assert mv["status"]["phase"] == "Queued"
    plan = step(mv, admitted=False)
    assert plan.status == {} and not plan.events


def test_kueue_job_is_created_suspended_and_follows_kueue():
    mv = accepted(queueName="renders")
    plan = step(mv, admitted=False)  # our own queue does not apply
    assert plan.create_job["spec"]["suspend"] is True and plan.status["phase"] == "Queued"
    assert "startedAt" not in plan.status
    mv = applied(mv, plan)
    assert step(mv, job_=job(mv, suspended=True)).status == {}
    plan = step(mv, job_=job(mv, suspended=False))
    assert plan.status["phase"] == "Running" and plan.status["startedAt"]
    mv = applied(mv, plan)
    plan = step(mv, job_=job(mv, suspended=True))
    assert plan.status["phase"] == "Queued" and plan.events[0].reason == "Requeued"


def test_deadline_used_up_before_the_next_attempt_fails():
    mv = running(deadlineSeconds=60)
    mv = applied(mv, step(mv, job_=failed_job(mv), pods=[pod(exit_code=1)]))
    plan = step(mv, job_=failed_job(mv), now=T0 + timedelta(seconds=61))
    assert plan.status["phase"] == "Failed" and plan.create_job is None
    assert cond(applied(mv, plan), "Ready")["reason"] == "DeadlineExceeded"


def test_deadline_guard_deletes_an_overdue_job():
    mv = running(deadlineSeconds=60)
    plan = step(mv, job_=job(mv), now=T0 + timedelta(seconds=200))
    assert plan.status["phase"] == "Failed" and plan.delete_job == "demo-a1"


def _outgrown(mv):
    evicted = pod(exit_code=137, reason="Error", pod_reason="Evicted", conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet", "message": "evicted"}])
    evicted["status"]["message"] = 'Usage of EmptyDir volume "scratch" exceeds the limit "10Gi". '
    return evicted


def test_a_pod_outgrowing_its_scratch_ends_the_attempt_though_the_job_would_replace_it():
    mv = running(retries=1)
    plan = step(mv, job_=job(mv), pods=[_outgrown(mv)])  # the Job itself is still active
    assert plan.delete_job == "demo-a1" and plan.outcome is Outcome.RETRY
    assert plan.status["failedAttempts"] == 1 and plan.status["lastFailure"]["reason"] == "DiskFull"
    # The retry budget runs out like any render error's: then Failed, saying why.
    mv = applied(mv, plan)
    mv = applied(mv, step(mv, now=T0 + timedelta(seconds=plan.again + 1)))
    last = step(mv, job_=job(mv, attempt=2), pods=[_outgrown(mv)], now=T0 + timedelta(seconds=60))
    assert last.status["phase"] == "Failed" and last.status["lastFailure"]["reason"] == "DiskFull"
    assert 'exceeds the limit "10Gi"' in last.status["lastFailure"]["message"] and last.delete_job == "demo-a2"


def test_job_deadline_exceeded_fails_without_retry():
    mv = running(retries=3)
    plan = step(mv, job_=failed_job(mv, reason="DeadlineExceeded"))
    assert plan.status["phase"] == "Failed" and plan.status["lastFailure"]["reason"] == "DeadlineExceeded"


def test_later_job_is_launched_with_the_remaining_deadline():
    mv = running(deadlineSeconds=600)
    mv = applied(mv, step(mv, job_=failed_job(mv), pods=[pod(exit_code=1)]))
    plan = step(mv, job_=failed_job(mv), now=T0 + timedelta(seconds=100))
    assert plan.create_job["spec"]["activeDeadlineSeconds"] == 500


def test_needs_reconciler():
    assert needs_reconciler(musicvideo())
    deleting = musicvideo(status={"phase": "Running", "observedGeneration": 1})
    deleting["metadata"]["deletionTimestamp"] = "2025-01-01T12:00:00Z"
    assert needs_reconciler(deleting)  # holds the finalizer until Cancelled is written
    deleting["status"]["phase"] = "Succeeded"
    assert not needs_reconciler(deleting)
    assert not needs_reconciler(musicvideo(status={"phase": "Failed", "observedGeneration": 1}))
    assert needs_reconciler(musicvideo(generation=2, status={"phase": "Failed", "observedGeneration": 1}))
    assert needs_reconciler(musicvideo(status={"phase": "Queued", "observedGeneration": 1}))


def test_deleting_an_unfinished_render_cleans_its_scratch_and_partial_outputs():
    mv = musicvideo(output={"url": "s3://bucket/videos/demo/"}, status={"phase": "Cancelled"})
    scratch = ("s3://bucket/videos/demo/segments/", "s3://bucket/videos/demo/cache/")
    files = ("s3://bucket/videos/demo/video.mp4", "s3://bucket/videos/demo/thumbnail.jpg",
             "s3://bucket/videos/demo/analysis.json")
    # Multipart uploads a killed renderer began (the MP4 is uploaded in parts) are aborted too.
    assert cleanup_on_delete(mv) == Cleanup(scratch, files, uploads=scratch + files)
    mv["status"]["phase"] = "Succeeded"  # its outputs stay
    assert cleanup_on_delete(mv) == Cleanup(scratch, uploads=scratch)
    for url in ("s3://bucket", "s3://bucket/", "s3://bucket//", ""):  # never a whole bucket's segments/
        assert cleanup_on_delete(musicvideo(output={"url": url})) is None, url


def test_a_video_marked_to_go_with_its_files_is_purged_whole_even_when_it_succeeded():
    mv = musicvideo(output={"url": "s3://bucket/videos/acme/mv-1/"}, status={"phase": "Succeeded"})
    mv["metadata"]["annotations"] = {ANNOTATION_DELETE_OUTPUTS: "true"}
    # The trailing slash keeps mv-10's files out of mv-1's purge.
    assert cleanup_on_delete(mv) == Cleanup(("s3://bucket/videos/acme/mv-1/",), uploads=("s3://bucket/videos/acme/mv-1/",),
                                            whole=True)
    mv["metadata"]["annotations"] = {ANNOTATION_DELETE_OUTPUTS: "false"}
    assert cleanup_on_delete(mv) is not None and cleanup_on_delete(mv).prefixes[0].endswith("/segments/")


def test_nothing_starts_for_a_musicvideo_being_deleted():
    mv = accepted()
    assert step(mv).create_job is not None  # admitted: the next step would create the Job
    mv["metadata"]["deletionTimestamp"] = "2025-01-01T12:00:00Z"
    plan = step(mv)  # a step that read the object after the delete began
    assert plan.create_job is None and plan.delete_job is None and not plan.status


def test_the_render_has_stopped_once_no_pod_can_still_write():
    assert render_stopped([])
    assert render_stopped([pod(phase="Failed"), pod(phase="Succeeded")])
    assert not render_stopped([pod(phase="Failed"), pod(phase="Running")])
    assert not render_stopped([pod(phase="Pending")])


def test_a_whole_render_with_two_oom_kills_then_success():
    """Drive decide() against a toy cluster until the render settles."""
    mv = musicvideo(resources={"memory": "1Gi", "maxMemory": "4Gi"})
    jobs: dict[str, dict] = {}
    script = iter(["oom", "oom", "ok"])
    now = T0
    for _ in range(40):
        name = mv["status"].get("jobName")
        plan = step(mv, job_=jobs.get(name) if name else None, pods=[pod(exit_code=137, reason="OOMKilled")], now=now)
        if plan.create_job is not None:
            created = plan.create_job
            attempt = int(created["metadata"]["labels"]["vibecraft.io/attempt"])
            outcome = next(script)
            jobs[created["metadata"]["name"]] = job(
                mv, attempt, condition="Complete" if outcome == "ok" else "Failed")
        mv = applied(mv, plan)
        now += timedelta(seconds=1)
        if mv["status"].get("phase") == "Succeeded":
            break
    status = mv["status"]
    assert status["phase"] == "Succeeded" and status["attempts"] == 3
    assert status["memoryLimit"] == "2304Mi" and status["failedAttempts"] == 0
    assert status["lastFailure"]["attempt"] == 2


def test_deleting_an_unfinished_render_records_cancelled():
    mv = running()
    plan = cancel(mv, T0 + timedelta(seconds=30))
    assert plan is not None and plan.outcome is Outcome.CANCELLED
    assert plan.status["phase"] == "Cancelled" and plan.status["finishedAt"] == "2025-01-01T12:00:30Z"
    assert plan.status["progress"]["message"] == "deleted while Running: Job demo-a1 stopped"
    assert cond(applied(mv, plan), "Ready")["reason"] == "Cancelled"
    assert [e.reason for e in plan.events] == ["Cancelled"]
    assert cancel(accepted(), T0).status["progress"]["message"] == "deleted while Pending"


def test_deleting_a_finished_render_keeps_its_result():
    mv = running()
    done = applied(mv, step(mv, job_=job(mv, condition="Complete")))
    assert done["status"]["phase"] == "Succeeded" and cancel(done, T0) is None


def failed_plans():
    """Every way decide() ends a render in Failed, each as (name, the MusicVideo before, the plan)."""
    plans = []
    mv = accepted(resources={"memory": "16Gi"})  # above the default maxMemory (8Gi) the chart/operator allows
    plans.append(("invalid spec at launch", mv, step(mv)))
    mv = running(resources={"memory": "4Gi"})  # valid at launch; the operator's ceiling was lowered since
    plans.append(("invalid spec after an attempt", mv,
                  step(mv, job_=failed_job(mv), pods=[pod(exit_code=1)], cfg=settings(default_max_memory="2Gi"))))
    mv = running(deadlineSeconds=60)
    mv = applied(mv, step(mv, job_=failed_job(mv), pods=[pod(exit_code=1)]))
    plans.append(("deadline before the next attempt", mv, step(mv, job_=failed_job(mv), now=T0 + timedelta(seconds=61))))
    mv = running(deadlineSeconds=60)
    plans.append(("overdue job", mv, step(mv, job_=job(mv), now=T0 + timedelta(seconds=200))))
    mv = running(retries=3)
    plans.append(("job deadline exceeded", mv, step(mv, job_=failed_job(mv, reason="DeadlineExceeded"))))
    mv = running(resources={"memory": "2Gi", "maxMemory": "2Gi"})
    plans.append(("oom at maxMemory", mv, step(mv, job_=failed_job(mv), pods=[pod(exit_code=137, reason="OOMKilled")])))
    mv = running()
    plans.append(("permanent exit", mv, step(mv, job_=failed_job(mv), pods=[pod(exit_code=10, message="not audio")])))
    mv = running(retries=0)
    plans.append(("retries used up", mv, step(mv, job_=failed_job(mv), pods=[pod(exit_code=11, message="503")])))
    return plans


@pytest.mark.parametrize(("name", "mv", "plan"), failed_plans(), ids=[p[0] for p in failed_plans()])
def test_every_failed_plan_records_last_failure(name, mv, plan):
    """`kubectl get mv -o wide` shows REASON from status.lastFailure: no Failed without one."""
    assert plan.status["phase"] == "Failed" and plan.outcome is Outcome.FAILED, name
    failure = plan.status.get("lastFailure")
    assert failure, f"{name}: Failed without lastFailure"
    assert failure["reason"] and failure["message"] and failure["time"] == plan.status["finishedAt"]
    assert failure["reason"] == cond(applied(mv, plan), "Ready")["reason"]  # REASON column = why it failed
    assert failure["kind"] in ("permanent", "deadline", "oom", "retryable")
    assert failure["attempt"] == mv["status"]["attempts"]
    assert [e.type for e in plan.events] == ["Warning"]


def test_an_invalid_spec_fails_as_permanent_with_the_reason_shown():
    mv = accepted(resources={"memory": "16Gi"})
    plan = step(mv)
    assert plan.create_job is None and plan.status["phase"] == "Failed"
    failure = plan.status["lastFailure"]
    assert (failure["reason"], failure["kind"]) == ("InvalidSpec", "permanent")
    assert failure["message"] == "resources.memory 16Gi is above resources.maxMemory 8Gi"
    assert cond(applied(mv, plan), "Ready")["reason"] == "InvalidSpec"
    assert [(e.reason, e.message) for e in plan.events] == [("InvalidSpec", failure["message"])]


def test_deadlines_fail_with_a_deadline_kind_failure():
    mv = running(deadlineSeconds=60)
    plan = step(mv, job_=job(mv), now=T0 + timedelta(seconds=200))
    failure = plan.status["lastFailure"]
    assert (failure["reason"], failure["kind"], failure["attempt"]) == ("DeadlineExceeded", "deadline", 1)


def test_a_split_render_runs_prepare_then_an_indexed_job_then_join_in_one_attempt():
    """Issue 20: spec.parallelism 3 → the attempt's prepare Job, then its segments Job (3 chunks, from the
    frames prepare reported), then its join Job; the attempt counter does not move, success after join."""
    mv = accepted(parallelism=3)
    plan = step(mv)
    assert plan.create_job["metadata"]["name"] == "demo-a1-p" and plan.status["stage"] == "prepare"
    mv = applied(mv, plan)
    mv["status"]["progress"] = {"framesTotal": 180 * 30}  # the prepare pod reported the song's frames

    def finished(mv):
        done = job(mv, condition="Complete")
        done["metadata"]["name"] = mv["status"]["jobName"]
        return done

    plan = step(mv, job_=finished(mv), now=T0 + timedelta(seconds=20))
    seg = plan.create_job
    assert seg["metadata"]["name"] == "demo-a1-s" and seg["spec"]["completions"] == 3
    assert plan.status["stage"] == "segments" and plan.status["chunks"] == 3 and plan.status["jobName"] == "demo-a1-s"
    assert "attempts" not in plan.status and plan.outcome is None
    mv = applied(mv, plan)

    retry = step(mv, job_=failed_job(mv), pods=[pod(exit_code=1)], now=T0 + timedelta(seconds=60))
    retry = step(applied(mv, retry), job_=failed_job(mv), now=T0 + timedelta(seconds=90))
    assert retry.create_job["metadata"]["name"] == "demo-a2-p" and "chunks" not in retry.status  # its slots stay

    plan = step(mv, job_=finished(mv), now=T0 + timedelta(seconds=80))
    assert plan.create_job["metadata"]["name"] == "demo-a1-j" and plan.status["stage"] == "join"
    mv = applied(mv, plan)
    plan = step(mv, job_=finished(mv), now=T0 + timedelta(seconds=90))
    assert plan.create_job is None and plan.status["phase"] == "Succeeded" and plan.outcome is Outcome.SUCCEEDED
    assert applied(mv, plan)["status"]["attempts"] == 1


def test_with_kueue_each_stage_waits_for_admission_as_queued_not_requeued():
    """Every stage's Job is created suspended for Kueue: between stages the render is Queued for Kueue (no
    "Requeued" warning, which means preempted), and Running again once Kueue admits the next Job."""
    mv = accepted(parallelism=2, queueName="renders")
    plan = step(mv, admitted=False)
    assert plan.create_job["spec"]["suspend"] is True and plan.status["phase"] == "Queued"
    mv = applied(mv, plan)
    mv = applied(mv, step(mv, job_=job(mv, suspended=False)))  # Kueue admitted the prepare Job
    assert mv["status"]["phase"] == "Running"
    done = job(mv, condition="Complete")
    done["metadata"]["name"] = mv["status"]["jobName"]
    plan = step(mv, job_=done, now=T0 + timedelta(seconds=20))
    assert plan.create_job["metadata"]["name"] == "demo-a1-s" and plan.create_job["spec"]["suspend"] is True
    assert plan.status["phase"] == "Queued" and [e.reason for e in plan.events] == ["StageStarted"]
    mv = applied(mv, plan)
    held = job(mv, suspended=True)
    held["metadata"]["name"] = "demo-a1-s"
    assert step(mv, job_=held).status == {}
    admitted = job(mv, suspended=False)
    admitted["metadata"]["name"] = "demo-a1-s"
    plan = step(mv, job_=admitted)
    assert plan.status["phase"] == "Running" and [e.reason for e in plan.events] == ["Admitted"]


def test_auto_parallelism_follows_the_song_and_the_operators_cap():
    from vibecraft_operator.jobs import chunks_for, is_split

    assert not is_split({}) and not is_split({"parallelism": 1}) and is_split({"parallelism": "auto"})
    assert not is_split({"parallelism": 4, "preview": True})  # a preview is one pod
    assert chunks_for({"parallelism": 4, "preview": True}, 10 * 60 * 30, 30, cap=4) == 1
    assert chunks_for({"parallelism": "auto"}, 10 * 60 * 30, 30, cap=4) == 4  # 10 min: 5 wanted, 4 allowed
    assert chunks_for({"parallelism": "auto"}, 3 * 60 * 30, 30, cap=4) == 2  # 3 min: one per 2 min
    assert chunks_for({"parallelism": 8}, 45 * 30, 30, cap=16) == 2  # never more chunks than 30 s segments
    assert chunks_for({"parallelism": "auto"}, None, 30, cap=3) == 3


def test_a_split_render_never_runs_more_pods_than_the_slots_it_was_admitted_with():
    """Admitted with parallelism 2 (2 slots, status.chunks), then edited to 8 mid-render (parallelism steers, so
    no restart): the segments stage still runs 2 pods. Under MAX_RUNNING=3 a render asking for 16 gets 3."""
    mv = accepted(parallelism=2)
    plan = step(mv)
    assert plan.status["chunks"] == 2
    mv = applied(mv, plan)
    mv["spec"]["parallelism"] = 8
    mv["status"]["progress"] = {"framesTotal": 600 * 30}
    done = job(mv, condition="Complete")
    done["metadata"]["name"] = mv["status"]["jobName"]
    plan = step(mv, job_=done, now=T0 + timedelta(seconds=20))
    assert plan.create_job["spec"]["completions"] == 2 and plan.status["chunks"] == 2

    from vibecraft_operator.reconcile import slot_cap

    assert slot_cap(settings(max_running=3, max_parallelism=16)) == 3
    assert slot_cap(settings(max_parallelism=4)) == 4
