"""The MusicVideo spec as typed models: the one definition the CRD, the API and the renderer share.

- The CRD's openAPIV3Schema is generated from these models (`make crds`, vibecraft_common.crd), with
  the CEL rules (`x-kubernetes-validations`) written beside the fields they guard.
- The API builds its request model from the same pieces (Style, Video, AudioTiming, Retries...).
- The renderer validates VIBECRAFT_SPEC_JSON and its CLI flags with `MusicVideoSpec`.

Every CEL rule has a Python twin (a model validator with the same message), so a request is refused
with the same words by the API, the renderer and the Kubernetes API server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from . import limits as L

S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
# One grammar for every object key a tenant names (issue 18), in the API (upload keys) and the CRD (s3://
# URLs): segments of letters, digits, `_` and `-` joined by single dots, separated by single slashes. So no
# `.` or `..` segment, no `//`, no `%` escapes, no backslash, space or control character: a key means the
# same to every store, proxy and prefix check. (RE2 syntax: the API server's CEL uses it too.)
S3_KEY_SEGMENT = r"[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*"  # no backslash: CEL string literals would need it doubled
S3_KEY = rf"{S3_KEY_SEGMENT}(/{S3_KEY_SEGMENT})*"
AUDIO_S3_PATTERN = rf"^s3://{S3_BUCKET}/{S3_KEY}$"
OUTPUT_URL_PATTERN = rf"^s3://{S3_BUCKET}(/({S3_KEY}/?)?)?$"
MODEL_PATTERN = r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(:[A-Za-z0-9]+)?$"  # Replicate's owner/name[:version]
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
K8S_DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """CEL rules for the CRD (`x-kubernetes-validations`), kept in the field's JSON schema."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


# In the CRD, the field's CEL rules replace its `pattern`/`enum` (the API server then names the field
# and the rule in its error instead of printing a regular expression or "Unsupported value").
CEL_INSTEAD: dict[str, Any] = {"x-crd-cel-instead": True}


def rule_error(message: str) -> PydanticCustomError:
    """A cross-field rule broken: the CEL rule's message, as a field error."""
    return PydanticCustomError("spec_rule", message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------- audio

Bpm = Annotated[float, Field(
    ge=L.BPM_MIN, le=L.BPM_MAX, examples=[97],
    description=f"The song's tempo in beats per minute, if you know it: replaces tempo detection (the beats' "
                f"phase is still found in the audio unless beatOffsetSeconds is set too). "
                f"{L.BPM_MIN:g} to {L.BPM_MAX:g}.")]
BeatOffset = Annotated[float, Field(
    ge=L.BEAT_OFFSET_MIN_SECONDS, le=L.BEAT_OFFSET_MAX_SECONDS, examples=[0.42],
    description=f"The time in seconds of any one beat, e.g. the first downbeat; requires bpm. With both, the beat "
                f"grid is exactly bpm beats per minute through this time and nothing is detected. "
                f"{L.BEAT_OFFSET_MIN_SECONDS:g} to {L.BEAT_OFFSET_MAX_SECONDS:g}.")]
BEAT_OFFSET_RULE = ("!has(self.beatOffsetSeconds) || has(self.bpm)", "audio.beatOffsetSeconds requires audio.bpm")


class AudioTiming(_Strict):
    """What a musician may say about the song's beat and sound (the API's audio object adds where the song is)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=cel(BEAT_OFFSET_RULE))

    bpm: Bpm | None = None
    beatOffsetSeconds: BeatOffset | None = None
    normalize: bool = Field(
        default=True, description=f"Bring the soundtrack to {L.LOUDNESS_TARGET_LUFS:g} LUFS integrated loudness (peaks "
                                  f"limited near {L.LOUDNESS_TRUE_PEAK_DBTP:g} dBTP), as streaming platforms play it; "
                                  "false keeps the song's own level.")

    @model_validator(mode="after")
    def _offset_needs_bpm(self) -> AudioTiming:
        if self.beatOffsetSeconds is not None and self.bpm is None:
            raise rule_error(BEAT_OFFSET_RULE[1])
        return self


class Audio(AudioTiming):
    """The song and, optionally, its tempo."""

    url: str = Field(
        min_length=L.AUDIO_URL_MIN_LENGTH, max_length=L.AUDIO_URL_MAX_LENGTH,
        pattern=rf"^(s3://{S3_BUCKET}/{S3_KEY}|https?://.+)$",
        description="The song, as an s3://, https:// or http:// URL.",
        json_schema_extra=cel(
            ("self.startsWith('s3://') || self.startsWith('https://') || self.startsWith('http://')",
             "audio.url must be an s3://, https:// or http:// URL"),
            (f"!self.startsWith('s3://') || self.matches('{AUDIO_S3_PATTERN}')",
             "audio.url must name a bucket and an object: s3://bucket/path/song.ogg, the key made of letters, "
             "digits, '_', '-' and single dots between single slashes"),
        ) | CEL_INSTEAD,
    )


# --------------------------------------------------------------------------------------------- style

BACKEND_RULE = (f"self in {list(L.BACKENDS)!r}", f"style.backend must be {' or '.join(L.BACKENDS)}")
PROMPT_RULE = ("!has(self.backend) || self.backend != 'replicate' || (has(self.prompt) && self.prompt.size() > 0)",
               "style.prompt is required when style.backend is replicate")
MOTION_RULE = (f"self in {list(L.MOTIONS)!r}", f"style.motion must be {' or '.join(L.MOTIONS)}")
CLIPS_RULE = ("!has(self.motion) || self.motion != 'clips' || (has(self.backend) && self.backend == 'replicate')",
              "style.motion clips needs style.backend replicate (an image-to-video model animates its images)")


class Reactivity(_Strict):
    """One coupling from the music to the picture: target moves by amount x source (0..~1 per frame)."""

    source: L.ReactSource = Field(description="kick, snare, onset (any note), bass, mids, highs (band energies), rms "
                                              "(loudness), beat, bar (pulses on the grid), section (its energy).")
    target: L.ReactTarget = Field(description="zoom, rotation, hue, brightness, warp (the scene's flow) or cut (a new "
                                              "shot each time |amount| x source rises through 0.5).")
    amount: float = Field(default=1.0, ge=-L.REACT_AMOUNT_MAX, le=L.REACT_AMOUNT_MAX,
                          description="How strongly; negative inverts (1: a strong, visible coupling).")
    smoothing: float = Field(default=L.DEFAULT_REACT_SMOOTHING_SECONDS, ge=0.0, le=L.REACT_SMOOTHING_MAX_SECONDS,
                             description="Seconds the source takes to fall back after a hit (0: raw).")


class Style(_Strict):
    """How the pictures are made."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=cel(PROMPT_RULE, CLIPS_RULE))

    # An enum in effect; in the CRD a CEL rule instead of `enum` so that the error names the field in
    # plain words (with `enum`, the API server skips CEL rules and says only "Unsupported value").
    backend: L.Backend = Field(
        default="procedural", description="procedural (local, deterministic) or replicate (AI images through Replicate).",
        json_schema_extra={"maxLength": 32, **cel(BACKEND_RULE), **CEL_INSTEAD})
    prompt: str | None = Field(default=None, max_length=L.PROMPT_MAX_LENGTH, examples=["neon city at night, synthwave"],
                               description="Text prompt for the replicate backend (and a colour hint for procedural).")
    seed: int | None = Field(default=None, ge=0, le=L.SEED_MAX, json_schema_extra={"format": "int64"},
                             description="Random seed; the same seed renders the same video.")
    reactivity: list[Reactivity] | None = Field(
        default=None, max_length=L.REACTIVITY_MAX,
        description="Your own mapping from the music to the picture; unset: the built-in look; given (even empty): "
                    "only these couplings move the picture (the scenes' own motion stays).")
    model: str | None = Field(default=None, max_length=L.MODEL_MAX_LENGTH, pattern=MODEL_PATTERN,
                              description="Replicate model (owner/name[:version]); the renderer picks one when empty.",
                              json_schema_extra=cel((f"self.matches('{MODEL_PATTERN}')",
                                                     "style.model must look like owner/name or owner/name:version"))
                              | CEL_INSTEAD)
    motion: L.Motion | None = Field(
        default=None, description="stills (the default: camera moves over generated images) or clips (an "
                                  "image-to-video model animates each section's image, played in time with the beat; "
                                  "replicate only).",
        json_schema_extra={"maxLength": 16, **cel(MOTION_RULE), **CEL_INSTEAD})
    clipModel: str | None = Field(
        default=None, max_length=L.MODEL_MAX_LENGTH, pattern=MODEL_PATTERN,
        description=f"Image-to-video Replicate model for motion clips (owner/name[:version]); empty: "
                    f"{L.DEFAULT_CLIP_MODEL}.",
        json_schema_extra=cel((f"self.matches('{MODEL_PATTERN}')",
                               "style.clipModel must look like owner/name or owner/name:version")) | CEL_INSTEAD)
    maxClips: int | None = Field(default=None, ge=1, le=L.CLIPS_MAX,
                                 description=f"At most this many clips (paid predictions) per render, one per section "
                                             f"group in song order; the other groups stay stills. 1 to {L.CLIPS_MAX}; "
                                             f"empty: {L.DEFAULT_MAX_CLIPS}.")

    @model_validator(mode="after")
    def _prompt_for_replicate(self) -> Style:
        if self.backend == "replicate" and not self.prompt:
            raise rule_error(PROMPT_RULE[1])
        if self.motion == "clips" and self.backend != "replicate":
            raise rule_error(CLIPS_RULE[1])
        return self


# --------------------------------------------------------------------------------------------- video

SIZE_RULES = (
    ("!has(self.width) || has(self.height)", "video.width requires video.height"),
    ("!(has(self.width) && has(self.aspectRatio))", "set video.width or video.aspectRatio, not both"),
    ("!has(self.height) || has(self.width) || has(self.aspectRatio)",
     "video.height requires video.width or video.aspectRatio"),
    ("!has(self.aspectRatio) || has(self.height)", "video.aspectRatio requires video.height"),
)


PLATFORM_RULE = ("!has(self.platform) || !(has(self.width) || has(self.height) || has(self.aspectRatio))",
                 "video.platform sets the frame size: not with video.width, video.height or video.aspectRatio")


class Video(_Strict):
    """Frame size, frame rate, cutting and encoding."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=cel(*SIZE_RULES, PLATFORM_RULE))

    width: int | None = Field(default=None, ge=L.WIDTH_MIN, le=L.WIDTH_MAX, multiple_of=2,
                              description="Frame width in pixels (even).")
    height: int | None = Field(default=None, ge=L.HEIGHT_MIN, le=L.HEIGHT_MAX, multiple_of=2,
                               description="Frame height in pixels (even).")
    aspectRatio: L.AspectRatio | None = Field(default=None, description="With height, sets the width.")
    platform: L.Platform | None = Field(
        default=None, description="Where the video goes, which sets its frame: youtube 1920x1080, shorts / reels / "
                                  "tiktok 1080x1920, square 1080x1080 (not with width, height or aspectRatio).")
    # Bounds only, no CEL twin: the API server would report one mistake twice.
    fps: int = Field(default=L.DEFAULT_FPS, ge=L.FPS_MIN, le=L.FPS_MAX, description="Frames per second.")
    cutEvery: L.CutEvery = Field(default="beat", description="How often the picture changes, in musical time.")
    preset: L.Preset = Field(default=L.DEFAULT_PRESET, description="ffmpeg x264 preset (speed against file size).")
    crf: int | None = Field(default=None, ge=L.CRF_MIN, le=L.CRF_MAX,
                            description=f"x264 constant rate factor ({L.CRF_MIN} lossless .. {L.CRF_MAX} worst); "
                                        f"{L.DEFAULT_CRF} when unset.")

    @model_validator(mode="after")
    def _size_rules(self) -> Video:
        present = {"width": self.width is not None, "height": self.height is not None,
                   "aspectRatio": self.aspectRatio is not None}
        broken = [
            present["width"] and not present["height"],
            present["width"] and present["aspectRatio"],
            present["height"] and not present["width"] and not present["aspectRatio"],
            present["aspectRatio"] and not present["height"],
        ]
        if self.platform is not None and any(present.values()):  # first: the mistake is the platform
            raise rule_error(PLATFORM_RULE[1])
        for (_, message), bad in zip(SIZE_RULES, broken, strict=True):
            if bad:
                raise rule_error(message)
        return self

    def frame_size(self) -> tuple[int, int]:
        """The frame this renders (see limits.frame_size)."""
        return L.frame_size(self.width, self.height, self.aspectRatio, self.platform)


# -------------------------------------------------------------------------------------- output & co.


class Output(_Strict):
    """Where the results go."""

    url: str = Field(
        max_length=L.OUTPUT_URL_MAX_LENGTH, pattern=OUTPUT_URL_PATTERN,
        description="S3 prefix the renderer writes video.mp4, thumbnail.jpg and analysis.json under.",
        json_schema_extra=cel((f"self.matches('{OUTPUT_URL_PATTERN}')",
                               "output.url must be an s3:// prefix such as s3://bucket/videos/name/ (letters, digits, "
                               "'_', '-' and single dots between single slashes)")) | CEL_INSTEAD,
    )


LYRICS_SOURCE_RULE = ("has(self.url) != has(self.text)", "lyrics needs either lyrics.url or lyrics.text, not both")
LYRICS_URL_PATTERN = rf"^(s3://{S3_BUCKET}/{S3_KEY}|https?://.+)$"


class Lyrics(_Strict):
    """Lyrics burned into the picture as captions, each line while it is sung (word by word with word times)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=cel(LYRICS_SOURCE_RULE))

    url: str | None = Field(
        default=None, min_length=L.AUDIO_URL_MIN_LENGTH, max_length=L.AUDIO_URL_MAX_LENGTH, pattern=LYRICS_URL_PATTERN,
        description=f"The lyrics file, as an s3://, https:// or http:// URL (at most {L.LYRICS_MAX_BYTES // 1024} KiB).",
        json_schema_extra=cel((f"self.matches('{LYRICS_URL_PATTERN}')",
                               "lyrics.url must be an s3://bucket/key, https:// or http:// URL")) | CEL_INSTEAD)
    text: str | None = Field(
        default=None, min_length=1, max_length=L.LYRICS_TEXT_MAX_LENGTH,
        description=f"The lyrics themselves, at most {L.LYRICS_TEXT_MAX_LENGTH} characters (longer: lyrics.url): LRC "
                    "([mm:ss.xx] line times, <mm:ss.xx> word times), SRT or WebVTT.")
    format: L.LyricsFormat = Field(
        default="auto", description="lrc, srt or vtt; auto tells them apart by their timestamps.",
        json_schema_extra={"maxLength": 8, **cel((f"self in {list(L.LYRICS_FORMATS)!r}",
                                                  f"lyrics.format must be {', '.join(L.LYRICS_FORMATS)}")),
                           **CEL_INSTEAD})

    @model_validator(mode="after")
    def _one_source(self) -> Lyrics:
        if (self.url is None) == (self.text is None):
            raise rule_error(LYRICS_SOURCE_RULE[1])
        return self


# One line of printable text: no control characters (a line break would end the caption script's event).
CARD_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
CardText = Annotated[str, Field(min_length=1, max_length=L.TITLE_MAX_LENGTH, pattern=CARD_TEXT_PATTERN)]


def _quantity_rule(field: str, above: str, example: str) -> dict[str, Any]:
    return {"x-kubernetes-int-or-string": True, **cel((
        f"isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('{above}'))",
        f"resources.{field} must be a {'positive quantity' if above == '0' else f'quantity above {above}'}, "
        f"such as {example}"))}


Quantity = str | int
MEMORY_ORDER_RULE = (
    "!has(self.memory) || !has(self.maxMemory) || !isQuantity(string(self.memory)) || "
    "!isQuantity(string(self.maxMemory)) || quantity(string(self.memory)).compareTo(quantity(string(self.maxMemory))) <= 0",
    "resources.memory must not be above resources.maxMemory")


class Resources(_Strict):
    """Memory and CPU of the render (checked by the operator with Kubernetes' quantity rules)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "description": "Memory and CPU of the render; memory is estimated from the frame size when unset.",
        **cel(MEMORY_ORDER_RULE)})

    memory: Quantity | None = Field(default=None, description="Memory request and limit of the first attempt, e.g. 1Gi.",
                                    json_schema_extra=_quantity_rule("memory", "64Mi", "1Gi"))
    cpu: Quantity | None = Field(default=None, description="CPU request and limit, e.g. 2 or 500m.",
                                 json_schema_extra=_quantity_rule("cpu", "0", "1 or 500m"))
    maxMemory: Quantity | None = Field(default=None,
                                       description="Ceiling for the memory raised after each OOM kill (x1.5 per retry).",
                                       json_schema_extra=_quantity_rule("maxMemory", "64Mi", "8Gi"))


Retries = Annotated[int, Field(ge=L.RETRIES_MIN, le=L.RETRIES_MAX,
                               description="Retries after render errors (OOM kills and disruptions are retried "
                                           "without counting).")]
DeadlineSeconds = Annotated[int, Field(ge=L.DEADLINE_MIN_SECONDS, le=L.DEADLINE_MAX_SECONDS,
                                       description="Time budget of the whole render, all attempts together.")]
TtlSecondsAfterFinished = Annotated[int, Field(
    ge=0, le=L.TTL_AFTER_FINISHED_MAX_SECONDS,
    description="Seconds a finished MusicVideo (Succeeded, Failed or Cancelled) is kept before the operator "
                "deletes it; unset: the operator's default (none unless configured). Editing it does not render again.")]


Parallelism = Annotated[
    Annotated[int, Field(ge=L.PARALLELISM_MIN, le=L.PARALLELISM_MAX, strict=True)] | Literal["auto"],
    Field(description=f"Pods the render is split over (an Indexed Job), {L.PARALLELISM_MIN}..{L.PARALLELISM_MAX}, "
                      f"or auto: one per {L.AUTO_CHUNK_SECONDS:.0f} s of song, capped by the operator.",
          json_schema_extra={"x-kubernetes-int-or-string": True, **cel((
              f"type(self) == int ? self >= {L.PARALLELISM_MIN} && self <= {L.PARALLELISM_MAX} : self == 'auto'",
              f"parallelism must be {L.PARALLELISM_MIN}..{L.PARALLELISM_MAX} or auto"))})]


class MusicVideoSpec(_Strict):
    """What to render. Editing it (except suspend and ttlSecondsAfterFinished) renders again as a new attempt."""

    audio: Audio
    style: Style = Field(default_factory=Style, json_schema_extra={"default": {}})
    video: Video = Field(default_factory=Video, json_schema_extra={"default": {}})
    output: Output
    resources: Resources | None = None
    retries: Retries = L.DEFAULT_RETRIES
    deadlineSeconds: DeadlineSeconds = L.DEFAULT_DEADLINE_SECONDS
    suspend: bool = Field(default=False, description="Stop the render (its Job is deleted) until set back to false.")
    ttlSecondsAfterFinished: TtlSecondsAfterFinished | None = None
    queueName: str | None = Field(default=None, max_length=63, pattern=K8S_NAME_PATTERN,
                                  description="Kueue LocalQueue; the Job is created suspended for Kueue to admit.")
    priorityClassName: str | None = Field(default=None, max_length=253, pattern=K8S_DNS_SUBDOMAIN_PATTERN,
                                          description="PriorityClass of the render pod.")
    parallelism: Parallelism = L.DEFAULT_PARALLELISM
    preview: bool | None = Field(
        default=None, description=f"Render a {L.PREVIEW_SECONDS:g} s preview from the start of the song's most energetic "
                                  f"section at {L.PREVIEW_HEIGHT}p instead of the whole video (same outputs); setting it "
                                  "back to false renders the whole video, reusing the analysis and generated images.")
    lyrics: Lyrics | None = None
    title: CardText | None = Field(
        default=None,
        description=f"The song's title, on a title card from {L.TITLE_CARD_SECONDS[0]:g} s to "
                    f"{L.TITLE_CARD_SECONDS[1]:g} s.",
    )
    artist: CardText | None = Field(default=None, description="The artist, on the title card (under the title).")
