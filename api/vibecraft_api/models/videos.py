"""Videos: what a client sends to start a render (`VideoCreate`) and what it reads back (`VideoPublic`).

Field names are the CRD's (camelCase) so a validated request dumps straight into the MusicVideo
spec; enums, bounds and cross-field rules mirror crds/musicvideo.yaml (tests/api/test_models.py
compares them) so a bad request is refused here with a field error instead of by the API server.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError
from vibecraft_common.limits import BEAT_OFFSET_MAX_SECONDS, BEAT_OFFSET_MIN_SECONDS, BPM_MAX, BPM_MIN, TempoSource

Backend = Literal["procedural", "replicate"]
AspectRatio = Literal["16:9", "9:16", "1:1"]
CutEvery = Literal["beat", "2beats", "bar", "phrase"]
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
Phase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"]
PHASES: tuple[Phase, ...] = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled")
TERMINAL: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})
INT64_MAX = 2**63 - 1
VIDEO_ID = r"^mv-[a-z0-9]{1,60}$"
VIDEO_ID_RE = re.compile(VIDEO_ID)


def _rule(message: str) -> PydanticCustomError:
    return PydanticCustomError("spec_rule", message)


class AudioSource(BaseModel):
    """The song: the key of an upload (POST /v1/uploads) or an http(s) URL the renderer downloads."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, min_length=1, max_length=1024, description="Key returned by an upload",
                            examples=["uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"])
    url: str | None = Field(default=None, min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$",
                            description="Public http(s) URL of the song", examples=["https://example.com/song.ogg"])
    bpm: float | None = Field(default=None, ge=BPM_MIN, le=BPM_MAX, examples=[97],
                              description="The song's tempo in beats per minute, if you know it: replaces tempo detection")
    beatOffsetSeconds: float | None = Field(
        default=None, ge=BEAT_OFFSET_MIN_SECONDS, le=BEAT_OFFSET_MAX_SECONDS, examples=[0.42],
        description="Time in seconds of any one beat, e.g. the first downbeat; requires bpm (the beat grid is then exact)")

    @model_validator(mode="after")
    def _one_source(self) -> AudioSource:
        if (self.key is None) == (self.url is None):
            raise _rule("set exactly one of audio.key and audio.url")
        if self.beatOffsetSeconds is not None and self.bpm is None:
            raise _rule("audio.beatOffsetSeconds requires audio.bpm")  # the CRD's rule, in the same words
        return self


class Style(BaseModel):
    """How the pictures are made."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend = Field(default="procedural", description="procedural (local, deterministic) or replicate (AI images)")
    prompt: str | None = Field(default=None, max_length=2000, description="Text prompt; required for replicate",
                               examples=["neon city at night, synthwave"])
    seed: int | None = Field(default=None, ge=0, le=INT64_MAX, description="The same seed renders the same video")
    model: str | None = Field(default=None, max_length=256, description="Replicate model owner/name[:version]")

    @model_validator(mode="after")
    def _prompt_for_replicate(self) -> Style:
        if self.backend == "replicate" and not self.prompt:
            raise _rule("style.prompt is required when style.backend is replicate")
        return self


class VideoOptions(BaseModel):
    """Frame size, frame rate, cutting and encoding."""

    model_config = ConfigDict(extra="forbid")

    width: int | None = Field(default=None, ge=16, le=7680, multiple_of=2, description="Frame width in pixels (even)")
    height: int | None = Field(default=None, ge=16, le=4320, multiple_of=2, description="Frame height in pixels (even)")
    aspectRatio: AspectRatio | None = Field(default=None, description="With height, sets the width")
    fps: int = Field(default=30, ge=1, le=60)
    cutEvery: CutEvery = Field(default="beat", description="How often the picture changes, in musical time")
    preset: Preset = Field(default="veryfast", description="x264 preset (speed against file size)")
    crf: int | None = Field(default=None, ge=0, le=51, description="x264 constant rate factor (0 lossless .. 51 worst)")

    @model_validator(mode="after")
    def _size_rules(self) -> VideoOptions:
        # The CRD's x-kubernetes-validations, in the same words.
        if self.width is not None and self.height is None:
            raise _rule("video.width requires video.height")
        if self.width is not None and self.aspectRatio is not None:
            raise _rule("set video.width or video.aspectRatio, not both")
        if self.height is not None and self.width is None and self.aspectRatio is None:
            raise _rule("video.height requires video.width or video.aspectRatio")
        if self.aspectRatio is not None and self.height is None:
            raise _rule("video.aspectRatio requires video.height")
        return self


class VideoCreate(BaseModel):
    """A render request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"audio": {"key": "uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"},
         "style": {"backend": "procedural", "seed": 7},
         "video": {"height": 720, "aspectRatio": "16:9", "fps": 30, "cutEvery": "beat"}},
        {"audio": {"url": "https://example.com/song.ogg", "bpm": 97, "beatOffsetSeconds": 0.42},
         "style": {"backend": "replicate", "prompt": "neon city at night, synthwave"},
         "video": {"width": 1080, "height": 1920, "preset": "fast", "crf": 23}},
    ]})

    audio: AudioSource
    style: Style = Field(default_factory=Style)
    video: VideoOptions = Field(default_factory=VideoOptions)
    retries: int | None = Field(default=None, ge=0, le=10, description="Retries after render errors (default 2)")
    deadlineSeconds: int | None = Field(default=None, ge=60, le=604800,
                                        description="Time budget of the whole render (default 3600)")


class AudioPublic(BaseModel):
    """The song a video is rendered from."""

    key: str | None = Field(default=None, description="Upload key, when the song was uploaded to VibeCraft")
    url: str = Field(description="Where the renderer reads the song")
    bpm: float | None = Field(default=None, description="The tempo given in the request, if any")
    beatOffsetSeconds: float | None = Field(default=None, description="The beat time given in the request, if any")


class StylePublic(BaseModel):
    """Style settings as stored."""

    backend: str = "procedural"
    prompt: str | None = None
    seed: int | None = None
    model: str | None = None


class VideoOptionsPublic(BaseModel):
    """Video settings as stored (with the CRD's defaults applied)."""

    width: int | None = None
    height: int | None = None
    aspectRatio: str | None = None
    fps: int | None = None
    cutEvery: str | None = None
    preset: str | None = None
    crf: int | None = None


class ProgressPublic(BaseModel):
    """Progress of the current attempt, as the renderer reports it."""

    stage: str | None = Field(default=None, examples=["frames"])
    percent: float | None = Field(default=None, examples=[42.5])
    framesDone: int | None = None
    framesTotal: int | None = None
    etaSeconds: float | None = None
    message: str | None = None


class FailurePublic(BaseModel):
    """Why the last attempt failed."""

    reason: str | None = Field(default=None, examples=["BadAudio"])
    message: str | None = Field(default=None, examples=["input has no audio stream (not an audio file?)"])
    kind: str | None = Field(default=None, examples=["permanent"])
    attempt: int | None = None
    time: str | None = None


class OutputPublic(BaseModel):
    """Facts about the finished video (download it with the download link)."""

    durationSeconds: float | None = None
    sizeBytes: int | None = None


class SectionPublic(BaseModel):
    """A part of the song (intro, verse, ...)."""

    start: float | None = None
    end: float | None = None
    label: str | None = None


class AnalysisPublic(BaseModel):
    """What the audio analysis found."""

    tempo: float | None = Field(default=None, description="Beats per minute (audio.bpm when given)")
    tempoSource: TempoSource | None = Field(
        default=None, description="given (audio.bpm) or detected (found in the audio)")
    confidence: float | None = Field(default=None, ge=0, le=1,
                                     description="How sure the beat tracker is of tempo and beats, 0..1")
    beats: int | None = None
    sections: list[SectionPublic] | None = None


class VideoLinks(BaseModel):
    """Related endpoints."""

    self: str = Field(examples=["/v1/videos/mv-0lq3k2j9a7x1c9d2e4f6"])
    events: str = Field(examples=["/v1/videos/mv-0lq3k2j9a7x1c9d2e4f6/events"])
    download: str = Field(examples=["/v1/videos/mv-0lq3k2j9a7x1c9d2e4f6/download"])


class VideoPublic(BaseModel):
    """A video and the state of its render."""

    id: str = Field(examples=["mv-0lq3k2j9a7x1c9d2e4f6"])
    phase: Phase = Field(description="Pending, Queued, Running, then Succeeded, Failed or Cancelled")
    createdAt: datetime | None = None
    audio: AudioPublic
    style: StylePublic
    video: VideoOptionsPublic
    retries: int | None = None
    deadlineSeconds: int | None = None
    progress: ProgressPublic | None = None
    attempts: int = 0
    failure: FailurePublic | None = None
    output: OutputPublic | None = None
    analysis: AnalysisPublic | None = None
    deleting: bool = Field(default=False, description="Cancelled and being deleted")
    links: VideoLinks


class VideosPublic(BaseModel):
    """One page of videos, oldest first."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    items: list[VideoPublic]
    continue_: str | None = Field(default=None, alias="continue",
                                  description="Pass as ?continue= for the next page; null on the last page")


class DownloadLinks(BaseModel):
    """Presigned S3 URLs of a finished video; they expire at expiresAt."""

    videoUrl: str = Field(examples=["https://s3.example.com/vibecraft/videos/acme/mv-0lq3k2j9a7x1c9d2e4f6/video.mp4?X-Amz-..."])
    thumbnailUrl: str | None = None
    expiresAt: datetime
    sizeBytes: int | None = None
    durationSeconds: float | None = None


class StreamEnd(BaseModel):
    """Data of the last event of a stream."""

    id: str
    phase: str
    reason: Literal["finished", "deleted"]
