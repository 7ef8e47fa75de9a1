"""Videos: what a client sends to start a render (`VideoCreate`) and what it reads back (`VideoPublic`).

Field names are the CRD's (camelCase) so a validated request dumps straight into the MusicVideo
spec. Style, video, tempo, retries and deadline are vibecraft_common.spec's models, the ones the CRD
is generated from: a bad request is refused here, with the CRD rule's words, instead of by the API
server. Progress, failure and analysis are vibecraft_common.status's.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from vibecraft_common.limits import AUDIO_URL_MAX_LENGTH, AUDIO_URL_MIN_LENGTH, LOUDNESS_TARGET_LUFS, LYRICS_MAX_BYTES
from vibecraft_common.spec import (
    AudioTiming,
    CardText,
    DeadlineSeconds,
    Lyrics,
    Parallelism,
    Reactivity,
    Retries,
    Style,
    TtlSecondsAfterFinished,
    Video,
    rule_error,
)
from vibecraft_common.status import PHASES, TERMINAL_PHASES, Phase
from vibecraft_common.status import AnalysisSummary as AnalysisPublic
from vibecraft_common.status import Failure as FailurePublic
from vibecraft_common.status import Progress as ProgressPublic

__all__ = ["PHASES", "TERMINAL", "AnalysisPublic", "FailurePublic", "Phase", "ProgressPublic", "Style", "VideoOptions"]

TERMINAL = TERMINAL_PHASES
VideoOptions = Video  # spec.video, exactly as the CRD has it
VIDEO_ID = r"^mv-[a-z0-9]{1,60}$"
VIDEO_ID_RE = re.compile(VIDEO_ID)
AUDIO_URL = r"^https?://[^\s]+$"
AUDIO_URL_MESSAGE = "audio.url must be an http:// or https:// URL"


def _http_only(value: object, handler: ValidatorFunctionWrapHandler, message: str) -> str | None:
    """A URL field's check: the pattern stays in the schema; a user reads `message` instead of the regular
    expression."""
    try:
        url: str | None = handler(value)
    except ValidationError as exc:
        if any(e["type"] == "string_pattern_mismatch" for e in exc.errors()):
            raise PydanticCustomError("url_scheme", message) from None
        raise
    return url


class AudioSource(AudioTiming):
    """The song: the key of an upload (POST /v1/uploads) or an http(s) URL the renderer downloads."""

    key: str | None = Field(default=None, min_length=1, max_length=1024, description="Key returned by an upload",
                            examples=["uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"])
    url: str | None = Field(default=None, min_length=AUDIO_URL_MIN_LENGTH, max_length=AUDIO_URL_MAX_LENGTH,
                            pattern=AUDIO_URL, description="Public http(s) URL of the song",
                            examples=["https://example.com/song.ogg"])

    @field_validator("url", mode="wrap")
    @classmethod
    def _http_url(cls, value: object, handler: ValidatorFunctionWrapHandler) -> str | None:
        return _http_only(value, handler, AUDIO_URL_MESSAGE)

    @model_validator(mode="after")
    def _one_source(self) -> AudioSource:
        if (self.key is None) == (self.url is None):
            raise rule_error("set exactly one of audio.key and audio.url")
        return self


class LyricsSource(Lyrics):
    """Lyrics burned in as captions: the text itself, or an http(s) URL the renderer downloads (not s3://: a
    tenant names no bucket)."""

    url: str | None = Field(default=None, min_length=AUDIO_URL_MIN_LENGTH, max_length=AUDIO_URL_MAX_LENGTH,
                            pattern=AUDIO_URL, description=f"Public http(s) URL of an LRC, SRT or WebVTT file (at most "
                                                           f"{LYRICS_MAX_BYTES // 1024} KiB)",
                            examples=["https://example.com/song.lrc"])

    @field_validator("url", mode="wrap")
    @classmethod
    def _http_url(cls, value: object, handler: ValidatorFunctionWrapHandler) -> str | None:
        return _http_only(value, handler, "lyrics.url must be an http:// or https:// URL")


class VideoCreate(BaseModel):
    """A render request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"audio": {"key": "uploads/acme/0f8fad5bd9cb469fa16570867728950e/song.mp3"},
         "style": {"backend": "procedural", "seed": 7},
         "video": {"height": 720, "aspectRatio": "16:9", "fps": 30, "cutEvery": "beat"}},
        {"audio": {"url": "https://example.com/song.ogg", "bpm": 97, "beatOffsetSeconds": 0.42},
         "style": {"backend": "replicate", "prompt": "neon city at night, synthwave"},
         "video": {"width": 1080, "height": 1920, "preset": "fast", "crf": 23}},
        {"audio": {"key": "uploads/acme/0f8fad5bd9cb469fa16570867728950e/mix.flac"}, "parallelism": "auto"},
        {"audio": {"url": "https://example.com/song.ogg"}, "title": "Crossroads", "artist": "HyperRogue",
         "lyrics": {"text": "[00:01.00]First line\n[00:04.50]<00:04.50>Second <00:05.10>line\n"},
         "video": {"platform": "shorts"}},
    ]})

    audio: AudioSource
    style: Style = Field(default_factory=Style)
    video: Video = Field(default_factory=Video)
    retries: Retries | None = None
    deadlineSeconds: DeadlineSeconds | None = None
    ttlSecondsAfterFinished: TtlSecondsAfterFinished | None = None
    parallelism: Parallelism | None = None
    lyrics: LyricsSource | None = None
    title: CardText | None = None
    artist: CardText | None = None
    preview: bool | None = Field(default=None, description="A 15 s preview at 360p first (as ?preview=true)")


class AudioPublic(BaseModel):
    """The song a video is rendered from."""

    key: str | None = Field(default=None, description="Upload key, when the song was uploaded to VibeCraft")
    url: str | None = Field(default=None, description="The song's http(s) URL as given in the request; null for an "
                                                      "uploaded song (see key), whose storage location is not shown")
    bpm: float | None = Field(default=None, description="The tempo given in the request, if any")
    beatOffsetSeconds: float | None = Field(default=None, description="The beat time given in the request, if any")
    normalize: bool = Field(default=True, description=f"Whether the soundtrack is brought to {LOUDNESS_TARGET_LUFS:g} LUFS")


class StylePublic(BaseModel):
    """Style settings as stored."""

    backend: str = "procedural"
    prompt: str | None = None
    seed: int | None = None
    model: str | None = None
    reactivity: list[Reactivity] | None = None
    motion: str | None = None
    clipModel: str | None = None
    maxClips: int | None = None


class VideoOptionsPublic(BaseModel):
    """Video settings as stored (with the CRD's defaults applied)."""

    width: int | None = None
    height: int | None = None
    aspectRatio: str | None = None
    platform: str | None = None
    fps: int | None = None
    cutEvery: str | None = None
    preset: str | None = None
    crf: int | None = None


class LyricsPublic(BaseModel):
    """The lyrics a video is captioned with (inline text is not repeated back)."""

    url: str | None = Field(default=None, description="The lyrics file's http(s) URL, when given as one")
    inline: bool = Field(default=False, description="Whether the lyrics were sent as text")
    format: str = "auto"


class OutputPublic(BaseModel):
    """Facts about the finished video (download it with the download link)."""

    durationSeconds: float | None = None
    sizeBytes: int | None = None


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
    ttlSecondsAfterFinished: int | None = Field(default=None, description="Seconds the finished video is kept "
                                                "before it is deleted with its files; null: the installation's default")
    parallelism: int | Literal["auto"] = Field(default=1, description="Pods the render is split over, or auto")
    preview: bool = Field(default=False, description="A preview: 15 s at 360p (POST …/render renders the whole video)")
    lyrics: LyricsPublic | None = None
    title: str | None = None
    artist: str | None = None
    progress: ProgressPublic | None = None
    queuePosition: int | None = Field(default=None, description="While queued: the place in the render queue "
                                      "(1 starts next); slots go round robin between tenants")
    estimatedStartSeconds: int | None = Field(default=None, description="While queued: estimated seconds from now "
                                              "until the render starts (from recent render durations)")
    attempts: int = 0
    replicatePredictions: int = Field(default=0, description="Replicate predictions charged to this video's finished "
                                                             "attempts (they count against the tenant's monthly budget)")
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
