"""Pure builder of the renderer Job of one attempt (a plain dict, adopted by its MusicVideo)."""

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

import kopf
from vibecraft_common.limits import DEFAULT_PARALLELISM, PARALLELISM_AUTO, chunk_count, parallelism_for
from vibecraft_common.resource import (
    ENV_ATTEMPT,
    ENV_CHUNKS,
    ENV_EGRESS_ALLOW,
    ENV_MEMORY_LIMIT_MB,
    ENV_MV_NAME,
    ENV_MV_NAMESPACE,
    ENV_REPLICATE_MAX_PREDICTIONS,
    ENV_SPEC_JSON,
    ENV_STAGE,
    EXIT_REASONS,
    LABEL_ATTEMPT,
    LABEL_COMPONENT,
    LABEL_NAME,
    STAGE_ALL,
    STAGE_JOIN,
    STAGE_PREPARE,
    STAGE_SEGMENTS,
    TERMINATION_LOG,
    RenderStage,
)

from vibecraft_operator.constants import (
    ANNOTATION_MV_NAME,
    ANNOTATION_SPEC_HASH,
    APP,
    COMPONENT_RENDERER,
    CONTAINER_NAME,
    LABEL_APP,
    LABEL_KUEUE_QUEUE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SCRATCH_DIR,
)
from vibecraft_operator.quantities import format_mebibytes
from vibecraft_operator.resources import estimate_scratch
from vibecraft_operator.settings import Settings

MAX_NAME = 63  # label values (the pods' `job-name` label among them) are capped at 63 characters
# A Job's pods are named `<job>-<5 random>` (Indexed: `<job>-<index>-<5 random>`), and the API server
# cuts a generateName base longer than 58 characters. The chart's renderer status policy recognises a
# renderer by its pod's name (the ServiceAccount token carries it), so the name must arrive whole:
# 52 leaves room for a 4-digit completion index.
MAX_JOB_NAME = 52
# Editing these does not restart the render: they steer it (parallelism: an attempt's next stage uses the new
# value; the video is the same frame for frame).
SPEC_FIELDS_NOT_RENDERED = ("suspend", "ttlSecondsAfterFinished", "parallelism")
# Fields the CRD gained, with a default, after MusicVideos existed: the API server fills the default into
# old objects as it reads them, which must not look like an edit (every MusicVideo, finished ones too,
# would render again after an upgrade). At their default they are left out of the hash.
DEFAULTED_LATER: Final = ((("audio", "normalize"), True),)
RENDERER_UID = 65532  # "nonroot" in distroless-style images


def short_hash(text: str, length: int = 8) -> str:
    """A stable short hex digest, for names that must be shortened."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# Job name suffix of each stage of a split render (STAGE_ALL keeps the plain `-a<N>` of one-pod renders).
STAGE_SUFFIX: Final[dict[str, str]] = {STAGE_ALL: "", STAGE_PREPARE: "-p", STAGE_SEGMENTS: "-s", STAGE_JOIN: "-j"}
# Per index: how often one chunk's pod may fail (render errors; disruptions and OOM kills are the
# operator's business through the attempt) before the Indexed Job fails; one failed chunk fails the Job.
BACKOFF_PER_INDEX = 1


def job_name(mv_name: str, attempt: int, stage: RenderStage = STAGE_ALL) -> str:
    """`<name>-a<N>` (a stage of a split render: `-p`, `-s`, `-j` after it), deterministic so that creating
    it twice hits AlreadyExists."""
    suffix = f"-a{attempt}{STAGE_SUFFIX[stage]}"
    if len(mv_name) + len(suffix) <= MAX_JOB_NAME:
        return mv_name + suffix
    keep = MAX_JOB_NAME - len(suffix) - 9
    return f"{mv_name[:keep].rstrip('-.')}-{short_hash(mv_name)}{suffix}"


def label_value(mv_name: str) -> str:
    """The MusicVideo name as a label value (≤ 63 chars; the full name is in an annotation)."""
    if len(mv_name) <= MAX_NAME:
        return mv_name
    return f"{mv_name[:MAX_NAME - 9].rstrip('-.')}-{short_hash(mv_name)}"


def selector_labels(mv_name: str, attempt: int) -> dict[str, str]:
    """Labels that find the Jobs and Pods of one attempt."""
    return {LABEL_NAME: label_value(mv_name), LABEL_ATTEMPT: str(attempt)}


def spec_hash(spec: Mapping[str, Any]) -> str:
    """Identity of what is rendered: the spec minus the fields that only steer the render."""
    rendered = {k: v for k, v in spec.items() if k not in SPEC_FIELDS_NOT_RENDERED}
    if rendered.get("preview") is False:  # as absent: applying a manifest that says so renders nothing again
        del rendered["preview"]
    for (section, name), default in DEFAULTED_LATER:
        part = rendered.get(section)
        if isinstance(part, Mapping) and name in part and part[name] == default:
            rendered[section] = {k: v for k, v in part.items() if k != name}
    return short_hash(json.dumps(rendered, sort_keys=True), 16)


def spec_json(spec: Mapping[str, Any]) -> str:
    """The spec as the renderer reads it from VIBECRAFT_SPEC_JSON (stable key order). UTF-8 as is, not
    \\u escapes: one env string is limited to 128 KiB by the kernel (MAX_ARG_STRLEN), and inline lyrics at
    LYRICS_TEXT_MAX_LENGTH characters of any script must fit with the rest of the spec."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_env(mv: Mapping[str, Any], attempt: int, settings: Settings, max_predictions: int | None = None
              ) -> list[dict[str, Any]]:
    """The renderer's env: the spec, its identity, S3 and Replicate credentials by reference, and the
    Replicate predictions it may create (what its namespace's budget has left; None = no budget)."""
    meta = mv["metadata"]
    env: list[dict[str, Any]] = [
        {"name": ENV_SPEC_JSON, "value": spec_json(mv.get("spec") or {})},
        {"name": ENV_MV_NAME, "value": meta["name"]},
        {"name": ENV_MV_NAMESPACE, "value": meta["namespace"]},
        {"name": ENV_ATTEMPT, "value": str(attempt)},
        _secret_env("AWS_ACCESS_KEY_ID", settings.s3_secret_name, optional=False),
        _secret_env("AWS_SECRET_ACCESS_KEY", settings.s3_secret_name, optional=False),
        {"name": "AWS_REGION", "value": settings.s3_region},
        _secret_env("REPLICATE_API_TOKEN", settings.replicate_secret_name, optional=True),
        {
            "name": ENV_MEMORY_LIMIT_MB,
            "valueFrom": {"resourceFieldRef": {
                "containerName": CONTAINER_NAME, "resource": "limits.memory", "divisor": "1Mi"}},
        },
        {"name": "HOME", "value": SCRATCH_DIR},
        {"name": "TMPDIR", "value": SCRATCH_DIR},
        {"name": "NUMBA_CACHE_DIR", "value": f"{SCRATCH_DIR}/numba"},  # librosa JIT cache
    ]
    if settings.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.s3_endpoint})
    if settings.egress_allow_cidrs:
        env.append({"name": ENV_EGRESS_ALLOW, "value": settings.egress_allow_cidrs})
    if max_predictions is not None:
        env.append({"name": ENV_REPLICATE_MAX_PREDICTIONS, "value": str(max_predictions)})
    return env


def _secret_env(name: str, secret: str, *, optional: bool) -> dict[str, Any]:
    ref = {"name": secret, "key": name, "optional": optional}
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def pod_failure_policy(indexed: bool = False) -> dict[str, Any]:
    """Disruptions don't count (the Job controller replaces the pod); renderer exit codes fail at once:
    the Job, or in an Indexed Job the index (with maxFailedIndexes 0, that fails the Job too, and the
    Job controller stops the other chunks' pods)."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailIndex" if indexed else "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": sorted(EXIT_REASONS),
                },
            },
        ]
    }


# The renderer container's own hardening: it writes only to its scratch emptyDir (tests/realnode
# checks a real runtime enforces this on the built image).
RENDERER_CONTAINER_SECURITY: Final[dict[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def build_job(
    mv: Mapping[str, Any],
    *,
    attempt: int,
    memory: str,
    cpu: str,
    deadline_seconds: int,
    settings: Settings,
    max_predictions: int | None = None,
    stage: RenderStage = STAGE_ALL,
    chunks: int = 1,
) -> dict[str, Any]:
    """The Job of attempt `attempt` of MusicVideo `mv` (owned by it, so deleting `mv` deletes it).

    `stage` other than STAGE_ALL: one stage of a render split over `chunks` pods (renderer
    `--stage`): STAGE_SEGMENTS is an Indexed Job of `chunks` completions, all running at once, each
    pod rendering the chunk of its completion index.
    """
    meta, spec = mv["metadata"], mv.get("spec") or {}
    name = meta["name"]
    labels = {
        **selector_labels(name, attempt),
        LABEL_COMPONENT: COMPONENT_RENDERER,
        LABEL_APP: APP,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    annotations = {ANNOTATION_MV_NAME: name, ANNOTATION_SPEC_HASH: spec_hash(spec)}
    job_labels = dict(labels)
    queue_name = spec.get("queueName")
    if queue_name:
        job_labels[LABEL_KUEUE_QUEUE] = str(queue_name)
    resources = {"memory": memory, "cpu": cpu}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # required by podFailurePolicy; the operator owns retries
        "serviceAccountName": settings.renderer_service_account,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RENDERER_UID,
            "runAsGroup": RENDERER_UID,
            "fsGroup": RENDERER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": settings.renderer_image,
                "imagePullPolicy": settings.renderer_image_pull_policy,
                "args": ["--from-env"],
                "env": build_env(mv, attempt, settings, max_predictions) + stage_env(stage, chunks),
                # The scratch disk is requested (the scheduler places the pod where it fits) but its limit is
                # the emptyDir's sizeLimit: an ephemeral-storage limit would also count logs and the image layer.
                "resources": {"requests": {**resources, "ephemeral-storage": format_mebibytes(
                    estimate_scratch(spec.get("video") or {}, settings))}, "limits": dict(resources)},
                "terminationMessagePath": TERMINATION_LOG,
                # A crash that never wrote the termination log still leaves its last log lines.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": dict(RENDERER_CONTAINER_SECURITY),
                "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH_DIR}],
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": settings.scratch_size_limit}}],
    }
    if settings.renderer_command:
        pod_spec["containers"][0]["command"] = list(settings.renderer_command)
    if spec.get("priorityClassName"):
        pod_spec["priorityClassName"] = spec["priorityClassName"]
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(name, attempt, stage), "labels": job_labels, "annotations": annotations},
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": pod_failure_policy(indexed=stage == STAGE_SEGMENTS),
            "activeDeadlineSeconds": max(1, int(deadline_seconds)),
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "suspend": bool(queue_name),  # Kueue admits (un-suspends) queued Jobs itself
            "template": {"metadata": {"labels": labels, "annotations": dict(annotations)}, "spec": pod_spec},
        },
    }
    if stage == STAGE_SEGMENTS:
        # backoffLimitPerIndex replaces backoffLimit (the API server refuses both set).
        del job["spec"]["backoffLimit"]
        job["spec"].update(completionMode="Indexed", completions=chunks, parallelism=chunks,
                           backoffLimitPerIndex=BACKOFF_PER_INDEX, maxFailedIndexes=0)  # fmt: skip
    kopf.adopt(job, owner=dict(mv))  # type: ignore[arg-type]
    return job


def stage_env(stage: RenderStage, chunks: int) -> list[dict[str, Any]]:
    """What tells the renderer its stage; the chunk is the completion index Kubernetes sets itself."""
    if stage == STAGE_ALL:
        return []
    env = [{"name": ENV_STAGE, "value": stage}]
    if stage == STAGE_SEGMENTS:
        env.append({"name": ENV_CHUNKS, "value": str(chunks)})
    return env


def is_split(spec: Mapping[str, Any]) -> bool:
    """Whether the render is split over several pods (spec.parallelism above 1, or auto; never a preview)."""
    value = parallelism_for(spec.get("parallelism", DEFAULT_PARALLELISM), spec.get("preview"))
    return value == PARALLELISM_AUTO or (isinstance(value, int) and value > 1)


def chunks_for(spec: Mapping[str, Any], frames: int | None, fps: int, cap: int) -> int:
    """The segments stage's pods for this spec (vibecraft_common.limits.chunk_count)."""
    return chunk_count(parallelism_for(spec.get("parallelism", DEFAULT_PARALLELISM), spec.get("preview")),
                       frames / max(fps, 1) if frames else None, cap)
