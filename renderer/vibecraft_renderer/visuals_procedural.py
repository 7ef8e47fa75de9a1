"""Procedural audio-reactive visuals: numpy-vectorised scenes, no network, deterministic per seed.

Each section group (a chorus and its repeats) gets a scene (tunnel, nebula, mandala, horizon) and a
cosine palette drawn from a seeded RNG; beats pulse brightness and zoom, bars flash rings, band
energies drive motion, and every cut on the beat grid switches the scene's variant. Frames are
drawn at a reduced internal resolution; ffmpeg upscales while encoding, which is far cheaper than
drawing every output pixel in numpy and suits these soft gradients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from .config import Coupling
from .timeline import FrameContext, Reactions, Timeline

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
TAU: Final = np.float32(2.0 * math.pi)

SCENES: Final = ("prism", "nebula", "horizon", "mandala", "tunnel")
SATURATION: Final = 1.3

# Cosine palettes (https://iquilezles.org/articles/palettes/): colour(t) = a + b*cos(2pi(c*t + d)).
PALETTES: Final[tuple[tuple[tuple[float, ...], ...], ...]] = (
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (0.00, 0.10, 0.20)),  # ember to ice
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (1.0, 1.0, 0.5), (0.80, 0.90, 0.30)),  # acid
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (1.0, 0.7, 0.4), (0.00, 0.15, 0.20)),  # dusk
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (2.0, 1.0, 0.0), (0.50, 0.20, 0.25)),  # candy
    ((0.8, 0.5, 0.4), (0.2, 0.4, 0.2), (2.0, 1.0, 1.0), (0.00, 0.25, 0.25)),  # coral
    ((0.45, 0.35, 0.55), (0.45, 0.35, 0.45), (1.0, 1.0, 1.0), (0.55, 0.75, 0.95)),  # blue-orange
    ((0.55, 0.4, 0.3), (0.45, 0.4, 0.3), (1.0, 1.0, 1.0), (0.95, 0.05, 0.15)),  # warm/cool
    ((0.4, 0.5, 0.5), (0.4, 0.5, 0.5), (1.0, 1.0, 1.0), (0.60, 0.45, 0.35)),  # fire-teal
)


def internal_size(width: int, height: int, max_pixels: int = 130_000) -> tuple[int, int]:
    """Drawing resolution: 480x270 for 16:9 (720p / 2.7), never larger than the output, even sizes."""
    scale = min(1.0, math.sqrt(max_pixels / float(width * height)))
    w = max(16, round(width * scale / 2) * 2)
    h = max(16, round(height * scale / 2) * 2)
    return w, h


@dataclass(frozen=True)
class Scene:
    """Look of one section group."""

    kind: str
    alt: str
    a: F32
    b: F32
    c: F32
    d: F32
    folds: int
    spin: float
    hue_step: float


def _frac(x: F32) -> F32:
    """x mod 1, several times faster than np.mod for float32."""
    return (x - np.floor(x)).astype(np.float32, copy=False)


def _wave(rows: F32, cols: F32) -> F32:
    """sin(row term + column term) over the frame, from 1-D sines and cosines.

    sin(a + b) = sin a cos b + cos a sin b: four short sines and two outer products instead of a
    full-frame sine (the nebula, the slowest scene, is built from such plane waves).
    """
    out: F32 = np.sin(rows)[:, None] * np.cos(cols)[None, :]
    out += np.cos(rows)[:, None] * np.sin(cols)[None, :]
    return out


class ProceduralVisuals:
    """Draws frame i of the song from the timeline; a few ms per frame, well under x264's share."""

    def __init__(self, timeline: Timeline, size: tuple[int, int], seed: int,
                 reactivity: tuple[Coupling, ...] | None = None) -> None:
        self.timeline = timeline
        # spec.style.reactivity: None keeps the built-in couplings (beat/bar zoom, loudness/beat brightness).
        self.react: Reactions | None = timeline.reactions(reactivity) if reactivity is not None else None
        self._turn = 0.0  # this frame's extra rotation (reactivity `rotation`), radians
        self.width, self.height = size
        w, h = size
        aspect = w / h
        xs = np.linspace(-aspect, aspect, w, dtype=np.float32)
        ys = np.linspace(1.0, -1.0, h, dtype=np.float32)
        self.X, self.Y = np.meshgrid(xs, ys)
        self.R = np.sqrt(self.X**2 + self.Y**2).astype(np.float32)
        self.TH = np.arctan2(self.Y, self.X).astype(np.float32)
        self.vignette = np.clip(1.0 - 0.28 * (self.X**2 / aspect**2 + self.Y**2) ** 1.5, 0.0, 1.0).astype(np.float32)
        # Dither breaks up banding in dark gradients after upscaling; fixed pattern, so it costs no bits.
        rng = np.random.default_rng(seed)
        self.dither = rng.random((h, w), dtype=np.float32)  # + floor below = random rounding
        groups = sorted({s.group for s in timeline.sections})
        # Distinct scenes for the first len(SCENES) groups, in a seed-dependent order.
        order = [int(k) for k in np.random.default_rng([seed, 7]).permutation(len(SCENES))]
        palettes = [int(k) for k in np.random.default_rng([seed, 11]).permutation(len(PALETTES))]
        # Each group also has a second scene: long sections alternate between the two every phrase.
        self.scenes = {
            g: self._scene(
                np.random.default_rng([seed, g]),
                SCENES[order[n % len(SCENES)]],
                SCENES[order[(n + 2) % len(SCENES)]],
                palettes[n % len(PALETTES)],
            )
            for n, g in enumerate(groups)
        }
        self.seed = seed
        self._angular_cache: dict[int, tuple[F32, F32]] = {}

    @staticmethod
    def _scene(rng: np.random.Generator, kind: str, alt: str, palette: int) -> Scene:
        a, b, c, d = (np.array(v, dtype=np.float32) for v in PALETTES[palette])
        d = (d + np.float32(rng.uniform(-0.08, 0.08))).astype(np.float32)
        return Scene(
            kind=kind,
            alt=alt,
            a=a,
            b=b,
            c=c,
            d=d,
            folds=int(rng.choice([5, 6, 7, 8, 10])),
            spin=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.2)),
            hue_step=float(rng.uniform(0.08, 0.22)),
        )

    # ----------------------------------------------------------------- public

    def render(self, i: int) -> U8:
        """Planar frame (3, h, w) uint8 in G, B, R plane order (ffmpeg's gbrp) for global frame i.

        Planar output avoids an interleaving transpose that would cost as much as drawing a scene.
        """
        ctx = self.timeline.at(i)
        if self.react is not None:  # `cut` adds shots, `warp` pushes the scenes' flow
            ctx = dataclasses.replace(ctx, cut=ctx.cut + int(self.react.cut[i]),
                                      low_phase=ctx.low_phase + 0.5 * float(self.react.warp[i]))
            self._turn = 0.5 * float(self.react.rotation[i])
        rgb = self._section_rgb(ctx, ctx.section)
        if ctx.blend > 0.0 and ctx.blend_section != ctx.section:
            other = self._section_rgb(ctx, ctx.blend_section)
            rgb += np.float32(ctx.blend) * (other - rgb)
        out = np.empty(rgb.shape, dtype=np.uint8)
        for dst, src in enumerate((1, 2, 0)):
            plane = rgb[src]
            plane *= np.float32(255.0)
            plane += self.dither
            np.clip(plane, 0.0, 255.0, out=plane)
            out[dst] = plane
        return out

    # ----------------------------------------------------------------- scenes

    def _section_rgb(self, ctx: FrameContext, section: int) -> F32:
        scene = self.scenes[self.timeline.sections[section].group]
        # Each cut re-frames the scene (fold count, spin, hues); each phrase (4 bars) swaps between
        # the group's two scenes and moves the palette on, so long sections keep evolving.
        variant = ctx.cut % 4
        kind = scene.kind if ctx.phrase % 2 == 0 else scene.alt
        if self.react is None:
            zoom = np.float32(1.0 - 0.07 * ctx.beat_pulse - 0.04 * ctx.bar_pulse)
        else:
            zoom = np.float32(min(4.0, max(0.25, 1.0 - 0.15 * float(self.react.zoom[ctx.index]))))
        if kind == "prism":
            field, glow = self._prism(ctx, scene, variant, zoom)
        elif kind == "tunnel":
            field, glow = self._tunnel(ctx, scene, variant, zoom)
        elif kind == "nebula":
            field, glow = self._nebula(ctx, scene, variant, zoom)
        elif kind == "mandala":
            field, glow = self._mandala(ctx, scene, variant, zoom)
        else:
            return self._horizon(ctx, scene, variant, zoom)
        shift = np.float32(variant * scene.hue_step + 0.11 * (ctx.phrase // 2) + 0.02 * ctx.t + self._hue(ctx))
        rgb = self._palette(scene, field + shift)
        # A little extra saturation: the cosine palettes pass through greys between their hues.
        lum = rgb[0] * np.float32(0.3) + rgb[1] * np.float32(0.59) + rgb[2] * np.float32(0.11)
        rgb -= lum
        rgb *= np.float32(SATURATION)
        rgb += lum
        glow *= self.vignette
        glow *= self._brightness(ctx, 0.45 + 0.4 * min(ctx.energy, 1.2) + 0.25 * ctx.beat_pulse, 0.7)
        rgb *= glow
        return rgb

    def _hue(self, ctx: FrameContext) -> float:
        """Reactivity `hue`: a quarter turn of the palette per unit."""
        return 0.0 if self.react is None else 0.25 * float(self.react.hue[ctx.index])

    def _brightness(self, ctx: FrameContext, built_in: float, base: float) -> np.float32:
        """The built-in brightness, or with reactivity `base` x (1 + the `brightness` couplings), never below 0."""
        if self.react is None:
            return np.float32(built_in)
        return np.float32(base * max(0.0, 1.0 + float(self.react.brightness[ctx.index])))

    def _palette(self, scene: Scene, t: F32) -> F32:
        out = np.empty((3, *t.shape), dtype=np.float32)
        for ch in range(3):
            np.multiply(t, scene.c[ch] * TAU, out=out[ch])
            out[ch] += scene.d[ch] * TAU
            np.cos(out[ch], out=out[ch])
            out[ch] *= scene.b[ch]
            out[ch] += scene.a[ch]
        return out

    def _rings(self, ctx: FrameContext, r: F32) -> F32:
        """A bright ring expanding from the centre on each beat."""
        radius = np.float32(0.15 + 2.2 * ctx.since_beat)
        width = np.float32(0.05 + 0.08 * ctx.low)
        ring = np.subtract(r, radius)
        ring /= width
        np.square(ring, out=ring)
        np.negative(ring, out=ring)
        np.exp(ring, out=ring)
        ring *= np.float32(0.9 * ctx.beat_pulse + 0.3 * ctx.bar_pulse)
        return ring

    def _prism(self, ctx: FrameContext, s: Scene, variant: int, zoom: np.float32) -> tuple[F32, F32]:
        """Nested polygons zooming outwards forever (log-polar), each ring its own colour band."""
        sides = max(3, s.folds - 2 + variant % 3)
        seg = np.float32(2 * math.pi / sides)
        rot = np.float32(s.spin * ctx.t * 3 + 0.1 * ctx.mid_phase * (1 if variant < 2 else -1) + self._turn)
        phi = _frac((self.TH + rot) / seg)
        phi -= np.float32(0.5)
        phi *= seg
        pd = self.R * zoom * np.cos(phi)
        u = np.log(pd + np.float32(0.02))
        u *= np.float32(2.2)
        u -= np.float32(0.9 * ctx.low_phase)
        ring = np.floor(u)
        edge = np.abs(u - ring - np.float32(0.5))  # 0.5 at a polygon edge, 0 mid-band
        field = ring * np.float32(0.13) + edge * np.float32(0.25)
        glow = np.float32(0.55) + np.clip((edge - np.float32(0.38)) * np.float32(6.0), 0.0, 1.0) * np.float32(
            0.9 + 0.8 * ctx.beat_pulse
        )
        glow *= np.clip(pd * np.float32(3.0), 0.0, 1.0)
        glow += self._rings(ctx, self.R * zoom) * np.float32(0.5)
        return field.astype(np.float32), glow.astype(np.float32)

    def _angular(self, folds: int) -> tuple[F32, F32]:
        """cos and sin of folds x the pixel angle, cached per fold count (a handful per song)."""
        if folds not in self._angular_cache:
            angle = self.TH * np.float32(folds)
            self._angular_cache[folds] = (np.cos(angle), np.sin(angle))
        return self._angular_cache[folds]

    def _tunnel(self, ctx: FrameContext, s: Scene, variant: int, zoom: np.float32) -> tuple[F32, F32]:
        r = self.R * zoom
        folds = s.folds + (variant % 2) * 2
        spin = s.spin * (1 if variant < 2 else -1)
        depth = 0.5 / (r + np.float32(0.12))
        u = depth + np.float32(1.4 * ctx.low_phase)
        # cos(folds*theta + turn) from per-pixel tables of cos/sin(folds*theta): no full-frame cosine.
        turn = float(TAU) * (spin * ctx.t * 6 + 0.2 * ctx.mid_phase) + self._turn
        cos_f, sin_f = self._angular(folds)
        spokes = cos_f * np.float32(math.cos(turn))
        spokes -= sin_f * np.float32(math.sin(turn))
        pattern = np.sin(TAU * u) * spokes
        pattern *= np.float32(0.5)
        field = pattern + depth * np.float32(0.15)
        shade = 1.0 - np.exp(-r * np.float32(2.2))
        glow = shade * (np.float32(0.75) + np.float32(0.35) * pattern) + self._rings(ctx, r)
        return field.astype(np.float32), glow.astype(np.float32)

    def _nebula(self, ctx: FrameContext, s: Scene, variant: int, zoom: np.float32) -> tuple[F32, F32]:
        x = self.X[0] * zoom  # (w,) columns: the plane waves and orbs are separable (see _wave)
        y = self.Y[:, 0] * zoom  # (h,) rows
        if variant % 2:
            x = -x
        lp, mp = np.float32(ctx.low_phase), np.float32(ctx.mid_phase)
        field = _wave(y * np.float32(2.7) - lp * np.float32(0.7), x * np.float32(0.8))
        field += _wave(y * np.float32(1.7), x * np.float32(1.7) + np.float32(0.35 * ctx.t))
        field += np.sin(x * np.float32(2.1) + mp * np.float32(0.9))[None, :]
        field += np.sin(self.R * zoom * np.float32(4.0) - lp * np.float32(1.6))
        field *= np.float32(0.18)
        # Glowing contour lines of the flowing field ("ribbons"), thicker and brighter when loud.
        ribbon = _frac(field * np.float32(4.0) + np.float32(0.15 * ctx.high_phase))
        ribbon -= np.float32(0.5)
        np.square(ribbon, out=ribbon)
        ribbon *= np.float32(-1.0 / (0.004 + 0.01 * ctx.energy))
        np.exp(ribbon, out=ribbon)
        glow = np.float32(0.6) + ribbon * np.float32(0.5 + 0.5 * ctx.high + 0.4 * ctx.beat_pulse)
        # Soft orbs on Lissajous paths; their size breathes with the mids.
        rad = np.float32((0.05 + 0.06 * ctx.mid + 0.04 * ctx.beat_pulse) ** 2)
        for k in range(4):
            ph = ctx.mid_phase * (0.35 + 0.11 * k) + k * 1.7 + variant
            cx = np.float32(0.9 * math.sin(ph * 1.3 + k))
            cy = np.float32(0.6 * math.cos(ph * 0.9 + 2 * k))
            d2 = np.square(y - cy)[:, None] + (np.square(x - cx) + rad)[None, :]
            np.divide(rad * np.float32(0.9), d2, out=d2)
            glow += d2
        glow += self._rings(ctx, self.R * zoom) * np.float32(0.6)
        return field, glow

    def _mandala(self, ctx: FrameContext, s: Scene, variant: int, zoom: np.float32) -> tuple[F32, F32]:
        folds = s.folds + variant
        seg = np.float32(2 * math.pi / folds)
        rot = np.float32(s.spin * ctx.t * 4 + 0.15 * ctx.mid_phase * (1 if variant < 2 else -1) + self._turn)
        a = _frac((self.TH + rot) / seg)
        a -= np.float32(0.5)
        a *= seg
        np.abs(a, out=a)
        r = self.R * zoom
        px = r * np.cos(a)
        py = r * np.sin(a)
        lp = np.float32(ctx.low_phase)
        field = np.sin(px * np.float32(7.0) - lp * np.float32(2.2))
        field *= np.cos(py * np.float32(11.0) + np.float32(ctx.mid_phase))
        field += np.sin(r * np.float32(5.0) - np.float32(0.8 * ctx.t))
        field *= np.float32(0.3)
        field += r * np.float32(0.35)
        petals = np.cos(py * np.float32(9.0) - px * np.float32(3.0) + np.float32(1.3 * ctx.high_phase))
        glow = np.float32(0.65) + np.float32(0.3) * petals * petals
        glow *= 1.0 - np.exp(-r * np.float32(6.0)) * np.float32(0.5)
        glow += self._rings(ctx, r)
        return field, glow.astype(np.float32)

    def _horizon(self, ctx: FrameContext, s: Scene, variant: int, zoom: np.float32) -> F32:
        """Synthwave horizon: gradient sky, striped sun, perspective grid racing with the bass.

        Sky and floor are drawn on their own rows only, and everything that depends on the row
        alone (palettes, depth, horizontal grid lines) is computed once per row and broadcast.
        """
        hz = np.float32(-0.05)
        ys = self.Y[:, 0]
        split = int(np.count_nonzero(ys >= hz))  # rows above the horizon (y decreases downwards)
        rgb = np.empty((3, self.height, self.width), dtype=np.float32)
        shift = np.float32(variant * s.hue_step + 0.11 * (ctx.phrase // 2) + self._hue(ctx))

        # Sky: a vertical gradient, darker upwards.
        y_sky = ys[:split, None]
        sky = self._palette(s, np.float32(0.55) + y_sky * np.float32(0.25) + shift)
        sky *= np.float32(0.55) + np.float32(0.45) * np.clip(1.0 - (y_sky - hz), 0.0, 1.0)
        # Sun: warm vertical gradient, with gaps that widen towards the horizon and scroll on the bass.
        x = self.X[:split] * zoom
        sun_y = hz + np.float32(0.42)
        sun_r = np.float32(0.42 + 0.03 * ctx.beat_pulse)
        sr = np.sqrt(x**2 + (y_sky - sun_y) ** 2)
        low_half = np.clip((sun_y - y_sky) / sun_r, 0.0, 1.0)
        gaps = _frac(y_sky * np.float32(9.0) + np.float32(0.35 * ctx.low_phase)) < low_half * np.float32(0.45)
        disc = np.clip((sun_r - sr) * np.float32(80.0), 0.0, 1.0) * ~gaps
        m = np.clip((sun_y + sun_r - y_sky) / (2 * sun_r), 0.0, 1.0)
        light = np.exp(-np.maximum(sr - sun_r, 0.0) * np.float32(5.0)) * np.float32(0.2 + 0.35 * ctx.energy)
        light += disc * np.float32(1.15)
        for ch, (top, bottom) in enumerate(((1.0, 1.0), (0.9, 0.2), (0.35, 0.6))):
            rgb[ch, :split] = sky[ch] + light * (np.float32(top) + np.float32(bottom - top) * m)

        # Floor grid, antialiased: line width follows the per-pixel derivative of the grid coords.
        dist = np.maximum(hz - ys[split:], np.float32(0.004))[:, None]
        z = np.float32(0.3) / dist
        px = np.float32(2.0 / self.height)
        ez = np.abs(_frac(z * np.float32(3.0) + np.float32(2.0 * ctx.low_phase)) - np.float32(0.5))
        wz = np.minimum(z * z * (np.float32(25.0) * px), np.float32(0.5))
        lz = np.clip((ez - np.float32(0.5)) / wz + np.float32(1.0), 0.0, 1.0)
        ex = np.abs(_frac(self.X[split:] * zoom * z * np.float32(5.0)) - np.float32(0.5))
        wx = np.minimum(z * (np.float32(12.0) * px), np.float32(0.5))
        line = np.maximum(np.clip((ex - np.float32(0.5)) / wx + np.float32(1.0), 0.0, 1.0), lz)
        line *= np.exp(-z * np.float32(0.12)) * np.float32(1.0 + 0.8 * ctx.beat_pulse)
        line += np.float32(0.08)
        floor_col = self._palette(s, np.float32(0.8) + np.float32(0.05 * variant) + dist * np.float32(0.3))
        rgb[:, split:] = floor_col * line

        rgb *= self.vignette * self._brightness(ctx, 0.7 + 0.3 * min(ctx.energy, 1.2) + 0.2 * ctx.beat_pulse, 0.85)
        return rgb
