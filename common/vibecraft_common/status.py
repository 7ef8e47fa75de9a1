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

# Objects a render writes under spec.output.url (the video last: its presence means done).
VIDEO_NAME: Final = "video.mp4"
THUMBNAIL_NAME: Final = "thumbnail.jpg"
ANALYSIS_NAME: Final = "analysis.json"
OUTPUT_NAMES: Final = (VIDEO_NAME, THUMBNAIL_NAME, ANALYSIS_NAME)


class _Open(BaseModel):
    # Status objects are read back from the cluster: tolerate fields a newer operator adds.
    model_config = ConfigDict(extra="ignore")


class Progress(_Open):
    """Progress of the current attempt, as the renderer reports it."""

    stage: Stage | None = Field(default=None, examples=["composing"], description="The renderer's stage.")
    percent: float | None = Field(default=None, ge=0, le=100, examples=[42.5])
    framesDone: int | None = Field(default=None, ge=0)
    framesTotal: int | None = Field(default=None, ge=0)
    etaSeconds: float | None = Field(default=None, ge=0)
    message: str | None = Field(default=None, max_length=L.PROGRESS_MESSAGE_MAX_LENGTH)


class Failure(_Open):
    """Why the last attempt failed."""

    reason: str | None = Field(default=None, examples=["BadAudio"])
    message: str | None = Field(default=None, max_length=L.FAILURE_MESSAGE_MAX_LENGTH,
                                examples=["input has no audio stream (not an audio file?)"])
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    attempt: int | None = None
    exitCode: int | None = None
    kind: FailureKind | None = Field(default=None, examples=["permanent"])


class Outputs(_Open):
    """Where the finished objects are, and facts about the video."""

    videoUrl: str | None = None
    thumbnailUrl: str | None = None
    analysisUrl: str | None = None
    durationSeconds: float | None = None
    sizeBytes: int | None = Field(default=None, json_schema_extra={"format": "int64"})


class Section(_Open):
    """A part of the song (intro, verse, ...)."""

    start: float | None = None
    end: float | None = None
    label: str | None = None


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
    sections: list[Section] | None = Field(default=None, max_length=L.SECTIONS_MAX)


class Condition(_Open):
    """A standard Kubernetes condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    observedGeneration: int | None = Field(default=None, json_schema_extra={"format": "int64"})


def _date_time() -> Any:
    return Field(default=None, json_schema_extra={"format": "date-time"})


class MusicVideoStatus(_Open):
    """Written by the operator (the renderer writes only progress)."""

    phase: Phase | None = None
    progress: Progress | None = Field(default=None, description="Progress of the current attempt, reported by the renderer.")
    attempts: int | None = Field(default=None, ge=0,
                                 description="Jobs created so far for this MusicVideo (the Job of attempt N is <name>-aN).")
    failedAttempts: int | None = Field(default=None, ge=0,
                                       description="Render errors counted against spec.retries since the spec last changed.")
    memoryLimit: str | None = Field(default=None,
                                    description="Memory limit of the current attempt (raised after OOM kills).")
    jobName: str | None = None
    specHash: str | None = Field(default=None,
                                 description="Hash of the spec being rendered (without suspend); a change renders again.")
    nextAttemptAt: str | None = Field(default=None, description="When the next attempt starts after a failure.",
                                      json_schema_extra={"format": "date-time"})
    startedAt: str | None = _date_time()
    finishedAt: str | None = _date_time()
    lastFailure: Failure | None = None
    output: Outputs | None = None
    analysis: AnalysisSummary | None = None
    conditions: list[Condition] | None = Field(default=None, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    observedGeneration: int | None = Field(default=None, json_schema_extra={"format": "int64"})


def summary_of(doc: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """status.analysis and the song's duration from an analysis.json document.

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
    duration = doc.get("duration")
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
