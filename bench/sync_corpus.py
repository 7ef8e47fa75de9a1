"""Beat-tracking evaluation corpus: generated music with exact truth (issue 13).

Every piece is composed here with mido (a GM drum kit on channel 10, a bass line following the chords,
comping, a pad and a lead melody with notes off the beat; velocities humanised from a seeded RNG,
timing never humanised) in one of the styles of ``sync_styles.toml`` (drum patterns, parts, chord
progressions: data) and rendered by FluidSynth with the FluidR3 GM soundfont (Debian packages
fluidsynth and fluid-soundfont-gm). Nothing large is committed: the corpus is built on first use
into ``$VIBECRAFT_CACHE/sync-corpus-v<CORPUS_VERSION>/`` (default ``~/.cache/vibecraft``) and reused.

Truth. Beats are the notated MIDI beat grid, downbeats the bar starts, both read back from the
written MIDI file through mido's own tick-to-seconds conversion (beat and bar markers on the tempo
track, timed by iterating ``mido.MidiFile``), so tempo ramps are followed exactly. ``tempo`` is the
median of 60 / inter-beat interval. Swing moves off-beat subdivisions, never beats. The trap pieces
are notated (and scored) at their hi-hat tempo, 140/150 BPM, although the snare's half-time feel
makes 70/75 BPM a defensible tap rate: a tracker answering 70 scores ``octave`` (x1/2).
The quiet intro's beats (pad only, no drums) are part of the truth: a video cuts there too.

Rendering. ``fluidsynth -ni -q -F out.wav -r 64000 -g 0.6 -O float FluidR3_GM.sf2 song.mid``, then a
polyphase resample to 22050 Hz mono and a peak normalisation to -1 dBFS (16-bit WAV). Why 64 kHz: the
FluidSynth MIDI player is clocked in whole milliseconds once per 64-sample block; at 22050 Hz events
land up to ~3.5 ms late, jittering from beat to beat (measured), at 64 kHz a block is exactly 1 ms and
events land within [-half a tick, 1 ms) of their time. PPQ is 9600 because every set_tempo re-anchors
the player on a rounded tick: with 960 PPQ a per-beat tempo ramp drifted by up to 5 ms.

Verification (``verify_alignment``). For every piece a click (GM 76, hi wood block, dry) on every beat,
with the piece's own tempo track, is rendered through the same path; click onsets are found by a
sample-accurate threshold on the waveform (no onset detector). The click sound itself needs ~3 ms
to reach the threshold; that latency is measured on beat 0 (tick 0, exact by construction) and every
other click must lie within 2 ms of truth + that latency. A corpus failing this is refused.

Scoring (``score``) uses mir_eval's beat functions directly, without ``mir_eval.beat.trim_beats``:
mir_eval's ``evaluate`` drops beats before 5 s, but our pieces are 14-40 s and some start with a
quiet intro whose beats count (see above), so every beat is scored.

    python bench/sync_corpus.py [--only NAME,...] [--short] [--root DIR]   # build, print truth checks
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

CORPUS_VERSION = 1  # bump on any change to the composing/rendering code (style data is fingerprinted)
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # fluid-soundfont-gm
SR = 22050  # corpus WAVs (the renderer analyses at 22050 Hz too)
RENDER_RATE = 64000  # FluidSynth's 64-sample block is exactly its player's 1 ms clock tick here
GAIN = 0.6
PEAK = 10 ** (-1 / 20)  # -1 dBFS
PPQ = 9600
TAIL_S = 2.5  # audio kept after the final downbeat (release, reverb)
TOLERANCE_S = 0.002  # click onsets vs truth, after the click's own latency
MAX_LATENCY_S = 0.008
CLICK_NOTE = 76  # GM hi wood block
TEMPO_TOLERANCE = 0.04
F_WINDOW_S = 0.07  # mir_eval's default F-measure window

# the styles' data: GM kit and drum names, scales, progressions, fills, pads and the styles themselves
_DATA: dict[str, Any] = tomllib.loads(Path(__file__).with_name("sync_styles.toml").read_text())
KITS: dict[str, int] = _DATA["gm_kits"]  # GM drum kits (program on channel 10)
GM_DRUMS: dict[str, int] = _DATA["gm_drums"]  # GM percussion (channel 10)
KICK, HH, OPEN, CRASH = (GM_DRUMS[name] for name in ("KICK", "HH", "OPEN", "CRASH"))

DRUM_CH = 9
VEL = {"X": 118, "x": 96, "o": 72, "g": 42}

QUALITIES: dict[str, tuple[int, ...]] = {
    "M": (0, 4, 7),
    "m": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "m7": (0, 3, 7, 10),
    "maj7": (0, 4, 7, 11),
    "9": (0, 4, 7, 10, 14),
    "5": (0, 7),
}

Event = tuple[float, float, str, int]  # (beat in bar, length in beats, tone token, velocity)
Drums = Mapping[int, str]  # GM note -> step pattern over the bar ('X' 'x' 'o' 'g' hits, '.' rest)


class CorpusError(RuntimeError):
    """The corpus cannot be built or failed its truth verification."""


@dataclass(frozen=True)
class PieceSpec:
    """One piece. ``bpm`` is the notated tempo (at the start, when ``bpm_end`` ramps it)."""

    name: str
    genre: str
    bpm: float
    seconds: float = 30.0  # approximate: rounded to whole bars (+ the final downbeat and a tail)
    beats_per_bar: int = 4
    swing: float = 0.5  # where the off subdivision falls within its pair: 0.5 straight, 0.667 triplet
    swing_unit: float = 0.5  # beats: 0.5 swings 8ths, 0.25 swings 16ths
    bpm_end: float | None = None  # linear tempo ramp over the piece (a set_tempo on every beat)
    intro_seconds: float = 0.0  # pad-only intro (no drums, bass or comping), rounded to bars
    halftime: bool = False  # a 4-bar half-time breakdown in the middle
    key: int = 9  # pitch class of the tonic
    style: str = ""  # arrangement (STYLES key); defaults to genre
    note: str = ""
    tags: tuple[str, ...] = ()

    @property
    def style_name(self) -> str:
        return self.style or self.genre


@dataclass(frozen=True)
class Part:
    """A pitched part: one bar of events repeated over the chords."""

    program: int
    events: tuple[Event, ...]
    volume: int = 96
    reverb: int = 40


@dataclass(frozen=True)
class Lead:
    program: int
    grid: float = 0.5  # beats between candidate note positions
    density: float = 0.45
    low: int = 67  # lowest MIDI note
    volume: int = 92


@dataclass(frozen=True)
class Style:
    kit: int
    main: Drums
    progression: tuple[tuple[int, str], ...]
    bass: Part
    comps: tuple[Part, ...]
    pad: Part | None
    lead: Lead | None
    scale: tuple[int, ...]
    alt: Drums | None = None  # every other bar
    half: Drums | None = None  # half-time breakdown
    fills: tuple[Drums, ...] = ()  # over the last two beats of a phrase's last bar
    crash: int = CRASH
    drum_volume: int = 110


@dataclass(frozen=True)
class Alignment:
    """Click-track check of one piece's tempo map through the rendering path."""

    clicks: int
    beats: int
    latency_ms: float  # onset of the click on beat 0 (tick 0): the click sound's own attack
    mean_offset_ms: float  # mean(onset - truth) over all beats
    max_jitter_ms: float  # max |onset - truth - latency|
    ok: bool


@dataclass(frozen=True, eq=False)
class Piece:
    name: str
    genre: str
    audio: Path
    beats: F64  # seconds
    downbeats: F64  # seconds (bar starts)
    tempo: float  # median BPM
    beats_per_bar: int
    tags: tuple[str, ...]
    duration: float
    alignment: Alignment
    spec: PieceSpec


@dataclass(frozen=True)
class Score:
    tempo_class: str  # "exact", "octave" or "other"
    tempo_factor: str  # "x1" (exact), "x2", "x1/2", "x3", "x1/3", "x3/2", "x2/3"; "" when other
    tempo_ratio: float  # estimated / true
    beat_f: float
    p_score: float
    cmlt: float
    amlt: float
    downbeat_f: float
    cuts_on_beat: float | None  # share of cuts within one frame of a true beat (None: no cuts given)


# ---------------------------------------------------------------------------------------------- styles
# The data is in sync_styles.toml (its header describes it); here it becomes Style, Part and Lead values.


def _part(data: Mapping[str, Any]) -> Part:
    return Part(**{**data, "events": tuple(tuple(event) for event in data["events"])})


def _drums(data: Mapping[str, str]) -> Drums:
    return {GM_DRUMS[name]: steps for name, steps in data.items()}


def _progression(bars: Sequence[Sequence[Any]]) -> tuple[tuple[int, str], ...]:
    return tuple((degree, quality) for degree, quality in bars)


def _named(table: Mapping[str, Any], value: Any, make: Callable[[Any], Any]) -> Any:
    """The shared entry of ``table`` that ``value`` names, else ``make(value)`` (a value written inline)."""
    return table[value] if isinstance(value, str) else make(value)


SCALES = {name: tuple(pitch_classes) for name, pitch_classes in _DATA["scales"].items()}
PROGRESSIONS = {name: _progression(bars) for name, bars in _DATA["progressions"].items()}
FILLS = {name: _drums(fill) for name, fill in _DATA["fills"].items()}
PADS = {name: _part(pad) for name, pad in _DATA["pads"].items()}
PAD_WARM = PADS["warm"]  # the quiet intro's pad in styles without one


def _style(name: str, data: Mapping[str, Any]) -> Style:
    if unknown := data.keys() - {f.name for f in dataclasses.fields(Style)}:
        raise ValueError(f"sync_styles.toml: style {name!r} has unknown keys {sorted(unknown)}")
    return Style(
        kit=KITS[data["kit"]],
        main=_drums(data["main"]),
        alt=_drums(data["alt"]) if "alt" in data else None,
        half=_drums(data["half"]) if "half" in data else None,
        fills=tuple(FILLS[fill] for fill in data.get("fills", ())),
        progression=_named(PROGRESSIONS, data["progression"], _progression),
        bass=_part(data["bass"]),
        comps=tuple(_part(comp) for comp in data.get("comps", ())),
        pad=_named(PADS, data["pad"], _part) if "pad" in data else None,
        lead=Lead(**data["lead"]) if "lead" in data else None,
        scale=SCALES[data["scale"]],
        crash=GM_DRUMS[data["crash"]] if "crash" in data else Style.crash,
        drum_volume=data.get("drum_volume", Style.drum_volume),
    )


STYLES: dict[str, Style] = {name: _style(name, style) for name, style in _DATA["styles"].items()}


# ---------------------------------------------------------------------------------------------- pieces

TRAP_NOTE = ("notated (truth) at the hi-hat tempo; the snare on 3 gives a half-time feel, so half the tempo "
             "is a defensible tap rate and scores 'octave' (x1/2)")  # fmt: skip

PIECES: tuple[PieceSpec, ...] = (
    PieceSpec("rock_straight_120", "rock", 120, key=4, tags=("backbeat",)),
    PieceSpec("rock_anthem_138", "rock", 138, key=2, style="anthem", tags=("backbeat",)),
    PieceSpec("rock_halftime_break_128", "rock", 128, seconds=34, halftime=True, key=7, tags=("halftime",)),
    PieceSpec("pop_ramp_120_128", "pop", 120, seconds=34, bpm_end=128, key=0, tags=("tempo_ramp",)),
    PieceSpec("pop_quiet_intro_110", "pop", 110, seconds=38, intro_seconds=10, key=5, tags=("quiet_intro",)),
    PieceSpec("house_offbeat_124", "house", 124, key=9, tags=("four_on_floor", "offbeat_hats")),
    PieceSpec(
        "house_breakdown_126",
        "house",
        126,
        seconds=34,
        halftime=True,
        key=2,
        tags=("four_on_floor", "offbeat_hats", "breakdown"),
    ),
    PieceSpec("techno_offbeat_130", "techno", 130, key=7, tags=("four_on_floor", "offbeat_hats")),
    PieceSpec("disco_118", "disco", 118, key=2, tags=("four_on_floor", "offbeat_hats")),
    PieceSpec("funk_sync_104", "funk", 104, key=4, tags=("syncopated",)),
    PieceSpec("funk_clav_98", "funk", 98, key=7, tags=("syncopated",)),
    PieceSpec("boombap_swing_90", "hiphop", 90, swing=0.62, swing_unit=0.25, key=2, style="boombap", tags=("swing",)),
    PieceSpec("boombap_swing_84", "hiphop", 84, swing=0.58, swing_unit=0.25, key=9, style="boombap", tags=("swing",)),
    PieceSpec("lofi_swing_74", "hiphop", 74, swing=0.66, swing_unit=0.25, key=0, style="lofi", tags=("swing", "slow")),
    PieceSpec("reggae_onedrop_80", "reggae", 80, swing=0.6, key=7, tags=("one_drop", "offbeat_chords")),
    PieceSpec("dnb_break_172", "dnb", 172, key=5, tags=("breakbeat", "fast")),
    PieceSpec("dnb_roller_175", "dnb", 175, key=11, style="roller", tags=("breakbeat", "fast")),
    PieceSpec("metal_double_190", "metal", 190, key=4, tags=("double_kick", "fast")),
    PieceSpec("metal_gallop_180", "metal", 180, key=9, style="gallop", tags=("fast",)),
    PieceSpec("punk_196", "punk", 196, key=4, tags=("fast",)),
    PieceSpec("punk_polka_184", "punk", 184, key=9, style="polka", tags=("fast", "offbeat_snare")),
    PieceSpec("ballad_piano_72", "ballad", 72, key=3, tags=("slow", "sparse")),
    PieceSpec("ballad_strings_78", "ballad", 78, seconds=34, key=10, style="ballad_strings", tags=("slow", "sparse")),
    PieceSpec("trap_halftime_140", "trap", 140, key=1, note=TRAP_NOTE, tags=("halftime_feel", "hat_rolls")),
    PieceSpec("trap_rolls_150", "trap", 150, key=6, note=TRAP_NOTE, tags=("halftime_feel", "hat_rolls")),
    PieceSpec("shuffle_blues_96", "blues", 96, key=4, tags=("shuffle", "triplet")),
    PieceSpec("jump_blues_132", "blues", 132, key=10, style="jump", tags=("shuffle", "triplet")),
    PieceSpec("bossa_136", "latin", 136, key=2, style="bossa", tags=("syncopated",)),
    PieceSpec("chacha_116", "latin", 116, key=9, style="chacha", tags=("syncopated", "no_bass_on_one")),
    PieceSpec("jazz_swing_160", "jazz", 160, swing=0.667, key=5, tags=("swing",)),
    PieceSpec(
        "jazzwaltz_144", "jazz", 144, beats_per_bar=3, swing=0.667, key=10, style="jazzwaltz", tags=("swing", "waltz")
    ),
    PieceSpec("waltz_oompah_168", "waltz", 168, beats_per_bar=3, key=7, tags=("waltz",)),
    PieceSpec("motown_snare4_108", "soul", 108, key=0, style="motown", tags=("snare_every_beat",)),
    PieceSpec("synthwave_100", "synthwave", 100, key=9, tags=("backbeat",)),
)

# For `make test`: 8 pieces of ~14 s, hard in different ways (off-beat hats, syncopation, swing,
# double kick at 190, a slow ballad, a breakbeat, a waltz, the plain backbeat librosa halves).
TEST_PIECES: tuple[PieceSpec, ...] = tuple(
    dataclasses.replace(p, name=f"{p.name}_short", seconds=14.0)
    for p in PIECES
    if p.name in ("rock_straight_120", "house_offbeat_124", "funk_sync_104", "boombap_swing_90", "metal_double_190",
                  "ballad_piano_72", "dnb_break_172", "waltz_oompah_168")
)  # fmt: skip
TEST_SUBSET: tuple[str, ...] = tuple(p.name for p in TEST_PIECES)

_BY_NAME = {p.name: p for p in (*PIECES, *TEST_PIECES)}


# ---------------------------------------------------------------------------------------------- composition


@dataclass(order=True)
class _Note:
    tick: int
    length: int
    channel: int
    pitch: int
    velocity: int


@dataclass
class _Song:
    spec: PieceSpec
    bars: int
    roles: list[str]  # per bar: intro, groove, half
    fills: set[int] = field(default_factory=set)
    crashes: set[int] = field(default_factory=set)


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def _bar_count(spec: PieceSpec) -> tuple[int, int]:
    """(bars, intro bars): ``seconds`` at the mean tempo, rounded to whole bars."""
    mean_bpm = (spec.bpm + (spec.bpm_end or spec.bpm)) / 2
    bars = max(2, round(spec.seconds * mean_bpm / 60 / spec.beats_per_bar))
    intro = round(spec.intro_seconds * spec.bpm / 60 / spec.beats_per_bar)
    return bars, min(intro, bars - 2)


def _arrange(spec: PieceSpec) -> _Song:
    bars, intro = _bar_count(spec)
    roles = ["intro"] * intro + ["groove"] * (bars - intro)
    groove = bars - intro
    if spec.halftime and groove >= 10:
        start = intro + groove // 2 - 2
        for b in range(start, start + 4):
            roles[b] = "half"
    song = _Song(spec, bars, roles)
    song.crashes.add(intro)
    for b in range(intro, bars):
        j = b - intro
        if b + 1 < bars and ((j + 1) % 4 == 0 or roles[b + 1] != roles[b]):
            song.fills.add(b)
            song.crashes.add(b + 1)
    return song


def _swing(pos: float, spec: PieceSpec) -> float:
    """Move off subdivisions (odd 8ths or 16ths) to the swing ratio; beats never move."""
    if abs(spec.swing - 0.5) < 1e-9:
        return pos
    unit = spec.swing_unit
    pair = 2 * unit
    q = pos % pair
    if abs(q - unit) < 1e-6:
        return pos - q + pair * spec.swing
    return pos


def _hits(pattern: str, span: float, offset: float = 0.0) -> list[tuple[float, int]]:
    pattern = pattern.replace(" ", "")
    step = span / len(pattern)
    return [(offset + i * step, VEL[c]) for i, c in enumerate(pattern) if c != "."]


def _humanise(vel: float, rng: random.Random, spread: float = 0.08) -> int:
    return max(1, min(127, round(vel * (1 + rng.uniform(-spread, spread)))))


def _chord(spec: PieceSpec, style: Style, bar: int) -> tuple[int, tuple[int, ...]]:
    degree, quality = style.progression[bar % len(style.progression)]
    return (spec.key + degree) % 12, QUALITIES[quality]


def _in_range(pc: int, low: int) -> int:
    """The pitch of class pc in [low, low + 12)."""
    return low + (pc - low) % 12


def _tones(token: str, root: int, quality: tuple[int, ...], next_root: int, register: int) -> list[int]:
    """MIDI pitches for a tone token: bass degrees ('1' '3' '5' '6' 'b7' '8' 'app'), chords ('ch' full,
    'hi' without the root, 'pw' power chord) and arpeggio steps ('a0', 'a1', ...)."""
    third = 3 if 3 in quality or quality == QUALITIES["5"] else 4
    seventh = 11 if 11 in quality else 10
    base = _in_range(root, register)
    degrees = {"1": 0, "3": third, "5": 7, "6": 9, "b7": 10, "7": seventh, "8": 12, "4": 5, "2": 2}
    if token in degrees:
        return [base + degrees[token]]
    if token == "app":  # chromatic approach to the next chord's root
        target = _in_range(next_root, register)
        return [target - 1 if target - 1 >= register - 2 else target + 11]
    if token == "pw":
        return [base, base + 7, base + 12]
    voicing = sorted(_in_range(root + i, register) for i in quality)
    if token == "ch":
        return voicing
    if token == "hi":
        return voicing[1:] if len(voicing) > 2 else voicing
    if token.startswith("a"):
        ladder = voicing + [p + 12 for p in voicing]
        return [ladder[int(token[1:]) % len(ladder)]]
    raise ValueError(f"unknown tone token {token!r}")


def _registers(program: int) -> int:
    """Lowest pitch of the chord root for a GM program: bass, guitar power chords, keys/pads."""
    if 32 <= program <= 39 or program == 58:
        return 28  # E1..D#2
    if 29 <= program <= 31:
        return 40  # E2..D#3
    return 53  # F3..E4


def _compose(spec: PieceSpec) -> tuple[list[_Note], dict[int, tuple[int, int, int]], _Song]:
    """Notes, {channel: (program, volume, reverb)} and the arrangement."""
    style = STYLES[spec.style_name]
    rng = random.Random(_seed(spec.name))
    song = _arrange(spec)
    bpb = spec.beats_per_bar
    notes: list[_Note] = []
    channels: dict[int, tuple[int, int, int]] = {DRUM_CH: (style.kit, style.drum_volume, 30)}

    def add(ch: int, pos_beats: float, length_beats: float, pitch: int, vel: float) -> None:
        tick = round(pos_beats * PPQ)
        notes.append(_Note(tick, max(1, round(length_beats * PPQ)), ch, pitch, _humanise(vel, rng)))

    # drums
    for bar in range(song.bars):
        role = song.roles[bar]
        if role == "intro":
            continue
        pattern = style.half if role == "half" and style.half is not None else style.main
        if role == "groove" and bar % 2 == 1 and style.alt is not None:
            pattern = style.alt
        hits: list[tuple[float, int, int]] = []  # (pos, note, vel)
        fill = style.fills[rng.randrange(len(style.fills))] if bar in song.fills and style.fills else None
        cut = bpb - 2 if fill is not None else bpb
        for note, pat in pattern.items():
            hits += [(p, note, v) for p, v in _hits(pat, bpb) if p < cut - 1e-9]
        if fill is not None:
            for note, pat in fill.items():
                hits += [(p, note, v) for p, v in _hits(pat, 2.0, bpb - 2.0)]
        if bar in song.crashes:
            hits.append((0.0, style.crash, VEL["X"]))
            hits.append((0.0, KICK, VEL["X"]))
        opened = {p for p, n, _ in hits if n == OPEN}
        seen: set[tuple[float, int]] = set()
        for p, note, v in hits:
            if (note == HH and p in opened) or (round(p, 6), note) in seen:
                continue  # closed hat choked by the open one; duplicates (crash bar kick)
            seen.add((round(p, 6), note))
            add(DRUM_CH, bar * bpb + _swing(p, spec), 0.1, note, v)

    # pitched parts: bass ch 0, comps ch 1.., pad, lead
    parts: list[tuple[Part, str]] = [(style.bass, "bass")] + [(c, "comp") for c in style.comps]
    pad = style.pad or PAD_WARM
    parts.append((pad, "pad"))
    for ch, (part, kind) in enumerate(parts):
        channels[ch] = (part.program, part.volume, part.reverb)
        register = _registers(part.program)
        for bar in range(song.bars):
            role = song.roles[bar]
            if role == "intro" and kind != "pad":
                continue
            if kind == "pad" and style.pad is None and role != "intro":
                continue
            root, quality = _chord(spec, style, bar)
            next_root, _ = _chord(spec, style, bar + 1)
            events = part.events
            if role == "half" and kind != "pad":
                if kind == "comp" and part is not style.comps[0]:
                    continue
                events = tuple((p, min(2 * n, 2.0), t, v) for p, n, t, v in events if p % 2 < 1)
            for pos, length, token, vel in events:
                if pos >= bpb:
                    continue
                length = min(length, bpb - pos) if kind == "pad" else length
                level = vel * (0.8 if role == "intro" else 1.0)
                for pitch in _tones(token, root, quality, next_root, register):
                    add(ch, bar * bpb + _swing(pos, spec), length, pitch, level)

    # lead melody: 2-bar motifs in 8-bar phrases A A B A, entering after the groove's first phrase
    if style.lead is not None:
        ch = len(parts)
        lead = style.lead
        channels[ch] = (lead.program, lead.volume, 50)
        motifs = [_motif(rng, lead, bpb) for _ in range(2)]
        start = song.roles.index("groove") + min(4, max(1, (song.bars - song.roles.index("groove")) // 4))
        for bar in range(start, song.bars):
            j = (bar - start) // 2
            motif = motifs[1 if j % 4 == 2 else 0]
            half = (bar - start) % 2
            root, quality = _chord(spec, style, bar)
            for pos, length, degree, vel in motif:
                if half * bpb <= pos < (half + 1) * bpb:
                    beat = pos - half * bpb
                    pitch = _melody_pitch(degree, spec.key, style.scale, lead.low, root, quality, beat)
                    add(ch, bar * bpb + _swing(beat, spec), length, pitch, vel)

    # the ending: one hit on the downbeat after the last bar (its time is the last truth beat)
    end = song.bars * bpb
    root, quality = _chord(spec, style, 0)
    add(DRUM_CH, end, 0.1, KICK, 120)
    add(DRUM_CH, end, 0.1, style.crash, 120)
    for ch, (part, _kind) in enumerate(parts):
        for pitch in _tones("ch" if ch else "1", root, quality, root, _registers(part.program)):
            add(ch, end, 2.0, pitch, 84)
    return notes, channels, song


def _motif(rng: random.Random, lead: Lead, bpb: int) -> list[tuple[float, float, int, int]]:
    """Two bars of (beat, length, scale degree, velocity); off-beat positions are favoured."""
    steps = round(2 * bpb / lead.grid)
    out: list[tuple[float, float, int, int]] = []
    degree = rng.randrange(2, 6)
    for i in range(steps):
        pos = i * lead.grid
        on_beat = abs(pos - round(pos)) < 1e-6
        p = lead.density * (0.6 if on_beat else 1.4)
        if rng.random() < p:
            degree = max(0, min(9, degree + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
            out.append((pos, 0.0, degree, rng.randrange(78, 108)))
    if not any(abs(p - round(p)) > 1e-6 for p, *_ in out):
        out.append((1.5, 0.0, 4, 96))
    if len(out) < 3:
        out += [(0.5, 0.0, 3, 92), (2.5, 0.0, 5, 92)]
    out.sort()
    dedup = [e for k, e in enumerate(out) if k == 0 or e[0] != out[k - 1][0]]
    timed = []
    for k, (pos, _, deg, vel) in enumerate(dedup):
        nxt = dedup[k + 1][0] if k + 1 < len(dedup) else 2 * bpb
        timed.append((pos, min(nxt - pos, 1.5) * 0.9, deg, vel))
    return timed


def _melody_pitch(
    degree: int, key: int, scale: tuple[int, ...], low: int, root: int, quality: tuple[int, ...], beat: float
) -> int:
    octave, step = divmod(degree, len(scale))
    pitch = _in_range(key, low) + 12 * octave + scale[step]
    if abs(beat - round(beat)) < 1e-6 and round(beat) % 2 == 0:  # strong beats: nearest chord tone
        chord = [_in_range(root + i, low - 12) + 12 * k for i in quality for k in range(4)]
        pitch = min(chord, key=lambda c: (abs(c - pitch), c))
    return pitch


def _tempo_map(spec: PieceSpec, n_beats: int) -> list[tuple[int, int]]:
    """(tick, microseconds per beat): one entry, or one per beat for a ramp."""
    if spec.bpm_end is None:
        return [(0, _bpm2tempo(spec.bpm))]
    return [(k * PPQ, _bpm2tempo(spec.bpm + (spec.bpm_end - spec.bpm) * k / max(1, n_beats - 1))) for k in range(n_beats)]


def _bpm2tempo(bpm: float) -> int:
    import mido

    return int(mido.bpm2tempo(bpm))


def _write_midi(path: Path, spec: PieceSpec, notes: list[_Note], channels: dict[int, tuple[int, int, int]],
                bars: int) -> None:  # fmt: skip
    """Type-1 MIDI: track 0 holds time signature, tempo map and beat/bar markers; one track per channel."""
    import mido

    bpb = spec.beats_per_bar
    n_beats = bars * bpb + 1  # + the final downbeat
    mid = mido.MidiFile(type=1, ticks_per_beat=PPQ)
    conductor: list[tuple[int, int, Any]] = [
        (0, 0, mido.MetaMessage("time_signature", numerator=bpb, denominator=4)),
        *((tick, 1, mido.MetaMessage("set_tempo", tempo=tempo)) for tick, tempo in _tempo_map(spec, n_beats)),
        *((k * PPQ, 2, mido.MetaMessage("marker", text="bar" if k % bpb == 0 else "beat")) for k in range(n_beats)),
    ]
    tracks = [conductor]
    for ch in sorted(channels):
        program, volume, reverb = channels[ch]
        events: list[tuple[int, int, Any]] = [
            (0, 0, mido.Message("program_change", channel=ch, program=program)),
            (0, 0, mido.Message("control_change", channel=ch, control=7, value=volume)),
            (0, 0, mido.Message("control_change", channel=ch, control=91, value=reverb)),
            (0, 0, mido.Message("control_change", channel=ch, control=93, value=0)),
        ]
        mine = sorted(n for n in notes if n.channel == ch)
        last_on: dict[int, int] = {}
        for k in range(len(mine) - 1, -1, -1):  # a note ends before the next one of the same pitch
            n = mine[k]
            nxt = last_on.get(n.pitch)
            if nxt is not None and nxt == n.tick:
                continue  # same pitch twice at the same tick: keep one
            length = n.length if nxt is None else max(1, min(n.length, nxt - n.tick - 1))
            events.append((n.tick, 2, mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)))
            events.append((n.tick + length, 1, mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
            last_on[n.pitch] = n.tick
        tracks.append(events)
    for events in tracks:
        track = mido.MidiTrack()
        last = 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(msg.copy(time=tick - last))
            last = tick
        mid.tracks.append(track)
    mid.save(str(path))


def _truth(path: Path) -> tuple[F64, F64]:
    """Beat and bar-start times (s) from the MIDI file's markers, timed by mido's playback iterator."""
    import mido

    t = 0.0
    beats: list[float] = []
    bars: list[float] = []
    for msg in mido.MidiFile(str(path)):
        t += float(msg.time)
        if msg.type == "marker":
            beats.append(t)
            if msg.text == "bar":
                bars.append(t)
    return np.asarray(beats, dtype=np.float64), np.asarray(bars, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- rendering


def _check_tools() -> None:
    if shutil.which("fluidsynth") is None or not SOUNDFONT.exists():
        raise CorpusError(
            f"needs fluidsynth and {SOUNDFONT}: apt-get install fluidsynth fluid-soundfont-gm (make bootstrap)"
        )


def _render(midi: Path, work: Path) -> npt.NDArray[np.float32]:
    """FluidSynth at 64 kHz (float WAV), downmixed and resampled to SR (linear-phase polyphase FIR)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    raw = work / f"{midi.stem}.{RENDER_RATE}.wav"
    cmd = ["fluidsynth", "-ni", "-q", "-F", str(raw), "-r", str(RENDER_RATE), "-g", str(GAIN), "-O", "float",
           "-T", "wav", str(SOUNDFONT), str(midi)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not raw.exists():
        raise CorpusError(f"fluidsynth failed ({proc.returncode}) on {midi}: {proc.stderr[-2000:]}")
    x, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    raw.unlink()
    if rate != RENDER_RATE:
        raise CorpusError(f"fluidsynth wrote {rate} Hz, expected {RENDER_RATE}")
    g = math.gcd(SR, RENDER_RATE)
    y = resample_poly(x.mean(axis=1).astype(np.float64), SR // g, RENDER_RATE // g)
    return np.asarray(y, dtype=np.float32)


def _click_onsets(y: npt.NDArray[np.float32], sr: int) -> F64:
    """Sample-accurate click onsets: upward crossings of 10 % of the peak, 50 ms apart at least,
    refined by linear interpolation between the two samples around the crossing."""
    a = np.abs(y.astype(np.float64))
    thr = 0.1 * float(a.max())
    above = np.flatnonzero(a > thr)
    if above.size == 0:
        return np.zeros(0)
    starts = above[np.concatenate([[True], np.diff(above) > int(0.05 * sr)])]
    out = []
    for i in starts:
        lo = float(a[i - 1]) if i > 0 else 0.0
        frac = (thr - lo) / max(float(a[i]) - lo, 1e-12)
        out.append((i - 1 + frac) / sr)
    return np.asarray(out, dtype=np.float64)


def verify_alignment(midi: Path, beats: F64, work: Path) -> Alignment:
    """Render a dry wood-block click on every beat of ``midi``'s tempo track (its first track, copied
    verbatim) through the same FluidSynth path and compare the click onsets with ``beats``."""
    import mido

    song = mido.MidiFile(str(midi))
    click = mido.MidiFile(type=1, ticks_per_beat=song.ticks_per_beat)
    click.tracks.append(song.tracks[0])
    track = mido.MidiTrack()
    track.append(mido.Message("program_change", channel=DRUM_CH, program=KITS["standard"], time=0))
    track.append(mido.Message("control_change", channel=DRUM_CH, control=91, value=0, time=0))
    track.append(mido.Message("control_change", channel=DRUM_CH, control=93, value=0, time=0))
    tick = last = 0
    for msg in song.tracks[0]:
        tick += msg.time
        if msg.type == "marker":
            track.append(mido.Message("note_on", channel=DRUM_CH, note=CLICK_NOTE, velocity=120, time=tick - last))
            track.append(mido.Message("note_off", channel=DRUM_CH, note=CLICK_NOTE, velocity=0, time=PPQ // 16))
            last = tick + PPQ // 16
    click.tracks.append(track)
    path = work / f"{midi.stem}.click.mid"
    click.save(str(path))
    y = _render(path, work)
    onsets = _click_onsets(y, SR)
    if onsets.size != beats.size or beats.size == 0:
        return Alignment(int(onsets.size), int(beats.size), math.nan, math.nan, math.nan, False)
    dev = onsets - beats
    latency = float(dev[0])
    jitter = float(np.max(np.abs(dev - latency)))
    ok = jitter <= TOLERANCE_S and -0.0005 <= latency <= MAX_LATENCY_S
    return Alignment(int(onsets.size), int(beats.size), latency * 1e3, float(dev.mean()) * 1e3, jitter * 1e3, ok)


def default_root() -> Path:
    base = os.environ.get("VIBECRAFT_CACHE") or str(Path.home() / ".cache" / "vibecraft")
    return Path(base) / f"sync-corpus-v{CORPUS_VERSION}"


def _spec_json(spec: PieceSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))  # type: ignore[no-any-return]


def _fingerprint(spec: PieceSpec) -> str:
    """Changes with the spec, its style's data and the render settings (code changes: CORPUS_VERSION)."""
    key = repr((CORPUS_VERSION, spec, STYLES[spec.style_name], PAD_WARM, SOUNDFONT, SR, RENDER_RATE, GAIN, PPQ))
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(spec: PieceSpec, root: Path) -> Piece | None:
    meta, wav = root / f"{spec.name}.json", root / f"{spec.name}.wav"
    if not (meta.exists() and wav.exists()):
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != _fingerprint(spec) or data.get("spec") != _spec_json(spec):
        return None
    a = data["alignment"]
    return Piece(
        name=spec.name,
        genre=spec.genre,
        audio=wav,
        beats=np.asarray(data["beats"], dtype=np.float64),
        downbeats=np.asarray(data["downbeats"], dtype=np.float64),
        tempo=float(data["tempo"]),
        beats_per_bar=int(data["beats_per_bar"]),
        tags=tuple(spec.tags),
        duration=float(data["duration"]),
        alignment=Alignment(**a),
        spec=spec,
    )


def _build_one(spec: PieceSpec, root: Path) -> Piece:
    import soundfile as sf

    cached = _load(spec, root)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(prefix=f"sync-{spec.name}-") as tmp:
        work = Path(tmp)
        notes, channels, song = _compose(spec)
        midi = work / f"{spec.name}.mid"
        _write_midi(midi, spec, notes, channels, song.bars)
        beats, downbeats = _truth(midi)
        alignment = verify_alignment(midi, beats, work)
        if not alignment.ok:
            raise CorpusError(f"{spec.name}: rendered clicks do not match the MIDI beat grid: {alignment}")
        y = _render(midi, work)
        y = y[: int((beats[-1] + TAIL_S) * SR)]
        fade = min(int(0.5 * SR), y.size)
        y[y.size - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        peak = float(np.max(np.abs(y)))
        if peak < 1e-3:
            raise CorpusError(f"{spec.name}: rendered audio is silent (peak {peak})")
        y *= PEAK / peak
        wav = root / f"{spec.name}.wav"
        tmp_wav = work / "out.wav"
        sf.write(str(tmp_wav), y, SR, subtype="PCM_16")
        _atomic_write(wav, tmp_wav.read_bytes())
        _atomic_write(root / f"{spec.name}.mid", midi.read_bytes())
        ibi = np.diff(beats)
        meta = {
            "version": CORPUS_VERSION,
            "fingerprint": _fingerprint(spec),
            "spec": _spec_json(spec),
            "tempo": float(np.median(60.0 / ibi)),
            "beats_per_bar": spec.beats_per_bar,
            "duration": y.size / SR,
            "beats": [round(float(b), 6) for b in beats],
            "downbeats": [round(float(b), 6) for b in downbeats],
            "alignment": dataclasses.asdict(alignment),
            "sections": song.roles,
            "render": {"soundfont": str(SOUNDFONT), "rate": RENDER_RATE, "gain": GAIN, "sr": SR, "ppq": PPQ},
        }
        _atomic_write(root / f"{spec.name}.json", (json.dumps(meta, indent=1) + "\n").encode())
    piece = _load(spec, root)
    if piece is None:
        raise CorpusError(f"{spec.name}: written but not readable back from {root}")
    return piece


def spec_for(name: str) -> PieceSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no piece {name!r}; known: {', '.join(_BY_NAME)}") from None


def build_corpus(names: Sequence[str] | None = None, root: Path | None = None) -> list[Piece]:
    """Build (or reuse from the cache) the named pieces, all of PIECES by default, in that order.
    Raises CorpusError when FluidSynth is missing or a piece fails its click verification."""
    specs = [spec_for(n) for n in names] if names is not None else list(PIECES)
    root = root or default_root()
    root.mkdir(parents=True, exist_ok=True)
    missing = [s for s in specs if _load(s, root) is None]
    if missing:
        _check_tools()
        workers = max(1, min(len(missing), os.cpu_count() or 1, 4))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda s: _build_one(s, root), missing))
    return [_build_one(s, root) for s in specs]


# ---------------------------------------------------------------------------------------------- scoring

FACTORS: tuple[tuple[str, float], ...] = (
    ("x1", 1.0),
    ("x2", 2.0),
    ("x1/2", 0.5),
    ("x3", 3.0),
    ("x1/3", 1 / 3),
    ("x3/2", 1.5),
    ("x2/3", 2 / 3),
)


def tempo_class(estimate: float, truth: float) -> tuple[str, str]:
    """("exact", "x1") within 4 % of the truth, ("octave", "x2" ...) within 4 % of a metrical
    multiple (2, 1/2, 3, 1/3, 3/2, 2/3), else ("other", "")."""
    if truth > 0 and estimate > 0:
        for name, f in FACTORS:
            if abs(estimate / (truth * f) - 1) <= TEMPO_TOLERANCE:
                return ("exact" if f == 1.0 else "octave"), name
    return "other", ""


def score(
    piece: Piece,
    tempo: float,
    beats: npt.ArrayLike,
    downbeats: npt.ArrayLike,
    cuts: npt.ArrayLike | None = None,
    fps: int = 30,
) -> Score:
    """mir_eval beat metrics against the piece's truth, over the whole piece (no trim_beats)."""
    import mir_eval

    est = np.sort(np.asarray(beats, dtype=np.float64).ravel())
    est_db = np.sort(np.asarray(downbeats, dtype=np.float64).ravel())
    ref, ref_db = piece.beats, piece.downbeats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty estimates; those score 0
        f = float(mir_eval.beat.f_measure(ref, est, f_measure_threshold=F_WINDOW_S))
        p = float(mir_eval.beat.p_score(ref, est))
        if est.size >= 2:
            _cmlc, cmlt, _amlc, amlt = (float(v) for v in mir_eval.beat.continuity(ref, est))
        else:
            cmlt = amlt = 0.0
        df = float(mir_eval.beat.f_measure(ref_db, est_db, f_measure_threshold=F_WINDOW_S))
    cls, factor = tempo_class(float(tempo), piece.tempo)
    share: float | None = None
    if cuts is not None:
        c = np.asarray(cuts, dtype=np.float64).ravel()
        half = 30.0 / piece.tempo  # cuts are scored from the first beat to the last (+ half a beat)
        c = c[(c >= ref[0] - half) & (c <= ref[-1] + half)]
        if c.size:
            idx = np.clip(np.searchsorted(ref, c), 1, ref.size - 1)
            near = np.minimum(np.abs(c - ref[idx - 1]), np.abs(c - ref[idx]))
            share = float(np.mean(near <= 1.0 / fps + 1e-9))
        else:
            share = 0.0
    return Score(cls, factor, float(tempo) / piece.tempo, f, p, cmlt, amlt, df, share)


# ---------------------------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class Estimate:
    """A tracker's answer for one piece, and how long it took."""

    tempo: float
    beats: npt.NDArray[np.float64]
    downbeats: npt.NDArray[np.float64]
    cuts: npt.NDArray[np.float64]
    seconds: float
    beats_per_bar: int = 4



def ours(path: Path) -> Estimate:
    """VibeCraft's analysis (what the renderer cuts on)."""
    from vibecraft_renderer import analysis
    from vibecraft_renderer.timeline import cut_times

    start = time.perf_counter()
    an = analysis.analyze_file(path)
    seconds = time.perf_counter() - start
    cuts = cut_times(an, "beat")
    beats, bars = np.asarray(an.beats, float), np.asarray(an.downbeats, float)
    return Estimate(float(an.tempo), beats, bars, cuts, seconds, an.beats_per_bar)


def librosa_default(path: Path) -> Estimate:
    """librosa's one-line default; downbeats: every 4th beat from the first (it has none)."""
    import librosa

    start = time.perf_counter()
    y, sr = librosa.load(path, sr=22050)
    tempo, beats = librosa.beat.beat_track(y=y, sr=sr, units="time")
    seconds = time.perf_counter() - start
    b = np.asarray(beats, dtype=np.float64)
    return Estimate(float(np.atleast_1d(tempo)[0]), b, b[::4], b, seconds)



def band_levels(path: Path) -> dict[str, float]:
    """RMS/peak (dBFS) and the share of energy per band: <150 Hz (kick, bass), 150-2000 Hz
    (chords, lead), >4000 Hz (cymbals)."""
    import soundfile as sf

    y, sr = sf.read(str(path), dtype="float64")
    spec = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(y.size, 1 / sr)
    total = float(spec.sum())

    def share(lo: float, hi: float) -> float:
        return float(spec[(freqs >= lo) & (freqs < hi)].sum()) / total

    return {
        "rms_db": 20 * math.log10(float(np.sqrt(np.mean(y**2)))),
        "peak_db": 20 * math.log10(float(np.max(np.abs(y)))),
        "low": share(20, 150),
        "mid": share(150, 2000),
        "high": share(4000, sr / 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--only", help="comma-separated piece names")
    ap.add_argument("--short", action="store_true", help="the TEST_SUBSET pieces")
    ap.add_argument("--root", type=Path, help=f"corpus directory (default {default_root()})")
    args = ap.parse_args(argv)
    names: Sequence[str] | None = args.only.split(",") if args.only else (TEST_SUBSET if args.short else None)
    start = time.perf_counter()
    pieces = build_corpus(names, args.root)
    print(f"{len(pieces)} pieces in {pieces[0].audio.parent if pieces else '-'} ({time.perf_counter() - start:.1f} s)")
    print(f"{'piece':26} {'genre':9} {'BPM':>6} {'sec':>5} {'beats':>5} {'lat ms':>6} {'mean ms':>7} {'jit ms':>6} "
          f"{'RMS dB':>6} {'peak':>5} {'<150':>5} {'mid':>5} {'>4k':>5}")  # fmt: skip
    for p in pieces:
        a, lv = p.alignment, band_levels(p.audio)
        print(f"{p.name:26} {p.genre:9} {p.tempo:6.1f} {p.duration:5.1f} {p.beats.size:5d} {a.latency_ms:6.2f} "
              f"{a.mean_offset_ms:7.2f} {a.max_jitter_ms:6.2f} {lv['rms_db']:6.1f} {lv['peak_db']:5.1f} "
              f"{lv['low']:5.2f} {lv['mid']:5.2f} {lv['high']:5.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
