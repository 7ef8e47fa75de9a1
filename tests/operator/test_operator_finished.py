"""The finished label and ttlSecondsAfterFinished (pure functions, no cluster)."""

from datetime import timedelta

from vibecraft_common.resource import FINISHED, LABEL_FINISHED
from vibecraft_operator.finished import expires_at, is_finished, label_patch
from vibecraft_operator.jobs import spec_hash
from vibecraft_operator.timeutil import format_time

from tests.operator.operator_factories import T0, musicvideo


def finished(phase: str = "Succeeded", **spec: object) -> dict:
    return musicvideo(status={"phase": phase, "finishedAt": format_time(T0)}, **spec)


def test_the_label_follows_the_phase_and_leaves_a_deleting_video():
    running = musicvideo(status={"phase": "Running"})
    assert not is_finished(running) and label_patch(running) is None  # no label, none wanted
    for phase in ("Succeeded", "Failed", "Cancelled"):
        assert label_patch(finished(phase)) == {"labels": {LABEL_FINISHED: FINISHED}}
    done = finished()
    done["metadata"]["labels"][LABEL_FINISHED] = FINISHED
    assert label_patch(done) is None
    done["metadata"]["deletionTimestamp"] = format_time(T0)  # being deleted: counts as in progress again
    assert label_patch(done) == {"labels": {LABEL_FINISHED: None}}
    restarted = musicvideo(status={"phase": "Pending"})  # a spec edit renders a finished video again
    restarted["metadata"]["labels"][LABEL_FINISHED] = FINISHED
    assert label_patch(restarted) == {"labels": {LABEL_FINISHED: None}}


def test_ttl_from_the_spec_else_the_operator_default():
    assert expires_at(finished(), None) is None  # no TTL anywhere: kept
    assert expires_at(finished(), 600) == T0 + timedelta(seconds=600)
    assert expires_at(finished(ttlSecondsAfterFinished=0), 600) == T0  # the spec wins, 0 included
    assert expires_at(finished(ttlSecondsAfterFinished=30), None) == T0 + timedelta(seconds=30)
    assert expires_at(musicvideo(status={"phase": "Running"}, ttlSecondsAfterFinished=30), 600) is None
    deleting = finished(ttlSecondsAfterFinished=30)
    deleting["metadata"]["deletionTimestamp"] = format_time(T0)
    assert expires_at(deleting, 600) is None


def test_editing_the_ttl_does_not_render_again():
    assert spec_hash(musicvideo()["spec"]) == spec_hash(musicvideo(ttlSecondsAfterFinished=60)["spec"])
    assert spec_hash(musicvideo()["spec"]) != spec_hash(musicvideo(retries=3)["spec"])
