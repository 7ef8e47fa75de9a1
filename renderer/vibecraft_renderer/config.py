"""The one typed render configuration, mirroring the MusicVideo spec, built from JSON or CLI flags.

The operator passes the MusicVideo `spec` verbatim in VIBECRAFT_SPEC_JSON; the CLI builds the same
object from flags, so both paths share validation and defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pydantic import BaseModel, Field, ValidationError
from vibecraft_common.limits import (
    AUDIO_URL_MAX_LENGTH,
    DEFAULT_CLIP_MODEL,
    DEFAULT_CRF,
    DEFAULT_MAX_CLIPS,
    DEFAULT_MODEL,
    DEFAULT_PRESET,
    DEFAULT_REACT_SMOOTHING_SECONDS,
    DEFAULT_SEGMENT_SECONDS,
    Backend,
    CutEvery,
    Motion,
)
from vibecraft_common.resource import (
    ENV_MEMORY_LIMIT_MB,
    ENV_REPLICATE_MAX_PREDICTIONS,
    ENV_SEGMENT_SECONDS,
    ENV_WORK_DIR,
)
from vibecraft_common.spec import AudioTiming, CardText, Lyrics, Style, Video

from .errors import UsageError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Coupling:
    """One entry of spec.style.reactivity: `target` moves by `amount` x `source` (smoothed over `smoothing` s)."""

    source: str
    target: str
    amount: float = 1.0
    smoothing: float = DEFAULT_REACT_SMOOTHING_SECONDS


@dataclass(frozen=True)
class StyleSpec:
    """spec.style: which visual backend and what to ask it for (defaults resolved)."""

    backend: Backend = "procedural"
    prompt: str = ""
    seed: int = 0
    model: str = DEFAULT_MODEL
    reactivity: tuple[Coupling, ...] | None = None  # spec.style.reactivity; None: the built-in look
    motion: Motion = "stills"  # spec.style.motion: clips animates images with clip_model (replicate only)
    clip_model: str = DEFAULT_CLIP_MODEL
    max_clips: int = DEFAULT_MAX_CLIPS


@dataclass(frozen=True)
class VideoSpec:
    """spec.video with aspectRatio resolved into the width, and the encoder's defaults filled in."""

    width: int = 1280
    height: int = 720
    fps: int = 30
    cut_every: CutEvery = "beat"
    preset: str = DEFAULT_PRESET
    crf: int = DEFAULT_CRF


@dataclass(frozen=True)
class TextSpec:
    """spec.lyrics, spec.title and spec.artist: what is written into the picture (captions.py)."""

    lyrics_url: str | None = None
    lyrics_text: str | None = None
    lyrics_format: str = "auto"
    title: str | None = None
    artist: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.lyrics_url, self.lyrics_text, self.title, self.artist))

    def fingerprint(self) -> dict[str, Any]:
        """The text's identity for keys: inline lyrics by hash (up to 16384 characters). Not a lyrics URL (a
        presigned one changes with every signature): what its file holds is in the render key once read
        (the caption script's hash), and the URL in a split render's plan inputs."""
        text = None if self.lyrics_text is None else hashlib.sha256(self.lyrics_text.encode()).hexdigest()[:16]
        return {"lyricsFromUrl": self.lyrics_url is not None, "lyricsText": text, "lyricsFormat": self.lyrics_format,
                "title": self.title, "artist": self.artist}


@dataclass(frozen=True)
class RenderSpec:
    """A MusicVideo spec: where the audio is, how it should look, where the results go."""

    audio_url: str
    output_url: str
    style: StyleSpec = field(default_factory=StyleSpec)
    video: VideoSpec = field(default_factory=VideoSpec)
    bpm: float | None = None  # spec.audio.bpm: replaces tempo detection
    beat_offset: float | None = None  # spec.audio.beatOffsetSeconds: the time of one beat (only with bpm)
    normalize: bool = True  # spec.audio.normalize: the soundtrack at LOUDNESS_TARGET_LUFS
    text: TextSpec = field(default_factory=TextSpec)  # spec.lyrics, spec.title, spec.artist
    preview: bool = False  # spec.preview: PREVIEW_SECONDS at PREVIEW_HEIGHT instead of the whole video

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the pixels; hashed into segment and cache keys (the text only when there
        is some: a render without captions keeps the key it had before they existed)."""
        return ({"text": self.text.fingerprint()} if self.text else {}) | {
            # A given tempo or beat moves the beat grid, hence the cuts and pulses.
            "audio": {"bpm": self.bpm, "beatOffsetSeconds": self.beat_offset},
            "style": {
                "backend": self.style.backend,
                "prompt": self.style.prompt,
                "seed": self.style.seed,
                "model": self.style.model if self.style.backend == "replicate" else "",
                **({"reactivity": [dataclasses.asdict(c) for c in self.style.reactivity]}
                   if self.style.reactivity is not None else {}),
                **({"motion": "clips", "clipModel": self.style.clip_model, "maxClips": self.style.max_clips}
                   if self.style.motion == "clips" else {}),
            },
            "video": {
                "width": self.video.width,
                "height": self.video.height,
                "fps": self.video.fps,
                "cutEvery": self.video.cut_every,
                "preset": self.video.preset,
                "crf": self.video.crf,
            },
        }


@dataclass(frozen=True)
class RuntimeOptions:
    """Knobs of this run that are not part of the MusicVideo spec (CLI flags or VIBECRAFT_* env)."""

    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    work_dir: str | None = None
    images_per_section: int = 2
    replicate_concurrency: int = 3
    memory_limit_mb: float | None = None
    keep_segments: bool = False
    max_predictions: int | None = None  # Replicate predictions this run may create (None: no budget)


class _LocalLyrics(Lyrics):
    """spec.lyrics as the renderer takes it: lyrics.url may also be a local path or file:// URL (the CLI's
    --lyrics FILE), as audio.url may; the CRD and the API allow only s3:// and http(s):// there."""

    url: str | None = Field(default=None, min_length=1, max_length=AUDIO_URL_MAX_LENGTH)


class _Text(BaseModel):
    """The spec's text fields, checked by the contract's own types."""

    lyrics: _LocalLyrics | None = None
    title: CardText | None = None
    artist: CardText | None = None


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"spec.{where} must be an object")
    return cast(Mapping[str, Any], value)


def _validated(model: type[M], data: Mapping[str, Any], where: str) -> M:
    """A part of the spec checked by the contract's model (the CRD's bounds, enums and rules).

    The first problem becomes a UsageError naming the field, in pydantic's words as the API says it
    (e.g. "spec.video.fps: Input should be less than or equal to 60, got 61").
    """
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "spec_rule":  # a CEL rule's twin: its message names the fields itself
            raise UsageError(f"spec.{error['msg']}") from None
        path = ".".join(str(p) for p in (where, *error["loc"]) if p != "")
        raise UsageError(f"spec.{path}: {error['msg']}, got {error['input']!r}") from None


def _url(section: Mapping[str, Any], where: str) -> str:
    # Not the CRD's URL rules: the renderer also reads and writes local paths and file:// URLs.
    url = section.get("url")
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"spec.{where}.url is required")
    return url.strip()


def spec_from_dict(spec: Mapping[str, Any]) -> RenderSpec:
    """Validate a MusicVideo spec (camelCase, as stored in the custom resource).

    Style, video and the given tempo go through vibecraft_common.spec's models; fields the renderer
    does not use (resources, retries...) are the operator's and are ignored here.
    """
    audio = _obj(spec.get("audio"), "audio")
    timing = _validated(AudioTiming, {k: v for k, v in audio.items() if k in ("bpm", "beatOffsetSeconds", "normalize")},
                        "audio")
    style = _validated(Style, _obj(spec.get("style"), "style"), "style")
    video = _validated(Video, _obj(spec.get("video"), "video"), "video")
    width, height = video.frame_size()
    text = _validated(_Text, {k: v for k, v in spec.items() if k in ("lyrics", "title", "artist")}, "")
    return RenderSpec(
        audio_url=_url(audio, "audio"),
        output_url=_url(_obj(spec.get("output"), "output"), "output"),
        style=StyleSpec(backend=style.backend, prompt=style.prompt or "", seed=style.seed or 0,
                        model=style.model or DEFAULT_MODEL,
                        reactivity=None if style.reactivity is None else tuple(
                            Coupling(r.source, r.target, r.amount, r.smoothing) for r in style.reactivity),
                        motion=style.motion or "stills", clip_model=style.clipModel or DEFAULT_CLIP_MODEL,
                        max_clips=style.maxClips or DEFAULT_MAX_CLIPS),
        video=VideoSpec(width=width, height=height, fps=video.fps, cut_every=video.cutEvery, preset=video.preset,
                        crf=DEFAULT_CRF if video.crf is None else video.crf),
        bpm=timing.bpm,
        beat_offset=timing.beatOffsetSeconds,
        normalize=timing.normalize,
        preview=_preview(spec.get("preview")),
        text=TextSpec(lyrics_url=text.lyrics.url if text.lyrics else None,
                      lyrics_text=text.lyrics.text if text.lyrics else None,
                      lyrics_format=text.lyrics.format if text.lyrics else "auto", title=text.title, artist=text.artist),
    )


def _preview(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise UsageError(f"spec.preview must be true or false, got {value!r}")


def spec_from_json(text: str) -> RenderSpec:
    """Parse VIBECRAFT_SPEC_JSON; accepts either the spec itself or a whole MusicVideo object."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"spec JSON is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("spec JSON must be an object")
    if "spec" in data and isinstance(data["spec"], dict) and "audio" not in data:
        data = data["spec"]
    return spec_from_dict(data)


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"env {name} must be a number, got {raw!r}") from None


def runtime_from_env(**overrides: Any) -> RuntimeOptions:
    """Runtime knobs from VIBECRAFT_* env vars, with explicit (non-None) overrides from flags winning."""
    values: dict[str, Any] = {}
    seg = _env_float(ENV_SEGMENT_SECONDS)
    if seg is not None:
        values["segment_seconds"] = seg
    mem = _env_float(ENV_MEMORY_LIMIT_MB)
    if mem is not None:
        values["memory_limit_mb"] = mem
    if os.environ.get(ENV_WORK_DIR):
        values["work_dir"] = os.environ[ENV_WORK_DIR]
    budget = _env_float(ENV_REPLICATE_MAX_PREDICTIONS)
    if budget is not None:
        if budget < 0 or budget != int(budget):
            raise UsageError(f"env {ENV_REPLICATE_MAX_PREDICTIONS} must be a whole number ≥ 0, got {budget}")
        values["max_predictions"] = int(budget)
    values.update({k: v for k, v in overrides.items() if v is not None})
    opts = RuntimeOptions(**values)
    if not 1.0 <= opts.segment_seconds <= 3600.0:
        raise UsageError(f"segment length must be between 1 and 3600 s, got {opts.segment_seconds}")
    if not 1 <= opts.images_per_section <= 16:
        raise UsageError("images per section must be between 1 and 16")
    if not 1 <= opts.replicate_concurrency <= 16:
        raise UsageError("replicate concurrency must be between 1 and 16")
    return opts
