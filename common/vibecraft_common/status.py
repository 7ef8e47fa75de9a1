"""The MusicVideo status: phases, the renderer's stages, the outputs and the analysis summary.

Who writes what: the operator owns `status` (phase, attempts, conditions, lastFailure, output,
analysis); the renderer writes only `status.progress`, whose `stage` is one of the renderer's STAGES.
The operator's own situation (queued, starting, retrying...) is the `reason` of the Progressing
condition and the progress `message`, never a stage, so the two vocabularies stay apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import limits as L

Phase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"]
PHASES: Final[tuple[Phase, ...]] = get_args(Phase)
PENDING: Final = "Pending"
QUEUED: Final = "Queued"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
CANCELLED: Final = "Cancelled"
TERMINAL_PHASES: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

# status.progress.stage: the renderer's stages, in order.
Stage = Literal["downloading", "analyzing", "generating", "composing", "encoding", "uploading"]
STAGES: Final[tuple[str, ...]] = get_args(Stage)

# status.lastFailure.kind: how the operator treats a failed attempt.
FailureKind = Literal["oom", "disruption", "retryable", "permanent", "deadline"]
FAILURE_KINDS: Final[tuple[str, ...]] = get_args(FailureKind)

# status fields of a queued render (the operator's queue publisher writes them, a start clears them).
QUEUE_FIELDS: Final = ("queuePosition", "estimatedStartSeconds", "queueUpdatedAt")

# Objects a render writes under spec.output.url (the video last: its presence means done).
VIDEO_NAME: Final = "video.mp4"
THUMBNAIL_NAME: Final = "thumbnail.jpg"
ANALYSIS_NAME: Final = "analysis.json"
OUTPUT_NAMES: Final = (VIDEO_NAME, THUMBNAIL_NAME, ANALYSIS_NAME)
# Scratch under the same prefix: the renderer's checkpoints and cache (the operator cleans them on delete).
SEGMENTS_DIR: Final = "segments"
CACHE_DIR: Final = "cache"
SCRATCH_DIRS: Final = (SEGMENTS_DIR, CACHE_DIR)


class _Open(BaseModel):
    # Status objects are read back from the cluster: tolerate fields a newer operator adds.
    model_config = ConfigDict(extra="ignore")


class ChunkProgress(_Open):
    """One pod of a split render's segments stage, as it reports itself (status.progress.chunks.<index>)."""

    stage: Stage | None = Field(default=None, description="The chunk pod's stage.")
    framesDone: int | None = Field(default=None, ge=0, description="Frames of this chunk drawn and encoded so far.")
    framesTotal: int | None = Field(default=None, ge=0, description="Frames of this chunk.")
    etaSeconds: float | None = Field(default=None, ge=0, description="Estimated seconds until this chunk is done.")


class Progress(_Open):
    """Progress of the current attempt, as the renderer reports it."""

    stage: Stage | None = Field(default=None, examples=["composing"], description="The renderer's stage.")
    percent: float | None = Field(default=None, ge=0, le=100, examples=[42.5], description="Percent done, 0 to 100.")
    framesDone: int | None = Field(default=None, ge=0, description="Video frames drawn and encoded so far.")
    framesTotal: int | None = Field(default=None, ge=0, description="Video frames of the whole song.")
    etaSeconds: float | None = Field(default=None, ge=0, description="Estimated seconds until the attempt finishes.")
    message: str | None = Field(default=None, max_length=L.PROGRESS_MESSAGE_MAX_LENGTH,
                                description="What is happening now, in words (the operator's, between attempts).")
    predictions: int | None = Field(default=None, ge=0,
                                    description="Replicate predictions this attempt has created so far (billed).")
    chunks: dict[str, ChunkProgress] | None = Field(
        default=None, max_length=L.PARALLELISM_MAX,
        description="With spec.parallelism: each segments-stage pod's own progress by its index (\"0\", \"1\"...); "
                    "percent, framesDone and etaSeconds above are their sum (frames) and the latest to finish (ETA).")


class Failure(_Open):
    """Why the last attempt failed."""

    reason: str | None = Field(default=None, examples=["BadAudio"],
                               description="One word: OOMKilled, BadAudio, DownloadFailed, DeadlineExceeded...")
    message: str | None = Field(default=None, max_length=L.FAILURE_MESSAGE_MAX_LENGTH,
                                examples=["input has no audio stream (not an audio file?)"],
                                description="What went wrong, from the renderer or the operator.")
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"}, description="When it failed.")
    attempt: int | None = Field(default=None, description="The attempt that failed.")
    exitCode: int | None = Field(default=None, description="The renderer's exit code, when it exited.")
    kind: FailureKind | None = Field(default=None, examples=["permanent"],
                                     description="How it is handled: oom and disruption are retried without counting, "
                                                 "retryable counts against retries, permanent and deadline end the render.")


class Outputs(_Open):
    """Where the finished objects are, and facts about the video."""

    videoUrl: str | None = Field(default=None, description=f"The video (s3:// URL of {VIDEO_NAME}).")
    thumbnailUrl: str | None = Field(default=None, description=f"A still from the loudest section ({THUMBNAIL_NAME}).")
    analysisUrl: str | None = Field(default=None, description=f"Tempo, beats, sections and cuts ({ANALYSIS_NAME}).")
    durationSeconds: float | None = Field(default=None, description="Length of the video in seconds.")
    sizeBytes: int | None = Field(default=None, json_schema_extra={"format": "int64"}, description="Size of the video file.")


class Section(_Open):
    """A part of the song (intro, verse, ...)."""

    start: float | None = Field(default=None, description="Start in seconds.")
    end: float | None = Field(default=None, description="End in seconds.")
    label: str | None = Field(default=None, description="Which part it is; equal labels sound alike.")


class AnalysisSummary(_Open):
    """What the audio analysis found (from the render's analysis.json)."""

    # The renderer writes analysis.json with exactly these names (plus beat times and more); the
    # operator copies them with `summary_of`.

    tempo: float | None = Field(default=None, description="Beats per minute (spec.audio.bpm when given).")
    tempoSource: L.TempoSource | None = Field(
        default=None, description="given (spec.audio.bpm) or detected (found in the audio).")
    confidence: float | None = Field(
        default=None, ge=0, le=1,
        description="How sure the beat tracker is of tempo and beats, 0..1 (1 when bpm and beatOffsetSeconds are given).")
    beats: int | None = Field(default=None, description="Number of beats found.")
    beatsPerBar: int | None = Field(
        default=None, ge=3, le=4, description="The meter found: 4 (4/4, also 2/4) or 3 (3/4, waltzes); bar cuts follow it.")
    sections: list[Section] | None = Field(default=None, max_length=L.SECTIONS_MAX,
                                           description="The song's parts (intro, verse...), in order.")


class Condition(_Open):
    """A standard Kubernetes condition."""

    type: str = Field(description="Ready (the video is rendered), Progressing (a render is queued, running or "
                                  "retrying) or Suspended.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="Why, in one word (JobCreated, Retrying, Queued...).")
    message: str | None = Field(default=None, description="Why, in words.")
    lastTransitionTime: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                           description="When status last changed.")
    observedGeneration: int | None = Field(default=None, json_schema_extra={"format": "int64"},
                                           description="The spec generation this condition describes.")


def _date_time(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra={"format": "date-time"})


class MusicVideoStatus(_Open):
    """Written by the operator (the renderer writes only progress)."""

    phase: Phase | None = Field(default=None, description="Pending, Queued, Running, then Succeeded, Failed or Cancelled.")
    progress: Progress | None = Field(default=None, description="Progress of the current attempt, reported by the renderer.")
    attempts: int | None = Field(default=None, ge=0,
                                 description="Jobs created so far for this MusicVideo (the Job of attempt N is <name>-aN).")
    failedAttempts: int | None = Field(default=None, ge=0,
                                       description="Render errors counted against spec.retries since the spec last changed.")
    memoryLimit: str | None = Field(default=None,
                                    description="Memory limit of the current attempt (raised after OOM kills).")
    jobName: str | None = Field(default=None, description="The Job of the current attempt (of its current stage, "
                                                          "when the render is split).")
    stage: Literal["prepare", "segments", "join"] | None = Field(
        default=None, description="With spec.parallelism above 1: the stage of the attempt (prepare: analysis, "
                                  "segments: an Indexed Job of `chunks` pods, join); unset for one-pod renders.")
    chunks: int | None = Field(default=None, ge=1, description="With spec.parallelism: the pods of the segments stage.")
    replicatePredictions: int | None = Field(
        default=None, ge=0, description="Replicate predictions charged to this MusicVideo over its finished attempts "
                                        "(they count against its namespace's monthly budget).")
    specHash: str | None = Field(default=None, description="Hash of the spec being rendered (without suspend and "
                                                           "ttlSecondsAfterFinished); a change renders again.")
    nextAttemptAt: str | None = Field(default=None, description="When the next attempt starts after a failure.",
                                      json_schema_extra={"format": "date-time"})
    queuePosition: int | None = Field(
        default=None, ge=1, description="While Queued: the render's place in the queue (1 starts next). Slots go "
                                        "round robin between namespaces, so this is not creation order.")
    estimatedStartSeconds: int | None = Field(
        default=None, ge=0, description="While Queued: estimated seconds from queueUpdatedAt until the render "
                                        "starts (from the median duration of recent renders).")
    queueUpdatedAt: str | None = _date_time("When queuePosition and estimatedStartSeconds were computed.")
    startedAt: str | None = _date_time("When the first attempt started.")
    finishedAt: str | None = _date_time("When the render succeeded, failed or was cancelled.")
    lastFailure: Failure | None = None
    output: Outputs | None = None
    analysis: AnalysisSummary | None = None
    conditions: list[Condition] | None = Field(default=None, description="Ready, Progressing and Suspended.",
                                               json_schema_extra={"x-kubernetes-list-type": "map",
                                                                  "x-kubernetes-list-map-keys": ["type"]})
    observedGeneration: int | None = Field(default=None, json_schema_extra={"format": "int64"},
                                           description="The spec generation the operator has acted on.")


def spec_pending(obj: Mapping[str, Any]) -> bool:
    """The spec changed since the operator last acted on it (status.observedGeneration behind
    metadata.generation): its status describes the previous spec (a preview set to false still reads
    Succeeded until the new render is taken up)."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    return observed is not None and observed != (obj.get("metadata") or {}).get("generation")


def summary_of(doc: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """status.analysis and the video's duration (the song's; a preview's own) from an analysis.json document.

    Only the renderer's own names are read (Analysis.to_json writes exactly these). Each field is
    checked on its own against AnalysisSummary, strictly: a value the CRD would refuse is left out,
    so that one bad value cannot make the API server reject the whole succeeded patch.
    """
    beats = doc.get("beats")
    fields: dict[str, Any] = {
        "tempo": doc.get("tempo"),
        "tempoSource": doc.get("tempoSource"),
        "confidence": doc.get("confidence"),
        "beats": len(beats) if isinstance(beats, list) else beats,
        "beatsPerBar": doc.get("beatsPerBar"),
    }
    out: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            checked = AnalysisSummary.model_validate({name: value}, strict=True)
        except ValidationError:
            continue
        if (kept := getattr(checked, name)) is not None:
            out[name] = round(kept, _DIGITS[name]) if name in _DIGITS else kept
    sections = doc.get("sections")
    if isinstance(sections, list):
        out["sections"] = [sec for item in sections if (sec := _section(item)) is not None][: L.SECTIONS_MAX]
    preview = doc.get("preview")  # a preview's video is its stretch of the song, not the song
    duration = preview.get("seconds") if isinstance(preview, Mapping) else doc.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return out, None
    return out, float(duration)


_DIGITS: Final = {"tempo": 2, "confidence": 3}


def _section(item: Any) -> dict[str, Any] | None:
    """A section with a start and an end, or None."""
    try:
        sec = Section.model_validate(item, strict=True)
    except ValidationError:
        return None
    if sec.start is None or sec.end is None:
        return None
    return sec.model_dump(exclude_none=True)
