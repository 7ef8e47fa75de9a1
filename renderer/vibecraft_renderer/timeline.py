"""The analysis resampled to video frames: what every frame needs to know, from its global index only.

Every value is a pure function of the frame index (motion phases are integrals of band energy,
precomputed once), so a segment rendered in a retried pod is pixel-identical to the first try and
segment joins stay on the beat.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from vibecraft_common.limits import REACT_TARGETS, CutEvery

from .analysis import Analysis
from .config import Coupling

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

BEAT_DECAY_S: Final = 0.16
BAR_DECAY_S: Final = 0.45
RELEASE_S: Final = 0.18  # envelope release: motion follows attacks instantly, relaxes smoothly
CROSSFADE_MAX_S: Final = 1.0
SINCE_NONE: Final = 1_000_000  # "frames since the last mark" before the first: long enough for any pulse to have died


@dataclass(frozen=True)
class FrameContext:
    """Audio state at one video frame."""

    index: int
    t: float
    energy: float
    low: float
    mid: float
    high: float
    low_phase: float
    mid_phase: float
    high_phase: float
    beat_pulse: float  # 1.0 on the frame nearest a beat, decaying
    bar_pulse: float  # same for bar starts
    phrase: int  # index of the current 4-bar phrase
    since_beat: float  # seconds since that frame
    section: int
    section_pos: float  # 0..1 through the section
    cut: int  # index of the current shot (cut grid + section starts)
    since_cut: float
    blend_section: int  # section to crossfade with near a boundary (== section when none)
    blend: float  # weight of blend_section, 0..1


def frame_count(duration: float, fps: int) -> int:
    """The exact number of frames of the final video."""
    return max(1, round(duration * fps))


def extend_grid(marks: npt.NDArray[np.float64], period: float, duration: float) -> npt.NDArray[np.float64]:
    """Continue a beat/bar grid at the song's tempo where tracking stopped (quiet intros, fades),
    so the picture keeps changing; detected marks are kept as they are."""
    if marks.size == 0 or period <= 0:
        return marks
    before = np.arange(marks[0] - period, -1e-9, -period)[::-1]
    after = np.arange(marks[-1] + period, duration, period)
    return np.concatenate([before[before >= 0], marks, after])


def cut_times(analysis: Analysis, cut_every: CutEvery) -> npt.NDArray[np.float64]:
    """Cut grid in seconds: beats, every other beat, bars or phrases (4 bars)."""
    period = 60.0 / max(analysis.tempo, 1.0)
    beats = extend_grid(analysis.beats, period, analysis.duration)
    bars = extend_grid(analysis.downbeats, period * analysis.beats_per_bar, analysis.duration)
    if cut_every == "beat":
        return beats
    if cut_every == "2beats":
        # Anchor on the bar phase so pairs start on beat one.
        start = int(np.searchsorted(beats, bars[0] - 1e-6)) % 2 if bars.size else 0
        return beats[start::2]
    if cut_every == "bar":
        return bars
    return bars[::4]


def _smooth(x: F32, rate: float) -> F32:
    """Instant attack, exponential release (a peak follower) at the analysis frame rate."""
    from scipy.signal import lfilter

    alpha = float(np.exp(-1.0 / (RELEASE_S * rate)))
    released = np.asarray(lfilter([1.0 - alpha], [1.0, -alpha], x.astype(np.float64)))
    out: F32 = np.maximum(x, released).astype(np.float32)
    return out


@dataclass(frozen=True)
class Reactions:
    """spec.style.reactivity resolved to frames: each target's offset per frame (sum of amount x source), and
    for `cut`, the shots added so far (one each time a source rises through half its range)."""

    zoom: F32
    rotation: F32
    hue: F32
    brightness: F32
    warp: F32
    cut: I64
    since_cut: I64  # frames since the last reactive cut (a large number before the first)


CUT_ON: Final = 0.5  # a reactive cut fires when |amount| x source rises through this...
CUT_REARM: Final = 0.35  # ...and fires again only once it has fallen below this (no chatter on a noisy source)


def _release(x: F32, seconds: float, rate: float) -> F32:
    """A peak follower: y[n] = max(x[n], a * y[n-1]), a hit held and decaying by 1/e over `seconds` (0: the
    signal as it is)."""
    if seconds <= 0:
        return x.astype(np.float32)
    a = float(np.exp(-1.0 / (seconds * rate)))
    out = np.empty(x.size, dtype=np.float32)
    held = 0.0
    for k, v in enumerate(x.tolist()):
        held = max(v, a * held)
        out[k] = held
    return out


def _cuts(signal: F32) -> I64:
    """The cut count at each frame: one more each time `signal` rises through CUT_ON after being below CUT_REARM."""
    count, armed, out = 0, True, np.zeros(signal.size, dtype=np.int64)
    for k, v in enumerate(signal.tolist()):
        if armed and v >= CUT_ON and k > 0:
            count, armed = count + 1, False
        elif v < CUT_REARM:
            armed = True
        out[k] = count
    return out


class Timeline:
    """Per-frame arrays for a whole song (a few floats per frame: 10 MB for an hour at 30 fps)."""

    def __init__(self, analysis: Analysis, fps: int, cut_every: CutEvery) -> None:
        self.analysis = analysis
        self.fps = fps
        self.duration = analysis.duration
        self.n_frames = frame_count(analysis.duration, fps)
        self.sections = analysis.sections
        t = np.arange(self.n_frames, dtype=np.float64) / fps
        pos = t * analysis.frame_rate
        grid = np.arange(analysis.energy.size, dtype=np.float64)

        def sample(x: F32) -> F32:
            return np.interp(pos, grid, _smooth(x, analysis.frame_rate)).astype(np.float32)

        self.energy = sample(analysis.energy)
        self.low, self.mid, self.high = (sample(b) for b in analysis.bands)
        # Motion phases advance faster when a band is loud; a floor keeps quiet passages drifting.
        self.low_phase = np.cumsum(0.25 + self.low, dtype=np.float64) / fps
        self.mid_phase = np.cumsum(0.25 + self.mid, dtype=np.float64) / fps
        self.high_phase = np.cumsum(0.25 + self.high, dtype=np.float64) / fps

        period = 60.0 / max(analysis.tempo, 1.0)
        self.beat_frames = self._frames_of(extend_grid(analysis.beats, period, analysis.duration))
        self.bar_frames = self._frames_of(
            extend_grid(analysis.downbeats, analysis.beats_per_bar * period, analysis.duration)
        )
        self.section_frames = self._frames_of(np.array([s.start for s in analysis.sections]))
        self.section_frames[0] = 0
        cuts = self._frames_of(cut_times(analysis, cut_every))
        self.cut_frames = np.unique(np.concatenate([[0], cuts, self.section_frames]))
        self.cut_seconds = cut_times(analysis, cut_every)
        beat_len = 60.0 / max(analysis.tempo, 1.0)
        self.crossfade_frames = max(2, round(min(CROSSFADE_MAX_S, beat_len) * fps))

    def source(self, name: str, smoothing: float) -> F32:
        """A reactivity source per frame, about 0..1: onset envelopes (kick, snare, onset), band energies
        (bass, mids, highs), loudness (rms) released over `smoothing` s; pulses on the beat and bar grids decaying
        over `smoothing` s (at least a frame); the current section's energy against the loudest section's."""
        an = self.analysis
        n = self.n_frames
        if name in ("beat", "bar"):
            marks = self.beat_frames if name == "beat" else self.bar_frames
            if marks.size == 0:  # no grid in the song (a given beat past its end): nothing pulses
                return np.zeros(n, dtype=np.float32)
            since = self._frames_since(marks) / self.fps
            out: F32 = np.exp(-since / max(smoothing, 1.0 / self.fps)).astype(np.float32)
            return out
        if name == "section":
            top = max((s.energy for s in an.sections), default=0.0) or 1.0
            level = np.array([s.energy / top for s in an.sections], dtype=np.float32)
            k = np.searchsorted(self.section_frames, np.arange(n), side="right") - 1
            return level[np.clip(k, 0, level.size - 1)]
        raw = {"kick": an.envs[0], "snare": an.envs[1], "onset": an.envs[2], "bass": an.bands[0],
               "mids": an.bands[1], "highs": an.bands[2], "rms": an.energy}[name]  # fmt: skip
        smoothed = _release(raw, smoothing, an.frame_rate)
        if smoothed.size == 0:
            return np.zeros(n, dtype=np.float32)
        # Each video frame takes the most of the analysis frames it spans: a hit one analysis frame long is seen
        # whole at any frame rate, not sampled between its peaks.
        starts = np.minimum((np.arange(n, dtype=np.float64) / self.fps * an.frame_rate).astype(np.int64),
                            smoothed.size - 1)
        spans = np.maximum.reduceat(smoothed, starts) if n else smoothed[:0]
        return spans.astype(np.float32)

    def reactions(self, couplings: Iterable[Coupling]) -> Reactions:
        """spec.style.reactivity per frame (Reactions)."""
        sums = {t: np.zeros(self.n_frames, dtype=np.float32) for t in REACT_TARGETS if t != "cut"}
        cuts = np.zeros(self.n_frames, dtype=np.int64)
        for c in couplings:
            x = self.source(c.source, c.smoothing)
            if c.target == "cut":  # the sign does not matter: a cut is a cut
                cuts += _cuts(x * np.float32(abs(c.amount)))
            else:
                sums[c.target] += np.float32(c.amount) * x
        since = self._frames_since(np.flatnonzero(np.diff(cuts, prepend=0) > 0))
        return Reactions(cut=cuts, since_cut=since, **sums)

    @functools.cached_property
    def beat_position(self) -> npt.NDArray[np.float64]:
        """Beats (fractional) at every frame: linear between the grid's beats, at the tempo before the first and
        after the last (a clip's playback counts beats with it)."""
        beats = self.beat_frames
        idx = np.arange(self.n_frames, dtype=np.float64)
        per_frame = max(self.analysis.tempo, 1.0) / 60.0 / self.fps
        pos: npt.NDArray[np.float64]
        if beats.size < 2:
            pos = (idx - (beats[0] if beats.size else 0)) * per_frame
        else:
            pos = np.interp(idx, beats, np.arange(beats.size, dtype=np.float64))
            pos += (np.minimum(idx - beats[0], 0) + np.maximum(idx - beats[-1], 0)) * per_frame
        return pos

    def _frames_since(self, marks: I64) -> I64:
        """Frames since the last of `marks` (sorted frame indices) at every frame; SINCE_NONE before the first."""
        idx = np.arange(self.n_frames)
        k = np.searchsorted(marks, idx, side="right") - 1
        return np.where(k >= 0, idx - marks[np.maximum(k, 0)] if marks.size else 0, SINCE_NONE).astype(np.int64)

    def _frames_of(self, times: npt.NDArray[np.float64]) -> I64:
        frames = np.round(np.asarray(times, dtype=np.float64) * self.fps).astype(np.int64)
        return np.unique(frames[(frames >= 0) & (frames < self.n_frames)])

    @staticmethod
    def _since(marks: I64, i: int) -> tuple[int, int]:
        """(index of the last of `marks` at or before frame i, frames since it): `_frames_since` for one frame."""
        k = int(np.searchsorted(marks, i, side="right")) - 1
        return k, (i - int(marks[k])) if k >= 0 else SINCE_NONE

    def at(self, i: int) -> FrameContext:
        """Context of global frame i."""
        fps = float(self.fps)
        _, d_beat = self._since(self.beat_frames, i)
        bar, d_bar = self._since(self.bar_frames, i)
        sec, _ = self._since(self.section_frames, i)
        sec = max(sec, 0)
        cut, d_cut = self._since(self.cut_frames, i)
        s_start = int(self.section_frames[sec])
        s_end = int(self.section_frames[sec + 1]) if sec + 1 < self.section_frames.size else self.n_frames
        blend_section, blend = sec, 0.0
        half = self.crossfade_frames / 2.0
        if sec + 1 < self.section_frames.size and i >= s_end - half:
            blend_section, blend = sec + 1, (i - (s_end - half)) / self.crossfade_frames
        elif sec > 0 and i < s_start + half:
            blend_section, blend = sec - 1, 0.5 - (i - s_start + 0.5) / self.crossfade_frames
        return FrameContext(
            index=i,
            t=i / fps,
            energy=float(self.energy[i]),
            low=float(self.low[i]),
            mid=float(self.mid[i]),
            high=float(self.high[i]),
            low_phase=float(self.low_phase[i]),
            mid_phase=float(self.mid_phase[i]),
            high_phase=float(self.high_phase[i]),
            beat_pulse=float(np.exp(-d_beat / fps / BEAT_DECAY_S)),
            bar_pulse=float(np.exp(-d_bar / fps / BAR_DECAY_S)),
            phrase=max(bar, 0) // 4,
            since_beat=d_beat / fps,
            section=sec,
            section_pos=(i - s_start) / max(1, s_end - s_start),
            cut=max(cut, 0),
            since_cut=d_cut / fps,
            blend_section=blend_section,
            blend=float(np.clip(blend, 0.0, 1.0)),
        )
