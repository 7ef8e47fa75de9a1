"""Telling failures apart from Job and Pod dicts: OOM, disruption, renderer errors, deadlines."""

from datetime import timedelta

import pytest
from vibecraft_operator.classify import FailureKind, classify, decisive_pod, job_finished
from vibecraft_operator.pods import pod_activity

from tests.operator.operator_factories import T0, job, musicvideo, pod

FAILED_JOB = job(musicvideo(), condition="Failed", reason="BackoffLimitExceeded", message="Job has reached the limit")
DISRUPTION = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
              "message": "Eviction API: evicting"}


def test_oom_killed_reason():
    failure = classify(FAILED_JOB, [pod(exit_code=137, reason="OOMKilled")])
    assert (failure.kind, failure.reason, failure.exit_code) == (FailureKind.OOM, "OOMKilled", 137)
    assert not failure.counts_against_retries


def test_exit_137_without_reason_or_disruption_is_a_probable_oom():
    for reason in (None, "Error"):
        failure = classify(FAILED_JOB, [pod(exit_code=137, reason=reason)])
        assert (failure.kind, failure.reason) == (FailureKind.OOM, "ProbableOOMKill")


def test_exit_137_with_disruption_target_is_a_disruption_not_an_oom():
    failure = classify(FAILED_JOB, [pod(exit_code=137, conditions=[DISRUPTION])])
    assert (failure.kind, failure.reason) == (FailureKind.DISRUPTION, "EvictionByEvictionAPI")


def test_exit_137_of_a_deleted_pod_is_a_disruption():
    failure = classify(FAILED_JOB, [pod(exit_code=137, deleted_at=T0 + timedelta(minutes=4))])
    assert (failure.kind, failure.reason) == (FailureKind.DISRUPTION, "PodDeleted")


def test_a_pod_deleted_after_it_failed_keeps_its_own_cause():
    late = pod(exit_code=11, message="download: 404", deleted_at=T0 + timedelta(minutes=30))
    failure = classify(FAILED_JOB, [late])
    assert (failure.kind, failure.reason) == (FailureKind.RETRYABLE, "DownloadFailed")


def test_the_pod_vanishing_is_a_disruption():
    failure = classify(FAILED_JOB, [])
    assert (failure.kind, failure.reason) == (FailureKind.DISRUPTION, "PodVanished")


@pytest.mark.parametrize(
    ("code", "kind", "reason"),
    [
        (10, FailureKind.PERMANENT, "BadAudio"),
        (2, FailureKind.PERMANENT, "UsageError"),
        (11, FailureKind.RETRYABLE, "DownloadFailed"),
        (12, FailureKind.RETRYABLE, "UploadFailed"),
        (13, FailureKind.RETRYABLE, "ReplicateFailed"),
        (1, FailureKind.RETRYABLE, "InternalError"),
        (14, FailureKind.OOM, "MemoryGuard"),
        (15, FailureKind.PERMANENT, "InputNotFound"),  # a missing input object does not appear on a retry
        (17, FailureKind.PERMANENT, "BadLyrics"),  # lyrics without timestamps stay so
        (3, FailureKind.RETRYABLE, "Error"),
    ],
)
def test_renderer_exit_codes(code, kind, reason):
    failure = classify(FAILED_JOB, [pod(exit_code=code, reason="Error", message="the reason line\n")])
    assert (failure.kind, failure.reason, failure.exit_code) == (kind, reason, code)
    assert failure.message == "the reason line"
    assert failure.counts_against_retries == (kind is FailureKind.RETRYABLE)


def test_termination_message_is_trimmed_to_one_kilobyte():
    failure = classify(FAILED_JOB, [pod(exit_code=1, message="x" * 5000)])
    assert len(failure.message) == 1024


def test_deadline_exceeded():
    deadline = job(musicvideo(), condition="Failed", reason="DeadlineExceeded", message="Job was active longer")
    failure = classify(deadline, [pod(exit_code=137)])
    assert (failure.kind, failure.reason) == (FailureKind.DEADLINE, "DeadlineExceeded")


KUBELET_EVICTION = {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                    "message": "The node was low on resource: ephemeral-storage."}


def _evicted(message: str) -> dict:
    evicted = pod(exit_code=137, reason="Error", pod_reason="Evicted", conditions=[KUBELET_EVICTION])
    evicted["status"]["message"] = message
    return evicted


@pytest.mark.parametrize("message", [
    'Usage of EmptyDir volume "scratch" exceeds the limit "10Gi". ',
    'Container renderer exceeded its local ephemeral storage limit "1Gi". ',
    "Pod ephemeral local storage usage exceeds the total limit of containers 2Gi. ",
])
def test_outgrowing_its_own_storage_is_disk_full_and_uses_a_retry(message):
    failure = classify(FAILED_JOB, [_evicted(message)])
    assert (failure.kind, failure.reason) == (FailureKind.RETRYABLE, "DiskFull")
    assert failure.counts_against_retries and message.strip() in failure.message


def test_a_node_short_of_disk_evicting_the_pod_is_a_disruption():
    failure = classify(FAILED_JOB, [_evicted("The node was low on resource: ephemeral-storage. ")])
    assert (failure.kind, failure.reason) == (FailureKind.DISRUPTION, "TerminationByKubelet")


def test_node_loss_without_container_status_is_a_disruption():
    failure = classify(FAILED_JOB, [pod(pod_reason="NodeLost")])
    assert (failure.kind, failure.reason) == (FailureKind.DISRUPTION, "NodeLost")


def test_pod_failed_before_running_for_another_reason_is_retryable():
    failure = classify(FAILED_JOB, [pod(pod_reason="UnexpectedAdmissionError")])
    assert (failure.kind, failure.reason) == (FailureKind.RETRYABLE, "UnexpectedAdmissionError")


def test_the_newest_failed_pod_decides():
    old = pod("a", exit_code=137, reason="OOMKilled", created=T0)
    new = pod("b", exit_code=11, created=T0 + timedelta(minutes=1))
    assert decisive_pod([new, old])["metadata"]["name"] == "b"
    assert classify(FAILED_JOB, [old, new]).reason == "DownloadFailed"


def test_job_finished():
    mv = musicvideo()
    assert job_finished(job(mv)) is None
    assert job_finished(job(mv, condition="Complete")) == "Complete"
    assert job_finished(FAILED_JOB) == "Failed"


def test_pod_activity():
    unschedulable = pod(phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes: memory"}])
    assert pod_activity([unschedulable]) == ("Unschedulable", "pod demo-a1-xyz cannot be scheduled: 0/1 nodes: memory")
    missing_secret = pod(phase="Pending", waiting="CreateContainerConfigError", message='secret "vibecraft-s3" not found')
    assert pod_activity([missing_secret])[0] == "CreateContainerConfigError"
    assert pod_activity([pod(phase="Running")])[0] == "Rendering"
    assert pod_activity([pod(phase="Pending")]) is None
    assert pod_activity([]) is None
