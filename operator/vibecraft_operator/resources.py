"""How much memory and CPU a render gets: spec values, else an estimate from the frame size."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vibecraft_common.limits import CLIP_MEMORY_BYTES, DEFAULT_FPS
from vibecraft_common.limits import frame_size as frame_size_of

from vibecraft_operator.errors import InvalidSpec
from vibecraft_operator.quantities import format_mebibytes, memory_bytes, parse_quantity
from vibecraft_operator.settings import Settings


@dataclass(frozen=True)
class RenderResources:
    """Requests and limits of one attempt (memory is also the limit the OOM escalation raises)."""

    memory: str
    cpu: str
    max_memory: str


def frame_size(video: Mapping[str, Any]) -> tuple[int, int]:
    """Output width and height, exactly as the renderer will render them (vibecraft_common.limits.frame_size)."""
    height, width = video.get("height"), video.get("width")
    return frame_size_of(int(width) if width else None, int(height) if height else None, video.get("aspectRatio"),
                         video.get("platform"))


def estimate_memory(video: Mapping[str, Any], settings: Settings, clips: bool = False) -> int:
    """Bytes a render needs before its audio is known: a base plus a share per megapixel, plus the decoded
    clips' frames with style.motion clips (`clips`)."""
    width, height = frame_size(video)
    per_mp = parse_quantity(settings.memory_per_megapixel)
    clip_bytes = CLIP_MEMORY_BYTES if clips else 0
    return memory_bytes(settings.default_memory) + math.ceil(per_mp * width * height / 1_000_000) + clip_bytes


# Scratch a render fills, measured (a 20 s 720p30 render at the default preset and crf: 13.4 MB of
# segments, 0.19 bits per pixel and frame): the segments, then the joined video beside them, plus the
# downloaded and decoded audio and the caches in SCRATCH_BASE.
SCRATCH_BITS_PER_PIXEL_FRAME = 0.2
SCRATCH_COPIES = 2
SCRATCH_BASE = 256 * 1024 * 1024


def estimate_scratch(video: Mapping[str, Any], settings: Settings) -> int:
    """Bytes of scratch disk to request for a render of a song `settings.scratch_request_song_seconds`
    long (its length is unknown until the renderer has the audio), at most the emptyDir's sizeLimit,
    which stays the hard bound (a render that outgrows it fails as DiskFull)."""
    width, height = frame_size(video)
    fps = int(video.get("fps") or DEFAULT_FPS)
    video_bytes = SCRATCH_BITS_PER_PIXEL_FRAME / 8 * width * height * fps * settings.scratch_request_song_seconds
    estimate = SCRATCH_BASE + math.ceil(SCRATCH_COPIES * video_bytes)
    return min(estimate, memory_bytes(settings.scratch_size_limit))


def render_resources(spec: Mapping[str, Any], settings: Settings) -> RenderResources:
    """Resources of a first attempt; the estimate never exceeds maxMemory."""
    res: Mapping[str, Any] = spec.get("resources") or {}
    max_memory = str(res.get("maxMemory") or settings.default_max_memory)
    cpu = str(res.get("cpu") or settings.default_cpu)
    try:
        max_b = memory_bytes(max_memory)
        if res.get("memory"):
            memory = str(res["memory"])
            if memory_bytes(memory) > max_b:
                raise InvalidSpec(f"resources.memory {memory} is above resources.maxMemory {max_memory}")
        else:
            clips = (spec.get("style") or {}).get("motion") == "clips"
            estimate = estimate_memory(spec.get("video") or {}, settings, clips)
            memory = format_mebibytes(estimate) if estimate < max_b else max_memory
        parse_quantity(cpu)
    except ValueError as exc:
        raise InvalidSpec(str(exc)) from exc
    return RenderResources(memory=memory, cpu=cpu, max_memory=max_memory)
