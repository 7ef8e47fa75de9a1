"""Composition of still images into a beat-cut video: Ken Burns moves, cuts, section crossfades.

Cuts fall on the chosen beat grid (timeline.cut_frames); each shot shows the next image of its
section with its own pan/zoom path, advanced by the bass-energy phase so motion speeds up when
the music is loud; sections crossfade into each other around their boundary.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
from collections import OrderedDict
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from vibecraft_common.limits import CLIP_FPS, CLIP_MAX_FRAMES

from .audio import untrusted_input
from .config import Coupling
from .errors import ReplicateFailedError
from .timeline import FrameContext, Reactions, Timeline

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

CANVAS_MARGIN: Final = 1.3  # images are decoded this much larger than the frame: room to pan and zoom
CLIP_DECODE_TIMEOUT_S: Final = 120.0  # 48 frames of a few seconds of video decode in well under a second


def working_size(width: int, height: int, max_pixels: int = 960 * 540) -> tuple[int, int]:
    """Compositing resolution: output size capped at 960x540-equivalent pixels, even dimensions."""
    scale = min(1.0, math.sqrt(max_pixels / float(width * height)))
    return max(16, round(width * scale / 2) * 2), max(16, round(height * scale / 2) * 2)


def load_image_command(path: Path, width: int, height: int) -> list[str]:
    """The ffmpeg command load_image() runs; the image came from a model the tenant chose: untrusted."""
    vf = f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos,crop={width}:{height}"
    return ["ffmpeg", "-nostdin", "-v", "error", *untrusted_input(path), "-frames:v", "1", "-vf", vf,
            "-f", "rawvideo", "-pix_fmt", "gbrp", "pipe:1"]  # fmt: skip


IMAGE_MAGIC: Final = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "GIF": (b"GIF87a", b"GIF89a")}


def image_format(head: bytes) -> str | None:
    """PNG, JPEG, WebP or GIF from a file's first bytes (what image models answer), else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for name, magics in IMAGE_MAGIC.items() if head.startswith(magics)), None)


def load_image(path: Path, width: int, height: int) -> U8:
    """Decode a PNG, JPEG, WebP or GIF, cover-fit to width x height, as planar GBR uint8.

    The format is checked first: ffmpeg would read many more, some of which (playlists, concat
    scripts) name further files to open."""
    with open(path, "rb") as f:
        if image_format(f.read(16)) is None:
            raise ReplicateFailedError(f"generated image {path.name} is not a PNG, JPEG, WebP or GIF image")
    proc = subprocess.run(load_image_command(path, width, height), capture_output=True, check=False, timeout=120)
    expected = 3 * width * height
    if proc.returncode != 0 or len(proc.stdout) != expected:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["short output"]
        raise ReplicateFailedError(f"generated image {path.name} is not a decodable image: {detail[0]}")
    return np.frombuffer(proc.stdout, dtype=np.uint8).reshape(3, height, width)


def clip_format(head: bytes) -> str | None:
    """MP4/MOV, WebM/Matroska or GIF from a file's first bytes (what image-to-video models answer), else None."""
    if head[4:8] == b"ftyp":
        return "MP4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "WebM"
    return "GIF" if head.startswith(IMAGE_MAGIC["GIF"]) else None


CLIP_MAX_PIXELS: Final = 4096 * 4096  # a clip frame larger than this is refused by the decoder, not decoded


def load_clip_command(path: Path, width: int, height: int, frames: int = CLIP_MAX_FRAMES) -> list[str]:
    """The ffmpeg command load_clip() runs: at CLIP_FPS, cover-fit, at most `frames` frames; the clip is
    untrusted, so the decoder refuses frames over CLIP_MAX_PIXELS."""
    vf = (f"fps={CLIP_FPS},scale={width}:{height}:force_original_aspect_ratio=increase:flags=bicubic,"
          f"crop={width}:{height}")
    return ["ffmpeg", "-nostdin", "-v", "error", "-max_pixels", str(CLIP_MAX_PIXELS), *untrusted_input(path), "-an",
            "-frames:v", str(frames), "-vf", vf, "-f", "rawvideo", "-pix_fmt", "gbrp", "pipe:1"]  # fmt: skip


def load_clip(path: Path, width: int, height: int, frames: int = CLIP_MAX_FRAMES) -> U8:
    """A generated clip's frames (n, 3, height, width) planar GBR, n between 2 and `frames`; the format is
    checked first, as for images. check_clip() is this at a tiny size, before a clip is cached."""
    with open(path, "rb") as f:
        if clip_format(f.read(16)) is None:
            raise ReplicateFailedError(f"generated clip {path.name} is not an MP4, WebM or GIF video")
    try:
        proc = subprocess.run(load_clip_command(path, width, height, frames), capture_output=True, check=False,
                              timeout=CLIP_DECODE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ReplicateFailedError(f"generated clip {path.name} did not decode in {CLIP_DECODE_TIMEOUT_S:.0f} s"
                                   ) from None
    size = 3 * width * height
    n = len(proc.stdout) // size
    if proc.returncode != 0 or n < 2:
        detail = proc.stderr[-2000:].decode(errors="replace").strip().splitlines()[-1:] or ["fewer than 2 frames"]
        raise ReplicateFailedError(f"generated clip {path.name} is not a decodable video: {detail[0]}")
    return np.frombuffer(proc.stdout[: n * size], dtype=np.uint8).reshape(n, 3, height, width)


def check_clip(path: Path) -> None:
    """Fail (ReplicateFailedError) unless `path` is a video with 2+ frames that decodes in time: a model's
    answer is checked before it is cached, so a bad one is not served to every later render."""
    load_clip(path, 16, 16)


def clip_position(beats: float, n_frames: int, beat_seconds: float) -> float:
    """The (fractional) frame of an n_frames clip at CLIP_FPS to show `beats` beats into a shot.

    The clip is time-stretched so that one pass lasts a whole number of beats (the nearest to its own
    length, at least one: the speed stays within 3/4x..1.5x for clips longer than a beat) and plays forward
    then backward, so every turn falls on a beat and no pass ends in a jump."""
    per_pass = max(1, round(n_frames / CLIP_FPS / beat_seconds))
    u = (beats / per_pass) % 2.0
    return (u if u <= 1.0 else 2.0 - u) * (n_frames - 1)


class KenBurnsVisuals:
    """FrameSource over per-section-group image lists."""

    def __init__(self, timeline: Timeline, size: tuple[int, int], images: dict[int, list[Path]], seed: int,
                 reactivity: tuple[Coupling, ...] | None = None, clips: dict[int, Path] | None = None) -> None:
        self.timeline = timeline
        # spec.style.reactivity: `zoom`, `brightness` and `cut` move the shots (None: the built-in beat pulse).
        self.react: Reactions | None = timeline.reactions(reactivity) if reactivity is not None else None
        self.width, self.height = size
        cw, ch = int(self.width * CANVAS_MARGIN) // 2 * 2, int(self.height * CANVAS_MARGIN) // 2 * 2
        self.canvas = (cw, ch)
        cache: dict[Path, U8] = {}
        self.images: dict[int, list[U8]] = {}
        for group, paths in images.items():
            self.images[group] = [cache.setdefault(p, load_image(p, cw, ch)) for p in paths]
        self.seed = seed
        self._rx: F32 = (np.arange(self.width, dtype=np.float32) / max(1, self.width - 1)).astype(np.float32)
        self._ry: F32 = (np.arange(self.height, dtype=np.float32) / max(1, self.height - 1)).astype(np.float32)
        # style.motion clips: group -> clip file, decoded when first shown; two kept (a crossfade shows two).
        self.clips = clips or {}
        self._decoded: OrderedDict[Path, U8] = OrderedDict()
        self._beat_seconds = 60.0 / max(timeline.analysis.tempo, 1.0)

    def render(self, i: int) -> U8:
        """Planar GBR frame for global frame i."""
        ctx = self.timeline.at(i)
        if self.react is not None:  # a reactive cut starts a new shot: its move starts again too
            ctx = dataclasses.replace(ctx, cut=ctx.cut + int(self.react.cut[i]),
                                      since_cut=min(ctx.since_cut, int(self.react.since_cut[i]) / self.timeline.fps))
        frame = self._shot(ctx, ctx.section)
        if ctx.blend > 0.0 and ctx.blend_section != ctx.section:
            other = self._shot(ctx, ctx.blend_section)
            frame += np.float32(ctx.blend) * (other - frame)
        if self.react is None:
            frame *= np.float32(1.0 + 0.08 * ctx.beat_pulse)
        else:
            frame *= np.float32(max(0.0, 1.0 + 0.5 * float(self.react.brightness[i])))
            if hue := float(self.react.hue[i]):
                frame = _hue_rotate(frame, 0.5 * math.pi * hue)
        np.clip(frame, 0.0, 255.0, out=frame)
        return frame.astype(np.uint8)

    def _shot(self, ctx: FrameContext, section: int) -> F32:
        group = self.timeline.sections[section].group
        if group in self.clips:
            return self._clip_shot(ctx, section, self.clips[group])
        imgs = self.images[group]
        img = imgs[ctx.cut % len(imgs)]
        rng = np.random.default_rng([self.seed, ctx.cut, section])
        cw, ch = self.canvas
        # Shot path: zoom in or out between 1.0 and up to 1.3 (of the frame), pan across the margin.
        zoom_in = bool(rng.random() < 0.5)
        start = rng.uniform(-1, 1, size=2)
        end = rng.uniform(-1, 1, size=2)
        if self.react is not None and (push := float(self.react.warp[ctx.index])):
            # Reactivity `warp` pans: pushes the view along the shot's own path (half the margin per unit).
            way = end - start
            way = way / n if (n := float(np.hypot(*way))) > 1e-3 else np.array([1.0, 0.0])
            start, end = np.clip(start + 0.5 * push * way, -1, 1), np.clip(end + 0.5 * push * way, -1, 1)
        # Progress through the move follows the bass phase: faster when loud, never stalled.
        cut_frame = max(0, ctx.index - round(ctx.since_cut * self.timeline.fps))
        phase = float(self.timeline.low_phase[ctx.index] - self.timeline.low_phase[cut_frame])
        p = min(1.0, 0.12 * phase + 0.03 * ctx.since_cut)
        # (never below 1/CANVAS_MARGIN: the view stays on the image)
        z = max(1.0 / CANVAS_MARGIN, 1.0 + 0.22 * (p if zoom_in else 1.0 - p) + self._pulse(ctx))
        view_w, view_h = cw / CANVAS_MARGIN / z, ch / CANVAS_MARGIN / z
        cx = cw / 2 + (start[0] + (end[0] - start[0]) * p) * (cw - view_w) / 2
        cy = ch / 2 + (start[1] + (end[1] - start[1]) * p) * (ch - view_h) / 2
        xs = (cx - view_w / 2) + self._rx * np.float32(view_w - 1)
        ys = (cy - view_h / 2) + self._ry * np.float32(view_h - 1)
        angle = 0.0 if self.react is None else 0.5 * float(self.react.rotation[ctx.index])
        if abs(angle) > 1e-4:  # (a tenth of a pixel at a thousand from the centre: below that, not turned)
            return self._turned(img, cx, cy, view_w, view_h, angle)
        return _bilinear(img, ys, xs)

    def _pulse(self, ctx: FrameContext) -> float:
        """How much closer a shot (still or clip) is at this frame: the built-in beat pulse, or a `zoom` coupling."""
        return 0.015 * ctx.beat_pulse if self.react is None else 0.1 * float(self.react.zoom[ctx.index])

    def _turned(self, img: U8, cx: float, cy: float, view_w: float, view_h: float, angle: float) -> F32:
        """Reactivity `rotation`: the view turned by `angle`, closer (and moved inward) as much as its turned
        outline needs to stay on the canvas: no corner ever shows the canvas edge smeared."""
        cw, ch = self.canvas
        c, s = abs(math.cos(angle)), abs(math.sin(angle))
        box_w, box_h = view_w * c + view_h * s, view_w * s + view_h * c  # the turned view's bounding box
        fit = min(1.0, (cw - 1) / box_w, (ch - 1) / box_h)
        view_w, view_h, box_w, box_h = view_w * fit, view_h * fit, box_w * fit, box_h * fit
        cx = min(max(cx, box_w / 2), cw - 1 - box_w / 2)
        cy = min(max(cy, box_h / 2), ch - 1 - box_h / 2)
        return _rotated(img, cx, cy, view_w, view_h, angle, self._rx, self._ry)

    def _clip_shot(self, ctx: FrameContext, section: int, path: Path) -> F32:
        """The clip at this frame's place in the section's beat grid (clip_position, counted from the section's
        first beat), blended between its two nearest frames; a cut mirrors it and changes the framing (the clip
        keeps playing across cuts), and the beat pulse zooms in."""
        frames = self._clip(path)
        start = int(self.timeline.section_frames[section])
        beat_pos = self.timeline.beat_position
        beats = float(beat_pos[ctx.index] - math.ceil(beat_pos[start] - 1e-6))
        pos = clip_position(max(0.0, beats), len(frames), self._beat_seconds)
        k = min(int(pos), len(frames) - 2)
        frac = np.float32(pos - k)
        img = frames[k].astype(np.float32)
        img += frac * (frames[k + 1].astype(np.float32) - img)
        z = max(1.0, 1.0 + 0.08 * (ctx.cut % 2) + self._pulse(ctx))
        view_w, view_h = self.width / z, self.height / z
        xs = np.float32((self.width - view_w) / 2) + self._rx * np.float32(view_w - 1)
        ys = np.float32((self.height - view_h) / 2) + self._ry * np.float32(view_h - 1)
        out = _bilinear(img, ys, xs)
        return out[:, :, ::-1] if ctx.cut % 2 else out

    def _clip(self, path: Path) -> U8:
        """A decoded clip; at most two held, counting the one being decoded (limits.CLIP_MEMORY_BYTES)."""
        if path in self._decoded:
            self._decoded.move_to_end(path)
        else:
            while len(self._decoded) > 1:  # room first: the new clip's frames and two others would be three
                self._decoded.popitem(last=False)
            self._decoded[path] = load_clip(path, self.width, self.height)
        return self._decoded[path]


def _hue_rotate(frame: F32, angle: float) -> F32:
    """Turn the colours by `angle` radians about the grey axis (planar channels; grey stays grey)."""
    c, k = math.cos(angle), math.sin(angle) / math.sqrt(3.0)
    a, b, d = c + (1 - c) / 3, (1 - c) / 3 - k, (1 - c) / 3 + k
    m = np.array([[a, b, d], [d, a, b], [b, d, a]], dtype=np.float32)
    return np.tensordot(m, frame, axes=1).astype(np.float32, copy=False)


def _rotated(img: U8, cx: float, cy: float, view_w: float, view_h: float, angle: float, rx: F32, ry: F32) -> F32:
    """The view of `img` centred at (cx, cy), view_w x view_h, turned by `angle` radians: a 2-D bilinear
    resample (about 5x the separable one's cost, paid on every frame a rotation coupling turns, which with
    any smoothing is nearly all of them)."""
    _, h, w = img.shape
    u = rx * np.float32(view_w - 1) - np.float32(view_w / 2)  # the separable resample's grid, about the centre
    v = ry * np.float32(view_h - 1) - np.float32(view_h / 2)
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    xs = np.clip(np.float32(cx) + cos * u[None, :] - sin * v[:, None], 0, w - 1)
    ys = np.clip(np.float32(cy) + sin * u[None, :] + cos * v[:, None], 0, h - 1)
    x0, y0 = np.minimum(xs.astype(np.intp), w - 2), np.minimum(ys.astype(np.intp), h - 2)  # as _bilinear does
    fx, fy = (xs - x0.astype(np.float32))[None], (ys - y0.astype(np.float32))[None]
    flat = img.reshape(3, -1)
    idx = y0 * w + x0  # one gather per corner from the flattened planes: ~3x faster than 2-D fancy indexing

    def corner(offset: int) -> F32:
        out: F32 = np.take(flat, idx + offset, axis=1).astype(np.float32)
        return out

    top = corner(0)
    top += (corner(1) - top) * fx
    bottom = corner(w)
    bottom += (corner(w + 1) - bottom) * fx
    top += (bottom - top) * fy
    return top


def _bilinear(img: U8 | F32, ys: F32, xs: F32) -> F32:
    """Separable bilinear resample of a planar image at (increasing) row coords ys, column coords xs.

    np.take along one axis at a time is ~4x faster than 2-D fancy indexing here.
    """
    _, h, w = img.shape
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.minimum(ys.astype(np.intp), h - 2)
    x0 = np.minimum(xs.astype(np.intp), w - 2)
    fy = (ys - y0).astype(np.float32)[None, :, None]
    fx = (xs - x0).astype(np.float32)[None, None, :]
    lo, hi = int(x0[0]), int(x0[-1]) + 2  # only the columns the view covers
    sub = img[:, :, lo:hi]
    top = np.take(sub, y0, axis=1).astype(np.float32)
    bottom = np.take(sub, y0 + 1, axis=1).astype(np.float32)
    bottom -= top
    bottom *= fy
    top += bottom
    xi = x0 - lo
    left: F32 = np.take(top, xi, axis=2)
    right = np.take(top, xi + 1, axis=2)
    right -= left
    right *= fx
    left += right
    return left
