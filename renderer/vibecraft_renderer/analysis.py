"""Audio analysis: tempo, beats, bars, onsets, energy bands and structural sections.

One streamed pass over the PCM computes compact per-frame features (features.py); then the
whole-song steps run on those: beat tracking once over the full onset envelope (rhythm.py; block
by block would give wrong beats at block edges) and segmentation (structure.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import json
import logging
import sys
import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from vibecraft_common.limits import TempoSource

from . import audio, rhythm, tracker
from .features import FRAME_RATE, SR, FeatureStream
from .structure import Section, find_sections

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

ANALYSIS_VERSION: Final = 3  # 2: envs (kick, snare, onset envelopes); 3: envs one frame earlier
# Aligned as librosa's onset_strength(center=True) aligns them (features._align_flux), the onset envelopes rise
# about one analysis frame (23 ms) after the hit they answer, librosa's own too: reactivity's sources read them
# that much earlier, so a flash lands with the hit, not after it. Chosen on the 8 short corpus grooves (kick
# source vs MIDI kicks, mean r: no lead 0.53, 0.5 frame 0.65, 1 frame 0.66, 1.5 0.61, 2 0.52); bench/bench_react.py
# measures the 34.
ONSET_LEAD_FRAMES: Final = 1
__all__ = ["FRAME_RATE", "SR", "Analysis", "FeatureStream", "Section", "analyze_blocks", "analyze_file"]


@dataclass
class Analysis:
    """Everything the visuals need to know about the song, at FRAME_RATE resolution."""

    duration: float
    tempo: float
    beats: F64  # seconds
    downbeats: F64  # seconds, estimated bar starts
    onsets: F64  # seconds
    sections: list[Section]
    energy: F32  # 0..~1.5 per analysis frame (RMS / 95th percentile)
    bands: F32  # (3, n): low/mid/high, 0..~1.5 after robust normalisation
    envs: F32  # (3, n): kick (bass onsets), snare (mid onsets), onset (all), 0..~1.5 (reactivity sources)
    confidence: float = 0.0  # 0..1: how sure the tracker is of tempo and beats
    tempo_source: TempoSource = "detected"
    beats_per_bar: int = 4  # 3 or 4, detected (tracker.meter)
    frame_rate: float = FRAME_RATE
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """analysis.json: small and stable enough for the API to serve as-is."""
        return {
            "version": ANALYSIS_VERSION,
            "duration": round(self.duration, 3),
            "tempo": round(self.tempo, 2),
            "tempoSource": self.tempo_source,
            "confidence": round(self.confidence, 3),
            "beats": [round(float(b), 3) for b in self.beats],
            "beatsPerBar": self.beats_per_bar,
            "downbeats": [round(float(b), 3) for b in self.downbeats],
            "onsets": [round(float(b), 3) for b in self.onsets],
            "sections": [s.to_json() for s in self.sections],
            **self.extras,
        }


STATE_ARRAYS: Final = ("beats", "downbeats", "onsets", "energy", "bands", "envs")


def dump_state(an: Analysis) -> bytes:
    """The whole analysis, exactly (arrays bit for bit), for the pods that render a split render's chunks.

    analysis.json rounds to milliseconds; segments drawn from a rounded beat grid would differ from a
    one-pod render's. An .npz without pickles: arrays as stored, the rest as one JSON string.
    """
    meta = {"version": ANALYSIS_VERSION, "duration": an.duration, "tempo": an.tempo, "confidence": an.confidence,
            "tempoSource": an.tempo_source, "beatsPerBar": an.beats_per_bar, "frameRate": an.frame_rate,
            "sections": [dataclasses.asdict(sec) for sec in an.sections], "extras": an.extras}  # fmt: skip
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **{name: getattr(an, name) for name in STATE_ARRAYS})
    return buf.getvalue()


def load_state(data: bytes) -> Analysis:
    """dump_state's inverse; ValueError when the bytes are not a state of this version."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            arrays = {name: npz[name] for name in STATE_ARRAYS}
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ValueError(f"not an analysis state: {exc}") from exc
    if meta.get("version") != ANALYSIS_VERSION:
        raise ValueError(f"analysis state version {meta.get('version')}, this renderer reads {ANALYSIS_VERSION}")
    try:
        return _state(meta, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a complete analysis state: {exc!r}") from exc


def _state(meta: dict[str, Any], arrays: dict[str, Any]) -> Analysis:
    if not meta.get("sections"):
        raise ValueError("no sections")
    if arrays["bands"].ndim != 2 or arrays["envs"].ndim != 2 or arrays["envs"].shape[1] != arrays["energy"].shape[0]:
        raise ValueError("feature arrays of the wrong shape")
    return Analysis(
        duration=float(meta["duration"]),
        tempo=float(meta["tempo"]),
        sections=[Section(**sec) for sec in meta["sections"]],
        confidence=float(meta["confidence"]),
        tempo_source=meta["tempoSource"],
        beats_per_bar=int(meta["beatsPerBar"]),
        frame_rate=float(meta["frameRate"]),
        extras=dict(meta["extras"]),
        **arrays,
    )


def analyze_blocks(
    blocks: Iterable[F32],
    on_progress: Callable[[float], None] | None = None,
    expected_s: float | None = None,
    *,
    bpm: float | None = None,
    beat_offset: float | None = None,
) -> Analysis:
    """Run the full analysis over a stream of mono PCM blocks at SR.

    `bpm` (and `beat_offset`, the time of any one beat) come from a user who knows the song: they
    replace tempo detection (and phase tracking).
    """
    stream = FeatureStream()
    for block in blocks:
        stream.push(block)
        if on_progress and expected_s:
            on_progress(min(0.8, 0.8 * stream.n_samples / SR / expected_s))
    duration = audio.check_decoded(stream.n_samples, stream.peak)
    feats = stream.finish()
    env = feats["onset_env"]
    rms = feats["rms"]
    energy = (rms / max(float(np.percentile(rms, 95)), 1e-9)).clip(0.0, 1.5).astype(np.float32)
    bands = np.stack([rhythm._unit(b) for b in feats["bands"]]).astype(np.float32)
    envs = np.stack([_peak_unit(_earlier(feats[k], ONSET_LEAD_FRAMES))
                     for k in ("bass_env", "mid_env", "onset_env")]).astype(np.float32)
    pulse = tracker.track(feats, FRAME_RATE, duration, bpm, beat_offset)
    tempo, beats = pulse.tempo, pulse.beats
    if on_progress:
        on_progress(0.9)
    onsets = rhythm.onset_frames(env, FRAME_RATE) / FRAME_RATE
    sections = find_sections(beats, feats, energy, duration, FRAME_RATE)
    if on_progress:
        on_progress(1.0)
    log.info("analysis: %.1f s, %.1f BPM, %d beats, %d sections", duration, tempo, beats.size, len(sections))
    return Analysis(
        duration=duration,
        tempo=tempo,
        beats=beats,
        downbeats=pulse.downbeats,
        onsets=onsets.astype(np.float64),
        sections=sections,
        energy=energy,
        bands=bands,
        envs=envs,
        confidence=pulse.confidence,
        tempo_source=pulse.source,
        beats_per_bar=pulse.beats_per_bar,
    )


@functools.cache
def code_version() -> str:
    """A hash of the analysis code (this module, the feature stream, the trackers, the structure finder): part
    of the cached analysis's key, so an analysis made by another version of the code is never reused."""
    from . import features, rhythm, structure, tracker

    digest = hashlib.sha256(str(ANALYSIS_VERSION).encode())
    for module in (sys.modules[__name__], features, rhythm, structure, tracker, audio):
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()[:16]


def _earlier(env: F32, frames: int) -> F32:
    """`env` moved `frames` earlier (negative: later), the frames it leaves zero: value k is what was at
    k + frames."""
    out = np.zeros_like(env)
    if frames >= 0:
        out[: max(0, env.size - frames)] = env[frames:]
    else:
        out[-frames:] = env[: max(0, env.size + frames)]
    return out


def _peak_unit(env: F32) -> F32:
    """An onset envelope over its 99th percentile (a typical hit near 1), clipped at 1.5."""
    top = float(np.percentile(env, 99)) if env.size else 0.0
    return (env / max(top, 1e-9)).clip(0.0, 1.5).astype(np.float32)


def analyze_file(
    path: Path,
    on_progress: Callable[[float], None] | None = None,
    *,
    bpm: float | None = None,
    beat_offset: float | None = None,
) -> Analysis:
    """Probe, decode (streamed) and analyse an audio file."""
    info = audio.probe(path)
    return analyze_blocks(audio.decode_blocks(path), on_progress, info.duration, bpm=bpm, beat_offset=beat_offset)


def preload() -> threading.Thread:
    """Import the slow-to-import libraries (scipy via librosa.filters, scikit-learn: ~1-2 s)
    in the background, overlapping the download."""

    def work() -> None:
        try:
            for name in ("librosa.filters", "scipy.fft", "sklearn.cluster", "sklearn.feature_extraction.image"):
                importlib.import_module(name)
        except Exception as exc:  # the real import later reports it properly
            log.debug("preload failed: %s", exc)

    thread = threading.Thread(target=work, name="analysis-preload", daemon=True)
    thread.start()
    return thread


def synthetic_clicks(bpm: float, seconds: float, sr: int = SR) -> F32:
    """A click track with an accent every bar: warm-up input and a quick test signal."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.02 * np.sin(2 * np.pi * 220.0 * t)
    n = int(0.03 * sr)
    click = np.sin(2 * np.pi * 1000.0 * np.arange(n) / sr) * np.exp(-np.arange(n) / (0.005 * sr))
    for i, start in enumerate(np.arange(0.0, seconds, 60.0 / bpm)):
        s = int(start * sr)
        seg = click[: max(0, min(click.size, y.size - s))]
        y[s : s + seg.size] += (0.9 if i % rhythm.BEATS_PER_BAR == 0 else 0.5) * seg
    return y.astype(np.float32)


def warmup() -> float:
    """Run the whole analysis on 12 s of clicks: fills numba's cache (librosa's cached kernels used
    by the filter banks) and the OS page cache of the libraries. Returns the tempo found."""
    y = synthetic_clicks(120.0, 12.0)
    blocks = (y[i : i + audio.BLOCK_SAMPLES] for i in range(0, y.size, audio.BLOCK_SAMPLES))
    return analyze_blocks(blocks).tempo
