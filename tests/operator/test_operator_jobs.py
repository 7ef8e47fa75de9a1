"""The renderer Job builder: name, resources, ownership, env, failure policy (no cluster)."""

import json
import math

import pytest
from vibecraft_common.limits import CLIP_MEMORY_BYTES
from vibecraft_common.resource import (
    ENV_ATTEMPT,
    ENV_EGRESS_ALLOW,
    ENV_MV_NAME,
    ENV_MV_NAMESPACE,
    ENV_SPEC_JSON,
    LABEL_ATTEMPT,
    LABEL_NAME,
)
from vibecraft_operator.constants import LABEL_KUEUE_QUEUE
from vibecraft_operator.errors import InvalidSpec
from vibecraft_operator.jobs import build_job, job_name, label_value, spec_hash
from vibecraft_operator.quantities import parse_quantity
from vibecraft_operator.resources import estimate_memory, frame_size, render_resources

from tests.operator.operator_factories import musicvideo, settings, spec


def build(mv=None, **kwargs):
    mv = mv or musicvideo()
    args = {"attempt": 1, "memory": "768Mi", "cpu": "1", "deadline_seconds": 3600, "settings": settings()}
    args.update(kwargs)
    return build_job(mv, **args)


def container(job):
    return job["spec"]["template"]["spec"]["containers"][0]


def env_of(job):
    return {e["name"]: e for e in container(job)["env"]}


def test_job_name_is_deterministic_per_attempt():
    assert job_name("demo", 1) == "demo-a1"
    assert job_name("demo", 12) == "demo-a12"
    assert build(attempt=3)["metadata"]["name"] == "demo-a3"


def test_long_names_are_shortened_stably_so_pod_names_stay_whole():
    long = "x" * 80
    first, again = job_name(long, 7), job_name(long, 7)
    # Pods are `<job>-<index>-<5 random>`; the API server cuts generateName bases beyond 58 characters.
    assert first == again and len(first + "-9999-") <= 58 and first.endswith("-a7")
    assert job_name("y" * 49, 1) == "y" * 49 + "-a1" and job_name("y" * 50, 1) != "y" * 50 + "-a1"
    assert job_name(long, 7) != job_name("x" * 81, 7)
    assert len(label_value(long)) <= 63
    assert label_value("short") == "short"


def test_memory_and_cpu_requests_equal_limits():
    resources = container(build(memory="1536Mi", cpu="2"))["resources"]
    assert resources["limits"] == {"memory": "1536Mi", "cpu": "2"}
    assert {k: v for k, v in resources["requests"].items() if k != "ephemeral-storage"} == resources["limits"]


def test_owned_by_the_musicvideo_so_deletion_cascades():
    job = build()
    (ref,) = job["metadata"]["ownerReferences"]
    assert ref["kind"] == "MusicVideo" and ref["apiVersion"] == "vibecraft.io/v1alpha1"
    assert ref["uid"] == musicvideo()["metadata"]["uid"] and ref["name"] == "demo"
    assert ref["controller"] is True and ref["blockOwnerDeletion"] is True
    assert job["metadata"]["namespace"] == "default"


def test_labels_find_the_attempt_and_the_owner_labels_are_copied():
    job = build(attempt=2)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[LABEL_NAME] == "demo" and labels[LABEL_ATTEMPT] == "2"
    assert job["metadata"]["labels"]["team"] == "music"  # kopf.adopt copies the owner's labels


def test_env_carries_spec_identity_and_secrets_by_reference():
    mv = musicvideo(namespace="music")
    env = env_of(build(mv, attempt=4))
    assert json.loads(env[ENV_SPEC_JSON]["value"]) == mv["spec"]
    assert env[ENV_MV_NAME]["value"] == "demo"
    assert env[ENV_MV_NAMESPACE]["value"] == "music"
    assert env[ENV_ATTEMPT]["value"] == "4"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "vibecraft-s3", "key": key, "optional": False}
    assert env["REPLICATE_API_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://127.0.0.1:8333"
    assert env["AWS_REGION"]["value"] == "us-east-1"
    limit = env["VIBECRAFT_MEMORY_LIMIT_MB"]["valueFrom"]["resourceFieldRef"]
    assert limit == {"containerName": "renderer", "resource": "limits.memory", "divisor": "1Mi"}
    assert not any("value" in e and "SECRET" in e["name"] for e in container(build())["env"])


def test_renderer_command_replaces_the_entrypoint_only_when_set():
    assert "command" not in container(build())
    job = build(settings=settings(renderer_command=["python3", "/opt/wrap.py"]))
    assert container(job)["command"] == ["python3", "/opt/wrap.py"] and container(job)["args"] == ["--from-env"]


def test_no_endpoint_env_without_a_configured_endpoint():
    assert "AWS_ENDPOINT_URL" not in env_of(build(settings=settings(s3_endpoint="")))


def test_renderer_contract_and_pod_settings():
    job = build(deadline_seconds=1234)
    pod_spec = job["spec"]["template"]["spec"]
    c = container(job)
    assert c["image"] == "vibecraft/renderer:0.1.0" and c["args"] == ["--from-env"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["serviceAccountName"] == "vibecraft-renderer"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 1234
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["spec"]["suspend"] is False
    assert "priorityClassName" not in pod_spec


def test_scratch_is_a_sized_empty_dir():
    assert build()["spec"]["template"]["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}}]
    small = build(settings=settings(scratch_size_limit="64Mi"))
    assert small["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] == {"sizeLimit": "64Mi"}
    with pytest.raises(ValueError, match="quantity"):
        settings(scratch_size_limit="lots")


def test_scratch_disk_is_requested_by_frame_size_and_rate_never_above_its_limit():
    """The scheduler reserves disk for the segments and the joined video of a 10-minute song (measured
    0.19 bits per pixel and frame at the defaults), plus the audio; the sizeLimit caps it."""
    def request(video=None, **cfg):
        job = build(mv=musicvideo(video=video or {}), settings=settings(**cfg))
        return float(parse_quantity(container(job)["resources"]["requests"]["ephemeral-storage"])) / 2**20

    default = request()  # 1280x720 at 30 fps
    assert 900 < default < 1200, default
    assert request({"height": 1080}) > 2 * default - 256 > request({"fps": 15}) * 1.5
    assert request(scratch_size_limit="64Mi") == 64
    assert request(scratch_request_song_seconds=0) == 256


def test_egress_allow_list_reaches_the_renderer_only_when_set():
    names = {e["name"] for e in container(build())["env"]}
    assert ENV_EGRESS_ALLOW not in names  # the renderer's default: public addresses only
    allowed = build(settings=settings(egress_allow_cidrs="10.20.0.0/16,fd00:1::/64"))
    assert {"name": ENV_EGRESS_ALLOW, "value": "10.20.0.0/16,fd00:1::/64"} in container(allowed)["env"]
    with pytest.raises(ValueError, match=r"10\.20\.0\.0/33"):
        settings(egress_allow_cidrs="10.20.0.0/33")


def test_pod_failure_policy_ignores_disruptions_and_fails_on_renderer_exit_codes():
    rules = build()["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob"
    assert rules[1]["onExitCodes"]["operator"] == "In"
    assert rules[1]["onExitCodes"]["containerName"] == "renderer"
    assert set(rules[1]["onExitCodes"]["values"]) == {1, 2, 10, 11, 12, 13, 14, 15, 16, 17}


def test_kueue_queue_name_creates_a_suspended_labelled_job():
    job = build(musicvideo(queueName="renders", priorityClassName="batch-low"))
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "renders"
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "batch-low"


def test_spec_hash_ignores_suspend_only():
    assert spec_hash(spec(suspend=True)) == spec_hash(spec(suspend=False))
    assert spec_hash(spec(retries=3)) != spec_hash(spec())


def test_a_preview_set_to_false_is_the_full_render_that_never_had_the_field():
    from vibecraft_operator.finished import is_finished

    assert spec_hash(spec(preview=False)) == spec_hash(spec()) != spec_hash(spec(preview=True))
    done = musicvideo(preview=False, status={"phase": "Succeeded", "observedGeneration": 1})
    assert is_finished(done)
    edited = {**done, "metadata": {**done["metadata"], "generation": 2}}  # preview set to false, not yet taken up
    assert not is_finished(edited)


@pytest.mark.parametrize(
    ("video", "size"),
    [
        ({}, (1280, 720)),
        ({"width": 640, "height": 360}, (640, 360)),
        ({"aspectRatio": "9:16", "height": 1920}, (1080, 1920)),
        ({"aspectRatio": "1:1", "height": 512}, (512, 512)),
        ({"aspectRatio": "16:9", "height": 100}, (178, 100)),
    ],
)
def test_frame_size(video, size):
    assert frame_size(video) == size


def test_memory_estimate_grows_with_resolution():
    cfg = settings()
    small = estimate_memory({"width": 160, "height": 90}, cfg)
    hd = estimate_memory({"width": 1920, "height": 1080}, cfg)
    assert 512 * 2**20 < small < hd
    assert hd == 512 * 2**20 + round(256 * 2**20 * 1920 * 1080 / 1e6)
    assert estimate_memory({"width": 1920, "height": 1080}, cfg, clips=True) == hd + CLIP_MEMORY_BYTES
    clips = render_resources(spec(video={"width": 1920, "height": 1080}, style={"backend": "replicate", "prompt": "x",
                                                                                 "motion": "clips"}), cfg)
    assert clips.memory == f"{math.ceil((hd + CLIP_MEMORY_BYTES) / 2**20)}Mi"


def test_render_resources_defaults_and_spec_values():
    cfg = settings()
    res = render_resources(spec(video={"width": 1920, "height": 1080}), cfg)
    assert res.memory == "1043Mi" and res.cpu == "1" and res.max_memory == "8Gi"
    res = render_resources(spec(resources={"memory": "2Gi", "cpu": "500m", "maxMemory": "4Gi"}), cfg)
    assert (res.memory, res.cpu, res.max_memory) == ("2Gi", "500m", "4Gi")


def test_estimate_is_capped_at_max_memory():
    res = render_resources(spec(video={"width": 7680, "height": 4320}, resources={"maxMemory": "1Gi"}), settings())
    assert res.memory == "1Gi"


def test_memory_above_max_memory_is_an_invalid_spec():
    with pytest.raises(InvalidSpec, match=r"above resources\.maxMemory"):
        render_resources(spec(resources={"memory": "4Gi", "maxMemory": "2Gi"}), settings())


def test_a_split_render_has_a_job_per_stage_and_an_indexed_job_for_its_chunks():
    """Issue 20: prepare, segments (an Indexed Job: every chunk at once, one failed chunk fails it), join."""
    from vibecraft_common.resource import ENV_CHUNKS, ENV_STAGE

    one = build(attempt=2)
    assert ENV_STAGE not in env_of(one) and "completionMode" not in one["spec"] and one["spec"]["backoffLimit"] == 0
    names = {stage: build(attempt=2, stage=stage, chunks=3)["metadata"]["name"] for stage in ("prepare", "segments", "join")}
    assert names == {"prepare": "demo-a2-p", "segments": "demo-a2-s", "join": "demo-a2-j"}
    assert len(job_name("x" * 80, 7, "segments") + "-9999-") <= 58

    job = build(attempt=2, stage="segments", chunks=3)
    assert {k: job["spec"][k] for k in ("completionMode", "completions", "parallelism", "maxFailedIndexes")} == {
        "completionMode": "Indexed", "completions": 3, "parallelism": 3, "maxFailedIndexes": 0}
    assert job["spec"]["backoffLimitPerIndex"] >= 1 and "backoffLimit" not in job["spec"]
    assert job["spec"]["podFailurePolicy"]["rules"][1]["action"] == "FailIndex"
    env = env_of(job)
    assert env[ENV_STAGE]["value"] == "segments" and env[ENV_CHUNKS]["value"] == "3"
    for stage in ("prepare", "join"):
        other = build(attempt=2, stage=stage, chunks=3)
        assert env_of(other)[ENV_STAGE]["value"] == stage and ENV_CHUNKS not in env_of(other)
        assert "completionMode" not in other["spec"] and other["spec"]["podFailurePolicy"]["rules"][1]["action"] == "FailJob"


def test_an_upgrade_filling_new_defaults_into_old_musicvideos_is_not_an_edit():
    """The API server fills a CRD's new defaults into objects stored before it had them: a MusicVideo rendered
    before audio.normalize and parallelism existed must keep its hash (or every one would render again),
    while setting normalize to false is an edit. parallelism steers the render: never an edit."""
    old = {"audio": {"url": "s3://vibecraft/songs/a.ogg"}, "output": {"url": "s3://vibecraft/v/"}, "retries": 2}
    filled = {**old, "audio": {**old["audio"], "normalize": True}, "parallelism": 1}
    assert spec_hash(filled) == spec_hash(old)
    assert spec_hash({**filled, "parallelism": 4}) == spec_hash(old)
    assert spec_hash({**old, "audio": {**old["audio"], "normalize": False}}) != spec_hash(old)
