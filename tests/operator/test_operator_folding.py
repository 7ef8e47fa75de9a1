"""Folding status-only steps into the next one: one merge patch with the effect of several."""

from typing import Any

from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as hs
from vibecraft_operator.mergepatch import apply_patch, compose
from vibecraft_operator.queue import Admission
from vibecraft_operator.reconcile import Observation, Outcome, decide, decide_folded

from tests.operator.operator_factories import T0, applied, job, musicvideo, pod, settings, step

KEYS = hs.sampled_from(["a", "b", "c"])
LEAF = hs.one_of(hs.integers(0, 3), hs.text("xy", max_size=2), hs.lists(hs.integers(0, 2), max_size=2))
DOCS = hs.recursive(LEAF, lambda inner: hs.dictionaries(KEYS, inner, max_size=3), max_leaves=8)
OBJECTS = hs.dictionaries(KEYS, DOCS, max_size=3)
PATCHES = hs.recursive(hs.one_of(LEAF, hs.none()), lambda inner: hs.dictionaries(KEYS, inner, max_size=3),
                       max_leaves=8).filter(lambda p: isinstance(p, dict))


@given(OBJECTS, PATCHES, PATCHES)
@example({"a": {"b": 1}}, {"a": None}, {"a": {"c": 1}})  # removed, then rebuilt: no trace of the old object
@example({"a": {"b": {"c": 1}}}, {"a": 2}, {"a": {"b": {"d": None}}})
@hsettings(max_examples=500)
def test_compose_equals_applying_both_patches_in_turn(base: Any, first: Any, second: Any) -> None:
    assert apply_patch(base, compose(base, first, second)) == apply_patch(apply_patch(base, first), second)


def test_apply_patch_is_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert apply_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert apply_patch({"a": "b"}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}
    assert apply_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def folded(mv: dict[str, Any], **kw: Any):
    obs = Observation(mv=mv, job=kw.pop("job_", None), pods=kw.pop("pods", []), now=T0, admission=Admission(True))
    return decide_folded(obs, settings())


def test_a_new_render_is_accepted_and_launched_in_one_step() -> None:
    mv = musicvideo()
    plan = folded(mv)
    assert plan.create_job is not None and plan.create_job["metadata"]["name"] == "demo-a1"
    assert plan.first_job and plan.again is None
    assert plan.status["phase"] == "Running" and plan.status["attempts"] == 1 and plan.status["specHash"]
    assert plan.prelude["phase"] == "Pending" and "jobName" not in plan.prelude
    # the same result as the two single steps applied in turn
    two = applied(applied(mv, step(mv)), step(applied(mv, step(mv))))
    assert applied(mv, plan)["status"] == two["status"]
    assert [e.reason for e in plan.events] == ["JobCreated"]


def test_an_oom_kill_is_recorded_and_the_bigger_attempt_created_in_one_step() -> None:
    mv = musicvideo(resources={"memory": "1Gi", "maxMemory": "2Gi"})
    mv = applied(mv, folded(mv))
    plan = folded(mv, job_=job(mv, 1, condition="Failed", reason="BackoffLimitExceeded"),
                  pods=[pod(exit_code=137, reason="OOMKilled")])
    assert plan.outcome is Outcome.OOM_RETRY
    assert plan.create_job is not None and plan.create_job["metadata"]["name"] == "demo-a2"
    assert plan.status["memoryLimit"] == "1536Mi" and plan.status["attempts"] == 2
    assert plan.status["lastFailure"]["reason"] == "OOMKilled"
    assert [e.reason for e in plan.events] == ["OOMKilled", "JobCreated"]


def test_steps_that_wait_are_not_folded() -> None:
    mv = applied(musicvideo(), step(musicvideo()))
    obs = Observation(mv=mv, job=None, pods=[], now=T0, admission=Admission(False, "Queued", "wait"))
    plan = decide_folded(obs, settings())
    assert plan == decide(obs, settings()) and plan.status["phase"] == "Queued" and not plan.prelude
