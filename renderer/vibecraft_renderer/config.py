"""The one typed render configuration, mirroring the MusicVideo spec, built from JSON or CLI flags.

The operator passes the MusicVideo `spec` verbatim in VIBECRAFT_SPEC_JSON; the CLI builds the same
object from flags, so both paths share validation and defaults.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from vibecraft_common.limits import BEAT_OFFSET_MAX_SECONDS, BEAT_OFFSET_MIN_SECONDS, BPM_MAX, BPM_MIN

from .errors import UsageError

Backend = Literal["procedural", "replicate"]
CutEvery = Literal["beat", "2beats", "bar", "phrase"]

BACKENDS: Final[tuple[Backend, ...]] = ("procedural", "replicate")
CUT_EVERY: Final[tuple[CutEvery, ...]] = ("beat", "2beats", "bar", "phrase")
ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")
X264_PRESETS: Final = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
)  # fmt: skip
DEFAULT_MODEL: Final = "black-forest-labs/flux-schnell"
# x264 dominates render time on full-frame motion: on 2 cores at 720p30, ultrafast renders a song
# in ~0.4x its length, superfast ~0.7x, veryfast ~1x (files are ~2x / 1.4x / 1x the size).
DEFAULT_PRESET: Final = "ultrafast"
DEFAULT_HEIGHT: Final = 720
MAX_WIDTH: Final = 7680  # same bounds as the CRD; the memory guard stops what does not fit
MAX_HEIGHT: Final = 7680
DEFAULT_SEGMENT_SECONDS: Final = 30.0


@dataclass(frozen=True)
class StyleSpec:
    """spec.style: which visual backend and what to ask it for."""

    backend: Backend = "procedural"
    prompt: str = ""
    seed: int = 0
    model: str = DEFAULT_MODEL


@dataclass(frozen=True)
class VideoSpec:
    """spec.video: geometry, rhythm of cuts and encoder knobs (aspectRatio is resolved into width)."""

    width: int = 1280
    height: int = DEFAULT_HEIGHT
    fps: int = 30
    cut_every: CutEvery = "beat"
    preset: str = DEFAULT_PRESET
    crf: int = 23


@dataclass(frozen=True)
class RenderSpec:
    """A MusicVideo spec: where the audio is, how it should look, where the results go."""

    audio_url: str
    output_url: str
    style: StyleSpec = field(default_factory=StyleSpec)
    video: VideoSpec = field(default_factory=VideoSpec)
    bpm: float | None = None  # spec.audio.bpm: replaces tempo detection
    beat_offset: float | None = None  # spec.audio.beatOffsetSeconds: the time of one beat (only with bpm)

    def fingerprint(self) -> dict[str, Any]:
        """Everything that changes the pixels; hashed into segment and cache keys."""
        return {
            # A given tempo or beat moves the beat grid, hence the cuts and pulses.
            "audio": {"bpm": self.bpm, "beatOffsetSeconds": self.beat_offset},
            "style": {
                "backend": self.style.backend,
                "prompt": self.style.prompt,
                "seed": self.style.seed,
                "model": self.style.model if self.style.backend == "replicate" else "",
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


def _obj(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"spec.{where} must be an object")
    return cast(Mapping[str, Any], value)


def _int(value: object, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"spec.{where} must be an integer")
    if isinstance(value, int):
        if not lo <= value <= hi:
            raise UsageError(f"spec.{where} must be between {lo} and {hi}, got {value!r}")
        return value
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"spec.{where} must be an integer, got {value!r}") from None
    if number != int(number):
        raise UsageError(f"spec.{where} must be an integer, got {value!r}")
    if not lo <= number <= hi:
        raise UsageError(f"spec.{where} must be between {lo} and {hi}, got {value!r}")
    return int(number)


def _number(value: object, where: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"spec.{where} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"spec.{where} must be a number, got {value!r}") from None
    if not lo <= number <= hi:  # also refuses nan
        raise UsageError(f"spec.{where} must be between {lo:g} and {hi:g}, got {value!r}")
    return number


def audio_timing(audio: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """spec.audio.bpm and spec.audio.beatOffsetSeconds, within vibecraft_common.limits."""
    bpm = None if audio.get("bpm") is None else _number(audio["bpm"], "audio.bpm", BPM_MIN, BPM_MAX)
    offset = audio.get("beatOffsetSeconds")
    if offset is None:
        return bpm, None
    if bpm is None:
        raise UsageError("spec.audio.beatOffsetSeconds requires spec.audio.bpm (the offset places a beat of that tempo)")
    return bpm, _number(offset, "audio.beatOffsetSeconds", BEAT_OFFSET_MIN_SECONDS, BEAT_OFFSET_MAX_SECONDS)


def _choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"spec.{where} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _even(n: float) -> int:
    """yuv420p needs even dimensions."""
    return max(2, round(n / 2.0) * 2)


def _parse_ratio(text: str) -> tuple[int, int]:
    try:
        w_s, h_s = text.split(":")
        w, h = int(w_s), int(h_s)
    except ValueError:
        raise UsageError(f"spec.video.aspectRatio must look like 16:9, got {text!r}") from None
    if w <= 0 or h <= 0 or max(w, h) / min(w, h) > 4:
        raise UsageError(f"spec.video.aspectRatio {text!r} is out of range")
    return w, h


def resolve_size(width: int | None, height: int | None, aspect_ratio: str | None) -> tuple[int, int]:
    """Turn width/height/aspectRatio (any two, or just one) into even pixel dimensions."""
    if width is not None and height is not None:
        if aspect_ratio is not None:
            raise UsageError("give spec.video width+height or aspectRatio+height, not all three")
        w, h = width, height
    else:
        rw, rh = _parse_ratio(aspect_ratio or "16:9")
        if width is not None:
            w, h = width, _even(width * rh / rw)
        else:
            h = height if height is not None else DEFAULT_HEIGHT
            w = _even(h * rw / rh)
    if w % 2 or h % 2:
        raise UsageError(f"video size {w}x{h} must have even width and height (H.264 yuv420p)")
    if not (16 <= w <= MAX_WIDTH and 16 <= h <= MAX_HEIGHT):
        raise UsageError(f"video size {w}x{h} is out of range (16..{MAX_WIDTH})")
    return w, h


def _url(section: Mapping[str, Any], where: str) -> str:
    url = section.get("url")
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"spec.{where}.url is required")
    return url.strip()


def spec_from_dict(spec: Mapping[str, Any]) -> RenderSpec:
    """Validate a MusicVideo spec (camelCase, as stored in the custom resource); unknown keys are ignored."""
    audio = _obj(spec.get("audio"), "audio")
    output = _obj(spec.get("output"), "output")
    style_d = _obj(spec.get("style"), "style")
    video_d = _obj(spec.get("video"), "video")

    backend = cast(Backend, _choice(style_d.get("backend", "procedural"), "style.backend", BACKENDS))
    prompt = style_d.get("prompt", "")
    if not isinstance(prompt, str):
        raise UsageError("spec.style.prompt must be a string")
    model = style_d.get("model") or DEFAULT_MODEL
    if not isinstance(model, str) or "/" not in model:
        raise UsageError(f"spec.style.model must look like owner/name[:version], got {model!r}")
    seed = _int(style_d.get("seed", 0), "style.seed", 0, 2**63 - 1)

    width = None if video_d.get("width") is None else _int(video_d["width"], "video.width", 16, MAX_WIDTH)
    height = None if video_d.get("height") is None else _int(video_d["height"], "video.height", 16, MAX_HEIGHT)
    ratio = video_d.get("aspectRatio")
    if ratio is not None and not isinstance(ratio, str):
        raise UsageError("spec.video.aspectRatio must be a string like 16:9")
    w, h = resolve_size(width, height, ratio)
    bpm, beat_offset = audio_timing(audio)
    video = VideoSpec(
        width=w,
        height=h,
        fps=_int(video_d.get("fps", 30), "video.fps", 1, 120),
        cut_every=cast(CutEvery, _choice(video_d.get("cutEvery", "beat"), "video.cutEvery", CUT_EVERY)),
        preset=_choice(video_d.get("preset", DEFAULT_PRESET), "video.preset", X264_PRESETS),
        crf=_int(video_d.get("crf", 23), "video.crf", 0, 51),
    )
    return RenderSpec(
        audio_url=_url(audio, "audio"),
        output_url=_url(output, "output"),
        style=StyleSpec(backend=backend, prompt=prompt, seed=seed, model=model),
        video=video,
        bpm=bpm,
        beat_offset=beat_offset,
    )


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
    seg = _env_float("VIBECRAFT_SEGMENT_SECONDS")
    if seg is not None:
        values["segment_seconds"] = seg
    mem = _env_float("VIBECRAFT_MEMORY_LIMIT_MB")
    if mem is not None:
        values["memory_limit_mb"] = mem
    if os.environ.get("VIBECRAFT_WORK_DIR"):
        values["work_dir"] = os.environ["VIBECRAFT_WORK_DIR"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    opts = RuntimeOptions(**values)
    if not 1.0 <= opts.segment_seconds <= 3600.0:
        raise UsageError(f"segment length must be between 1 and 3600 s, got {opts.segment_seconds}")
    if not 1 <= opts.images_per_section <= 16:
        raise UsageError("images per section must be between 1 and 16")
    if not 1 <= opts.replicate_concurrency <= 16:
        raise UsageError("replicate concurrency must be between 1 and 16")
    return opts
